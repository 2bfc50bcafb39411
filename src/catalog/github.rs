//! GitHub REST: deploy keys, SSH / GPG / SSH-signing keys, Actions, Dependabot and
//! Codespaces secrets, installation access tokens, GitHub Apps from manifests, OAuth app
//! token scoping and reset, self-hosted runner registration.
//!
//! Paths are matched after any prefix (`/api/v3` on GitHub Enterprise Server, a base
//! path). Secrets are identified by the name in the path (GitHub answers 201/204 with no
//! body), installation tokens by the installation id in the path (never `token`).
//!
//! Decisions:
//! - Runner registration tokens and JIT configurations let a machine join as a runner and
//!   receive the repository's jobs and secrets: identity creation. Remove tokens are not.
//! - `POST /app-manifests/{code}/conversions` creates a GitHub App and answers with its
//!   private key, client secret and webhook secret.
//! - `POST /applications/{client_id}/token/scoped` and `PATCH /applications/{client_id}/token`
//!   mint a new user token from an existing one.
//! - Left out: fine-grained and classic personal access tokens (no API creates them), the
//!   OAuth Authorizations API (removed), and GraphQL (`POST /graphql`; its mutations are
//!   in the body and not classified here).

use super::table::{creates, CatalogOp, Cond, Identifier, Route, PATCH, POST, PUT};

const ID: Identifier = Identifier::JsonPointer("/id");
const SECRET_NAME: Identifier = Identifier::PathSegmentAfter("secrets");

pub(super) static OPS: &[CatalogOp] = &[
    creates("github:create_deploy_key", "deploy_key", ID),
    creates("github:create_ssh_key", "ssh_key", ID),
    creates("github:create_gpg_key", "gpg_key", ID),
    creates("github:create_ssh_signing_key", "ssh_key", ID),
    creates("github:create_or_update_repo_secret", "secret", SECRET_NAME),
    creates("github:create_or_update_org_secret", "secret", SECRET_NAME),
    creates(
        "github:create_or_update_environment_secret",
        "secret",
        SECRET_NAME,
    ),
    creates(
        "github:create_or_update_repo_dependabot_secret",
        "secret",
        SECRET_NAME,
    ),
    creates(
        "github:create_or_update_org_dependabot_secret",
        "secret",
        SECRET_NAME,
    ),
    creates(
        "github:create_or_update_repo_codespaces_secret",
        "secret",
        SECRET_NAME,
    ),
    creates(
        "github:create_or_update_org_codespaces_secret",
        "secret",
        SECRET_NAME,
    ),
    creates(
        "github:create_or_update_user_codespaces_secret",
        "secret",
        SECRET_NAME,
    ),
    creates(
        "github:create_installation_access_token",
        "api_token",
        Identifier::PathSegmentAfter("installations"),
    ),
    creates("github:create_app_from_manifest", "application", ID),
    creates("github:create_scoped_access_token", "api_token", ID),
    creates("github:reset_token", "api_token", ID),
    creates(
        "github:create_runner_registration_token",
        "runner_token",
        Identifier::None,
    ),
    creates(
        "github:generate_runner_jitconfig",
        "runner",
        Identifier::JsonPointer("/runner/id"),
    ),
];

const fn route(
    op: &'static str,
    methods: &'static [&'static str],
    patterns: &'static [&'static str],
) -> Route {
    Route {
        op,
        methods,
        patterns,
        cond: Cond::Always,
    }
}

pub(super) static ROUTES: &[Route] = &[
    route("github:create_deploy_key", POST, &["**/repos/*/*/keys"]),
    route("github:create_ssh_key", POST, &["**/user/keys"]),
    route("github:create_gpg_key", POST, &["**/user/gpg_keys"]),
    route(
        "github:create_ssh_signing_key",
        POST,
        &["**/user/ssh_signing_keys"],
    ),
    route(
        "github:create_or_update_environment_secret",
        PUT,
        &[
            "**/repos/*/*/environments/*/secrets/*",
            "**/repositories/*/environments/*/secrets/*",
        ],
    ),
    route(
        "github:create_or_update_repo_secret",
        PUT,
        &["**/repos/*/*/actions/secrets/*"],
    ),
    route(
        "github:create_or_update_org_secret",
        PUT,
        &["**/orgs/*/actions/secrets/*"],
    ),
    route(
        "github:create_or_update_repo_dependabot_secret",
        PUT,
        &["**/repos/*/*/dependabot/secrets/*"],
    ),
    route(
        "github:create_or_update_org_dependabot_secret",
        PUT,
        &["**/orgs/*/dependabot/secrets/*"],
    ),
    route(
        "github:create_or_update_repo_codespaces_secret",
        PUT,
        &["**/repos/*/*/codespaces/secrets/*"],
    ),
    route(
        "github:create_or_update_org_codespaces_secret",
        PUT,
        &["**/orgs/*/codespaces/secrets/*"],
    ),
    route(
        "github:create_or_update_user_codespaces_secret",
        PUT,
        &["**/user/codespaces/secrets/*"],
    ),
    route(
        "github:create_installation_access_token",
        POST,
        &["**/app/installations/*/access_tokens"],
    ),
    route(
        "github:create_app_from_manifest",
        POST,
        &["**/app-manifests/*/conversions"],
    ),
    route(
        "github:create_scoped_access_token",
        POST,
        &["**/applications/*/token/scoped"],
    ),
    route("github:reset_token", PATCH, &["**/applications/*/token"]),
    // Repository, organization and enterprise runners alike.
    route(
        "github:create_runner_registration_token",
        POST,
        &["**/actions/runners/registration-token"],
    ),
    route(
        "github:generate_runner_jitconfig",
        POST,
        &["**/actions/runners/generate-jitconfig"],
    ),
];

#[cfg(test)]
pub(super) fn cases() -> Vec<super::testutil::Case> {
    use super::testutil::Case;
    use super::Kind::Github;
    let c = |m: &'static str, p: &'static str, e: Option<&'static str>| Case::new(Github, m, p, e);
    vec![
        c(
            "POST",
            "/repos/octo/hello/keys",
            Some("github:create_deploy_key"),
        ),
        c(
            "POST",
            "/Repos/octo/hello/KEYS/",
            Some("github:create_deploy_key"),
        ),
        c(
            "POST",
            "/api/v3/repos/octo/hello/keys",
            Some("github:create_deploy_key"),
        ),
        c(
            "POST",
            "/repos/octo/hello/keys;x=1",
            Some("github:create_deploy_key"),
        ),
        c(
            "post",
            "/repos/octo/hello/keys",
            Some("github:create_deploy_key"),
        ),
        c("POST", "/user/keys", Some("github:create_ssh_key")),
        c("POST", "/USER/Keys/", Some("github:create_ssh_key")),
        c("POST", "/user/gpg_keys", Some("github:create_gpg_key")),
        c(
            "POST",
            "/user/ssh_signing_keys",
            Some("github:create_ssh_signing_key"),
        ),
        c(
            "PUT",
            "/repos/octo/hello/actions/secrets/API_KEY",
            Some("github:create_or_update_repo_secret"),
        ),
        c(
            "PUT",
            "/repos/octo/hello/Actions/Secrets/API_KEY/",
            Some("github:create_or_update_repo_secret"),
        ),
        c(
            "PUT",
            "/orgs/octo/actions/secrets/API_KEY",
            Some("github:create_or_update_org_secret"),
        ),
        c(
            "PUT",
            "/repos/octo/hello/environments/prod/secrets/API_KEY",
            Some("github:create_or_update_environment_secret"),
        ),
        c(
            "PUT",
            "/repositories/42/environments/prod/secrets/API_KEY",
            Some("github:create_or_update_environment_secret"),
        ),
        c(
            "PUT",
            "/repos/o/r/dependabot/secrets/NPM",
            Some("github:create_or_update_repo_dependabot_secret"),
        ),
        c(
            "PUT",
            "/orgs/o/dependabot/secrets/NPM",
            Some("github:create_or_update_org_dependabot_secret"),
        ),
        c(
            "PUT",
            "/repos/o/r/codespaces/secrets/S",
            Some("github:create_or_update_repo_codespaces_secret"),
        ),
        c(
            "PUT",
            "/orgs/o/codespaces/secrets/S",
            Some("github:create_or_update_org_codespaces_secret"),
        ),
        c(
            "PUT",
            "/user/codespaces/secrets/S",
            Some("github:create_or_update_user_codespaces_secret"),
        ),
        c(
            "POST",
            "/app/installations/123/access_tokens",
            Some("github:create_installation_access_token"),
        ),
        c(
            "POST",
            "/App/Installations/123/Access_Tokens/",
            Some("github:create_installation_access_token"),
        ),
        c(
            "POST",
            "/app-manifests/abc123/conversions",
            Some("github:create_app_from_manifest"),
        ),
        c(
            "POST",
            "/applications/Iv1.abc/token/scoped",
            Some("github:create_scoped_access_token"),
        ),
        c(
            "PATCH",
            "/applications/Iv1.abc/token",
            Some("github:reset_token"),
        ),
        c(
            "POST",
            "/repos/o/r/actions/runners/registration-token",
            Some("github:create_runner_registration_token"),
        ),
        c(
            "POST",
            "/orgs/o/actions/runners/registration-token",
            Some("github:create_runner_registration_token"),
        ),
        c(
            "POST",
            "/enterprises/e/actions/runners/registration-token",
            Some("github:create_runner_registration_token"),
        ),
        c(
            "POST",
            "/repos/o/r/actions/runners/generate-jitconfig",
            Some("github:generate_runner_jitconfig"),
        ),
        // Near misses.
        c("GET", "/repos/octo/hello/keys", None),
        c("GET", "/repos/octo/hello/keys/1", None),
        c("DELETE", "/repos/octo/hello/keys/1", None),
        c("POST", "/repos/octo/hello/keys/1", None),
        c("POST", "/repos/octo/keys", None),
        c("GET", "/user/keys", None),
        c("GET", "/users/octo/keys", None),
        c("POST", "/users/octo/keys", None),
        c("GET", "/user/gpg_keys", None),
        c("GET", "/repos/o/r/actions/secrets/API_KEY", None),
        c("DELETE", "/repos/o/r/actions/secrets/API_KEY", None),
        c("POST", "/repos/o/r/actions/secrets/API_KEY", None),
        c("GET", "/repos/o/r/actions/secrets/public-key", None),
        c("PUT", "/repos/o/r/actions/secrets", None),
        c("PUT", "/orgs/o/actions/secrets/S/repositories/1", None),
        c("PUT", "/repos/o/r/actions/variables/V", None),
        c("GET", "/app/installations/123/access_tokens", None),
        c("GET", "/app/installations/123", None),
        c("POST", "/applications/Iv1.abc/token", None),
        c("DELETE", "/applications/Iv1.abc/token", None),
        c("POST", "/repos/o/r/actions/runners/remove-token", None),
        c("POST", "/graphql", None),
        c("POST", "/repos/o/r/issues", None),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::testutil::SampleResponse;

    #[test]
    fn identifiers() {
        let samples = [
            SampleResponse {
                op: "github:create_deploy_key",
                path: "/repos/o/r/keys",
                body: r#"{"id":1,"key":"ssh-rsa AAAAB3NzaC1yc2EAAA","url":"https://api.github.com/repos/o/r/keys/1","title":"octocat@octomac","verified":true,"read_only":true}"#,
                expect: Some("1"),
                secrets: &[],
            },
            SampleResponse {
                op: "github:create_gpg_key",
                path: "/user/gpg_keys",
                body: r#"{"id":3,"name":"Octocat's GPG Key","key_id":"3262EFF25BA0D270","public_key":"xsBNBFayYZ"}"#,
                expect: Some("3"),
                secrets: &[],
            },
            SampleResponse {
                op: "github:create_or_update_environment_secret",
                path: "/repos/o/r/environments/prod/secrets/API_KEY",
                body: "",
                expect: Some("API_KEY"),
                secrets: &[],
            },
            SampleResponse {
                op: "github:create_or_update_org_secret",
                path: "/api/v3/orgs/o/actions/secrets/NPM_TOKEN/",
                body: "",
                expect: Some("NPM_TOKEN"),
                secrets: &[],
            },
            SampleResponse {
                op: "github:create_installation_access_token",
                path: "/app/installations/123/access_tokens",
                body: r#"{"token":"ghs_16C7e42F292c6912E7710c838347Ae178B4a","expires_at":"2016-07-11T22:14:10Z","permissions":{"issues":"write"}}"#,
                expect: Some("123"),
                secrets: &["ghs_16C7e42F292c6912E7710c838347Ae178B4a"],
            },
            SampleResponse {
                op: "github:create_app_from_manifest",
                path: "/app-manifests/code/conversions",
                body: r#"{"id":1,"slug":"octoapp","client_id":"Iv1.8a61f9b3a7aba766","client_secret":"1726be1638095a19edd134c77bde3aa2ece1e5d8",
                    "webhook_secret":"e340154128314309424b7c8e90325147d99fdafa","pem":"-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAuEPzOUE+kiEH1WLiMeBytTEF\n-----END RSA PRIVATE KEY-----\n"}"#,
                expect: Some("1"),
                secrets: &[
                    "1726be1638095a19edd134c77bde3aa2ece1e5d8",
                    "e340154128314309424b7c8e90325147d99fdafa",
                ],
            },
            SampleResponse {
                op: "github:create_scoped_access_token",
                path: "/applications/Iv1.abc/token/scoped",
                body: r#"{"id":1,"token":"ghu_16C7e42F292c6912E7710c838347Ae178B4a","token_last_eight":"Ae178B4a"}"#,
                expect: Some("1"),
                secrets: &["ghu_16C7e42F292c6912E7710c838347Ae178B4a"],
            },
            SampleResponse {
                op: "github:create_runner_registration_token",
                path: "/repos/o/r/actions/runners/registration-token",
                body: r#"{"token":"LLBF3JGZDX3P5PMEXLND6TS6FCWO6","expires_at":"2020-01-22T12:13:35.123-08:00"}"#,
                expect: None,
                secrets: &["LLBF3JGZDX3P5PMEXLND6TS6FCWO6"],
            },
            SampleResponse {
                op: "github:generate_runner_jitconfig",
                path: "/repos/o/r/actions/runners/generate-jitconfig",
                body: r#"{"runner":{"id":23,"name":"New runner"},"encoded_jit_config":"abc123"}"#,
                expect: Some("23"),
                secrets: &["abc123"],
            },
        ];
        for s in samples {
            s.check();
        }
    }
}

//! GitLab REST (v4): personal, impersonation, project and group access tokens and their
//! rotation, deploy tokens, deploy keys, SSH and GPG keys, users and service accounts,
//! pipeline trigger tokens, runners, cluster agent tokens, OAuth applications.
//!
//! Paths are matched after any prefix (`/api/v4`, a relative URL root such as
//! `/gitlab/api/v4`), except `POST /runners`, whose last segment is too common: it must be
//! the API root's (`/runners` or `…/api/v4/runners`).
//!
//! Decisions:
//! - Rotation (`…/rotate`) revokes a token and answers with a new one: creation.
//! - `POST /deploy_keys` (instance-level, administrators) exists next to the project one;
//!   `POST /deploy_tokens` does not exist and is not catalogued.
//! - Enabling an existing deploy key on another project is privilege escalation.
//! - Left out: membership changes (`…/members`), runner token resets, and GraphQL.

use super::table::{creates, escalates, CatalogOp, Cond, Identifier, Route, POST};

const ID: Identifier = Identifier::JsonPointer("/id");

pub(super) static OPS: &[CatalogOp] = &[
    creates("gitlab:create_personal_access_token", "api_token", ID),
    creates("gitlab:rotate_personal_access_token", "api_token", ID),
    creates("gitlab:create_impersonation_token", "api_token", ID),
    creates("gitlab:create_project_access_token", "api_token", ID),
    creates("gitlab:rotate_project_access_token", "api_token", ID),
    creates("gitlab:create_group_access_token", "api_token", ID),
    creates("gitlab:rotate_group_access_token", "api_token", ID),
    creates("gitlab:create_project_deploy_token", "deploy_token", ID),
    creates("gitlab:create_group_deploy_token", "deploy_token", ID),
    creates("gitlab:create_project_deploy_key", "deploy_key", ID),
    creates("gitlab:create_instance_deploy_key", "deploy_key", ID),
    creates("gitlab:create_ssh_key", "ssh_key", ID),
    creates("gitlab:create_gpg_key", "gpg_key", ID),
    creates("gitlab:create_user", "user", ID),
    creates("gitlab:create_service_account", "service_account", ID),
    creates("gitlab:create_pipeline_trigger_token", "trigger_token", ID),
    creates("gitlab:create_runner", "runner", ID),
    creates("gitlab:register_runner", "runner", ID),
    creates("gitlab:create_cluster_agent_token", "api_token", ID),
    creates("gitlab:create_application", "application", ID),
    creates("gitlab:renew_application_secret", "client_secret", ID),
    escalates("gitlab:enable_project_deploy_key"),
];

const fn post(op: &'static str, patterns: &'static [&'static str]) -> Route {
    Route {
        op,
        methods: POST,
        patterns,
        cond: Cond::Always,
    }
}

pub(super) static ROUTES: &[Route] = &[
    post(
        "gitlab:create_personal_access_token",
        &[
            "**/users/*/personal_access_tokens",
            "**/user/personal_access_tokens",
            "**/service_accounts/*/personal_access_tokens",
        ],
    ),
    // Own, other users', service accounts' and `self` tokens.
    post(
        "gitlab:rotate_personal_access_token",
        &["**/personal_access_tokens/*/rotate"],
    ),
    post(
        "gitlab:create_impersonation_token",
        &["**/users/*/impersonation_tokens"],
    ),
    post(
        "gitlab:create_project_access_token",
        &["**/projects/*/access_tokens"],
    ),
    post(
        "gitlab:rotate_project_access_token",
        &["**/projects/*/access_tokens/*/rotate"],
    ),
    post(
        "gitlab:create_group_access_token",
        &["**/groups/*/access_tokens"],
    ),
    post(
        "gitlab:rotate_group_access_token",
        &["**/groups/*/access_tokens/*/rotate"],
    ),
    post(
        "gitlab:create_project_deploy_token",
        &["**/projects/*/deploy_tokens"],
    ),
    post(
        "gitlab:create_group_deploy_token",
        &["**/groups/*/deploy_tokens"],
    ),
    post(
        "gitlab:create_project_deploy_key",
        &["**/projects/*/deploy_keys"],
    ),
    post(
        "gitlab:enable_project_deploy_key",
        &["**/projects/*/deploy_keys/*/enable"],
    ),
    post("gitlab:create_instance_deploy_key", &["**/deploy_keys"]),
    post(
        "gitlab:create_ssh_key",
        &["**/user/keys", "**/users/*/keys"],
    ),
    post(
        "gitlab:create_gpg_key",
        &["**/user/gpg_keys", "**/users/*/gpg_keys"],
    ),
    post("gitlab:create_user", &["**/users"]),
    post("gitlab:create_service_account", &["**/service_accounts"]),
    post(
        "gitlab:create_pipeline_trigger_token",
        &["**/projects/*/triggers"],
    ),
    post("gitlab:create_runner", &["**/user/runners"]),
    post("gitlab:register_runner", &["/runners", "**/api/v4/runners"]),
    post(
        "gitlab:create_cluster_agent_token",
        &["**/projects/*/cluster_agents/*/tokens"],
    ),
    post("gitlab:create_application", &["**/applications"]),
    post(
        "gitlab:renew_application_secret",
        &["**/applications/*/renew-secret"],
    ),
];

#[cfg(test)]
pub(super) fn cases() -> Vec<super::testutil::Case> {
    use super::testutil::Case;
    use super::Kind::Gitlab;
    let c = |m: &'static str, p: &'static str, e: Option<&'static str>| Case::new(Gitlab, m, p, e);
    vec![
        c(
            "POST",
            "/api/v4/users/42/personal_access_tokens",
            Some("gitlab:create_personal_access_token"),
        ),
        c(
            "POST",
            "/users/42/personal_access_tokens",
            Some("gitlab:create_personal_access_token"),
        ),
        c(
            "POST",
            "/api/v4/user/personal_access_tokens",
            Some("gitlab:create_personal_access_token"),
        ),
        c(
            "POST",
            "/api/v4/groups/7/service_accounts/42/personal_access_tokens",
            Some("gitlab:create_personal_access_token"),
        ),
        c(
            "POST",
            "/api/v4/personal_access_tokens/9/rotate",
            Some("gitlab:rotate_personal_access_token"),
        ),
        c(
            "POST",
            "/api/v4/personal_access_tokens/self/rotate",
            Some("gitlab:rotate_personal_access_token"),
        ),
        c(
            "POST",
            "/api/v4/groups/7/service_accounts/42/personal_access_tokens/9/rotate",
            Some("gitlab:rotate_personal_access_token"),
        ),
        c(
            "POST",
            "/api/v4/users/42/impersonation_tokens",
            Some("gitlab:create_impersonation_token"),
        ),
        c(
            "POST",
            "/api/v4/projects/5/access_tokens",
            Some("gitlab:create_project_access_token"),
        ),
        c(
            "POST",
            "/gitlab/api/v4/Projects/5/Access_Tokens/",
            Some("gitlab:create_project_access_token"),
        ),
        c(
            "POST",
            "/api/v4/projects/5/access_tokens/9/rotate",
            Some("gitlab:rotate_project_access_token"),
        ),
        c(
            "POST",
            "/api/v4/projects/5/access_tokens/self/rotate",
            Some("gitlab:rotate_project_access_token"),
        ),
        c(
            "POST",
            "/api/v4/groups/7/access_tokens",
            Some("gitlab:create_group_access_token"),
        ),
        c(
            "POST",
            "/api/v4/groups/7/access_tokens/9/rotate",
            Some("gitlab:rotate_group_access_token"),
        ),
        c(
            "POST",
            "/api/v4/projects/5/deploy_tokens",
            Some("gitlab:create_project_deploy_token"),
        ),
        c(
            "POST",
            "/api/v4/groups/7/deploy_tokens",
            Some("gitlab:create_group_deploy_token"),
        ),
        c(
            "POST",
            "/api/v4/projects/5/deploy_keys",
            Some("gitlab:create_project_deploy_key"),
        ),
        c(
            "POST",
            "/api/v4/projects/5/deploy_keys/3/enable",
            Some("gitlab:enable_project_deploy_key"),
        ),
        c(
            "POST",
            "/api/v4/deploy_keys",
            Some("gitlab:create_instance_deploy_key"),
        ),
        c("POST", "/api/v4/user/keys", Some("gitlab:create_ssh_key")),
        c(
            "POST",
            "/api/v4/users/42/keys",
            Some("gitlab:create_ssh_key"),
        ),
        c(
            "POST",
            "/api/v4/user/gpg_keys",
            Some("gitlab:create_gpg_key"),
        ),
        c(
            "POST",
            "/api/v4/users/42/gpg_keys",
            Some("gitlab:create_gpg_key"),
        ),
        c("POST", "/api/v4/users", Some("gitlab:create_user")),
        c(
            "POST",
            "/api/v4/service_accounts",
            Some("gitlab:create_service_account"),
        ),
        c(
            "POST",
            "/api/v4/groups/7/service_accounts",
            Some("gitlab:create_service_account"),
        ),
        c(
            "POST",
            "/api/v4/projects/5/triggers",
            Some("gitlab:create_pipeline_trigger_token"),
        ),
        c("POST", "/api/v4/user/runners", Some("gitlab:create_runner")),
        c("POST", "/api/v4/runners", Some("gitlab:register_runner")),
        c("POST", "/runners/", Some("gitlab:register_runner")),
        c(
            "POST",
            "/gitlab/API/V4/runners",
            Some("gitlab:register_runner"),
        ),
        c(
            "POST",
            "/api/v4/projects/5/cluster_agents/1/tokens",
            Some("gitlab:create_cluster_agent_token"),
        ),
        c(
            "POST",
            "/api/v4/applications",
            Some("gitlab:create_application"),
        ),
        c(
            "POST",
            "/api/v4/applications/3/renew-secret",
            Some("gitlab:renew_application_secret"),
        ),
        // Near misses.
        c("GET", "/api/v4/personal_access_tokens", None),
        c("POST", "/api/v4/personal_access_tokens", None),
        c("GET", "/api/v4/personal_access_tokens/self", None),
        c("DELETE", "/api/v4/personal_access_tokens/9", None),
        c("GET", "/api/v4/users/42/personal_access_tokens", None),
        c("GET", "/api/v4/projects/5/access_tokens", None),
        c("GET", "/api/v4/projects/5/access_tokens/9", None),
        c("POST", "/api/v4/projects/5/access_tokens/9", None),
        c("GET", "/api/v4/projects/5/deploy_tokens", None),
        c("GET", "/api/v4/deploy_tokens", None),
        c("POST", "/api/v4/deploy_tokens", None),
        c("GET", "/api/v4/projects/5/deploy_keys", None),
        c("PUT", "/api/v4/projects/5/deploy_keys/3", None),
        c("GET", "/api/v4/user/keys", None),
        c("GET", "/api/v4/users", None),
        c("PUT", "/api/v4/users/42", None),
        c("POST", "/api/v4/projects/5/runners", None),
        c("POST", "/api/v4/groups/7/members", None),
        c("POST", "/api/v4/projects/5/issues", None),
        c("POST", "/api/v4/projects/5/triggers/1/take_ownership", None),
        c("POST", "/api/graphql", None),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::testutil::SampleResponse;

    #[test]
    fn identifiers() {
        let samples = [
            SampleResponse {
                op: "gitlab:create_personal_access_token",
                path: "/api/v4/users/42/personal_access_tokens",
                body: r#"{"id":3,"name":"mytoken","revoked":false,"created_at":"2020-10-14T11:58:53.526Z","scopes":["api"],
                    "user_id":42,"active":true,"expires_at":"2020-12-31","token":"glpat-ggbfrqjoshC8BJrcT2UX"}"#,
                expect: Some("3"),
                secrets: &["glpat-ggbfrqjoshC8BJrcT2UX"],
            },
            SampleResponse {
                op: "gitlab:create_project_deploy_token",
                path: "/api/v4/projects/5/deploy_tokens",
                body: r#"{"id":1,"name":"My deploy token","username":"username","expires_at":"2021-01-01T00:00:00.000Z",
                    "token":"jMRvtPNxrn3crTAGukpZ","scopes":["read_repository"]}"#,
                expect: Some("1"),
                secrets: &["jMRvtPNxrn3crTAGukpZ"],
            },
            SampleResponse {
                op: "gitlab:create_application",
                path: "/api/v4/applications",
                body: r#"{"id":1,"application_id":"5832fc6e14300a0d962240a8144466eef4ee93ef0d218477e55f11cf12fc3737",
                    "application_name":"MyApplication","secret":"ee1dd64b6adc89cf7e2c23099301ccc2c61b441064e9324d963c46902a85ec34"}"#,
                expect: Some("1"),
                secrets: &["ee1dd64b6adc89cf7e2c23099301ccc2c61b441064e9324d963c46902a85ec34"],
            },
            SampleResponse {
                op: "gitlab:enable_project_deploy_key",
                path: "/api/v4/projects/5/deploy_keys/3/enable",
                body: r#"{"id":3}"#,
                expect: None,
                secrets: &[],
            },
        ];
        for s in samples {
            s.check();
        }
    }
}

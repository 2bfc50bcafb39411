//! HashiCorp Vault: tokens (`auth/token/create`, `create-orphan`, `create/{role}`),
//! AppRole secret IDs (generated and custom) and users of username/password-style auth
//! methods; writing auth roles and mappings, and ACL policies, is privilege escalation.
//!
//! Vault takes POST and PUT alike for writes. Paths are matched after any prefix: `/v1`,
//! Enterprise namespaces (`/v1/ns1/ns2/auth/…`) and auth methods mounted anywhere
//! (`auth/approle-prod/role/…`, `auth/team/a/role/…`).
//!
//! Identifiers are accessors (`auth.accessor`, `data.secret_id_accessor`): they name the
//! token or secret ID and let it be looked up or revoked, but never authenticate.
//!
//! Decisions:
//! - Writing an auth role (AppRole, Kubernetes, JWT/OIDC, AWS … `auth/<mount>/role/<name>`),
//!   a token role, a trusted certificate (`certs/<name>`), a group or team mapping, or an
//!   ACL policy decides who gets which policies: privilege escalation.
//! - `auth/<mount>/users/<name>` creates a userpass user (or maps an LDAP/GitHub user to
//!   policies): identity creation, identified by the name in the path.
//! - Left out: dynamic secrets engines (`database/creds/<role>`, `aws/creds/<role>`,
//!   `pki/issue/<role>` …). Their mounts are arbitrary and reading them is what Vault clients
//!   do all day; a tool can add them as routes.
//! - Logins (`auth/<mount>/login`) authenticate an existing identity and are left out.

use super::table::{creates, escalates, CatalogOp, Cond, Identifier, Route, POST_PUT};

pub(super) static OPS: &[CatalogOp] = &[
    creates(
        "vault:token.create",
        "api_token",
        Identifier::JsonPointer("/auth/accessor"),
    ),
    creates(
        "vault:token.create_orphan",
        "api_token",
        Identifier::JsonPointer("/auth/accessor"),
    ),
    creates(
        "vault:token.create_with_role",
        "api_token",
        Identifier::JsonPointer("/auth/accessor"),
    ),
    creates(
        "vault:approle.secret_id.create",
        "approle_secret_id",
        Identifier::JsonPointer("/data/secret_id_accessor"),
    ),
    creates(
        "vault:approle.custom_secret_id.create",
        "approle_secret_id",
        Identifier::JsonPointer("/data/secret_id_accessor"),
    ),
    creates(
        "vault:auth.user.write",
        "user",
        Identifier::PathSegmentAfter("users"),
    ),
    escalates("vault:auth.role.write"),
    escalates("vault:sys.policy.write"),
];

const fn write(op: &'static str, patterns: &'static [&'static str]) -> Route {
    Route {
        op,
        methods: POST_PUT,
        patterns,
        cond: Cond::Always,
    }
}

pub(super) static ROUTES: &[Route] = &[
    write("vault:token.create", &["**/auth/token/create"]),
    write(
        "vault:token.create_orphan",
        &["**/auth/token/create-orphan"],
    ),
    write("vault:token.create_with_role", &["**/auth/token/create/*"]),
    write(
        "vault:approle.secret_id.create",
        &["**/auth/**/role/*/secret-id"],
    ),
    write(
        "vault:approle.custom_secret_id.create",
        &["**/auth/**/role/*/custom-secret-id"],
    ),
    write("vault:auth.user.write", &["**/auth/**/users/*"]),
    write(
        "vault:auth.role.write",
        &[
            "**/auth/**/role/*",
            "**/auth/token/roles/*",
            "**/auth/**/certs/*",
            "**/auth/**/groups/*",
            "**/auth/**/map/*/*",
        ],
    ),
    write(
        "vault:sys.policy.write",
        &["**/sys/policy/*", "**/sys/policies/acl/*"],
    ),
];

#[cfg(test)]
pub(super) fn cases() -> Vec<super::testutil::Case> {
    use super::testutil::Case;
    use super::Kind::Vault;
    let c = |m: &'static str, p: &'static str, e: Option<&'static str>| Case::new(Vault, m, p, e);
    vec![
        c("POST", "/v1/auth/token/create", Some("vault:token.create")),
        c("PUT", "/v1/auth/token/create", Some("vault:token.create")),
        c("POST", "/v1/Auth/Token/Create/", Some("vault:token.create")),
        c(
            "POST",
            "/v1/ns1/ns2/auth/token/create",
            Some("vault:token.create"),
        ),
        c(
            "POST",
            "/v1/auth/token/create-orphan",
            Some("vault:token.create_orphan"),
        ),
        c(
            "PUT",
            "/v1/auth/token/create/ci-role",
            Some("vault:token.create_with_role"),
        ),
        c(
            "POST",
            "/v1/auth/approle/role/my-role/secret-id",
            Some("vault:approle.secret_id.create"),
        ),
        c(
            "PUT",
            "/v1/auth/approle-prod/role/my-role/secret-id",
            Some("vault:approle.secret_id.create"),
        ),
        c(
            "POST",
            "/v1/ns1/auth/teams/a/role/my-role/secret-id",
            Some("vault:approle.secret_id.create"),
        ),
        c(
            "POST",
            "/v1/auth/approle/role/my-role/custom-secret-id",
            Some("vault:approle.custom_secret_id.create"),
        ),
        c(
            "POST",
            "/v1/auth/userpass/users/alice",
            Some("vault:auth.user.write"),
        ),
        c(
            "POST",
            "/v1/auth/approle/role/my-role",
            Some("vault:auth.role.write"),
        ),
        c(
            "PUT",
            "/v1/auth/kubernetes/role/app",
            Some("vault:auth.role.write"),
        ),
        c(
            "POST",
            "/v1/auth/token/roles/ci",
            Some("vault:auth.role.write"),
        ),
        c(
            "POST",
            "/v1/auth/cert/certs/web",
            Some("vault:auth.role.write"),
        ),
        c(
            "POST",
            "/v1/auth/ldap/groups/admins",
            Some("vault:auth.role.write"),
        ),
        c(
            "POST",
            "/v1/auth/github/map/teams/dev",
            Some("vault:auth.role.write"),
        ),
        c(
            "PUT",
            "/v1/sys/policy/admin",
            Some("vault:sys.policy.write"),
        ),
        c(
            "POST",
            "/v1/sys/policies/acl/admin",
            Some("vault:sys.policy.write"),
        ),
        // Near misses.
        c("GET", "/v1/auth/token/create", None),
        c("LIST", "/v1/auth/token/create", None),
        c("DELETE", "/v1/auth/token/create", None),
        c("POST", "/v1/auth/token/lookup", None),
        c("GET", "/v1/auth/token/lookup-self", None),
        c("POST", "/v1/auth/token/renew-self", None),
        c("POST", "/v1/auth/token/revoke", None),
        c("POST", "/v1/auth/token/create/ci-role/extra", None),
        c("POST", "/v1/auth/token", None),
        c("LIST", "/v1/auth/approle/role/my-role/secret-id", None),
        c("GET", "/v1/auth/approle/role/my-role/secret-id", None).query("list=true"),
        c(
            "POST",
            "/v1/auth/approle/role/my-role/secret-id/lookup",
            None,
        ),
        c(
            "POST",
            "/v1/auth/approle/role/my-role/secret-id/destroy",
            None,
        ),
        c(
            "POST",
            "/v1/auth/approle/role/my-role/secret-id-accessor/lookup",
            None,
        ),
        c("GET", "/v1/auth/approle/role/my-role/role-id", None),
        c("POST", "/v1/auth/approle/login", None),
        c("POST", "/v1/auth/userpass/users/alice/password", None),
        c("POST", "/v1/secret/data/app", None),
        c("GET", "/v1/database/creds/readonly", None),
        c("GET", "/v1/sys/policy/admin", None),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::testutil::SampleResponse;

    #[test]
    fn identifiers() {
        let samples = [
            SampleResponse {
                op: "vault:token.create",
                path: "/v1/auth/token/create",
                body: r#"{"request_id":"f00341c1","lease_id":"","data":null,"auth":{"client_token":"hvs.CAESIEXAMPLEEXAMPLE",
                    "accessor":"8609694a-cdbc-db9b-d345-e782dbb562ed","policies":["web","stage"],"lease_duration":3600,"renewable":true}}"#,
                expect: Some("8609694a-cdbc-db9b-d345-e782dbb562ed"),
                secrets: &["hvs.CAESIEXAMPLEEXAMPLE"],
            },
            SampleResponse {
                op: "vault:approle.secret_id.create",
                path: "/v1/auth/approle/role/r/secret-id",
                body: r#"{"data":{"secret_id_accessor":"84896a0c-1347-aa90-a4f6-aca8b7558780",
                    "secret_id":"841771dc-11c9-bbc7-bcac-6a3945a69cd9","secret_id_ttl":600,"secret_id_num_uses":40}}"#,
                expect: Some("84896a0c-1347-aa90-a4f6-aca8b7558780"),
                secrets: &["841771dc-11c9-bbc7-bcac-6a3945a69cd9"],
            },
            SampleResponse {
                op: "vault:auth.user.write",
                path: "/v1/auth/userpass/users/alice",
                body: "",
                expect: Some("alice"),
                secrets: &[],
            },
            SampleResponse {
                op: "vault:token.create",
                path: "/v1/auth/token/create",
                body: r#"{"wrap_info":{"token":"hvs.wrapping","accessor":"w1","ttl":60}}"#,
                expect: None,
                secrets: &["hvs.wrapping"],
            },
        ];
        for s in samples {
            s.check();
        }
    }
}

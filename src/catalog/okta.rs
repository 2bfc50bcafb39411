//! Okta: apps (OAuth clients come with a client secret) and their credentials (client
//! secrets, signing keys, CSRs, JWKs), OAuth dynamic client registration and secret
//! rotation, API service integrations and their secrets, users, identity providers, and
//! the activation / password-reset links that hand over an account; admin role
//! assignment, group membership and OAuth scope grants are privilege escalation.
//!
//! Paths are matched after any prefix (a base path).
//!
//! Decisions:
//! - API tokens (`SSWS`) cannot be created through the API (`/api/v1/api-tokens` lists,
//!   reads, revokes and edits network conditions only): not catalogued.
//! - `…/lifecycle/activate`, `reactivate` and `reset_password` answer with a one-time link
//!   that sets the user's credentials when `sendEmail=false`; the query is not trusted to
//!   say so, so they always match (identity kind `login_link`).
//! - Adding a user to a group (`PUT /api/v1/groups/{g}/users/{u}`) is privilege escalation:
//!   groups carry app assignments and admin roles.

use super::table::{creates, escalates, CatalogOp, Cond, Identifier, Route, POST, PUT};

use super::table::Identifier::JsonPointer as P;

pub(super) static OPS: &[CatalogOp] = &[
    creates("okta:apps.create", "application", P("/id")),
    creates(
        "okta:apps.credentials.secrets.create",
        "client_secret",
        P("/id"),
    ),
    creates(
        "okta:apps.credentials.keys.generate",
        "certificate",
        P("/kid"),
    ),
    creates("okta:apps.credentials.csrs.create", "certificate", P("/id")),
    creates(
        "okta:apps.credentials.jwks.create",
        "public_key",
        Identifier::FirstOf(&[P("/id"), P("/kid")]),
    ),
    creates("okta:oauth2.clients.create", "application", P("/client_id")),
    creates(
        "okta:oauth2.clients.newSecret",
        "client_secret",
        P("/client_id"),
    ),
    creates("okta:api_services.create", "application", P("/id")),
    creates(
        "okta:api_services.secrets.create",
        "client_secret",
        P("/id"),
    ),
    creates("okta:users.create", "user", P("/id")),
    creates(
        "okta:users.lifecycle.credential_link",
        "login_link",
        Identifier::PathSegmentAfter("users"),
    ),
    creates("okta:idps.create", "identity_provider", P("/id")),
    escalates("okta:roles.assign"),
    escalates("okta:groups.users.add"),
    escalates("okta:apps.grants.create"),
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
    route("okta:apps.create", POST, &["**/api/v1/apps"]),
    route(
        "okta:apps.credentials.secrets.create",
        POST,
        &["**/api/v1/apps/*/credentials/secrets"],
    ),
    route(
        "okta:apps.credentials.keys.generate",
        POST,
        &["**/api/v1/apps/*/credentials/keys/generate"],
    ),
    route(
        "okta:apps.credentials.csrs.create",
        POST,
        &["**/api/v1/apps/*/credentials/csrs"],
    ),
    route(
        "okta:apps.credentials.jwks.create",
        POST,
        &["**/api/v1/apps/*/credentials/jwks"],
    ),
    route(
        "okta:oauth2.clients.create",
        POST,
        &["**/oauth2/v1/clients"],
    ),
    route(
        "okta:oauth2.clients.newSecret",
        POST,
        &["**/oauth2/v1/clients/*/lifecycle/newSecret"],
    ),
    route(
        "okta:api_services.create",
        POST,
        &["**/integrations/api/v1/api-services"],
    ),
    route(
        "okta:api_services.secrets.create",
        POST,
        &["**/integrations/api/v1/api-services/*/credentials/secrets"],
    ),
    route("okta:users.create", POST, &["**/api/v1/users"]),
    route(
        "okta:users.lifecycle.credential_link",
        POST,
        &["**/api/v1/users/*/lifecycle/activate|reactivate|reset_password"],
    ),
    route("okta:idps.create", POST, &["**/api/v1/idps"]),
    route(
        "okta:roles.assign",
        POST,
        &[
            "**/api/v1/users/*/roles",
            "**/api/v1/groups/*/roles",
            "**/oauth2/v1/clients/*/roles",
        ],
    ),
    route(
        "okta:groups.users.add",
        PUT,
        &["**/api/v1/groups/*/users/*"],
    ),
    route(
        "okta:apps.grants.create",
        POST,
        &["**/api/v1/apps/*/grants"],
    ),
];

#[cfg(test)]
pub(super) fn cases() -> Vec<super::testutil::Case> {
    use super::testutil::Case;
    use super::Kind::Okta;
    let c = |m: &'static str, p: &'static str, e: Option<&'static str>| Case::new(Okta, m, p, e);
    vec![
        c("POST", "/api/v1/apps", Some("okta:apps.create")),
        c("POST", "/API/V1/Apps/", Some("okta:apps.create")).query("activate=true"),
        c(
            "POST",
            "/api/v1/apps/0oa1/credentials/secrets",
            Some("okta:apps.credentials.secrets.create"),
        ),
        c(
            "POST",
            "/api/v1/apps/0oa1/credentials/keys/generate",
            Some("okta:apps.credentials.keys.generate"),
        )
        .query("validityYears=2"),
        c(
            "POST",
            "/api/v1/apps/0oa1/credentials/csrs",
            Some("okta:apps.credentials.csrs.create"),
        ),
        c(
            "POST",
            "/api/v1/apps/0oa1/credentials/jwks",
            Some("okta:apps.credentials.jwks.create"),
        ),
        c(
            "POST",
            "/oauth2/v1/clients",
            Some("okta:oauth2.clients.create"),
        ),
        c(
            "POST",
            "/oauth2/v1/clients/0oa1/lifecycle/newSecret",
            Some("okta:oauth2.clients.newSecret"),
        ),
        c(
            "POST",
            "/integrations/api/v1/api-services",
            Some("okta:api_services.create"),
        ),
        c(
            "POST",
            "/integrations/api/v1/api-services/0oa1/credentials/secrets",
            Some("okta:api_services.secrets.create"),
        ),
        c("POST", "/api/v1/users", Some("okta:users.create")).query("activate=false"),
        c(
            "POST",
            "/api/v1/users/00u1/lifecycle/activate",
            Some("okta:users.lifecycle.credential_link"),
        )
        .query("sendEmail=false"),
        c(
            "POST",
            "/api/v1/users/00u1/lifecycle/reset_password",
            Some("okta:users.lifecycle.credential_link"),
        ),
        c("POST", "/api/v1/idps", Some("okta:idps.create")),
        c(
            "POST",
            "/api/v1/users/00u1/roles",
            Some("okta:roles.assign"),
        ),
        c(
            "POST",
            "/api/v1/groups/00g1/roles",
            Some("okta:roles.assign"),
        ),
        c(
            "POST",
            "/oauth2/v1/clients/0oa1/roles",
            Some("okta:roles.assign"),
        ),
        c(
            "PUT",
            "/api/v1/groups/00g1/users/00u1",
            Some("okta:groups.users.add"),
        ),
        c(
            "POST",
            "/api/v1/apps/0oa1/grants",
            Some("okta:apps.grants.create"),
        ),
        // Near misses.
        c("GET", "/api/v1/apps", None),
        c("POST", "/api/v1/apps/0oa1", None),
        c("PUT", "/api/v1/apps/0oa1", None),
        c("GET", "/api/v1/apps/0oa1/credentials/secrets", None),
        c(
            "POST",
            "/api/v1/apps/0oa1/credentials/secrets/ocs1/lifecycle/deactivate",
            None,
        ),
        c("GET", "/api/v1/api-tokens", None),
        c("DELETE", "/api/v1/api-tokens/current", None),
        c("POST", "/api/v1/users/00u1", None),
        c("POST", "/api/v1/users/00u1/lifecycle/deactivate", None),
        c("POST", "/api/v1/users/00u1/lifecycle/suspend", None),
        c("GET", "/api/v1/users/00u1/roles", None),
        c("DELETE", "/api/v1/groups/00g1/users/00u1", None),
        c("GET", "/oauth2/v1/clients", None),
        c("POST", "/oauth2/v1/token", None),
        c("POST", "/api/v1/groups", None),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::testutil::SampleResponse;

    #[test]
    fn identifiers() {
        let samples = [
            SampleResponse {
                op: "okta:apps.credentials.secrets.create",
                path: "/api/v1/apps/0oa1/credentials/secrets",
                body: r#"{"id":"ocs2f4zrZbs8nUa7p0g4","status":"ACTIVE","client_secret":"DRUFXGF9XbLnS9k-Sla3x3POBiIxDreBCdZuFs5B",
                    "secret_hash":"yk4SVx4sUWVJVbHt6M-UPA","_links":{}}"#,
                expect: Some("ocs2f4zrZbs8nUa7p0g4"),
                secrets: &["DRUFXGF9XbLnS9k-Sla3x3POBiIxDreBCdZuFs5B"],
            },
            SampleResponse {
                op: "okta:oauth2.clients.create",
                path: "/oauth2/v1/clients",
                body: r#"{"client_id":"0oa1hm4POxgJM6CPu0g4","client_secret":"5W7XULCEs4BJKnWUXwh8lgmeXRhcGcdViFp84pWe",
                    "client_name":"Example"}"#,
                expect: Some("0oa1hm4POxgJM6CPu0g4"),
                secrets: &["5W7XULCEs4BJKnWUXwh8lgmeXRhcGcdViFp84pWe"],
            },
            SampleResponse {
                op: "okta:api_services.create",
                path: "/integrations/api/v1/api-services",
                body: r#"{"id":"0oa72lrepvp4WqEET1d9","type":"anzennaapiservice","name":"My App",
                    "clientSecret":"CkF69kXtag9K1PWSZ2KNWQ1X9Gp5FxlydgBNNDvsM9ufuyP5VnyDLZx2S7cNe9PE"}"#,
                expect: Some("0oa72lrepvp4WqEET1d9"),
                secrets: &["CkF69kXtag9K1PWSZ2KNWQ1X9Gp5FxlydgBNNDvsM9ufuyP5VnyDLZx2S7cNe9PE"],
            },
            SampleResponse {
                op: "okta:users.lifecycle.credential_link",
                path: "/api/v1/users/00ub0oNGTSWTBKOLGLNR/lifecycle/activate",
                body: r#"{"activationUrl":"https://example.okta.com/welcome/XE6wE17zmphl3KqAPFxO","activationToken":"XE6wE17zmphl3KqAPFxO"}"#,
                expect: Some("00ub0oNGTSWTBKOLGLNR"),
                secrets: &["XE6wE17zmphl3KqAPFxO"],
            },
        ];
        for s in samples {
            s.check();
        }
    }
}

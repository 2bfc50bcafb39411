//! Microsoft Graph (Entra ID): applications, service principals and their credentials,
//! federated identity credentials, users and guest invitations; role assignments, app role
//! assignments, OAuth2 permission grants and new owners are privilege escalation.
//!
//! Paths are matched after any prefix (`/v1.0`, `/beta`, a base path). Entities are
//! addressed by id (`/applications/{id}`) or by alternate key (`/applications(appId='…')`,
//! `/applications(uniqueName='…')`); actions by short or qualified name (`addPassword`,
//! `microsoft.graph.addPassword`).
//!
//! Decisions, all failing closed:
//! - `addPassword` / `addKey` on anything that is not a service principal is classified as
//!   the application's (type casts such as `/directoryObjects/{id}/microsoft.graph.application`
//!   included).
//! - A PATCH of an application or service principal setting `keyCredentials` (a
//!   certificate) or `passwordCredentials` creates a credential; the body decides, and an
//!   unread or unparsable body matches.
//! - `PATCH /applications(uniqueName='…')` and `PATCH /servicePrincipals(appId='…')` are
//!   upserts that create when the object is missing, so they match as creation.
//! - `POST /administrativeUnits/{id}/members` creates a new user or group in the unit.
//! - `$batch`: each inner request is classified like a top-level one (its URL normalized
//!   here, since keygate did not canonicalize it); the first catalogued one is the answer.
//!   A batch that cannot be read (no body, not JSON, duplicated members, malformed
//!   requests, nested batches) is `msgraph:batch`.
//! - Group membership is left out (too common to gate by default; role-assignable groups
//!   can be added as routes).

use super::body::{essence, Json};
use super::matcher::normalize_foreign_path;
use super::table::{
    creates, escalates, CatalogOp, Cond, Identifier, RequestView, Route, PATCH, POST,
};

use super::table::Identifier::JsonPointer as P;

pub(super) static OPS: &[CatalogOp] = &[
    creates(
        "msgraph:applications.create",
        "application",
        Identifier::FirstOf(&[P("/appId"), P("/id")]),
    ),
    creates(
        "msgraph:servicePrincipals.create",
        "service_principal",
        Identifier::FirstOf(&[P("/id"), P("/appId")]),
    ),
    creates(
        "msgraph:application.addPassword",
        "client_secret",
        P("/keyId"),
    ),
    creates("msgraph:application.addKey", "certificate", P("/keyId")),
    creates(
        "msgraph:application.updateCredentials",
        "certificate",
        Identifier::PathSegmentAfter("applications"),
    ),
    creates(
        "msgraph:servicePrincipal.addPassword",
        "client_secret",
        P("/keyId"),
    ),
    creates(
        "msgraph:servicePrincipal.addKey",
        "certificate",
        P("/keyId"),
    ),
    creates(
        "msgraph:servicePrincipal.addTokenSigningCertificate",
        "certificate",
        P("/keyId"),
    ),
    creates(
        "msgraph:servicePrincipal.updateCredentials",
        "certificate",
        Identifier::PathSegmentAfter("servicePrincipals"),
    ),
    creates(
        "msgraph:federatedIdentityCredentials.create",
        "federated_credential",
        Identifier::FirstOf(&[P("/id"), P("/name")]),
    ),
    creates(
        "msgraph:users.create",
        "user",
        Identifier::FirstOf(&[P("/id"), P("/userPrincipalName")]),
    ),
    creates("msgraph:invitations.create", "user", P("/invitedUser/id")),
    // A batch whose requests could not be read.
    creates("msgraph:batch", "unknown", Identifier::None),
    escalates("msgraph:roleAssignments.create"),
    escalates("msgraph:directoryRoles.members.add"),
    escalates("msgraph:appRoleAssignments.create"),
    escalates("msgraph:oauth2PermissionGrants.write"),
    escalates("msgraph:owners.add"),
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
    // Service principals first: the catch-alls below belong to applications.
    route(
        "msgraph:servicePrincipal.addPassword",
        POST,
        &[
            "**/servicePrincipals/*/addPassword|microsoft.graph.addPassword",
            "**/servicePrincipals(*)/addPassword|microsoft.graph.addPassword",
            "**/microsoft.graph.servicePrincipal/addPassword|microsoft.graph.addPassword",
        ],
    ),
    route(
        "msgraph:servicePrincipal.addKey",
        POST,
        &[
            "**/servicePrincipals/*/addKey|microsoft.graph.addKey",
            "**/servicePrincipals(*)/addKey|microsoft.graph.addKey",
            "**/microsoft.graph.servicePrincipal/addKey|microsoft.graph.addKey",
        ],
    ),
    route(
        "msgraph:servicePrincipal.addTokenSigningCertificate",
        POST,
        &["**/addTokenSigningCertificate|microsoft.graph.addTokenSigningCertificate"],
    ),
    route(
        "msgraph:application.addPassword",
        POST,
        &["**/addPassword|microsoft.graph.addPassword"],
    ),
    route(
        "msgraph:application.addKey",
        POST,
        &["**/addKey|microsoft.graph.addKey"],
    ),
    route("msgraph:applications.create", POST, &["**/applications"]),
    route(
        "msgraph:applications.create",
        PATCH,
        &["**/applications(uniqueName=*)"],
    ),
    route(
        "msgraph:servicePrincipals.create",
        POST,
        &["**/servicePrincipals"],
    ),
    route(
        "msgraph:servicePrincipals.create",
        PATCH,
        &["**/servicePrincipals(appId=*)"],
    ),
    Route {
        op: "msgraph:application.updateCredentials",
        methods: PATCH,
        patterns: &[
            "**/applications/*",
            "**/applications(*)",
            "**/microsoft.graph.application",
        ],
        cond: Cond::GraphCredentials,
    },
    Route {
        op: "msgraph:servicePrincipal.updateCredentials",
        methods: PATCH,
        patterns: &[
            "**/servicePrincipals/*",
            "**/servicePrincipals(*)",
            "**/microsoft.graph.servicePrincipal",
        ],
        cond: Cond::GraphCredentials,
    },
    route(
        "msgraph:federatedIdentityCredentials.create",
        POST,
        &["**/federatedIdentityCredentials"],
    ),
    // An upsert by name, or an update that retargets the trust.
    route(
        "msgraph:federatedIdentityCredentials.create",
        PATCH,
        &[
            "**/federatedIdentityCredentials/*",
            "**/federatedIdentityCredentials(*)",
        ],
    ),
    route(
        "msgraph:users.create",
        POST,
        &[
            "**/users",
            "**/administrativeUnits/*/members",
            "**/administrativeUnits(*)/members",
        ],
    ),
    route("msgraph:invitations.create", POST, &["**/invitations"]),
    Route {
        op: "msgraph:batch",
        methods: POST,
        patterns: &["**/$batch"],
        cond: Cond::GraphBatch,
    },
    route(
        "msgraph:roleAssignments.create",
        POST,
        &[
            "**/roleManagement/**/roleAssignments",
            "**/roleManagement/**/roleAssignmentScheduleRequests",
            "**/roleManagement/**/roleEligibilityScheduleRequests",
        ],
    ),
    route(
        "msgraph:directoryRoles.members.add",
        POST,
        &[
            "**/directoryRoles/*/members/$ref",
            "**/directoryRoles(*)/members/$ref",
        ],
    ),
    route(
        "msgraph:appRoleAssignments.create",
        POST,
        &["**/appRoleAssignments", "**/appRoleAssignedTo"],
    ),
    route(
        "msgraph:oauth2PermissionGrants.write",
        POST,
        &["**/oauth2PermissionGrants"],
    ),
    route(
        "msgraph:oauth2PermissionGrants.write",
        PATCH,
        &["**/oauth2PermissionGrants/*"],
    ),
    route(
        "msgraph:owners.add",
        POST,
        &[
            "**/applications/*/owners/$ref",
            "**/applications(*)/owners/$ref",
            "**/servicePrincipals/*/owners/$ref",
            "**/servicePrincipals(*)/owners/$ref",
        ],
    ),
];

/// Whether a PATCH body sets key or password credentials. An unread or unparsable body
/// could, so it does.
pub(super) fn sets_credentials(body: Option<&[u8]>) -> bool {
    let Some(json) = body.and_then(Json::parse) else {
        return true;
    };
    let mut found = false;
    json.walk(&mut |k, _| {
        let k = k.trim().to_ascii_lowercase();
        found |= k.starts_with("keycredentials") || k.starts_with("passwordcredentials");
    });
    found
}

pub(super) enum BatchVerdict {
    /// The first catalogued request inside.
    Op(&'static CatalogOp),
    /// Every request was read and none is catalogued.
    Nothing,
    /// The batch could not be read.
    Opaque,
}

/// Classifies the requests of a JSON `$batch` with `inner`.
pub(super) fn batch(
    body: Option<&[u8]>,
    depth: u8,
    inner: impl Fn(&RequestView) -> Option<&'static CatalogOp>,
) -> BatchVerdict {
    if depth > 0 {
        // Graph does not nest batches; whatever this is, it is not read.
        return BatchVerdict::Opaque;
    }
    let Some(json) = body.and_then(Json::parse) else {
        return BatchVerdict::Opaque;
    };
    let Some(Json::Arr(requests)) = single(&json, "requests") else {
        return BatchVerdict::Opaque;
    };
    for r in requests {
        let Some(req) = BatchRequest::read(r) else {
            return BatchVerdict::Opaque;
        };
        let Ok(method) =
            http::Method::from_bytes(req.method.trim().to_ascii_uppercase().as_bytes())
        else {
            return BatchVerdict::Opaque;
        };
        let (path, query) = normalize_foreign_path(&req.url);
        let view = RequestView {
            method: &method,
            path: &path,
            query: query.as_deref(),
            content_type: req.content_type.as_deref(),
            body: Some(req.body.as_bytes()),
        };
        if let Some(op) = inner(&view) {
            return BatchVerdict::Op(op);
        }
    }
    BatchVerdict::Nothing
}

struct BatchRequest {
    method: String,
    url: String,
    content_type: Option<String>,
    body: String,
}

impl BatchRequest {
    /// None when a member is missing, duplicated or of the wrong type.
    fn read(r: &Json) -> Option<BatchRequest> {
        let Json::Obj(_) = r else { return None };
        let Some(Json::Str(method)) = single(r, "method") else {
            return None;
        };
        let Some(Json::Str(url)) = single(r, "url") else {
            return None;
        };
        let content_type = match at_most_one(r, "headers")? {
            None => None,
            Some(h @ Json::Obj(_)) => match at_most_one(h, "content-type")? {
                None => None,
                Some(Json::Str(ct)) => Some(ct.clone()),
                Some(_) => return None,
            },
            Some(_) => return None,
        };
        let body = match at_most_one(r, "body")? {
            None => String::new(),
            Some(Json::Str(s))
                if essence(content_type.as_deref()).is_some_and(|e| !e.contains("json")) =>
            {
                s.clone()
            }
            Some(v) => v.to_text(),
        };
        Some(BatchRequest {
            method: method.clone(),
            url: url.clone(),
            content_type,
            body,
        })
    }
}

/// The only member named `name` (case-insensitively); None when missing or duplicated.
fn single<'a>(j: &'a Json, name: &'a str) -> Option<&'a Json> {
    at_most_one(j, name).flatten()
}

/// Some(None) when missing, Some(Some(v)) when present once, None when duplicated.
fn at_most_one<'a>(j: &'a Json, name: &'a str) -> Option<Option<&'a Json>> {
    let mut it = j.members(name);
    let first = it.next();
    if it.next().is_some() {
        return None;
    }
    Some(first)
}

#[cfg(test)]
pub(super) fn cases() -> Vec<super::testutil::Case> {
    use super::testutil::Case;
    use super::Kind::MsGraph;
    let c = |m: &'static str, p: &'static str, e: Option<&'static str>| Case::new(MsGraph, m, p, e);
    let b = |body: &'static str, e: Option<&'static str>| {
        Case::new(MsGraph, "POST", "/v1.0/$batch", e)
            .content_type("application/json")
            .body(body)
    };
    vec![
        c("POST", "/v1.0/applications", Some("msgraph:applications.create")),
        c("POST", "/beta/Applications/", Some("msgraph:applications.create")),
        c("PATCH", "/v1.0/applications(uniqueName='app-65278')", Some("msgraph:applications.create")),
        c("POST", "/v1.0/servicePrincipals", Some("msgraph:servicePrincipals.create")),
        c("PATCH", "/v1.0/servicePrincipals(appId='65415bb1')", Some("msgraph:servicePrincipals.create")),
        c("POST", "/v1.0/applications/f9a3/addPassword", Some("msgraph:application.addPassword")),
        c("POST", "/v1.0/applications(appId='46e6adf4')/addPassword", Some("msgraph:application.addPassword")),
        c("POST", "/beta/applications/f9a3/microsoft.graph.addPassword", Some("msgraph:application.addPassword")),
        c("POST", "/v1.0/APPLICATIONS/f9a3/ADDPASSWORD/", Some("msgraph:application.addPassword")),
        c(
            "POST",
            "/v1.0/directoryObjects/f9a3/microsoft.graph.application/addPassword",
            Some("msgraph:application.addPassword"),
        ),
        c("POST", "/v1.0/applications/f9a3/addKey", Some("msgraph:application.addKey")),
        c("POST", "/v1.0/servicePrincipals/00af/addPassword", Some("msgraph:servicePrincipal.addPassword")),
        c("POST", "/v1.0/servicePrincipals(appId='00af')/addPassword", Some("msgraph:servicePrincipal.addPassword")),
        c("POST", "/v1.0/servicePrincipals/00af/addKey", Some("msgraph:servicePrincipal.addKey")),
        c(
            "POST",
            "/v1.0/servicePrincipals/00af/addTokenSigningCertificate",
            Some("msgraph:servicePrincipal.addTokenSigningCertificate"),
        ),
        c("PATCH", "/v1.0/applications/f9a3", Some("msgraph:application.updateCredentials"))
            .content_type("application/json")
            .body(r#"{"keyCredentials":[{"type":"AsymmetricX509Cert","usage":"Verify","key":"MIIDYDCCAki"}]}"#),
        c("PATCH", "/v1.0/applications(appId='46e6')", Some("msgraph:application.updateCredentials"))
            .body(r#"{"displayName":"x","PasswordCredentials":[]}"#),
        c("PATCH", "/v1.0/applications/f9a3", Some("msgraph:application.updateCredentials")).body("not json"),
        c("PATCH", "/v1.0/servicePrincipals/00af", Some("msgraph:servicePrincipal.updateCredentials"))
            .body(r#"{"keyCredentials":[]}"#),
        c(
            "POST",
            "/v1.0/applications/f9a3/federatedIdentityCredentials",
            Some("msgraph:federatedIdentityCredentials.create"),
        ),
        c(
            "PATCH",
            "/v1.0/applications/f9a3/federatedIdentityCredentials(name='gh')",
            Some("msgraph:federatedIdentityCredentials.create"),
        ),
        c("POST", "/v1.0/users", Some("msgraph:users.create")),
        c("POST", "/v1.0/directory/administrativeUnits/au1/members", Some("msgraph:users.create")),
        c("POST", "/v1.0/invitations", Some("msgraph:invitations.create")),
        c("POST", "/v1.0/roleManagement/directory/roleAssignments", Some("msgraph:roleAssignments.create")),
        c(
            "POST",
            "/v1.0/roleManagement/directory/roleAssignmentScheduleRequests",
            Some("msgraph:roleAssignments.create"),
        ),
        c("POST", "/v1.0/directoryRoles/r1/members/$ref", Some("msgraph:directoryRoles.members.add")),
        c("POST", "/v1.0/servicePrincipals/00af/appRoleAssignedTo", Some("msgraph:appRoleAssignments.create")),
        c("POST", "/v1.0/users/u1/appRoleAssignments", Some("msgraph:appRoleAssignments.create")),
        c("POST", "/v1.0/oauth2PermissionGrants", Some("msgraph:oauth2PermissionGrants.write")),
        c("PATCH", "/v1.0/oauth2PermissionGrants/g1", Some("msgraph:oauth2PermissionGrants.write")),
        c("POST", "/v1.0/applications/f9a3/owners/$ref", Some("msgraph:owners.add")),
        c("POST", "/v1.0/servicePrincipals(appId='x')/owners/$ref", Some("msgraph:owners.add")),
        // Batches.
        b(
            r#"{"requests":[{"id":"1","method":"GET","url":"/me"},
               {"id":"2","method":"POST","url":"/applications/f9a3/addPassword",
                "body":{"passwordCredential":{"displayName":"x"}},"headers":{"Content-Type":"application/json"}}]}"#,
            Some("msgraph:application.addPassword"),
        ),
        b(
            r#"{"requests":[{"id":"1","method":"post","url":"applications/x/../f9a3/%61ddPassword?x=1"}]}"#,
            Some("msgraph:application.addPassword"),
        ),
        b(
            r#"{"requests":[{"id":"1","method":"PATCH","url":"/applications/f9a3","body":{"keyCredentials":[]},
                "headers":{"content-type":"application/json"}}]}"#,
            Some("msgraph:application.updateCredentials"),
        ),
        b(
            r#"{"requests":[{"id":"1","method":"POST","url":"https://graph.microsoft.com/v1.0/servicePrincipals/s/addKey"}]}"#,
            Some("msgraph:servicePrincipal.addKey"),
        ),
        b(r#"{"requests":[{"id":"1","method":"POST","url":"/$batch","body":{"requests":[]}}]}"#, Some("msgraph:batch")),
        b(r#"{"requests":[{"id":"1","method":"GET","url":"/me","url":"/users"}]}"#, Some("msgraph:batch")),
        b(r#"{"requests":[{"id":"1","method":"GET","url":"/me"}],"Requests":[]}"#, Some("msgraph:batch")),
        b(r#"{"requests":[{"id":"1","url":"/users"}]}"#, Some("msgraph:batch")),
        b(r#"{"requests":[{"id":"1","method":"GET","url":"/me","body":1,"body":2}]}"#, Some("msgraph:batch")),
        b(r#"{"requests":"/users"}"#, Some("msgraph:batch")),
        b("not json", Some("msgraph:batch")),
        Case::new(MsGraph, "POST", "/v1.0/$batch", Some("msgraph:batch")),
        // Near misses.
        b(
            r#"{"requests":[{"id":"1","method":"GET","url":"/applications"},
               {"id":"2","method":"PATCH","url":"/applications/a","body":{"displayName":"x"}}]}"#,
            None,
        ),
        b(r#"{"requests":[]}"#, None),
        c("GET", "/v1.0/applications", None),
        c("GET", "/v1.0/applications/f9a3", None),
        c("DELETE", "/v1.0/applications/f9a3", None),
        c("POST", "/v1.0/applications/f9a3/removePassword", None),
        c("POST", "/v1.0/applications/f9a3/removeKey", None),
        c("POST", "/v1.0/applications/f9a3/addPasswords", None),
        c("GET", "/v1.0/applications/f9a3/addPassword", None),
        c("PATCH", "/v1.0/applications/f9a3", None).body(r#"{"displayName":"renamed"}"#),
        c("PATCH", "/v1.0/servicePrincipals/00af", None).body(r#"{"tags":["keyCredentials"]}"#),
        c("GET", "/v1.0/servicePrincipals", None),
        c("POST", "/v1.0/groups", None),
        c("GET", "/v1.0/users", None),
        c("PATCH", "/v1.0/users/u1", None),
        c("GET", "/v1.0/roleManagement/directory/roleAssignments", None),
        c("GET", "/v1.0/$batch", None),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::testutil::SampleResponse;

    #[test]
    fn identifiers() {
        let samples = [
            SampleResponse {
                op: "msgraph:application.addPassword",
                path: "/v1.0/applications/f9a3/addPassword",
                body: r#"{"customKeyIdentifier":null,"displayName":"Password friendly name","endDateTime":"2021-09-09T19:50:29.3086381Z",
                    "hint":"Q~5","keyId":"f0b0b335-1d71-4883-8f98-567911bfdca6",
                    "secretText":"Q~5QzqQ3QWdHzBEXAMPLEEXAMPLE-u","startDateTime":"2019-09-09T19:50:29.3086381Z"}"#,
                expect: Some("f0b0b335-1d71-4883-8f98-567911bfdca6"),
                secrets: &["Q~5QzqQ3QWdHzBEXAMPLEEXAMPLE-u"],
            },
            SampleResponse {
                op: "msgraph:servicePrincipal.addKey",
                path: "/v1.0/servicePrincipals/s/addKey",
                body: r#"{"customKeyIdentifier":null,"displayName":"CN=Cert","keyId":"f0b0b335-1d71-4883-8f98-567911bfdca6",
                    "type":"AsymmetricX509Cert","usage":"Verify","key":null}"#,
                expect: Some("f0b0b335-1d71-4883-8f98-567911bfdca6"),
                secrets: &[],
            },
            SampleResponse {
                op: "msgraph:applications.create",
                path: "/v1.0/applications",
                body: r#"{"id":"03ef14b0-ca33-4840-8f4f-d6e91916010e","appId":"631a96bc-a705-4eda-9f99-fdaf9f54f6a2","displayName":"Display name"}"#,
                expect: Some("631a96bc-a705-4eda-9f99-fdaf9f54f6a2"),
                secrets: &[],
            },
            SampleResponse {
                op: "msgraph:application.updateCredentials",
                path: "/v1.0/applications(appId='631a96bc')",
                body: "",
                expect: Some("appId=631a96bc"),
                secrets: &[],
            },
            SampleResponse {
                op: "msgraph:servicePrincipal.updateCredentials",
                path: "/v1.0/servicePrincipals/00af",
                body: "",
                expect: Some("00af"),
                secrets: &[],
            },
            SampleResponse {
                op: "msgraph:invitations.create",
                path: "/v1.0/invitations",
                body: r#"{"id":"7b92","inviteRedeemUrl":"https://login.microsoftonline.com/redeem?x","invitedUser":{"id":"243b1de4"}}"#,
                expect: Some("243b1de4"),
                secrets: &[],
            },
            SampleResponse {
                op: "msgraph:users.create",
                path: "/v1.0/users",
                body: r#"{"id":"87d349ed","userPrincipalName":"adelev@contoso.com","passwordProfile":{"password":"xWwvJ]6NMw+bWH-d"}}"#,
                expect: Some("87d349ed"),
                secrets: &["xWwvJ]6NMw+bWH-d"],
            },
            SampleResponse {
                op: "msgraph:batch",
                path: "/v1.0/$batch",
                body: "{}",
                expect: None,
                secrets: &[],
            },
        ];
        for s in samples {
            s.check();
        }
    }
}

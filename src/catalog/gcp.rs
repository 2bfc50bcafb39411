//! Google Cloud: IAM service accounts and their keys, Cloud Storage HMAC keys, API keys,
//! workload and workforce identity federation providers; `setIamPolicy` on service
//! accounts, projects, folders and organizations is privilege escalation.
//!
//! Paths are matched after any prefix (`/v1`, `/storage/v1`, `/v2`, a base path). Custom
//! verbs (`…/keys:upload`, `…:setIamPolicy`) are part of the last segment; an encoded colon
//! (`%3A`) is decoded before matching.
//!
//! Left out: `generateAccessToken`, `generateIdToken`, `signJwt`, `signBlob` (IAM
//! Credentials; short-lived credentials of an existing service account, the GCP analogue
//! of AssumeRole), custom role creation (roles are permission sets, not identities), and
//! workload identity pools themselves (a pool trusts nobody until it has a provider).

use super::table::{creates, escalates, CatalogOp, Cond, Identifier, Route, POST};

use super::table::Identifier::JsonPointer as P;

pub(super) static OPS: &[CatalogOp] = &[
    creates(
        "gcp:iam.serviceAccounts.create",
        "service_account",
        Identifier::FirstOf(&[P("/email"), P("/name")]),
    ),
    creates(
        "gcp:iam.serviceAccounts.keys.create",
        "service_account_key",
        P("/name"),
    ),
    creates(
        "gcp:iam.serviceAccounts.keys.upload",
        "service_account_key",
        P("/name"),
    ),
    creates(
        "gcp:storage.hmacKeys.create",
        "hmac_key",
        P("/metadata/accessId"),
    ),
    // The answer is a long-running operation; its `response` holds the key once done.
    creates(
        "gcp:apikeys.keys.create",
        "api_key",
        Identifier::FirstOf(&[P("/response/name"), P("/name")]),
    ),
    creates(
        "gcp:iam.workloadIdentityPools.providers.create",
        "identity_provider",
        Identifier::FirstOf(&[P("/response/name"), P("/name")]),
    ),
    creates(
        "gcp:iam.workforcePools.providers.create",
        "identity_provider",
        Identifier::FirstOf(&[P("/response/name"), P("/name")]),
    ),
    escalates("gcp:iam.serviceAccounts.setIamPolicy"),
    escalates("gcp:projects.setIamPolicy"),
    escalates("gcp:folders.setIamPolicy"),
    escalates("gcp:organizations.setIamPolicy"),
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
        "gcp:iam.serviceAccounts.create",
        &["**/projects/*/serviceAccounts"],
    ),
    post(
        "gcp:iam.serviceAccounts.keys.create",
        &["**/projects/*/serviceAccounts/*/keys"],
    ),
    post(
        "gcp:iam.serviceAccounts.keys.upload",
        &["**/projects/*/serviceAccounts/*/keys:upload"],
    ),
    post("gcp:storage.hmacKeys.create", &["**/projects/*/hmacKeys"]),
    post(
        "gcp:apikeys.keys.create",
        &["**/projects/*/locations/*/keys"],
    ),
    post(
        "gcp:iam.workloadIdentityPools.providers.create",
        &["**/projects/*/locations/*/workloadIdentityPools/*/providers"],
    ),
    post(
        "gcp:iam.workforcePools.providers.create",
        &["**/locations/*/workforcePools/*/providers"],
    ),
    post(
        "gcp:iam.serviceAccounts.setIamPolicy",
        &["**/serviceAccounts/*:setIamPolicy"],
    ),
    post("gcp:projects.setIamPolicy", &["**/projects/*:setIamPolicy"]),
    post("gcp:folders.setIamPolicy", &["**/folders/*:setIamPolicy"]),
    post(
        "gcp:organizations.setIamPolicy",
        &["**/organizations/*:setIamPolicy"],
    ),
];

#[cfg(test)]
pub(super) fn cases() -> Vec<super::testutil::Case> {
    use super::testutil::Case;
    use super::Kind::Gcp;
    let c = |m: &'static str, p: &'static str, e: Option<&'static str>| Case::new(Gcp, m, p, e);
    vec![
        c(
            "POST",
            "/v1/projects/my-project/serviceAccounts",
            Some("gcp:iam.serviceAccounts.create"),
        ),
        c(
            "POST",
            "/v1/projects/my-project/serviceaccounts/",
            Some("gcp:iam.serviceAccounts.create"),
        ),
        c(
            "POST",
            "/V1/PROJECTS/p/SERVICEACCOUNTS",
            Some("gcp:iam.serviceAccounts.create"),
        ),
        c(
            "POST",
            "/v1/projects/-/serviceAccounts/my-sa@my-project.iam.gserviceaccount.com/keys",
            Some("gcp:iam.serviceAccounts.keys.create"),
        ),
        c(
            "POST",
            "/v1/projects/p/serviceAccounts/123/Keys/",
            Some("gcp:iam.serviceAccounts.keys.create"),
        ),
        c(
            "POST",
            "/v1/projects/p/serviceAccounts/sa/keys:upload",
            Some("gcp:iam.serviceAccounts.keys.upload"),
        ),
        c(
            "POST",
            "/v1/projects/p/serviceAccounts/sa/keys%3Aupload",
            Some("gcp:iam.serviceAccounts.keys.upload"),
        ),
        c(
            "POST",
            "/v1/projects/p/serviceAccounts/sa/KEYS:UPLOAD",
            Some("gcp:iam.serviceAccounts.keys.upload"),
        ),
        c(
            "POST",
            "/storage/v1/projects/p/hmacKeys",
            Some("gcp:storage.hmacKeys.create"),
        )
        .query("serviceAccountEmail=sa%40p.iam.gserviceaccount.com"),
        c(
            "POST",
            "/v2/projects/p/locations/global/keys",
            Some("gcp:apikeys.keys.create"),
        )
        .query("keyId=k1"),
        c(
            "POST",
            "/v1/projects/p/locations/global/workloadIdentityPools/pool/providers",
            Some("gcp:iam.workloadIdentityPools.providers.create"),
        )
        .query("workloadIdentityPoolProviderId=gh"),
        c(
            "POST",
            "/v1/locations/global/workforcePools/wf/providers",
            Some("gcp:iam.workforcePools.providers.create"),
        ),
        c(
            "POST",
            "/v1/projects/p/serviceAccounts/sa:setIamPolicy",
            Some("gcp:iam.serviceAccounts.setIamPolicy"),
        ),
        c(
            "POST",
            "/v1/projects/p:setIamPolicy",
            Some("gcp:projects.setIamPolicy"),
        ),
        c(
            "POST",
            "/v3/projects/p:setIamPolicy",
            Some("gcp:projects.setIamPolicy"),
        ),
        c(
            "POST",
            "/v3/folders/123:setIamPolicy",
            Some("gcp:folders.setIamPolicy"),
        ),
        c(
            "POST",
            "/v1/organizations/42:setiampolicy",
            Some("gcp:organizations.setIamPolicy"),
        ),
        // Near misses.
        c("GET", "/v1/projects/p/serviceAccounts", None),
        c("GET", "/v1/projects/p/serviceAccounts/sa/keys", None),
        c("DELETE", "/v1/projects/p/serviceAccounts/sa/keys/k", None),
        c("POST", "/v1/projects/p/serviceAccounts/sa:signJwt", None),
        c("POST", "/v1/projects/p/serviceAccounts/sa:signBlob", None),
        c(
            "POST",
            "/v1/projects/-/serviceAccounts/sa:generateAccessToken",
            None,
        ),
        c(
            "POST",
            "/v1/projects/p/serviceAccounts/sa/keys/k:disable",
            None,
        ),
        c(
            "POST",
            "/v1/projects/p/serviceAccounts/sa:getIamPolicy",
            None,
        ),
        c("POST", "/v1/projects/p:getIamPolicy", None),
        c("POST", "/v1/projects/p/serviceAccounts/sa", None),
        c("POST", "/v1/projects/serviceAccounts", None),
        c("PUT", "/v1/projects/p/serviceAccounts", None),
        c("GET", "/storage/v1/projects/p/hmacKeys", None),
        c("POST", "/v1/projects/p/roles", None),
        c(
            "POST",
            "/v1/projects/p/locations/global/workloadIdentityPools",
            None,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::testutil::SampleResponse;

    #[test]
    fn identifiers() {
        let samples = [
            SampleResponse {
                op: "gcp:iam.serviceAccounts.create",
                path: "/v1/projects/p/serviceAccounts",
                body: r#"{"name":"projects/p/serviceAccounts/sa@p.iam.gserviceaccount.com","projectId":"p",
                    "uniqueId":"1234","email":"sa@p.iam.gserviceaccount.com","oauth2ClientId":"1234"}"#,
                expect: Some("sa@p.iam.gserviceaccount.com"),
                secrets: &[],
            },
            SampleResponse {
                op: "gcp:iam.serviceAccounts.keys.create",
                path: "/v1/projects/p/serviceAccounts/sa/keys",
                body: r#"{"name":"projects/p/serviceAccounts/sa@p.iam.gserviceaccount.com/keys/90c48f61c65cd56224a12ab18e6ee9ca9c3aee7c",
                    "privateKeyType":"TYPE_GOOGLE_CREDENTIALS_FILE","privateKeyData":"ewogICJ0eXBlIjogInNlcnZpY2VfYWNjb3VudCIK",
                    "keyAlgorithm":"KEY_ALG_RSA_2048"}"#,
                expect: Some("projects/p/serviceAccounts/sa@p.iam.gserviceaccount.com/keys/90c48f61c65cd56224a12ab18e6ee9ca9c3aee7c"),
                secrets: &["ewogICJ0eXBlIjogInNlcnZpY2VfYWNjb3VudCIK"],
            },
            SampleResponse {
                op: "gcp:iam.serviceAccounts.keys.upload",
                path: "/v1/projects/p/serviceAccounts/sa/keys:upload",
                body: r#"{"name":"projects/p/serviceAccounts/sa/keys/abc","publicKeyData":"LS0tLS1CRUdJTi"}"#,
                expect: Some("projects/p/serviceAccounts/sa/keys/abc"),
                secrets: &[],
            },
            SampleResponse {
                op: "gcp:storage.hmacKeys.create",
                path: "/storage/v1/projects/p/hmacKeys",
                body: r#"{"kind":"storage#hmacKey","metadata":{"accessId":"GOOG1EXAMPLEACCESSID","projectId":"p",
                    "serviceAccountEmail":"sa@p.iam.gserviceaccount.com","state":"ACTIVE"},
                    "secret":"bGoa+V7g/yqDXvKRqq+JTFn4uQZbPiQJo4pf9RzJ"}"#,
                expect: Some("GOOG1EXAMPLEACCESSID"),
                secrets: &["bGoa+V7g/yqDXvKRqq+JTFn4uQZbPiQJo4pf9RzJ"],
            },
            SampleResponse {
                op: "gcp:apikeys.keys.create",
                path: "/v2/projects/p/locations/global/keys",
                body: r#"{"name":"operations/akmf.p7-123","done":true,"response":{"@type":"type.googleapis.com/google.api.apikeys.v2.Key",
                    "name":"projects/123/locations/global/keys/k1","uid":"u1","keyString":"AIzaSyEXAMPLEEXAMPLEEXAMPLE"}}"#,
                expect: Some("projects/123/locations/global/keys/k1"),
                secrets: &["AIzaSyEXAMPLEEXAMPLEEXAMPLE"],
            },
            SampleResponse {
                op: "gcp:apikeys.keys.create",
                path: "/v2/projects/p/locations/global/keys",
                body: r#"{"name":"operations/akmf.p7-123"}"#,
                expect: Some("operations/akmf.p7-123"),
                secrets: &[],
            },
            SampleResponse {
                op: "gcp:iam.workloadIdentityPools.providers.create",
                path: "/v1/projects/p/locations/global/workloadIdentityPools/pool/providers",
                body: r#"{"name":"projects/p/locations/global/workloadIdentityPools/pool/providers/gh/operations/op1"}"#,
                expect: Some("projects/p/locations/global/workloadIdentityPools/pool/providers/gh/operations/op1"),
                secrets: &[],
            },
        ];
        for s in samples {
            s.check();
        }
    }
}

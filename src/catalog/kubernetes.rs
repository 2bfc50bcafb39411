//! Kubernetes: service accounts, TokenRequests, certificate signing requests, Secrets of
//! type `kubernetes.io/service-account-token`; CSR approval and (cluster) role bindings are
//! privilege escalation.
//!
//! Paths are matched after any prefix (a proxy such as `/k8s/clusters/<id>`), API group
//! versions by `*` (`certificates.k8s.io/v1`, `v1beta1`, `rbac.authorization.k8s.io/v1`).
//!
//! Decisions, all failing closed:
//! - A server-side apply PATCH creates the object when it is missing, so a PATCH of a
//!   named service account or CSR matches unless its content type is one of the three that
//!   only update (`json-patch+json`, `merge-patch+json`, `strategic-merge-patch+json`).
//! - A Secret POST, PUT or PATCH matches when its body could make it a service-account
//!   token: JSON (any patch type) when any string in it is that type; protobuf when the
//!   bytes contain it; YAML (and any other or missing content type) when the text,
//!   whitespace and quotes removed, contains `service-account-token`, or when the text uses
//!   escapes (`\`), tags (`!`), is not UTF-8 or contains NUL (UTF-16), any of which could
//!   spell the type without writing it; CBOR always (indefinite-length strings split it).
//!   An unread body or unparsable JSON matches.

use super::body::{contains_ignore_case, essence, Json};
use super::table::{
    creates, escalates, CatalogOp, Cond, Identifier, Route, PATCH, POST, PUT_PATCH,
};

const NAME: Identifier = Identifier::JsonPointer("/metadata/name");
const SA_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";

pub(super) static OPS: &[CatalogOp] = &[
    creates("kubernetes:create_serviceaccount", "service_account", NAME),
    creates(
        "kubernetes:create_serviceaccount_token",
        "api_token",
        Identifier::PathSegmentAfter("serviceaccounts"),
    ),
    creates(
        "kubernetes:create_certificatesigningrequest",
        "certificate",
        NAME,
    ),
    creates(
        "kubernetes:create_serviceaccount_token_secret",
        "api_token",
        Identifier::FirstOf(&[NAME, Identifier::PathSegmentAfter("secrets")]),
    ),
    escalates("kubernetes:approve_certificatesigningrequest"),
    escalates("kubernetes:create_or_update_rolebinding"),
    escalates("kubernetes:create_or_update_clusterrolebinding"),
];

const fn route(
    op: &'static str,
    methods: &'static [&'static str],
    patterns: &'static [&'static str],
    cond: Cond,
) -> Route {
    Route {
        op,
        methods,
        patterns,
        cond,
    }
}

pub(super) static ROUTES: &[Route] = &[
    route(
        "kubernetes:create_serviceaccount_token",
        POST,
        &["**/api/v1/namespaces/*/serviceaccounts/*/token"],
        Cond::Always,
    ),
    route(
        "kubernetes:create_serviceaccount",
        POST,
        &["**/api/v1/namespaces/*/serviceaccounts"],
        Cond::Always,
    ),
    route(
        "kubernetes:create_serviceaccount",
        PATCH,
        &["**/api/v1/namespaces/*/serviceaccounts/*"],
        Cond::MayCreateByPatch,
    ),
    route(
        "kubernetes:approve_certificatesigningrequest",
        PUT_PATCH,
        &["**/apis/certificates.k8s.io/*/certificatesigningrequests/*/approval"],
        Cond::Always,
    ),
    route(
        "kubernetes:create_certificatesigningrequest",
        POST,
        &["**/apis/certificates.k8s.io/*/certificatesigningrequests"],
        Cond::Always,
    ),
    route(
        "kubernetes:create_certificatesigningrequest",
        PATCH,
        &["**/apis/certificates.k8s.io/*/certificatesigningrequests/*"],
        Cond::MayCreateByPatch,
    ),
    route(
        "kubernetes:create_serviceaccount_token_secret",
        POST,
        &["**/api/v1/namespaces/*/secrets"],
        Cond::ServiceAccountTokenSecret,
    ),
    route(
        "kubernetes:create_serviceaccount_token_secret",
        PUT_PATCH,
        &["**/api/v1/namespaces/*/secrets/*"],
        Cond::ServiceAccountTokenSecret,
    ),
    route(
        "kubernetes:create_or_update_rolebinding",
        POST,
        &["**/apis/rbac.authorization.k8s.io/*/namespaces/*/rolebindings"],
        Cond::Always,
    ),
    route(
        "kubernetes:create_or_update_rolebinding",
        PUT_PATCH,
        &["**/apis/rbac.authorization.k8s.io/*/namespaces/*/rolebindings/*"],
        Cond::Always,
    ),
    route(
        "kubernetes:create_or_update_clusterrolebinding",
        POST,
        &["**/apis/rbac.authorization.k8s.io/*/clusterrolebindings"],
        Cond::Always,
    ),
    route(
        "kubernetes:create_or_update_clusterrolebinding",
        PUT_PATCH,
        &["**/apis/rbac.authorization.k8s.io/*/clusterrolebindings/*"],
        Cond::Always,
    ),
];

/// Whether a PATCH with this content type can create a missing object (server-side apply,
/// or a content type the server may take as such).
pub(super) fn patch_may_create(content_type: Option<&str>) -> bool {
    !matches!(
        essence(content_type).as_deref(),
        Some(
            "application/json-patch+json"
                | "application/merge-patch+json"
                | "application/strategic-merge-patch+json"
        )
    )
}

/// Whether a Secret body is, or could be, of type `kubernetes.io/service-account-token`.
pub(super) fn may_be_service_account_token_secret(
    content_type: Option<&str>,
    body: Option<&[u8]>,
) -> bool {
    let Some(body) = body else { return true };
    let ct = essence(content_type).unwrap_or_default();
    if ct.contains("cbor") {
        return true;
    }
    if ct.contains("protobuf") {
        // Protobuf strings are contiguous and unescaped.
        return contains_ignore_case(body, SA_TOKEN_TYPE.as_bytes());
    }
    if ct.contains("json") {
        return match Json::parse(body) {
            // Any string, not only `type`: JSON patches carry it as `value`, and a
            // case-insensitive decoder would read `"TYPE"`.
            Some(json) => json
                .strings()
                .iter()
                .any(|s| s.trim().eq_ignore_ascii_case(SA_TOKEN_TYPE)),
            None => true,
        };
    }
    yaml_may_be_service_account_token(body)
}

/// A conservative reading of YAML (and of anything not known to be JSON or protobuf).
fn yaml_may_be_service_account_token(body: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(body) else {
        return true;
    };
    if text.contains(['\0', '\\', '!']) {
        return true;
    }
    let squeezed: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'"' && *b != b'\'')
        .collect();
    contains_ignore_case(&squeezed, b"service-account-token")
}

#[cfg(test)]
pub(super) fn cases() -> Vec<super::testutil::Case> {
    use super::testutil::Case;
    use super::Kind::Kubernetes;
    const JSON: &str = "application/json";
    const YAML: &str = "application/yaml";
    const APPLY: &str = "application/apply-patch+yaml";
    const MERGE: &str = "application/merge-patch+json";
    const SECRETS: &str = "/api/v1/namespaces/default/secrets";
    const SECRET: &str = "/api/v1/namespaces/default/secrets/build-robot-secret";
    const HIT: Option<&str> = Some("kubernetes:create_serviceaccount_token_secret");
    let c =
        |m: &'static str, p: &'static str, e: Option<&'static str>| Case::new(Kubernetes, m, p, e);
    let s = |ct: &'static str, body: &'static str, e: Option<&'static str>| {
        Case::new(Kubernetes, "POST", SECRETS, e)
            .content_type(ct)
            .body(body)
    };
    vec![
        c("POST", "/api/v1/namespaces/default/serviceaccounts", Some("kubernetes:create_serviceaccount")),
        c("POST", "/API/V1/Namespaces/default/ServiceAccounts/", Some("kubernetes:create_serviceaccount")),
        c("POST", "/k8s/clusters/c-m-1/api/v1/namespaces/d/serviceaccounts", Some("kubernetes:create_serviceaccount")),
        c("PATCH", "/api/v1/namespaces/d/serviceaccounts/robot", Some("kubernetes:create_serviceaccount"))
            .content_type(APPLY)
            .query("fieldManager=kubectl"),
        c("PATCH", "/api/v1/namespaces/d/serviceaccounts/robot", Some("kubernetes:create_serviceaccount")),
        c(
            "POST",
            "/api/v1/namespaces/default/serviceaccounts/robot/token",
            Some("kubernetes:create_serviceaccount_token"),
        ),
        c(
            "POST",
            "/apis/certificates.k8s.io/v1/certificatesigningrequests",
            Some("kubernetes:create_certificatesigningrequest"),
        ),
        c(
            "POST",
            "/apis/certificates.k8s.io/v1beta1/certificatesigningrequests",
            Some("kubernetes:create_certificatesigningrequest"),
        ),
        c(
            "PATCH",
            "/apis/certificates.k8s.io/v1/certificatesigningrequests/csr1",
            Some("kubernetes:create_certificatesigningrequest"),
        )
        .content_type("application/apply-patch+yaml; charset=utf-8"),
        c(
            "PUT",
            "/apis/certificates.k8s.io/v1/certificatesigningrequests/csr1/approval",
            Some("kubernetes:approve_certificatesigningrequest"),
        ),
        c(
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/d/rolebindings",
            Some("kubernetes:create_or_update_rolebinding"),
        ),
        c(
            "PATCH",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/d/rolebindings/rb",
            Some("kubernetes:create_or_update_rolebinding"),
        ),
        c(
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            Some("kubernetes:create_or_update_clusterrolebinding"),
        ),
        c(
            "PUT",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/admin-binding",
            Some("kubernetes:create_or_update_clusterrolebinding"),
        ),
        // Secrets of the service-account-token type.
        s(
            JSON,
            r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"build-robot-secret",
               "annotations":{"kubernetes.io/service-account.name":"build-robot"}},"type":"kubernetes.io/service-account-token"}"#,
            HIT,
        ),
        s(JSON, r#"{"type":"Opaque","type":"kubernetes.io/service-account-token"}"#, HIT),
        s(JSON, r#"{"type":"kubernetes.io/service-account-token","type":"Opaque"}"#, HIT),
        s(JSON, r#"{"TYPE":"Kubernetes.io/Service-Account-Token"}"#, HIT),
        s(JSON, r#"{"type":"kubernetes.io\/service\u002daccount-token"}"#, HIT),
        s(JSON, r#"{"type":"kubernetes.io/service-account-token""#, HIT),
        s(JSON, "", HIT),
        s(YAML, "apiVersion: v1\nkind: Secret\nmetadata:\n  name: t\ntype: kubernetes.io/service-account-token\n", HIT),
        s(YAML, "type: \"kubernetes.io/service-account-token\"\n", HIT),
        s(YAML, "type: 'kubernetes.io/service-\n  account-token'\n", HIT),
        s(YAML, "type: \"kubernetes.io/service\\x2daccount-token\"\n", HIT),
        s(YAML, "type: !!binary a3ViZXJuZXRlcy5pby9zZXJ2aWNlLWFjY291bnQtdG9rZW4=\n", HIT),
        s("application/vnd.kubernetes.protobuf", "k8s\0\n\x02v1\x12\x06Secret kubernetes.io/service-account-token", HIT),
        s("application/cbor", "anything", HIT),
        s("text/plain", "type: kubernetes.io/service-account-token", HIT),
        Case::new(Kubernetes, "POST", SECRETS, HIT).body(r#"{"type":"kubernetes.io/service-account-token"}"#),
        Case::new(Kubernetes, "POST", SECRETS, HIT),
        Case::new(Kubernetes, "PUT", SECRET, HIT)
            .content_type(JSON)
            .body(r#"{"metadata":{"name":"s"},"type":"kubernetes.io/service-account-token"}"#),
        Case::new(Kubernetes, "PATCH", SECRET, HIT)
            .content_type("application/json-patch+json")
            .body(r#"[{"op":"replace","path":"/type","value":"kubernetes.io/service-account-token"}]"#),
        Case::new(Kubernetes, "PATCH", SECRET, HIT).content_type(APPLY).body("type: kubernetes.io/service-account-token"),
        Case::new(Kubernetes, "POST", "/API/v1/NAMESPACES/d/Secrets/", HIT).content_type(JSON).body("{}{}"),
        // Near misses.
        s(JSON, r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"db"},"type":"Opaque","data":{"p":"cGFzcw=="}}"#, None),
        s(JSON, r#"{"kind":"Secret","metadata":{"name":"db"}}"#, None),
        s(JSON, r#"{"type":"kubernetes.io/dockerconfigjson","note":"service-account-token"}"#, None),
        s(YAML, "apiVersion: v1\nkind: Secret\ntype: Opaque\nstringData:\n  a: b\n", None),
        s("application/vnd.kubernetes.protobuf", "k8s\0\n\x02v1\x12\x06Secret Opaque", None),
        Case::new(Kubernetes, "PATCH", SECRET, None).content_type(MERGE).body(r#"{"data":{"a":"Yg=="}}"#),
        c("GET", SECRETS, None),
        c("GET", SECRET, None),
        c("DELETE", SECRET, None),
        c("GET", "/api/v1/namespaces/default/serviceaccounts", None),
        c("GET", "/api/v1/serviceaccounts", None),
        c("PUT", "/api/v1/namespaces/d/serviceaccounts/robot", None),
        c("DELETE", "/api/v1/namespaces/d/serviceaccounts/robot", None),
        c("PATCH", "/api/v1/namespaces/d/serviceaccounts/robot", None).content_type(MERGE),
        c("PATCH", "/api/v1/namespaces/d/serviceaccounts/robot", None)
            .content_type("application/strategic-merge-patch+json"),
        c("GET", "/api/v1/namespaces/default/serviceaccounts/robot/token", None),
        c("POST", "/api/v1/namespaces/default/serviceaccounts/robot/tokens", None),
        c("GET", "/apis/certificates.k8s.io/v1/certificatesigningrequests", None),
        c("PATCH", "/apis/certificates.k8s.io/v1/certificatesigningrequests/csr1", None)
            .content_type("application/json-patch+json"),
        c("POST", "/api/v1/namespaces/default/configmaps", None),
        c("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/d/roles", None),
        c("GET", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", None),
        c("POST", "/api/v1/namespaces/default/pods", None),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::testutil::SampleResponse;

    #[test]
    fn identifiers() {
        let samples = [
            SampleResponse {
                op: "kubernetes:create_serviceaccount",
                path: "/api/v1/namespaces/d/serviceaccounts",
                body: r#"{"kind":"ServiceAccount","apiVersion":"v1","metadata":{"name":"build-robot","namespace":"d","uid":"u1"}}"#,
                expect: Some("build-robot"),
                secrets: &[],
            },
            SampleResponse {
                op: "kubernetes:create_serviceaccount_token",
                path: "/api/v1/namespaces/d/serviceaccounts/build-robot/token",
                body: r#"{"kind":"TokenRequest","apiVersion":"authentication.k8s.io/v1","metadata":{"name":"build-robot","namespace":"d"},
                    "spec":{"audiences":["https://kubernetes.default.svc"],"expirationSeconds":3600},
                    "status":{"token":"eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJ4In0.c2ln","expirationTimestamp":"2024-01-01T00:00:00Z"}}"#,
                expect: Some("build-robot"),
                secrets: &["eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJ4In0.c2ln"],
            },
            SampleResponse {
                op: "kubernetes:create_serviceaccount_token_secret",
                path: "/api/v1/namespaces/d/secrets",
                body: r#"{"kind":"Secret","metadata":{"name":"build-robot-secret"},"type":"kubernetes.io/service-account-token",
                    "data":{"token":"ZXlKaGJHY2lPaUpTVXpJMU5pSjkuZXhhbXBsZQ=="}}"#,
                expect: Some("build-robot-secret"),
                secrets: &["ZXlKaGJHY2lPaUpTVXpJMU5pSjkuZXhhbXBsZQ=="],
            },
            SampleResponse {
                op: "kubernetes:create_serviceaccount_token_secret",
                path: "/api/v1/namespaces/d/secrets/from-path",
                body: "",
                expect: Some("from-path"),
                secrets: &[],
            },
            SampleResponse {
                op: "kubernetes:create_certificatesigningrequest",
                path: "/apis/certificates.k8s.io/v1/certificatesigningrequests",
                body: r#"{"kind":"CertificateSigningRequest","metadata":{"name":"alice-csr"},"spec":{"request":"LS0tLS1CRUdJTi"}}"#,
                expect: Some("alice-csr"),
                secrets: &[],
            },
        ];
        for s in samples {
            s.check();
        }
    }
}

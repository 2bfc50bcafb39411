//! The built-in catalog of identity-creation APIs.
//!
//! A tool's `kind` selects its part of the catalog. [`classify`] says which catalog
//! operation a request is (creating an access key, a token, a service account, a deploy key,
//! a secret, a certificate … or escalating privileges), [`identifier`] finds the created
//! identity's identifier in the tool's answer, [`needs_body`] says when classifying needs the
//! request body, and [`operations`] lists a kind's operations for the policy schema.
//!
//! The module is pure: no I/O, no state, no configuration.
//!
//! # Failing closed
//!
//! The gate is only as good as its matching, so every doubt classifies as the dangerous
//! operation:
//!
//! - literal path segments match case-insensitively, after percent-decoding and after
//!   dropping `;parameters` (servers that strip matrix parameters would otherwise route
//!   `/user/keys;x` to `/user/keys`); a trailing slash is ignored;
//! - patterns accept any leading segments (API prefixes such as `/api/v4`, `/api/v3` on
//!   GitHub Enterprise Server, `/v1.0`, `/beta`, a tool's upstream base path, Vault
//!   namespaces, a Kubernetes proxy's `/k8s/clusters/<id>`); the one exception is GitLab's
//!   `POST /runners`, whose last segment is too common;
//! - methods match case-insensitively;
//! - an AWS `Action` is looked for in the query, in the body as a form, and in the body as
//!   JSON, with case-insensitive names and values, every duplicate counting;
//! - a body that decides the answer but was not read, or cannot be parsed, matches.
//!
//! A false positive costs a human one approval; a false negative is an identity nobody
//! approved.
//!
//! # What the catalog cannot see
//!
//! Only method, path, query, content type and body reach it. Method-override headers
//! (`X-HTTP-Method-Override`, honoured by Google APIs) and `X-Amz-Target` (the AWS JSON
//! protocol) are headers: the gateway should refuse the former on catalogued tools and treat
//! the latter as the action. GraphQL endpoints (GitHub, GitLab) are not catalogued: a tool
//! that wants them gated adds `POST /graphql` as a route.
//!
//! Headers are the gateway's to handle, with the lists [`is_effect_header`] (headers that
//! change who acts, where, or how the body is read: an approval covers them),
//! [`credential_headers`] and [`credential_query`] (the agent's own credentials, stripped)
//! give per kind; [`redact_body`] and [`redact_query`] hide secret fields (passwords, a
//! Secret's data …) from what an approver is shown and the store keeps.

mod aws;
mod body;
mod gcp;
mod github;
pub mod github_permissions;
mod gitlab;
mod identifier;
mod kubernetes;
mod matcher;
mod mcp_names;
mod msgraph;
mod okta;
mod sensitive;
mod stripe;
mod table;
mod vault;

use matcher::Segments;
pub use mcp_names::mcp_creates_identity;
pub use sensitive::{
    credential_headers, credential_query, is_effect_header, is_secret_field, redact_body,
    redact_query, RedactedBody,
};
pub use table::{
    CatalogOp, Identifier, Kind, RequestView, IDENTITY_CREATION_TAGS, PRIVILEGE_ESCALATION_TAGS,
};
use table::{Cond, Route};

/// Whether classifying a request of this kind, method and path may depend on its body.
/// True whenever [`classify`] could answer differently with the body than without it:
/// `classify` only ever looks at a body where this is true.
pub fn needs_body(
    kind: Kind,
    method: &http::Method,
    path: &str,
    content_type: Option<&str>,
) -> bool {
    // The content type never narrows this: a body whose type looks irrelevant is still
    // inspected (or matched unread) by the rules that need one.
    let _ = content_type;
    match kind {
        Kind::Generic => false,
        // The Query protocol takes its Action from the query or the body, whatever the
        // method and path; a JSON body is checked too.
        Kind::Aws => true,
        _ => {
            let segs = Segments::new(path);
            routes(kind)
                .iter()
                .any(|r| r.cond.uses_body() && r.applies(method, &segs))
        }
    }
}

/// The catalog operation this request is, if any. Fails closed: a request that could be
/// an identity-creation call (ambiguous, duplicated parameters, odd casing, a deciding body
/// that was not read or does not parse) matches.
pub fn classify(kind: Kind, req: &RequestView) -> Option<&'static CatalogOp> {
    classify_at_depth(kind, req, 0)
}

fn classify_at_depth(kind: Kind, req: &RequestView, depth: u8) -> Option<&'static CatalogOp> {
    match kind {
        Kind::Generic => None,
        Kind::Aws => aws::classify(req),
        _ => {
            let segs = Segments::new(req.path);
            for route in routes(kind) {
                if !route.applies(req.method, &segs) {
                    continue;
                }
                match route.cond.eval(kind, req, depth) {
                    Verdict::No => continue,
                    Verdict::Yes => return find_op(kind, route.op),
                    Verdict::Op(op) => return Some(op),
                }
            }
            None
        }
    }
}

/// The created identity's identifier, from the tool's success response body (and the
/// request path where the identifier is only there). Never a secret: no secret access key,
/// token, private key or client secret value.
pub fn identifier(op: &CatalogOp, request_path: &str, response_body: &[u8]) -> Option<String> {
    identifier::extract(&op.identifier, request_path, response_body)
}

/// The text of the first XML element named `tag` (local name, ASCII case-insensitively),
/// unescaped.
pub fn xml_element_text(doc: &str, tag: &str) -> Option<String> {
    identifier::xml_text(doc, tag)
}

/// Every operation of a kind, for the policy schema and docs.
pub fn operations(kind: Kind) -> &'static [CatalogOp] {
    match kind {
        Kind::Generic => &[],
        Kind::Aws => aws::OPS,
        Kind::Gcp => gcp::OPS,
        Kind::MsGraph => msgraph::OPS,
        Kind::Github => github::OPS,
        Kind::Gitlab => gitlab::OPS,
        Kind::Kubernetes => kubernetes::OPS,
        Kind::Vault => vault::OPS,
        Kind::Okta => okta::OPS,
        Kind::Stripe => stripe::OPS,
    }
}

/// Every operation of every kind, by name.
pub fn find(name: &str) -> Option<&'static CatalogOp> {
    Kind::ALL
        .iter()
        .find_map(|k| operations(*k).iter().find(|op| op.name == name))
}

fn find_op(kind: Kind, name: &str) -> Option<&'static CatalogOp> {
    operations(kind).iter().find(|op| op.name == name)
}

/// The path-matched rules of a kind (AWS matches on its Action instead).
fn routes(kind: Kind) -> &'static [Route] {
    match kind {
        Kind::Generic | Kind::Aws => &[],
        Kind::Gcp => gcp::ROUTES,
        Kind::MsGraph => msgraph::ROUTES,
        Kind::Github => github::ROUTES,
        Kind::Gitlab => gitlab::ROUTES,
        Kind::Kubernetes => kubernetes::ROUTES,
        Kind::Vault => vault::ROUTES,
        Kind::Okta => okta::ROUTES,
        Kind::Stripe => stripe::ROUTES,
    }
}

enum Verdict {
    No,
    Yes,
    Op(&'static CatalogOp),
}

impl Cond {
    fn uses_body(self) -> bool {
        matches!(
            self,
            Cond::ServiceAccountTokenSecret | Cond::GraphCredentials | Cond::GraphBatch
        )
    }

    fn eval(self, kind: Kind, req: &RequestView, depth: u8) -> Verdict {
        let yes = |b: bool| if b { Verdict::Yes } else { Verdict::No };
        match self {
            Cond::Always => Verdict::Yes,
            Cond::MayCreateByPatch => yes(kubernetes::patch_may_create(req.content_type)),
            Cond::ServiceAccountTokenSecret => yes(
                kubernetes::may_be_service_account_token_secret(req.content_type, req.body),
            ),
            Cond::GraphCredentials => yes(msgraph::sets_credentials(req.body)),
            Cond::GraphBatch => match msgraph::batch(req.body, depth, |inner| {
                classify_at_depth(kind, inner, depth + 1)
            }) {
                msgraph::BatchVerdict::Op(op) => Verdict::Op(op),
                msgraph::BatchVerdict::Nothing => Verdict::No,
                msgraph::BatchVerdict::Opaque => Verdict::Yes,
            },
        }
    }
}

#[cfg(test)]
mod testutil;

#[cfg(test)]
mod tests {
    use super::testutil::{all_cases, Case};
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn kinds_parse_and_print() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(*k));
            assert_eq!(k.to_string(), k.as_str());
        }
        assert_eq!(Kind::parse("AWS"), None);
        assert_eq!(Kind::parse(""), None);
        assert_eq!(Kind::parse("k8s"), None);
        assert_eq!(Kind::ALL.len(), 10);
    }

    #[test]
    fn generic_has_no_operations() {
        assert!(operations(Kind::Generic).is_empty());
        let m = http::Method::POST;
        let req = RequestView {
            method: &m,
            path: "/repos/o/r/keys",
            query: Some("Action=CreateAccessKey"),
            content_type: None,
            body: None,
        };
        assert!(classify(Kind::Generic, &req).is_none());
        assert!(!needs_body(Kind::Generic, &m, "/", None));
    }

    #[test]
    fn op_names_are_unique_and_well_formed() {
        let mut seen = BTreeSet::new();
        for kind in Kind::ALL {
            for op in operations(*kind) {
                let (k, api) = op.name.split_once(':').unwrap();
                assert_eq!(k, kind.as_str(), "{}", op.name);
                assert!(!api.is_empty(), "{}", op.name);
                // The config's operation-name alphabet (Cedar action ids).
                assert!(
                    op.name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.:/".contains(&b)),
                    "{}",
                    op.name
                );
                assert!(seen.insert(op.name), "duplicate {}", op.name);
                assert_eq!(find(op.name).map(|o| o.name), Some(op.name));
            }
        }
        assert!(seen.len() > 100, "{}", seen.len());
    }

    #[test]
    fn tags_and_identity_kinds_agree() {
        for kind in Kind::ALL {
            for op in operations(*kind) {
                if op.tags == IDENTITY_CREATION_TAGS {
                    assert!(
                        op.identity_kind.is_some_and(|k| !k.is_empty()),
                        "{}",
                        op.name
                    );
                } else {
                    assert_eq!(op.tags, PRIVILEGE_ESCALATION_TAGS, "{}", op.name);
                    assert!(op.identity_kind.is_none(), "{}", op.name);
                    assert!(matches!(op.identifier, Identifier::None), "{}", op.name);
                }
            }
        }
    }

    #[test]
    fn every_route_names_an_operation_of_its_kind_and_every_operation_has_a_route() {
        for kind in Kind::ALL {
            if matches!(kind, Kind::Aws | Kind::Generic) {
                continue;
            }
            let mut used = BTreeSet::new();
            for r in routes(*kind) {
                assert!(
                    find_op(*kind, r.op).is_some(),
                    "{kind}: no operation {}",
                    r.op
                );
                assert!(!r.patterns.is_empty() && !r.methods.is_empty(), "{}", r.op);
                used.insert(r.op);
            }
            for op in operations(*kind) {
                assert!(used.contains(op.name), "{} has no route", op.name);
            }
        }
    }

    #[test]
    fn identifier_rules_never_name_a_secret_field() {
        fn check(name: &str, id: &Identifier) {
            match id {
                Identifier::JsonPointer(p) => {
                    assert!(p.starts_with('/'), "{name}: {p}");
                    let last = p.rsplit('/').next().unwrap_or("");
                    assert!(!identifier::is_secret_field(last), "{name}: {p}");
                }
                Identifier::XmlTag(t) => assert!(!identifier::is_secret_field(t), "{name}: {t}"),
                Identifier::PathSegmentAfter(s) => assert!(!s.is_empty(), "{name}"),
                Identifier::FirstOf(list) => {
                    assert!(!list.is_empty(), "{name}");
                    list.iter().for_each(|i| check(name, i));
                }
                Identifier::None => {}
            }
        }
        for kind in Kind::ALL {
            for op in operations(*kind) {
                check(op.name, &op.identifier);
            }
        }
    }

    /// Runs every provider's table: each case classifies as expected, and so does its
    /// body-less twin unless `needs_body` says the body is read.
    #[test]
    fn every_case_of_every_provider() {
        let cases = all_cases();
        let mut failures = Vec::new();
        for c in &cases {
            if let Err(e) = c.check() {
                failures.push(e);
            }
        }
        assert!(
            failures.is_empty(),
            "{} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn every_operation_has_a_matching_case_and_a_near_miss_per_kind() {
        let cases = all_cases();
        let mut matched: BTreeMap<&str, usize> = BTreeMap::new();
        let mut misses: std::collections::HashMap<Kind, usize> = std::collections::HashMap::new();
        for c in &cases {
            match c.expect {
                Some(name) => *matched.entry(name).or_default() += 1,
                None => *misses.entry(c.kind).or_default() += 1,
            }
        }
        for kind in Kind::ALL {
            for op in operations(*kind) {
                assert!(
                    matched.contains_key(op.name),
                    "no matching case for {}",
                    op.name
                );
            }
            if *kind != Kind::Generic {
                assert!(
                    misses.get(kind).copied().unwrap_or(0) >= 5,
                    "{kind}: too few near misses"
                );
            }
        }
    }

    /// `needs_body` is true wherever the body changes the answer: every case is classified
    /// with its body, without it, and with a few other bodies.
    #[test]
    fn needs_body_covers_every_body_dependent_answer() {
        let bodies: &[&[u8]] = &[
            b"",
            b"{}",
            b"not json",
            b"Action=CreateAccessKey",
            br#"{"type":"kubernetes.io/service-account-token"}"#,
            br#"{"keyCredentials":[]}"#,
            br#"{"requests":[]}"#,
        ];
        for c in all_cases() {
            let m = c.method();
            let base = RequestView {
                method: &m,
                path: c.path,
                query: c.query,
                content_type: c.content_type,
                body: None,
            };
            let without = classify(c.kind, &base).map(|o| o.name);
            for body in bodies.iter().copied().chain(c.body.map(str::as_bytes)) {
                let with = classify(
                    c.kind,
                    &RequestView {
                        body: Some(body),
                        ..base
                    },
                )
                .map(|o| o.name);
                if with != without {
                    assert!(
                        needs_body(c.kind, &m, c.path, c.content_type),
                        "{} {} {}: answer depends on the body but needs_body is false",
                        c.kind,
                        c.method,
                        c.path
                    );
                }
            }
        }
    }

    #[test]
    fn needs_body_only_where_a_body_matters() {
        let post = http::Method::POST;
        let get = http::Method::GET;
        let patch = http::Method::PATCH;
        assert!(needs_body(Kind::Aws, &get, "/", None));
        assert!(needs_body(
            Kind::Aws,
            &post,
            "/",
            Some("application/x-www-form-urlencoded")
        ));
        assert!(needs_body(
            Kind::Kubernetes,
            &post,
            "/api/v1/namespaces/d/secrets",
            Some("application/json")
        ));
        assert!(needs_body(
            Kind::Kubernetes,
            &patch,
            "/api/v1/namespaces/d/secrets/s",
            None
        ));
        assert!(!needs_body(
            Kind::Kubernetes,
            &get,
            "/api/v1/namespaces/d/secrets",
            None
        ));
        assert!(!needs_body(
            Kind::Kubernetes,
            &post,
            "/api/v1/namespaces/d/configmaps",
            None
        ));
        assert!(needs_body(Kind::MsGraph, &post, "/v1.0/$batch", None));
        assert!(needs_body(
            Kind::MsGraph,
            &patch,
            "/v1.0/applications/abc",
            None
        ));
        assert!(!needs_body(
            Kind::MsGraph,
            &post,
            "/v1.0/applications",
            None
        ));
        assert!(!needs_body(Kind::Github, &post, "/repos/o/r/keys", None));
        assert!(!needs_body(
            Kind::Vault,
            &post,
            "/v1/auth/token/create",
            None
        ));
    }

    #[test]
    fn identifier_dispatches_on_the_rule() {
        let op = find("github:create_deploy_key").unwrap();
        assert_eq!(
            identifier(
                op,
                "/repos/o/r/keys",
                br#"{"id":7,"key":"ssh-ed25519 AAA"}"#
            )
            .as_deref(),
            Some("7")
        );
        let op = find("aws:CreateAccessKey").unwrap();
        let xml =
            b"<CreateAccessKeyResponse><CreateAccessKeyResult><AccessKey><UserName>bob</UserName>\
            <AccessKeyId>AKIAEXAMPLEEXAMPLE12</AccessKeyId><Status>Active</Status>\
            <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>\
            </AccessKey></CreateAccessKeyResult></CreateAccessKeyResponse>";
        assert_eq!(
            identifier(op, "/", xml).as_deref(),
            Some("AKIAEXAMPLEEXAMPLE12")
        );
    }

    #[test]
    fn case_helper_reports_mismatches() {
        let c = Case::new(
            Kind::Github,
            "POST",
            "/user/keys",
            Some("github:create_gpg_key"),
        );
        assert!(c.check().is_err());
    }
}

//! The shape of the catalog: a tool's [`Kind`], what the catalog sees of a request, its
//! operations, and the method and path rules each kind's table is written in.

use super::matcher::Segments;

/// A tool's `kind` selects its part of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Generic,
    Aws,
    Gcp,
    MsGraph,
    Github,
    Gitlab,
    Kubernetes,
    Vault,
    Okta,
    Stripe,
}

impl Kind {
    /// Every kind, in declaration order.
    pub const ALL: &'static [Kind] = &[
        Kind::Generic,
        Kind::Aws,
        Kind::Gcp,
        Kind::MsGraph,
        Kind::Github,
        Kind::Gitlab,
        Kind::Kubernetes,
        Kind::Vault,
        Kind::Okta,
        Kind::Stripe,
    ];

    /// The kind a tool's `kind = "…"` names (exact, lowercase).
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Generic => "generic",
            Kind::Aws => "aws",
            Kind::Gcp => "gcp",
            Kind::MsGraph => "msgraph",
            Kind::Github => "github",
            Kind::Gitlab => "gitlab",
            Kind::Kubernetes => "kubernetes",
            Kind::Vault => "vault",
            Kind::Okta => "okta",
            Kind::Stripe => "stripe",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the catalog sees of a request. `path` is canonical (dot segments resolved,
/// repeated slashes collapsed, percent-encoded unreserved characters decoded) and is the
/// full path as the upstream receives it, API prefixes and base path included.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a http::Method,
    pub path: &'a str,
    /// The raw query string, not decoded.
    pub query: Option<&'a str>,
    pub content_type: Option<&'a str>,
    /// None when the body was not read.
    pub body: Option<&'a [u8]>,
}

/// One operation of the catalog.
#[derive(Debug)]
pub struct CatalogOp {
    /// Stable, unique name, `<kind>:<api name>`, e.g. `aws:CreateAccessKey`.
    pub name: &'static str,
    /// `["write", "identity_creation"]` or `["write", "privilege_escalation"]`.
    pub tags: &'static [&'static str],
    /// What kind of identity is created ("access_key", "deploy_key", …); None for privilege
    /// escalation.
    pub identity_kind: Option<&'static str>,
    /// How to find the created identity's identifier (never its secret).
    pub identifier: Identifier,
}

/// Where the created identity's identifier is. Every rule names a field that identifies,
/// never one that authenticates; [`identifier`] also refuses any value equal to a secret
/// field of the same response.
#[derive(Debug)]
pub enum Identifier {
    /// Nothing in the request or the answer identifies what was created.
    None,
    /// A JSON Pointer (RFC 6901) into the JSON response; a string or a number.
    JsonPointer(&'static str),
    /// The text of the first XML element with this local name (AWS Query responses); in a
    /// JSON response, the first member with this name at any depth.
    XmlTag(&'static str),
    /// The request path segment after the last segment equal (case-insensitively) to this
    /// literal, or the key of a `literal(key)` segment (Microsoft Graph's alternate keys).
    PathSegmentAfter(&'static str),
    /// The first rule that finds a value.
    FirstOf(&'static [Identifier]),
}

/// The tags of an identity-creating operation.
pub const IDENTITY_CREATION_TAGS: &[&str] = &["write", "identity_creation"];
/// The tags of a privilege-escalating operation.
pub const PRIVILEGE_ESCALATION_TAGS: &[&str] = &["write", "privilege_escalation"];

/// An identity-creating operation.
pub(super) const fn creates(
    name: &'static str,
    identity_kind: &'static str,
    identifier: Identifier,
) -> CatalogOp {
    CatalogOp {
        name,
        tags: IDENTITY_CREATION_TAGS,
        identity_kind: Some(identity_kind),
        identifier,
    }
}

/// A privilege-escalating operation.
pub(super) const fn escalates(name: &'static str) -> CatalogOp {
    CatalogOp {
        name,
        tags: PRIVILEGE_ESCALATION_TAGS,
        identity_kind: None,
        identifier: Identifier::None,
    }
}

/// Method and path patterns that name one operation, and what else must hold.
///
/// A pattern is `/`-separated segments, each matched case-insensitively against one path
/// segment: a literal, `*` for any segment, a glob with `*` (`*:setIamPolicy`,
/// `applications(*)`), or alternatives separated by `|`; `**` matches any number of
/// segments. Routes are tried in order and the first that holds wins.
pub(super) struct Route {
    pub(super) op: &'static str,
    pub(super) methods: &'static [&'static str],
    pub(super) patterns: &'static [&'static str],
    pub(super) cond: Cond,
}

impl Route {
    pub(super) fn applies(&self, method: &http::Method, segs: &Segments) -> bool {
        // Methods are case-sensitive in HTTP, but a server that folds `post` into POST
        // would otherwise let it through.
        self.methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(method.as_str()))
            && self.patterns.iter().any(|p| segs.matches(p))
    }
}

pub(super) const POST: &[&str] = &["POST"];
pub(super) const PUT: &[&str] = &["PUT"];
pub(super) const PATCH: &[&str] = &["PATCH"];
pub(super) const POST_PUT: &[&str] = &["POST", "PUT"];
pub(super) const PUT_PATCH: &[&str] = &["PUT", "PATCH"];

/// What must hold besides method and path.
#[derive(Debug, Clone, Copy)]
pub(super) enum Cond {
    Always,
    /// A Kubernetes PATCH that can create the object: server-side apply, or any content
    /// type other than the three patch types that only update.
    MayCreateByPatch,
    /// A Kubernetes Secret whose type is (or could be) `kubernetes.io/service-account-token`.
    ServiceAccountTokenSecret,
    /// A Microsoft Graph PATCH that sets `keyCredentials` or `passwordCredentials`.
    GraphCredentials,
    /// A Microsoft Graph `$batch`: the first catalogued request inside it.
    GraphBatch,
}

//! What a provider issues: a credential and where it goes on the request.

use crate::config::Injection;
use http::{HeaderName, HeaderValue};
use std::sync::Arc;

/// A credential ready to be placed on a request.
#[derive(Clone)]
pub struct Issued {
    /// Recorded in the audit log; never the secret.
    pub id: Arc<str>,
    pub placement: Placement,
    /// Made for this request (a JWT minted now), not reused nor static: the work a
    /// `keygate.credential` span is worth.
    pub minted: bool,
    /// What the credential was issued for (a token's scope, a GitHub token's repository
    /// and permissions), for the audit record and the span.
    pub scope: Option<Arc<str>>,
    /// When it expires (Unix seconds), for credentials issued by someone else.
    pub expires_unix: Option<u64>,
    /// Whether a provider's cache served it (None: the provider has no cache).
    pub cached: Option<bool>,
}

/// Where an issued credential goes on the outgoing request.
#[derive(Clone)]
pub enum Placement {
    /// A header (marked sensitive, so HTTP/2 never indexes it).
    Header(HeaderName, HeaderValue),
    /// A query parameter; the value is already percent-encoded.
    Query { name: String, encoded: String },
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The value is a secret: only the id is ever printed.
        f.debug_struct("Issued")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Why a provider could not issue a credential: for the log, and (only an issuer's
/// refusal code, such as OAuth2's `invalid_scope`) for the client, which otherwise only
/// learns `credential_unavailable`.
#[derive(Debug, Clone)]
pub struct Unavailable {
    pub reason: String,
    /// The issuer's own code for its refusal: a short token of `[a-z0-9_]`, never its
    /// free text.
    pub refusal: Option<String>,
}

impl Unavailable {
    pub fn new(reason: impl Into<String>) -> Unavailable {
        Unavailable {
            reason: reason.into(),
            refusal: None,
        }
    }

    /// An issuer's refusal: `code` is kept for the client only if it is a plain code.
    pub fn refused(code: &str, reason: impl Into<String>) -> Unavailable {
        let plain = !code.is_empty()
            && code.len() <= 64
            && code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        Unavailable {
            reason: reason.into(),
            refusal: plain.then(|| code.to_string()),
        }
    }
}

/// Places a secret as the injection says. `Basic` encodes `user:password`.
pub(crate) fn place(injection: &Injection, secret: &str) -> Result<Placement, Unavailable> {
    use base64::Engine;
    let header = |name: HeaderName, value: String| {
        let mut v = HeaderValue::from_str(&value)
            .map_err(|_| Unavailable::new("the credential is not a valid header value"))?;
        v.set_sensitive(true);
        Ok(Placement::Header(name, v))
    };
    match injection {
        Injection::Bearer => header(http::header::AUTHORIZATION, format!("Bearer {secret}")),
        Injection::Basic => header(
            http::header::AUTHORIZATION,
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(secret)
            ),
        ),
        Injection::Header(name) => header(name.clone(), secret.to_string()),
        Injection::Query(name) => Ok(Placement::Query {
            name: name.clone(),
            encoded: form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
        }),
    }
}

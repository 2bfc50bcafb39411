//! Credential providers: what keygate injects into a request in place of whatever the
//! agent sent. One module per provider; [`Provider`] dispatches between them.
//!
//! A provider returns an [`Issued`] credential: a value ready to put on the request and an
//! id for the audit log. The id never reveals the value.

pub mod minted_jwt;
pub mod signer;
pub mod static_secret;

use crate::config::{Agent, Injection};
use http::{HeaderName, HeaderValue};
use std::sync::Arc;

pub use minted_jwt::MintedJwt;
pub use signer::Signer;
pub use static_secret::StaticSecret;

/// A credential ready to be placed on a request.
#[derive(Clone)]
pub struct Issued {
    /// Recorded in the audit log; never the secret.
    pub id: Arc<str>,
    pub placement: Placement,
    /// Made for this request (a JWT minted now), not reused nor static: the work a
    /// `keygate.credential` span is worth.
    pub minted: bool,
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

/// Why a provider could not issue a credential (for the log; the client only learns
/// `credential_unavailable`).
#[derive(Debug, Clone)]
pub struct Unavailable(pub String);

/// A tool's credential provider.
#[derive(Debug)]
pub enum Provider {
    Static(StaticSecret),
    Jwt(MintedJwt),
}

impl Provider {
    pub fn name(&self) -> &'static str {
        match self {
            Provider::Static(_) => "static",
            Provider::Jwt(_) => "jwt",
        }
    }

    /// Issues the credential for one call of `agent` to this provider's tool.
    pub fn issue(&self, agent: &Agent) -> Result<Issued, Unavailable> {
        match self {
            Provider::Static(p) => p.issue(),
            Provider::Jwt(p) => p.issue(agent),
        }
    }
}

/// Places a secret as the injection says. `Basic` encodes `user:password`.
pub(crate) fn place(injection: &Injection, secret: &str) -> Result<Placement, Unavailable> {
    use base64::Engine;
    let header = |name: HeaderName, value: String| {
        let mut v = HeaderValue::from_str(&value)
            .map_err(|_| Unavailable("the credential is not a valid header value".into()))?;
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

//! Credential providers: what keygate injects into a request in place of whatever the
//! agent sent. One module per provider; [`Provider`] dispatches between them.
//!
//! A provider returns an [`Issued`] credential: a value ready to put on the request and an
//! id for the audit log. The id never reveals the value.

mod issued;
pub mod minted_jwt;
pub mod signer;
pub mod static_secret;

use crate::config::Agent;

pub use issued::{Issued, Placement, Unavailable};
pub use minted_jwt::MintedJwt;
pub use signer::Signer;
pub use static_secret::StaticSecret;

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

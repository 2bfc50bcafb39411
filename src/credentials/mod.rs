//! Credential providers: what keygate injects into a request in place of whatever the
//! agent sent. One module per provider; [`Provider`] dispatches between them.
//!
//! A provider returns an [`Issued`] credential: a value ready to put on the request and an
//! id for the audit log. The id never reveals the value.

pub mod aws;
pub mod cache;
mod issued;
pub mod minted_jwt;
pub mod signer;
pub mod static_secret;

use crate::config::Agent;

pub use aws::AwsProvider;
pub use issued::{Issued, Placement, Unavailable};
pub use minted_jwt::MintedJwt;
pub use signer::Signer;
pub use static_secret::StaticSecret;

/// A tool's credential provider.
#[derive(Debug)]
pub enum Provider {
    Static(StaticSecret),
    Jwt(MintedJwt),
    /// Signs each call (SigV4) instead of placing a credential: the inject phase asks it
    /// for the call's credentials ([`AwsProvider::issue`]).
    Aws(Box<AwsProvider>),
}

impl Provider {
    pub fn name(&self) -> &'static str {
        match self {
            Provider::Static(_) => "static",
            Provider::Jwt(_) => "jwt",
            Provider::Aws(_) => "aws",
        }
    }

    /// Issues the credential placed on one call of `agent` to this provider's tool. An
    /// AWS tool's calls are signed instead ([`AwsProvider::issue`]): asked for a credential
    /// to place, it has none.
    pub fn issue(&self, agent: &Agent) -> Result<Issued, Unavailable> {
        match self {
            Provider::Static(p) => p.issue(),
            Provider::Jwt(p) => p.issue(agent),
            Provider::Aws(_) => Err(Unavailable(
                "an AWS tool's calls are signed, not given a credential to place".into(),
            )),
        }
    }

    /// Drops what was issued for `agent` and cached (it was suspended).
    pub fn invalidate_agent(&self, agent: &str) {
        if let Provider::Aws(p) = self {
            p.invalidate_agent(agent);
        }
    }
}

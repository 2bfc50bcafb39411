//! Credential providers: what keygate injects into a request in place of whatever the
//! agent sent. One module per provider; [`Provider`] dispatches between them.
//!
//! A provider returns an [`Issued`] credential: a value ready to put on the request and an
//! id for the audit log. The id never reveals the value.

pub mod aws;
pub mod cache;
pub mod github_app;
mod issued;
pub mod minted_jwt;
pub mod oauth2;
pub mod signer;
pub mod static_secret;

use crate::config::Agent;
use crate::routes::Operation;

pub use aws::AwsProvider;
pub use github_app::GithubAppProvider;
pub use issued::{Issued, Placement, Unavailable};
pub use minted_jwt::MintedJwt;
pub use oauth2::OAuth2Provider;
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
    OAuth2(Box<OAuth2Provider>),
    GithubApp(Box<GithubAppProvider>),
}

/// The call a credential is issued for.
pub struct CallInfo<'a> {
    pub agent: &'a Agent,
    /// The operation (its name selects an `oauth2` scope or `github_app` permissions).
    pub operation: &'a Operation,
    pub method: &'a http::Method,
    /// The path relative to the tool (GitHub: owner and repository are read from it).
    pub tool_path: &'a str,
    /// The task the call is made in: its credential is issued for the task alone.
    pub task: Option<&'a str>,
    /// When that task ends (unix ms): a token keygate mints for it expires by then.
    pub task_ends_ms: Option<i64>,
}

impl Provider {
    pub fn name(&self) -> &'static str {
        match self {
            Provider::Static(_) => "static",
            Provider::Jwt(_) => "jwt",
            Provider::Aws(_) => "aws",
            Provider::OAuth2(_) => "oauth2",
            Provider::GithubApp(_) => "github_app",
        }
    }

    /// Issues the credential placed on one call. A static secret or a minted JWT is ready
    /// at once; a token from someone else is from its cache when warm. An AWS tool's calls
    /// are signed instead ([`AwsProvider::issue`]): asked for a credential to place, it has
    /// none.
    pub async fn issue(&self, call: &CallInfo<'_>) -> Result<Issued, Unavailable> {
        match self {
            Provider::Static(p) => p.issue(),
            Provider::Jwt(p) => p.issue(call.agent, call.task, call.task_ends_ms),
            // Boxed: a cold issue's future (token request, single flight) is large, and
            // unboxed it would make every request's future as large, static or not (it
            // is moved when the request's task is spawned).
            Provider::OAuth2(p) => {
                Box::pin(p.issue(call.agent, &call.operation.name, call.task)).await
            }
            Provider::GithubApp(p) => {
                Box::pin(p.issue(&call.operation.name, call.method, call.tool_path, call.task))
                    .await
            }
            Provider::Aws(_) => Err(Unavailable::new(
                "an AWS tool's calls are signed, not given a credential to place",
            )),
        }
    }

    /// Drops what was issued for `agent` and cached (it was suspended).
    pub fn invalidate_agent(&self, agent: &str) {
        match self {
            Provider::Aws(p) => p.invalidate_agent(agent),
            Provider::OAuth2(p) => p.invalidate_agent(agent),
            // Installation tokens are the App's, shared by every agent, not issued to one.
            Provider::GithubApp(_) | Provider::Static(_) | Provider::Jwt(_) => {}
        }
    }

    /// Drops what was issued for `task`'s calls, and revokes it where the issuer lets
    /// keygate (OAuth2, RFC 7009; GitHub installation tokens). What was dropped, and the revocations that failed.
    pub async fn end_task(&self, task: &str) -> (usize, Vec<String>) {
        match self {
            Provider::Aws(p) => (p.end_task(task), Vec::new()),
            Provider::OAuth2(p) => p.end_task(task).await,
            Provider::GithubApp(p) => p.end_task(task).await,
            Provider::Jwt(p) => {
                p.end_task(task);
                (0, Vec::new())
            }
            Provider::Static(_) => (0, Vec::new()),
        }
    }
}

//! keygate: an agent gateway. Every call an AI agent makes to a tool passes through it:
//! the agent is identified, the secrets it sends are stripped, a scoped short-lived
//! credential is injected, and the call is audited. See `pipeline` for the phases.

/// The hasher of keygate's in-memory caches (tokens, policy decisions, entities): keyed
/// with random state like std's, and several times cheaper than SipHash on a token.
pub type FastHash = ahash::RandomState;

pub mod admin_client;
pub mod agent_conn;
pub mod anomaly;
pub mod aws;
pub mod capture;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod conn;
pub mod credentials;
pub mod dev;
pub mod echo;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod http_client;
pub(crate) mod locks;
pub mod percent;
pub mod pipeline;
pub mod policy;
pub mod private_fs;
pub mod proxy;
pub mod routes;
pub mod secrets;
pub mod server;
pub mod slack;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod tls;
pub mod tools;

pub use gateway::{Gateway, Runtime};

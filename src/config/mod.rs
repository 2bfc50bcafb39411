//! Configuration: the external TOML form ([`file`]) and the validated, compiled snapshot
//! the running gateway reads ([`Snapshot`]). Parsing and validation happen once, at start
//! (and, later, on reload); the hot path never looks at TOML.

mod check;
mod compile;
pub mod file;
mod guard;
mod token_providers;

pub use compile::*;
pub use guard::{
    AnomalyAction, AnomalySettings, BusinessHours, LimitPer, OffHours, RateLimitRule, RateSpike,
    RefusalBurst, SharedWindow,
};
pub use token_providers::{
    ClientAuthSpec, GithubAppSpec, Grant, OAuth2Spec, Permissions, TokenScope,
};

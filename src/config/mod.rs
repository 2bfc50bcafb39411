//! Configuration: the external TOML form ([`file`]) and the validated, compiled snapshot
//! the running gateway reads ([`Snapshot`]). Parsing and validation happen once, at start
//! (and, later, on reload); the hot path never looks at TOML.

mod compile;
pub mod file;

pub use compile::*;

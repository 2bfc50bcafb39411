//! Durable state behind one trait: approvals of identity-creation calls, the inventory of
//! identities created through keygate, agent suspensions, agent keys and sealed secrets.
//!
//! SQLite in a local file is the default ([`SqliteStore`]); PostgreSQL ([`PgStore`])
//! serves several replicas sharing state, and pushes every change to each of them
//! (LISTEN/NOTIFY, [`Store::changes`]).
//!
//! Times are passed in explicitly (`now`) so that expiry is decided by the caller's clock
//! and tests can move time without sleeping.

mod model;
mod postgres;
mod sqlite;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use model::*;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Where the store is and how replicas keep their view of it fresh.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub backend: Backend,
    /// How often a replica re-reads suspensions, keys and captured secrets.
    pub sync_interval: Duration,
    /// How old a replica's view of suspensions may grow before every call is refused.
    pub max_staleness: Duration,
    pub on_unavailable: OnUnavailable,
}

#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite(PathBuf),
    Postgres(PgTarget),
}

/// What a replica serves while it cannot read the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    /// Calls that need no store, on the last view of suspensions, until it is
    /// `max_staleness` old.
    Cached,
    /// Nothing.
    Refuse,
}

/// A PostgreSQL database. The URL may hold a password: it is never printed.
#[derive(Clone)]
pub struct PgTarget {
    pub url: String,
    /// CA certificates (PEM) for the database's TLS certificate.
    pub ca_file: Option<PathBuf>,
    pub max_connections: u32,
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTarget")
            .field("url", &PgTarget::describe(&self.url))
            .field("ca_file", &self.ca_file)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl PgTarget {
    /// The URL without its user information, query or anything secret: `host:port/db`.
    pub fn describe(url: &str) -> String {
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
        let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
        rest.split(['?', '#']).next().unwrap_or("").to_string()
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Sqlite(p) => write!(f, "SQLite {}", p.display()),
            Backend::Postgres(t) => write!(f, "PostgreSQL {}", PgTarget::describe(&t.url)),
        }
    }
}

/// Opens (creating if missing) the SQLite store at `path`.
pub async fn open_store(path: &Path) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(SqliteStore::open(path).await?))
}

/// Opens the configured store and brings its schema up to this build's version (refusing
/// a schema newer than it knows). `replica` names this process in the changes it
/// announces.
pub async fn open(backend: &Backend, replica: &str) -> Result<Arc<dyn Store>, StoreError> {
    match backend {
        Backend::Sqlite(path) => open_store(path).await,
        Backend::Postgres(t) => Ok(Arc::new(PgStore::open(t, replica).await?)),
    }
}

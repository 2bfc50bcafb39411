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

use std::path::Path;
use std::sync::Arc;

pub use model::*;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

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

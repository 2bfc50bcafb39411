//! Durable state behind one trait: approvals of identity-creation calls, the inventory of
//! identities created through keygate, and agent suspensions.
//!
//! SQLite in a local file is the default ([`SqliteStore`]); a PostgreSQL implementation of
//! the same [`Store`] trait serves several replicas sharing state.
//!
//! Times are passed in explicitly (`now`) so that expiry is decided by the caller's clock
//! and tests can move time without sleeping.

mod model;
mod sqlite;

use std::path::Path;
use std::sync::Arc;

pub use model::*;
pub use sqlite::SqliteStore;

/// Opens (creating if missing) the SQLite store at `path`.
pub async fn open_store(path: &Path) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(SqliteStore::open(path).await?))
}

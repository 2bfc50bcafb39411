//! The SQLite [`Store`]: one local file, WAL journal, a small connection pool.
//!
//! SQLite allows one writer at a time. Every write either is a single statement or runs in
//! a `BEGIN IMMEDIATE` transaction (which takes the write lock up front, so a transaction
//! never has to upgrade a read lock and fail with `SQLITE_BUSY`); writers queue on the
//! 5-second busy timeout.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{FromRow, SqliteConnection};

use super::model::{
    new_id, AgentKey, Approval, ApprovalCounts, ApprovalStatus, Approve, CapturedSecret,
    InventoryEntry, Millis, NewApproval, NewIdentity, RetireStep, Revoked, Sealed, Shape, Store,
    StoreError, Suspension, Task,
};

/// The schema version this build writes and understands.
const SCHEMA_VERSION: i64 = 7;

/// Version 1 of the schema. Each statement is idempotent.
const SCHEMA_V1: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS approvals (
        id                  TEXT PRIMARY KEY NOT NULL,
        status              TEXT NOT NULL
                            CHECK (status IN ('pending','approved','denied','used','expired')),
        agent_id            TEXT NOT NULL,
        agent_owner         TEXT NOT NULL,
        tool                TEXT NOT NULL,
        operation           TEXT NOT NULL,
        identity_kind       TEXT,
        digest              TEXT NOT NULL,
        method              TEXT NOT NULL,
        path                TEXT NOT NULL,
        policies            TEXT NOT NULL DEFAULT '[]',
        request             TEXT,
        created_at          INTEGER NOT NULL,
        pending_expires_at  INTEGER NOT NULL,
        decided_at          INTEGER,
        approver            TEXT,
        ticket              TEXT,
        identity_owner      TEXT,
        note                TEXT,
        approval_expires_at INTEGER,
        review_by           INTEGER,
        used_at             INTEGER
    )",
    // One active approval per (agent, operation, digest).
    "CREATE UNIQUE INDEX IF NOT EXISTS approvals_one_active
        ON approvals (agent_id, operation, digest)
        WHERE status IN ('pending','approved')",
    "CREATE INDEX IF NOT EXISTS approvals_by_created ON approvals (created_at)",
    "CREATE INDEX IF NOT EXISTS approvals_by_status ON approvals (status, created_at)",
    "CREATE TABLE IF NOT EXISTS inventory (
        id          TEXT PRIMARY KEY NOT NULL,
        kind        TEXT NOT NULL,
        tool        TEXT NOT NULL,
        operation   TEXT NOT NULL,
        identifier  TEXT,
        agent_id    TEXT NOT NULL,
        approver    TEXT,
        owner       TEXT NOT NULL,
        ticket      TEXT,
        approval_id TEXT REFERENCES approvals (id),
        request_id  TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        review_by   INTEGER
    )",
    "CREATE INDEX IF NOT EXISTS inventory_by_created ON inventory (created_at)",
    "CREATE TABLE IF NOT EXISTS suspensions (
        agent_id     TEXT PRIMARY KEY NOT NULL,
        suspended_by TEXT NOT NULL,
        reason       TEXT,
        at           INTEGER NOT NULL
    )",
];

/// Version 2: keys issued to agents (the hashes of their ids; never a secret).
const SCHEMA_V2: &[&str] = &["CREATE TABLE IF NOT EXISTS agent_keys (
        key_hash TEXT PRIMARY KEY NOT NULL,
        agent_id      TEXT NOT NULL,
        created_by    TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        revoked_at    INTEGER
    )"];

/// Version 3: captured secrets (sealed; the key is never in the store) and revocation of
/// inventory records.
const SCHEMA_V3: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS captured_secrets (
        handle_hash TEXT PRIMARY KEY NOT NULL,
        identity_id TEXT NOT NULL REFERENCES inventory (id),
        tool        TEXT NOT NULL,
        agent_id    TEXT NOT NULL,
        shared_with TEXT NOT NULL DEFAULT '[]',
        field       TEXT NOT NULL,
        shape       TEXT NOT NULL,
        key_id      TEXT NOT NULL,
        nonce       BLOB NOT NULL,
        sealed      BLOB NOT NULL,
        created_at  INTEGER NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS captured_by_identity ON captured_secrets (identity_id)",
    "ALTER TABLE inventory ADD COLUMN revoked_at INTEGER",
    "ALTER TABLE inventory ADD COLUMN revoked_by TEXT",
];

/// Version 4: approvals two different humans must approve.
const SCHEMA_V4: &[&str] = &[
    "ALTER TABLE approvals ADD COLUMN approvers_needed INTEGER NOT NULL DEFAULT 1",
    "ALTER TABLE approvals ADD COLUMN first_approver TEXT",
];

/// Version 5: retirement of inventory records at their review date.
const SCHEMA_V5: &[&str] = &[
    "ALTER TABLE inventory ADD COLUMN notified_at INTEGER",
    "ALTER TABLE inventory ADD COLUMN deactivated_at INTEGER",
    "ALTER TABLE inventory ADD COLUMN retire_attempts INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE inventory ADD COLUMN retire_error TEXT",
];

/// Version 6: tasks (an agent's just-in-time access).
const SCHEMA_V6: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS tasks (
        id          TEXT PRIMARY KEY NOT NULL,
        agent_id    TEXT NOT NULL,
        purpose     TEXT NOT NULL,
        ticket      TEXT,
        tools       TEXT NOT NULL DEFAULT '[]',
        operations  TEXT NOT NULL DEFAULT '[]',
        opened_by   TEXT NOT NULL,
        opened_at   INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        ended_at    INTEGER,
        ended_by    TEXT
    )",
    "CREATE INDEX IF NOT EXISTS tasks_by_expiry ON tasks (expires_at)",
];

pub(super) const TASK_COLUMNS: &str = "id, agent_id, purpose, ticket, tools, operations, \
    opened_by, opened_at, expires_at, ended_at, ended_by";

/// Version 7: what each agent normally does (anomaly baselines), one JSON document per
/// agent. Self-contained: nothing else reads or changes this table.
const SCHEMA_V7: &[&str] = &["CREATE TABLE IF NOT EXISTS agent_baselines (
        agent_id   TEXT PRIMARY KEY NOT NULL,
        baseline   TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    )"];

pub(super) const APPROVAL_COLUMNS: &str = "id, status, agent_id, agent_owner, tool, operation, \
    identity_kind, digest, method, path, policies, request, created_at, pending_expires_at, \
    decided_at, approver, ticket, identity_owner, note, approval_expires_at, review_by, used_at, \
    approvers_needed, first_approver";

pub(super) const INVENTORY_COLUMNS: &str =
    "id, kind, tool, operation, identifier, agent_id, approver, \
    owner, ticket, approval_id, request_id, created_at, review_by, revoked_at, revoked_by, \
    notified_at, deactivated_at, retire_attempts, retire_error";

/// The SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens the store at `path`, creating the parent directory, the file and the schema if
    /// missing. Fails if the file was written by a newer keygate (a newer schema version).
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(parent) = path.parent() {
            crate::private_fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot create the store's directory {}: {e}",
                    parent.display()
                ))
            })?;
        }
        // The file is created owner-only here, before SQLite opens it: SQLite creates the
        // `-wal` and `-shm` files with the database file's mode, so they are 0600 too.
        crate::private_fs::file_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot create the store {}: {e}", path.display()))
            })?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a lost commit after a power cut could let a used approval be used again.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            // A deleted captured secret is overwritten in the file, not left in a free page.
            .pragma("secure_delete", "ON");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(db_err("open"))?;
        let store = SqliteStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Closes every connection; later calls fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err("migrate"))?;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            .execute(&mut *tx)
            .await
            .map_err(db_err("migrate"))?;
        let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err("migrate"))?;
        // Each version's statements, applied in order from the one after `current`.
        let steps: [&[&str]; 7] = [
            SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5, SCHEMA_V6, SCHEMA_V7,
        ];
        match current {
            Some(v) if v == SCHEMA_VERSION => {}
            None | Some(1) | Some(2) | Some(3) | Some(4) | Some(5) | Some(6) => {
                let from = usize::try_from(current.unwrap_or(0)).unwrap_or(0);
                for statement in steps[from..].iter().copied().flatten() {
                    sqlx::query(statement)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err("migrate"))?;
                }
                sqlx::query("INSERT INTO schema_version (version) VALUES (?)")
                    .bind(SCHEMA_VERSION)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err("migrate"))?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::Unavailable(format!(
                    "the store's schema version {v} is newer than this keygate supports \
                     ({SCHEMA_VERSION})"
                )));
            }
            // Future versions migrate older schemas here, one step at a time.
            Some(v) => {
                return Err(StoreError::Unavailable(format!(
                    "no migration from schema version {v} to {SCHEMA_VERSION}"
                )));
            }
        }
        tx.commit().await.map_err(db_err("migrate"))
    }

    /// Approves or denies a pending approval, in one write transaction.
    async fn decide(
        &self,
        id: &str,
        decision: Decision<'_>,
        now: Millis,
    ) -> Result<Approval, StoreError> {
        let op = decision.op();
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err(op))?;
        let current = fetch_approval(&mut tx, id)
            .await?
            .ok_or(StoreError::NotFound)?;
        if current.status != ApprovalStatus::Pending {
            return Err(StoreError::Conflict(format!(
                "approval is {}, not pending",
                current.status
            )));
        }
        if current.pending_expires_at <= now {
            sqlx::query(
                "UPDATE approvals SET status = 'expired' WHERE id = ? AND status = 'pending'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err(op))?;
            tx.commit().await.map_err(db_err(op))?;
            return Err(StoreError::Conflict(
                "approval is expired, not pending".to_owned(),
            ));
        }
        let updated = match decision {
            Decision::Approve(d) => {
                if d.expires_at <= now {
                    return Err(StoreError::Conflict(
                        "the approval's expiry must be in the future".to_owned(),
                    ));
                }
                if approve_step(&current, &d.approver)? == ApproveStep::First {
                    sqlx::query(
                        "UPDATE approvals SET first_approver = ? \
                         WHERE id = ? AND status = 'pending' AND first_approver IS NULL",
                    )
                    .bind(&d.approver)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                } else {
                    sqlx::query(
                        "UPDATE approvals SET status = 'approved', decided_at = ?, approver = ?, \
                     ticket = ?, identity_owner = ?, note = ?, approval_expires_at = ?, \
                     review_by = ? WHERE id = ? AND status = 'pending'",
                    )
                    .bind(now)
                    .bind(d.approver)
                    .bind(d.ticket)
                    .bind(d.identity_owner)
                    .bind(d.note)
                    .bind(d.expires_at)
                    .bind(d.review_by)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                }
            }
            Decision::Deny { approver, note } => {
                sqlx::query(
                    "UPDATE approvals SET status = 'denied', decided_at = ?, approver = ?, \
                     note = ? WHERE id = ? AND status = 'pending'",
                )
                .bind(now)
                .bind(approver)
                .bind(note)
                .bind(id)
                .execute(&mut *tx)
                .await
            }
        }
        .map_err(db_err(op))?;
        if updated.rows_affected() != 1 {
            // Unreachable under the write lock; refuse rather than report a wrong state.
            return Err(StoreError::Conflict(
                "approval is no longer pending".to_owned(),
            ));
        }
        let approval = fetch_approval(&mut tx, id)
            .await?
            .ok_or(StoreError::NotFound)?;
        tx.commit().await.map_err(db_err(op))?;
        Ok(approval)
    }
}

/// What an approval by one approver does: decides it, or is the first of two.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ApproveStep {
    First,
    Final,
}

/// With two approvers needed, the first approval only records who; the second must be
/// someone else (compared as emails are: case and surrounding space aside).
pub(super) fn approve_step(current: &Approval, approver: &str) -> Result<ApproveStep, StoreError> {
    if current.approvers_needed < 2 {
        return Ok(ApproveStep::Final);
    }
    match &current.first_approver {
        None => Ok(ApproveStep::First),
        Some(f) if f.trim().eq_ignore_ascii_case(approver.trim()) => Err(StoreError::Conflict(
            format!("{approver} approved already: this request needs a second, different approver"),
        )),
        Some(_) => Ok(ApproveStep::Final),
    }
}

enum Decision<'a> {
    Approve(Approve),
    Deny {
        approver: &'a str,
        note: Option<&'a str>,
    },
}

impl Decision<'_> {
    fn op(&self) -> &'static str {
        match self {
            Decision::Approve(_) => "approve",
            Decision::Deny { .. } => "deny",
        }
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn open_approval(
        &self,
        new: NewApproval,
        now: Millis,
        max_pending: u32,
    ) -> Result<(Approval, bool), StoreError> {
        const OP: &str = "open approval";
        let policies = serde_json::to_string(&new.policies)
            .map_err(|_| StoreError::Unavailable("cannot encode policy ids".to_owned()))?;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err(OP))?;
        sqlx::query(
            "UPDATE approvals SET status = 'expired' \
             WHERE agent_id = ? AND operation = ? AND digest = ? \
             AND ((status = 'pending' AND pending_expires_at <= ?) \
               OR (status = 'approved' AND approval_expires_at <= ?))",
        )
        .bind(&new.agent_id)
        .bind(&new.operation)
        .bind(&new.digest)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_err(OP))?;
        // Inserted only while the agent has fewer than `max_pending` live pending
        // approvals; in the same IMMEDIATE transaction, so concurrent requests cannot all
        // pass the count. (An existing active approval conflicts and is returned below.)
        let inserted = sqlx::query(
            "INSERT INTO approvals (id, status, agent_id, agent_owner, tool, operation, \
             identity_kind, digest, method, path, policies, request, created_at, pending_expires_at, \
             approvers_needed) \
             SELECT ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? \
             WHERE (SELECT COUNT(*) FROM approvals WHERE agent_id = ? AND status = 'pending' \
                    AND pending_expires_at > ?) < ? \
             ON CONFLICT DO NOTHING",
        )
        .bind(new_id("apr_"))
        .bind(&new.agent_id)
        .bind(&new.agent_owner)
        .bind(&new.tool)
        .bind(&new.operation)
        .bind(&new.identity_kind)
        .bind(&new.digest)
        .bind(&new.method)
        .bind(&new.path)
        .bind(&policies)
        .bind(&new.request)
        .bind(now)
        .bind(new.pending_expires_at)
        .bind(i64::from(new.approvers_needed.max(1)))
        .bind(&new.agent_id)
        .bind(now)
        .bind(i64::from(max_pending))
        .execute(&mut *tx)
        .await
        .map_err(db_err(OP))?;
        let created = inserted.rows_affected() == 1;
        let row = sqlx::query_as::<_, ApprovalRow>(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals \
             WHERE agent_id = ? AND operation = ? AND digest = ? \
             AND status IN ('pending', 'approved')"
        ))
        .bind(&new.agent_id)
        .bind(&new.operation)
        .bind(&new.digest)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err(OP))?
        // Not inserted and none active: the cap refused it (the transaction rolls back).
        .ok_or(StoreError::TooManyPending(max_pending))?;
        let approval = Approval::try_from(row)?;
        tx.commit().await.map_err(db_err(OP))?;
        Ok((approval, created))
    }

    async fn approval_counts(&self, now: Millis) -> Result<ApprovalCounts, StoreError> {
        const OP: &str = "count approvals";
        let rows = sqlx::query_as::<_, (String, i64, i64)>(
            "SELECT status, COUNT(*), \
             SUM(CASE WHEN status = 'pending' AND pending_expires_at > ? THEN 1 ELSE 0 END) \
             FROM approvals GROUP BY status ORDER BY status",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err(OP))?;
        let mut counts = ApprovalCounts::default();
        for (status, n, live) in rows {
            counts.pending += u64::try_from(live).unwrap_or(0);
            counts
                .by_status
                .push((status, u64::try_from(n).unwrap_or(0)));
        }
        Ok(counts)
    }

    async fn approval(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_err("get approval"))?;
        fetch_approval(&mut conn, id).await
    }

    async fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        limit: u32,
    ) -> Result<Vec<Approval>, StoreError> {
        const OP: &str = "list approvals";
        let rows = match status {
            Some(status) => {
                sqlx::query_as::<_, ApprovalRow>(&format!(
                    "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE status = ? \
                     ORDER BY created_at DESC, rowid DESC LIMIT ?"
                ))
                .bind(status.as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query_as::<_, ApprovalRow>(&format!(
                    "SELECT {APPROVAL_COLUMNS} FROM approvals \
                     ORDER BY created_at DESC, rowid DESC LIMIT ?"
                ))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(db_err(OP))?;
        rows.into_iter().map(Approval::try_from).collect()
    }

    async fn approve(
        &self,
        id: &str,
        decision: Approve,
        now: Millis,
    ) -> Result<Approval, StoreError> {
        self.decide(id, Decision::Approve(decision), now).await
    }

    async fn deny(
        &self,
        id: &str,
        approver: &str,
        note: Option<&str>,
        now: Millis,
    ) -> Result<Approval, StoreError> {
        self.decide(id, Decision::Deny { approver, note }, now)
            .await
    }

    async fn consume(
        &self,
        id: &str,
        digest: &str,
        now: Millis,
    ) -> Result<Option<Approval>, StoreError> {
        const OP: &str = "consume approval";
        // One conditional UPDATE: SQLite serializes writers, so exactly one caller sees a row
        // change; `used` is terminal, so the row read back afterwards is the one it used.
        let done = sqlx::query(
            "UPDATE approvals SET status = 'used', used_at = ? \
             WHERE id = ? AND status = 'approved' AND digest = ? AND approval_expires_at > ?",
        )
        .bind(now)
        .bind(id)
        .bind(digest)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_err(OP))?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        let mut conn = self.pool.acquire().await.map_err(db_err(OP))?;
        fetch_approval(&mut conn, id).await
    }

    async fn expire(&self, now: Millis) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE approvals SET status = 'expired' \
             WHERE (status = 'pending' AND pending_expires_at <= ?) \
                OR (status = 'approved' AND approval_expires_at <= ?)",
        )
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_err("expire approvals"))?;
        Ok(done.rows_affected())
    }

    async fn denied_since(
        &self,
        agent_id: &str,
        operation: &str,
        digest: &str,
        since: Millis,
    ) -> Result<Option<Approval>, StoreError> {
        const OP: &str = "find denial";
        let row = sqlx::query_as::<_, ApprovalRow>(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals \
             WHERE agent_id = ? AND operation = ? AND digest = ? \
             AND status = 'denied' AND decided_at > ? \
             ORDER BY decided_at DESC LIMIT 1"
        ))
        .bind(agent_id)
        .bind(operation)
        .bind(digest)
        .bind(since)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err(OP))?;
        row.map(Approval::try_from).transpose()
    }

    async fn record_identity(&self, new: NewIdentity) -> Result<InventoryEntry, StoreError> {
        let entry = InventoryEntry {
            id: new_id("idn_"),
            kind: new.kind,
            tool: new.tool,
            operation: new.operation,
            identifier: new.identifier,
            agent_id: new.agent_id,
            approver: new.approver,
            owner: new.owner,
            ticket: new.ticket,
            approval_id: new.approval_id,
            request_id: new.request_id,
            created_at: new.created_at,
            review_by: new.review_by,
            revoked_at: None,
            revoked_by: None,
            captured: 0,
            notified_at: None,
            deactivated_at: None,
            retire_attempts: 0,
            retire_error: None,
        };
        sqlx::query(&format!(
            "INSERT INTO inventory ({INVENTORY_COLUMNS}) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, 0, NULL)"
        ))
        .bind(&entry.id)
        .bind(&entry.kind)
        .bind(&entry.tool)
        .bind(&entry.operation)
        .bind(&entry.identifier)
        .bind(&entry.agent_id)
        .bind(&entry.approver)
        .bind(&entry.owner)
        .bind(&entry.ticket)
        .bind(&entry.approval_id)
        .bind(&entry.request_id)
        .bind(entry.created_at)
        .bind(entry.review_by)
        .execute(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                StoreError::Conflict("the identity's approval does not exist".to_owned())
            }
            _ => db_err("record identity")(e),
        })?;
        Ok(entry)
    }

    async fn inventory(&self) -> Result<Vec<InventoryEntry>, StoreError> {
        let rows = sqlx::query_as::<_, InventoryRow>(&format!(
            "SELECT {INVENTORY_COLUMNS}, (SELECT COUNT(*) FROM captured_secrets c \
             WHERE c.identity_id = inventory.id) AS captured \
             FROM inventory ORDER BY created_at DESC, rowid DESC"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("list inventory"))?;
        Ok(rows.into_iter().map(InventoryEntry::from).collect())
    }

    async fn suspend(
        &self,
        agent_id: &str,
        by: &str,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO suspensions (agent_id, suspended_by, reason, at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (agent_id) DO UPDATE SET suspended_by = excluded.suspended_by, \
             reason = excluded.reason, at = excluded.at",
        )
        .bind(agent_id)
        .bind(by)
        .bind(reason)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_err("suspend agent"))?;
        Ok(())
    }

    async fn resume(&self, agent_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM suspensions WHERE agent_id = ?")
            .bind(agent_id)
            .execute(&self.pool)
            .await
            .map_err(db_err("resume agent"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn save_baselines(
        &self,
        rows: &[(String, String)],
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_err("save baselines"))?;
        for (agent, doc) in rows {
            sqlx::query(
                "INSERT INTO agent_baselines (agent_id, baseline, updated_at) VALUES (?, ?, ?) \
                 ON CONFLICT (agent_id) DO UPDATE SET baseline = excluded.baseline, \
                 updated_at = excluded.updated_at",
            )
            .bind(agent)
            .bind(doc)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_err("save baselines"))?;
        }
        tx.commit().await.map_err(db_err("save baselines"))
    }

    /// One replica writes a SQLite store: nothing changes behind its back.
    async fn baselines_changed(
        &self,
        since: Option<Millis>,
    ) -> Result<(Vec<(String, String)>, Millis), StoreError> {
        match since {
            Some(since) => Ok((Vec::new(), since)),
            None => Ok((self.baselines().await?, 0)),
        }
    }

    async fn baselines(&self) -> Result<Vec<(String, String)>, StoreError> {
        sqlx::query_as::<_, (String, String)>(
            "SELECT agent_id, baseline FROM agent_baselines ORDER BY agent_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("read baselines"))
    }

    async fn suspensions(&self) -> Result<Vec<Suspension>, StoreError> {
        let rows = sqlx::query_as::<_, SuspensionRow>(
            "SELECT agent_id, suspended_by, reason, at FROM suspensions \
             ORDER BY at DESC, agent_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("list suspensions"))?;
        Ok(rows.into_iter().map(Suspension::from).collect())
    }

    async fn add_agent_key(&self, key: &AgentKey) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_err("add agent key"))?;
        insert_agent_key(&mut conn, key)
            .await
            .map_err(db_err("add agent key"))
    }

    async fn agent_keys(&self) -> Result<Vec<AgentKey>, StoreError> {
        let rows = sqlx::query_as::<_, AgentKeyRow>(
            "SELECT key_hash, agent_id, created_by, created_at, revoked_at FROM agent_keys \
             ORDER BY created_at, key_hash",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("list agent keys"))?;
        Ok(rows.into_iter().map(AgentKey::from).collect())
    }

    async fn revoke_agent_key(&self, key_hash: &str, now: Millis) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE agent_keys SET revoked_at = ? WHERE key_hash = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(key_hash)
        .execute(&self.pool)
        .await
        .map_err(db_err("revoke agent key"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_captured(
        &self,
        c: &CapturedSecret,
        aws_key: Option<&AgentKey>,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err("record captured secret"))?;
        let shared = serde_json::to_string(&c.shared_with).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO captured_secrets (handle_hash, identity_id, tool, agent_id, \
             shared_with, field, shape, key_id, nonce, sealed, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&c.handle_hash)
        .bind(&c.identity_id)
        .bind(&c.tool)
        .bind(&c.agent_id)
        .bind(shared)
        .bind(&c.field)
        .bind(c.shape.as_str())
        .bind(&c.sealed.key_id)
        .bind(&c.sealed.nonce)
        .bind(&c.sealed.ciphertext)
        .bind(c.created_at)
        .execute(&mut *tx)
        .await
        .map_err(db_err("record captured secret"))?;
        if let Some(key) = aws_key {
            insert_agent_key(&mut tx, key)
                .await
                .map_err(db_err("record captured secret"))?;
        }
        tx.commit().await.map_err(db_err("record captured secret"))
    }

    async fn captured(&self) -> Result<Vec<CapturedSecret>, StoreError> {
        let rows = sqlx::query_as::<_, CapturedRow>(
            "SELECT handle_hash, identity_id, tool, agent_id, shared_with, field, shape, \
             key_id, nonce, sealed, created_at FROM captured_secrets ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("list captured secrets"))?;
        Ok(rows
            .into_iter()
            .filter_map(CapturedRow::into_secret)
            .collect())
    }

    async fn revoke_identity(
        &self,
        id: &str,
        by: &str,
        now: Millis,
    ) -> Result<Revoked, StoreError> {
        let op = "revoke identity";
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err(op))?;
        let revoked_at: Option<Option<Millis>> =
            sqlx::query_scalar("SELECT revoked_at FROM inventory WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err(op))?;
        let Some(revoked_at) = revoked_at else {
            return Err(StoreError::NotFound);
        };
        let mut handles: Vec<String> =
            sqlx::query_scalar("SELECT handle_hash FROM captured_secrets WHERE identity_id = ?")
                .bind(id)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err(op))?;
        sqlx::query("DELETE FROM captured_secrets WHERE identity_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err(op))?;
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT key_hash FROM agent_keys WHERE created_by = ? AND revoked_at IS NULL",
        )
        .bind(format!("capture:{id}"))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err(op))?;
        sqlx::query(
            "UPDATE agent_keys SET revoked_at = ? WHERE created_by = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(format!("capture:{id}"))
        .execute(&mut *tx)
        .await
        .map_err(db_err(op))?;
        if revoked_at.is_none() {
            sqlx::query("UPDATE inventory SET revoked_at = ?, revoked_by = ? WHERE id = ?")
                .bind(now)
                .bind(by)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_err(op))?;
        }
        tx.commit().await.map_err(db_err(op))?;
        handles.extend(keys);
        Ok(Revoked {
            handles,
            already: revoked_at.is_some(),
        })
    }

    async fn renew_identity(
        &self,
        id: &str,
        review_by: Millis,
        now: Millis,
    ) -> Result<InventoryEntry, StoreError> {
        let op = "renew identity";
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err(op))?;
        let state: Option<(Option<Millis>, Option<Millis>)> =
            sqlx::query_as("SELECT revoked_at, deactivated_at FROM inventory WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err(op))?;
        renewable(state, review_by, now)?;
        sqlx::query(
            "UPDATE inventory SET review_by = ?, notified_at = NULL, retire_attempts = 0, \
             retire_error = NULL WHERE id = ?",
        )
        .bind(review_by)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err(op))?;
        let row = sqlx::query_as::<_, InventoryRow>(&format!(
            "SELECT {INVENTORY_COLUMNS}, (SELECT COUNT(*) FROM captured_secrets c \
             WHERE c.identity_id = inventory.id) AS captured FROM inventory WHERE id = ?"
        ))
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err(op))?;
        tx.commit().await.map_err(db_err(op))?;
        Ok(InventoryEntry::from(row))
    }

    async fn retire_step(&self, id: &str, step: &RetireStep) -> Result<(), StoreError> {
        let q = match step {
            RetireStep::Notified(at) => {
                sqlx::query("UPDATE inventory SET notified_at = ? WHERE id = ?").bind(*at)
            }
            RetireStep::Deactivated(at) => sqlx::query(
                "UPDATE inventory SET deactivated_at = ?, retire_attempts = 0, \
                 retire_error = NULL WHERE id = ?",
            )
            .bind(*at),
            RetireStep::Failed(why) => sqlx::query(
                "UPDATE inventory SET retire_attempts = retire_attempts + 1, retire_error = ? \
                 WHERE id = ?",
            )
            .bind(why.clone()),
        };
        let done = q
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db_err("record a retirement step"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn claim_notice(&self, id: &str, now: Millis, lease: Millis) -> Result<bool, StoreError> {
        // One statement: the row's lock (SQLite's write lock) makes it atomic.
        let done = sqlx::query(
            "UPDATE inventory SET notified_at = -? WHERE id = ? AND revoked_at IS NULL \
             AND (notified_at IS NULL OR (notified_at < 0 AND -notified_at <= ?))",
        )
        .bind(now)
        .bind(id)
        .bind(now.saturating_sub(lease))
        .execute(&self.pool)
        .await
        .map_err(db_err("claim a notice"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_notice(&self, id: &str, claimed_at: Millis) -> Result<(), StoreError> {
        sqlx::query("UPDATE inventory SET notified_at = NULL WHERE id = ? AND notified_at = -?")
            .bind(id)
            .bind(claimed_at)
            .execute(&self.pool)
            .await
            .map_err(db_err("release a notice"))?;
        Ok(())
    }

    async fn share_captured(&self, identity_id: &str, agent: &str) -> Result<u64, StoreError> {
        let op = "share captured secret";
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err(op))?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT handle_hash, shared_with FROM captured_secrets WHERE identity_id = ?",
        )
        .bind(identity_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err(op))?;
        for (hash, shared) in &rows {
            let mut list: Vec<String> = serde_json::from_str(shared).unwrap_or_default();
            if !list.iter().any(|a| a == agent) {
                list.push(agent.to_string());
            }
            sqlx::query("UPDATE captured_secrets SET shared_with = ? WHERE handle_hash = ?")
                .bind(serde_json::to_string(&list).unwrap_or_else(|_| "[]".into()))
                .bind(hash)
                .execute(&mut *tx)
                .await
                .map_err(db_err(op))?;
        }
        tx.commit().await.map_err(db_err(op))?;
        Ok(rows.len() as u64)
    }

    async fn reseal(&self, handle_hash: &str, sealed: &Sealed) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE captured_secrets SET key_id = ?, nonce = ?, sealed = ? WHERE handle_hash = ?",
        )
        .bind(&sealed.key_id)
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .bind(handle_hash)
        .execute(&self.pool)
        .await
        .map_err(db_err("reseal captured secret"))?;
        Ok(())
    }

    async fn open_task(&self, task: &Task) -> Result<(), StoreError> {
        let done = sqlx::query(&format!(
            "INSERT INTO tasks ({TASK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO NOTHING"
        ))
        .bind(&task.id)
        .bind(&task.agent_id)
        .bind(&task.purpose)
        .bind(&task.ticket)
        .bind(task_list(&task.tools))
        .bind(task_list(&task.operations))
        .bind(&task.opened_by)
        .bind(task.opened_at)
        .bind(task.expires_at)
        .bind(task.ended_at)
        .bind(&task.ended_by)
        .execute(&self.pool)
        .await
        .map_err(db_err("open task"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("task {} exists", task.id)));
        }
        Ok(())
    }

    async fn end_task(&self, id: &str, by: &str, now: Millis) -> Result<(Task, bool), StoreError> {
        const OP: &str = "end task";
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err(OP))?;
        let done = sqlx::query(
            "UPDATE tasks SET ended_at = ?, ended_by = ? WHERE id = ? AND ended_at IS NULL",
        )
        .bind(now)
        .bind(by)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err(OP))?;
        let row =
            sqlx::query_as::<_, TaskRow>(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err(OP))?;
        tx.commit().await.map_err(db_err(OP))?;
        let task = row.ok_or(StoreError::NotFound)?;
        Ok((Task::from(task), done.rows_affected() > 0))
    }

    async fn tasks(&self, since: Millis) -> Result<Vec<Task>, StoreError> {
        let rows = sqlx::query_as::<_, TaskRow>(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE expires_at > ? ORDER BY opened_at, id"
        ))
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("list tasks"))?;
        Ok(rows.into_iter().map(Task::from).collect())
    }
}

#[derive(FromRow)]
pub(super) struct AgentKeyRow {
    key_hash: String,
    agent_id: String,
    created_by: String,
    created_at: i64,
    revoked_at: Option<i64>,
}

async fn fetch_approval(
    conn: &mut SqliteConnection,
    id: &str,
) -> Result<Option<Approval>, StoreError> {
    let row = sqlx::query_as::<_, ApprovalRow>(&format!(
        "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err("get approval"))?;
    row.map(Approval::try_from).transpose()
}

/// A row of `approvals` as stored ([`APPROVAL_COLUMNS`]); [`Approval`] once its status and
/// policy ids are parsed.
#[derive(FromRow)]
pub(super) struct ApprovalRow {
    id: String,
    status: String,
    agent_id: String,
    agent_owner: String,
    tool: String,
    operation: String,
    identity_kind: Option<String>,
    digest: String,
    method: String,
    path: String,
    /// A JSON array of policy ids.
    policies: String,
    request: Option<String>,
    created_at: Millis,
    pending_expires_at: Millis,
    decided_at: Option<Millis>,
    approver: Option<String>,
    ticket: Option<String>,
    identity_owner: Option<String>,
    note: Option<String>,
    approval_expires_at: Option<Millis>,
    review_by: Option<Millis>,
    used_at: Option<Millis>,
    approvers_needed: i64,
    first_approver: Option<String>,
}

impl TryFrom<ApprovalRow> for Approval {
    type Error = StoreError;

    /// Fails (the store is unavailable, never a guess) on a status this build does not know
    /// or policy ids that are not a JSON array.
    fn try_from(r: ApprovalRow) -> Result<Approval, StoreError> {
        let status = ApprovalStatus::parse(&r.status)
            .ok_or_else(|| StoreError::Unavailable("read approval: unknown status".to_owned()))?;
        let policies: Vec<String> = serde_json::from_str(&r.policies).map_err(|_| {
            StoreError::Unavailable("read approval: policy ids are not a JSON array".to_owned())
        })?;
        Ok(Approval {
            id: r.id,
            status,
            agent_id: r.agent_id,
            agent_owner: r.agent_owner,
            tool: r.tool,
            operation: r.operation,
            identity_kind: r.identity_kind,
            digest: r.digest,
            method: r.method,
            path: r.path,
            policies,
            request: r.request,
            created_at: r.created_at,
            pending_expires_at: r.pending_expires_at,
            decided_at: r.decided_at,
            approver: r.approver,
            ticket: r.ticket,
            identity_owner: r.identity_owner,
            note: r.note,
            approval_expires_at: r.approval_expires_at,
            review_by: r.review_by,
            used_at: r.used_at,
            approvers_needed: u8::try_from(r.approvers_needed.clamp(1, 2)).unwrap_or(2),
            first_approver: r.first_approver,
        })
    }
}

/// Inserts an agent key (alone, or in a transaction with what it belongs to).
async fn insert_agent_key(conn: &mut SqliteConnection, key: &AgentKey) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO agent_keys (key_hash, agent_id, created_by, created_at, revoked_at) \
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&key.key_hash)
    .bind(&key.agent_id)
    .bind(&key.created_by)
    .bind(key.created_at)
    .bind(key.revoked_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// A row of `captured_secrets`.
#[derive(sqlx::FromRow)]
pub(super) struct CapturedRow {
    handle_hash: String,
    identity_id: String,
    tool: String,
    agent_id: String,
    shared_with: String,
    field: String,
    shape: String,
    key_id: String,
    nonce: Vec<u8>,
    sealed: Vec<u8>,
    created_at: Millis,
}

/// Whether a record in `state` (revoked at, deactivated at; None when there is no such
/// record) may be renewed until `review_by`.
pub(super) fn renewable(
    state: Option<(Option<Millis>, Option<Millis>)>,
    review_by: Millis,
    now: Millis,
) -> Result<(), StoreError> {
    let Some((revoked_at, deactivated_at)) = state else {
        return Err(StoreError::NotFound);
    };
    if revoked_at.is_some() {
        return Err(StoreError::Conflict(
            "the identity is revoked: it cannot be renewed".into(),
        ));
    }
    if deactivated_at.is_some() {
        return Err(StoreError::Conflict(
            "the identity was deactivated at its review date: it cannot be renewed".into(),
        ));
    }
    if review_by <= now {
        return Err(StoreError::Conflict(
            "the new review date is not in the future".into(),
        ));
    }
    Ok(())
}

/// A row of `inventory` ([`INVENTORY_COLUMNS`]).
#[derive(FromRow)]
pub(super) struct InventoryRow {
    id: String,
    kind: String,
    tool: String,
    operation: String,
    identifier: Option<String>,
    agent_id: String,
    approver: Option<String>,
    owner: String,
    ticket: Option<String>,
    approval_id: Option<String>,
    request_id: String,
    created_at: Millis,
    review_by: Option<Millis>,
    revoked_at: Option<Millis>,
    revoked_by: Option<String>,
    notified_at: Option<Millis>,
    deactivated_at: Option<Millis>,
    retire_attempts: i64,
    retire_error: Option<String>,
    captured: i64,
}

impl From<InventoryRow> for InventoryEntry {
    fn from(r: InventoryRow) -> InventoryEntry {
        InventoryEntry {
            id: r.id,
            kind: r.kind,
            tool: r.tool,
            operation: r.operation,
            identifier: r.identifier,
            agent_id: r.agent_id,
            approver: r.approver,
            owner: r.owner,
            ticket: r.ticket,
            approval_id: r.approval_id,
            request_id: r.request_id,
            created_at: r.created_at,
            review_by: r.review_by,
            revoked_at: r.revoked_at,
            revoked_by: r.revoked_by,
            captured: u32::try_from(r.captured).unwrap_or(0),
            // A negative value is a replica's claim to notify (`Store::claim_notice`).
            notified_at: r.notified_at.filter(|t| *t >= 0),
            deactivated_at: r.deactivated_at,
            retire_attempts: u32::try_from(r.retire_attempts).unwrap_or(u32::MAX),
            retire_error: r.retire_error,
        }
    }
}

/// A row of `tasks` (tools and operations as JSON arrays).
#[derive(FromRow)]
pub(super) struct TaskRow {
    id: String,
    agent_id: String,
    purpose: String,
    ticket: Option<String>,
    tools: String,
    operations: String,
    opened_by: String,
    opened_at: Millis,
    expires_at: Millis,
    ended_at: Option<Millis>,
    ended_by: Option<String>,
}

impl From<TaskRow> for Task {
    fn from(r: TaskRow) -> Task {
        // A list that does not parse names nothing, which would widen the task: it is
        // read as naming a tool no call can reach instead.
        let list = |s: &str| {
            serde_json::from_str::<Vec<String>>(s).unwrap_or_else(|_| vec![String::new()])
        };
        Task {
            tools: list(&r.tools),
            operations: list(&r.operations),
            id: r.id,
            agent_id: r.agent_id,
            purpose: r.purpose,
            ticket: r.ticket,
            opened_by: r.opened_by,
            opened_at: r.opened_at,
            expires_at: r.expires_at,
            ended_at: r.ended_at,
            ended_by: r.ended_by,
        }
    }
}

/// A task's list as stored (a JSON array).
pub(super) fn task_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[\"\"]".into())
}

/// A row of `suspensions`.
#[derive(FromRow)]
pub(super) struct SuspensionRow {
    agent_id: String,
    suspended_by: String,
    reason: Option<String>,
    at: Millis,
}

impl From<SuspensionRow> for Suspension {
    fn from(r: SuspensionRow) -> Suspension {
        Suspension {
            agent_id: r.agent_id,
            by: r.suspended_by,
            reason: r.reason,
            at: r.at,
        }
    }
}

impl From<AgentKeyRow> for AgentKey {
    fn from(r: AgentKeyRow) -> AgentKey {
        AgentKey {
            key_hash: r.key_hash,
            agent_id: r.agent_id,
            created_by: r.created_by,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        }
    }
}

impl CapturedRow {
    /// The captured secret; `None` for a shape this keygate does not know (never used).
    pub(super) fn into_secret(self) -> Option<CapturedSecret> {
        Some(CapturedSecret {
            handle_hash: self.handle_hash,
            identity_id: self.identity_id,
            tool: self.tool,
            agent_id: self.agent_id,
            shared_with: serde_json::from_str(&self.shared_with).unwrap_or_default(),
            field: self.field,
            shape: Shape::parse(&self.shape)?,
            sealed: Sealed {
                key_id: self.key_id,
                nonce: self.nonce,
                ciphertext: self.sealed,
            },
            created_at: self.created_at,
        })
    }
}

/// Maps a sqlx error to [`StoreError::Unavailable`] with a message naming the operation and
/// the kind of failure, never values: SQLite's own messages name tables, columns and
/// constraints only, and decode errors (whose sources may quote values) are reduced to the
/// column.
pub(super) fn db_err(op: &'static str) -> impl Fn(sqlx::Error) -> StoreError + Copy {
    move |e| {
        let what = match &e {
            sqlx::Error::Database(d) => match d.code() {
                Some(code) => format!("database error {code}: {}", d.message()),
                None => format!("database error: {}", d.message()),
            },
            sqlx::Error::Io(io) => format!("I/O error: {}", io.kind()),
            sqlx::Error::PoolTimedOut => "timed out waiting for a connection".to_owned(),
            sqlx::Error::PoolClosed => "the store is closed".to_owned(),
            sqlx::Error::WorkerCrashed => "the database worker stopped".to_owned(),
            sqlx::Error::ColumnNotFound(column) => format!("no column {column}"),
            sqlx::Error::ColumnDecode { index, .. } => format!("cannot decode column {index}"),
            sqlx::Error::ColumnIndexOutOfBounds { index, .. } => {
                format!("no column at index {index}")
            }
            sqlx::Error::RowNotFound => "row not found".to_owned(),
            sqlx::Error::Configuration(_) => "invalid configuration".to_owned(),
            sqlx::Error::Protocol(_) => "protocol error".to_owned(),
            sqlx::Error::Decode(_) => "cannot decode a value".to_owned(),
            sqlx::Error::Encode(_) => "cannot encode a value".to_owned(),
            _ => "database driver error".to_owned(),
        };
        StoreError::Unavailable(format!("{op}: {what}"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const T0: Millis = 1_700_000_000_000;
    const MINUTE: Millis = 60_000;

    fn new_approval(agent: &str, digest: &str) -> NewApproval {
        NewApproval {
            agent_id: agent.to_owned(),
            agent_owner: "alice@example.com".to_owned(),
            tool: "aws".to_owned(),
            operation: "iam:CreateAccessKey".to_owned(),
            identity_kind: Some("aws-access-key".to_owned()),
            digest: digest.to_owned(),
            method: "POST".to_owned(),
            path: "/".to_owned(),
            policies: vec!["gate-identity-creation".to_owned(), "p2".to_owned()],
            request: Some("Action=CreateAccessKey&UserName=bob".to_owned()),
            approvers_needed: 1,
            pending_expires_at: T0 + 10 * MINUTE,
        }
    }

    fn approve_until(expires_at: Millis) -> Approve {
        Approve {
            approver: "bob@example.com".to_owned(),
            ticket: Some("SEC-42".to_owned()),
            identity_owner: "carol@example.com".to_owned(),
            note: Some("for the nightly export".to_owned()),
            expires_at,
            review_by: Some(T0 + 90 * 24 * 60 * MINUTE),
        }
    }

    async fn fresh() -> (tempfile::TempDir, Arc<SqliteStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state").join("keygate.db"))
            .await
            .unwrap();
        (dir, Arc::new(store))
    }

    #[tokio::test]
    async fn approvals_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keygate.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let (pending, _) = store
            .open_approval(new_approval("agent-1", "d1"), T0, 1000)
            .await
            .unwrap();
        let (approved, _) = store
            .open_approval(new_approval("agent-1", "d2"), T0, 1000)
            .await
            .unwrap();
        let approved = store
            .approve(&approved.id, approve_until(T0 + 5 * MINUTE), T0 + MINUTE)
            .await
            .unwrap();
        store
            .suspend("agent-7", "bob", Some("leaked key"), T0)
            .await
            .unwrap();
        store.close().await;
        drop(store);

        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(
            store.approval(&pending.id).await.unwrap(),
            Some(pending.clone())
        );
        assert_eq!(
            store.approval(&approved.id).await.unwrap(),
            Some(approved.clone())
        );
        let listed = store.approvals(None, 10).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(
            store
                .approvals(Some(ApprovalStatus::Approved), 10)
                .await
                .unwrap(),
            vec![approved.clone()]
        );
        assert_eq!(store.suspensions().await.unwrap().len(), 1);
        // Still the active one after the restart.
        let (again, created) = store
            .open_approval(new_approval("agent-1", "d2"), T0, 1000)
            .await
            .unwrap();
        assert!(!created);
        assert_eq!(again.id, approved.id);
        let version: i64 = sqlx::query_scalar("SELECT version FROM schema_version")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[tokio::test]
    async fn a_version_1_store_gains_agent_keys_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keygate.db");
        let store = SqliteStore::open(&path).await.unwrap();
        store.suspend("agent-1", "bob", None, T0).await.unwrap();
        // Back to what version 1 wrote.
        for undo in [
            "DROP TABLE agent_keys",
            "DROP TABLE captured_secrets",
            "ALTER TABLE inventory DROP COLUMN revoked_at",
            "ALTER TABLE inventory DROP COLUMN revoked_by",
            "ALTER TABLE approvals DROP COLUMN approvers_needed",
            "ALTER TABLE approvals DROP COLUMN first_approver",
            "ALTER TABLE inventory DROP COLUMN notified_at",
            "ALTER TABLE inventory DROP COLUMN deactivated_at",
            "ALTER TABLE inventory DROP COLUMN retire_attempts",
            "ALTER TABLE inventory DROP COLUMN retire_error",
        ] {
            sqlx::query(undo).execute(&store.pool).await.unwrap();
        }
        sqlx::query("UPDATE schema_version SET version = 1")
            .execute(&store.pool)
            .await
            .unwrap();
        store.close().await;
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.suspensions().await.unwrap().len(), 1);
        let key = AgentKey {
            key_hash: "KGAKTEST".into(),
            agent_id: "agent-1".into(),
            created_by: "admin-token".into(),
            created_at: T0,
            revoked_at: None,
        };
        store.add_agent_key(&key).await.unwrap();
        assert_eq!(store.agent_keys().await.unwrap(), vec![key.clone()]);
        assert!(store
            .revoke_agent_key("KGAKTEST", T0 + MINUTE)
            .await
            .unwrap());
        assert!(!store
            .revoke_agent_key("KGAKTEST", T0 + MINUTE)
            .await
            .unwrap());
        assert!(!store.revoke_agent_key("KGAKNONE", T0).await.unwrap());
        assert_eq!(
            store.agent_keys().await.unwrap()[0].revoked_at,
            Some(T0 + MINUTE)
        );
        let version: i64 = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keygate.db");
        let store = SqliteStore::open(&path).await.unwrap();
        sqlx::query("UPDATE schema_version SET version = 99")
            .execute(&store.pool)
            .await
            .unwrap();
        store.close().await;
        let err = SqliteStore::open(&path).await.unwrap_err();
        assert!(matches!(&err, StoreError::Unavailable(m) if m.contains("99")));
    }

    #[tokio::test]
    async fn open_store_returns_a_trait_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open_store(&dir.path().join("a").join("b").join("k.db"))
            .await
            .unwrap();
        let (a, created) = store
            .open_approval(new_approval("agent-1", "d1"), T0, 1000)
            .await
            .unwrap();
        assert!(created);
        assert_eq!(store.approval(&a.id).await.unwrap().unwrap().id, a.id);
    }

    #[tokio::test]
    async fn errors_after_close_are_unavailable() {
        let (_dir, store) = fresh().await;
        store.close().await;
        let err = store.inventory().await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Unavailable(m) if m == "list inventory: the store is closed")
        );
    }
}

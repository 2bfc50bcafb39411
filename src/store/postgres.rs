//! The PostgreSQL [`Store`]: shared by several keygate replicas.
//!
//! - **Atomic single-use steps.** Consuming an approval is one conditional `UPDATE …
//!   RETURNING`: PostgreSQL locks the row, a second writer re-checks the condition after
//!   the first commits and changes nothing, so exactly one caller on any replica gets it.
//!   Decisions and revocations lock their row (`SELECT … FOR UPDATE`); opening an approval
//!   takes a transaction-scoped advisory lock per agent, so the pending cap holds under
//!   concurrency.
//! - **Changes pushed.** Every write that other replicas must apply at once (suspensions,
//!   decisions, agent keys, captured secrets) sends `NOTIFY keygate_changes` in its own
//!   transaction, so the notification goes out exactly when the change commits. One
//!   connection per replica listens and republishes them on [`Store::changes`]; when it is
//!   lost, a [`Change::Resync`] asks for a full re-read.
//! - **Versioned migrations**, applied at start under an advisory lock (replicas starting
//!   together migrate once); a schema newer than this build is refused.
//! - TLS to the database with rustls (the URL's `sslmode`; `verify-full` checks the host
//!   name against `ca_file` or the Mozilla roots); a bounded pool.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Postgres, Transaction};
use tokio::sync::broadcast;

use super::model::{
    new_id, AgentKey, Approval, ApprovalCounts, ApprovalStatus, Approve, CapturedSecret, Change,
    InventoryEntry, LimitCount, Millis, NewApproval, NewIdentity, PgTarget, RetireStep, Revoked,
    Sealed, SharedCounts, Store, StoreError, Suspension, Task,
};
use super::sqlite::{
    approve_step, db_err, renewable, task_list, AgentKeyRow, ApprovalRow, ApproveStep, CapturedRow,
    InventoryRow, SuspensionRow, TaskRow, APPROVAL_COLUMNS, INVENTORY_COLUMNS, TASK_COLUMNS,
};

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = 7;

/// A transient conflict [`PgStore::try_open_approval`] retries.
const RETRY: &str = "retry";

/// The channel every replica listens on.
const CHANNEL: &str = "keygate_changes";

/// Version 2: approvals two different humans must approve.
const SCHEMA_V2: &[&str] = &[
    "ALTER TABLE approvals ADD COLUMN approvers_needed BIGINT NOT NULL DEFAULT 1",
    "ALTER TABLE approvals ADD COLUMN first_approver TEXT",
];

/// Version 3: retirement of inventory records at their review date.
const SCHEMA_V3: &[&str] = &[
    "ALTER TABLE inventory ADD COLUMN notified_at BIGINT",
    "ALTER TABLE inventory ADD COLUMN deactivated_at BIGINT",
    "ALTER TABLE inventory ADD COLUMN retire_attempts BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE inventory ADD COLUMN retire_error TEXT",
];

/// Version 4: tasks (an agent's just-in-time access).
const SCHEMA_V4: &[&str] = &[
    "CREATE TABLE tasks (
        id          TEXT PRIMARY KEY NOT NULL,
        agent_id    TEXT NOT NULL,
        purpose     TEXT NOT NULL,
        ticket      TEXT,
        tools       TEXT NOT NULL DEFAULT '[]',
        operations  TEXT NOT NULL DEFAULT '[]',
        opened_by   TEXT NOT NULL,
        opened_at   BIGINT NOT NULL,
        expires_at  BIGINT NOT NULL,
        ended_at    BIGINT,
        ended_by    TEXT
    )",
    "CREATE INDEX tasks_by_expiry ON tasks (expires_at)",
];

/// How far back a read of changed baselines looks again (see `baselines_changed`).
const BASELINE_READ_MARGIN_MS: Millis = 60_000;
/// Baselines written per statement (each its own transaction, in agent order).
const BASELINE_BATCH: usize = 500;

/// Version 5: what each agent normally does (anomaly baselines), one JSON document per
/// agent. Self-contained: nothing else reads or changes this table.
const SCHEMA_V5: &[&str] = &["CREATE TABLE IF NOT EXISTS agent_baselines (
        agent_id   TEXT PRIMARY KEY NOT NULL,
        baseline   TEXT NOT NULL,
        updated_at BIGINT NOT NULL
    )"];

/// Version 6: counts of `shared` rate limits, per replica, rule, key and fixed window;
/// and when each replica last shared them. Self-contained.
const SCHEMA_V6: &[&str] = &[
    "CREATE TABLE rate_limit_counts (
        rule         TEXT NOT NULL,
        key          TEXT NOT NULL,
        window_start BIGINT NOT NULL,
        replica      TEXT NOT NULL,
        window_end   BIGINT NOT NULL,
        count        BIGINT NOT NULL,
        PRIMARY KEY (rule, key, window_start, replica)
    )",
    "CREATE INDEX rate_limit_counts_by_end ON rate_limit_counts (window_end)",
    "CREATE TABLE rate_limit_replicas (
        replica TEXT PRIMARY KEY NOT NULL,
        seen_at TIMESTAMPTZ NOT NULL
    )",
];

/// Version 7: replicas read the baselines changed since their last read.
const SCHEMA_V7: &[&str] =
    &["CREATE INDEX agent_baselines_by_update ON agent_baselines (updated_at)"];

/// How long after its window ended a count is deleted (replicas' clocks differ a little).
const COUNTS_KEPT_MS: i64 = 60_000;

/// Key of the advisory lock that serializes migrations across replicas.
const MIGRATION_LOCK: i64 = 0x6b67_6d69_6772;

/// Version 1: the whole schema of SQLite's version 3 (approvals, inventory with
/// revocation, suspensions, agent keys, captured secrets), with a `seq` column giving rows
/// created in the same millisecond a stable order.
const SCHEMA_V1: &[&str] = &[
    "CREATE TABLE approvals (
        seq                 BIGINT GENERATED ALWAYS AS IDENTITY,
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
        created_at          BIGINT NOT NULL,
        pending_expires_at  BIGINT NOT NULL,
        decided_at          BIGINT,
        approver            TEXT,
        ticket              TEXT,
        identity_owner      TEXT,
        note                TEXT,
        approval_expires_at BIGINT,
        review_by           BIGINT,
        used_at             BIGINT
    )",
    "CREATE UNIQUE INDEX approvals_one_active ON approvals (agent_id, operation, digest)
        WHERE status IN ('pending','approved')",
    "CREATE INDEX approvals_by_created ON approvals (created_at, seq)",
    "CREATE INDEX approvals_by_status ON approvals (status, created_at, seq)",
    "CREATE TABLE inventory (
        seq         BIGINT GENERATED ALWAYS AS IDENTITY,
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
        created_at  BIGINT NOT NULL,
        review_by   BIGINT,
        revoked_at  BIGINT,
        revoked_by  TEXT
    )",
    "CREATE INDEX inventory_by_created ON inventory (created_at, seq)",
    "CREATE TABLE suspensions (
        agent_id     TEXT PRIMARY KEY NOT NULL,
        suspended_by TEXT NOT NULL,
        reason       TEXT,
        at           BIGINT NOT NULL
    )",
    "CREATE TABLE agent_keys (
        key_hash   TEXT PRIMARY KEY NOT NULL,
        agent_id   TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT
    )",
    "CREATE TABLE captured_secrets (
        handle_hash TEXT PRIMARY KEY NOT NULL,
        identity_id TEXT NOT NULL REFERENCES inventory (id),
        tool        TEXT NOT NULL,
        agent_id    TEXT NOT NULL,
        shared_with TEXT NOT NULL DEFAULT '[]',
        field       TEXT NOT NULL,
        shape       TEXT NOT NULL,
        key_id      TEXT NOT NULL,
        nonce       BYTEA NOT NULL,
        sealed      BYTEA NOT NULL,
        created_at  BIGINT NOT NULL
    )",
    "CREATE INDEX captured_by_identity ON captured_secrets (identity_id)",
];

/// The PostgreSQL implementation of [`Store`].
pub struct PgStore {
    pool: PgPool,
    changes: broadcast::Sender<Change>,
    replica: String,
    listener: tokio::task::AbortHandle,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PgStore {
    /// Connects, applies the migrations this build knows, and starts listening for
    /// changes. Fails if the database holds a newer schema than this build knows.
    pub async fn open(target: &PgTarget, replica: &str) -> Result<PgStore, StoreError> {
        let mut options = PgConnectOptions::from_str(&target.url)
            .map_err(|_| {
                StoreError::Unavailable(
                    "the PostgreSQL URL is not valid (postgres://user@host:5432/db)".into(),
                )
            })?
            .application_name("keygate");
        if let Some(ca) = &target.ca_file {
            options = options.ssl_root_cert(ca);
        }
        // A statement, a lock wait or a transaction left open by a stalled peer ends on the
        // server rather than holding a request (or a row) indefinitely.
        options = options.options([
            ("statement_timeout", "5s"),
            ("lock_timeout", "5s"),
            ("idle_in_transaction_session_timeout", "10s"),
        ]);
        // The connection that listens for changes is a pool of its own: it is held for
        // good, and must not take one of `max_connections`.
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options.clone());
        let pool = PgPoolOptions::new()
            .max_connections(target.max_connections.max(1))
            .min_connections(0)
            // A replica whose database is gone refuses within this, rather than holding
            // requests.
            .acquire_timeout(Duration::from_secs(2))
            .connect_with(options)
            .await
            .map_err(db_err("connect"))?;
        migrate(&pool).await?;
        let (changes, _) = broadcast::channel(1024);
        let listener = tokio::spawn(listen(listen_pool, changes.clone())).abort_handle();
        Ok(PgStore {
            pool,
            changes,
            replica: replica.to_string(),
            listener,
        })
    }

    /// Closes every connection; later calls fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.listener.abort();
        self.pool.close().await;
    }

    async fn begin(&self, op: &'static str) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.pool.begin().await.map_err(db_err(op))
    }

    /// One attempt of [`Store::open_approval`]: `Conflict(RETRY)` when the active approval
    /// it met was retired before it could read it.
    async fn try_open_approval(
        &self,
        new: &NewApproval,
        now: Millis,
        max_pending: u32,
    ) -> Result<(Approval, bool), StoreError> {
        const OP: &str = "open approval";
        let policies = serde_json::to_string(&new.policies)
            .map_err(|_| StoreError::Unavailable("cannot encode policy ids".to_owned()))?;
        let mut tx = self.begin(OP).await?;
        // One opener per agent at a time (any replica): the pending cap is counted and the
        // approval inserted under this lock.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("approvals:{}", new.agent_id))
            .execute(&mut *tx)
            .await
            .map_err(db_err(OP))?;
        sqlx::query(
            "UPDATE approvals SET status = 'expired' \
             WHERE agent_id = $1 AND operation = $2 AND digest = $3 \
             AND ((status = 'pending' AND pending_expires_at <= $4) \
               OR (status = 'approved' AND approval_expires_at <= $4))",
        )
        .bind(&new.agent_id)
        .bind(&new.operation)
        .bind(&new.digest)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_err(OP))?;
        let inserted = sqlx::query(
            "INSERT INTO approvals (id, status, agent_id, agent_owner, tool, operation, \
             identity_kind, digest, method, path, policies, request, created_at, \
             pending_expires_at, approvers_needed) \
             SELECT $1, 'pending', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $15 \
             WHERE (SELECT COUNT(*) FROM approvals WHERE agent_id = $2 AND status = 'pending' \
                    AND pending_expires_at > $12) < $14 \
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
        .bind(i64::from(max_pending))
        .bind(i64::from(new.approvers_needed.max(1)))
        .execute(&mut *tx)
        .await
        .map_err(db_err(OP))?;
        let created = inserted.rows_affected() == 1;
        let row = sqlx::query_as::<_, ApprovalRow>(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals \
             WHERE agent_id = $1 AND operation = $2 AND digest = $3 \
             AND status IN ('pending', 'approved')"
        ))
        .bind(&new.agent_id)
        .bind(&new.operation)
        .bind(&new.digest)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err(OP))?;
        let Some(row) = row else {
            // Not inserted and none active: the cap refused it, or the active approval it
            // conflicted with was used (or decided) by another replica between the two
            // statements. Only the first is a refusal; the caller retries the second.
            let pending: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM approvals WHERE agent_id = $1 AND status = 'pending' \
                 AND pending_expires_at > $2",
            )
            .bind(&new.agent_id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err(OP))?;
            return Err(if pending >= i64::from(max_pending) {
                StoreError::TooManyPending(max_pending)
            } else {
                StoreError::Conflict(RETRY.into())
            });
        };
        let approval = Approval::try_from(row)?;
        tx.commit().await.map_err(db_err(OP))?;
        Ok((approval, created))
    }

    /// Approves or denies a pending approval, with its row locked.
    async fn decide(
        &self,
        id: &str,
        approve: Option<Approve>,
        deny: (&str, Option<&str>),
        now: Millis,
    ) -> Result<Approval, StoreError> {
        let op = if approve.is_some() { "approve" } else { "deny" };
        let mut tx = self.begin(op).await?;
        let current = fetch_approval(&mut tx, id, true)
            .await?
            .ok_or(StoreError::NotFound)?;
        if current.status != ApprovalStatus::Pending {
            return Err(StoreError::Conflict(format!(
                "approval is {}, not pending",
                current.status
            )));
        }
        if current.pending_expires_at <= now {
            sqlx::query("UPDATE approvals SET status = 'expired' WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_err(op))?;
            tx.commit().await.map_err(db_err(op))?;
            return Err(StoreError::Conflict(
                "approval is expired, not pending".to_owned(),
            ));
        }
        match approve {
            Some(d) if approve_step(&current, &d.approver)? == ApproveStep::First => {
                sqlx::query("UPDATE approvals SET first_approver = $1 WHERE id = $2")
                    .bind(&d.approver)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
            }
            Some(d) => {
                if d.expires_at <= now {
                    return Err(StoreError::Conflict(
                        "the approval's expiry must be in the future".to_owned(),
                    ));
                }
                sqlx::query(
                    "UPDATE approvals SET status = 'approved', decided_at = $1, approver = $2, \
                     ticket = $3, identity_owner = $4, note = $5, approval_expires_at = $6, \
                     review_by = $7 WHERE id = $8",
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
            None => {
                sqlx::query(
                    "UPDATE approvals SET status = 'denied', decided_at = $1, approver = $2, \
                     note = $3 WHERE id = $4",
                )
                .bind(now)
                .bind(deny.0)
                .bind(deny.1)
                .bind(id)
                .execute(&mut *tx)
                .await
            }
        }
        .map_err(db_err(op))?;
        let approval = fetch_approval(&mut tx, id, false)
            .await?
            .ok_or(StoreError::NotFound)?;
        notify(&mut tx, &Change::Decision(id.to_string()), op).await?;
        tx.commit().await.map_err(db_err(op))?;
        Ok(approval)
    }
}

/// Applies the migrations from the database's version to [`SCHEMA_VERSION`], in one
/// transaction under an advisory lock.
async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let op = "migrate";
    let mut tx = pool.begin().await.map_err(db_err(op))?;
    // Another replica migrating holds the lock for a moment; one that hangs does not stop
    // this one from starting forever.
    sqlx::query("SET LOCAL lock_timeout = '60s'")
        .execute(&mut *tx)
        .await
        .map_err(db_err(op))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(db_err(op))?;
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        .execute(&mut *tx)
        .await
        .map_err(db_err(op))?;
    let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err(op))?;
    let steps: [&[&str]; 7] = [
        SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5, SCHEMA_V6, SCHEMA_V7,
    ];
    match current {
        Some(v) if v == SCHEMA_VERSION => {}
        Some(v) if v > SCHEMA_VERSION => {
            return Err(StoreError::Unavailable(format!(
                "the database's schema version {v} is newer than this keygate supports \
                 ({SCHEMA_VERSION}); upgrade keygate"
            )));
        }
        current => {
            let from = usize::try_from(current.unwrap_or(0)).unwrap_or(0);
            for statement in steps[from..].iter().copied().flatten() {
                sqlx::query(statement)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err(op))?;
            }
            sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
                .bind(SCHEMA_VERSION)
                .execute(&mut *tx)
                .await
                .map_err(db_err(op))?;
        }
    }
    tx.commit().await.map_err(db_err(op))
}

/// Listens for changes on a connection of its own and republishes them; after a lost
/// connection (notifications may have been missed) it asks for a full re-read.
async fn listen(pool: PgPool, changes: broadcast::Sender<Change>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("store: cannot listen for changes: {}", describe(e));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!("store: cannot listen for changes: {}", describe(e));
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Whatever was written before this LISTEN (or while the connection was down) was
        // not heard: every replica re-reads.
        let _ = changes.send(Change::Resync);
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    let _ = changes.send(Change::decode(n.payload()));
                }
                // The connection was lost; the next call reconnects and listens again.
                Ok(None) => {
                    tracing::warn!("store: the connection that listens for changes was lost");
                    let _ = changes.send(Change::Resync);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    tracing::warn!("store: listening for changes failed: {}", describe(e));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

fn describe(e: sqlx::Error) -> String {
    match db_err("listen")(e) {
        StoreError::Unavailable(m) => m,
        other => other.to_string(),
    }
}

/// Sends a change to every replica when the transaction commits.
async fn notify(
    conn: &mut PgConnection,
    change: &Change,
    op: &'static str,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(change.encode())
        .execute(conn)
        .await
        .map_err(db_err(op))?;
    Ok(())
}

async fn fetch_approval(
    conn: &mut PgConnection,
    id: &str,
    for_update: bool,
) -> Result<Option<Approval>, StoreError> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    let row = sqlx::query_as::<_, ApprovalRow>(&format!(
        "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1{lock}"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err("get approval"))?;
    row.map(Approval::try_from).transpose()
}

async fn insert_agent_key(conn: &mut PgConnection, key: &AgentKey) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO agent_keys (key_hash, agent_id, created_by, created_at, revoked_at) \
         VALUES ($1, $2, $3, $4, $5)",
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

#[async_trait::async_trait]
impl Store for PgStore {
    fn changes(&self) -> Option<broadcast::Receiver<Change>> {
        Some(self.changes.subscribe())
    }

    async fn announce(&self, change: Change) -> Result<bool, StoreError> {
        let change = match change {
            Change::Reload { .. } => Change::Reload {
                from: self.replica.clone(),
            },
            other => other,
        };
        let mut conn = self.pool.acquire().await.map_err(db_err("announce"))?;
        notify(&mut conn, &change, "announce").await?;
        Ok(true)
    }

    async fn open_approval(
        &self,
        new: NewApproval,
        now: Millis,
        max_pending: u32,
    ) -> Result<(Approval, bool), StoreError> {
        for _ in 0..3 {
            match self.try_open_approval(&new, now, max_pending).await {
                Err(StoreError::Conflict(m)) if m == RETRY => continue,
                other => return other,
            }
        }
        Err(StoreError::Unavailable(
            "open approval: the request's approval kept changing under it".into(),
        ))
    }

    async fn approval_counts(&self, now: Millis) -> Result<ApprovalCounts, StoreError> {
        let rows = sqlx::query_as::<_, (String, i64, i64)>(
            "SELECT status, COUNT(*), \
             COALESCE(SUM(CASE WHEN status = 'pending' AND pending_expires_at > $1 \
                          THEN 1 ELSE 0 END), 0)::BIGINT \
             FROM approvals GROUP BY status ORDER BY status",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("count approvals"))?;
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
        fetch_approval(&mut conn, id, false).await
    }

    async fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        limit: u32,
    ) -> Result<Vec<Approval>, StoreError> {
        let rows = match status {
            Some(status) => {
                sqlx::query_as::<_, ApprovalRow>(&format!(
                    "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE status = $1 \
                     ORDER BY created_at DESC, seq DESC LIMIT $2"
                ))
                .bind(status.as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query_as::<_, ApprovalRow>(&format!(
                    "SELECT {APPROVAL_COLUMNS} FROM approvals \
                     ORDER BY created_at DESC, seq DESC LIMIT $1"
                ))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(db_err("list approvals"))?;
        rows.into_iter().map(Approval::try_from).collect()
    }

    async fn approve(
        &self,
        id: &str,
        decision: Approve,
        now: Millis,
    ) -> Result<Approval, StoreError> {
        self.decide(id, Some(decision), ("", None), now).await
    }

    async fn deny(
        &self,
        id: &str,
        approver: &str,
        note: Option<&str>,
        now: Millis,
    ) -> Result<Approval, StoreError> {
        self.decide(id, None, (approver, note), now).await
    }

    async fn consume(
        &self,
        id: &str,
        digest: &str,
        now: Millis,
    ) -> Result<Option<Approval>, StoreError> {
        // One statement: the row is locked by the first writer; every other, on any
        // replica, re-checks `status = 'approved'` after it commits and changes nothing.
        let row = sqlx::query_as::<_, ApprovalRow>(&format!(
            "UPDATE approvals SET status = 'used', used_at = $1 \
             WHERE id = $2 AND status = 'approved' AND digest = $3 \
             AND approval_expires_at > $1 RETURNING {APPROVAL_COLUMNS}"
        ))
        .bind(now)
        .bind(id)
        .bind(digest)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err("consume approval"))?;
        row.map(Approval::try_from).transpose()
    }

    async fn expire(&self, now: Millis) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE approvals SET status = 'expired' \
             WHERE (status = 'pending' AND pending_expires_at <= $1) \
                OR (status = 'approved' AND approval_expires_at <= $1)",
        )
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
        let row = sqlx::query_as::<_, ApprovalRow>(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals \
             WHERE agent_id = $1 AND operation = $2 AND digest = $3 \
             AND status = 'denied' AND decided_at > $4 \
             ORDER BY decided_at DESC LIMIT 1"
        ))
        .bind(agent_id)
        .bind(operation)
        .bind(digest)
        .bind(since)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err("find denial"))?;
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, NULL, NULL, NULL, NULL, 0, NULL)"
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
             FROM inventory ORDER BY created_at DESC, seq DESC"
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
        const OP: &str = "suspend agent";
        let mut tx = self.begin(OP).await?;
        sqlx::query(
            "INSERT INTO suspensions (agent_id, suspended_by, reason, at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (agent_id) DO UPDATE SET suspended_by = excluded.suspended_by, \
             reason = excluded.reason, at = excluded.at",
        )
        .bind(agent_id)
        .bind(by)
        .bind(reason)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_err(OP))?;
        notify(&mut tx, &Change::Suspensions, OP).await?;
        tx.commit().await.map_err(db_err(OP))
    }

    async fn resume(&self, agent_id: &str) -> Result<bool, StoreError> {
        const OP: &str = "resume agent";
        let mut tx = self.begin(OP).await?;
        let done = sqlx::query("DELETE FROM suspensions WHERE agent_id = $1")
            .bind(agent_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err(OP))?;
        notify(&mut tx, &Change::Suspensions, OP).await?;
        tx.commit().await.map_err(db_err(OP))?;
        Ok(done.rows_affected() > 0)
    }

    async fn share_limit_counts(
        &self,
        replica: &str,
        mine: &[LimitCount],
        now: Millis,
        alive: Duration,
    ) -> Result<SharedCounts, StoreError> {
        const OP: &str = "share rate limit counts";
        let mut tx = self.begin(OP).await?;
        if !mine.is_empty() {
            // One statement for the whole batch.
            let col = |f: fn(&LimitCount) -> String| mine.iter().map(f).collect::<Vec<_>>();
            let num = |f: fn(&LimitCount) -> i64| mine.iter().map(f).collect::<Vec<_>>();
            sqlx::query(
                "INSERT INTO rate_limit_counts (rule, key, window_start, replica, window_end, count) \
                 SELECT r, k, s, $6, e, c FROM UNNEST($1::text[], $2::text[], $3::bigint[], \
                 $4::bigint[], $5::bigint[]) AS t(r, k, s, e, c) \
                 ON CONFLICT (rule, key, window_start, replica) DO UPDATE \
                 SET count = GREATEST(rate_limit_counts.count, excluded.count)",
            )
            .bind(col(|c| c.rule.clone()))
            .bind(col(|c| c.key.clone()))
            .bind(num(|c| c.window_start))
            .bind(num(|c| c.window_end))
            .bind(num(|c| c.count))
            .bind(replica)
            .execute(&mut *tx)
            .await
            .map_err(db_err(OP))?;
        }
        sqlx::query(
            "INSERT INTO rate_limit_replicas (replica, seen_at) VALUES ($1, now()) \
             ON CONFLICT (replica) DO UPDATE SET seen_at = excluded.seen_at",
        )
        .bind(replica)
        .execute(&mut *tx)
        .await
        .map_err(db_err(OP))?;
        sqlx::query("DELETE FROM rate_limit_counts WHERE window_end < $1")
            .bind(now - COUNTS_KEPT_MS)
            .execute(&mut *tx)
            .await
            .map_err(db_err(OP))?;
        sqlx::query("DELETE FROM rate_limit_replicas WHERE seen_at < now() - interval '1 day'")
            .execute(&mut *tx)
            .await
            .map_err(db_err(OP))?;
        let others = sqlx::query_as::<_, (String, String, i64, i64, i64)>(
            "SELECT rule, key, window_start, MAX(window_end), SUM(count)::BIGINT \
             FROM rate_limit_counts WHERE replica <> $1 AND window_end > $2 \
             GROUP BY rule, key, window_start",
        )
        .bind(replica)
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err(OP))?
        .into_iter()
        .map(|(rule, key, window_start, window_end, count)| LimitCount {
            rule,
            key,
            window_start,
            window_end,
            count,
        })
        .collect();
        let replicas: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM rate_limit_replicas \
             WHERE seen_at > now() - make_interval(secs => $1)",
        )
        .bind(alive.as_secs_f64())
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err(OP))?;
        tx.commit().await.map_err(db_err(OP))?;
        Ok(SharedCounts {
            others,
            replicas: u32::try_from(replicas).unwrap_or(u32::MAX).max(1),
        })
    }

    /// In agent order (two replicas writing the same agents never deadlock), a batch per
    /// statement, each committed at once: a row's `updated_at` (the database's time) is
    /// at most a statement's length before it can be read (see `baselines_changed`).
    async fn save_baselines(
        &self,
        rows: &[(String, String)],
        _now: Millis, // `updated_at` is the database's time: see `baselines_changed`
    ) -> Result<(), StoreError> {
        const OP: &str = "save baselines";
        let mut sorted: Vec<&(String, String)> = rows.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for batch in sorted.chunks(BASELINE_BATCH) {
            let agents: Vec<&str> = batch.iter().map(|(a, _)| a.as_str()).collect();
            let docs: Vec<&str> = batch.iter().map(|(_, d)| d.as_str()).collect();
            sqlx::query(
                "INSERT INTO agent_baselines (agent_id, baseline, updated_at) \
                 SELECT a, d, (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT \
                 FROM UNNEST($1::TEXT[], $2::TEXT[]) AS t(a, d) \
                 ON CONFLICT (agent_id) DO UPDATE SET baseline = excluded.baseline, \
                 updated_at = excluded.updated_at",
            )
            .bind(&agents)
            .bind(&docs)
            .execute(&self.pool)
            .await
            .map_err(db_err(OP))?;
        }
        Ok(())
    }

    async fn baselines(&self) -> Result<Vec<(String, String)>, StoreError> {
        sqlx::query_as::<_, (String, String)>(
            "SELECT agent_id, baseline FROM agent_baselines ORDER BY agent_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("read baselines"))
    }

    /// By the database's clock (every replica writes `updated_at` with it, whatever its
    /// own clock says): the cursor is the time of the read less a minute, so that a
    /// write committed late (its time taken before the read, its commit after) is read
    /// next time.
    async fn baselines_changed(
        &self,
        since: Option<Millis>,
    ) -> Result<(Vec<(String, String)>, Millis), StoreError> {
        const OP: &str = "read changed baselines";
        let now: Millis =
            sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT")
                .fetch_one(&self.pool)
                .await
                .map_err(db_err(OP))?;
        let rows = sqlx::query_as::<_, (String, String)>(
            "SELECT agent_id, baseline FROM agent_baselines WHERE updated_at >= $1 \
             ORDER BY agent_id",
        )
        .bind(since.unwrap_or(Millis::MIN))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err(OP))?;
        Ok((rows, now - BASELINE_READ_MARGIN_MS))
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
        const OP: &str = "add agent key";
        let mut tx = self.begin(OP).await?;
        insert_agent_key(&mut tx, key).await.map_err(db_err(OP))?;
        notify(&mut tx, &Change::AgentKeys, OP).await?;
        tx.commit().await.map_err(db_err(OP))
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
        const OP: &str = "revoke agent key";
        let mut tx = self.begin(OP).await?;
        let done = sqlx::query(
            "UPDATE agent_keys SET revoked_at = $1 WHERE key_hash = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(key_hash)
        .execute(&mut *tx)
        .await
        .map_err(db_err(OP))?;
        notify(&mut tx, &Change::AgentKeys, OP).await?;
        tx.commit().await.map_err(db_err(OP))?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_captured(
        &self,
        c: &CapturedSecret,
        aws_key: Option<&AgentKey>,
    ) -> Result<(), StoreError> {
        const OP: &str = "record captured secret";
        let mut tx = self.begin(OP).await?;
        let shared = serde_json::to_string(&c.shared_with).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO captured_secrets (handle_hash, identity_id, tool, agent_id, \
             shared_with, field, shape, key_id, nonce, sealed, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
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
        .map_err(db_err(OP))?;
        if let Some(key) = aws_key {
            insert_agent_key(&mut tx, key).await.map_err(db_err(OP))?;
            notify(&mut tx, &Change::AgentKeys, OP).await?;
        }
        notify(&mut tx, &Change::Captured, OP).await?;
        tx.commit().await.map_err(db_err(OP))
    }

    async fn captured(&self) -> Result<Vec<CapturedSecret>, StoreError> {
        let rows = sqlx::query_as::<_, CapturedRow>(
            "SELECT handle_hash, identity_id, tool, agent_id, shared_with, field, shape, \
             key_id, nonce, sealed, created_at FROM captured_secrets \
             ORDER BY created_at, handle_hash",
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
        const OP: &str = "revoke identity";
        let mut tx = self.begin(OP).await?;
        let revoked_at: Option<Option<Millis>> =
            sqlx::query_scalar("SELECT revoked_at FROM inventory WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err(OP))?;
        let Some(revoked_at) = revoked_at else {
            return Err(StoreError::NotFound);
        };
        let mut handles: Vec<String> = sqlx::query_scalar(
            "DELETE FROM captured_secrets WHERE identity_id = $1 RETURNING handle_hash",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err(OP))?;
        let keys: Vec<String> = sqlx::query_scalar(
            "UPDATE agent_keys SET revoked_at = $1 WHERE created_by = $2 AND revoked_at IS NULL \
             RETURNING key_hash",
        )
        .bind(now)
        .bind(format!("capture:{id}"))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err(OP))?;
        if revoked_at.is_none() {
            sqlx::query("UPDATE inventory SET revoked_at = $1, revoked_by = $2 WHERE id = $3")
                .bind(now)
                .bind(by)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_err(OP))?;
        }
        notify(&mut tx, &Change::Captured, OP).await?;
        notify(&mut tx, &Change::AgentKeys, OP).await?;
        tx.commit().await.map_err(db_err(OP))?;
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
        let mut tx = self.pool.begin().await.map_err(db_err(op))?;
        let state: Option<(Option<Millis>, Option<Millis>)> = sqlx::query_as(
            "SELECT revoked_at, deactivated_at FROM inventory WHERE id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err(op))?;
        renewable(state, review_by, now)?;
        sqlx::query(
            "UPDATE inventory SET review_by = $1, notified_at = NULL, retire_attempts = 0, \
             retire_error = NULL WHERE id = $2",
        )
        .bind(review_by)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err(op))?;
        let row = sqlx::query_as::<_, InventoryRow>(&format!(
            "SELECT {INVENTORY_COLUMNS}, (SELECT COUNT(*) FROM captured_secrets c \
             WHERE c.identity_id = inventory.id) AS captured FROM inventory WHERE id = $1"
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
                sqlx::query("UPDATE inventory SET notified_at = $1 WHERE id = $2").bind(*at)
            }
            RetireStep::Deactivated(at) => sqlx::query(
                "UPDATE inventory SET deactivated_at = $1, retire_attempts = 0, \
                 retire_error = NULL WHERE id = $2",
            )
            .bind(*at),
            RetireStep::Failed(why) => sqlx::query(
                "UPDATE inventory SET retire_attempts = retire_attempts + 1, retire_error = $1 \
                 WHERE id = $2",
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
            "UPDATE inventory SET notified_at = -$1 WHERE id = $2 AND revoked_at IS NULL \
             AND (notified_at IS NULL OR (notified_at < 0 AND -notified_at <= $3))",
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
        sqlx::query("UPDATE inventory SET notified_at = NULL WHERE id = $1 AND notified_at = -$2")
            .bind(id)
            .bind(claimed_at)
            .execute(&self.pool)
            .await
            .map_err(db_err("release a notice"))?;
        Ok(())
    }

    async fn share_captured(&self, identity_id: &str, agent: &str) -> Result<u64, StoreError> {
        const OP: &str = "share captured secret";
        let mut tx = self.begin(OP).await?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT handle_hash, shared_with FROM captured_secrets WHERE identity_id = $1 \
             FOR UPDATE",
        )
        .bind(identity_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err(OP))?;
        for (hash, shared) in &rows {
            let mut list: Vec<String> = serde_json::from_str(shared).unwrap_or_default();
            if !list.iter().any(|a| a == agent) {
                list.push(agent.to_string());
            }
            sqlx::query("UPDATE captured_secrets SET shared_with = $1 WHERE handle_hash = $2")
                .bind(serde_json::to_string(&list).unwrap_or_else(|_| "[]".into()))
                .bind(hash)
                .execute(&mut *tx)
                .await
                .map_err(db_err(OP))?;
        }
        notify(&mut tx, &Change::Captured, OP).await?;
        tx.commit().await.map_err(db_err(OP))?;
        Ok(rows.len() as u64)
    }

    async fn reseal(&self, handle_hash: &str, sealed: &Sealed) -> Result<(), StoreError> {
        const OP: &str = "reseal captured secret";
        let mut tx = self.begin(OP).await?;
        sqlx::query(
            "UPDATE captured_secrets SET key_id = $1, nonce = $2, sealed = $3 \
             WHERE handle_hash = $4",
        )
        .bind(&sealed.key_id)
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .bind(handle_hash)
        .execute(&mut *tx)
        .await
        .map_err(db_err(OP))?;
        notify(&mut tx, &Change::Captured, OP).await?;
        tx.commit().await.map_err(db_err(OP))
    }

    async fn open_task(&self, task: &Task) -> Result<(), StoreError> {
        const OP: &str = "open task";
        let mut tx = self.begin(OP).await?;
        let done = sqlx::query(&format!(
            "INSERT INTO tasks ({TASK_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING"
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
        .execute(&mut *tx)
        .await
        .map_err(db_err(OP))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("task {} exists", task.id)));
        }
        notify(&mut tx, &Change::Tasks, OP).await?;
        tx.commit().await.map_err(db_err(OP))
    }

    async fn end_task(&self, id: &str, by: &str, now: Millis) -> Result<(Task, bool), StoreError> {
        const OP: &str = "end task";
        let mut tx = self.begin(OP).await?;
        let done = sqlx::query(
            "UPDATE tasks SET ended_at = $1, ended_by = $2 WHERE id = $3 AND ended_at IS NULL",
        )
        .bind(now)
        .bind(by)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err(OP))?;
        let row = sqlx::query_as::<_, TaskRow>(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err(OP))?;
        let Some(row) = row else {
            return Err(StoreError::NotFound);
        };
        if done.rows_affected() > 0 {
            notify(&mut tx, &Change::Tasks, OP).await?;
        }
        tx.commit().await.map_err(db_err(OP))?;
        Ok((Task::from(row), done.rows_affected() > 0))
    }

    async fn tasks(&self, since: Millis) -> Result<Vec<Task>, StoreError> {
        let rows = sqlx::query_as::<_, TaskRow>(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE expires_at > $1 ORDER BY opened_at, id"
        ))
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("list tasks"))?;
        Ok(rows.into_iter().map(Task::from).collect())
    }
}

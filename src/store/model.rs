//! What the store keeps (approvals, inventory entries, suspensions) and the [`Store`]
//! trait every backend implements.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Unix time in milliseconds.
pub type Millis = i64;

/// Where an approval is in its life: `Pending` → `Approved` → `Used`, or `Pending` →
/// `Denied`, or `Pending`/`Approved` → `Expired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Denied,
    Used,
    Expired,
}

impl ApprovalStatus {
    /// The lowercase name, as stored and serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Used => "used",
            ApprovalStatus::Expired => "expired",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<ApprovalStatus> {
        match s {
            "pending" => Some(ApprovalStatus::Pending),
            "approved" => Some(ApprovalStatus::Approved),
            "denied" => Some(ApprovalStatus::Denied),
            "used" => Some(ApprovalStatus::Used),
            "expired" => Some(ApprovalStatus::Expired),
            _ => None,
        }
    }
}

impl fmt::Display for ApprovalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request for approval, as the gateway records it.
#[derive(Debug, Clone)]
pub struct NewApproval {
    pub agent_id: String,
    pub agent_owner: String,
    pub tool: String,
    pub operation: String,
    pub identity_kind: Option<String>,
    /// Hex SHA-256 of the canonical request; an approval is bound to it.
    pub digest: String,
    pub method: String,
    pub path: String,
    /// Deciding policy ids, for the approver to see.
    pub policies: Vec<String>,
    /// What the approver decides on: the whole request as it will be forwarded (request
    /// line, the headers the approval covers, body; after strip, so without the agent's
    /// credentials), never shortened, secret fields redacted (pipeline::approve::summary).
    pub request: Option<String>,
    /// How many different humans must approve (1 or 2).
    pub approvers_needed: u8,
    /// When an undecided request expires.
    pub pending_expires_at: Millis,
}

/// An approval record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Approval {
    pub id: String,
    pub status: ApprovalStatus,
    pub agent_id: String,
    pub agent_owner: String,
    pub tool: String,
    pub operation: String,
    pub identity_kind: Option<String>,
    pub digest: String,
    pub method: String,
    pub path: String,
    pub policies: Vec<String>,
    /// The whole request as forwarded, secret fields redacted (see [`NewApproval::request`]).
    pub request: Option<String>,
    /// How many different humans must approve (1 or 2).
    pub approvers_needed: u8,
    /// With two needed: who approved first (the approval stays pending until a second,
    /// different approver approves).
    pub first_approver: Option<String>,
    pub created_at: Millis,
    pub pending_expires_at: Millis,
    pub decided_at: Option<Millis>,
    pub approver: Option<String>,
    pub ticket: Option<String>,
    /// The human who will own the identity created.
    pub identity_owner: Option<String>,
    pub note: Option<String>,
    /// Until when an approved request may be used (once).
    pub approval_expires_at: Option<Millis>,
    pub review_by: Option<Millis>,
    pub used_at: Option<Millis>,
}

/// A human's decision to approve.
#[derive(Debug, Clone)]
pub struct Approve {
    pub approver: String,
    pub ticket: Option<String>,
    pub identity_owner: String,
    pub note: Option<String>,
    /// Until when the approved request may be used; must be later than `now`.
    pub expires_at: Millis,
    pub review_by: Option<Millis>,
}

/// An identity created through keygate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InventoryEntry {
    pub id: String,
    pub kind: String,
    pub tool: String,
    pub operation: String,
    /// Parsed from the tool's response (e.g. the AWS AccessKeyId), never a secret; may be None.
    pub identifier: Option<String>,
    pub agent_id: String,
    pub approver: Option<String>,
    pub owner: String,
    pub ticket: Option<String>,
    pub approval_id: Option<String>,
    pub request_id: String,
    pub created_at: Millis,
    pub review_by: Option<Millis>,
    /// When it was revoked in keygate (its captured secrets deleted, its handles dead).
    pub revoked_at: Option<Millis>,
    pub revoked_by: Option<String>,
    /// How many captured secrets keygate holds for it.
    pub captured: u32,
    /// When its owner was told its review date is near (retirement). `None` too while a
    /// replica holds the claim to tell them ([`Store::claim_notice`]).
    pub notified_at: Option<Millis>,
    /// When retirement deactivated it at the tool (it is deleted after the grace).
    pub deactivated_at: Option<Millis>,
    /// Retirement steps that failed since the last one that succeeded.
    pub retire_attempts: u32,
    /// The last retirement failure (never a secret).
    pub retire_error: Option<String>,
}

/// A step of an inventory record's retirement at its review date, as the store records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetireStep {
    /// Its owner was notified (at).
    Notified(Millis),
    /// It was deactivated at the tool (at); clears the failures.
    Deactivated(Millis),
    /// A step failed: one more attempt, and why.
    Failed(String),
}

/// A secret an identity-creation call returned, sealed, and the handle that stands for it
/// (only the handle's SHA-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedSecret {
    /// SHA-256 (hex) of the handle: a `kgh_` token, or the key id of an AWS handle pair.
    pub handle_hash: String,
    /// The inventory record of the identity the secret belongs to.
    pub identity_id: String,
    /// The tool that created it (the only one its handle works for).
    pub tool: String,
    /// The agent that created it.
    pub agent_id: String,
    /// Other agents its owner lets use the handle.
    pub shared_with: Vec<String>,
    /// Where the answer carried it (a JSON Pointer or an XML element name).
    pub field: String,
    pub shape: Shape,
    pub sealed: Sealed,
    pub created_at: Millis,
}

/// The shape of the handle that replaces a captured secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A `kgh_…` token.
    Token,
    /// An AWS secret access key: replaced, with its access key id, by a key pair keygate
    /// issues (the agent's SDK signs with it).
    AwsSecretKey,
}

impl Shape {
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Token => "token",
            Shape::AwsSecretKey => "aws_key",
        }
    }

    pub fn parse(s: &str) -> Option<Shape> {
        match s {
            "token" => Some(Shape::Token),
            "aws_key" => Some(Shape::AwsSecretKey),
            _ => None,
        }
    }
}

/// A secret as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// What revoking an inventory record did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revoked {
    /// The fingerprints of the handles (and AWS handle keys) now dead.
    pub handles: Vec<String>,
    /// Whether it was already revoked.
    pub already: bool,
}

/// An identity to record in the inventory: an [`InventoryEntry`] without its id.
#[derive(Debug, Clone)]
pub struct NewIdentity {
    pub kind: String,
    pub tool: String,
    pub operation: String,
    /// Parsed from the tool's response (e.g. the AWS AccessKeyId), never a secret; may be None.
    pub identifier: Option<String>,
    pub agent_id: String,
    pub approver: Option<String>,
    pub owner: String,
    pub ticket: Option<String>,
    /// Must name an approval in this store when set.
    pub approval_id: Option<String>,
    pub request_id: String,
    pub created_at: Millis,
    pub review_by: Option<Millis>,
}

/// A suspended agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Suspension {
    pub agent_id: String,
    pub by: String,
    pub reason: Option<String>,
    pub at: Millis,
}

/// A task: an agent's just-in-time access for one purpose, until it ends or expires. Calls
/// that name it (`Keygate-Task`) get credentials issued for it alone, and are refused once
/// it ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Task {
    pub id: String,
    pub agent_id: String,
    pub purpose: String,
    pub ticket: Option<String>,
    /// The tools its calls may reach (empty: whichever the policies allow).
    pub tools: Vec<String>,
    /// The operations its calls may do, by name or tag (empty: whichever the policies
    /// allow).
    pub operations: Vec<String>,
    /// Who opened it: `agent` (the agent itself) or the admin who did.
    pub opened_by: String,
    pub opened_at: Millis,
    pub expires_at: Millis,
    pub ended_at: Option<Millis>,
    /// Who ended it (`agent`, an admin, or `expiry`).
    pub ended_by: Option<String>,
}

impl Task {
    /// Whether calls may still use it at `now`.
    pub fn is_open(&self, now: Millis) -> bool {
        self.ended_at.is_none() && now < self.expires_at
    }

    /// When it stopped being usable (ended, or expired), if it did by `now`.
    pub fn closed_at(&self, now: Millis) -> Option<Millis> {
        match self.ended_at {
            Some(t) => Some(t.min(self.expires_at)),
            None => (now >= self.expires_at).then_some(self.expires_at),
        }
    }
}

/// An AWS-style key pair keygate issued to an agent: only the SHA-256 of its id is stored
/// (hex; also the key's fingerprint in listings). The secret is derived from the id and a
/// key outside the store (see `pipeline::identify::aws_key`), so the store file holds
/// nothing an agent could present or sign with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AgentKey {
    pub key_hash: String,
    pub agent_id: String,
    pub created_by: String,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

/// Approvals counted by status (a `GROUP BY`, never the rows), for `/metrics`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApprovalCounts {
    /// Pending and not past their pending expiry.
    pub pending: u64,
    /// Every status present in the store, with its count (pending as stored), by status.
    pub by_status: Vec<(String, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A new pending approval would exceed the agent's cap; nothing was stored.
    #[error("the agent already has {0} pending approvals")]
    TooManyPending(u32),
    /// The store could not be reached or failed; the message never contains request data.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("no such approval")]
    NotFound,
    /// The operation does not apply in the record's current state,
    /// e.g. "approval is denied, not pending".
    #[error("{0}")]
    Conflict(String),
}

/// Where the store is and how replicas keep their view of it fresh.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub backend: Backend,
    /// How often a replica re-reads suspensions, keys and captured secrets.
    pub sync_interval: Duration,
    /// How often a replica shares its counts of `shared` rate limits.
    pub share_interval: Duration,
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

/// A change to shared state, made by this or another process on the same store, that a
/// replica must apply to what it holds in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An agent was suspended or resumed.
    Suspensions,
    /// An approval was approved or denied (held requests wake).
    Decision(String),
    /// Agent keys were added or revoked.
    AgentKeys,
    /// Captured secrets were added, shared, revoked or re-sealed.
    Captured,
    /// A task was opened or ended.
    Tasks,
    /// A replica reloaded its configuration and policies (named: it ignores its own).
    Reload { from: String },
    /// The changes may have been missed (the listening connection was lost): re-read
    /// everything.
    Resync,
}

impl Change {
    /// The NOTIFY payload.
    pub fn encode(&self) -> String {
        match self {
            Change::Suspensions => "suspensions".into(),
            Change::Decision(id) => format!("decision {id}"),
            Change::AgentKeys => "agent_keys".into(),
            Change::Captured => "captured".into(),
            Change::Tasks => "tasks".into(),
            Change::Reload { from } => format!("reload {from}"),
            Change::Resync => "resync".into(),
        }
    }

    /// A NOTIFY payload; one this build does not know asks for a full re-read.
    pub fn decode(s: &str) -> Change {
        match s.split_once(' ') {
            Some(("decision", id)) => Change::Decision(id.to_string()),
            Some(("reload", from)) => Change::Reload {
                from: from.to_string(),
            },
            _ => match s {
                "suspensions" => Change::Suspensions,
                "agent_keys" => Change::AgentKeys,
                "captured" => Change::Captured,
                "tasks" => Change::Tasks,
                _ => Change::Resync,
            },
        }
    }
}

/// One replica's count of calls a `shared` rate limit admitted for one key in one window
/// (or, read back, every other replica's together).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitCount {
    /// The rule's fingerprint ([`crate::config::RateLimitRule::fingerprint`]).
    pub rule: String,
    /// Whose allowance: the agent, the tool, or both.
    pub key: String,
    pub window_start: Millis,
    pub window_end: Millis,
    pub count: i64,
}

/// What the other replicas admitted in windows still open, and how many replicas shared
/// their counts recently (this one included).
#[derive(Debug, Clone, Default)]
pub struct SharedCounts {
    pub others: Vec<LimitCount>,
    pub replicas: u32,
}

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Changes made by any process on this store, pushed as they commit. `None`: this
    /// store pushes nothing (SQLite: one process, and the periodic re-read covers direct
    /// edits).
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }

    /// Tells every replica of a change that is not a store write (a reload); false when
    /// there is no other replica to tell (SQLite).
    async fn announce(&self, _change: Change) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// Shares this replica's counts of `shared` rate limits (`mine`: each the absolute
    /// count of its window so far; a stored count never goes down) and reads the other
    /// replicas' for windows that end after `now`, in one round trip, with the replicas
    /// that shared within `alive`. Forgets windows that ended long ago. SQLite: one
    /// replica, nothing to share (the rules are per replica, and `shared` is refused).
    async fn share_limit_counts(
        &self,
        _replica: &str,
        _mine: &[LimitCount],
        _now: Millis,
        _alive: std::time::Duration,
    ) -> Result<SharedCounts, StoreError> {
        Ok(SharedCounts {
            others: Vec::new(),
            replicas: 1,
        })
    }

    /// The active approval (pending, or approved and unexpired and unused) for this agent,
    /// operation and digest, or a new pending one. Atomic: however many concurrent callers,
    /// one active approval per (agent, operation, digest). Returns (approval, created_now).
    /// Pending approvals past `pending_expires_at` and approved ones past
    /// `approval_expires_at` are expired first (status Expired), so they are never returned
    /// as active. A new approval is not created when the agent already has `max_pending`
    /// unexpired pending approvals ([`StoreError::TooManyPending`], nothing stored); an
    /// existing active one is still returned.
    async fn open_approval(
        &self,
        new: NewApproval,
        now: Millis,
        max_pending: u32,
    ) -> Result<(Approval, bool), StoreError>;

    /// Approvals counted by status, with the unexpired pending ones: one `GROUP BY`
    /// query, whatever the number of rows.
    async fn approval_counts(&self, now: Millis) -> Result<ApprovalCounts, StoreError>;

    async fn approval(&self, id: &str) -> Result<Option<Approval>, StoreError>;

    /// Newest first; `status` filters.
    async fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        limit: u32,
    ) -> Result<Vec<Approval>, StoreError>;

    /// pending → approved. NotFound if there is no such approval; Conflict if it is not
    /// pending, if it is pending but past `pending_expires_at` (it is then marked expired),
    /// or if `decision.expires_at` is not later than `now`.
    async fn approve(
        &self,
        id: &str,
        decision: Approve,
        now: Millis,
    ) -> Result<Approval, StoreError>;

    /// pending → denied; same errors as [`Store::approve`].
    async fn deny(
        &self,
        id: &str,
        approver: &str,
        note: Option<&str>,
        now: Millis,
    ) -> Result<Approval, StoreError>;

    /// approved → used, atomically, only if the digest matches and it has not expired.
    /// Exactly one of any number of concurrent callers gets `Ok(Some(approval))`; the rest
    /// `Ok(None)`.
    async fn consume(
        &self,
        id: &str,
        digest: &str,
        now: Millis,
    ) -> Result<Option<Approval>, StoreError>;

    /// Marks every pending approval past `pending_expires_at` and every approved one past
    /// `approval_expires_at` as expired; returns how many. For a periodic sweep, so that
    /// listings show the true status.
    async fn expire(&self, now: Millis) -> Result<u64, StoreError>;
    /// The newest approval for this agent, operation and digest that a human denied after
    /// `since`: a denial stands for the request it was about.
    async fn denied_since(
        &self,
        agent_id: &str,
        operation: &str,
        digest: &str,
        since: Millis,
    ) -> Result<Option<Approval>, StoreError>;

    async fn record_identity(&self, new: NewIdentity) -> Result<InventoryEntry, StoreError>;

    /// Newest first.
    async fn inventory(&self) -> Result<Vec<InventoryEntry>, StoreError>;

    /// Suspends an agent; suspending a suspended agent replaces who, why and when.
    async fn suspend(
        &self,
        agent_id: &str,
        by: &str,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Lifts a suspension; false if the agent was not suspended.
    async fn resume(&self, agent_id: &str) -> Result<bool, StoreError>;

    /// Newest first.
    async fn suspensions(&self) -> Result<Vec<Suspension>, StoreError>;

    /// Writes agents' baselines (agent id, JSON document), replacing what was stored.
    async fn save_baselines(
        &self,
        rows: &[(String, String)],
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Every stored baseline (agent id, JSON document).
    async fn baselines(&self) -> Result<Vec<(String, String)>, StoreError>;

    /// The baselines written since `since` (a cursor this method returned; `None`: all),
    /// by any replica, and the cursor to ask with next time. A baseline may be returned
    /// again; none written after `since` is missed.
    async fn baselines_changed(
        &self,
        since: Option<Millis>,
    ) -> Result<(Vec<(String, String)>, Millis), StoreError>;

    /// Records a key issued to an agent (its id only).
    async fn add_agent_key(&self, key: &AgentKey) -> Result<(), StoreError>;

    /// Every agent key, revoked ones included, oldest first.
    async fn agent_keys(&self) -> Result<Vec<AgentKey>, StoreError>;

    /// Revokes a key (by its hash); false if there is no such key or it was revoked
    /// already.
    async fn revoke_agent_key(&self, key_hash: &str, now: Millis) -> Result<bool, StoreError>;

    /// Stores a captured secret, and with an AWS handle its key (in one transaction).
    async fn record_captured(
        &self,
        c: &CapturedSecret,
        aws_key: Option<&AgentKey>,
    ) -> Result<(), StoreError>;

    /// Every captured secret still held.
    async fn captured(&self) -> Result<Vec<CapturedSecret>, StoreError>;

    /// Revokes an inventory record: its captured secrets are deleted and its AWS handle
    /// keys revoked, in one transaction. [`StoreError::NotFound`] when there is no such
    /// record.
    async fn revoke_identity(&self, id: &str, by: &str, now: Millis)
        -> Result<Revoked, StoreError>;

    /// Moves an inventory record's review date to `review_by` (later than `now`), forgets
    /// that its owner was notified and its retirement failures. [`StoreError::NotFound`]
    /// when there is no such record; [`StoreError::Conflict`] when it is revoked or
    /// deactivated, or `review_by` is not after `now`.
    async fn renew_identity(
        &self,
        id: &str,
        review_by: Millis,
        now: Millis,
    ) -> Result<InventoryEntry, StoreError>;

    /// Records a step of a record's retirement. [`StoreError::NotFound`] when there is no
    /// such record.
    async fn retire_step(&self, id: &str, step: &RetireStep) -> Result<(), StoreError>;

    /// Claims the notice of a record's review date for this replica, atomically: true for
    /// exactly one of any number of concurrent callers, when the record is not revoked,
    /// its owner was not notified, and no claim younger than `lease` is held. The claim
    /// is kept in `notified_at` as the negated claim time (read as not notified), so no
    /// schema change; [`RetireStep::Notified`] replaces it once the notice is delivered,
    /// [`Store::release_notice`] drops it when it was not.
    async fn claim_notice(&self, id: &str, now: Millis, lease: Millis) -> Result<bool, StoreError>;

    /// Drops the claim made at `claimed_at` (the notice was not delivered), unless another
    /// replica took it over since.
    async fn release_notice(&self, id: &str, claimed_at: Millis) -> Result<(), StoreError>;

    /// Lets `agent` use the handles of an inventory record; the number of secrets it now
    /// may use.
    async fn share_captured(&self, identity_id: &str, agent: &str) -> Result<u64, StoreError>;

    /// Replaces a captured secret's sealed form (re-sealed under another key).
    async fn reseal(&self, handle_hash: &str, sealed: &Sealed) -> Result<(), StoreError>;

    /// Records a new task ([`StoreError::Conflict`] when its id exists).
    async fn open_task(&self, task: &Task) -> Result<(), StoreError>;

    /// Ends a task that is still open (not ended; an expired one is ended too, so that
    /// who and when are recorded): the task as it is now, and whether this call ended it.
    /// [`StoreError::NotFound`] when there is no such task.
    async fn end_task(&self, id: &str, by: &str, now: Millis) -> Result<(Task, bool), StoreError>;

    /// Tasks that expire after `since` (open ones, and those ended or expired recently
    /// enough to be told apart from unknown ids), oldest first.
    async fn tasks(&self, since: Millis) -> Result<Vec<Task>, StoreError>;
}

/// A fresh task id (`task_` and 20 hex digits).
pub fn new_task_id() -> String {
    new_id("task_")
}

/// A fresh random id: `prefix` followed by 20 lowercase hex characters (80 random bits).
pub(crate) fn new_id(prefix: &str) -> String {
    let simple = uuid::Uuid::new_v4().simple().to_string();
    // Drop the version nibble (index 12) and the variant nibble (index 16): they are fixed.
    let random: String = simple
        .char_indices()
        .filter(|(i, _)| *i != 12 && *i != 16)
        .map(|(_, c)| c)
        .take(20)
        .collect();
    format!("{prefix}{random}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_documented_shape() {
        let a = new_id("apr_");
        assert_eq!(a.len(), 24);
        assert!(a.starts_with("apr_"));
        assert!(a[4..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(new_id("apr_"), new_id("apr_"));
    }

    #[test]
    fn changes_round_trip_and_unknown_ones_ask_for_a_full_read() {
        for c in [
            Change::Suspensions,
            Change::Decision("apr_0123".into()),
            Change::AgentKeys,
            Change::Captured,
            Change::Tasks,
            Change::Reload {
                from: "kg-1".into(),
            },
            Change::Resync,
        ] {
            assert_eq!(Change::decode(&c.encode()), c);
        }
        for unknown in ["", "tasks later", "suspensions now", "decision"] {
            assert_eq!(Change::decode(unknown), Change::Resync, "{unknown:?}");
        }
    }

    #[test]
    fn status_names_round_trip() {
        for s in [
            ApprovalStatus::Pending,
            ApprovalStatus::Approved,
            ApprovalStatus::Denied,
            ApprovalStatus::Used,
            ApprovalStatus::Expired,
        ] {
            assert_eq!(ApprovalStatus::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert_eq!(ApprovalStatus::parse("Pending"), None);
    }
}

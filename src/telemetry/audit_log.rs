//! The audit log writer: one JSON line per request, appended to a file or stdout by a
//! dedicated thread, in batches, so the request path never touches nor waits on the disk.
//! The thread wakes a few hundred times a second at most under load (it lingers between
//! batches instead of being woken per record). When it falls [`QUEUE_CAPACITY`] records
//! behind, new requests wait for it ([`AuditLog::admit`]) and
//! `keygate_audit_backpressure_waits_total` counts them.
//!
//! Lossless: records are queued, never dropped; [`AuditLog::close`] writes out every queued
//! record and flushes before it returns (graceful shutdown calls it last).
//!
//! Write failures (disk full, file gone read-only, I/O error): the bytes that could not be
//! written are kept, already chained, and the writer retries them every [`RETRY`] (and at
//! once when a flush is asked for) until the write succeeds; it chains no new record until
//! they are written, so new records wait in the queue (and past [`QUEUE_CAPACITY`], new
//! requests wait in [`AuditLog::admit`]). Nothing is dropped from the chain and nothing is
//! written out of order: once the disk has room again the file holds every record, the
//! chain intact, as if the write had never failed. While a write is failing,
//! [`AuditLog::is_writing`] is false (the pipeline refuses new requests with
//! `audit_unavailable` when `audit.fail_closed` is on, `/readyz` is not ready) and
//! `keygate_audit_write_failures_total` counts each failed attempt; it turns true again
//! with the first write that succeeds. A process that ends while the write still fails
//! loses the unwritten records (it says how many): a restart then finds the file's last
//! line cut short, or intact, and continues or restarts the chain as described below.
//!
//! Tamper-evident: the writer task (never the request path) chains every record to the one
//! before with `seq`, `prev` and `hash` (see [`super::audit_chain`]). On start it continues
//! the chain from the last line of the existing file. When that line is not an intact
//! chained record (a crash cut it short, it was edited, or an older keygate wrote the
//! file), keygate logs a warning, ends the broken line, and starts a new chain (seq 1)
//! with an `"event":"audit_chain_restart"` record saying why; `keygate audit verify`
//! reports the broken line. File targets rotate by size or age: the file is renamed to
//! `<path>.<UTC time>-<first seq>` and the chain continues in a new file.

use super::audit_chain::{Chain, Tail};
use crate::config::{AuditFile, AuditTarget};
use crate::locks::lock;
use serde::Serialize;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::oneshot;

/// One audit record: every field an auditor needs about one tool call, and never a secret.
#[derive(Debug, Serialize)]
pub struct AuditRecord {
    /// When the request arrived, RFC 3339 UTC.
    pub time: String,
    pub request_id: std::sync::Arc<str>,
    pub agent_id: Option<std::sync::Arc<str>>,
    pub agent_owner: Option<std::sync::Arc<str>>,
    /// How the agent proved its identity: "jwt", "mtls" or "jwt+mtls".
    pub identity: Option<&'static str>,
    pub issuer: Option<std::sync::Arc<str>>,
    pub spiffe_id: Option<String>,
    pub client: std::sync::Arc<str>,
    pub tool: Option<std::sync::Arc<str>>,
    /// The operation (Cedar action) and its tags.
    pub operation: Option<std::sync::Arc<str>>,
    pub tags: Vec<std::sync::Arc<str>>,
    /// For identity creation: the kind of identity.
    pub identity_kind: Option<std::sync::Arc<str>>,
    /// Ids of the policies that decided.
    pub policies: Vec<String>,
    /// Ids of the policies whose evaluation failed (a failed forbid denies, and is in
    /// `policies` too; a failed permit permits nothing). Absent when none did.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policy_errors: Vec<String>,
    pub approval_id: Option<String>,
    /// The inventory record of an identity this request created.
    pub inventory_id: Option<String>,
    /// MCP: session id and, per JSON-RPC message, method, id, tool and a digest of the
    /// arguments (never their values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp: Option<super::record::McpRecord>,
    pub method: String,
    pub path: String,
    /// "allow", "deny", "error" or "local".
    pub decision: &'static str,
    /// The error code, when keygate refused or failed the request.
    pub error: Option<&'static str>,
    pub error_detail: Option<String>,
    pub status: u16,
    pub duration_ms: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// False when the response body was cut short (client gone, upstream failed).
    pub completed: bool,
    /// The agent's connection went away before keygate had the tool's answer (the call
    /// ran to its end all the same).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub client_gone: bool,
    pub credential_provider: Option<&'static str>,
    pub credential_id: Option<std::sync::Arc<str>>,
    /// AWS: the role whose session signed the call (absent: keygate's base key, or not AWS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_role: Option<std::sync::Arc<str>>,
    /// When the credential expires (Unix seconds), for providers whose credentials do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_expires: Option<u64>,
    /// Whether the provider's cache served the credential (false: issued for this call).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_cached: Option<bool>,
    /// What the credential was issued for: an OAuth2 token's scope, a GitHub token's
    /// repository and permissions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_scope: Option<std::sync::Arc<str>>,
    /// Names of what strip removed or redacted.
    pub stripped: Vec<std::borrow::Cow<'static, str>>,
    /// The inventory record whose captured secret this call used (by its handle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    /// The task the call was made in (`Keygate-Task`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// How many secrets the tool's answer carried that keygate captured (the agent got
    /// handles).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub captured: Option<usize>,
    /// Known secret formats found in the tool's response: format, where, how many, and
    /// what was done (never a value).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub response_secrets: Vec<ResponseSecret>,
    /// An administrator's action on a captured secret (`reveal`, `revoke`, `share`, `rekey`):
    /// who, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminAction>,
    /// An anomaly a detector found in the agent's calls: what it saw, against what the
    /// agent normally does, and what keygate did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<AnomalyEvent>,
}

/// An anomaly recorded in the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct AnomalyEvent {
    pub detector: &'static str,
    /// `record`, `notify`, `require_approval` or `suspend`.
    pub action: &'static str,
    pub observed: String,
    pub baseline: String,
}

impl AuditRecord {
    /// A record of something keygate did itself (an administrator's action, an anomaly a
    /// detector found) rather than a call it forwarded: nothing forwarded, nothing
    /// stripped or issued; the caller sets what it was about.
    pub fn event(
        time: String,
        request_id: std::sync::Arc<str>,
        client: std::sync::Arc<str>,
        operation: String,
        method: String,
        path: String,
        status: u16,
    ) -> AuditRecord {
        AuditRecord {
            time,
            request_id,
            agent_id: None,
            agent_owner: None,
            identity: None,
            issuer: None,
            spiffe_id: None,
            client,
            tool: None,
            operation: Some(operation.into()),
            tags: Vec::new(),
            identity_kind: None,
            policies: Vec::new(),
            policy_errors: Vec::new(),
            approval_id: None,
            inventory_id: None,
            mcp: None,
            method,
            path,
            decision: "local",
            error: None,
            error_detail: None,
            status,
            duration_ms: 0.0,
            bytes_in: 0,
            bytes_out: 0,
            completed: true,
            client_gone: false,
            credential_provider: None,
            credential_id: None,
            credential_role: None,
            credential_expires: None,
            credential_cached: None,
            credential_scope: None,
            stripped: Vec::new(),
            handle: None,
            task: None,
            captured: None,
            response_secrets: Vec::new(),
            admin: None,
            anomaly: None,
        }
    }
}

/// An administrator's action recorded in the audit log.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AdminAction {
    pub action: &'static str,
    pub by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Where the decision was made: `api`, `cli` or `slack`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<&'static str>,
    /// Who made it there, beyond `by`: the Slack user; for the API and the CLI, that the
    /// admin token was used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// Secret formats found in a response, one entry per format and place.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResponseSecret {
    pub format: &'static str,
    /// `body`, `header:<name>`, `trailer:<name>` or `reason`.
    pub location: String,
    pub count: u64,
    /// `redacted`, `blocked` or `passed`.
    pub action: &'static str,
}

/// Records queued at most before new requests wait for the writer (see [`AuditLog::admit`]).
pub const QUEUE_CAPACITY: usize = 65_536;

/// How long the writer gathers records after a write before it writes again: bounds its
/// wake-ups (and so its context switches on a busy core) to a few hundred per second.
const LINGER: Duration = Duration::from_millis(5);

/// How often the writer retries a write that failed.
pub const RETRY: Duration = Duration::from_millis(250);

/// What the request path and the writer thread share.
struct Shared {
    state: Mutex<Queue>,
    /// The writer waits here when it has nothing to write.
    wake: Condvar,
    /// Records queued and not yet written, read without the lock by [`AuditLog::admit`].
    depth: AtomicUsize,
    /// Notified after every write, for requests waiting in [`AuditLog::admit`].
    drained: tokio::sync::Notify,
    /// Requests that had to wait because the queue was full.
    waits: AtomicU64,
    /// Set when the writer thread has ended.
    stopped: AtomicBool,
    /// Set while the last write failed (until a write succeeds again).
    failing: AtomicBool,
    /// Write attempts that failed.
    write_failures: AtomicU64,
}

#[derive(Default)]
struct Queue {
    records: Vec<AuditRecord>,
    flushes: Vec<oneshot::Sender<()>>,
    /// The writer is waiting on `wake` (only then does a new record notify it).
    idle: bool,
    /// Every handle is gone: the writer writes what is queued and ends.
    closed: bool,
}

/// Handle to the audit writer: a dedicated thread that chains, serializes and appends
/// records in batches, so the request path never touches the disk nor waits on it.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
    _handles: Arc<Handles>,
}

/// Dropped with the last [`AuditLog`] handle: tells the writer to finish and end.
struct Handles(Arc<Shared>);

impl Drop for Handles {
    fn drop(&mut self) {
        lock(&self.0.state).closed = true;
        self.0.wake.notify_one();
    }
}

impl AuditLog {
    /// Opens the target (appending; a file's chain continues from its last record) and
    /// starts the writer thread.
    pub async fn open(target: &AuditTarget) -> Result<AuditLog, String> {
        AuditLog::open_as(target, None).await
    }

    /// [`AuditLog::open`], naming `replica` in every record.
    pub async fn open_as(target: &AuditTarget, replica: Option<&str>) -> Result<AuditLog, String> {
        let mut sink = match target {
            AuditTarget::Stdout => Sink {
                out: Box::new(std::io::stdout()),
                chain: Chain::new(),
                file: None,
                pending: Vec::new(),
            },
            AuditTarget::File(f) => Sink::open_file(f, replica)?,
        };
        sink.chain.replica = replica.map(str::to_string);
        AuditLog::start(sink)
    }

    /// Starts the writer thread on `sink`.
    fn start(sink: Sink) -> Result<AuditLog, String> {
        let shared = Arc::new(Shared {
            state: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            depth: AtomicUsize::new(0),
            drained: tokio::sync::Notify::new(),
            waits: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            write_failures: AtomicU64::new(0),
        });
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("keygate-audit".into())
            .spawn(move || {
                let done = StopGuard(writer.clone());
                write_loop(sink, &writer);
                drop(done);
            })
            .map_err(|e| format!("cannot start the audit writer thread: {e}"))?;
        Ok(AuditLog {
            _handles: Arc::new(Handles(shared.clone())),
            shared,
        })
    }

    /// Queues a record; it is written shortly, in order. Never drops one: when the writer
    /// falls behind the queue grows past its capacity by at most the requests in flight,
    /// and new requests wait in [`AuditLog::admit`].
    pub fn record(&self, r: AuditRecord) {
        let wake = {
            let mut q = lock(&self.shared.state);
            q.records.push(r);
            std::mem::take(&mut q.idle)
        };
        self.shared.depth.fetch_add(1, Ordering::Relaxed);
        if wake {
            self.shared.wake.notify_one();
        }
        if self.shared.stopped.load(Ordering::Relaxed) {
            tracing::error!("audit writer has stopped; a record could not be written");
        }
    }

    /// Waits while the writer is [`QUEUE_CAPACITY`] records behind: backpressure on new
    /// requests instead of a lost record or unbounded memory. Returns at once otherwise.
    pub async fn admit(&self) {
        if self.shared.depth.load(Ordering::Relaxed) < QUEUE_CAPACITY {
            return;
        }
        self.shared.waits.fetch_add(1, Ordering::Relaxed);
        loop {
            let drained = self.shared.drained.notified();
            if self.shared.depth.load(Ordering::Relaxed) < QUEUE_CAPACITY
                || self.shared.stopped.load(Ordering::Relaxed)
            {
                return;
            }
            drained.await;
        }
    }

    /// Requests that waited for the audit writer so far.
    pub fn backpressure_waits(&self) -> u64 {
        self.shared.waits.load(Ordering::Relaxed)
    }

    /// Records queued and not yet written.
    pub fn queue_depth(&self) -> usize {
        self.shared.depth.load(Ordering::Relaxed)
    }

    /// Whether the writer is still running (records can still be written).
    pub fn is_alive(&self) -> bool {
        !self.shared.stopped.load(Ordering::Relaxed)
    }

    /// Whether records are being written: the writer runs and its last write succeeded.
    /// Two relaxed atomic loads: cheap enough for the start of every request.
    pub fn is_writing(&self) -> bool {
        !self.shared.failing.load(Ordering::Relaxed) && self.is_alive()
    }

    /// Write attempts that failed so far (each retry counts).
    pub fn write_failures(&self) -> u64 {
        self.shared.write_failures.load(Ordering::Relaxed)
    }

    /// Writes out everything queued so far and flushes (the writer keeps running). While
    /// writes fail, returns after the writer tried once more (see [`AuditLog::is_writing`]).
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        {
            let mut q = lock(&self.shared.state);
            q.flushes.push(tx);
            q.idle = false;
        }
        self.shared.wake.notify_one();
        if self.is_alive() {
            let _ = rx.await;
        }
    }
}

/// Marks the writer stopped when its thread ends, however it ends, and releases waiters.
struct StopGuard(Arc<Shared>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::Relaxed);
        self.0.drained.notify_waiters();
        lock(&self.0.state).flushes.clear();
    }
}

/// Opens the audit file for appending; a new file is created owner-only (0600), in
/// directories created owner-only (0700).
fn open_append(p: &Path) -> Result<std::fs::File, String> {
    if let Some(dir) = p.parent() {
        crate::private_fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    crate::private_fs::file_options()
        .create(true)
        .append(true)
        .open(p)
        .map_err(|e| format!("cannot open audit log {}: {e}", p.display()))
}

type Out = Box<dyn std::io::Write + Send>;

/// Where the writer thread writes, and the chain it extends.
struct Sink {
    out: Out,
    chain: Chain,
    /// File targets: the current file and its rotation.
    file: Option<Rotation>,
    /// Chained lines not written yet: the batch being gathered, or what a failed write
    /// left (written first, in order, when the writer retries).
    pending: Vec<u8>,
}

struct Rotation {
    cfg: AuditFile,
    /// Bytes in the current file, counting those queued but not yet written.
    size: u64,
    /// When the current file's first record was written.
    started: SystemTime,
    /// The seq of the current file's first record (0: unknown), for the rotated name.
    first_seq: u64,
    /// Set when a rotation failed: records keep going to the file they go to now.
    disabled: bool,
}

impl Rotation {
    /// Whether the current file must be rotated before a line of `len` bytes is added.
    fn due(&self, len: usize, now: SystemTime) -> bool {
        if self.disabled || self.size == 0 {
            return false;
        }
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        self.cfg
            .rotate_bytes
            .is_some_and(|max| self.size.saturating_add(len) > max)
            || self
                .cfg
                .rotate_every
                .is_some_and(|every| now.duration_since(self.started).unwrap_or_default() >= every)
    }
}

/// The record that starts a new chain in a file whose last line was not chained.
#[derive(Serialize)]
struct ChainRestart<'a> {
    time: String,
    event: &'static str,
    reason: &'a str,
}

impl Sink {
    fn open_file(cfg: &AuditFile, replica: Option<&str>) -> Result<Sink, String> {
        let path = &cfg.path;
        let tail = super::audit_chain::read_tail(path).unwrap_or_else(|e| Tail::Broken {
            reason: format!("it cannot be read back ({e})"),
            missing_newline: false,
        });
        let mut file = open_append(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let (started, first_seq) = match size {
            0 => (SystemTime::now(), 0),
            _ => first_record(path).unwrap_or((SystemTime::now(), 0)),
        };
        let mut rotation = Rotation {
            cfg: cfg.clone(),
            size,
            started,
            first_seq,
            disabled: false,
        };
        let chain = match tail {
            Tail::Empty => Chain::new(),
            Tail::Chained { seq, hash } => Chain::after(seq, hash),
            Tail::Broken {
                reason,
                missing_newline,
            } => {
                let reason = format!(
                    "the audit log {} does not end with an intact chained record: {reason}; a \
                     new chain starts here",
                    path.display()
                );
                tracing::warn!(
                    "AUDIT CHAIN BROKEN: {reason} (`keygate audit verify` will report the \
                     broken line; check the file)"
                );
                let mut chain = Chain::new().with_replica(replica);
                let mut buf = Vec::new();
                if missing_newline {
                    buf.push(b'\n');
                }
                let marker = ChainRestart {
                    time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                    event: "audit_chain_restart",
                    reason: &reason,
                };
                let obj = serde_json::to_vec(&marker).map_err(|e| e.to_string())?;
                chain.append(&obj, &mut buf)?;
                file.write_all(&buf)
                    .and(file.flush())
                    .map_err(|e| format!("cannot write audit log {}: {e}", path.display()))?;
                rotation.size += u64::try_from(buf.len()).unwrap_or(0);
                chain
            }
        };
        Ok(Sink {
            out: Box::new(file),
            chain,
            file: Some(rotation),
            pending: Vec::new(),
        })
    }

    /// Adds a chained line (record `seq`) to the pending bytes, rotating the file first
    /// when due (and when everything before it could be written to the current file).
    fn place(&mut self, line: &[u8], seq: u64) {
        let now = SystemTime::now();
        if self.file.as_ref().is_some_and(|r| r.due(line.len(), now)) && self.write().is_ok() {
            self.rotate(now);
        }
        if let Some(r) = self.file.as_mut() {
            if r.size == 0 {
                r.started = now;
                r.first_seq = seq;
            }
            r.size = r
                .size
                .saturating_add(u64::try_from(line.len()).unwrap_or(0));
        }
        self.pending.extend_from_slice(line);
    }

    /// Writes the pending bytes out and flushes. On failure, what was not written stays
    /// pending (a line cut short by the failure is completed by the next attempt).
    fn write(&mut self) -> std::io::Result<()> {
        let mut done = 0;
        let result = loop {
            match self.pending.get(done..) {
                None | Some([]) => break self.out.flush(),
                Some(rest) => match self.out.write(rest) {
                    Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
                    Ok(n) => done += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                },
            }
        };
        self.pending.drain(..done.min(self.pending.len()));
        if self.pending.capacity() > 4 * 1024 * 1024 && self.pending.len() < 64 * 1024 {
            self.pending.shrink_to(64 * 1024);
        }
        result
    }

    /// Renames the current file aside and continues in a new one at the configured path.
    fn rotate(&mut self, now: SystemTime) {
        let Some(r) = self.file.as_mut() else {
            return;
        };
        let path = r.cfg.path.clone();
        let target = rotated_name(&path, now, r.first_seq);
        if let Err(e) = std::fs::rename(&path, &target) {
            tracing::error!(
                "audit log rotation failed: cannot rename {} to {}: {e}; records stay in {0}, \
                 rotation is off until restart",
                path.display(),
                target.display()
            );
            r.disabled = true;
            return;
        }
        match open_append(&path) {
            Ok(f) => {
                self.out = Box::new(f);
                r.size = 0;
                tracing::info!(
                    "audit log rotated: {} is now {}",
                    path.display(),
                    target.display()
                );
            }
            Err(e) => {
                tracing::error!(
                    "audit log rotation failed: {e}; records continue in {}, rotation is off \
                     until restart",
                    target.display()
                );
                r.disabled = true;
            }
        }
    }
}

/// `<path>.<UTC time of rotation>-<first seq of the file, 10 digits>`, such as
/// `audit.jsonl.20261125T013000Z-0000004242`: rotated files sort in chain order.
fn rotated_name(path: &Path, now: SystemTime, first_seq: u64) -> PathBuf {
    let ts: String = humantime::format_rfc3339_seconds(now)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{ts}-{first_seq:010}"));
    let mut candidate = PathBuf::from(&name);
    let mut i = 1;
    while candidate.exists() && i < 1000 {
        let mut n = name.clone();
        n.push(format!(".{i}"));
        candidate = PathBuf::from(n);
        i += 1;
    }
    candidate
}

/// The time and seq of a file's first record.
fn first_record(path: &Path) -> Option<(SystemTime, u64)> {
    #[derive(serde::Deserialize)]
    struct First {
        time: String,
        seq: Option<u64>,
    }
    let f = std::fs::File::open(path).ok()?;
    let mut line = Vec::new();
    std::io::BufReader::new(std::io::Read::take(f, 1024 * 1024))
        .read_until(b'\n', &mut line)
        .ok()?;
    let first: First = serde_json::from_slice(line.trim_ascii_end()).ok()?;
    let time = humantime::parse_rfc3339_weak(&first.time).ok()?;
    Some((time, first.seq.unwrap_or(0)))
}

/// The writer thread: takes everything queued, chains and writes it in one `write`, then
/// lingers so the next batch gathers; waits on the condvar only when nothing is queued.
/// While a write fails it takes no new record and retries every [`RETRY`].
/// Runs for the life of the process (the handle is kept in the gateway's shared state).
fn write_loop(mut sink: Sink, shared: &Shared) {
    let mut object = Vec::with_capacity(4096);
    let mut line = Vec::with_capacity(4096);
    let mut batch: Vec<AuditRecord> = Vec::with_capacity(1024);
    let mut flushes = Vec::new();
    loop {
        let closing = {
            let mut q = lock(&shared.state);
            while q.records.is_empty() && q.flushes.is_empty() && sink.pending.is_empty() {
                if q.closed {
                    return;
                }
                q.idle = true;
                q = shared
                    .wake
                    .wait(q)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            q.idle = false;
            // Records are chained only after everything chained before them is written.
            if sink.pending.is_empty() {
                std::mem::swap(&mut batch, &mut q.records);
            }
            std::mem::swap(&mut flushes, &mut q.flushes);
            q.closed
        };
        let n = batch.len();
        for r in batch.drain(..) {
            object.clear();
            line.clear();
            let seq = sink.chain.next_seq;
            let chained = serde_json::to_writer(&mut object, &r)
                .map_err(|e| e.to_string())
                .and_then(|()| sink.chain.append(&object, &mut line));
            match chained {
                Ok(_) => sink.place(&line, seq),
                Err(e) => tracing::error!("audit record not written: {e}"),
            }
        }
        let written = sink.write();
        match &written {
            Ok(()) => {
                if shared.failing.swap(false, Ordering::Relaxed) {
                    tracing::warn!("audit log writes succeed again; requests are served");
                }
            }
            Err(e) => {
                shared.write_failures.fetch_add(1, Ordering::Relaxed);
                if !shared.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        "AUDIT LOG WRITE FAILED: {e}; {} bytes of chained records are kept and \
                         retried every {}ms; new requests are refused with audit_unavailable \
                         when audit.fail_closed is on",
                        sink.pending.len(),
                        RETRY.as_millis()
                    );
                }
            }
        }
        if n > 0 {
            shared.depth.fetch_sub(n, Ordering::Relaxed);
            shared.drained.notify_waiters();
        }
        for ack in flushes.drain(..) {
            let _ = ack.send(());
        }
        if written.is_err() && closing {
            let queued = lock(&shared.state).records.len();
            tracing::error!(
                "the audit writer ends while the audit log cannot be written: {} bytes of \
                 chained records and {queued} queued records are lost",
                sink.pending.len()
            );
            return;
        }
        // Gather the next batch (or wait before retrying); a flush request cuts the wait
        // short.
        let wait = if written.is_err() { RETRY } else { LINGER };
        let q = lock(&shared.state);
        if q.flushes.is_empty() && !q.closed {
            drop(
                shared
                    .wake
                    .wait_timeout(q, wait)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::telemetry::audit_chain::{verify_files, Problem};
    use std::time::Duration;

    fn record(i: u64) -> AuditRecord {
        record_at(i, SystemTime::now())
    }

    /// Record `i`, stamped `at`.
    fn record_at(i: u64, at: SystemTime) -> AuditRecord {
        AuditRecord {
            agent_id: Some("agent-1".into()),
            identity: Some("jwt"),
            tool: Some("t".into()),
            operation: None,
            decision: "allow",
            duration_ms: 1.0,
            bytes_out: 2,
            ..AuditRecord::event(
                humantime::format_rfc3339_millis(at).to_string(),
                format!("req-{i}").into(),
                "127.0.0.1:50000".into(),
                String::new(),
                "GET".into(),
                format!("/tools/t/{i}"),
                200,
            )
        }
    }

    fn target(path: &Path, rotate_bytes: Option<u64>) -> AuditTarget {
        AuditTarget::File(AuditFile {
            path: path.to_path_buf(),
            rotate_bytes,
            rotate_every: None,
        })
    }

    async fn write(t: &AuditTarget, from: u64, n: u64) {
        write_at(t, from, n, SystemTime::now()).await;
    }

    /// Writes records `from..from + n`, stamped `at`.
    async fn write_at(t: &AuditTarget, from: u64, n: u64, at: SystemTime) {
        let log = AuditLog::open(t).await.unwrap();
        for i in from..from + n {
            log.record(record_at(i, at));
        }
        log.close().await;
    }

    #[tokio::test]
    async fn chain_continues_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        let t = target(&p, None);
        write(&t, 0, 3).await;
        write(&t, 3, 2).await;
        let s = verify_files(&[&p]).unwrap();
        assert_eq!((s.records, s.first_seq, s.last_seq), (5, Some(1), Some(5)));
    }

    #[tokio::test]
    async fn a_broken_tail_starts_a_new_chain_that_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        let t = target(&p, None);
        write(&t, 0, 3).await;
        let mut text = std::fs::read(&p).unwrap();
        text.truncate(text.len() - 10);
        std::fs::write(&p, &text).unwrap();
        write(&t, 3, 2).await;
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        let marker: serde_json::Value = serde_json::from_str(lines[3]).unwrap();
        assert_eq!(marker["event"], "audit_chain_restart");
        assert_eq!(marker["seq"], 1);
        let f = verify_files(&[&p]).unwrap_err();
        assert_eq!((f.kind, f.line), (Problem::Malformed, 3), "{f}");
        assert_eq!(f.last_good_seq, Some(2));
        // From the marker on, the new chain is intact.
        let rest = dir.path().join("rest.jsonl");
        std::fs::write(&rest, lines[3..].join("\n") + "\n").unwrap();
        assert_eq!(verify_files(&[&rest]).unwrap().records, 3);
    }

    #[tokio::test]
    async fn rotation_by_size_keeps_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        let t = target(&p, Some(2048));
        // Stamped two seconds ago: on the restart below, the current file's first record
        // is already older than `rotate_every` (the age is read from the file, not waited).
        write_at(&t, 0, 20, SystemTime::now() - Duration::from_secs(2)).await;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|f| f != &p)
            .collect();
        files.sort();
        assert!(files.len() >= 3, "{files:?}");
        for f in &files {
            assert!(std::fs::metadata(f).unwrap().len() <= 2048);
        }
        files.push(p.clone());
        let s = verify_files(&files).unwrap();
        assert_eq!((s.records, s.last_seq), (20, Some(20)));
        // A restart continues the chain in the current file, and rotates it in time.
        let t = AuditTarget::File(AuditFile {
            path: p.clone(),
            rotate_bytes: None,
            rotate_every: Some(Duration::from_secs(1)),
        });
        write(&t, 20, 1).await;
        let rotated = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(rotated, files.len() + 1);
        let mut all: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|f| f != &p)
            .collect();
        all.sort();
        all.push(p.clone());
        assert_eq!(verify_files(&all).unwrap().records, 21);
        assert_eq!(std::fs::read_to_string(&p).unwrap().lines().count(), 1);
    }

    #[tokio::test]
    async fn a_full_queue_makes_new_requests_wait_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        let log = AuditLog::open(&target(&p, None)).await.unwrap();
        assert_eq!(log.backpressure_waits(), 0);
        tokio::time::timeout(Duration::from_millis(100), log.admit())
            .await
            .expect("an empty queue admits at once");
        // As if the writer were QUEUE_CAPACITY records behind.
        log.shared
            .depth
            .fetch_add(QUEUE_CAPACITY, Ordering::Relaxed);
        let waiting = tokio::spawn({
            let log = log.clone();
            async move { log.admit().await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !waiting.is_finished(),
            "admitted while the writer was behind"
        );
        assert_eq!(log.backpressure_waits(), 1);
        // The writer catches up: the next write releases the waiting request.
        log.shared
            .depth
            .fetch_sub(QUEUE_CAPACITY, Ordering::Relaxed);
        log.record(record(1));
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("released after the writer caught up")
            .unwrap();
        log.close().await;
        assert_eq!(log.queue_depth(), 0);
        assert_eq!(std::fs::read_to_string(&p).unwrap().lines().count(), 1);
    }

    #[tokio::test]
    async fn the_writer_ends_when_every_handle_is_gone_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        let log = AuditLog::open(&target(&p, None)).await.unwrap();
        let shared = log.shared.clone();
        for i in 0..500 {
            log.record(record(i));
        }
        drop(log);
        for _ in 0..100 {
            if shared.stopped.load(Ordering::Relaxed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            shared.stopped.load(Ordering::Relaxed),
            "writer still running"
        );
        assert_eq!(verify_files(&[&p]).unwrap().records, 500);
    }

    /// A file whose disk holds `room` more bytes: a write past it is cut short there, and
    /// the next one fails with "no space left".
    struct SmallDisk {
        file: std::fs::File,
        room: Arc<std::sync::atomic::AtomicI64>,
    }

    impl std::io::Write for SmallDisk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let room = self.room.load(Ordering::SeqCst);
            if room <= 0 {
                return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
            }
            let n = buf.len().min(usize::try_from(room).unwrap());
            let n = self.file.write(&buf[..n])?;
            self.room.fetch_sub(n as i64, Ordering::SeqCst);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.file.flush()
        }
    }

    async fn until(what: &str, f: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_full_disk_is_reported_and_the_chain_survives_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        let room = Arc::new(std::sync::atomic::AtomicI64::new(1000));
        let sink = Sink {
            out: Box::new(SmallDisk {
                file: open_append(&p).unwrap(),
                room: room.clone(),
            }),
            chain: Chain::new(),
            file: None,
            pending: Vec::new(),
        };
        let log = AuditLog::start(sink).unwrap();
        assert!(log.is_writing());
        // The disk fills in the middle of the second record.
        for i in 0..2 {
            log.record(record(i));
        }
        until("the failure is seen", || !log.is_writing()).await;
        assert!(log.write_failures() >= 1);
        let partial = std::fs::read(&p).unwrap();
        assert_eq!(partial.len(), 1000);
        // Records keep coming while the disk is full: kept, in order, not chained yet.
        for i in 2..5 {
            log.record(record(i));
        }
        // A flush request is answered after one more (failed) attempt.
        tokio::time::timeout(Duration::from_secs(5), log.close())
            .await
            .expect("close answered while the disk is full");
        assert!(!log.is_writing());
        assert_eq!(log.queue_depth(), 3);
        // Space is freed: the next retry writes everything, and the chain is whole.
        room.store(i64::MAX, Ordering::SeqCst);
        until("writes succeed again", || log.is_writing()).await;
        log.close().await;
        assert_eq!(log.queue_depth(), 0);
        let s = verify_files(&[&p]).unwrap();
        assert_eq!((s.records, s.first_seq, s.last_seq), (5, Some(1), Some(5)));
        let text = std::fs::read_to_string(&p).unwrap();
        let paths: Vec<&str> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| v["path"].as_str().unwrap().to_string())
            .map(|s| &*s.leak())
            .collect();
        assert_eq!(
            paths,
            [
                "/tools/t/0",
                "/tools/t/1",
                "/tools/t/2",
                "/tools/t/3",
                "/tools/t/4"
            ]
        );
    }

    #[test]
    fn rotated_names_sort_in_chain_order() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let a = rotated_name(Path::new("/x/audit.jsonl"), t, 7);
        let b = rotated_name(Path::new("/x/audit.jsonl"), t, 12);
        assert!(
            a.to_string_lossy().starts_with("/x/audit.jsonl.2026"),
            "{a:?}"
        );
        assert!(a.to_string_lossy().ends_with("Z-0000000007"), "{a:?}");
        assert!(a < b);
    }
}

//! The audit log writer: one JSON line per request, appended to a file or stdout by a
//! background task, in batches, so the request path never waits on the disk.
//!
//! Lossless: records are queued, never dropped; [`AuditLog::close`] writes out every queued
//! record and flushes before it returns (graceful shutdown calls it last).
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
use serde::Serialize;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

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
    pub client: String,
    pub tool: Option<std::sync::Arc<str>>,
    /// The operation (Cedar action) and its tags.
    pub operation: Option<std::sync::Arc<str>>,
    pub tags: Vec<std::sync::Arc<str>>,
    /// For identity creation: the kind of identity.
    pub identity_kind: Option<std::sync::Arc<str>>,
    /// Ids of the policies that decided.
    pub policies: Vec<String>,
    pub approval_id: Option<String>,
    /// The inventory record of an identity this request created.
    pub inventory_id: Option<String>,
    /// MCP: session id and, per JSON-RPC message, method, id, tool and a digest of the
    /// arguments (never their values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp: Option<crate::pipeline::mcp::McpAudit>,
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
    pub credential_provider: Option<&'static str>,
    pub credential_id: Option<std::sync::Arc<str>>,
    /// Names of what strip removed or redacted.
    pub stripped: Vec<std::borrow::Cow<'static, str>>,
}

enum Msg {
    Record(Box<AuditRecord>),
    Close(oneshot::Sender<()>),
}

/// Handle to the audit writer task.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::UnboundedSender<Msg>,
}

impl AuditLog {
    /// Opens the target (appending; a file's chain continues from its last record) and
    /// starts the writer task.
    pub async fn open(target: &AuditTarget) -> Result<AuditLog, String> {
        let sink = match target {
            AuditTarget::Stdout => Sink {
                out: Box::new(tokio::io::stdout()),
                chain: Chain::new(),
                file: None,
            },
            AuditTarget::File(f) => Sink::open_file(f).await?,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(sink, rx));
        Ok(AuditLog { tx })
    }

    /// Queues a record; it is written shortly, in order.
    pub fn record(&self, r: AuditRecord) {
        if self.tx.send(Msg::Record(Box::new(r))).is_err() {
            tracing::error!("audit writer has stopped; a record could not be queued");
        }
    }

    /// Whether the writer task is still running (records can still be written).
    pub fn is_alive(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Writes out everything queued so far and flushes.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn open_append(p: &Path) -> Result<tokio::fs::File, String> {
    if let Some(dir) = p.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .await
        .map_err(|e| format!("cannot open audit log {}: {e}", p.display()))
}

type Out = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// Where the writer task writes, and the chain it extends.
struct Sink {
    out: Out,
    chain: Chain,
    /// File targets: the current file and its rotation.
    file: Option<Rotation>,
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
    async fn open_file(cfg: &AuditFile) -> Result<Sink, String> {
        let path = &cfg.path;
        let tail = super::audit_chain::read_tail(path).unwrap_or_else(|e| Tail::Broken {
            reason: format!("it cannot be read back ({e})"),
            missing_newline: false,
        });
        let mut file = open_append(path).await?;
        let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
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
                let mut chain = Chain::new();
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
                    .await
                    .and(file.flush().await)
                    .map_err(|e| format!("cannot write audit log {}: {e}", path.display()))?;
                rotation.size += u64::try_from(buf.len()).unwrap_or(0);
                chain
            }
        };
        Ok(Sink {
            out: Box::new(file),
            chain,
            file: Some(rotation),
        })
    }

    /// Adds a chained line (record `seq`) to the batch, rotating the file first when due.
    async fn place(&mut self, buf: &mut Vec<u8>, line: &[u8], seq: u64) {
        let now = SystemTime::now();
        if self.file.as_ref().is_some_and(|r| r.due(line.len(), now)) {
            self.write(buf).await;
            buf.clear();
            self.rotate(now).await;
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
        buf.extend_from_slice(line);
    }

    /// Writes `buf` out and flushes.
    async fn write(&mut self, buf: &[u8]) {
        if !buf.is_empty() {
            if let Err(e) = self.out.write_all(buf).await {
                tracing::error!("audit log write failed: {e}");
            }
        }
        if let Err(e) = self.out.flush().await {
            tracing::error!("audit log flush failed: {e}");
        }
    }

    /// Renames the current file aside and continues in a new one at the configured path.
    async fn rotate(&mut self, now: SystemTime) {
        let Some(r) = self.file.as_mut() else {
            return;
        };
        let path = r.cfg.path.clone();
        let target = rotated_name(&path, now, r.first_seq);
        if let Err(e) = tokio::fs::rename(&path, &target).await {
            tracing::error!(
                "audit log rotation failed: cannot rename {} to {}: {e}; records stay in {0}, \
                 rotation is off until restart",
                path.display(),
                target.display()
            );
            r.disabled = true;
            return;
        }
        match open_append(&path).await {
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

async fn write_loop(mut sink: Sink, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut object = Vec::with_capacity(4096);
    let mut line = Vec::with_capacity(4096);
    let mut closers = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        // Take what is queued, up to a batch, chain it, then write it in one go.
        let mut n = 0;
        while let Some(msg) = next.take() {
            match msg {
                Msg::Record(r) => {
                    object.clear();
                    line.clear();
                    let seq = sink.chain.next_seq;
                    let chained = serde_json::to_writer(&mut object, &r)
                        .map_err(|e| e.to_string())
                        .and_then(|()| sink.chain.append(&object, &mut line));
                    match chained {
                        Ok(_) => sink.place(&mut buf, &line, seq).await,
                        Err(e) => tracing::error!("audit record not written: {e}"),
                    }
                }
                Msg::Close(ack) => closers.push(ack),
            }
            n += 1;
            if n < 1024 {
                next = rx.try_recv().ok();
            }
        }
        sink.write(&buf).await;
        buf.clear();
        for ack in closers.drain(..) {
            let _ = ack.send(());
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
        AuditRecord {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            request_id: format!("req-{i}").into(),
            agent_id: Some("agent-1".into()),
            agent_owner: None,
            identity: Some("jwt"),
            issuer: None,
            spiffe_id: None,
            client: "127.0.0.1:50000".into(),
            tool: Some("t".into()),
            operation: None,
            tags: vec![],
            identity_kind: None,
            policies: vec![],
            approval_id: None,
            inventory_id: None,
            mcp: None,
            method: "GET".into(),
            path: format!("/tools/t/{i}"),
            decision: "allow",
            error: None,
            error_detail: None,
            status: 200,
            duration_ms: 1.0,
            bytes_in: 0,
            bytes_out: 2,
            completed: true,
            credential_provider: None,
            credential_id: None,
            stripped: vec![],
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
        let log = AuditLog::open(t).await.unwrap();
        for i in from..from + n {
            log.record(record(i));
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
        write(&t, 0, 20).await;
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
        tokio::time::sleep(Duration::from_millis(1100)).await;
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

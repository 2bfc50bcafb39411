//! The audit log writer: one JSON line per request, appended to a file or stdout by a
//! background task, in batches, so the request path never waits on the disk.
//!
//! Lossless: records are queued, never dropped; [`AuditLog::close`] writes out every queued
//! record and flushes before it returns (graceful shutdown calls it last).

use serde::Serialize;
use std::path::Path;
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
    /// Opens the target (appending) and starts the writer task.
    pub async fn open(target: &crate::config::AuditTarget) -> Result<AuditLog, String> {
        let out: Box<dyn tokio::io::AsyncWrite + Send + Unpin> = match target {
            crate::config::AuditTarget::Stdout => Box::new(tokio::io::stdout()),
            crate::config::AuditTarget::File(p) => Box::new(open_append(p).await?),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(out, rx));
        Ok(AuditLog { tx })
    }

    /// Queues a record; it is written shortly, in order.
    pub fn record(&self, r: AuditRecord) {
        if self.tx.send(Msg::Record(Box::new(r))).is_err() {
            tracing::error!("audit writer has stopped; a record could not be queued");
        }
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

async fn write_loop(
    mut out: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    mut rx: mpsc::UnboundedReceiver<Msg>,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut closers = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        // Take what is queued, up to a batch, then write it in one go.
        let mut n = 0;
        while let Some(msg) = next.take() {
            match msg {
                Msg::Record(r) => {
                    if serde_json::to_writer(&mut buf, &r).is_ok() {
                        buf.push(b'\n');
                    }
                }
                Msg::Close(ack) => closers.push(ack),
            }
            n += 1;
            if n < 1024 {
                next = rx.try_recv().ok();
            }
        }
        if let Err(e) = out.write_all(&buf).await {
            tracing::error!("audit log write failed: {e}");
        }
        buf.clear();
        if let Err(e) = out.flush().await {
            tracing::error!("audit log flush failed: {e}");
        }
        for ack in closers.drain(..) {
            let _ = ack.send(());
        }
    }
}

//! **approve**: a request that needs a human's approval goes through only with an
//! approval of that exact request, once.
//!
//! The request is bound to its approval by a digest over tool, method, canonical path,
//! query, the headers that change what the call does (`Impersonate-*`, `Sudo`,
//! `X-Vault-Namespace`, `Content-Type`, the kind's own) and body, so an approval for one
//! call cannot be spent on another. The approver is shown all of that, whole, with secret
//! fields redacted. For each
//! (agent, operation, digest) there is one active approval however often the agent
//! retries: pending, it answers `approval_required` with its id (or, for tools with
//! `approval = "hold"`, holds the request open until a human decides or the hold times
//! out); approved, the first request to consume it goes through and the approval is used
//! up — twenty concurrent retries forward exactly one request. A store that cannot be
//! reached fails the request closed (`approvals_unavailable`).

use crate::clock::Clock;
use crate::config::{Agent, ApprovalMode, ApprovalSettings, Tool};
use crate::error::{Error, ErrorKind};
use crate::http_client::HttpClient;
use crate::routes::Operation;
use crate::store::Store;
use crate::store::{Approval, ApprovalStatus, NewApproval, StoreError};
use crate::telemetry::metrics::Metrics;
use std::time::{Duration, Instant};

/// The request headers an approval covers, `(lowercase name, value)`, in canonical order:
/// by name, the values of one name in the order sent. These are the headers that change
/// who the call acts as, where it acts or how its body is read (`Impersonate-*`, `Sudo`,
/// `X-Vault-Namespace`, `Content-Type`, and the kind's own: catalog::is_effect_header).
pub fn effect_headers(kind: crate::catalog::Kind, headers: &http::HeaderMap) -> Vec<(&str, &[u8])> {
    let mut out: Vec<(&str, &[u8])> = headers
        .iter()
        .filter(|(n, _)| crate::catalog::is_effect_header(kind, n.as_str()))
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    // Stable: repeated values keep the order they were sent in (which a tool may read).
    out.sort_by(|a, b| a.0.cmp(b.0));
    out
}

/// The digest an approval is bound to: tool, method, canonical path, query, the headers
/// that change what the call does ([`effect_headers`], in canonical order) and body.
///
/// Every part is length-prefixed (and the headers counted), so no two different requests
/// can be written as the same byte stream: an extra `Sudo: root`, another
/// `X-Vault-Namespace` or an `Impersonate-User` makes another digest, and so needs another
/// approval.
pub fn request_digest(
    tool: &str,
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> String {
    let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut part = |p: &[u8]| {
        h.update(&(p.len() as u64).to_be_bytes());
        h.update(p);
    };
    for p in [
        tool.as_bytes(),
        method.as_bytes(),
        path.as_bytes(),
        query.unwrap_or("").as_bytes(),
        body,
    ] {
        part(p);
    }
    part(&(headers.len() as u64).to_be_bytes());
    for (name, value) in headers {
        part(name.as_bytes());
        part(value);
    }
    const_hex::encode(h.finish())
}

/// What the approver sees: the whole request as it will be forwarded (after strip, so
/// without the agent's credentials; before inject, so without keygate's): the request
/// line with its query, the headers the approval covers, and the body, none of it
/// shortened (the body is bounded by the tool's body limit), so no padding can push a
/// field out of the approver's sight.
///
/// Secret fields (passwords, a Kubernetes Secret's data …, catalog::redact_body) show as
/// `[REDACTED]`, and any known secret format left is redacted too: the store never keeps a
/// secret. A body that names a secret field but cannot be read field by field is not shown
/// (its size is). Bytes that are not UTF-8 show as `\xNN`.
pub fn summary(
    kind: crate::catalog::Kind,
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> String {
    use crate::catalog::RedactedBody;
    let mut s = String::with_capacity(path.len() + body.len() + 256);
    s.push_str(method);
    s.push(' ');
    s.push_str(path);
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        s.push('?');
        match crate::catalog::redact_query(kind, q) {
            Some(r) => s.push_str(&r),
            None => s.push_str(q),
        }
    }
    s.push('\n');
    let mut content_type = None;
    for (name, value) in headers {
        if *name == "content-type" {
            content_type = std::str::from_utf8(value).ok();
        }
        s.push_str(name);
        s.push_str(": ");
        push_escaped(&mut s, value);
        s.push('\n');
    }
    if !body.is_empty() {
        s.push('\n');
        match crate::catalog::redact_body(kind, content_type, body) {
            RedactedBody::Unchanged => push_escaped(&mut s, body),
            RedactedBody::Redacted(b) => push_escaped(&mut s, &b),
            RedactedBody::Withheld => s.push_str(&format!(
                "({} bytes not shown: the body names a secret field keygate cannot locate in it)",
                body.len()
            )),
        }
    }
    // Defence in depth: a known secret format (the tool may be in `on_secret = "redact"`
    // mode with a format it missed in some encoding) is never stored.
    match crate::secrets::redact(s.as_bytes()) {
        Some((r, _)) => String::from_utf8_lossy(&r).into_owned(),
        None => s,
    }
}

/// Appends `bytes` as text: UTF-8 as is, any other byte as `\xNN`.
fn push_escaped(s: &mut String, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        s.push_str(chunk.valid());
        for b in chunk.invalid() {
            s.push_str("\\x");
            s.push_str(&const_hex::encode([*b]));
        }
    }
}

/// How long a store call on the request path may take: one that does not answer in time
/// (a database that went silent) refuses the request rather than holding it.
const STORE_CALL_TIMEOUT: Duration = Duration::from_secs(5);

async fn timed<T>(
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(STORE_CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable("no answer in time".into())))
}

fn unavailable(e: StoreError) -> Error {
    Error::new(
        ErrorKind::StoreUnavailable,
        "keygate cannot record or check approvals right now; nothing was forwarded",
    )
    .with_detail(e.to_string())
}

/// The agent's pending approvals reached `approvals.max_pending_per_agent`: refused before
/// anything is stored, so an agent cannot fill the store or flood the approvers.
fn too_many(e: StoreError) -> Error {
    match e {
        StoreError::TooManyPending(max) => Error::new(
            ErrorKind::TooManyPendingApprovals,
            format!(
                "this agent already has {max} approvals pending; nothing was stored or \
                 forwarded; retry once an approver has decided some of them"
            ),
        ),
        e => unavailable(e),
    }
}

fn where_to_decide(settings: &ApprovalSettings, id: &str) -> String {
    match &settings.decide_at {
        Some(url) => format!("an approver decides at {url}"),
        None => format!("an approver decides with `keygate approvals approve {id}`"),
    }
}

fn required(settings: &ApprovalSettings, op: &Operation, tool: &str, a: &Approval) -> Error {
    let what = match &op.identity_kind {
        Some(k) => format!("creating a {k} through tool {tool:?}"),
        None => format!("operation {:?} on tool {tool:?}", &*op.name),
    };
    Error::new(
        ErrorKind::ApprovalRequired,
        format!(
            "{what} needs a human's approval: approval {} is pending; {}; retry this exact request once it is approved",
            a.id,
            where_to_decide(settings, &a.id)
        ),
    )
    .with_approval(a.id.clone())
}

/// What approve works with: the store, the settings, and the ways humans are told.
pub struct Approvals<'a> {
    pub settings: &'a ApprovalSettings,
    pub store: &'a dyn Store,
    /// Signalled by each decision made through this process (wakes held requests).
    pub decisions: &'a tokio::sync::Notify,
    pub webhooks: &'a WebhookLimiter,
    /// The webhook's client.
    pub http: &'a HttpClient,
    pub metrics: &'a Metrics,
    /// What "now" is for approvals' expiry: the gateway's clock.
    pub clock: &'a Clock,
    /// Whether the agent may still call (not suspended meanwhile, the view of suspensions
    /// fresh): checked again just before an approval is spent, since a request may have
    /// been held for a long time.
    pub check_agent: &'a (dyn Fn() -> Result<(), Error> + Sync),
}

/// The request an approval is for, as the approver sees it and the digest binds it.
pub struct Pending<'a> {
    pub agent: &'a Agent,
    pub tool: &'a Tool,
    pub operation: &'a Operation,
    pub method: &'a str,
    /// The canonical path, as the audit records it.
    pub path: &'a str,
    pub digest: &'a str,
    /// What the approver is shown.
    pub summary: Option<String>,
    /// The `@approval` forbids in the way.
    pub policies: &'a [String],
    /// How many different humans must approve.
    pub approvers: u8,
}

/// Passes only with a consumed approval of this exact request; returns it. A refusal
/// names the approval involved ([`Error::approval_id`]).
pub async fn approve(approvals: &Approvals<'_>, p: Pending<'_>) -> Result<Approval, Error> {
    let Approvals {
        settings, store, ..
    } = approvals;
    let (op, tool, digest) = (p.operation, p.tool, p.digest);
    let mut new = NewApproval {
        agent_id: p.agent.id.to_string(),
        agent_owner: p.agent.owner.to_string(),
        tool: tool.name.to_string(),
        operation: op.name.to_string(),
        identity_kind: op.identity_kind.as_deref().map(str::to_string),
        digest: digest.to_string(),
        method: p.method.to_string(),
        path: p.path.to_string(),
        policies: p.policies.to_vec(),
        request: p.summary,
        approvers_needed: p.approvers,
        pending_expires_at: approvals.clock.unix_millis() + settings.pending_ttl.as_millis() as i64,
    };
    // A denial stands for the request it was about (for `pending_ttl`): the agent is told,
    // rather than asking the humans again.
    let since = approvals.clock.unix_millis() - settings.pending_ttl.as_millis() as i64;
    if let Some(d) = timed(store.denied_since(&new.agent_id, &new.operation, digest, since))
        .await
        .map_err(unavailable)?
    {
        return Err(Error::new(
            ErrorKind::ApprovalDenied,
            format!(
                "approval {} for this request was denied; nothing was forwarded",
                d.id
            ),
        )
        .with_approval(d.id));
    }
    let hold_until =
        (tool.approval == ApprovalMode::Hold).then(|| Instant::now() + tool.hold_timeout);
    // A few rounds at most: approved but used by a concurrent request → a new one is pending.
    let mut last = None;
    for _ in 0..4 {
        let now = approvals.clock.unix_millis();
        new.pending_expires_at = now + settings.pending_ttl.as_millis() as i64;
        let (a, created) =
            timed(store.open_approval(new.clone(), now, settings.max_pending_per_agent))
                .await
                .map_err(too_many)?;
        last = Some(a.id.clone());
        // Every refusal from here on names the approval (the audit record and the span).
        let about = |e: Error| e.with_approval(a.id.clone());
        if created {
            tracing::info!(approval_id = %a.id, operation = %op.name, "approval requested");
            approvals.metrics.approval_requested();
            notify(approvals, &a);
        }
        match a.status {
            ApprovalStatus::Approved => {
                (approvals.check_agent)().map_err(about)?;
                if let Some(used) =
                    timed(store.consume(&a.id, digest, approvals.clock.unix_millis()))
                        .await
                        .map_err(|e| about(unavailable(e)))?
                {
                    return Ok(used);
                }
            }
            ApprovalStatus::Pending => {
                let Some(until) = hold_until else {
                    return Err(required(settings, op, &tool.name, &a));
                };
                match wait_for_decision(approvals, &a.id, until)
                    .await
                    .map_err(about)?
                {
                    ApprovalStatus::Approved => {}
                    ApprovalStatus::Denied => {
                        return Err(Error::new(
                            ErrorKind::ApprovalDenied,
                            format!("approval {} was denied; nothing was forwarded", a.id),
                        )
                        .with_approval(a.id.clone()))
                    }
                    _ => return Err(required(settings, op, &tool.name, &a)),
                }
            }
            _ => return Err(required(settings, op, &tool.name, &a)),
        }
    }
    let e = Error::new(
        ErrorKind::ApprovalRequired,
        "this request's approval was used by another request; retry to request a new one",
    );
    Err(match last {
        Some(id) => e.with_approval(id),
        None => e,
    })
}

/// How often a held request re-reads its approval without being woken: for decisions
/// made by another process on the same store (another replica, a CLI on another host).
pub const HOLD_RECHECK: Duration = Duration::from_secs(5);

/// Waits until the approval is decided or `until` passes; returns its status then.
///
/// A decision through this process's admin API (or `keygate approvals …`, which calls it)
/// signals `approvals.decisions` and wakes every held request at once; each reads its own
/// approval once. Without a signal the store is read every [`HOLD_RECHECK`]: held requests
/// do not poll the store.
async fn wait_for_decision(
    approvals: &Approvals<'_>,
    id: &str,
    until: Instant,
) -> Result<ApprovalStatus, Error> {
    let mut first = true;
    loop {
        // Registered before the store is read, so a decision made between the read and
        // the wait still wakes this request.
        let decided = approvals.decisions.notified();
        tokio::pin!(decided);
        decided.as_mut().enable();
        if !std::mem::take(&mut first) {
            approvals.metrics.hold_recheck();
        }
        let a = timed(approvals.store.approval(id))
            .await
            .map_err(unavailable)?;
        let status = a.map(|a| a.status).unwrap_or(ApprovalStatus::Expired);
        if status != ApprovalStatus::Pending {
            return Ok(status);
        }
        let now = Instant::now();
        if now >= until {
            return Ok(ApprovalStatus::Pending);
        }
        let _ = tokio::time::timeout((until - now).min(HOLD_RECHECK), decided).await;
    }
}

/// Bounds the approval webhook's notifications (`approvals.webhook_max_per_minute`, bursts
/// up to that many): an agent cycling through distinct requests cannot flood the
/// approvers' channel. Past the limit a notification is dropped (the approval is still
/// pending and listed) and `keygate_webhook_notifications_total{result="dropped"}` counts
/// it. Process-wide; follows the configured rate across reloads.
#[derive(Default)]
pub struct WebhookLimiter {
    limiter: std::sync::Mutex<Option<(std::num::NonZeroU32, governor::DefaultDirectRateLimiter)>>,
}

impl WebhookLimiter {
    /// Whether one more notification may be sent now at `per_minute`.
    pub fn allow(&self, per_minute: std::num::NonZeroU32) -> bool {
        let mut l = crate::locks::lock(&self.limiter);
        match &*l {
            Some((rate, limiter)) if *rate == per_minute => limiter.check().is_ok(),
            _ => {
                let limiter =
                    governor::RateLimiter::direct(governor::Quota::per_minute(per_minute));
                let ok = limiter.check().is_ok();
                *l = Some((per_minute, limiter));
                ok
            }
        }
    }
}

/// Tells the configured webhook (Slack-compatible JSON) of a new pending approval.
fn notify(approvals: &Approvals<'_>, a: &Approval) {
    let Some(url) = approvals.settings.webhook_url.clone() else {
        return;
    };
    let sent = approvals
        .webhooks
        .allow(approvals.settings.webhook_max_per_minute);
    approvals.metrics.webhook_notification(sent);
    if !sent {
        tracing::warn!(approval_id = %a.id, "approval webhook rate limit reached; notification dropped (the approval is pending and listed)");
        return;
    }
    let text = format!(
        "keygate: agent `{}` (owner {}) asks to run `{}` on tool `{}`{} — {} {}. Approval `{}`; {}.",
        a.agent_id,
        a.agent_owner,
        a.operation,
        a.tool,
        a.identity_kind.as_deref().map(|k| format!(", creating a {k}")).unwrap_or_default(),
        a.method,
        a.path,
        a.id,
        where_to_decide(approvals.settings, &a.id),
    );
    // With Slack approvals configured, the message carries Approve and Deny buttons.
    let blocks = approvals
        .settings
        .slack
        .as_ref()
        .map(|_| crate::slack::blocks(&text, &a.id));
    let mut body = serde_json::json!({
        "text": text,
        "approval_id": a.id,
        "agent_id": a.agent_id,
        "agent_owner": a.agent_owner,
        "tool": a.tool,
        "operation": a.operation,
        "identity_kind": a.identity_kind,
    });
    if let Some(blocks) = blocks {
        body["blocks"] = blocks;
    }
    let body = body.to_string();
    let client = approvals.http.clone();
    let id = a.id.clone();
    tokio::spawn(async move {
        let req = match http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(crate::error::full_body(body))
        {
            Ok(r) => r,
            Err(_) => return,
        };
        match tokio::time::timeout(Duration::from_secs(5), client.request(req)).await {
            Ok(Ok(r)) if r.status().is_success() => {
                tracing::debug!(approval_id = %id, "webhook notified")
            }
            Ok(Ok(r)) => {
                tracing::warn!(approval_id = %id, status = %r.status(), "approval webhook refused the notification")
            }
            Ok(Err(e)) => tracing::warn!(approval_id = %id, "approval webhook unreachable: {e}"),
            Err(_) => tracing::warn!(approval_id = %id, "approval webhook timed out"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Kind;

    fn headers(list: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (n, v) in list {
            h.append(*n, http::HeaderValue::from_static(v));
        }
        h
    }

    fn digest_with(kind: Kind, list: &[(&'static str, &'static str)]) -> String {
        let h = headers(list);
        request_digest(
            "t",
            "POST",
            "/u",
            Some("a=1"),
            &effect_headers(kind, &h),
            b"{}",
        )
    }

    #[test]
    fn effect_headers_change_the_digest_and_others_do_not() {
        let base = digest_with(Kind::Generic, &[("content-type", "application/json")]);
        let same: &[&[(&str, &str)]] = &[
            &[("content-type", "application/json"), ("user-agent", "x")],
            &[("x-request-id", "1"), ("content-type", "application/json")],
        ];
        for list in same {
            assert_eq!(digest_with(Kind::Generic, list), base, "{list:?}");
        }
        let different: &[&[(&str, &str)]] = &[
            &[("content-type", "application/json"), ("sudo", "root")],
            &[
                ("content-type", "application/json"),
                ("impersonate-user", "admin"),
            ],
            &[
                ("content-type", "application/json"),
                ("impersonate-extra-scopes", "x"),
            ],
            &[
                ("content-type", "application/json"),
                ("x-vault-namespace", "ns1"),
            ],
            &[("content-type", "application/merge-patch+json")],
            &[],
        ];
        let mut seen = std::collections::BTreeSet::from([base]);
        for list in different {
            assert!(seen.insert(digest_with(Kind::Generic, list)), "{list:?}");
        }
        // Header order does not matter, values of one name keep theirs.
        let a = digest_with(Kind::Generic, &[("sudo", "a"), ("impersonate-user", "b")]);
        let b = digest_with(Kind::Generic, &[("impersonate-user", "b"), ("sudo", "a")]);
        assert_eq!(a, b);
        let g1 = digest_with(
            Kind::Generic,
            &[("impersonate-group", "x"), ("impersonate-group", "y")],
        );
        let g2 = digest_with(
            Kind::Generic,
            &[("impersonate-group", "y"), ("impersonate-group", "x")],
        );
        assert_ne!(g1, g2);
        // A kind's own headers count on that kind only.
        let v = &[("x-github-api-version", "2022-11-28")][..];
        assert_ne!(digest_with(Kind::Github, v), digest_with(Kind::Github, &[]));
        assert_eq!(
            digest_with(Kind::Generic, v),
            digest_with(Kind::Generic, &[])
        );
    }

    #[test]
    fn the_digest_is_pinned() {
        // Approvals already granted name this value: it must not change. Computed apart as
        // SHA-256 over each part prefixed by its length (u64, big-endian), in order.
        assert_eq!(
            request_digest("t", "POST", "/u", Some("a=1"), &[("sudo", b"root")], b"{}"),
            "2245fadb8de97540abda6a8f39a2f203bcfbcc9d3d1509c3bcf5dd99e3dcf4d7"
        );
    }

    #[test]
    fn parts_cannot_run_into_each_other() {
        let d = |name: &str, value: &[u8], body: &[u8]| {
            request_digest("t", "POST", "/", None, &[(name, value)], body)
        };
        assert_ne!(d("sudo", b"ab", b"c"), d("sudo", b"a", b"bc"));
        assert_ne!(d("sudo", b"x", b""), d("sud", b"ox", b""));
        assert_ne!(
            request_digest("t", "POST", "/", None, &[], b""),
            request_digest("t", "POST", "/", Some(""), &[("", b"")], b"")
        );
    }

    #[test]
    fn the_summary_is_the_whole_request() {
        let h = headers(&[
            ("content-type", "application/json"),
            ("sudo", "root"),
            ("user-agent", "not shown"),
        ]);
        let padding = "x".repeat(8192);
        let body = format!(r#"{{"pad":"{padding}","admin":true,"password":"Hunter2!x"}}"#);
        let s = summary(
            Kind::Gitlab,
            "POST",
            "/api/v4/users",
            Some("a=1&password=q"),
            &effect_headers(Kind::Gitlab, &h),
            body.as_bytes(),
        );
        assert!(
            s.starts_with(
                "POST /api/v4/users?a=1&password=[REDACTED]\ncontent-type: application/json\nsudo: root\n\n{\"pad\""
            ),
            "{s}"
        );
        assert!(s.contains(&padding) && s.contains(r#""admin":true"#), "{s}");
        assert!(!s.contains("Hunter2") && !s.contains("not shown"), "{s}");
        assert!(
            s.ends_with(r#""admin":true,"password":"[REDACTED]"}"#),
            "{s}"
        );
        // Not one JSON value, and it names a secret field: not shown at all.
        let broken = summary(
            Kind::Gitlab,
            "POST",
            "/u",
            None,
            &[],
            b"{\"password\":\"Hunter2\"",
        );
        assert_eq!(
            broken,
            "POST /u\n\n(21 bytes not shown: the body names a secret field keygate cannot locate in it)"
        );
        let bin = summary(Kind::Generic, "PUT", "/b", None, &[], b"ok\xff\xfe");
        assert_eq!(bin, "PUT /b\n\nok\\xff\\xfe");
        let known = summary(
            Kind::Generic,
            "GET",
            "/k",
            Some("t=AKIAIOSFODNN7EXAMPLE"),
            &[],
            b"",
        );
        assert_eq!(known, "GET /k?t=[REDACTED]\n");
    }
}

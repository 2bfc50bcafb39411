//! **approve**: a request that needs a human's approval goes through only with an
//! approval of that exact request, once.
//!
//! The request is bound to its approval by a digest over tool, method, canonical path,
//! query and body, so an approval for one call cannot be spent on another. For each
//! (agent, operation, digest) there is one active approval however often the agent
//! retries: pending, it answers `approval_required` with its id (or, for tools with
//! `approval = "hold"`, holds the request open until a human decides or the hold times
//! out); approved, the first request to consume it goes through and the approval is used
//! up — twenty concurrent retries forward exactly one request. A store that cannot be
//! reached fails the request closed (`approvals_unavailable`).

use super::context::RequestCtx;
use crate::config::ApprovalMode;
use crate::error::{Error, ErrorKind};
use crate::gateway::{Gateway, Shared, ToolRuntime};
use crate::routes::Operation;
use crate::store::{now_millis, Approval, ApprovalStatus, NewApproval, StoreError};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

/// The digest an approval is bound to.
pub fn request_digest(
    tool: &str,
    method: &str,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> String {
    let mut h = Sha256::new();
    for part in [
        tool.as_bytes(),
        method.as_bytes(),
        path.as_bytes(),
        query.unwrap_or("").as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update((body.len() as u64).to_be_bytes());
    h.update(body);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// What the approver sees of the request beyond method and path: its query and body as
/// they will be forwarded (after strip), shortened to 2 KiB.
pub fn summary(query: Option<&str>, body: &[u8]) -> Option<String> {
    const MAX: usize = 2048;
    let mut s = String::new();
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        s.push('?');
        s.push_str(q);
    }
    if !body.is_empty() {
        if !s.is_empty() {
            s.push('\n');
        }
        match std::str::from_utf8(body) {
            Ok(text) => s.push_str(text),
            Err(_) => s.push_str(&format!("({} bytes of binary body)", body.len())),
        }
    }
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(" …");
    }
    (!s.is_empty()).then_some(s)
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

fn where_to_decide(gw: &Gateway, id: &str) -> String {
    match &gw.snapshot.approvals.decide_at {
        Some(url) => format!("an approver decides at {url}"),
        None => format!("an approver decides with `keygate approvals approve {id}`"),
    }
}

fn required(gw: &Gateway, op: &Operation, tool: &str, a: &Approval) -> Error {
    let what = match &op.identity_kind {
        Some(k) => format!("creating a {k} through tool {tool:?}"),
        None => format!("operation {:?} on tool {tool:?}", &*op.name),
    };
    Error::new(
        ErrorKind::ApprovalRequired,
        format!(
            "{what} needs a human's approval: approval {} is pending; {}; retry this exact request once it is approved",
            a.id,
            where_to_decide(gw, &a.id)
        ),
    )
    .with_approval(a.id.clone())
}

/// Passes only with a consumed approval of this exact request; returns it.
pub async fn approve(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    tool: &ToolRuntime,
    op: &Operation,
    digest: &str,
    request: Option<String>,
    policies: &[String],
) -> Result<Approval, Error> {
    let Some(identity) = &ctx.identity else {
        return Err(Error::unauthenticated("no agent identity for this request"));
    };
    let shared = &gw.shared;
    let settings = &gw.snapshot.approvals;
    let mut new = NewApproval {
        agent_id: identity.agent.id.to_string(),
        agent_owner: identity.agent.owner.to_string(),
        tool: tool.tool.name.to_string(),
        operation: op.name.to_string(),
        identity_kind: op.identity_kind.as_deref().map(str::to_string),
        digest: digest.to_string(),
        method: ctx.method.to_string(),
        path: ctx.path.clone(),
        policies: policies.to_vec(),
        request,
        pending_expires_at: now_millis() + settings.pending_ttl.as_millis() as i64,
    };
    // A denial stands for the request it was about (for `pending_ttl`): the agent is told,
    // rather than asking the humans again.
    let since = now_millis() - settings.pending_ttl.as_millis() as i64;
    if let Some(d) = shared
        .store
        .denied_since(&new.agent_id, &new.operation, digest, since)
        .await
        .map_err(unavailable)?
    {
        ctx.approval_id = Some(d.id.clone());
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
        (tool.tool.approval == ApprovalMode::Hold).then(|| Instant::now() + tool.tool.hold_timeout);
    // A few rounds at most: approved but used by a concurrent request → a new one is pending.
    for _ in 0..4 {
        let now = now_millis();
        new.pending_expires_at = now + settings.pending_ttl.as_millis() as i64;
        let (a, created) = shared
            .store
            .open_approval(new.clone(), now, settings.max_pending_per_agent)
            .await
            .map_err(too_many)?;
        ctx.approval_id = Some(a.id.clone());
        if created {
            tracing::info!(approval_id = %a.id, operation = %op.name, "approval requested");
            shared.metrics.approval_requested();
            notify(gw, &a);
        }
        match a.status {
            ApprovalStatus::Approved => {
                if let Some(used) = shared
                    .store
                    .consume(&a.id, digest, now_millis())
                    .await
                    .map_err(unavailable)?
                {
                    return Ok(used);
                }
            }
            ApprovalStatus::Pending => {
                let Some(until) = hold_until else {
                    return Err(required(gw, op, &tool.tool.name, &a));
                };
                match wait_for_decision(shared, &a.id, until).await? {
                    ApprovalStatus::Approved => {}
                    ApprovalStatus::Denied => {
                        return Err(Error::new(
                            ErrorKind::ApprovalDenied,
                            format!("approval {} was denied; nothing was forwarded", a.id),
                        )
                        .with_approval(a.id.clone()))
                    }
                    _ => return Err(required(gw, op, &tool.tool.name, &a)),
                }
            }
            _ => return Err(required(gw, op, &tool.tool.name, &a)),
        }
    }
    Err(Error::new(
        ErrorKind::ApprovalRequired,
        "this request's approval was used by another request; retry to request a new one",
    ))
}

/// How often a held request re-reads its approval without being woken: for decisions
/// made by another process on the same store (another replica, a CLI on another host).
pub const HOLD_RECHECK: Duration = Duration::from_secs(5);

/// Waits until the approval is decided or `until` passes; returns its status then.
///
/// A decision through this process's admin API (or `keygate approvals …`, which calls it)
/// signals `shared.decisions` and wakes every held request at once; each reads its own
/// approval once. Without a signal the store is read every [`HOLD_RECHECK`]: held requests
/// do not poll the store.
async fn wait_for_decision(
    shared: &Shared,
    id: &str,
    until: Instant,
) -> Result<ApprovalStatus, Error> {
    let mut first = true;
    loop {
        // Registered before the store is read, so a decision made between the read and
        // the wait still wakes this request.
        let decided = shared.decisions.notified();
        tokio::pin!(decided);
        decided.as_mut().enable();
        if !std::mem::take(&mut first) {
            shared.metrics.hold_recheck();
        }
        let a = shared.store.approval(id).await.map_err(unavailable)?;
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
fn notify(gw: &Gateway, a: &Approval) {
    let Some(url) = gw.snapshot.approvals.webhook_url.clone() else {
        return;
    };
    let sent = gw
        .shared
        .webhooks
        .allow(gw.snapshot.approvals.webhook_max_per_minute);
    gw.shared.metrics.webhook_notification(sent);
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
        where_to_decide(gw, &a.id),
    );
    let body = serde_json::json!({
        "text": text,
        "approval_id": a.id,
        "agent_id": a.agent_id,
        "agent_owner": a.agent_owner,
        "tool": a.tool,
        "operation": a.operation,
        "identity_kind": a.identity_kind,
    })
    .to_string();
    let client = gw.shared.http.clone();
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

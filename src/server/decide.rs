//! What the admin API, Slack's callbacks and the console share: the JSON answers and
//! errors, the audit record of an administrator's action, and the one path every
//! approval decision takes (separation of duties, the store, the audit record, metrics,
//! waking held requests), wherever it was made.

use crate::gateway::Runtime;
use crate::store::{Approval, Approve, StoreError};
use crate::telemetry::audit_log::AdminAction;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use std::convert::Infallible;

/// Every answer of the admin listener: whole bodies, and the console's event stream.
pub type AdminBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// A whole body.
pub fn full(b: impl Into<Bytes>) -> AdminBody {
    http_body_util::Full::new(b.into()).boxed_unsync()
}

pub fn json(status: StatusCode, v: serde_json::Value) -> Response<AdminBody> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<AdminBody> {
    json(
        status,
        serde_json::json!({"error": code, "message": message.into()}),
    )
}

pub fn store_error(e: StoreError) -> Response<AdminBody> {
    match e {
        StoreError::NotFound => error(StatusCode::NOT_FOUND, "not_found", "no such approval"),
        StoreError::Conflict(m) => error(StatusCode::CONFLICT, "conflict", m),
        StoreError::TooManyPending(max) => error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_pending_approvals",
            format!("the agent already has {max} approvals pending"),
        ),
        StoreError::Unavailable(m) => {
            tracing::error!("store unavailable: {m}");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store cannot be reached",
            )
        }
    }
}

/// Writes an administrator's action (a decision, or an action on captured secrets) to
/// the audit log; `identity` says how the one acting proved who they are.
pub fn audit_admin(
    rt: &Runtime,
    path: &str,
    inventory_id: Option<&str>,
    approval_id: Option<&str>,
    identity: &'static str,
    action: crate::telemetry::audit_log::AdminAction,
    status: u16,
) {
    let ids = (inventory_id, approval_id);
    rt.shared
        .audit
        .record(admin_record(rt, path, None, ids, identity, action, status));
}

/// Writes the opening or end of a task to the audit log, naming its agent and the task.
pub fn audit_task(
    rt: &Runtime,
    path: &str,
    task: &crate::store::Task,
    identity: &'static str,
    action: crate::telemetry::audit_log::AdminAction,
    status: u16,
) {
    let mut r = admin_record(rt, path, None, (None, None), identity, action, status);
    r.agent_id = Some(task.agent_id.as_str().into());
    r.task = Some(task.id.clone());
    rt.shared.audit.record(r);
}

/// Writes an action on the inventory of one tool (a reconcile, an identity it retired, an
/// identity adopted) to the audit log, naming the tool.
pub fn audit_inventory(
    rt: &Runtime,
    path: &str,
    tool: &str,
    inventory_id: Option<&str>,
    identity: &'static str,
    action: crate::telemetry::audit_log::AdminAction,
    status: u16,
) {
    let ids = (inventory_id, None);
    rt.shared.audit.record(admin_record(
        rt,
        path,
        Some(tool),
        ids,
        identity,
        action,
        status,
    ));
}

/// The audit record of an administrator's action; `ids` the inventory record and the
/// approval it was about.
fn admin_record(
    rt: &Runtime,
    path: &str,
    tool: Option<&str>,
    (inventory_id, approval_id): (Option<&str>, Option<&str>),
    identity: &'static str,
    action: crate::telemetry::audit_log::AdminAction,
    status: u16,
) -> crate::telemetry::audit_log::AuditRecord {
    use crate::telemetry::audit_log::AuditRecord;
    let operation = match action.action {
        "approve" | "deny" => format!("keygate:approval.{}", action.action),
        "suspend" | "resume" => format!("keygate:agent.{}", action.action),
        "sign_in" => "keygate:console.sign_in".to_string(),
        "open_task" => "keygate:task.open".to_string(),
        "end_task" => "keygate:task.end".to_string(),
        "reconcile" | "retire" | "adopt" | "notify" | "deactivate" | "renew" => {
            format!("keygate:inventory.{}", action.action)
        }
        other => format!("keygate:captured.{other}"),
    };
    let mut r = AuditRecord::event(
        crate::pipeline::audit::rfc3339_millis(std::time::SystemTime::now()),
        rt.current().next_request_id(),
        "admin".into(),
        operation,
        "POST".into(),
        path.to_string(),
        status,
    );
    r.identity = Some(identity);
    r.tool = tool.map(Into::into);
    r.approval_id = approval_id.map(str::to_string);
    r.inventory_id = inventory_id.map(str::to_string);
    r.admin = Some(action);
    r
}

/// How a decision was made: through what, by whom as they proved it, and from where.
pub struct Decider<'a> {
    /// The approver recorded on the approval: a signed-in identity (console), the
    /// configured mapping of a Slack user, or the name given with the admin token.
    pub approver: &'a str,
    /// `api`, `cli`, `slack` or `console`.
    pub via: &'static str,
    /// How they proved who they are (the audit record's `identity`): `admin-token`,
    /// `slack-signature` or `oidc`.
    pub identity: &'static str,
    /// Who they are there, beyond `approver` (the Slack user, the OIDC subject, "admin
    /// token"), and from which address.
    pub from: String,
    /// The endpoint, for the audit record.
    pub path: &'a str,
}

/// What is decided.
pub enum Decision {
    Approve(Approve),
    Deny { reason: Option<String> },
}

/// Refuses an approval by the owner of the agent that asked (`approvals.
/// separation_of_duties`, on by default): 403 `separation_of_duties`. Owners are
/// compared without regard to case or surrounding space, as emails are.
pub fn owns_agent(approval: &Approval, approver: &str) -> bool {
    approval
        .agent_owner
        .trim()
        .eq_ignore_ascii_case(approver.trim())
}

/// Makes a decision: refused by separation of duties when on (an approval by the agent's
/// owner; denying one's own agent's request is allowed), then stored, audited, counted,
/// and every request held for an approval in this process woken. `now` is the instant the
/// caller measured the approval's expiry and review date from, so that they are exact.
pub async fn decide(
    rt: &Runtime,
    id: &str,
    decision: Decision,
    who: Decider<'_>,
    now: i64,
) -> Result<Approval, Response<AdminBody>> {
    let store = &rt.shared.store;
    let approve = matches!(decision, Decision::Approve(_));
    if approve && rt.current().snapshot.approvals.separation_of_duties {
        match store.approval(id).await {
            Ok(Some(a)) if owns_agent(&a, who.approver) => {
                tracing::warn!(approval_id = %id, approver = %who.approver, via = who.via,
                    "approval refused: the approver owns the agent that asked");
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "separation_of_duties",
                    format!(
                        "{} owns agent {:?}, which asked: someone else must approve its request",
                        who.approver, a.agent_id
                    ),
                ));
            }
            Ok(_) => {}
            Err(e) => return Err(store_error(e)),
        }
    }
    let decided = match decision {
        Decision::Approve(a) => store.approve(id, a, now).await,
        Decision::Deny { reason } => store.deny(id, who.approver, reason.as_deref(), now).await,
    };
    let a = decided.map_err(store_error)?;
    let action = if approve { "approve" } else { "deny" };
    // The first of two approvals decides nothing yet: it is recorded, not counted.
    let first_of_two = approve && a.status == crate::store::ApprovalStatus::Pending;
    if first_of_two {
        tracing::info!(approval_id = %a.id, approver = %who.approver, via = who.via,
            "first of two approvals; a second, different approver must approve");
    } else {
        tracing::info!(approval_id = %a.id, approver = %who.approver, via = who.via, "approval {action}d");
    }
    audit_admin(
        rt,
        who.path,
        None,
        Some(&a.id),
        who.identity,
        AdminAction {
            action,
            by: who.approver.to_string(),
            reason: if first_of_two {
                Some("first of two approvals".into())
            } else {
                a.note.clone()
            },
            agent: Some(a.agent_id.clone()),
            via: Some(who.via),
            from: Some(who.from),
        },
        200,
    );
    if !first_of_two {
        rt.shared.metrics.approval_decided(approve);
        rt.shared.decisions.notify_waiters();
    }
    Ok(a)
}

/// Suspends an agent: in the store (every replica learns it), in this process at once,
/// and what was issued for it and cached is dropped.
pub async fn suspend(
    rt: &Runtime,
    id: &str,
    by: &str,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    rt.shared
        .store
        .suspend(id, by, reason, rt.shared.clock.unix_millis())
        .await?;
    rt.shared.set_suspended(id);
    rt.current().forget_agent(id);
    tracing::info!(agent = %id, by = %by, "agent suspended");
    Ok(())
}

/// Resumes an agent; returns whether it was suspended. Read back rather than removed
/// here: a suspension another replica made since must stand.
pub async fn resume(rt: &Runtime, id: &str) -> Result<bool, StoreError> {
    let was = rt.shared.store.resume(id).await?;
    // A suspension this replica could not record yet is lifted with it.
    if let Ok(mut u) = rt.shared.unrecorded_suspensions.lock() {
        u.remove(id);
    }
    // A human resumed the agent: an anomaly's hold on its write calls ends too.
    rt.shared
        .baselines
        .release(id, rt.shared.clock.unix_millis());
    // Written now, for the other replicas to lift their hold at their next read.
    rt.shared.flush_baselines().await;
    if let Err(e) = rt.shared.reread_suspensions().await {
        tracing::warn!(
            "agent resumed in the store; this replica applies it at its next read ({e})"
        );
    }
    tracing::info!(agent = %id, "agent resumed");
    Ok(was)
}

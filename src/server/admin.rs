//! The admin API: its own listener (loopback by default), every call but `/healthz`,
//! `/readyz` and `/metrics` authenticated with the admin token. Approvers decide here
//! (directly or through `keygate approvals …`), auditors read the inventory, operators
//! suspend agents and reload.
//!
//! `/metrics` (Prometheus text format) is open like the probes: scrapers rarely carry a
//! token, and it holds no secret and no id beyond tool names, decisions, status codes and
//! provider kinds (see [`crate::telemetry::metrics`]).
//!
//! ```text
//! GET  /healthz                                  GET /readyz            GET /metrics
//! GET  /approvals[?status=pending&limit=N]      POST /approvals/{id}/approve | /deny
//! GET  /approvals/{id}
//! GET  /inventory                               POST /inventory/{id}/revoke | /share | /reveal
//! POST /inventory/reconcile/{tool}               POST /inventory/adopt
//! POST /inventory/retire/{tool}                  POST /inventory/{id}/renew
//! GET  /agents/suspended                         POST /agents/{id}/suspend | /resume
//! GET  /agents/{id}   (its suspension, baseline and recent anomalies)
//! POST /reload
//! ```

use crate::gateway::Runtime;
use crate::pipeline::identify::aws_key::{self, AgentKeys};
use crate::store::{ApprovalStatus, Approve, StoreError};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::decide::{
    audit_admin, decide, error, full, json, store_error, AdminBody, Decider, Decision,
};

/// Binds the admin listener and serves until `shutdown` turns true.
pub async fn serve(
    rt: Arc<Runtime>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let listen = rt.current().snapshot.admin.listen.clone();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("cannot listen on {listen} (admin): {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let tls = match &rt.current().snapshot.admin.tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
            t,
        )?)),
        None => None,
    };
    tracing::info!(%addr, tls = tls.is_some(), "admin API is listening");
    let console = Arc::new(super::console::Console::new());
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
                _ = shutdown.changed() => return,
            };
            let rt = rt.clone();
            let console = console.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let rt = rt.clone();
                    let console = console.clone();
                    async move { Ok::<_, Infallible>(handle(&rt, &console, req, peer).await) }
                });
                let builder = {
                    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    b.http1()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10));
                    b
                };
                match tls {
                    Some(acceptor) => {
                        let Ok(Ok(stream)) =
                            tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                                .await
                        else {
                            return;
                        };
                        let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            });
        }
    });
    Ok((addr, task))
}

/// Whether the request bears the admin token, compared in constant time (aws-lc's
/// `CRYPTO_memcmp`) so the token cannot be guessed byte by byte from timing; only its
/// length can be learnt.
fn authorized(rt: &Runtime, req: &Request<Incoming>) -> bool {
    req.headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| {
            let token = rt.shared.admin_token.as_bytes();
            aws_lc_rs::constant_time::verify_slices_are_equal(t.trim().as_bytes(), token).is_ok()
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    approver: String,
    /// The human who will own the identity created.
    owner: String,
    ticket: Option<String>,
    note: Option<String>,
    /// How long the approval may be used (once), e.g. "1h"; the configured default otherwise.
    expires_in: Option<String>,
    /// When the created identity is due for review, e.g. "90d"; the configured default otherwise.
    review_in: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyBody {
    approver: String,
    note: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    by: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SuspendBody {
    by: Option<String>,
    reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    by: Option<String>,
    reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReconcileBody {
    by: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RetireBody {
    by: Option<String>,
    /// Report what would be done; change nothing.
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareBody {
    agent: String,
    by: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevealBody {
    approver: String,
    reason: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RekeyBody {
    by: Option<String>,
}

/// `POST /slack/interactions`: an Approve or Deny click in Slack, verified
/// ([`super::slack::verify`]), by a Slack user the configuration maps to an approver.
/// Approving records that approver, the agent's owner as the identity's owner, and the
/// configured expiry and review date; the Slack message is then updated.
async fn slack_interaction(rt: &Runtime, req: Request<Incoming>) -> Response<AdminBody> {
    use crate::slack;
    let gw = rt.current();
    let Some(settings) = gw.snapshot.approvals.slack.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "Slack approvals are not configured ([approvals.slack])",
        );
    };
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (ts, sig) = (
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
    );
    let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the body could not be read",
            )
        }
    };
    let now_ms = rt.shared.clock.unix_millis();
    if let Err(r) = slack::verify(
        &settings.signing_secret,
        ts.as_deref(),
        sig.as_deref(),
        &body,
        now_ms / 1000,
        &slack::REPLAYS,
    ) {
        tracing::warn!(reason = r.code(), "Slack callback refused");
        return error(StatusCode::UNAUTHORIZED, r.code(), r.message());
    }
    let click = match slack::parse(&body) {
        Ok(c) => c,
        Err(m) => return error(StatusCode::BAD_REQUEST, "bad_request", m),
    };
    let Some(approver) = settings.users.get(&click.user_id).cloned() else {
        return error(
            StatusCode::FORBIDDEN,
            "unknown_approver",
            format!(
                "Slack user {} is not an approver (approvals.slack.users)",
                click.user_id
            ),
        );
    };
    let id = click.approval_id.clone();
    let decision = if click.approve {
        let a = &gw.snapshot.approvals;
        let owner = match rt.shared.store.approval(&id).await {
            Ok(Some(x)) => x.agent_owner,
            Ok(None) => return store_error(StoreError::NotFound),
            Err(e) => return store_error(e),
        };
        Decision::Approve(Approve {
            approver: approver.clone(),
            ticket: None,
            identity_owner: owner,
            note: Some("approved in Slack".into()),
            expires_at: now_ms + a.approval_ttl.as_millis() as i64,
            review_by: Some(now_ms + a.review_after.as_millis() as i64),
        })
    } else {
        Decision::Deny {
            reason: Some("denied in Slack".into()),
        }
    };
    let who = Decider {
        approver: &approver,
        via: "slack",
        identity: "slack-signature",
        from: format!("Slack user {}", click.user_id),
        path: "/slack/interactions",
    };
    let a = match decide(rt, &id, decision, who, now_ms).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let verb = match (click.approve, a.status) {
        (true, crate::store::ApprovalStatus::Pending) => {
            "approved (1 of 2: a second, different approver must approve)"
        }
        (true, _) => "approved",
        (false, _) => "denied",
    };
    let text = format!(
        "keygate: approval `{}` ({} on `{}` for agent `{}`) was *{verb}* by {approver} in Slack.",
        a.id, a.operation, a.tool, a.agent_id
    );
    // The message is updated where Slack said, only at Slack's address (configurable).
    if let Some(url) = click
        .response_url
        .filter(|u| u.starts_with(&settings.response_url_prefix))
    {
        let http = rt.shared.http.clone();
        let body = serde_json::json!({"replace_original": true, "text": text});
        tokio::spawn(async move {
            let Ok(req) = http::Request::post(url.as_str())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(crate::error::full_body(body.to_string()))
            else {
                return;
            };
            let sent = crate::http_client::send_small(
                &http,
                req,
                16 * 1024,
                Duration::from_secs(5),
                "Slack's response_url",
            )
            .await;
            match sent {
                Ok((status, _)) if status.is_success() => {}
                Ok((status, _)) => tracing::warn!(%status, "Slack refused the message update"),
                Err(e) => tracing::warn!("cannot update the Slack message: {e}"),
            }
        });
    }
    json(StatusCode::OK, serde_json::json!({"text": text}))
}

/// A refusal computed by a helper (boxed: responses are large).
type Refusal = Box<Response<AdminBody>>;

async fn body_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Refusal> {
    let bytes = http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|_| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the body could not be read",
            ))
        })?
        .to_bytes();
    let text = if bytes.is_empty() {
        &b"{}"[..]
    } else {
        &bytes[..]
    };
    serde_json::from_slice(text).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("invalid JSON body: {e}"),
        ))
    })
}

fn duration_ms(s: Option<&str>, default: Duration, field: &str) -> Result<i64, Refusal> {
    let d = match s {
        None => default,
        Some(s) => humantime::parse_duration(s).map_err(|_| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{field}: {s:?} is not a duration such as 1h or 90d"),
            ))
        })?,
    };
    Ok(d.as_millis() as i64)
}

/// How long `/readyz` waits for the store and for the audit writer.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// `/readyz`: 200 when the store answers a cheap query and the audit writer flushes what
/// is queued, each within [`READY_TIMEOUT`]; 503 with the reason otherwise (and at once,
/// `audit_unavailable`, while the audit log cannot be written).
async fn readyz(rt: &Runtime) -> Response<AdminBody> {
    let not_ready = |reason: &str, message: &str| {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "not_ready", "reason": reason, "message": message}),
        )
    };
    if !rt.shared.audit.is_writing() {
        return not_ready(
            "audit_unavailable",
            "the audit log cannot be written (see keygate_audit_write_failures_total and the log)",
        );
    }
    if !rt.shared.freshness.usable(&rt.current().snapshot.store) {
        return not_ready(
            "store_unavailable",
            "this replica's view of suspensions is stale: the store cannot be read",
        );
    }
    let store = rt.shared.store.approvals(Some(ApprovalStatus::Pending), 1);
    match tokio::time::timeout(READY_TIMEOUT, store).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!("readiness: the store did not answer: {e}");
            return not_ready("store_unavailable", "the store cannot be reached");
        }
        Err(_) => {
            return not_ready(
                "store_unavailable",
                "the store did not answer within 2 seconds",
            )
        }
    }
    // The writer acknowledges a flush once everything queued before it is written; a
    // writer that died acknowledges nothing.
    if !rt.shared.audit.is_alive()
        || tokio::time::timeout(READY_TIMEOUT, rt.shared.audit.close())
            .await
            .is_err()
    {
        return not_ready(
            "audit_writer_stalled",
            "the audit writer did not flush within 2 seconds",
        );
    }
    json(StatusCode::OK, serde_json::json!({"status": "ready"}))
}

/// `/metrics`: the Prometheus exposition; the approval gauges are counted by the store now
/// (one `GROUP BY` query, never the rows; approvals past their pending expiry are not
/// counted as pending).
async fn metrics(rt: &Runtime) -> Response<AdminBody> {
    let now = rt.shared.clock.unix_millis();
    let counts = match rt.shared.store.approval_counts(now).await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("metrics: cannot count approvals: {e}");
            None
        }
    };
    let audit = crate::telemetry::metrics::AuditQueueStats {
        waits: rt.shared.audit.backpressure_waits(),
        depth: rt.shared.audit.queue_depth(),
        write_failures: rt.shared.audit.write_failures(),
        writing: rt.shared.audit.is_writing(),
    };
    let text = rt.shared.metrics.render(counts.as_ref(), audit);
    let mut r = Response::new(full(text));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(crate::telemetry::metrics::CONTENT_TYPE),
    );
    r
}

/// The decider of a decision made with the admin token.
fn token_decider<'a>(
    approver: &'a str,
    via: &'static str,
    path: &'a str,
    peer: SocketAddr,
) -> Decider<'a> {
    Decider {
        approver,
        via,
        identity: "admin-token",
        from: format!("admin token from {}", peer.ip()),
        path,
    }
}

async fn handle(
    rt: &Arc<Runtime>,
    console: &super::console::Console,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<AdminBody> {
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if req.method() == Method::GET {
        match segs.as_slice() {
            ["healthz"] => return json(StatusCode::OK, serde_json::json!({"status": "ok"})),
            ["readyz"] => return readyz(rt).await,
            ["metrics"] => return metrics(rt).await,
            _ => {}
        }
    }
    // The console signs its users in itself (OpenID Connect, session cookies).
    if segs.first() == Some(&"console") {
        return super::console::handle(rt, console, req, peer).await;
    }
    // Slack's callbacks carry Slack's signature, not the admin token.
    if req.method() == Method::POST && segs.as_slice() == ["slack", "interactions"] {
        return slack_interaction(rt, req).await;
    }
    if !authorized(rt, &req) {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "the admin API needs `Authorization: Bearer <admin token>`",
        );
    }
    let store = &rt.shared.store;
    let method = req.method().clone();
    // The CLI says it is the CLI; anything else with the admin token is the API.
    let via = match req.headers().get("x-keygate-client").map(|v| v.as_bytes()) {
        Some(b"cli") => "cli",
        _ => "api",
    };
    match (method, segs.as_slice()) {
        (Method::GET, ["approvals"]) => {
            let q = req.uri().query().unwrap_or("");
            let mut status = None;
            let mut limit = 100;
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                match &*k {
                    "status" => match ApprovalStatus::parse(&v) {
                        Some(s) => status = Some(s),
                        None => {
                            return error(
                                StatusCode::BAD_REQUEST,
                                "bad_request",
                                format!("unknown status {v:?}"),
                            )
                        }
                    },
                    "limit" => limit = v.parse().unwrap_or(100).min(10_000),
                    _ => {}
                }
            }
            let _ = store.expire(rt.shared.clock.unix_millis()).await;
            match store.approvals(status, limit).await {
                Ok(list) => json(StatusCode::OK, serde_json::json!({ "approvals": list })),
                Err(e) => store_error(e),
            }
        }
        (Method::GET, ["approvals", id]) => {
            let _ = store.expire(rt.shared.clock.unix_millis()).await;
            match store.approval(id).await {
                Ok(Some(a)) => json(StatusCode::OK, serde_json::json!(a)),
                Ok(None) => store_error(StoreError::NotFound),
                Err(e) => store_error(e),
            }
        }
        (Method::POST, ["approvals", id, "approve"]) => {
            let id = id.to_string();
            let b: ApproveBody = match body_json(req).await {
                Ok(b) => b,
                Err(r) => return *r,
            };
            if b.approver.trim().is_empty() || b.owner.trim().is_empty() {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "approver and owner must not be empty",
                );
            }
            let settings = rt.current().snapshot.approvals.clone();
            let now = rt.shared.clock.unix_millis();
            let expires =
                match duration_ms(b.expires_in.as_deref(), settings.approval_ttl, "expires_in") {
                    Ok(d) => now + d,
                    Err(r) => return *r,
                };
            let review =
                match duration_ms(b.review_in.as_deref(), settings.review_after, "review_in") {
                    Ok(d) => now + d,
                    Err(r) => return *r,
                };
            let decision = Decision::Approve(Approve {
                approver: b.approver.clone(),
                ticket: b.ticket,
                identity_owner: b.owner,
                note: b.note,
                expires_at: expires,
                review_by: Some(review),
            });
            match decide(
                rt,
                &id,
                decision,
                token_decider(&b.approver, via, &path, peer),
                now,
            )
            .await
            {
                Ok(a) => json(StatusCode::OK, serde_json::json!(a)),
                Err(r) => r,
            }
        }
        (Method::POST, ["approvals", id, "deny"]) => {
            let id = id.to_string();
            let b: DenyBody = match body_json(req).await {
                Ok(b) => b,
                Err(r) => return *r,
            };
            if b.approver.trim().is_empty() {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "approver must not be empty",
                );
            }
            let decision = Decision::Deny { reason: b.note };
            match decide(
                rt,
                &id,
                decision,
                token_decider(&b.approver, via, &path, peer),
                rt.shared.clock.unix_millis(),
            )
            .await
            {
                Ok(a) => json(StatusCode::OK, serde_json::json!(a)),
                Err(r) => r,
            }
        }
        (Method::GET, ["inventory"]) => match store.inventory().await {
            Ok(list) => json(StatusCode::OK, serde_json::json!({ "identities": list })),
            Err(e) => store_error(e),
        },
        (Method::POST, ["inventory", "reconcile", tool]) => {
            let tool = tool.to_string();
            let b: ReconcileBody = match body_json(req).await {
                Ok(b) => b,
                Err(r) => return *r,
            };
            let by = b.by.unwrap_or_else(|| "admin".into());
            super::reconcile::reconcile(rt, &tool, &path, &by).await
        }
        (Method::POST, ["inventory", "retire", tool]) => {
            let tool = tool.to_string();
            let b: RetireBody = match body_json(req).await {
                Ok(b) => b,
                Err(r) => return *r,
            };
            let by = b.by.unwrap_or_else(|| "admin".into());
            super::retire::retire(rt, &tool, &path, &by, b.dry_run).await
        }
        (Method::POST, ["inventory", id, "renew"]) => {
            let id = id.to_string();
            let b: super::retire::RenewBody = match body_json(req).await {
                Ok(b) => b,
                Err(r) => return *r,
            };
            super::retire::renew(rt, &id, b, &path).await
        }
        (Method::GET, ["tasks"]) => {
            let now = rt.shared.clock.unix_millis();
            match store.tasks(now - crate::tasks::RETAIN_MS).await {
                Ok(list) => {
                    let list: Vec<_> = list.iter().map(|t| crate::tasks::view(t, now)).collect();
                    json(StatusCode::OK, serde_json::json!({ "tasks": list }))
                }
                Err(e) => store_error(e),
            }
        }
        (Method::POST, ["tasks"]) => {
            let b: crate::tasks::Opening = match body_json(req).await {
                Ok(b) => b,
                Err(r) => return *r,
            };
            let Some(agent) = b.agent.clone() else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "agent is required: the agent the task is for",
                );
            };
            let by = b.by.clone().unwrap_or_else(|| "admin".into());
            super::tasks::open(rt, &path, b, &agent, &by, "admin-token", via).await
        }
        (Method::POST, ["tasks", id, "end"]) => {
            let id = id.to_string();
            let b: super::tasks::EndTaskBody = match body_json(req).await {
                Ok(b) => b,
                Err(r) => return *r,
            };
            let by = b.by.unwrap_or_else(|| "admin".into());
            super::tasks::end(rt, &path, &id, &by, "admin-token", via).await
        }
        (Method::POST, ["inventory", "adopt"]) => {
            let b: super::reconcile::AdoptBody = match body_json(req).await {
                Ok(b) => b,
                Err(r) => return *r,
            };
            super::reconcile::adopt(rt, b, &path).await
        }
        (Method::POST, ["inventory", id, "revoke"]) => {
            let id = id.to_string();
            let b: RevokeBody = match body_json(req).await {
                Ok(b) => b,
                Err(r) => return *r,
            };
            let by = b.by.unwrap_or_else(|| "admin".into());
            match store
                .revoke_identity(&id, &by, rt.shared.clock.unix_millis())
                .await
            {
                Ok(done) => {
                    // The handles stop working in this process at once.
                    rt.shared.vault.forget_identity(&id);
                    for h in &done.handles {
                        rt.shared.agent_keys.forget(h);
                    }
                    audit_admin(
                        rt,
                        &path,
                        Some(&id),
                        None,
                        "admin-token",
                        crate::telemetry::audit_log::AdminAction {
                            action: "revoke",
                            by: by.clone(),
                            reason: b.reason,
                            agent: None,
                            ..Default::default()
                        },
                        200,
                    );
                    tracing::info!(identity = %id, by = %by, handles = done.handles.len(), "inventory record revoked");
                    json(
                        StatusCode::OK,
                        serde_json::json!({
                            "id": id,
                            "revoked": true,
                            "already_revoked": done.already,
                            "handles_revoked": done.handles.len(),
                        }),
                    )
                }
                Err(StoreError::NotFound) => error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no such inventory record",
                ),
                Err(e) => store_error(e),
            }
        }
        (Method::POST, ["inventory", id, "share"]) => {
            let id = id.to_string();
            let b: ShareBody = match body_json(req).await {
                Ok(b) => b,
                Err(r) => return *r,
            };
            if !rt
                .current()
                .snapshot
                .agents
                .by_id
                .contains_key(b.agent.as_str())
            {
                return error(
                    StatusCode::NOT_FOUND,
                    "unknown_agent",
                    format!("no agent {:?} in the configuration", b.agent),
                );
            }
            match store.share_captured(&id, &b.agent).await {
                Ok(0) => error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "keygate holds no captured secret for this inventory record",
                ),
                Ok(n) => {
                    match store.captured().await {
                        Ok(all) => rt.shared.vault.set(all),
                        Err(e) => return store_error(e),
                    }
                    audit_admin(
                        rt,
                        &path,
                        Some(&id),
                        None,
                        "admin-token",
                        crate::telemetry::audit_log::AdminAction {
                            action: "share",
                            by: b.by.unwrap_or_else(|| "admin".into()),
                            reason: None,
                            agent: Some(b.agent.clone()),
                            ..Default::default()
                        },
                        200,
                    );
                    json(
                        StatusCode::OK,
                        serde_json::json!({"id": id, "agent": b.agent, "secrets": n}),
                    )
                }
                Err(e) => store_error(e),
            }
        }
        (Method::POST, ["inventory", id, "reveal"]) => {
            let id = id.to_string();
            let b: RevealBody = match body_json(req).await {
                Ok(b) => b,
                Err(r) => return *r,
            };
            if b.approver.trim().is_empty() || b.reason.trim().is_empty() {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "revealing a captured secret needs the approver's name and a reason",
                );
            }
            let all = match store.captured().await {
                Ok(all) => all,
                Err(e) => return store_error(e),
            };
            let mut secrets = Vec::new();
            for c in all.iter().filter(|c| c.identity_id == id) {
                match rt.shared.vault.open(c) {
                    Ok(s) => {
                        let text = String::from_utf8_lossy(s.bytes()).into_owned();
                        let value = match c.shape {
                            crate::capture::Shape::AwsSecretKey => match text.split_once('\n') {
                                Some((id, key)) => serde_json::json!({
                                    "access_key_id": id, "secret_access_key": key
                                }),
                                None => serde_json::Value::Null,
                            },
                            crate::capture::Shape::Token => serde_json::Value::String(text),
                        };
                        secrets.push(serde_json::json!({"field": c.field, "value": value}));
                    }
                    Err(e) => {
                        return error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "capture_failed",
                            e.message,
                        )
                    }
                }
            }
            let status = if secrets.is_empty() { 404 } else { 200 };
            audit_admin(
                rt,
                &path,
                Some(&id),
                None,
                "admin-token",
                crate::telemetry::audit_log::AdminAction {
                    action: "reveal",
                    by: b.approver.clone(),
                    reason: Some(b.reason.clone()),
                    agent: None,
                    ..Default::default()
                },
                status,
            );
            tracing::warn!(identity = %id, approver = %b.approver, "captured secret revealed");
            if secrets.is_empty() {
                return error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "keygate holds no captured secret for this inventory record",
                );
            }
            let mut r = json(
                StatusCode::OK,
                serde_json::json!({"id": id, "secrets": secrets}),
            );
            r.headers_mut().insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-store"),
            );
            r
        }
        (Method::POST, ["capture", "rekey"]) => {
            let b: RekeyBody = match body_json(req).await {
                Ok(b) => b,
                Err(r) => return *r,
            };
            let all = match store.captured().await {
                Ok(all) => all,
                Err(e) => return store_error(e),
            };
            let vault = &rt.shared.vault;
            let mut resealed = 0;
            for c in all
                .iter()
                .filter(|c| c.sealed.key_id != vault.sealer.current_id())
            {
                let sealed = vault
                    .open(c)
                    .and_then(|s| vault.sealer.seal(s.bytes(), &crate::capture::aad(c)));
                let sealed = match sealed {
                    Ok(s) => s,
                    Err(e) => {
                        return error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "capture_failed",
                            e.message,
                        )
                    }
                };
                if let Err(e) = store.reseal(&c.handle_hash, &sealed).await {
                    return store_error(e);
                }
                resealed += 1;
            }
            match store.captured().await {
                Ok(all) => vault.set(all),
                Err(e) => return store_error(e),
            }
            audit_admin(
                rt,
                &path,
                None,
                None,
                "admin-token",
                crate::telemetry::audit_log::AdminAction {
                    action: "rekey",
                    by: b.by.unwrap_or_else(|| "admin".into()),
                    reason: None,
                    agent: None,
                    ..Default::default()
                },
                200,
            );
            json(
                StatusCode::OK,
                serde_json::json!({"resealed": resealed, "key_id": vault.sealer.current_id()}),
            )
        }
        (Method::GET, ["agents", "suspended"]) => match store.suspensions().await {
            Ok(list) => json(StatusCode::OK, serde_json::json!({ "suspended": list })),
            Err(e) => store_error(e),
        },
        (Method::GET, ["agents", id]) => {
            let id = id.to_string();
            let now = rt.shared.clock.unix_millis();
            let baseline = rt.shared.baselines.show(&id, now);
            let owner = rt
                .current()
                .snapshot
                .agents
                .by_id
                .get(id.as_str())
                .map(|a| a.owner.to_string());
            if owner.is_none() && baseline.is_none() {
                return error(
                    StatusCode::NOT_FOUND,
                    "unknown_agent",
                    format!("no agent {id:?} in the configuration, and none with a baseline"),
                );
            }
            match store.suspensions().await {
                Ok(list) => {
                    let suspension = list.into_iter().find(|s| s.agent_id == id);
                    json(
                        StatusCode::OK,
                        serde_json::json!({
                            "agent_id": id,
                            "owner": owner,
                            "suspension": suspension,
                            "baseline": baseline,
                        }),
                    )
                }
                Err(e) => store_error(e),
            }
        }
        (Method::POST, ["agents", id, "suspend"]) => {
            let id = id.to_string();
            let b: SuspendBody = match body_json(req).await {
                Ok(b) => b,
                Err(r) => return *r,
            };
            let by = b.by.unwrap_or_else(|| "admin".into());
            match super::decide::suspend(rt, &id, &by, b.reason.as_deref()).await {
                Ok(()) => json(
                    StatusCode::OK,
                    serde_json::json!({"agent_id": id, "suspended": true}),
                ),
                Err(e) => store_error(e),
            }
        }
        (Method::POST, ["agents", id, "resume"]) => {
            let id = id.to_string();
            match super::decide::resume(rt, &id).await {
                Ok(was) => json(
                    StatusCode::OK,
                    serde_json::json!({"agent_id": id, "suspended": false, "was_suspended": was}),
                ),
                Err(e) => store_error(e),
            }
        }
        (Method::POST, ["agents", id, "aws-keys"]) => {
            let id = id.to_string();
            let b: KeyBody = match body_json(req).await {
                Ok(b) => b,
                Err(r) => return *r,
            };
            if !rt.current().snapshot.agents.by_id.contains_key(id.as_str()) {
                return error(
                    StatusCode::NOT_FOUND,
                    "unknown_agent",
                    format!("no agent {id:?} in the configuration"),
                );
            }
            let access_key_id = match AgentKeys::new_id() {
                Ok(k) => k,
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", e),
            };
            let fingerprint = aws_key::fingerprint(&access_key_id);
            let key = crate::store::AgentKey {
                key_hash: fingerprint.clone(),
                agent_id: id.clone(),
                created_by: b.by.unwrap_or_else(|| "admin-token".into()),
                created_at: rt.shared.clock.unix_millis(),
                revoked_at: None,
            };
            if let Err(e) = store.add_agent_key(&key).await {
                return store_error(e);
            }
            // Usable here at once: a read of the store older than the key is not applied.
            rt.shared.agent_keys.add(&fingerprint, &id, false);
            if let Err(e) = rt.shared.sync_agent_keys().await {
                tracing::warn!("agent key stored; in effect within seconds: {e}");
            }
            tracing::info!(agent = %id, fingerprint = %fingerprint, "AWS key issued to agent");
            // The only time the key is shown: its id is stored hashed, its secret derived.
            let secret = rt.shared.agent_keys.secret_of(&access_key_id);
            json(
                StatusCode::CREATED,
                serde_json::json!({
                    "agent": id,
                    "access_key_id": access_key_id,
                    "secret_access_key": secret,
                    "fingerprint": fingerprint,
                    "created_at": key.created_at,
                }),
            )
        }
        (Method::GET, ["agents", id, "aws-keys"]) => match store.agent_keys().await {
            Ok(keys) => {
                let keys: Vec<_> = keys
                    .into_iter()
                    .filter(|k| k.agent_id == *id)
                    .map(|k| {
                        serde_json::json!({
                            "fingerprint": k.key_hash,
                            "agent": k.agent_id,
                            "created_by": k.created_by,
                            "created_at": k.created_at,
                            "revoked_at": k.revoked_at,
                        })
                    })
                    .collect();
                json(StatusCode::OK, serde_json::json!({ "keys": keys }))
            }
            Err(e) => store_error(e),
        },
        // By the key id, or by the fingerprint a listing shows.
        (Method::DELETE, ["aws-keys", key]) => {
            let is_fingerprint = key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit());
            let hash = if is_fingerprint {
                key.to_ascii_lowercase()
            } else {
                aws_key::fingerprint(key)
            };
            match store
                .revoke_agent_key(&hash, rt.shared.clock.unix_millis())
                .await
            {
                Ok(true) => {
                    // Refused at once here, whatever the re-read below does.
                    rt.shared.agent_keys.forget(&hash);
                    if let Err(e) = rt.shared.sync_agent_keys().await {
                        tracing::warn!(
                            "agent key revoked in the store; in effect within seconds: {e}"
                        );
                    }
                    tracing::info!(fingerprint = %hash, "agent AWS key revoked");
                    json(
                        StatusCode::OK,
                        serde_json::json!({"fingerprint": hash, "revoked": true}),
                    )
                }
                Ok(false) => error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no active key with that id or fingerprint",
                ),
                Err(e) => store_error(e),
            }
        }
        (Method::POST, ["reload"]) => match rt.reload().await {
            Ok(()) => {
                // Every other replica reloads too (with PostgreSQL; SQLite has none).
                let from = rt.shared.instance.clone();
                let announced = match rt
                    .shared
                    .store
                    .announce(crate::store::Change::Reload { from })
                    .await
                {
                    Ok(told) => told,
                    Err(e) => {
                        tracing::warn!("reloaded here, but other replicas were not told: {e}");
                        false
                    }
                };
                json(
                    StatusCode::OK,
                    serde_json::json!({"reloaded": true, "announced": announced}),
                )
            }
            Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, "reload_refused", e),
        },
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no admin endpoint {path}"),
        ),
    }
}

//! The request pipeline, one module per phase, in request order:
//!
//! ```text
//! identify   who is calling (verified JWT, mTLS SPIFFE ID); suspended agents stop here
//! classify   which tool, which operation (catalog, routes); canonical path
//! authorize  Cedar policies: allow, deny, or needs approval (every MCP message decided)
//! strip      remove the agent's credentials; refuse or redact known secret formats
//! inject     the tool's provider issues this agent's credential
//! approve    a needed approval of this exact request (as it will be sent), used once
//! forward    pooled client to the tool, streaming both ways
//! respond    keygate's credential removed from the response, as it streams
//! inventory  an identity created is recorded with its agent, approver, owner, ticket
//! audit      exactly one record per request, even when the agent went away
//! ```
//!
//! Approve runs after strip and inject on purpose: a request that strip or inject would
//! refuse never asks a human or spends an approval, and the approval's digest is over
//! what the tool will receive. Each request runs on a task of its own ([`handle`]), so a
//! forwarded call finishes and is audited whatever the agent's connection does.
//!
//! Every phase reads and extends one [`RequestCtx`]; a phase that refuses returns an
//! [`Error`], which [`Error::to_response`] maps to the wire. Nothing reaches a tool
//! before identify, authorize, strip and approve have passed, and nothing reaches it
//! without the credential inject produced: every path to `forward` goes through all of
//! them. A body is read (within the tool's limit) before anything is forwarded whenever
//! a phase needs it.

pub mod approve;
pub mod audit;
pub mod authorize;
pub mod body;
pub mod classify;
pub mod context;
pub mod forward;
pub mod identify;
pub mod inject;
pub mod inventory;
pub mod mcp;
pub mod respond;
pub mod strip;

use crate::conn::ConnInfo;
use crate::error::{Error, ErrorKind, ProxyBody};
use crate::gateway::Gateway;
use crate::telemetry::spans::RequestTrace;
use classify::Route;
pub use context::{Decision, RequestCtx};
use http::{header, Request, Response, StatusCode};
use std::sync::Arc;

/// Serves one request from an agent.
///
/// The request runs on a task of its own, to its end, whatever the agent's connection
/// does: once a request may have been forwarded, the tool runs it, so its audit record
/// (and its inventory record, where one is due) must be written even when no one is left
/// to read the answer. When the agent goes away first (hyper drops this future), the
/// task goes on and the audit record says `client_gone`.
pub async fn handle(
    gw: Arc<Gateway>,
    conn: Arc<ConnInfo>,
    req: Request<hyper::body::Incoming>,
) -> Response<ProxyBody> {
    // Fail closed: while the audit log cannot be written, no request is served unaudited
    // (`audit.fail_closed`). One atomic load; checked before the backpressure wait, which
    // a failing writer would never end.
    if gw.snapshot.audit_fail_closed && !gw.shared.audit.is_writing() {
        gw.shared.metrics.audit_refusal();
        let e = Error::new(
            ErrorKind::AuditUnavailable,
            "keygate cannot write its audit log right now; nothing was forwarded",
        );
        return e.to_response(&gw.next_request_id());
    }
    let gone = ClientGone::default();
    let task = tokio::spawn(handle_to_end(gw, conn, req, gone.flag.clone()));
    let resp = match task.await {
        Ok(resp) => resp,
        // A panic in the pipeline: the agent gets an error, never a forwarded answer.
        Err(e) => {
            tracing::error!("request task failed: {e}");
            Error::new(ErrorKind::Internal, "keygate failed to serve this request").to_response("")
        }
    };
    gone.disarm();
    resp
}

/// Sets its flag when dropped before [`ClientGone::disarm`]: the agent's connection went
/// away before keygate had its answer.
#[derive(Default)]
struct ClientGone {
    flag: Arc<std::sync::atomic::AtomicBool>,
    answered: bool,
}

impl ClientGone {
    fn disarm(mut self) {
        self.answered = true;
    }
}

impl Drop for ClientGone {
    fn drop(&mut self) {
        if !self.answered {
            self.flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

async fn handle_to_end(
    gw: Arc<Gateway>,
    conn: Arc<ConnInfo>,
    req: Request<hyper::body::Incoming>,
    client_gone: Arc<std::sync::atomic::AtomicBool>,
) -> Response<ProxyBody> {
    // Backpressure: wait here (before any work) while the audit writer is far behind.
    gw.shared.audit.admit().await;
    // The request's spans (when exported): attributes are set when the request ends
    // (audit), from the same context as the audit record, so the two never disagree.
    let mut trace = RequestTrace::start(req.headers());
    if let Some(trace) = trace.as_mut() {
        // server.address is the host the agent addressed; its port is server.port.
        let a = addressed_host(&req).and_then(|a| a.parse::<http::uri::Authority>().ok());
        if let Some(a) = a {
            trace.server = Some((a.host().to_string(), a.port_u16()));
        }
    }
    // The audit records the path keygate acts on; one it refuses to canonicalize is
    // recorded as sent (and refused by classify).
    let canonical = classify::canonicalize(req.uri().path()).map(std::borrow::Cow::into_owned);
    let path = match &canonical {
        Ok(p) => p.clone(),
        Err(_) => req.uri().path().to_string(),
    };
    let mut ctx = RequestCtx::new(
        gw.next_request_id(),
        conn,
        req.method().clone(),
        path,
        client_gone,
        trace,
    );
    let result = run(&gw, &mut ctx, req, canonical).await;
    let resp = match result {
        Ok(resp) => {
            // Only keygate's own key set is answered without a tool.
            ctx.decision = if ctx.tool.is_some() {
                Decision::Allow
            } else {
                Decision::Local
            };
            resp
        }
        Err(e) => {
            // A refusal (4xx) is keygate's decision; a failure after it allowed the call
            // (credential, upstream) is an error.
            ctx.decision = if e.kind.status().is_server_error() {
                Decision::Error
            } else if e.kind == ErrorKind::ApprovalRequired {
                Decision::NeedsApproval
            } else {
                Decision::Deny
            };
            match e.kind.status().as_u16() {
                500.. => tracing::warn!(
                    request_id = %ctx.request_id,
                    code = e.kind.code(),
                    detail = e.detail.as_deref().unwrap_or(""),
                    "{}",
                    e.message
                ),
                _ => tracing::info!(
                    request_id = %ctx.request_id,
                    code = e.kind.code(),
                    detail = e.detail.as_deref().unwrap_or(""),
                    "{}",
                    e.message
                ),
            }
            // The refusal speaks the dialect the agent's client reads.
            let resp = match (&ctx.mcp, &ctx.tool) {
                (Some(m), _) => mcp::error_response(&e, m, &ctx.request_id),
                (None, Some(t)) if t.tool.kind == crate::catalog::Kind::Aws => {
                    e.to_response_in(crate::error::Dialect::AwsXml, &ctx.request_id)
                }
                _ => e.to_response(&ctx.request_id),
            };
            ctx.error = Some(e);
            resp
        }
    };
    audit::attach(&gw.shared.audit, &gw.shared.metrics, ctx, resp)
}

/// The phases of one request, in order. Each phase is a function of what it needs; what
/// it finds is written here, once, to the request's context for the audit record.
async fn run(
    gw: &Arc<Gateway>,
    ctx: &mut RequestCtx,
    req: Request<hyper::body::Incoming>,
    canonical: Result<String, Error>,
) -> Result<Response<ProxyBody>, Error> {
    // classify, first the request itself: framing, method, path, and where it goes.
    classify::check_framing(&req)?;
    classify::check_method(req.method())?;
    let path = canonical?;
    let (tool, forward_path, tool_path) =
        match classify::route(&gw.tools, addressed_host(&req), &path) {
            Route::Jwks => return serve_jwks(&gw.shared.jwks_document, req.method()),
            Route::Tool {
                tool,
                forward_path,
                tool_path,
            } => (Some(tool), forward_path, tool_path),
            Route::Unknown => (None, String::new(), String::new()),
        };

    // identify: before anything about tools is revealed.
    let identity = identify::identify(
        &gw.identifier,
        &gw.snapshot.agents,
        &ctx.conn,
        req.headers(),
        |agent| gw.shared.is_suspended(agent),
        ctx.trace.as_mut(),
    )?;
    let agent = identity.agent.clone();
    ctx.identity = Some(identity);

    // classify: the tool, then (reading the body first when it decides) the operation.
    let tool = classify::tool(tool)?;
    ctx.tool = Some(tool.clone());
    let t = &tool.tool;
    let mcp_post = classify::is_mcp_post(t, req.method())?;
    let (parts, body) = req.into_parts();
    let read = strip::BodyRead {
        timeout: gw.snapshot.server.body_read_timeout,
        bytes_in: &ctx.bytes_in,
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let mut facts = classify::RequestFacts {
        method: &parts.method,
        tool_path: &tool_path,
        forward_path: &forward_path,
        query: parts.uri.query(),
        content_type,
        body: None,
        amz_target: parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok()),
    };
    // A body read to decide (the operation, MCP messages) is never rewritten after the
    // decision: strip refuses a secret in it rather than redact it.
    let body_decides = classify::needs_body(t, &facts);
    let mut body = strip::RequestBody::Unread(body);
    if body_decides {
        body = strip::RequestBody::Read(body.read(&read, t.max_body_bytes, &parts.headers).await?);
    }
    facts.body = body.bytes();
    let now = gw.shared.clock.unix_secs();

    // authorize: the policies decide the operation (an MCP POST: each of its messages).
    let (op, mcp_digest) = if mcp_post {
        let (record, post) = mcp::read(facts.body.unwrap_or_default(), &parts.headers);
        ctx.mcp = Some(record);
        let facts = mcp::PostFacts {
            method: &parts.method,
            tool_path: &tool_path,
            query: parts.uri.query(),
            headers: &parts.headers,
        };
        let (decided, result) = mcp::authorize(
            &gw.policies,
            &gw.snapshot.operations,
            t,
            &agent,
            &post?,
            &facts,
            now,
            ctx.trace.as_mut(),
        );
        ctx.operation = decided.operation.clone();
        ctx.authorization = decided.authorization;
        result?;
        (
            decided
                .operation
                .unwrap_or_else(|| gw.snapshot.operations.read.clone()),
            decided.digest,
        )
    } else {
        let op = classify::operation(&gw.snapshot.operations, t, &facts);
        ctx.operation = Some(op.clone());
        let input = crate::policy::Input {
            agent: &agent,
            tool: t,
            operation: &op,
            method: parts.method.as_str(),
            path: &tool_path,
            now_unix: now,
            approved: false,
            mcp: None,
        };
        let (authorization, result) =
            authorize::authorize(&gw.policies, ctx.trace.as_mut(), &input);
        ctx.authorization = authorization;
        result?;
        (op, None)
    };
    let needs_approval = ctx.authorization.allowed_by.is_some();
    if needs_approval && body.bytes().is_none() {
        // The approval is bound to the exact request, so the body is read now.
        body = strip::RequestBody::Read(body.read(&read, t.max_body_bytes, &parts.headers).await?);
    }

    // The host the agent addressed: `Host`, or over HTTP/2 the `:authority`.
    let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
    });
    // strip
    let stripped = strip::strip(
        t,
        &forward_path,
        parts,
        body,
        body_decides,
        &read,
        &mut ctx.stripped,
    )
    .await?;
    let (mut req, mut query) = (stripped.request, stripped.query);
    // The approval binds, and the approver sees, the request as it will be forwarded:
    // after strip (no agent credential), before inject (no tool credential).
    let pending = needs_approval.then(|| {
        let body = stripped.body.as_deref().unwrap_or_default();
        let headers = approve::effect_headers(t.kind, req.headers());
        let (method, query) = (req.method().as_str(), query.as_deref());
        let digest = mcp_digest.clone().unwrap_or_else(|| {
            approve::request_digest(&t.name, method, &tool_path, query, &headers, body)
        });
        let summary = approve::summary(t.kind, method, &forward_path, query, &headers, body);
        (digest, summary)
    });

    // inject
    let (credential, result) =
        inject::inject(&tool, &agent, &mut req, &mut query, ctx.trace.as_mut());
    let injected = credential.injected.clone();
    ctx.credential = credential;
    result?;

    // approve: last before forwarding, so a request that strip or inject refuse never
    // asks for, or spends, an approval.
    if let Some((digest, summary)) = pending {
        let approvals = approve::Approvals {
            settings: &gw.snapshot.approvals,
            store: &*gw.shared.store,
            decisions: &gw.shared.decisions,
            webhooks: &gw.shared.webhooks,
            http: &gw.shared.http,
            metrics: &gw.shared.metrics,
            clock: &gw.shared.clock,
        };
        let phase = ctx
            .trace
            .as_ref()
            .map(|_| RequestTrace::begin("keygate.approval"));
        let used = approve::approve(
            &approvals,
            approve::Pending {
                agent: &agent,
                tool: t,
                operation: &op,
                method: ctx.method.as_str(),
                path: &ctx.path,
                digest: &digest,
                summary: Some(summary),
                policies: &ctx.authorization.policies,
            },
        )
        .await;
        if let (Some(trace), Some(phase)) = (ctx.trace.as_mut(), phase) {
            trace.end_phase(phase, Vec::new(), used.is_err());
        }
        match used {
            Ok(a) => {
                ctx.approval_id = Some(a.id.clone());
                ctx.approval = Some(a);
            }
            Err(e) => {
                ctx.approval_id = e.approval_id.clone();
                return Err(e);
            }
        }
    }

    // forward
    let out = forward::Outbound {
        path: &forward_path,
        query: query.as_deref(),
        original_host,
        conn: &ctx.conn,
        request_id: &ctx.request_id,
    };
    let resp = forward::forward(&tool, req, out, ctx.trace.as_mut()).await?;

    // respond: keygate's credential never comes back to the agent; an MCP agent sees
    // only the tools it may call.
    let resp = respond::respond(injected, &t.name, resp)?;
    let resp = match ctx.mcp.as_ref().and_then(|m| m.tools_list.clone()) {
        Some(id) if resp.status().is_success() => mcp::filter_tools_list(
            gw.policies.clone(),
            gw.snapshot.clone(),
            t.clone(),
            agent.clone(),
            id,
            resp,
            now,
        ),
        _ => resp,
    };

    // inventory
    if op.is_identity_creation() && resp.status().is_success() {
        let policies = ctx.policies();
        let created = inventory::Created {
            agent: &agent,
            tool: &t.name,
            operation: &op,
            forward_path: &forward_path,
            approval: ctx.approval.as_ref(),
            policies: &policies,
            request_id: &ctx.request_id,
            review_after: gw.snapshot.approvals.review_after,
            now: gw.shared.clock.unix_millis(),
        };
        let (resp, recorded) = inventory::record(&*gw.shared.store, created, resp).await?;
        ctx.inventory = Some(recorded);
        return Ok(resp);
    }
    Ok(resp)
    // audit: when the response has been sent ([`audit::attach`], in `handle_to_end`).
}

/// The host the agent addressed: the request target's authority, else `Host`.
fn addressed_host<B>(req: &Request<B>) -> Option<&str> {
    req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

fn serve_jwks(
    document: &bytes::Bytes,
    method: &http::Method,
) -> Result<Response<ProxyBody>, Error> {
    if method != http::Method::GET && method != http::Method::HEAD {
        return Err(Error::new(
            ErrorKind::MethodNotAllowed,
            "the key set is read with GET",
        ));
    }
    let mut resp = crate::error::json_response(StatusCode::OK, String::new());
    *resp.body_mut() = crate::error::full_body(document.clone());
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=300"),
    );
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/jwk-set+json"),
    );
    Ok(resp)
}

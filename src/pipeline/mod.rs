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

use crate::error::{Error, ErrorKind, ProxyBody};
use crate::gateway::Gateway;
use crate::server::ConnInfo;
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
    let request_id = gw.next_request_id();
    let mut ctx = RequestCtx::new(request_id, conn, req.method().clone(), req.uri().path());
    ctx.client_gone = client_gone;
    // The request's spans (when exported): attributes are set when the request ends
    // (audit), from the same context as the audit record, so the two never disagree.
    ctx.trace = crate::telemetry::spans::RequestTrace::start(req.headers());
    if let Some(trace) = ctx.trace.as_mut() {
        // server.address is the host the agent addressed; its port is server.port.
        let authority = req.uri().authority().map(|a| a.as_str()).or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        if let Some(a) = authority.and_then(|a| a.parse::<http::uri::Authority>().ok()) {
            trace.server = Some((a.host().to_string(), a.port_u16()));
        }
    }
    let result = run(&gw, &mut ctx, req).await;
    let resp = match result {
        Ok(resp) => resp,
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

async fn run(
    gw: &Arc<Gateway>,
    ctx: &mut RequestCtx,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<ProxyBody>, Error> {
    check_framing(&req)?;
    classify::check_method(req.method())?;
    let host = req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    let canonical = classify::canonicalize(req.uri().path())?;
    if let std::borrow::Cow::Owned(c) = &canonical {
        // The audit records what keygate acted on.
        ctx.path = c.clone();
    }
    let route = classify::route(gw, host, &canonical);
    let (tool, tool_path) = match route {
        Route::Jwks => {
            ctx.decision = Decision::Local;
            return serve_jwks(gw, req.method());
        }
        Route::Tool {
            tool,
            forward_path,
            tool_path,
        } => {
            ctx.forward_path = forward_path;
            (Some(tool), tool_path)
        }
        Route::Unknown => (None, String::new()),
    };

    // identify: before anything about tools is revealed.
    let phase = ctx
        .trace
        .as_ref()
        .map(|_| RequestTrace::begin("keygate.identify"));
    let identity = gw
        .identifier
        .identify(&gw.snapshot.agents, &ctx.conn, req.headers());
    if let (Some(trace), Some(phase)) = (ctx.trace.as_mut(), phase) {
        // A span only when a signature was checked: a cached token costs nothing worth one.
        if identity.as_ref().map_or(true, |i| i.verified_now) {
            trace.end_phase(phase, Vec::new(), identity.is_err());
        }
    }
    let identity = identity?;
    let agent = identity.agent.clone();
    ctx.identity = Some(identity);
    if gw.shared.is_suspended(&agent.id) {
        return Err(Error::new(
            ErrorKind::AgentSuspended,
            format!(
                "agent {:?} is suspended; its owner can ask an administrator to resume it",
                &*agent.id
            ),
        ));
    }

    // classify: the tool, then the operation (reading the body first if it decides).
    let Some(tool) = tool else {
        return Err(Error::new(
            ErrorKind::UnknownTool,
            "no tool matches this request; call a tool as /tools/<name>/… or through its host",
        ));
    };
    ctx.tool = Some(tool.clone());
    if tool.tool.protocol == crate::config::Protocol::Mcp {
        // MCP: POST, GET and DELETE only (as spelled); GET and DELETE are decided below as
        // the protocol (`read`), each POSTed message on its own.
        mcp::check_http_method(req.method())?;
    }
    let timeout = gw.snapshot.server.body_read_timeout;
    let (parts, body) = req.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut facts = classify::RequestFacts {
        method: &parts.method,
        tool_path: &tool_path,
        forward_path: &ctx.forward_path,
        query: parts.uri.query(),
        content_type: content_type.as_deref(),
        body: None,
        amz_target: parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok()),
    };
    let mut body = strip::RequestBody::Unread(body);
    let mut read: Option<bytes::Bytes> = None;
    // A body read to decide (the operation, MCP messages) is never rewritten after the
    // decision: strip refuses a secret in it rather than redact it.
    let body_decides = classify::needs_body(&tool, &facts) || mcp_post_of(&tool, &parts.method);
    if classify::needs_body(&tool, &facts) {
        if let strip::RequestBody::Unread(b) = body {
            read = Some(
                strip::read_all(ctx, tool.tool.max_body_bytes, timeout, &parts.headers, b).await?,
            );
        }
        body = strip::RequestBody::Read(bytes::Bytes::new());
    }
    facts.body = read.as_deref();
    let mcp_post =
        tool.tool.protocol == crate::config::Protocol::Mcp && parts.method == http::Method::POST;
    // For MCP, an identity-creating tool call is bound to the tool and its arguments: a
    // retry repeats them with a new JSON-RPC id.
    let mut mcp_digest: Option<String> = None;
    let mut needs_approval: Option<Vec<String>> = None;
    let now = unix_now();
    let op = if mcp_post {
        // Refusals from here on are JSON-RPC errors.
        ctx.mcp = Some(mcp::McpAudit::default());
        let post = mcp::parse(read.as_deref().unwrap_or_default())?;
        let session = parts
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        ctx.mcp = Some(mcp::McpAudit::of(&post, session));
        let mut chosen = gw.snapshot.operations.read.clone();
        // Every message gets a decision, responses and notifications included: an agent
        // with no permit on the tool reaches nothing of it. A message keygate cannot
        // decide (unknown method, tools/call without a name) refuses the POST.
        for m in &post.messages {
            let call = mcp::call_of(m)?;
            let op = mcp::operation(gw, &tool.tool, &call);
            if call.method == "tools/call" || chosen.name == gw.snapshot.operations.read.name {
                chosen = op.clone();
            }
            let input = authorize::Input {
                agent: &agent,
                tool: &tool.tool,
                operation: &op,
                method: parts.method.as_str(),
                path: &tool_path,
                now_unix: now,
                approved: false,
                mcp: Some(&call),
            };
            let verdict = authorize(gw, &mut ctx.trace, &input);
            if let Some(allowed_by) = apply_verdict(ctx, verdict, &agent, &op, &tool)? {
                if post.batch {
                    ctx.operation = Some(op);
                    return Err(Error::new(
                        ErrorKind::BadRequest,
                        "a call that needs a human's approval cannot be batched; send it on its own",
                    ));
                }
                // Bound to where it is sent (a server may serve other tool sets under
                // another path or query), the method and the whole canonical `params`.
                let mut what = call.method.clone().into_bytes();
                what.push(0);
                what.extend_from_slice(&mcp::canonical_params(m));
                mcp_digest = Some(approve::request_digest(
                    &tool.tool.name,
                    parts.method.as_str(),
                    &tool_path,
                    parts.uri.query(),
                    &approve::effect_headers(tool.tool.kind, &parts.headers),
                    &what,
                ));
                needs_approval = Some(allowed_by);
            }
        }
        ctx.operation = Some(chosen.clone());
        chosen
    } else {
        let op = classify::operation(gw, &tool, &facts);
        ctx.operation = Some(op.clone());
        // authorize
        let input = authorize::Input {
            agent: &agent,
            tool: &tool.tool,
            operation: &op,
            method: parts.method.as_str(),
            path: &tool_path,
            now_unix: now,
            approved: false,
            mcp: None,
        };
        let verdict = authorize(gw, &mut ctx.trace, &input);
        needs_approval = apply_verdict(ctx, verdict, &agent, &op, &tool)?;
        op
    };
    if needs_approval.is_some() && read.is_none() {
        // The approval is bound to the exact request, so the body is read now.
        if let strip::RequestBody::Unread(b) = body {
            read = Some(
                strip::read_all(ctx, tool.tool.max_body_bytes, timeout, &parts.headers, b).await?,
            );
        }
        body = strip::RequestBody::Read(bytes::Bytes::new());
    }

    // The host the agent addressed: `Host`, or over HTTP/2 the `:authority`.
    let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
    });
    let body = match read {
        Some(b) => strip::RequestBody::Read(b),
        None => body,
    };
    // strip
    let (mut req, forwarded_body) =
        strip::strip(ctx, &tool, timeout, parts, body, body_decides).await?;
    // The approval binds, and the approver sees, the request as it will be forwarded:
    // after strip (no agent credential), before inject (no tool credential).
    let approval_request = needs_approval.as_ref().map(|_| {
        let body = forwarded_body.as_deref().unwrap_or_default();
        let headers = approve::effect_headers(tool.tool.kind, req.headers());
        let (method, query) = (req.method().as_str(), ctx.forward_query.as_deref());
        let digest = mcp_digest.clone().unwrap_or_else(|| {
            approve::request_digest(&tool.tool.name, method, &tool_path, query, &headers, body)
        });
        let shown = approve::summary(
            tool.tool.kind,
            method,
            &ctx.forward_path,
            query,
            &headers,
            body,
        );
        (digest, Some(shown))
    });
    // inject
    inject::inject(ctx, &tool, &mut req)?;
    // approve: last before forwarding, so a request that strip or inject refuse never
    // asks for, or spends, an approval.
    if let (Some(allowed_by), Some((digest, summary))) = (needs_approval, approval_request) {
        let gates = ctx.policies.clone();
        let phase = ctx
            .trace
            .as_ref()
            .map(|_| RequestTrace::begin("keygate.approval"));
        let used = approve::approve(gw, ctx, &tool, &op, &digest, summary, &gates).await;
        if let (Some(trace), Some(phase)) = (ctx.trace.as_mut(), phase) {
            trace.end_phase(phase, Vec::new(), used.is_err());
        }
        let used = used?;
        ctx.approval = Some(used);
        ctx.policies
            .extend(allowed_by.into_iter().filter(|p| !gates.contains(p)));
    }
    ctx.decision = Decision::Allow;
    // forward
    let resp = forward::forward(ctx, &tool, req, original_host).await?;
    // respond: keygate's credential never comes back to the agent.
    let resp = respond::respond(ctx, &tool, resp)?;
    // MCP: the agent sees only the tools it may call.
    let tools_list = ctx.mcp.as_ref().and_then(|m| m.tools_list.clone());
    let resp = match tools_list {
        Some(id) if resp.status().is_success() => {
            mcp::filter_tools_list(gw.clone(), tool.tool.clone(), agent.clone(), id, resp)
        }
        _ => resp,
    };
    // inventory
    if op.is_identity_creation() && resp.status().is_success() {
        return inventory::record(gw, ctx, &op, resp).await;
    }
    Ok(resp)
}

fn mcp_post_of(tool: &crate::gateway::ToolRuntime, method: &http::Method) -> bool {
    tool.tool.protocol == crate::config::Protocol::Mcp && method == http::Method::POST
}

/// Decides with the policies; a `keygate.authorize` span when the request is traced and
/// the policies were evaluated (a decision from the cache takes no time worth a span).
fn authorize(
    gw: &Gateway,
    trace: &mut Option<RequestTrace>,
    input: &authorize::Input,
) -> authorize::Verdict {
    let Some(trace) = trace.as_mut() else {
        return gw.snapshot.policies.authorize(input);
    };
    let phase = RequestTrace::begin("keygate.authorize");
    let (verdict, evaluated) = gw.snapshot.policies.decide(input);
    if evaluated {
        let errors = verdict.policy_errors();
        let attributes = if errors.is_empty() {
            Vec::new()
        } else {
            vec![opentelemetry::KeyValue::new(
                "keygate.policy_errors",
                errors.join(","),
            )]
        };
        trace.end_phase(phase, attributes, !errors.is_empty());
    }
    verdict
}

/// Records the verdict on the context; refuses a denied request; returns the permits that
/// allow it once approved when it needs approval.
fn apply_verdict(
    ctx: &mut RequestCtx,
    verdict: authorize::Verdict,
    agent: &crate::config::Agent,
    op: &Arc<crate::routes::Operation>,
    tool: &crate::gateway::ToolRuntime,
) -> Result<Option<Vec<String>>, Error> {
    for e in verdict.policy_errors() {
        if !ctx.policy_errors.contains(e) {
            ctx.policy_errors.push(e.clone());
        }
    }
    match verdict {
        authorize::Verdict::Allow { policies, .. } => {
            for p in policies {
                if !ctx.policies.contains(&p) {
                    ctx.policies.push(p);
                }
            }
            Ok(None)
        }
        authorize::Verdict::Deny {
            policies,
            policy_errors,
        } => {
            let why = if policies.is_empty() {
                "no policy allows it".to_string()
            } else if policies.iter().any(|p| policy_errors.contains(p)) {
                format!(
                    "policy {} forbids it (a forbid that fails to evaluate forbids)",
                    policies.join(", ")
                )
            } else {
                format!("policy {} forbids it", policies.join(", "))
            };
            ctx.policies = policies;
            ctx.operation = Some(op.clone());
            Err(Error::new(
                ErrorKind::Forbidden,
                format!(
                    "agent {:?} may not run {:?} on tool {:?}: {why}",
                    &*agent.id, &*op.name, &*tool.tool.name
                ),
            ))
        }
        authorize::Verdict::NeedsApproval {
            policies,
            allowed_by,
            ..
        } => {
            ctx.policies = policies;
            Ok(Some(allowed_by))
        }
    }
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Refuses framing that a server and a tool might read differently (request smuggling):
/// Content-Length together with Transfer-Encoding, or Content-Length given twice.
///
/// Defence in depth: over HTTP/1.1 hyper already resolves these before the request gets
/// here (RFC 9112 §6.3: with Transfer-Encoding it drops Content-Length, reads the body as
/// chunked and closes the connection after the response; identical duplicate lengths are
/// folded into one; differing ones are refused with a bare 400). keygate forwards its own
/// framing either way (strip re-frames read bodies; hop-by-hop headers are removed).
///
/// An HTTP/1.1 request without `Host` is refused (RFC 9112 §3.2: a server must answer it
/// 400): keygate picks tools by host, and would otherwise guess.
fn check_framing<B>(req: &Request<B>) -> Result<(), Error> {
    let h = req.headers();
    if req.version() == http::Version::HTTP_11 && !h.contains_key(header::HOST) {
        return Err(Error::new(
            ErrorKind::BadRequest,
            "an HTTP/1.1 request must name its host in a Host header",
        ));
    }
    let lengths = h.get_all(header::CONTENT_LENGTH).iter().count();
    if lengths > 1 {
        return Err(Error::new(
            ErrorKind::AmbiguousFraming,
            "the request has more than one Content-Length header",
        ));
    }
    if h.get_all(header::CONTENT_TYPE).iter().nth(1).is_some() {
        // One reader takes the first, another the last: a body scanned and classified as
        // one type could be parsed by the tool as another.
        return Err(Error::new(
            ErrorKind::AmbiguousFraming,
            "the request has more than one Content-Type header",
        ));
    }
    if lengths == 1 && h.contains_key(header::TRANSFER_ENCODING) {
        return Err(Error::new(
            ErrorKind::AmbiguousFraming,
            "the request has both Content-Length and Transfer-Encoding",
        ));
    }
    Ok(())
}

fn serve_jwks(gw: &Gateway, method: &http::Method) -> Result<Response<ProxyBody>, Error> {
    if method != http::Method::GET && method != http::Method::HEAD {
        return Err(Error::new(
            ErrorKind::MethodNotAllowed,
            "the key set is read with GET",
        ));
    }
    let mut resp = crate::error::json_response(StatusCode::OK, String::new());
    *resp.body_mut() = crate::error::full_body(gw.shared.jwks_document.clone());
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

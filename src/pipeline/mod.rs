//! The request pipeline, one module per phase, in request order:
//!
//! ```text
//! identify   who is calling (verified JWT, mTLS SPIFFE ID); suspended agents stop here
//! classify   which tool, which operation (catalog, routes); canonical path
//! task       the task the call names (Keygate-Task): this agent's, still open
//! limit      the agent's rate limits (an MCP POST: once its operation is decided)
//! watch      the agent's baseline learns the call; anomaly detectors act (suspend,
//!            require approval of its writes, notify, record)
//! authorize  Cedar policies: allow, deny, or needs approval
//!   (mcp)    an MCP POST: every JSON-RPC message read strictly and decided on its own
//! handle     a captured secret's handle (kgh_ token, AWS handle key): checked, taken off
//! strip      remove the agent's credentials; refuse or redact known secret formats
//! inject     the tool's provider issues this agent's credential (or the captured secret)
//! approve    a needed approval of this exact request (as it will be sent), used once
//! forward    pooled client to the tool, streaming both ways
//! respond    keygate's credential removed from the response, as it streams
//! inventory  an identity created is recorded with its agent, approver, owner, ticket;
//!            the secret it returned is captured, the agent gets a handle
//! scan       known secret formats in the response redacted, blocked or passed
//! audit      exactly one record per request, even when the agent went away
//! ```
//!
//! Before identify, `run` checks what needs no identity (framing, `TRACE`, the canonical
//! path) and finds the route; which tool it is, and whether one exists, is revealed only
//! after identify.
//!
//! Approve runs after strip and inject on purpose: a request that strip or inject would
//! refuse never asks a human or spends an approval, and the approval's digest is over
//! what the tool will receive. Each request runs on a task of its own ([`handle`]), so a
//! forwarded call finishes and is audited whatever the agent's connection does.
//!
//! Each phase is a function of the inputs it needs (the tool, the agent, the operation
//! catalog, the policies, the request's parts) and returns what it found; it never sees
//! the [`Gateway`] or the request's [`RequestCtx`]. Only the driver ([`handle`] and the
//! phase calls in `run`, in the order above) does: it hands each phase its inputs and
//! writes the phase's findings to the context, each field from one phase, for `audit`.
//! A phase that refuses returns an [`Error`], which [`Error::to_response`] maps to the
//! wire. Nothing reaches a tool before identify, authorize, strip and approve have
//! passed, and nothing reaches it without the credential inject produced: `run` is one
//! straight line to `forward`. A body is read once (within the tool's limit), before
//! anything is forwarded, whenever a phase needs it.

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
pub mod limit;
pub mod mcp;
mod own;
pub mod respond;
pub mod scan;
pub mod strip;
pub mod watch;

use crate::conn::ConnInfo;
use crate::credentials::Provider;
use crate::error::{Error, ErrorKind, ProxyBody};
use crate::gateway::Gateway;
use crate::routes::Operation;
use crate::telemetry::spans::RequestTrace;
use crate::tools::ToolRuntime;
use classify::Route;
pub use context::{Decision, RequestCtx};
use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
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
    let (path, refused) = match classify::canonicalize(req.uri().path()) {
        Ok(p) => (p.into_owned(), None),
        Err(e) => (req.uri().path().to_string(), Some(e)),
    };
    let mut ctx = RequestCtx::new(
        gw.next_request_id(),
        conn,
        req.method().clone(),
        path,
        client_gone,
        trace,
    );
    let result = run(&gw, &mut ctx, req, refused).await;
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
                (_, _) if e.aws_code.is_some() => {
                    e.to_response_in(crate::error::Dialect::AwsXml, &ctx.request_id)
                }
                (Some(m), _) => mcp::error_response(&e, m, &ctx.request_id),
                (None, Some(t)) if t.tool.kind == crate::catalog::Kind::Aws => {
                    e.to_response_in(crate::error::Dialect::AwsXml, &ctx.request_id)
                }
                _ => e.to_response(&ctx.request_id),
            };
            // A refusal the agent earned counts toward the refusal burst detector.
            if matches!(
                e.kind,
                ErrorKind::Forbidden | ErrorKind::SecretInRequest | ErrorKind::ApprovalDenied
            ) {
                if let Some(agent) = ctx.identity.as_ref().map(|i| i.agent.clone()) {
                    let mut found = Vec::new();
                    let now = gw.shared.clock.unix_millis();
                    let s = &gw.snapshot.anomalies;
                    gw.shared
                        .baselines
                        .refused(&agent.id, e.kind.code(), s, now, &mut found);
                    if !found.is_empty() {
                        // This call is refused already; a suspension holds from the next.
                        let _ = act(&gw, &mut ctx, &agent, found).await;
                    }
                }
            }
            ctx.error = Some(e);
            resp
        }
    };
    audit::attach(&gw.shared.audit, &gw.shared.metrics, ctx, resp)
}

/// The phases of one request, in order. Each step below hands one phase its inputs and
/// writes what it found to the request's context (each field from one phase).
async fn run(
    gw: &Arc<Gateway>,
    ctx: &mut RequestCtx,
    req: Request<Incoming>,
    refused_path: Option<Error>,
) -> Result<Response<ProxyBody>, Error> {
    let (req, route) = match route(gw, &ctx.conn, req, &ctx.path, refused_path)? {
        Routed::Local(resp) => return Ok(resp),
        // Boxed: its future (store writes) would otherwise make every request's future
        // larger, and it is moved when the request's task is spawned.
        Routed::Keygate(req) => return Box::pin(serve_own(gw, ctx, req)).await,
        Routed::Tool(req, route) => (req, route),
    };
    let agent = identify(gw, ctx, &req, route.as_ref())?;
    let mut call = classify(gw, ctx, req, route).await?;
    prove(gw, ctx, &mut call).await?;
    task(gw, ctx, &agent, &mut call)?;
    if let Some(op) = call.operation.clone() {
        limit(gw, &agent, &call, Some(&op))?;
        watch(gw, ctx, &agent, &call.tool.tool.name, &op).await?;
    }
    authorize(gw, ctx, &agent, &mut call).await?;
    let handle = find_handle(gw, ctx, &agent, &mut call)?;
    let mut out = strip(gw, ctx, call).await?;
    inject(gw, ctx, &agent, &mut out, handle).await?;
    approve(gw, ctx, &agent, &out).await?;
    let resp = forward(gw, ctx, &mut out).await?;
    let resp = respond(gw, ctx, &agent, &out, resp)?;
    let resp = inventory(gw, ctx, &agent, &out, resp).await?;
    scan(ctx, &out, resp).await
    // audit: once the response is sent ([`audit::attach`], in `handle_to_end`).
}

/// keygate's own endpoints (`/.keygate/…`, see [`own`]): introspection, and an agent's
/// own tasks (identified as for any call).
async fn serve_own(
    gw: &Arc<Gateway>,
    ctx: &mut RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Error> {
    let rest = ctx
        .path
        .strip_prefix(classify::KEYGATE_PREFIX)
        .unwrap_or("")
        .to_string();
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["introspect"] => {
            own::only_post(req.method())?;
            let body = read_own(gw, req).await?;
            // For an agent keygate serves now, and for a `jwt` tool's audience: keygate's
            // other JWTs (client assertions, token-exchange subjects) are not tool tokens.
            let vouch = |agent: &str, aud: &str| {
                gw.shared.freshness.usable(&gw.snapshot.store)
                    && !gw.shared.is_suspended(agent)
                    && gw
                        .tools
                        .by_name
                        .values()
                        .any(|t| matches!(&t.provider, Provider::Jwt(p) if p.audience() == aud))
            };
            Ok(own::introspect(
                &gw.shared.signer,
                &gw.shared.tasks,
                &vouch,
                gw.shared.clock.unix_millis(),
                &body,
            ))
        }
        ["tasks"] => {
            own::only_post(req.method())?;
            let agent = identify(gw, ctx, &req, None)?;
            open_task(gw, ctx, &agent, req).await
        }
        ["tasks", id, "end"] => {
            own::only_post(req.method())?;
            let id = id.to_string();
            let agent = identify(gw, ctx, &req, None)?;
            end_task(gw, ctx, &agent, &id).await
        }
        _ => Err(Error::new(
            ErrorKind::UnknownTool,
            "keygate has no such endpoint",
        )),
    }
}

async fn read_own(gw: &Gateway, req: Request<Incoming>) -> Result<bytes::Bytes, Error> {
    let limited = http_body_util::Limited::new(req.into_body(), own::MAX_BODY);
    match tokio::time::timeout(
        gw.snapshot.server.body_read_timeout,
        http_body_util::BodyExt::collect(limited),
    )
    .await
    {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(_)) => Err(Error::new(
            ErrorKind::BodyTooLarge,
            format!(
                "the body is larger than {} bytes, or was cut short",
                own::MAX_BODY
            ),
        )),
        Err(_) => Err(Error::new(
            ErrorKind::BodyTimeout,
            "the body was not received in time",
        )),
    }
}

async fn open_task(
    gw: &Arc<Gateway>,
    ctx: &mut RequestCtx,
    agent: &crate::config::Agent,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Error> {
    if !gw.snapshot.tasks.agents_may_open {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "agents may not open tasks here (tasks.agents_may_open is off): ask an administrator",
        ));
    }
    let body = read_own(gw, req).await?;
    let opening: crate::tasks::Opening = serde_json::from_slice(&body).map_err(|e| {
        Error::new(
            ErrorKind::BadRequest,
            format!(
                "the body is not a task: {}",
                e.to_string().chars().take(200).collect::<String>()
            ),
        )
    })?;
    if opening.agent.as_deref().is_some_and(|a| a != &*agent.id) || opening.by.is_some() {
        return Err(Error::new(
            ErrorKind::BadRequest,
            "an agent opens tasks for itself: leave out agent and by",
        ));
    }
    let now = gw.shared.clock.unix_millis();
    if gw.shared.tasks.open_count(&agent.id, now) >= crate::tasks::MAX_OPEN_PER_AGENT {
        return Err(Error::new(
            ErrorKind::TooManyTasks,
            format!(
                "the agent already has {} open tasks: end one first",
                crate::tasks::MAX_OPEN_PER_AGENT
            ),
        ));
    }
    let task = crate::tasks::new_task(
        opening,
        &agent.id,
        "agent",
        &gw.snapshot.tasks,
        |t| gw.tools.by_name.contains_key(t),
        now,
    )
    .map_err(|m| Error::new(ErrorKind::BadRequest, m))?;
    gw.shared
        .store
        .open_task(&task)
        .await
        .map_err(own::store_error)?;
    gw.shared.tasks.put(task.clone());
    tracing::info!(task = %task.id, agent = %task.agent_id, "task opened by its agent");
    let view = crate::tasks::view(&task, now);
    ctx.task = Some(Arc::new(task));
    Ok(own::answer(StatusCode::CREATED, view))
}

async fn end_task(
    gw: &Arc<Gateway>,
    ctx: &mut RequestCtx,
    agent: &crate::config::Agent,
    id: &str,
) -> Result<Response<ProxyBody>, Error> {
    // Only the agent's own tasks, as this replica knows them (one opened on another
    // replica a moment ago is known once its change arrives).
    let known = gw.shared.tasks.get(id);
    if known.is_none_or(|t| *t.agent_id != *agent.id) {
        return Err(Error::new(
            ErrorKind::TaskUnknown,
            "no such task among this agent's",
        ));
    }
    let now = gw.shared.clock.unix_millis();
    let (task, ended_now) = gw
        .shared
        .store
        .end_task(id, "agent", now)
        .await
        .map_err(own::store_error)?;
    gw.shared.tasks.put(task.clone());
    crate::gateway::close_tasks(gw);
    if ended_now {
        tracing::info!(task = %task.id, agent = %task.agent_id, "task ended by its agent");
    }
    let mut view = crate::tasks::view(&task, now);
    if let Some(o) = view.as_object_mut() {
        o.insert("already_ended".into(), (!ended_now).into());
    }
    ctx.task = Some(Arc::new(task));
    Ok(own::answer(StatusCode::OK, view))
}

/// Where a request goes: keygate's own key set, or a tool (maybe none: refused after
/// identify, so an unknown agent learns nothing of which tools exist).
enum Routed {
    Local(Response<ProxyBody>),
    /// keygate's own endpoints (`/.keygate/…`).
    Keygate(Request<Incoming>),
    Tool(Request<Incoming>, Option<classify::ToolRoute>),
}

/// classify, first the request itself: framing, method, path, and where it goes. In a
/// forward-proxy tunnel, the tunnel's host decides, and a request addressed elsewhere is
/// refused.
fn route(
    gw: &Gateway,
    conn: &ConnInfo,
    req: Request<Incoming>,
    path: &str,
    refused_path: Option<Error>,
) -> Result<Routed, Error> {
    classify::check_framing(&req)?;
    classify::check_method(req.method())?;
    if let Some(e) = refused_path {
        return Err(e);
    }
    if let Some(t) = &conn.tunnel {
        // Every name the request gives its host (the URI's authority, each `Host`), so
        // none can differ from the tunnel's and reach the tool as X-Forwarded-Host.
        classify::check_tunnel_host(&t.host, req.uri().authority().map(|a| a.as_str()))?;
        for h in req.headers().get_all(header::HOST) {
            classify::check_tunnel_host(&t.host, Some(h.to_str().unwrap_or("\u{0}")))?;
        }
        return Ok(match classify::route_host(&gw.tools, &t.host, path) {
            Some(r) => Routed::Tool(req, Some(r)),
            None => Routed::Tool(req, None),
        });
    }
    Ok(
        match classify::route(&gw.tools, addressed_host(&req), path) {
            Route::Jwks => Routed::Local(serve_jwks(&gw.shared.jwks_document, req.method())?),
            Route::Keygate => Routed::Keygate(req),
            Route::Tool(t) => Routed::Tool(req, Some(t)),
            Route::Unknown => Routed::Tool(req, None),
        },
    )
}

/// identify: the agent, verified and not suspended (an agent named by its AWS key: once
/// [`prove`] has checked its signature).
pub(crate) fn identify(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    req: &Request<Incoming>,
    route: Option<&classify::ToolRoute>,
) -> Result<Arc<crate::config::Agent>, Error> {
    // In a forward-proxy tunnel the agent is the tunnel's, by the credential it gave on
    // the CONNECT; what the request itself carries is its client's tool credential.
    let tunnel = ctx.conn.tunnel.clone();
    let (headers, aws_keys) = match &tunnel {
        Some(t) => (&t.credential, None),
        None => (
            req.headers(),
            route
                .filter(|r| matches!(r.tool.provider, Provider::Aws(_)))
                .map(|_| &gw.shared.agent_keys),
        ),
    };
    let identity = identify::identify(
        &gw.identifier,
        &gw.snapshot.agents,
        &ctx.conn,
        headers,
        aws_keys,
        |agent| gw.shared.check_agent(agent, &gw.snapshot.store),
        ctx.trace.as_mut(),
    )?;
    let agent = identity.agent.clone();
    ctx.identity = Some(identity);
    Ok(agent)
}

/// A request to a tool on its way through the phases.
struct Call {
    tool: Arc<ToolRuntime>,
    route: classify::ToolRoute,
    parts: http::request::Parts,
    body: strip::RequestBody<Incoming>,
    /// The body was read to decide (the operation, MCP messages): it is never rewritten
    /// after the decision (strip refuses a secret in it rather than redact it).
    body_decides: bool,
    operation: Option<Arc<Operation>>,
    /// An MCP call's approval digest (bound to its canonical params).
    mcp_digest: Option<String>,
    /// An AWS tool's call: the service and region the agent's SDK signed for.
    aws: Option<inject::AwsTarget>,
    /// An AWS tool's call: the IAM actions and resources the policies decided on.
    aws_scope: Option<crate::policy::AwsScope>,
}

/// classify: the tool, then (reading the body first when it decides) the operation. For
/// an MCP POST the operation is the MCP phase's, decided with the policies.
async fn classify(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    req: Request<Incoming>,
    route: Option<classify::ToolRoute>,
) -> Result<Box<Call>, Error> {
    let route = classify::tool(route)?;
    let tool = route.tool.clone();
    ctx.tool = Some(tool.clone());
    let mcp_post = classify::is_mcp_post(&tool.tool, req.method())?;
    let (parts, body) = req.into_parts();
    // Boxed: it moves from phase to phase, and a pointer is cheaper to move than a request.
    let mut call = Box::new(Call {
        tool,
        route,
        parts,
        body: strip::RequestBody::Unread(body),
        body_decides: false,
        operation: None,
        mcp_digest: None,
        aws: None,
        aws_scope: None,
    });
    if let Provider::Aws(p) = &call.tool.provider {
        call.aws = Some(inject::aws_target(&call.parts.headers, &p.spec().region)?);
    }
    let t = &call.tool.tool;
    // An S3 object streams through unread: S3 takes no Action from the body, and the
    // signature keygate makes sends the call to S3 and nowhere else.
    let s3 = call.aws.as_ref().is_some_and(|a| a.service == "s3");
    call.body_decides = !s3 && classify::needs_body(t, &facts(&call));
    if call.body_decides {
        call.body = read_body(gw, ctx, call.body, t.max_body_bytes, &call.parts.headers).await?;
    }
    if !mcp_post {
        let op = classify::operation(&gw.snapshot.operations, t, &facts(&call));
        ctx.operation = Some(op.clone());
        call.operation = Some(op);
    }
    Ok(call)
}

/// What the operation depends on, from the request as it is.
fn facts(call: &Call) -> classify::RequestFacts<'_> {
    let h = &call.parts.headers;
    classify::RequestFacts {
        method: &call.parts.method,
        tool_path: &call.route.tool_path,
        forward_path: &call.route.forward_path,
        query: call.parts.uri.query(),
        content_type: h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
        body: call.body.bytes(),
        amz_target: h.get("x-amz-target").and_then(|v| v.to_str().ok()),
    }
}

async fn read_body(
    gw: &Gateway,
    ctx: &RequestCtx,
    body: strip::RequestBody<Incoming>,
    limit: u64,
    headers: &http::HeaderMap,
) -> Result<strip::RequestBody<Incoming>, Error> {
    let read = strip::BodyRead {
        timeout: gw.snapshot.server.body_read_timeout,
        bytes_in: &ctx.bytes_in,
    };
    Ok(strip::RequestBody::Read(
        body.read(&read, limit, headers).await?,
    ))
}

/// identify, its second half for an agent named by its AWS key: the SigV4 signature over
/// the request as the agent sent it (its body read first when the signature covers it),
/// before anything is decided.
async fn prove(gw: &Gateway, ctx: &mut RequestCtx, call: &mut Call) -> Result<(), Error> {
    if !ctx.identity.as_ref().is_some_and(|i| i.unproven) {
        return Ok(());
    }
    let declared = call
        .parts
        .headers
        .contains_key(crate::aws::sign::CONTENT_SHA256);
    if !declared && call.body.bytes().is_none() {
        let limit = call.tool.tool.max_body_bytes;
        let body = std::mem::replace(&mut call.body, strip::RequestBody::Read(Default::default()));
        call.body = read_body(gw, ctx, body, limit, &call.parts.headers).await?;
    }
    let proved = identify::aws_key::prove(
        &gw.shared.agent_keys,
        &call.parts.method,
        &call.parts.uri,
        &call.parts.headers,
        call.body.bytes(),
        gw.shared.clock.now(),
    );
    if let Err(e) = proved {
        // Anyone who saw a key id could name its agent: a request that did not prove it
        // is recorded as nobody's.
        ctx.identity = None;
        return Err(e);
    }
    if let Some(i) = ctx.identity.as_mut() {
        i.unproven = false;
    }
    Ok(())
}

/// limit: the agent's rate limits for this call.
fn limit(
    gw: &Gateway,
    agent: &crate::config::Agent,
    call: &Call,
    op: Option<&Operation>,
) -> Result<(), Error> {
    if gw.limits.is_empty() {
        return Ok(());
    }
    let t = &call.tool.tool;
    let aws = t.kind == crate::catalog::Kind::Aws;
    gw.limits
        .check(&agent.id, &t.name, op, aws)
        .inspect_err(|_| gw.shared.metrics.rate_limited(&t.name))
}

/// watch: the agent's baseline learns the call, and what the detectors find acts.
async fn watch(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    agent: &crate::config::Agent,
    tool: &Arc<str>,
    op: &Operation,
) -> Result<(), Error> {
    let now = gw.shared.clock.unix_millis();
    let call = crate::anomaly::Call {
        tool,
        operation: &op.name,
        identity_creation: op.is_identity_creation(),
        host: ctx.conn.tunnel.as_ref().map(|t| t.host.as_str()),
        owner: &agent.owner,
    };
    let mut found = Vec::new();
    gw.shared
        .baselines
        .observe(&agent.id, &call, &gw.snapshot.anomalies, now, &mut found);
    if found.is_empty() {
        return Ok(());
    }
    // Boxed: rare, and its future (a store write) would otherwise make every request's
    // future larger (moved when the request's task is spawned).
    Box::pin(act(gw, ctx, agent, found)).await
}

/// What the detectors found: each is audited, traced, counted, logged and (beyond
/// `record`) notified; `require_approval` holds the agent's write calls; `suspend`
/// suspends the agent in the store (every replica learns it), `suspended_by` naming the
/// detector, and refuses the call.
async fn act(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    agent: &crate::config::Agent,
    found: Vec<crate::anomaly::Finding>,
) -> Result<(), Error> {
    use crate::anomaly::AnomalyActionName as A;
    let s = &gw.snapshot.anomalies;
    let now = gw.shared.clock.unix_millis();
    let hold = i64::try_from(s.require_approval_for.as_millis()).unwrap_or(i64::MAX);
    let tool = ctx.tool.as_ref().map(|t| t.tool.name.clone());
    let mut suspend = None;
    for f in found {
        let action = f.action.as_str();
        gw.shared.metrics.anomaly(f.detector, action);
        gw.shared
            .baselines
            .remember(&agent.id, &f, now, now.saturating_add(hold));
        tracing::warn!(
            agent = %agent.id,
            detector = f.detector,
            action,
            observed = %f.observed,
            baseline = %f.baseline,
            "anomaly"
        );
        if let Some(trace) = ctx.trace.as_mut() {
            trace.add_event("keygate.anomaly", watch::span_attributes(&f));
        }
        let src = watch::Source {
            request_id: &ctx.request_id,
            client: &ctx.conn.client,
            tool: tool.as_ref(),
            method: ctx.method.as_str(),
            path: &ctx.path,
        };
        gw.shared.audit.record(watch::audit_record(agent, &src, &f));
        if f.action != A::Record {
            watch::notify(
                &gw.snapshot.approvals,
                &gw.shared.webhooks,
                &gw.shared.metrics,
                &gw.shared.http,
                agent,
                &f,
            );
        }
        if f.action == A::Suspend && suspend.is_none() {
            suspend = Some(f);
        }
    }
    let Some(f) = suspend else { return Ok(()) };
    let by = format!("anomaly:{}", f.detector);
    let reason = format!("{}; baseline: {}", f.observed, f.baseline);
    if let Err(e) = gw
        .shared
        .store
        .suspend(&agent.id, &by, Some(&reason), now)
        .await
    {
        // Suspended in this process all the same, and kept so over every re-read of the
        // store until it records the suspension (tried again every few seconds) or a human
        // resumes the agent.
        tracing::error!(agent = %agent.id, "cannot record the anomaly's suspension in the store (trying again): {e}");
        if let Ok(mut u) = gw.shared.unrecorded_suspensions.lock() {
            u.insert(agent.id.to_string());
        }
        let (shared, id) = (gw.shared.clone(), agent.id.to_string());
        let (clock, by, reason) = (gw.shared.clock.clone(), by.clone(), reason.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                let still = shared
                    .unrecorded_suspensions
                    .lock()
                    .map(|u| u.contains(&id))
                    .unwrap_or(false);
                if !still {
                    return;
                }
                match shared
                    .store
                    .suspend(&id, &by, Some(&reason), clock.unix_millis())
                    .await
                {
                    Ok(()) => {
                        if let Ok(mut u) = shared.unrecorded_suspensions.lock() {
                            u.remove(&id);
                        }
                        tracing::info!(agent = %id, "the anomaly's suspension is recorded in the store");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(agent = %id, "still cannot record the anomaly's suspension: {e}")
                    }
                }
            }
        });
    }
    gw.shared.set_suspended(&agent.id);
    gw.forget_agent(&agent.id);
    Err(Error::new(
        ErrorKind::AgentSuspended,
        format!(
            "agent {:?} is suspended: anomaly detector {} found {}; its owner can ask an administrator to resume it",
            &*agent.id, f.detector, f.observed
        ),
    )
    .with_detail(format!("{by}: {reason}")))
}

/// identify, for a call made in a task (`Keygate-Task`, on the request or, in a
/// forward-proxy tunnel, on its `CONNECT`): the task is this agent's and open. The header
/// is taken off the request (the tool never sees it); the policies read the task, and
/// authorize checks that the task includes the tool and operation.
fn task(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    agent: &crate::config::Agent,
    call: &mut Call,
) -> Result<(), Error> {
    let on_tunnel = match &ctx.conn.tunnel {
        Some(t) => crate::tasks::named(&t.credential)?,
        None => None,
    };
    let on_request = crate::tasks::named(&call.parts.headers)?;
    let named = match (on_tunnel, on_request) {
        (Some(a), Some(b)) if a != b => {
            return Err(Error::new(
                ErrorKind::BadRequest,
                "the request names another task than its tunnel",
            ))
        }
        (Some(a), _) => Some(a.to_string()),
        (None, b) => b.map(str::to_string),
    };
    let Some(named) = named else {
        return Ok(());
    };
    call.parts.headers.remove(&crate::tasks::HEADER);
    let task = gw
        .shared
        .tasks
        .check(&agent.id, &named, gw.shared.clock.unix_millis())?;
    ctx.task = Some(task);
    Ok(())
}

/// authorize: the policies decide the operation (the MCP phase: each message of a POST).
/// A request that needs approval has its body read now: the approval binds it.
async fn authorize(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    agent: &crate::config::Agent,
    call: &mut Call,
) -> Result<(), Error> {
    let t = &call.tool.tool;
    let now = gw.shared.clock.unix_secs();
    match &call.operation {
        Some(op) => {
            // An AWS call: the IAM actions and resources it needs, which the policies see
            // and the session keygate signs it with allows.
            if let Some(target) = &call.aws {
                let scope = inject::aws_scope(
                    target,
                    &call.parts.method,
                    &call.route.forward_path,
                    call.parts.uri.query(),
                    &call.parts.headers,
                    call.body.bytes(),
                )?;
                call.aws_scope = Some(scope);
            }
            let input = crate::policy::Input {
                agent,
                tool: t,
                operation: op,
                method: call.parts.method.as_str(),
                path: &call.route.tool_path,
                now_unix: now,
                approved: false,
                mcp: None,
                aws: call.aws_scope.as_ref(),
                task: ctx.task.as_deref(),
            };
            let (authorization, result) =
                authorize::authorize(&gw.policies, ctx.trace.as_mut(), &input);
            ctx.authorization = authorization;
            result?;
        }
        None => {
            let (record, post) =
                mcp::read(call.body.bytes().unwrap_or_default(), &call.parts.headers);
            ctx.mcp = Some(record);
            let facts = mcp::PostFacts {
                method: &call.parts.method,
                tool_path: &call.route.tool_path,
                query: call.parts.uri.query(),
                headers: &call.parts.headers,
            };
            let (decided, result) = mcp::authorize(
                &gw.policies,
                &gw.snapshot.operations,
                t,
                agent,
                &post?,
                &facts,
                now,
                ctx.task.as_deref(),
                ctx.trace.as_mut(),
            );
            ctx.operation = decided.operation.clone();
            ctx.authorization = decided.authorization;
            // An MCP POST's rate limits, once its operation (tags) is known; refused in
            // JSON-RPC, before what the policies decided is told.
            limit(gw, agent, call, decided.operation.as_deref())?;
            if let Some(op) = &decided.operation {
                watch(gw, ctx, agent, &call.tool.tool.name, op).await?;
            }
            result?;
            call.operation = decided.operation;
            call.mcp_digest = decided.digest;
        }
    }
    if let (Some(task), Some(op)) = (&ctx.task, &call.operation) {
        crate::tasks::in_scope(task, &call.tool.tool.name, op)?;
    }
    // An anomaly detector with `action = "require_approval"` holds the agent's write
    // calls: one the policies allow needs a human's approval, as if a policy asked.
    if ctx.authorization.allowed_by.is_none()
        && call.operation.as_ref().is_some_and(|o| !o.has_tag("read"))
    {
        if let Some(by) = gw
            .shared
            .baselines
            .held_by(&agent.id, gw.shared.clock.unix_millis())
        {
            ctx.authorization.allowed_by = Some(ctx.authorization.policies.clone());
            ctx.authorization.policies.push(format!("anomaly:{by}"));
        }
    }
    if ctx.authorization.allowed_by.is_some() && call.body.bytes().is_none() {
        let limit = call.tool.tool.max_body_bytes;
        let body = std::mem::replace(&mut call.body, strip::RequestBody::Read(Default::default()));
        call.body = read_body(gw, ctx, body, limit, &call.parts.headers).await?;
    }
    Ok(())
}

/// A captured secret a call presents the handle of.
enum HandleUse {
    /// A `kgh_` token in a header.
    Token(crate::capture::TokenUse),
    /// The AWS key pair that signed the call.
    Aws(Arc<crate::store::CapturedSecret>),
}

/// The handle of a captured secret, when the call presents one (the AWS key that signed it,
/// a `kgh_` token in a header): checked to be active and this agent's for this tool, and
/// taken off the request before strip; inject puts the real secret in its place.
fn find_handle(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    agent: &crate::config::Agent,
    call: &mut Call,
) -> Result<Option<HandleUse>, Error> {
    let tool = &*call.tool.tool.name;
    let vault = &gw.shared.vault;
    // The AWS key that signed the call: the one that named the agent, or (the agent named
    // otherwise: a token, the forward proxy's tunnel) the key id the SDK signed with.
    let aws_key = match ctx.identity.as_ref().and_then(|i| i.aws_key.clone()) {
        Some(k) => Some(k),
        // (No captured secret held: nothing to look up, and nothing to parse.)
        None if matches!(call.tool.provider, Provider::Aws(_)) && !vault.is_empty() => call
            .parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::aws::verify::parse_authorization(v).ok())
            .map(|h| crate::capture::fingerprint(h.access_key_id)),
        None => None,
    };
    if let Some(key) = aws_key {
        if let Some(c) = vault.get(&key) {
            ctx.handle = Some(c.identity_id.clone());
            crate::capture::check_use(&c, &agent.id, tool)?;
            return Ok(Some(HandleUse::Aws(c)));
        }
        // A captured key's handle whose secret this process does not hold (revoked a
        // moment ago, or captured by another replica and not read yet): never signed
        // with anything else.
        if gw.shared.agent_keys.is_captured(&key) {
            return Err(Error::new(
                ErrorKind::UnknownHandle,
                "keygate holds no captured key for this handle key pair, or it was revoked",
            )
            .with_aws_code("InvalidClientTokenId"));
        }
    }
    // Where a credential goes: the headers strip removes as the agent's credentials, and
    // the tool's own credential header.
    let t = &call.tool.tool;
    let credential_header = |n: &http::HeaderName| {
        (strip::ALWAYS_STRIPPED_HEADERS.contains(n)
            && *n != header::PROXY_AUTHORIZATION
            && *n != header::COOKIE)
            || t.strip_headers.contains(n)
            || crate::catalog::credential_headers(t.kind).contains(&n.as_str())
            || matches!(&t.credential.inject, crate::config::Injection::Header(h) if h == n)
    };
    let used = crate::capture::take_token_handle(
        vault,
        &mut call.parts.headers,
        &agent.id,
        tool,
        credential_header,
    )?;
    if used.is_some() && matches!(call.tool.provider, Provider::Aws(_)) {
        // An AWS call is signed with a captured key's handle pair, never sent with a token.
        return Err(Error::new(
            ErrorKind::HandleNotAllowed,
            "an AWS tool takes a captured key as the key pair the call is signed with, not as a kgh_ token",
        ));
    }
    Ok(used.map(|u| {
        ctx.handle = Some(u.captured.identity_id.clone());
        HandleUse::Token(u)
    }))
}

/// The request as it leaves keygate.
struct Outgoing {
    tool: Arc<ToolRuntime>,
    route: classify::ToolRoute,
    operation: Arc<Operation>,
    /// Taken by forward.
    req: Option<Request<ProxyBody>>,
    query: Option<String>,
    /// The host the agent addressed (`Host`, or over HTTP/2 the `:authority`).
    original_host: Option<http::HeaderValue>,
    /// For a request that needs approval: the digest its approval is bound to and what
    /// the approver is shown, both of the request as strip left it.
    pending: Option<(String, String)>,
    /// The body, when it was read whole (an AWS signature covers it).
    body: Option<bytes::Bytes>,
    /// An AWS tool's call: where it is signed for (by classify), then what inject
    /// obtained to sign it with as it leaves.
    aws: Option<inject::AwsTarget>,
    /// The IAM actions and resources the policies decided on (inject's must be the same).
    aws_scope: Option<crate::policy::AwsScope>,
    aws_signing: Option<inject::AwsSigning>,
}

/// strip: the agent's credentials out, and no secret left in what is forwarded.
async fn strip(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    call: Box<Call>,
) -> Result<Box<Outgoing>, Error> {
    let Call {
        tool,
        route,
        parts,
        body,
        body_decides,
        operation,
        mcp_digest,
        aws,
        aws_scope,
    } = *call;
    let operation = operation.unwrap_or_else(|| gw.snapshot.operations.read.clone());
    let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
    });
    let read = strip::BodyRead {
        timeout: gw.snapshot.server.body_read_timeout,
        bytes_in: &ctx.bytes_in,
    };
    let t = &tool.tool;
    let stripped = strip::strip(
        t,
        &route.forward_path,
        parts,
        body,
        body_decides,
        &read,
        &mut ctx.stripped,
    )
    .await?;
    // The approval binds, and the approver sees, the request as it will be forwarded:
    // after strip (no agent credential), before inject (no tool credential).
    // An AWS call's approval also binds the service and region it is signed for.
    let signed_for = aws.as_ref().map(|a| format!("{}/{}", a.service, a.region));
    let task_id = ctx.task.as_ref().map(|t| t.id.clone());
    let pending = ctx.authorization.allowed_by.is_some().then(|| {
        let req = &stripped.request;
        let body = stripped.body.as_deref().unwrap_or_default();
        let mut headers = approve::effect_headers(t.kind, req.headers());
        if let Some(scope) = &signed_for {
            headers.push(("keygate-aws-scope", scope.as_bytes()));
        }
        // A call made in a task: its approval is for that task (the approver sees it, and
        // the same request in another task needs its own).
        if let Some(task) = &task_id {
            headers.push((crate::tasks::HEADER_STR, task.as_bytes()));
        }
        let (method, query) = (req.method().as_str(), stripped.query.as_deref());
        let digest = mcp_digest.unwrap_or_else(|| {
            approve::request_digest(&t.name, method, &route.tool_path, query, &headers, body)
        });
        let summary = approve::summary(t.kind, method, &route.forward_path, query, &headers, body);
        (digest, summary)
    });
    Ok(Box::new(Outgoing {
        tool,
        route,
        operation,
        req: Some(stripped.request),
        query: stripped.query,
        original_host,
        pending,
        body: stripped.body,
        aws,
        aws_scope,
        aws_signing: None,
    }))
}

/// inject: the credential the tool's provider issues for this agent (for AWS: the
/// credentials the call is signed with as it leaves); for a call that presents a handle,
/// the captured secret it stands for.
async fn inject(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    agent: &crate::config::Agent,
    out: &mut Outgoing,
    handle: Option<HandleUse>,
) -> Result<(), Error> {
    let Some(req) = out.req.as_mut() else {
        return Err(Error::new(ErrorKind::Internal, "no request to inject into"));
    };
    let captured_aws = match &handle {
        Some(HandleUse::Token(used)) => {
            let (credential, result) = inject::inject_captured(&gw.shared.vault, used, req);
            ctx.credential = credential;
            return result;
        }
        Some(HandleUse::Aws(c)) => {
            let secret = gw.shared.vault.open(c)?;
            let (id, key) = crate::capture::aws_key_of(&secret)?;
            Some(crate::credentials::aws::AwsCredential::long_lived(&id, key))
        }
        None => None,
    };
    if let Provider::Aws(provider) = &out.tool.provider {
        let Some(target) = out.aws.clone() else {
            return Err(Error::new(
                ErrorKind::Internal,
                "an AWS call without its target",
            ));
        };
        // Boxed: see `Provider::issue`.
        let (credential, result) = Box::pin(inject::inject_aws(
            provider,
            agent,
            ctx.task.as_ref().map(|t| (t.id.as_str(), t.expires_at)),
            req,
            &out.route.forward_path,
            out.query.as_deref(),
            out.body.as_deref(),
            target,
            out.aws_scope.as_ref(),
            captured_aws,
            ctx.trace.as_mut(),
        ))
        .await;
        ctx.credential = credential;
        out.aws_signing = Some(result?);
        return Ok(());
    }
    let call = crate::credentials::CallInfo {
        agent,
        operation: &out.operation,
        method: &ctx.method,
        tool_path: &out.route.tool_path,
        task: ctx.task.as_ref().map(|t| t.id.as_str()),
        task_ends_ms: ctx.task.as_ref().map(|t| t.expires_at),
    };
    let (credential, result) =
        inject::inject(&out.tool, &call, req, &mut out.query, ctx.trace.as_mut()).await;
    ctx.credential = credential;
    result
}

/// approve: last before forwarding, so a request that strip or inject refuse never asks
/// for, or spends, an approval.
async fn approve(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    agent: &crate::config::Agent,
    out: &Outgoing,
) -> Result<(), Error> {
    let Some((digest, summary)) = &out.pending else {
        return Ok(());
    };
    let task = ctx.task.clone();
    let approvals = approve::Approvals {
        settings: &gw.snapshot.approvals,
        store: &*gw.shared.store,
        decisions: &gw.shared.decisions,
        webhooks: &gw.shared.webhooks,
        http: &gw.shared.http,
        metrics: &gw.shared.metrics,
        clock: &gw.shared.clock,
        // Before an approval is spent (at once, or when a held request wakes): the agent
        // is not suspended, and the task the call is made in has not ended meanwhile.
        check_agent: &|| {
            gw.shared.check_agent(&agent.id, &gw.snapshot.store)?;
            if let Some(t) = &task {
                gw.shared
                    .tasks
                    .check(&agent.id, &t.id, gw.shared.clock.unix_millis())?;
            }
            Ok(())
        },
    };
    let phase = ctx
        .trace
        .as_ref()
        .map(|_| RequestTrace::begin("keygate.approval"));
    let used = approve::approve(
        &approvals,
        approve::Pending {
            agent,
            tool: &out.tool.tool,
            operation: &out.operation,
            method: ctx.method.as_str(),
            path: &ctx.path,
            digest,
            summary: Some(summary.clone()),
            policies: &ctx.authorization.policies,
            approvers: ctx.authorization.approvers.max(1),
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
            Ok(())
        }
        Err(e) => {
            ctx.approval_id = e.approval_id.clone();
            Err(e)
        }
    }
}

/// forward: to the tool, streaming both ways (an AWS call signed first, as it leaves).
async fn forward(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    out: &mut Outgoing,
) -> Result<Response<ProxyBody>, Error> {
    let Some(mut req) = out.req.take() else {
        return Err(Error::new(ErrorKind::Internal, "no request to forward"));
    };
    if let Some(signing) = &out.aws_signing {
        let up = &out.tool.tool.upstream;
        let mut uri = format!("{}://{}{}", up.scheme, up.authority, out.route.forward_path);
        if let Some(q) = &out.query {
            uri.push('?');
            uri.push_str(q);
        }
        inject::sign_aws(
            &mut req,
            &uri,
            &up.host_header,
            out.body.as_deref(),
            signing,
            gw.shared.clock.now(),
        )?;
    }
    let to = forward::Outbound {
        path: &out.route.forward_path,
        query: out.query.as_deref(),
        original_host: out.original_host.take(),
        conn: &ctx.conn,
        request_id: &ctx.request_id,
    };
    forward::forward(&out.tool, req, to, ctx.trace.as_mut()).await
}

/// respond: keygate's credential never comes back to the agent; an MCP agent sees only
/// the tools it may call.
fn respond(
    gw: &Gateway,
    ctx: &RequestCtx,
    agent: &Arc<crate::config::Agent>,
    out: &Outgoing,
    resp: Response<ProxyBody>,
) -> Result<Response<ProxyBody>, Error> {
    let t = &out.tool.tool;
    // A compressed answer is decompressed first (or refused), so both searches read it.
    let resp = match &t.response_scan {
        Some(settings) => scan::decompress(settings, &t.name, resp)?,
        None => resp,
    };
    let resp = respond::respond(ctx.credential.injected.clone(), &t.name, resp)?;
    Ok(match ctx.mcp.as_ref().and_then(|m| m.tools_list.clone()) {
        Some(id) if resp.status().is_success() => mcp::filter_tools_list(
            gw.policies.clone(),
            gw.snapshot.clone(),
            t.clone(),
            agent.clone(),
            id,
            resp,
            gw.shared.clock.unix_secs(),
            ctx.task.clone(),
        ),
        _ => resp,
    })
}

/// respond, its last step: known secret formats in the response are redacted (or block
/// it, or pass), per tool; after inventory, which captures a created secret first.
async fn scan(
    ctx: &mut RequestCtx,
    out: &Outgoing,
    resp: Response<ProxyBody>,
) -> Result<Response<ProxyBody>, Error> {
    let t = &out.tool.tool;
    let Some(settings) = &t.response_scan else {
        return Ok(resp);
    };
    let findings = Arc::new(scan::Findings::default());
    ctx.response_secrets = Some(findings.clone());
    scan::scan(settings, &t.name, resp, findings).await
}

/// inventory: an identity created is recorded with its agent, approver, owner, ticket.
async fn inventory(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    agent: &crate::config::Agent,
    out: &Outgoing,
    resp: Response<ProxyBody>,
) -> Result<Response<ProxyBody>, Error> {
    if !out.operation.is_identity_creation() || !resp.status().is_success() {
        return Ok(resp);
    }
    let policies = ctx.policies();
    let created = inventory::Created {
        agent,
        tool: &out.tool.tool.name,
        operation: &out.operation,
        forward_path: &out.route.forward_path,
        approval: ctx.approval.as_ref(),
        policies: &policies,
        request_id: &ctx.request_id,
        review_after: gw.snapshot.approvals.review_after,
        now: gw.shared.clock.unix_millis(),
        capture: out.tool.tool.capture.then_some(inventory::Capture {
            vault: &gw.shared.vault,
            agent_keys: &gw.shared.agent_keys,
        }),
    };
    let (resp, captured) =
        inventory::record(&*gw.shared.store, created, resp, &mut ctx.inventory).await?;
    ctx.captured = captured;
    Ok(resp)
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

//! The forward proxy: clients that honour `HTTPS_PROXY` (SDKs, CLIs, coding agents) reach
//! their tools through keygate unmodified.
//!
//! ```text
//! CONNECT host:443   the agent, from Proxy-Authorization (Basic with the token as the
//!                    password, or Bearer) or the client certificate to this listener;
//!                    none or a bad one: 407 with Proxy-Authenticate
//!   host a tool names      200, TLS terminated with a certificate for the host from
//!                          keygate's CA ([`ca`]), and every request inside (HTTP/1.1 or
//!                          HTTP/2 by ALPN) runs the whole pipeline as that agent's call to
//!                          that tool
//!   host a tool tunnels    policy on the `tunnel` operation, then bytes copied both ways
//!                          untouched, audited once closed (bytes, duration)
//!   any other host         403 host_not_allowed, audited
//! GET http://host/…  (absolute form) the same pipeline, cleartext
//! ```
//!
//! A tunnel is bound to its agent and its host: the credential from the `CONNECT` is
//! checked again on every request in it (a token that expires, or an agent suspended,
//! stops new requests), and a request addressed to another host is refused
//! (`misdirected_request`). keygate never passes an intercepted host's traffic through
//! unread: a client that does not trust the CA fails its handshake.

pub mod ca;

use crate::conn::{ConnInfo, Tunnel};
use crate::error::{Error, ErrorKind, ProxyBody};
use crate::gateway::{Gateway, Runtime};
use crate::pipeline::context::RequestCtx;
use crate::pipeline::identify::Identity;
use crate::tools::ToolRuntime;
use base64::Engine;
use ca::Ca;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The forward-proxy listener, bound.
pub struct Listener {
    pub addr: SocketAddr,
    listener: TcpListener,
    ca: Arc<Ca>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Loads (or generates) the CA and binds the forward-proxy listener.
pub async fn bind(settings: &crate::config::ProxySettings) -> Result<Listener, String> {
    let ca = Arc::new(Ca::load_or_generate(settings)?);
    let listener = TcpListener::bind(&settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {} (proxy): {e}", settings.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let tls = match &settings.tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(
            crate::tls::server_config_http1(t)?,
        )),
        None => None,
    };
    Ok(Listener {
        addr,
        listener,
        ca,
        tls,
    })
}

/// What every connection of the listener shares.
struct Shared {
    rt: Arc<Runtime>,
    ca: Arc<Ca>,
    /// Serves the requests inside an intercepted tunnel (HTTP/1.1 and HTTP/2).
    inner: auto::Builder<TokioExecutor>,
    /// Serves the proxy protocol itself (HTTP/1.1: `CONNECT` and absolute-form requests).
    outer: auto::Builder<TokioExecutor>,
    shutdown: watch::Receiver<bool>,
    /// Held by every open tunnel, so shutdown can wait for their audit records.
    open: Arc<()>,
}

/// Serves the forward proxy until `shutdown`; returns once every tunnel has ended (or the
/// grace period is over).
pub async fn serve(rt: Arc<Runtime>, l: Listener, shutdown: watch::Receiver<bool>) {
    let settings = rt.current().snapshot.server.clone();
    let inner = crate::agent_conn::builder(&settings);
    let mut outer = auto::Builder::new(TokioExecutor::new()).http1_only();
    outer
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192))
        .max_headers(settings.max_headers);
    let shared = Arc::new(Shared {
        rt,
        ca: l.ca,
        inner,
        outer,
        shutdown: shutdown.clone(),
        open: Arc::new(()),
    });
    tracing::info!(addr = %l.addr, tls = l.tls.is_some(), "keygate's forward proxy is listening");
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = shutdown;
    loop {
        let Some((stream, remote_addr)) = crate::agent_conn::accept(&l.listener, &mut stop).await
        else {
            break;
        };
        let shared = shared.clone();
        let tls = l.tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let handshake = settings.tls_handshake_timeout;
            match tls {
                None => {
                    let conn = Arc::new(ConnInfo::new(remote_addr, false, None));
                    serve_proxy_conn(shared, conn, stream, watcher).await;
                }
                Some(acceptor) => {
                    let Some((stream, conn)) =
                        crate::agent_conn::tls_accept(&acceptor, stream, remote_addr, handshake)
                            .await
                    else {
                        return;
                    };
                    serve_proxy_conn(shared, conn, stream, watcher).await;
                }
            }
        });
    }
    drop(l.listener);
    let grace = settings.shutdown_grace;
    let open = shared.open.clone();
    drop(shared);
    let tunnels = async {
        // Every tunnel task holds a clone; this one and the listener's are the last.
        while Arc::strong_count(&open) > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let _ = tokio::time::timeout(grace, async {
        graceful.shutdown().await;
        tunnels.await;
    })
    .await;
}

async fn serve_proxy_conn<S>(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    stream: S,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = ProxyService {
        shared: shared.clone(),
        conn,
    };
    let io = TokioIo::new(crate::agent_conn::FirstReadDeadline::new(
        stream,
        shared.rt.current().snapshot.server.header_read_timeout,
    ));
    let _ = watcher
        .watch(shared.outer.serve_connection_with_upgrades(io, svc))
        .await;
}

/// The proxy protocol on one agent connection.
#[derive(Clone)]
struct ProxyService {
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
}

type ServiceFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>,
>;

impl hyper::service::Service<Request<Incoming>> for ProxyService {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let shared = self.shared.clone();
        let conn = self.conn.clone();
        Box::pin(async move {
            let gw = shared.rt.current();
            if let Some(refused) = audit_gate(&gw).await {
                return Ok(refused);
            }
            Ok(if req.method() == Method::CONNECT {
                connect(shared, gw, conn, req).await
            } else {
                absolute(gw, conn, req).await
            })
        })
    }
}

/// What the `CONNECT` target names.
enum Target {
    /// A host tools name: intercepted (each request finds its tool by path).
    Intercept,
    /// A host a tool tunnels blind.
    Blind(Arc<ToolRuntime>),
}

/// The host (lowercase, no port) and `host:port` of a `CONNECT` target.
fn target_of(req: &Request<Incoming>) -> Result<(String, String), Error> {
    let bad = || {
        Error::new(
            ErrorKind::BadRequest,
            "CONNECT needs a host:port target, such as api.github.com:443",
        )
    };
    let a = req.uri().authority().ok_or_else(bad)?;
    if a.as_str().contains('@') {
        return Err(bad());
    }
    let port = a.port_u16().ok_or_else(bad)?;
    let host = a.host().to_ascii_lowercase();
    if host.is_empty() {
        return Err(bad());
    }
    let authority = format!("{host}:{port}");
    Ok((host, authority))
}

/// While the audit log cannot be written (`audit.fail_closed`), nothing is tunnelled or
/// forwarded; and while the writer is far behind, the request waits (as in the pipeline).
async fn audit_gate(gw: &Gateway) -> Option<Response<ProxyBody>> {
    if gw.snapshot.audit_fail_closed && !gw.shared.audit.is_writing() {
        gw.shared.metrics.audit_refusal();
        let e = Error::new(
            ErrorKind::AuditUnavailable,
            "keygate cannot write its audit log right now; nothing was forwarded",
        );
        return Some(e.to_response(&gw.next_request_id()));
    }
    gw.shared.audit.admit().await;
    None
}

async fn connect(
    shared: Arc<Shared>,
    gw: Arc<Gateway>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let target = req
        .uri()
        .authority()
        .map_or_else(String::new, |a| a.as_str().to_string());
    let mut ctx = RequestCtx::new(
        gw.next_request_id(),
        conn.clone(),
        Method::CONNECT,
        target,
        Arc::new(AtomicBool::new(false)),
        None,
    );
    let (host, authority) = match target_of(&req) {
        Ok(t) => t,
        Err(e) => return refuse(&gw, ctx, e),
    };
    ctx.path = authority.clone();
    let (identity, credential) = match agent_of(&gw, &conn, req.headers()) {
        Ok(x) => x,
        Err(e) => return refuse(&gw, ctx, e),
    };
    let agent = identity.agent.clone();
    ctx.identity = Some(identity);
    let target = if gw.tools.by_host.contains_key(&host) {
        Target::Intercept
    } else if let Some(t) = gw.tools.by_tunnel_host.get(&authority) {
        Target::Blind(t.clone())
    } else {
        let e = Error::new(
            ErrorKind::HostNotAllowed,
            format!("no tool names {host}; keygate forwards only to the hosts its tools name"),
        );
        return refuse(&gw, ctx, e);
    };
    match target {
        Target::Intercept => {
            // Issued now (or kept from earlier), for a host a tool names and no other.
            let tls = match shared.ca.server_config(&host) {
                Ok(c) => c,
                Err(e) => {
                    let e = Error::new(
                        ErrorKind::Internal,
                        "keygate cannot issue a certificate for this host",
                    )
                    .with_detail(e);
                    return refuse(&gw, ctx, e);
                }
            };
            let tunnel = Tunnel::new(host, credential);
            let inner = Arc::new(conn.tunnelled(true, tunnel));
            tokio::spawn(intercept(shared, gw.clone(), ctx, req, inner, tls));
            empty(StatusCode::OK)
        }
        Target::Blind(tool) => {
            ctx.tool = Some(tool.clone());
            ctx.operation = Some(gw.snapshot.operations.tunnel.clone());
            // The task named on the CONNECT holds for the tunnel: it must include the
            // tool's tunnel, and the policies see it.
            ctx.task = match tunnel_task(&gw, &agent.id, &credential) {
                Ok(t) => t,
                Err(e) => return refuse(&gw, ctx, e),
            };
            let (authorization, decided) =
                decide_tunnel(&gw, &agent, &tool, &authority, ctx.task.as_deref());
            ctx.authorization = authorization;
            if let Err(e) = decided {
                return refuse(&gw, ctx, e);
            }
            let upstream = match tokio::time::timeout(
                tool.tool.connect_timeout,
                tokio::net::TcpStream::connect(&authority),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    let e = Error::new(
                        ErrorKind::UpstreamUnavailable,
                        format!("keygate cannot reach {authority}"),
                    )
                    .with_detail(e.to_string());
                    return refuse(&gw, ctx, e);
                }
                Err(_) => {
                    let e = Error::new(
                        ErrorKind::UpstreamTimeout,
                        format!("{authority} did not accept a connection in time"),
                    );
                    return refuse(&gw, ctx, e);
                }
            };
            let idle = gw
                .snapshot
                .proxy
                .as_ref()
                .map_or(Duration::from_secs(300), |p| p.tunnel_idle_timeout);
            // Rechecked while open: a blind tunnel's `host` is its `host:port`, as
            // `tunnel_hosts` name it.
            let tunnel = Tunnel::new(authority, credential);
            tokio::spawn(blind(shared, ctx, req, upstream, tunnel, idle));
            empty(StatusCode::OK)
        }
    }
}

/// The agent of a `CONNECT` (or absolute-form request): its credential from
/// `Proxy-Authorization` (Basic with the token as the password, or Bearer), or its client
/// certificate to this listener; and that credential as identify reads it on every
/// request in the tunnel.
fn agent_of(
    gw: &Gateway,
    conn: &ConnInfo,
    headers: &HeaderMap,
) -> Result<(Identity, HeaderMap), Error> {
    let mut credential = HeaderMap::new();
    if conn.spiffe_id.is_none() && !headers.contains_key(header::PROXY_AUTHORIZATION) {
        return Err(Error::new(
            ErrorKind::ProxyAuthRequired,
            "no agent credential: put the agent token in the proxy URL (http://agent:TOKEN@host:port) or send Proxy-Authorization",
        ));
    }
    let mut user = None;
    if let Some(v) = headers.get(header::PROXY_AUTHORIZATION) {
        let (token, named) = proxy_token(v).ok_or_else(|| {
            Error::new(
                ErrorKind::ProxyAuthRequired,
                "Proxy-Authorization must be Basic (the agent token as the password) or Bearer",
            )
        })?;
        user = named;
        let mut v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            Error::new(
                ErrorKind::ProxyAuthRequired,
                "the agent token in Proxy-Authorization is not valid",
            )
        })?;
        v.set_sensitive(true);
        credential.insert(header::PROXY_AUTHORIZATION, v);
    }
    // The task the tunnel's calls are made in, checked on each of them.
    for v in headers.get_all(&crate::tasks::HEADER) {
        credential.append(&crate::tasks::HEADER, v.clone());
    }
    let identity = crate::pipeline::identify::identify(
        &gw.identifier,
        &gw.snapshot.agents,
        conn,
        &credential,
        None,
        |a| gw.shared.check_agent(a, &gw.snapshot.store),
        None,
    )
    .map_err(|e| match e.kind {
        ErrorKind::Unauthenticated | ErrorKind::UnknownAgent => {
            let mut p = Error::new(ErrorKind::ProxyAuthRequired, e.message);
            p.detail = e.detail;
            p
        }
        _ => e,
    })?;
    // `http://AGENT:TOKEN@proxy`: a user name naming another agent than the token is a
    // mislabelled proxy URL, refused rather than silently taken as the token's agent.
    if let Some(u) = user.filter(|u| *u != *identity.agent.id) {
        return Err(Error::new(
            ErrorKind::ProxyAuthRequired,
            "the proxy URL's user name names another agent than its token",
        )
        .with_detail(format!(
            "user name {u:?}, token's agent {:?}",
            &*identity.agent.id
        )));
    }
    // A task named on the CONNECT is this agent's and open (each call in the tunnel is
    // checked again): a tunnel is not opened, blind or not, for a task it cannot use.
    tunnel_task(gw, &identity.agent.id, &credential)?;
    Ok((identity, credential))
}

/// The token in a `Proxy-Authorization` value, and the user name that came with it:
/// Bearer's token, or Basic's password with its user name (the user name is the token
/// when the password is empty, as `http://TOKEN@proxy` sends it).
fn proxy_token(v: &HeaderValue) -> Option<(String, Option<String>)> {
    let v = v.to_str().ok()?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return (!rest.is_empty()).then(|| (rest.to_string(), None));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':').unwrap_or((&text, ""));
    if password.is_empty() {
        return (!user.is_empty()).then(|| (user.to_string(), None));
    }
    let user = (!user.is_empty()).then(|| user.to_string());
    Some((password.to_string(), user))
}

/// An absolute-form request (`GET http://host/…`): the agent from `Proxy-Authorization`,
/// the tool from the host, then the pipeline as for any request.
async fn absolute(
    gw: Arc<Gateway>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let mut ctx = RequestCtx::new(
        gw.next_request_id(),
        conn.clone(),
        req.method().clone(),
        req.uri().path().to_string(),
        Arc::new(AtomicBool::new(false)),
        None,
    );
    let host = match (req.uri().scheme_str(), req.uri().authority()) {
        (Some("http"), Some(a)) if !a.as_str().contains('@') => a.host().to_ascii_lowercase(),
        _ => {
            let e = Error::new(
                ErrorKind::BadRequest,
                "this is keygate's forward proxy: send CONNECT host:port, or a request for an http:// URL",
            );
            return refuse(&gw, ctx, e);
        }
    };
    let (identity, credential) = match agent_of(&gw, &conn, req.headers()) {
        Ok(x) => x,
        Err(e) => return refuse(&gw, ctx, e),
    };
    if !gw.tools.by_host.contains_key(&host) {
        ctx.identity = Some(identity);
        let e = Error::new(
            ErrorKind::HostNotAllowed,
            format!("no tool names {host}; keygate forwards only to the hosts its tools name"),
        );
        return refuse(&gw, ctx, e);
    }
    let conn = Arc::new(conn.tunnelled(false, Tunnel::new(host, credential)));
    crate::pipeline::handle(gw, conn, req).await
}

/// A refused proxy request, audited; 407 carries `Proxy-Authenticate`.
fn refuse(gw: &Gateway, mut ctx: RequestCtx, e: Error) -> Response<ProxyBody> {
    tracing::info!(
        request_id = %ctx.request_id,
        code = e.kind.code(),
        detail = e.detail.as_deref().unwrap_or(""),
        "{}",
        e.message
    );
    let mut resp = e.to_response(&ctx.request_id);
    if e.kind == ErrorKind::ProxyAuthRequired {
        resp.headers_mut().append(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"keygate\", charset=\"UTF-8\""),
        );
        resp.headers_mut().append(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"keygate\""),
        );
    }
    ctx.decision = if e.kind.status().is_server_error() {
        crate::pipeline::Decision::Error
    } else {
        crate::pipeline::Decision::Deny
    };
    ctx.error = Some(e);
    crate::pipeline::audit::attach(&gw.shared.audit, &gw.shared.metrics, ctx, resp)
}

fn empty(status: StatusCode) -> Response<ProxyBody> {
    let mut r = Response::new(crate::error::full_body(bytes::Bytes::new()));
    *r.status_mut() = status;
    r
}

/// An intercepted tunnel: TLS as the host with a certificate from keygate's CA, then
/// every request inside through the pipeline as the tunnel's agent's. A tunnel whose
/// handshake fails (most often: the client does not trust keygate's CA) is audited as a
/// refused CONNECT; one that carries requests is audited by them.
async fn intercept(
    shared: Arc<Shared>,
    gw: Arc<Gateway>,
    mut ctx: RequestCtx,
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
    tls: Arc<rustls::ServerConfig>,
) {
    let _open = shared.open.clone();
    let upgraded = match hyper::upgrade::on(req).await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!("CONNECT upgrade failed: {e}");
            return;
        }
    };
    let settings = gw.snapshot.server.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let stream = match tokio::time::timeout(
        settings.tls_handshake_timeout,
        acceptor.accept(TokioIo::new(upgraded)),
    )
    .await
    {
        Ok(Ok(s)) => s,
        failed => {
            // Nothing is passed through: the tunnel ends here.
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".to_string(),
            };
            tracing::info!(
                request_id = %ctx.request_id,
                client = %conn.client,
                target = %ctx.path,
                "TLS handshake in a proxy tunnel failed (does the client trust keygate's CA? `keygate ca` prints it): {why}"
            );
            ctx.decision = crate::pipeline::Decision::Deny;
            ctx.error = Some(
                Error::new(
                    ErrorKind::TlsHandshakeFailed,
                    "the TLS handshake in the tunnel failed; does the client trust keygate's CA?",
                )
                .with_detail(why),
            );
            crate::pipeline::audit::record_now(&gw.shared.audit, &gw.shared.metrics, ctx, 200, 0);
            return;
        }
    };
    let stream = crate::agent_conn::FirstReadDeadline::new(stream, settings.header_read_timeout);
    let svc = crate::agent_conn::service(shared.rt.clone(), conn.clone());
    let served = shared.inner.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(served);
    let mut stop = shared.shutdown.clone();
    tokio::select! {
        _ = served.as_mut() => {}
        _ = stop.changed() => {
            // Shutting down: in-flight requests finish, then the tunnel closes.
            served.as_mut().graceful_shutdown();
            let _ = served.await;
        }
    }
    // Each request in the tunnel has its own record; a tunnel that carried none has this
    // one, so no CONNECT goes unrecorded.
    if conn
        .tunnel
        .as_ref()
        .is_some_and(|t| t.requests.load(Ordering::Relaxed) == 0)
    {
        ctx.decision = crate::pipeline::Decision::Allow;
        crate::pipeline::audit::record_now(&gw.shared.audit, &gw.shared.metrics, ctx, 200, 0);
    }
}

/// How often an open blind tunnel is checked again (its agent's credential, suspension,
/// the tool still tunnelling the host, the policies, the audit log).
const BLIND_RECHECK: Duration = Duration::from_secs(5);

/// A blind tunnel: bytes copied both ways untouched until either side closes, the tunnel
/// is idle for `idle`, keygate shuts down, or a recheck fails (the agent's token expired,
/// the agent is suspended, the tool no longer tunnels the host, a policy now forbids it,
/// or the audit log cannot be written under `fail_closed`); then its audit record
/// (bytes, duration, and why it was closed).
async fn blind(
    shared: Arc<Shared>,
    mut ctx: RequestCtx,
    req: Request<Incoming>,
    upstream: tokio::net::TcpStream,
    tunnel: Tunnel,
    idle: Duration,
) {
    let _open = shared.open.clone();
    ctx.decision = crate::pipeline::Decision::Allow;
    let record = |ctx: RequestCtx, out: u64| {
        let gw = shared.rt.current();
        crate::pipeline::audit::record_now(&gw.shared.audit, &gw.shared.metrics, ctx, 200, out);
    };
    let upgraded = match hyper::upgrade::on(req).await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!("CONNECT upgrade failed: {e}");
            record(ctx, 0);
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let up = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicU64::new(0));
    let mut agent = Counted::new(TokioIo::new(upgraded), up.clone(), down.clone());
    let mut tool = upstream;
    let mut stop = shared.shutdown.clone();
    let copy = tokio::io::copy_bidirectional(&mut agent, &mut tool);
    tokio::pin!(copy);
    let mut ticks = tokio::time::interval(BLIND_RECHECK.min(idle));
    ticks.tick().await;
    let (mut last, mut quiet_since) = ((0, 0), tokio::time::Instant::now());
    loop {
        tokio::select! {
            _ = copy.as_mut() => break,
            _ = stop.changed() => break,
            _ = ticks.tick() => {
                if let Err(e) = recheck_blind(&shared.rt.current(), &ctx, &tunnel) {
                    tracing::info!(request_id = %ctx.request_id, code = e.kind.code(), "blind tunnel closed: {}", e.message);
                    ctx.error = Some(e);
                    ctx.decision = crate::pipeline::Decision::Deny;
                    break;
                }
                let now = (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed));
                if now != last {
                    (last, quiet_since) = (now, tokio::time::Instant::now());
                } else if quiet_since.elapsed() >= idle {
                    tracing::debug!(request_id = %ctx.request_id, "blind tunnel idle: closed");
                    break;
                }
            }
        }
    }
    ctx.bytes_in
        .store(up.load(Ordering::Relaxed), Ordering::Relaxed);
    let out = down.load(Ordering::Relaxed);
    record(ctx, out);
}

/// What let a blind tunnel open, checked again against the gateway as it is now.
fn recheck_blind(gw: &Gateway, ctx: &RequestCtx, tunnel: &Tunnel) -> Result<(), Error> {
    if gw.snapshot.audit_fail_closed && !gw.shared.audit.is_writing() {
        return Err(Error::new(
            ErrorKind::AuditUnavailable,
            "keygate cannot write its audit log right now",
        ));
    }
    let identity = crate::pipeline::identify::identify(
        &gw.identifier,
        &gw.snapshot.agents,
        &ctx.conn,
        &tunnel.credential,
        None,
        |a| gw.shared.check_agent(a, &gw.snapshot.store),
        None,
    )?;
    let tool = gw.tools.by_tunnel_host.get(&tunnel.host).ok_or_else(|| {
        Error::new(
            ErrorKind::HostNotAllowed,
            format!("no tool tunnels {} any more", tunnel.host),
        )
    })?;
    // A tunnel opened in a task closes when the task ends.
    let task = tunnel_task(gw, &identity.agent.id, &tunnel.credential)?;
    decide_tunnel(gw, &identity.agent, tool, &tunnel.host, task.as_deref()).1
}

/// The task named on a CONNECT (`Keygate-Task`, kept with the tunnel's credential), if
/// any: this agent's and open, or the refusal.
fn tunnel_task(
    gw: &Gateway,
    agent: &str,
    credential: &http::HeaderMap,
) -> Result<Option<Arc<crate::store::Task>>, Error> {
    crate::tasks::named(credential)?
        .map(|t| {
            gw.shared
                .tasks
                .check(agent, t, gw.shared.clock.unix_millis())
        })
        .transpose()
}

/// The policies on a blind tunnel to `target` (`host:port`): the `tunnel` operation,
/// method `CONNECT`, within `task` when one is named. One that needs approval is refused:
/// a tunnel cannot wait for one.
fn decide_tunnel(
    gw: &Gateway,
    agent: &crate::config::Agent,
    tool: &ToolRuntime,
    target: &str,
    task: Option<&crate::store::Task>,
) -> (crate::pipeline::authorize::Authorization, Result<(), Error>) {
    if let Some(task) = task {
        let scoped = crate::tasks::in_scope(task, &tool.tool.name, &gw.snapshot.operations.tunnel);
        if let Err(e) = scoped {
            return (Default::default(), Err(e));
        }
    }
    let input = crate::policy::Input {
        agent,
        tool: &tool.tool,
        operation: &gw.snapshot.operations.tunnel,
        method: "CONNECT",
        path: target,
        now_unix: gw.shared.clock.unix_secs(),
        approved: false,
        mcp: None,
        aws: None,
        task,
    };
    let (authorization, decided) =
        crate::pipeline::authorize::authorize(&gw.policies, None, &input);
    let decided = decided.and_then(|()| match authorization.allowed_by {
        Some(_) => Err(Error::new(
            ErrorKind::Forbidden,
            "a policy wants approval for this tunnel; a blind tunnel cannot wait for one",
        )),
        None => Ok(()),
    });
    (authorization, decided)
}

/// Counts the bytes read from (`up`: agent to tool) and written to (`down`) a stream.
struct Counted<S> {
    inner: S,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

impl<S> Counted<S> {
    fn new(inner: S, up: Arc<AtomicU64>, down: Arc<AtomicU64>) -> Self {
        Counted { inner, up, down }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        self.up.fetch_add(n, Ordering::Relaxed);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            self.down.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_credentials_in_the_forms_clients_send() {
        let basic = |s: &str| {
            HeaderValue::from_str(&format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            ))
            .unwrap()
        };
        let t = |v: &HeaderValue| proxy_token(v).map(|(t, u)| (t, u.unwrap_or_default()));
        let pair = |t: &str, u: &str| Some((t.to_string(), u.to_string()));
        // HTTPS_PROXY=http://agent:TOKEN@host:port
        assert_eq!(t(&basic("agent:tok")), pair("tok", "agent"));
        // HTTPS_PROXY=http://TOKEN@host:port
        assert_eq!(t(&basic("tok:")), pair("tok", ""));
        assert_eq!(t(&basic("tok")), pair("tok", ""));
        assert_eq!(t(&basic(":tok")), pair("tok", ""));
        assert_eq!(t(&HeaderValue::from_static("Bearer tok")), pair("tok", ""));
        assert_eq!(proxy_token(&basic(":")), None);
        assert_eq!(proxy_token(&HeaderValue::from_static("Basic !!")), None);
        assert_eq!(proxy_token(&HeaderValue::from_static("Digest x")), None);
        assert_eq!(proxy_token(&HeaderValue::from_static("Bearer ")), None);
    }
}

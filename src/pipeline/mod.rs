//! The request pipeline, one module per phase, in request order:
//!
//! ```text
//! identify   who is calling (verified JWT, mTLS SPIFFE ID)
//! classify   which tool
//! strip      remove the agent's credentials; refuse or redact known secret formats
//! inject     the tool's provider issues this agent's credential
//! forward    pooled client to the tool, streaming both ways
//! audit      exactly one record per request
//! ```
//!
//! Every phase reads and extends one [`RequestCtx`]; a phase that refuses returns an
//! [`Error`], which [`Error::to_response`] maps to the wire. Nothing reaches a tool
//! before identify and strip have passed, and nothing reaches it without the credential
//! inject produced: every path to `forward` goes through all of them.

pub mod audit;
pub mod body;
pub mod classify;
pub mod context;
pub mod forward;
pub mod identify;
pub mod inject;
pub mod strip;

use crate::error::{Error, ErrorKind, ProxyBody};
use crate::gateway::Gateway;
use crate::server::ConnInfo;
use classify::Route;
pub use context::{Decision, RequestCtx};
use http::{header, Request, Response, StatusCode};
use std::sync::Arc;
use tracing::Instrument;

/// Serves one request from an agent.
pub async fn handle<B>(
    gw: Arc<Gateway>,
    conn: Arc<ConnInfo>,
    req: Request<B>,
) -> Response<ProxyBody>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<crate::error::BoxError>,
{
    let request_id = gw.next_request_id();
    let mut ctx = RequestCtx::new(request_id, conn, req.method().clone(), req.uri().path());
    let span = tracing::info_span!(
        "request",
        request_id = %ctx.request_id,
        method = %ctx.method,
        agent = tracing::field::Empty,
        tool = tracing::field::Empty,
        status = tracing::field::Empty,
        bytes_out = tracing::field::Empty,
    );
    let result = run(&gw, &mut ctx, req).instrument(span.clone()).await;
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            // A refusal (4xx) is keygate's decision; a failure after it allowed the call
            // (credential, upstream) is an error.
            ctx.decision = if e.kind.status().is_server_error() {
                Decision::Error
            } else {
                Decision::Deny
            };
            let _enter = span.enter();
            match e.kind.status().as_u16() {
                500.. => tracing::warn!(
                    code = e.kind.code(),
                    detail = e.detail.as_deref().unwrap_or(""),
                    "{}",
                    e.message
                ),
                _ => tracing::info!(
                    code = e.kind.code(),
                    detail = e.detail.as_deref().unwrap_or(""),
                    "{}",
                    e.message
                ),
            }
            let resp = e.to_response(&ctx.request_id);
            ctx.error = Some(e);
            resp
        }
    };
    audit::attach(&gw.audit, ctx, resp, span)
}

async fn run<B>(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    req: Request<B>,
) -> Result<Response<ProxyBody>, Error>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<crate::error::BoxError>,
{
    check_framing(&req)?;
    let host = req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    let route = classify::route(gw, host, req.uri().path());

    let tool = match route {
        Route::Jwks => {
            ctx.decision = Decision::Local;
            return serve_jwks(gw, req.method());
        }
        Route::Tool(t, path) => {
            ctx.forward_path = path;
            Some(t)
        }
        Route::Unknown => None,
    };

    // identify: before anything about tools is revealed.
    let identity = gw
        .identifier
        .identify(&gw.snapshot.agents, &ctx.conn, req.headers())?;
    tracing::Span::current().record("agent", &*identity.agent.id);
    ctx.identity = Some(identity);

    // classify
    let Some(tool) = tool else {
        return Err(Error::new(
            ErrorKind::UnknownTool,
            "no tool matches this request; call a tool as /tools/<name>/… or through its host",
        ));
    };
    tracing::Span::current().record("tool", &*tool.tool.name);
    ctx.tool = Some(tool.clone());

    // authorize: every identified agent may call every configured tool until policies
    // arrive (issue #3); from there on, this is where Cedar decides.
    ctx.decision = Decision::Allow;

    let original_host = req.headers().get(header::HOST).cloned();
    // strip
    let mut req = strip::strip(ctx, &tool, gw.snapshot.server.body_read_timeout, req).await?;
    // inject
    inject::inject(ctx, &tool, &mut req)?;
    // forward
    forward::forward(ctx, &tool, req, original_host).await
}

/// Refuses framing that a server and a tool might read differently (request smuggling):
/// Content-Length together with Transfer-Encoding, or Content-Length given twice.
///
/// Defence in depth: over HTTP/1.1 hyper already resolves these before the request gets
/// here (RFC 9112 §6.3: with Transfer-Encoding it drops Content-Length, reads the body as
/// chunked and closes the connection after the response; identical duplicate lengths are
/// folded into one; differing ones are refused with a bare 400). keygate forwards its own
/// framing either way (strip re-frames read bodies; hop-by-hop headers are removed).
fn check_framing<B>(req: &Request<B>) -> Result<(), Error> {
    let h = req.headers();
    let lengths = h.get_all(header::CONTENT_LENGTH).iter().count();
    if lengths > 1 {
        return Err(Error::new(
            ErrorKind::AmbiguousFraming,
            "the request has more than one Content-Length header",
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
    *resp.body_mut() = crate::error::full_body(gw.jwks_document.clone());
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

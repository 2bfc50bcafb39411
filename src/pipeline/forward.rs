//! **forward**: send the request to the tool over a pooled connection and stream the
//! response back.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and the headers it names,
//! `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`) are
//! removed both ways; the agent's are removed by inject, before keygate's credential is
//! set, so a `Connection` naming that header cannot remove it. Forwarding headers the agent sent are dropped, not trusted, and
//! keygate sets its own `Forwarded` and `X-Forwarded-*`. Upstream failures become
//! `upstream_unavailable` (502) or `upstream_timeout` (504).

use super::context::RequestCtx;
use crate::error::{BoxError, Error, ErrorKind, ProxyBody};
use crate::gateway::ToolRuntime;
use crate::telemetry::spans::RequestTrace;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::KeyValue;
use std::path::Path;
use std::time::Duration;

/// A pooled HTTP/1.1 and HTTP/2 client for http and https upstreams.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;

/// Builds a pooled client: system roots, or the CA bundle at `ca_file`; HTTP/2 where the
/// upstream offers it through ALPN.
pub fn build_client(
    ca_file: Option<&Path>,
    connect_timeout: Duration,
) -> Result<HttpClient, String> {
    let tls = crate::server::tls::client_config(ca_file)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .timer(hyper_util::rt::TokioTimer::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(https))
}

/// GETs a small text document (a JWKS), refusing anything but a 200 within `limit` bytes.
pub async fn fetch_text(client: &HttpClient, url: Uri, limit: usize) -> Result<String, String> {
    let req = Request::get(url.clone())
        .header(header::ACCEPT, "application/json")
        .body(crate::error::full_body(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| format!("{url}: timed out"))?
        .map_err(|e| format!("{url}: {e}"))?;
    if resp.status() != http::StatusCode::OK {
        return Err(format!("{url}: status {}", resp.status()));
    }
    let body = http_body_util::Limited::new(resp.into_body(), limit)
        .collect()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| format!("{url}: not UTF-8"))
}

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const AGENT_FORWARDING: [HeaderName; 5] = [
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-real-ip"),
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Usually there are none, or only `Connection`: one pass over the headers finds them,
    // and only the headers present are removed.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    let present: Vec<HeaderName> = headers
        .keys()
        .filter(|k| HOP_BY_HOP.contains(k) || named.contains(k))
        .cloned()
        .collect();
    for n in present {
        headers.remove(n);
    }
}

/// Sends the request to the tool; the response body streams back as it arrives.
pub async fn forward(
    ctx: &mut RequestCtx,
    tool: &ToolRuntime,
    mut req: Request<ProxyBody>,
    original_host: Option<HeaderValue>,
) -> Result<Response<ProxyBody>, Error> {
    let t = &tool.tool;
    let mut pq = String::with_capacity(
        ctx.forward_path.len() + 1 + ctx.forward_query.as_ref().map_or(0, String::len),
    );
    pq.push_str(&ctx.forward_path);
    if let Some(q) = &ctx.forward_query {
        pq.push('?');
        pq.push_str(q);
    }
    let uri = Uri::builder()
        .scheme(t.upstream.scheme.clone())
        .authority(t.upstream.authority.clone())
        .path_and_query(pq)
        .build()
        .map_err(|_| {
            Error::new(
                ErrorKind::BadRequest,
                "the request path cannot be forwarded",
            )
        })?;
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_11;

    // The agent's hop-by-hop headers (and those its `Connection` names) were removed by
    // inject, before keygate set its credential; nothing since adds one.
    let headers = req.headers_mut();
    // The tool's own host. Over cleartext (always HTTP/1.1) keygate sets it from a
    // precomputed value; over TLS the client sets it for HTTP/1.1 and leaves it out for
    // HTTP/2 (where `:authority` carries it).
    if t.upstream.scheme == http::uri::Scheme::HTTP {
        headers.insert(header::HOST, t.upstream.host_header.clone());
    } else {
        headers.remove(header::HOST);
    }
    // Forwarding headers the agent sent are dropped, not trusted: one pass over the
    // (few) headers instead of a lookup per name.
    if headers.keys().any(|k| AGENT_FORWARDING.contains(k)) {
        for n in &AGENT_FORWARDING {
            headers.remove(n);
        }
    }
    let proto = if ctx.conn.tls { "https" } else { "http" };
    if let Some(v) = &ctx.conn.forwarded_for {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v.clone());
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(proto),
    );
    let forwarded = match original_host.as_ref().and_then(|h| h.to_str().ok()) {
        Some(h)
            if h.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') =>
        {
            HeaderValue::from_str(&format!("{};host=\"{h}\"", ctx.conn.forwarded))
        }
        _ => HeaderValue::from_str(&ctx.conn.forwarded),
    };
    if let Some(h) = original_host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), h);
    }
    if let Ok(v) = forwarded {
        headers.insert(header::FORWARDED, v);
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), v);
    }

    // The upstream call is a client span, and the tool's parent: keygate sends its own
    // traceparent (the agent's, when spans are not exported, passes through unchanged).
    let method = req.method().clone();
    let phase = ctx.trace.as_ref().map(|trace| {
        let phase = RequestTrace::begin_client("keygate.upstream");
        let headers = req.headers_mut();
        headers.remove("traceparent");
        headers.remove("tracestate");
        if let Some(v) = trace.traceparent(phase.span_id()) {
            headers.insert(HeaderName::from_static("traceparent"), v);
        }
        if let Some(v) = trace.tracestate() {
            headers.insert(HeaderName::from_static("tracestate"), v);
        }
        phase
    });
    let sent = tokio::time::timeout(t.request_timeout, tool.client.request(req)).await;
    if let (Some(trace), Some(phase)) = (ctx.trace.as_mut(), phase) {
        let mut attrs = vec![
            KeyValue::new("server.address", t.upstream.authority.to_string()),
            KeyValue::new("http.request.method", method.to_string()),
        ];
        if let Ok(Ok(r)) = &sent {
            attrs.push(KeyValue::new(
                "http.response.status_code",
                i64::from(r.status().as_u16()),
            ));
        }
        let failed = !matches!(&sent, Ok(Ok(r)) if !r.status().is_server_error());
        trace.end_phase(phase, attrs, failed);
    }
    let resp = match sent {
        Err(_) => {
            return Err(Error::new(
                ErrorKind::UpstreamTimeout,
                format!("tool {:?} did not answer in time", &*t.name),
            ))
        }
        Ok(Err(e)) => return Err(upstream_error(&t.name, e)),
        Ok(Ok(resp)) => resp,
    };
    let (mut parts, body) = resp.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    let body = body.map_err(|e| -> BoxError { Box::new(e) }).boxed();
    Ok(Response::from_parts(parts, body))
}

fn upstream_error(tool: &str, e: hyper_util::client::legacy::Error) -> Error {
    use std::error::Error as _;
    // The body limit tripping mid-stream surfaces here as the request body's error.
    let mut src: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = src {
        if s.is::<super::body::BodyTooLarge>() {
            return Error::new(
                ErrorKind::BodyTooLarge,
                "the request body is larger than this tool's limit",
            );
        }
        src = s.source();
    }
    let detail = format!("{e:?}");
    Error::new(
        ErrorKind::UpstreamUnavailable,
        format!("tool {tool:?} could not be reached"),
    )
    .with_detail(detail)
}

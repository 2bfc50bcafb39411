//! **forward**: send the request to the tool over a pooled connection and stream the
//! response back.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and the headers it names,
//! `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`) are
//! removed both ways; the agent's are removed by inject, before keygate's credential is
//! set, so a `Connection` naming that header cannot remove it. Forwarding headers the agent sent are dropped, not trusted, and
//! keygate sets its own `Forwarded` and `X-Forwarded-*`. Upstream failures become
//! `upstream_unavailable` (502) or `upstream_timeout` (504).

use crate::conn::ConnInfo;
use crate::error::{BoxError, Error, ErrorKind, ProxyBody};
use crate::http_client::remove_hop_by_hop;
use crate::telemetry::spans::RequestTrace;
use crate::tools::ToolRuntime;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use opentelemetry::KeyValue;

const AGENT_FORWARDING: [HeaderName; 5] = [
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-real-ip"),
];

/// The request line and the peer a request is forwarded with.
pub struct Outbound<'a> {
    /// The path on the tool's upstream (its base path included).
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The host the agent addressed (`Host`, or HTTP/2's `:authority`).
    pub original_host: Option<HeaderValue>,
    pub conn: &'a ConnInfo,
    pub request_id: &'a str,
}

/// Sends the request to the tool; the response body streams back as it arrives.
pub async fn forward(
    tool: &ToolRuntime,
    mut req: Request<ProxyBody>,
    out: Outbound<'_>,
    trace: Option<&mut RequestTrace>,
) -> Result<Response<ProxyBody>, Error> {
    let t = &tool.tool;
    let original_host = out.original_host;
    let mut pq = String::with_capacity(out.path.len() + 1 + out.query.map_or(0, str::len));
    pq.push_str(out.path);
    if let Some(q) = out.query {
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
    let proto = if out.conn.tls { "https" } else { "http" };
    if let Some(v) = &out.conn.forwarded_for {
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
            HeaderValue::from_str(&format!("{};host=\"{h}\"", out.conn.forwarded))
        }
        _ => HeaderValue::from_str(&out.conn.forwarded),
    };
    if let Some(h) = original_host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), h);
    }
    if let Ok(v) = forwarded {
        headers.insert(header::FORWARDED, v);
    }
    if let Ok(v) = HeaderValue::from_str(out.request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), v);
    }

    // The upstream call is a client span, and the tool's parent: keygate sends its own
    // traceparent (the agent's, when spans are not exported, passes through unchanged).
    let method = req.method().clone();
    let phase = trace.as_ref().map(|trace| {
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
    if let (Some(trace), Some(phase)) = (trace, phase) {
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

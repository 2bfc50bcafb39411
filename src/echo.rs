//! `keygate echo`: a small upstream that answers every request with what it received
//! (method, path, query, headers, body, and a sequence number as `id`) as JSON, and `GET /events?n=N` with N
//! server-sent events a fifth of a second apart. Point a tool at it to see exactly what
//! keygate forwards: the agent's credentials gone, keygate's credential in their place.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::time::Duration;

type EchoBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Serves until the process is stopped.
pub async fn run(listen: &str) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    eprintln!(
        "keygate echo: listening on http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => continue,
        };
        tokio::spawn(async move {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service_fn(echo))
                .await;
        });
    }
}

async fn echo(req: Request<Incoming>) -> Result<Response<EchoBody>, Infallible> {
    if req.uri().path() == "/events" {
        let n: u32 = req
            .uri()
            .query()
            .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "n"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(5)
            .min(100);
        let stream = futures_util::stream::unfold(0u32, move |i| async move {
            if i >= n {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let event = format!("id: {i}\ndata: {{\"n\":{i}}}\n\n");
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from(event))), i + 1))
        });
        let mut resp = Response::new(StreamBody::new(stream).boxed());
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        return Ok(resp);
    }
    let (parts, body) = req.into_parts();
    let body = http_body_util::Limited::new(body, 64 * 1024)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
            )
        })
        .collect();
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let doc = serde_json::json!({
        // Like the object ids APIs return for what they create.
        "id": SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut resp = Response::new(
        Full::new(Bytes::from(
            serde_json::to_vec_pretty(&doc).unwrap_or_default(),
        ))
        .boxed(),
    );
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

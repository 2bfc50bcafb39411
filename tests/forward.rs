//! Forwarding: streaming both ways, upstream failures, HTTP/2, hop-by-hop and forwarding
//! headers, path routing, body and audit byte counts, graceful shutdown.

// Tests may unwrap (the crate denies unwrap_used/expect_used).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const SECRET_NAME: &str = "FWD_SECRET";
const SECRET: &str = "fwd-tool-secret-7f3a";
const WAIT: Duration = Duration::from_secs(5);

/// A `[[tools]]` block with `extra` keys, credential read from `secrets/FWD_SECRET`.
fn tool(name: &str, upstream: &str, extra: &str) -> String {
    format!(
        "[[tools]]\nname = {name:?}\nupstream = {upstream:?}\n{extra}\n[tools.credential]\nprovider = \"static\"\nfrom_file = \"secrets/{SECRET_NAME}\"\n"
    )
}

struct Env {
    gw: TestGateway,
    token: String,
    _iss: TestIssuer,
}

impl Env {
    fn auth(&self) -> String {
        bearer(&self.token)
    }
}

/// Starts keygate with agent `a1`, the given tools, and `server` keys under `[server]`.
async fn start(server: &str, tools: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "fwd-iss", "keygate");
    secret_file(dir.path(), SECRET_NAME, SECRET);
    let server = if server.is_empty() {
        String::new()
    } else {
        format!("[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n{server}\n")
    };
    let cfg = format!("{server}{}{}{tools}", iss.toml(), agent("a1", "o@x"));
    let gw = TestGateway::start_in(dir, &cfg).await;
    let token = iss.token("a1");
    Env {
        gw,
        token,
        _iss: iss,
    }
}

/// Reads a request head (up to the blank line) from a raw connection.
async fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut b = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut b).await.unwrap();
        assert!(n > 0, "connection closed before the request head ended");
        buf.extend_from_slice(&b[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// Asserts a keygate JSON error.
fn assert_error(r: &Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(
        r.headers.get("content-type").map(|v| v.to_str().unwrap()),
        Some("application/json")
    );
    let j = r.json();
    assert_eq!(j["error"], code, "{}", r.text());
    assert!(j["message"].is_string(), "{}", r.text());
    assert!(j["request_id"].is_string(), "{}", r.text());
}

/// The audit record for `path`, waiting briefly for it to be written.
async fn audit_for(gw: &TestGateway, path: &str) -> serde_json::Value {
    for _ in 0..500 {
        if let Some(r) = gw.audit().await.into_iter().find(|r| r["path"] == path) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no audit record for {path}: {:?}", gw.audit().await);
}

// ------------------------------------------------------------------ 1. SSE

/// The upstream sends one event and then waits until the test has received it through
/// keygate before sending the second: if keygate buffered the response (head or body),
/// the first event would never arrive and the timeouts below fail the test.
#[tokio::test]
async fn sse_events_stream_through_one_at_a_time() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = listener.local_addr().unwrap();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let upstream = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let head = read_head(&mut s).await;
        s.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
        s.write_all(&chunk(b"data: one\n\n")).await.unwrap();
        s.flush().await.unwrap();
        // Hold the second event back until the test saw the first.
        let released = go_rx.await.is_ok();
        if released {
            s.write_all(&chunk(b"data: two\n\n")).await.unwrap();
            s.write_all(b"0\r\n\r\n").await.unwrap();
            s.flush().await.unwrap();
        }
        (head, released)
    });

    let env = start("", &tool("sse", &format!("http://{up_addr}"), "")).await;
    let auth = env.auth();
    let resp = timeout(
        WAIT,
        Client::http1().stream(
            &env.gw.url("/tools/sse/events"),
            &[("authorization", &auth), ("accept", "text/event-stream")],
        ),
    )
    .await
    .expect("no response head while the upstream holds its stream open");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();

    let mut got = Vec::new();
    while !got.ends_with(b"data: one\n\n") {
        let frame = timeout(WAIT, body.frame())
            .await
            .expect("the first event did not arrive while the upstream kept the stream open: keygate buffers the response")
            .expect("the body ended before the first event")
            .unwrap();
        if let Ok(d) = frame.into_data() {
            got.extend_from_slice(&d);
        }
    }
    assert_eq!(got, b"data: one\n\n", "more than the first event arrived");

    go_tx.send(()).unwrap();
    loop {
        match timeout(WAIT, body.frame())
            .await
            .expect("the rest of the stream did not arrive")
        {
            None => break,
            Some(f) => {
                if let Ok(d) = f.unwrap().into_data() {
                    got.extend_from_slice(&d);
                }
            }
        }
    }
    assert_eq!(
        String::from_utf8(got).unwrap(),
        "data: one\n\ndata: two\n\n"
    );
    let (head, released) = upstream.await.unwrap();
    assert!(released);
    assert!(head.starts_with("GET /events HTTP/1.1\r\n"), "{head}");

    let rec = audit_for(&env.gw, "/tools/sse/events").await;
    assert_eq!(rec["status"], 200);
    assert_eq!(rec["completed"], true);
    assert_eq!(rec["bytes_out"], 22);
}

// ------------------------------------------------------------------ 2. dead upstream

#[tokio::test]
async fn dead_upstream_is_502_and_the_gateway_keeps_serving() {
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let live = RawUpstream::start().await;
    let tools = format!(
        "{}{}",
        tool(
            "dead",
            &format!("http://127.0.0.1:{dead_port}"),
            "connect_timeout = \"2s\""
        ),
        tool("live", &live.url(), "")
    );
    let env = start("", &tools).await;
    let auth = env.auth();
    let c = Client::http1();

    let r = c
        .get(&env.gw.url("/tools/dead/x"), &[("authorization", &auth)])
        .await;
    assert_error(&r, 502, "upstream_unavailable");

    let r = c
        .get(&env.gw.url("/tools/live/x"), &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "ok");
    assert_eq!(live.count(), 1);

    let rec = audit_for(&env.gw, "/tools/dead/x").await;
    assert_eq!(rec["status"], 502);
    assert_eq!(rec["error"], "upstream_unavailable");
    assert_eq!(rec["decision"], "error");
}

// ------------------------------------------------------------------ 3. silent upstream

#[tokio::test]
async fn upstream_that_never_answers_is_504_after_request_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = listener.local_addr().unwrap();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        // Accept, read the request, never answer; keep the connections open.
        let mut held = Vec::new();
        while let Ok((mut s, _)) = listener.accept().await {
            let head = read_head(&mut s).await;
            let _ = seen_tx.send(head);
            held.push(s);
        }
    });
    let live = RawUpstream::start().await;
    let tools = format!(
        "{}{}",
        tool(
            "mute",
            &format!("http://{up_addr}"),
            "request_timeout = \"300ms\""
        ),
        tool("live", &live.url(), "")
    );
    let env = start("", &tools).await;
    let auth = env.auth();
    let c = Client::http1();

    let t = Instant::now();
    let r = c
        .get(&env.gw.url("/tools/mute/wait"), &[("authorization", &auth)])
        .await;
    let took = t.elapsed();
    assert_error(&r, 504, "upstream_timeout");
    assert!(
        took >= Duration::from_millis(290),
        "answered after {took:?}"
    );
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    // It was the answer that timed out: the upstream did get the request.
    let head = seen_rx
        .try_recv()
        .expect("the upstream never got the request");
    assert!(head.starts_with("GET /wait HTTP/1.1\r\n"), "{head}");

    let r = c
        .get(&env.gw.url("/tools/live/x"), &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 200);
}

// ------------------------------------------------------------------ 4. HTTP/2

#[tokio::test]
async fn http2_prior_knowledge_end_to_end() {
    let up = RawUpstream::start().await;
    let env = start("", &tool("t", &up.url(), "")).await;
    let auth = env.auth();
    let c = Client::http2();

    let r = c
        .get(
            &env.gw.url("/tools/t/h2/path?a=1"),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.text(), "ok");

    let r = c
        .send(
            "POST",
            &env.gw.url("/tools/t/h2/post"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            r#"{"over":"h2"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.version, http::Version::HTTP_2);

    let reqs = up.requests();
    assert_eq!(reqs.len(), 2);
    assert!(
        reqs[0].head.starts_with("GET /h2/path?a=1 HTTP/1.1\r\n"),
        "{}",
        reqs[0].head
    );
    assert_eq!(
        reqs[0].header("authorization").as_deref(),
        Some(format!("Bearer {SECRET}").as_str())
    );
    assert_eq!(reqs[0].header("host"), Some(up.addr.to_string()));
    // The host the agent addressed, as for HTTP/1.1 (from `:authority`).
    assert_eq!(
        reqs[0].header("x-forwarded-host"),
        Some(env.gw.addr.to_string()),
        "{}",
        reqs[0].head
    );
    assert!(
        reqs[0]
            .header("forwarded")
            .is_some_and(|f| f.contains(&format!("host=\"{}\"", env.gw.addr))),
        "{}",
        reqs[0].head
    );
    assert!(
        reqs[1].head.starts_with("POST /h2/post HTTP/1.1\r\n"),
        "{}",
        reqs[1].head
    );
    assert_eq!(reqs[1].body, br#"{"over":"h2"}"#);
}

// ------------------------------------------------------------------ 5. hop-by-hop

#[tokio::test]
async fn hop_by_hop_headers_are_removed_and_forwarding_headers_replaced() {
    let up = RawUpstream::with_responder(Arc::new(|_r: &Received| {
        (
            200,
            vec![
                ("Connection".into(), "x-resp-hop".into()),
                ("X-Resp-Hop".into(), "1".into()),
                ("Keep-Alive".into(), "timeout=5".into()),
                ("X-Resp-Keep".into(), "yes".into()),
            ],
            b"hop".to_vec(),
        )
    }))
    .await;
    let env = start("", &tool("t", &up.url(), "")).await;

    // Handwritten, so the client library does not manage Connection for us.
    let req = format!(
        "GET /tools/t/hop HTTP/1.1\r\n\
         Host: {}\r\n\
         Authorization: Bearer {}\r\n\
         Connection: close, X-Hop\r\n\
         X-Hop: 1\r\n\
         Keep-Alive: timeout=5\r\n\
         TE: trailers\r\n\
         Upgrade: foo\r\n\
         Proxy-Connection: x\r\n\
         X-Forwarded-For: 6.6.6.6\r\n\
         Forwarded: for=6.6.6.6\r\n\
         X-Forwarded-Proto: https\r\n\
         X-Real-IP: 6.6.6.6\r\n\
         X-End-To-End: kept\r\n\
         \r\n",
        env.gw.addr, env.token
    );
    let resp = raw_exchange(env.gw.addr, req.as_bytes(), WAIT).await;
    assert!(resp.starts_with("HTTP/1.1 200 "), "{resp}");
    let lower = resp.to_ascii_lowercase();
    assert!(!lower.contains("x-resp-hop"), "{resp}");
    assert!(!lower.contains("keep-alive"), "{resp}");
    assert!(lower.contains("x-resp-keep: yes"), "{resp}");
    assert!(resp.ends_with("hop"), "{resp}");

    let reqs = up.requests();
    assert_eq!(reqs.len(), 1);
    let got = &reqs[0];
    for h in [
        "connection",
        "x-hop",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-connection",
        "x-real-ip",
    ] {
        assert_eq!(
            got.header(h),
            None,
            "{h} reached the upstream:\n{}",
            got.head
        );
    }
    assert_eq!(got.header("x-end-to-end").as_deref(), Some("kept"));
    assert!(!got.head.contains("6.6.6.6"), "{}", got.head);
    let xff_lines = got
        .head
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("x-forwarded-for:"))
        .count();
    assert_eq!(xff_lines, 1, "{}", got.head);
    assert_eq!(got.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(got.header("x-forwarded-proto").as_deref(), Some("http"));
    let fwd = got.header("forwarded").expect("no Forwarded header");
    assert!(fwd.contains("for=127.0.0.1"), "{fwd}");
    assert!(fwd.contains("proto=http"), "{fwd}");
    let rid = got.header("x-request-id").expect("no x-request-id");
    assert!(!rid.is_empty());
    assert_eq!(
        got.header("authorization").as_deref(),
        Some(format!("Bearer {SECRET}").as_str())
    );
    let rec = audit_for(&env.gw, "/tools/t/hop").await;
    assert_eq!(rec["request_id"], rid.as_str());

    // Response side, over a keep-alive client: no Connection header at all reaches it.
    let auth = env.auth();
    let r = Client::http1()
        .get(&env.gw.url("/tools/t/hop2"), &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 200);
    assert!(r.headers.get("connection").is_none(), "{:?}", r.headers);
    assert!(r.headers.get("x-resp-hop").is_none(), "{:?}", r.headers);
    assert!(r.headers.get("keep-alive").is_none(), "{:?}", r.headers);
    assert_eq!(r.headers["x-resp-keep"], "yes");
}

// ------------------------------------------------------------------ 6. routing

#[tokio::test]
async fn paths_route_by_prefix_base_path_and_host() {
    let up_a = RawUpstream::start().await;
    let up_b = RawUpstream::start().await;
    let up_h = RawUpstream::start().await;
    let tools = format!(
        "{}{}{}",
        tool("a", &up_a.url(), ""),
        tool("b", &format!("{}/base", up_b.url()), ""),
        tool("h", &up_h.url(), "hosts = [\"api.test\"]"),
    );
    let env = start("", &tools).await;
    let auth = env.auth();
    let c = Client::http1();

    let r = c
        .get(&env.gw.url("/tools/a/a/b?x=1"), &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c
        .get(&env.gw.url("/tools/a"), &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let targets: Vec<String> = up_a.requests().iter().map(|r| r.target()).collect();
    assert_eq!(targets, ["/a/b?x=1", "/"]);

    let r = c
        .get(&env.gw.url("/tools/b/a/b?x=1"), &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let targets: Vec<String> = up_b.requests().iter().map(|r| r.target()).collect();
    assert_eq!(targets, ["/base/a/b?x=1"]);

    // Host selects the tool and the whole path goes through, even one that looks like
    // another tool's prefix.
    for path in ["/a/b?x=1", "/tools/a/c"] {
        let r = c
            .get(
                &env.gw.url(path),
                &[("authorization", &auth), ("host", "api.test")],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let targets: Vec<String> = up_h.requests().iter().map(|r| r.target()).collect();
    assert_eq!(targets, ["/a/b?x=1", "/tools/a/c"]);
    assert_eq!(up_a.count(), 2, "the host-selected request went to tool a");

    let r = c
        .get(&env.gw.url("/tools/unknown/x"), &[("authorization", &auth)])
        .await;
    assert_error(&r, 404, "unknown_tool");
    let r = c.get(&env.gw.url("/tools/unknown/x"), &[]).await;
    assert_error(&r, 401, "unauthenticated");
    assert!(r.headers.contains_key("www-authenticate"));
}

// ------------------------------------------------------------------ 7. request body streaming

#[tokio::test]
async fn large_binary_body_arrives_intact_and_is_counted() {
    let up = RawUpstream::with_responder(Arc::new(|r: &Received| {
        (
            200,
            vec![],
            format!("got {} bytes", r.body.len()).into_bytes(),
        )
    }))
    .await;
    let env = start("", &tool("big", &up.url(), "max_body_bytes = 4194304")).await;
    let auth = env.auth();
    let data: Vec<u8> = (0..2u32 * 1024 * 1024)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();

    let r = Client::http1()
        .send(
            "POST",
            &env.gw.url("/tools/big/upload"),
            &[
                ("authorization", &auth),
                ("content-type", "application/octet-stream"),
            ],
            data.clone(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "got 2097152 bytes");

    let reqs = up.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].body.len(), data.len());
    assert!(reqs[0].body == data, "the body changed on the way");

    let rec = audit_for(&env.gw, "/tools/big/upload").await;
    assert_eq!(rec["status"], 200);
    assert_eq!(rec["bytes_in"], 2 * 1024 * 1024);
    assert_eq!(rec["bytes_out"], r.body.len());
    assert_eq!(rec["completed"], true);
}

// ------------------------------------------------------------------ 8. graceful shutdown

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = listener.local_addr().unwrap();
    let (got_tx, got_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let _head = read_head(&mut s).await;
        let _ = got_tx.send(());
        // Long enough that stop() surely starts while the request is in flight.
        tokio::time::sleep(Duration::from_millis(2000)).await;
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow")
            .await
            .unwrap();
        let mut b = [0u8; 64];
        let _ = s.read(&mut b).await;
    });
    let mut env = start(
        "shutdown_grace = \"10s\"",
        &tool("slow", &format!("http://{up_addr}"), ""),
    )
    .await;
    let addr = env.gw.addr;

    let client = Client::http1();
    let url = env.gw.url("/tools/slow/work");
    let auth = env.auth();
    let inflight = tokio::spawn(async move { client.get(&url, &[("authorization", &auth)]).await });
    timeout(WAIT, got_rx)
        .await
        .expect("the upstream never got the request")
        .unwrap();

    let t = Instant::now();
    timeout(Duration::from_secs(10), env.gw.stop())
        .await
        .expect("stop did not return");
    let stop_took = t.elapsed();

    let r = timeout(WAIT, inflight)
        .await
        .expect("the in-flight request did not finish")
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "slow");
    // stop() waited for the response rather than cutting it off.
    assert!(
        stop_took >= Duration::from_millis(300),
        "stop returned after {stop_took:?}"
    );

    let e = TcpStream::connect(addr)
        .await
        .expect_err("the listener still accepts after stop");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");

    let rec = audit_for(&env.gw, "/tools/slow/work").await;
    assert_eq!(rec["status"], 200);
    assert_eq!(rec["completed"], true);
    assert_eq!(rec["bytes_out"], 4);
}

//! Bad input from agents: ambiguous framing, oversized or too many headers, slow clients,
//! malformed requests, oversized bodies, unknown tools. Every refusal is asserted exactly
//! as it happens (keygate's JSON error where keygate answers, hyper's bare status where
//! hyper answers before keygate sees the request), and after every case the gateway still
//! serves a normal request.

// Tests may unwrap (the crate denies unwrap_used/expect_used).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET_NAME: &str = "BAD_SECRET";
const SECRET: &str = "bad-tool-secret-91c2";
const WAIT: Duration = Duration::from_secs(5);

fn tool(name: &str, upstream: &str, extra: &str) -> String {
    format!(
        "[[tools]]\nname = {name:?}\nupstream = {upstream:?}\n{extra}\n[tools.credential]\nprovider = \"static\"\nfrom_file = \"secrets/{SECRET_NAME}\"\n"
    )
}

struct Env {
    gw: TestGateway,
    up: RawUpstream,
    token: String,
    _iss: TestIssuer,
}

impl Env {
    fn auth(&self) -> String {
        bearer(&self.token)
    }

    /// Proves the gateway still serves: a normal authenticated request gets 200.
    async fn assert_serving(&self) {
        let before = self.up.count();
        let auth = self.auth();
        let r = Client::http1()
            .get(
                &self.gw.url("/tools/t/still-ok"),
                &[("authorization", &auth)],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "ok");
        assert_eq!(self.up.count(), before + 1);
    }
}

/// keygate with agent `a1`, tool `t` (a recording upstream) with `tool_extra` keys, and
/// `server` keys under `[server]`.
async fn start(server: &str, tool_extra: &str) -> Env {
    let up = RawUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "bad-iss", "keygate");
    secret_file(dir.path(), SECRET_NAME, SECRET);
    let server = if server.is_empty() {
        String::new()
    } else {
        format!("[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n{server}\n")
    };
    let cfg = format!(
        "{server}{}{}{}",
        iss.toml(),
        agent("a1", "o@x"),
        tool("t", &up.url(), tool_extra)
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    let token = iss.token("a1");
    Env {
        gw,
        up,
        token,
        _iss: iss,
    }
}

/// What came back on a raw connection.
struct Raw {
    text: String,
    /// The server closed (or reset) the connection within the wait.
    closed: bool,
    elapsed: Duration,
}

impl Raw {
    fn status(&self) -> u16 {
        self.text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP/1.1 response: {:?}", self.text))
    }

    fn head(&self) -> &str {
        self.text.split("\r\n\r\n").next().unwrap_or("")
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head().lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }

    /// A keygate JSON error: status, content type, and exactly the three keys.
    fn assert_keygate_error(&self, status: u16, code: &str) {
        assert_eq!(self.status(), status, "{}", self.text);
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/json"),
            "{}",
            self.text
        );
        let j: serde_json::Value = serde_json::from_str(self.body())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text));
        assert_error_shape(&j, code);
    }
}

/// Whether `buf` holds one whole response framed by Content-Length.
fn complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    len.is_some_and(|n| buf.len() >= end + 4 + n)
}

/// Sends `bytes` on a new connection (write errors are ignored: the server may close
/// first) and reads until the server closes, `wait` passes, or, unless `until_close`,
/// one whole response has arrived.
async fn raw(addr: std::net::SocketAddr, bytes: &[u8], wait: Duration, until_close: bool) -> Raw {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    read_reply(&mut s, t, wait, until_close).await
}

async fn read_reply(s: &mut TcpStream, t: Instant, wait: Duration, until_close: bool) -> Raw {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut closed = false;
    loop {
        let left = wait.saturating_sub(t.elapsed());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                if !until_close && complete(&buf) {
                    break;
                }
            }
        }
    }
    Raw {
        text: String::from_utf8_lossy(&buf).into_owned(),
        closed,
        elapsed: t.elapsed(),
    }
}

/// Exactly the keys error, message and request_id, with the expected code.
fn assert_error_shape(j: &serde_json::Value, code: &str) {
    let obj = j
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {j}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["error", "message", "request_id"], "{j}");
    assert_eq!(j["error"], code, "{j}");
    assert!(j["message"].as_str().is_some_and(|m| !m.is_empty()), "{j}");
    assert!(
        j["request_id"].as_str().is_some_and(|m| !m.is_empty()),
        "{j}"
    );
}

fn assert_client_error(r: &Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(
        r.headers
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("")),
        Some("application/json"),
        "{:?}",
        r.headers
    );
    assert_error_shape(&r.json(), code);
}

// ------------------------------------------------------------------ 1. framing

/// Content-Length together with `Transfer-Encoding: chunked`.
///
/// What happens (hyper 1.12's HTTP/1 parser, before keygate sees the request): hyper
/// applies RFC 9112 §6.3 itself: Transfer-Encoding wins, the Content-Length header is
/// removed from the request, and keep-alive is switched off so the connection closes
/// after the response. keygate's `check_framing` therefore never sees both headers, and
/// the request is served (200) with the chunked body. That is safe against smuggling:
/// the bytes after the chunked body (a pipelined "smuggled" request) are never read as a
/// request, and the tool gets a freshly framed body. Both header orders are checked.
#[tokio::test]
async fn content_length_with_chunked_is_read_as_chunked_and_the_connection_closes() {
    let env = start("", "").await;
    for (i, (first, second)) in [
        ("Content-Length: 5", "Transfer-Encoding: chunked"),
        ("Transfer-Encoding: chunked", "Content-Length: 5"),
    ]
    .into_iter()
    .enumerate()
    {
        let req = format!(
            "POST /tools/t/clte{i} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\
             Content-Type: application/json\r\n{first}\r\n{second}\r\n\r\n\
             5\r\nhello\r\n0\r\n\r\n\
             GET /tools/t/smuggled HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\r\n",
            tok = env.token
        );
        let r = raw(env.gw.addr, req.as_bytes(), WAIT, true).await;
        assert_eq!(r.status(), 200, "{}", r.text);
        assert_eq!(
            r.header("connection").as_deref(),
            Some("close"),
            "{}",
            r.text
        );
        assert!(r.closed, "the connection stayed open: {}", r.text);
        // Exactly one response: the trailing request was not served.
        assert_eq!(r.text.matches("HTTP/1.1 ").count(), 1, "{}", r.text);
    }
    let reqs = env.up.requests();
    assert_eq!(reqs.len(), 2);
    for got in &reqs {
        assert!(got.head.starts_with("POST /clte"), "{}", got.head);
        assert_eq!(got.body, b"hello");
        assert_eq!(got.header("content-length").as_deref(), Some("5"));
        assert_eq!(got.header("transfer-encoding"), None, "{}", got.head);
    }
    assert!(
        !reqs.iter().any(|r| r.head.contains("smuggled")),
        "the smuggled request reached the tool"
    );
    env.assert_serving().await;
}

/// Two identical Content-Length headers.
///
/// What happens: hyper accepts identical duplicates and keeps only the first (RFC 9112
/// §6.3 allows treating them as one), so keygate's `check_framing` sees a single
/// Content-Length and the request is served (200). The tool gets one Content-Length.
#[tokio::test]
async fn identical_duplicate_content_lengths_are_folded_into_one() {
    let env = start("", "").await;
    let req = format!(
        "POST /tools/t/dup HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n{{\"a\":1}}",
        env.token
    );
    let r = raw(env.gw.addr, req.as_bytes(), WAIT, false).await;
    assert_eq!(r.status(), 200, "{}", r.text);
    assert_eq!(r.body(), "ok");
    let reqs = env.up.requests();
    assert_eq!(reqs.len(), 1);
    let cl_lines = reqs[0]
        .head
        .to_ascii_lowercase()
        .matches("content-length:")
        .count();
    assert_eq!(cl_lines, 1, "{}", reqs[0].head);
    assert_eq!(reqs[0].body, br#"{"a":1}"#);
    env.assert_serving().await;
}

/// Two different Content-Length headers: hyper refuses the request itself with a bare
/// 400 (no body, no JSON: keygate never sees it) and closes the connection.
#[tokio::test]
async fn differing_content_lengths_are_refused_by_hyper() {
    let env = start("", "").await;
    let req = format!(
        "POST /tools/t/diff HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n{{\"a\":1}}",
        env.token
    );
    let r = raw(env.gw.addr, req.as_bytes(), WAIT, true).await;
    assert_eq!(r.status(), 400, "{}", r.text);
    assert_eq!(
        r.header("content-length").as_deref(),
        Some("0"),
        "{}",
        r.text
    );
    assert_eq!(r.body(), "");
    assert!(r.closed);
    assert_eq!(env.up.count(), 0);
    env.assert_serving().await;
}

#[tokio::test]
async fn two_content_types_are_refused() {
    let env = start("", "").await;
    let req = format!(
        "POST /tools/t/ct HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Type: application/json\r\n\
         Content-Length: 7\r\n\r\n{{\"a\":1}}",
        env.token
    );
    let r = raw(env.gw.addr, req.as_bytes(), WAIT, false).await;
    assert_eq!(r.status(), 400, "{}", r.text);
    assert!(r.body().contains("\"ambiguous_framing\""), "{}", r.text);
    assert_eq!(env.up.count(), 0);
    env.assert_serving().await;
}

#[tokio::test]
async fn an_http11_request_without_host_is_400() {
    let env = start("", "").await;
    let req = format!(
        "GET /tools/t/nohost HTTP/1.1\r\nAuthorization: Bearer {}\r\n\r\n",
        env.token
    );
    let r = raw(env.gw.addr, req.as_bytes(), WAIT, false).await;
    assert_eq!(r.status(), 400, "{}", r.text);
    assert!(r.body().contains("\"bad_request\""), "{}", r.text);
    assert!(r.body().contains("Host header"), "{}", r.text);
    // HTTP/1.0 has no Host requirement.
    let req = format!(
        "GET /tools/t/old HTTP/1.0\r\nAuthorization: Bearer {}\r\n\r\n",
        env.token
    );
    let r = raw(env.gw.addr, req.as_bytes(), WAIT, true).await;
    assert!(r.text.starts_with("HTTP/1.0 200 "), "{}", r.text);
    assert_eq!(env.up.count(), 1);
    env.assert_serving().await;
}

// ------------------------------------------------------------------ 2. header limits

/// A 100 KiB header with the default max_header_bytes (65536): hyper answers a bare 431
/// and closes the connection.
#[tokio::test]
async fn oversized_header_is_431_and_the_connection_closes() {
    let env = start("", "").await;
    let big = "a".repeat(100 * 1024);
    let req = format!(
        "GET /tools/t/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nX-Big: {big}\r\n\r\n",
        env.token
    );
    let r = raw(env.gw.addr, req.as_bytes(), WAIT, true).await;
    assert_eq!(r.status(), 431, "{}", r.text);
    assert_eq!(r.body(), "");
    assert!(r.closed, "the connection stayed open");
    assert_eq!(env.up.count(), 0);
    env.assert_serving().await;
}

/// max_headers = 20 and a request with 50: hyper answers a bare 431 and closes.
#[tokio::test]
async fn too_many_headers_is_431() {
    let env = start("max_headers = 20", "").await;
    let mut req = format!(
        "GET /tools/t/many HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n",
        env.token
    );
    for i in 0..50 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let r = raw(env.gw.addr, req.as_bytes(), WAIT, true).await;
    assert_eq!(r.status(), 431, "{}", r.text);
    assert_eq!(r.body(), "");
    assert!(r.closed, "the connection stayed open");
    assert_eq!(env.up.count(), 0);
    env.assert_serving().await;
}

// ------------------------------------------------------------------ 3. slow client

/// header_read_timeout = 300ms and a request line that never ends: hyper closes the
/// connection once the timeout passes, without a response (hyper 1.12 sends no 408).
#[tokio::test]
async fn slow_request_head_is_cut_off() {
    let env = start("header_read_timeout = \"300ms\"", "").await;
    let r = raw(env.gw.addr, b"GET /tools/t/slow HTT", WAIT, true).await;
    assert!(r.closed, "still open after {:?}", r.elapsed);
    assert!(r.elapsed >= Duration::from_millis(250), "{:?}", r.elapsed);
    assert!(r.elapsed < Duration::from_secs(2), "{:?}", r.elapsed);
    assert_eq!(r.text, "", "unexpected response");
    env.assert_serving().await;
}

// ------------------------------------------------------------------ 4. slow body

/// body_read_timeout = 300ms; a JSON POST declaring 100 bytes sends 10: keygate answers
/// 408 body_timeout (JSON) and the tool gets nothing.
#[tokio::test]
async fn slow_body_is_408_body_timeout() {
    let env = start("body_read_timeout = \"300ms\"", "").await;
    let req = format!(
        "POST /tools/t/slowbody HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"a\":\"bcd\"",
        env.token
    );
    assert_eq!(req.split("\r\n\r\n").nth(1).unwrap().len(), 10);
    let r = raw(env.gw.addr, req.as_bytes(), WAIT, false).await;
    r.assert_keygate_error(408, "body_timeout");
    assert!(r.elapsed >= Duration::from_millis(250), "{:?}", r.elapsed);
    assert!(r.elapsed < Duration::from_secs(3), "{:?}", r.elapsed);
    assert_eq!(env.up.count(), 0);
    let rec = env
        .gw
        .audit()
        .await
        .into_iter()
        .find(|r| r["path"] == "/tools/t/slowbody")
        .expect("no audit record");
    assert_eq!(rec["status"], 408);
    assert_eq!(rec["error"], "body_timeout");
    env.assert_serving().await;
}

// ------------------------------------------------------------------ 5. malformed

/// A request line that is not HTTP: hyper answers a bare 400 and closes.
#[tokio::test]
async fn malformed_request_line_is_400() {
    let env = start("", "").await;
    let r = raw(env.gw.addr, b"GARBAGE\r\n\r\n", WAIT, true).await;
    assert_eq!(r.status(), 400, "{}", r.text);
    assert_eq!(r.body(), "");
    assert!(r.closed);
    env.assert_serving().await;
}

/// A header name with bytes a token cannot hold: hyper answers a bare 400 and closes.
#[tokio::test]
async fn invalid_header_name_is_400() {
    let env = start("", "").await;
    for bad in ["Bad Name: v", "Bad\u{1}Name: v", "Bad(Name): v"] {
        let req = format!(
            "GET /tools/t/badname HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n{bad}\r\n\r\n",
            env.token
        );
        let r = raw(env.gw.addr, req.as_bytes(), WAIT, true).await;
        assert_eq!(r.status(), 400, "{bad:?}: {}", r.text);
        assert_eq!(r.body(), "", "{bad:?}");
        assert!(r.closed, "{bad:?}");
    }
    assert_eq!(env.up.count(), 0);
    env.assert_serving().await;
}

// ------------------------------------------------------------------ 6. body limits

/// A declared Content-Length over the tool's max_body_bytes: keygate answers 413
/// body_too_large before reading the body.
#[tokio::test]
async fn declared_body_over_limit_is_413() {
    let env = start("", "max_body_bytes = 1024").await;
    // Headers only: keygate must answer from the declared length alone.
    let req = format!(
        "POST /tools/t/toolarge HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n",
        env.token
    );
    let r = raw(env.gw.addr, req.as_bytes(), WAIT, false).await;
    r.assert_keygate_error(413, "body_too_large");
    assert!(r.elapsed < Duration::from_secs(2), "{:?}", r.elapsed);
    // Binary bodies are checked the same way.
    let req = req.replace("application/json", "application/octet-stream");
    let r = raw(env.gw.addr, req.as_bytes(), WAIT, false).await;
    r.assert_keygate_error(413, "body_too_large");
    assert_eq!(env.up.count(), 0);
    env.assert_serving().await;
}

/// A chunked application/octet-stream body (streamed, not read first) that grows past
/// max_body_bytes mid-stream.
///
/// What happens: the tool's response is not committed (the recording upstream answers
/// only after a whole body), so the body limit tripping while keygate streams the body
/// fails the upstream exchange and keygate answers 413 body_too_large (JSON). The tool
/// never gets the whole body: it records no complete request.
#[tokio::test]
async fn streamed_body_over_limit_is_413_and_never_reaches_the_tool_whole() {
    let env = start("", "max_body_bytes = 1024").await;
    let mut req = format!(
        "POST /tools/t/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
        env.token
    )
    .into_bytes();
    for _ in 0..4 {
        req.extend_from_slice(format!("{:x}\r\n", 1000).as_bytes());
        req.extend_from_slice(&[b'z'; 1000]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = raw(env.gw.addr, &req, WAIT, false).await;
    r.assert_keygate_error(413, "body_too_large");
    // Give the tool a moment: it must still have no complete request.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(env.up.count(), 0, "the tool got the whole body");
    let rec = env
        .gw
        .audit()
        .await
        .into_iter()
        .find(|r| r["path"] == "/tools/t/stream")
        .expect("no audit record");
    assert_eq!(rec["status"], 413);
    assert_eq!(rec["error"], "body_too_large");
    env.assert_serving().await;
}

// ------------------------------------------------------------------ 7. unknown tool

#[tokio::test]
async fn unknown_tool_is_404_json() {
    let env = start("", "").await;
    let auth = env.auth();
    let r = Client::http1()
        .get(&env.gw.url("/tools/nope/x"), &[("authorization", &auth)])
        .await;
    assert_client_error(&r, 404, "unknown_tool");
    let j = r.json();
    assert!(j["message"].as_str().unwrap().contains("tool"), "{j}");
    // Neither a path outside /tools/.
    let r = Client::http1()
        .get(&env.gw.url("/elsewhere"), &[("authorization", &auth)])
        .await;
    assert_client_error(&r, 404, "unknown_tool");
    assert_eq!(env.up.count(), 0);
    env.assert_serving().await;
}

// ------------------------------------------------------------------ 8. error shape

/// Every error keygate itself answers has content-type application/json and a body with
/// exactly the keys error, message and request_id; request ids differ per request.
#[tokio::test]
async fn every_keygate_error_has_the_same_json_shape() {
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mute_addr = mute.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = mute.accept().await {
            held.push(s);
        }
    });
    let up = RawUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "bad-iss", "keygate");
    secret_file(dir.path(), SECRET_NAME, SECRET);
    let cfg = format!(
        "{}{}{}{}{}",
        iss.toml(),
        agent("a1", "o@x"),
        tool("t", &up.url(), "max_body_bytes = 1024"),
        tool(
            "dead",
            &format!("http://127.0.0.1:{dead_port}"),
            "connect_timeout = \"2s\""
        ),
        tool(
            "mute",
            &format!("http://{mute_addr}"),
            "request_timeout = \"300ms\""
        ),
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    let env = Env {
        gw,
        up,
        token: iss.token("a1"),
        _iss: iss,
    };
    let auth = env.auth();
    let stranger = TestIssuer::new(env.gw.dir.path(), "other-iss", "keygate").token("a1");
    let stranger = bearer(&stranger);
    let c = Client::http1();
    let url = |p: &str| env.gw.url(p);
    let a = ("authorization", auth.as_str());

    let mut ids = Vec::new();
    let mut check = |r: Response, status: u16, code: &str| {
        assert_client_error(&r, status, code);
        ids.push(r.json()["request_id"].as_str().unwrap().to_string());
    };
    check(c.get(&url("/tools/t/x"), &[]).await, 401, "unauthenticated");
    check(
        c.get(&url("/tools/t/x"), &[("authorization", "Bearer not.a.jwt")])
            .await,
        401,
        "unauthenticated",
    );
    check(
        c.get(&url("/tools/t/x"), &[("authorization", &stranger)])
            .await,
        401,
        "unauthenticated",
    );
    check(
        c.get(&url("/tools/nope/x"), &[a]).await,
        404,
        "unknown_tool",
    );
    check(
        c.send("POST", &url("/.well-known/jwks.json"), &[], "x")
            .await,
        405,
        "method_not_allowed",
    );
    check(
        c.get(&url("/tools/t/x?key=AKIAIOSFODNN7EXAMPLE"), &[a])
            .await,
        400,
        "secret_in_request",
    );
    check(
        c.send(
            "POST",
            &url("/tools/t/x"),
            &[a, ("content-type", "application/json")],
            vec![b'1'; 2000],
        )
        .await,
        413,
        "body_too_large",
    );
    check(
        c.send(
            "POST",
            &url("/tools/t/x"),
            &[
                a,
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            vec![0x1f, 0x8b, 0, 0],
        )
        .await,
        415,
        "unscannable_body",
    );
    check(
        c.get(&url("/tools/dead/x"), &[a]).await,
        502,
        "upstream_unavailable",
    );
    check(
        c.get(&url("/tools/mute/x"), &[a]).await,
        504,
        "upstream_timeout",
    );
    // Over HTTP/2 too.
    check(
        Client::http2().get(&url("/tools/nope/x"), &[a]).await,
        404,
        "unknown_tool",
    );
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "request ids repeat");
    assert_eq!(env.up.count(), 0);
    env.assert_serving().await;
}

/// A connection that sends nothing at all, or only the start of the HTTP/2 preface, is
/// closed once header_read_timeout passes, as one that sends part of a request line is.
///
/// This failed before the fix in src/server/mod.rs (`first_bytes_within`): hyper-util's
/// auto (HTTP/1 + HTTP/2) server reads the first bytes to pick the protocol with no time
/// limit, and hyper's header_read_timeout only starts after that, so such a connection
/// stayed open forever (a slowloris hole).
#[tokio::test]
async fn silent_connection_is_cut_off() {
    let env = start("header_read_timeout = \"300ms\"", "").await;
    for sent in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let r = raw(env.gw.addr, sent, WAIT, true).await;
        let what = String::from_utf8_lossy(sent);
        assert!(r.closed, "{what:?}: still open after {:?}", r.elapsed);
        assert!(
            r.elapsed >= Duration::from_millis(250),
            "{what:?}: {:?}",
            r.elapsed
        );
        assert!(
            r.elapsed < Duration::from_secs(2),
            "{what:?}: {:?}",
            r.elapsed
        );
        assert_eq!(r.text, "", "{what:?}");
    }
    env.assert_serving().await;
    // HTTP/2 with prior knowledge still works.
    let auth = env.auth();
    let r = Client::http2()
        .get(&env.gw.url("/tools/t/h2"), &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.version, http::Version::HTTP_2);
}

//! respond: keygate's injected credential never comes back to the agent. Upstreams that
//! echo their request (in the reason phrase, in headers, in `Location`, in `Set-Cookie`,
//! in a body sent in tiny chunks) hand the agent only a marker; `TRACE` is refused before
//! anything is forwarded; the agent's `Connection` header cannot remove keygate's
//! credential; a compressed answer is refused.

// Tests may unwrap (the crate denies unwrap_used/expect_used).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use bytes::Bytes;
use http_body_util::BodyExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(5);

/// A secret with characters JSON may escape (`/`) and URLs encode (`/`, `+`, `=`).
const SECRET: &str = "kg/resp+Secret=0123456789/abc";

/// The forms of `v` the agent must never see: as is, JSON-escaped with `\/`, form- and
/// percent-encoded.
fn forms(v: &str) -> Vec<String> {
    const STRICT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    vec![
        v.to_string(),
        v.replace('/', "\\/"),
        form_urlencoded::byte_serialize(v.as_bytes()).collect(),
        percent_encoding::utf8_percent_encode(v, STRICT).to_string(),
    ]
}

/// What keygate puts in place of `len` bytes of its credential.
fn marker(len: usize) -> String {
    format!("keygate-redacted{}", "*".repeat(len - 16))
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Starts keygate with agent `a1` and `tools`; `files` are (name, content) written into
/// its directory first (`{dir}` in `tools` is that directory).
async fn start(files: &[(&str, &str)], tools: &str) -> (TestGateway, String) {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let iss = TestIssuer::new(dir.path(), "resp-iss", "keygate");
    let tools = tools.replace("{dir}", &dir.path().display().to_string());
    let cfg = format!("{}{}{tools}", iss.toml(), agent("a1", "o@x"));
    let token = iss.token("a1");
    let gw = TestGateway::start_in(dir, &cfg).await;
    (gw, token)
}

fn tool(name: &str, upstream: &str, credential: &str) -> String {
    format!(
        "[[tools]]\nname = {name:?}\nupstream = {upstream:?}\n[tools.credential]\nprovider = \"static\"\nfrom_file = \"{{dir}}/{name}.secret\"\n{credential}\n"
    )
}

/// Reads a request head (up to the blank line).
async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut b).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// An upstream that echoes every request: each header back as `x-echo-<name>` (and the
/// `Authorization` credential in the reason phrase), the target in `Location`, the
/// credential in `Set-Cookie`, and a JSON body (as serde writes it, then with `/` as
/// `\/`, then form-encoded) in chunks of three bytes, each written and flushed on its own.
/// `answer` overrides the response (raw bytes) when it returns some.
struct Echo {
    addr: std::net::SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    /// The body bytes sent, per request.
    sent: Arc<Mutex<Vec<usize>>>,
}

type Answer = fn(&str) -> Option<Vec<u8>>;

impl Echo {
    async fn start(answer: Answer) -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (h, b) = (heads.clone(), sent.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                s.set_nodelay(true).unwrap();
                let (h, b) = (h.clone(), b.clone());
                tokio::spawn(async move {
                    while let Some(head) = read_head(&mut s).await {
                        h.lock().unwrap().push(head.clone());
                        if let Some(raw) = answer(&head) {
                            let _ = s.write_all(&raw).await;
                            continue;
                        }
                        let n = echo(&mut s, &head).await;
                        b.lock().unwrap().push(n);
                    }
                });
            }
        });
        Echo { addr, heads, sent }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

async fn echo(s: &mut TcpStream, head: &str) -> usize {
    use base64::Engine;
    let mut lines = head.split("\r\n");
    let target = lines.next().unwrap().split(' ').nth(1).unwrap().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let auth = headers
        .iter()
        .find(|(n, _)| n == "authorization")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let credential = auth
        .split_once(' ')
        .map(|(_, c)| c)
        .unwrap_or("")
        .to_string();
    // What a basic-auth debug endpoint shows: the decoded `user:password`.
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&credential)
        .ok()
        .map(|d| String::from_utf8_lossy(&d).into_owned());
    let doc = serde_json::json!({
        "target": target,
        "headers": headers.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "basic": decoded,
    })
    .to_string();
    let mut body = doc.clone().into_bytes();
    body.extend_from_slice(b"\n");
    body.extend_from_slice(doc.replace('/', "\\/").as_bytes());
    body.extend_from_slice(b"\n");
    body.extend(form_urlencoded::byte_serialize(doc.as_bytes()).flat_map(|s| s.bytes()));
    let mut out = format!(
        "HTTP/1.1 200 echo {auth}\r\ntransfer-encoding: chunked\r\ncontent-type: application/json\r\nlocation: /back{}\r\nset-cookie: echoed={credential}; Path=/\r\n",
        target.find('?').map(|i| &target[i..]).unwrap_or("")
    );
    for (n, v) in &headers {
        out.push_str(&format!("x-echo-{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    if s.write_all(out.as_bytes()).await.is_err() {
        return 0;
    }
    for piece in body.chunks(3) {
        let mut c = format!("{:x}\r\n", piece.len()).into_bytes();
        c.extend_from_slice(piece);
        c.extend_from_slice(b"\r\n");
        if s.write_all(&c).await.is_err() || s.flush().await.is_err() {
            return 0;
        }
        tokio::task::yield_now().await;
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    body.len()
}

/// What the agent got: reason phrase, headers, body, and how many data frames.
struct Seen {
    status: u16,
    reason: Option<String>,
    headers: http::HeaderMap,
    body: Bytes,
    frames: usize,
}

impl Seen {
    /// Every byte the agent can read, header names and values included.
    fn everything(&self) -> Vec<u8> {
        let mut all = self.reason.clone().unwrap_or_default().into_bytes();
        for (n, v) in &self.headers {
            all.extend_from_slice(n.as_str().as_bytes());
            all.push(b':');
            all.extend_from_slice(v.as_bytes());
            all.push(b'\n');
        }
        all.extend_from_slice(&self.body);
        all
    }

    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
}

async fn get(url: &str, headers: &[(&str, &str)]) -> Seen {
    let resp = tokio::time::timeout(WAIT, Client::http1().stream(url, headers))
        .await
        .expect("no response");
    let status = resp.status().as_u16();
    let reason = resp
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned());
    let headers = resp.headers().clone();
    let mut body = resp.into_body();
    let mut all = Vec::new();
    let mut frames = 0;
    while let Some(f) = tokio::time::timeout(WAIT, body.frame()).await.unwrap() {
        if let Ok(d) = f.unwrap().into_data() {
            frames += 1;
            all.extend_from_slice(&d);
        }
    }
    Seen {
        status,
        reason,
        headers,
        body: all.into(),
        frames,
    }
}

/// Each injection form against an upstream echoing everything: the upstream gets the
/// credential, the agent gets none of its forms back, anywhere, though the body arrived
/// three bytes a frame; the body keeps its length.
#[tokio::test]
async fn an_echoing_upstream_never_hands_the_agent_keygates_credential() {
    use base64::Engine;
    let up = Echo::start(|_| None).await;
    let basic_plain = "svc-user:pa/ss+w=rd";
    let basic_b64 = base64::engine::general_purpose::STANDARD.encode(basic_plain);
    // (tool, credential config, secret file, what the tool receives, the values that
    // must never come back)
    let cases: Vec<(&str, &str, &str, String, Vec<String>)> = vec![
        (
            "bearer",
            "inject = \"bearer\"",
            SECRET,
            format!("authorization: Bearer {SECRET}"),
            vec![SECRET.to_string()],
        ),
        (
            "basic",
            "inject = \"basic\"",
            basic_plain,
            format!("authorization: Basic {basic_b64}"),
            vec![basic_b64.clone(), basic_plain.to_string()],
        ),
        (
            "apikey",
            "inject = \"header\"\nheader = \"X-Api-Key\"",
            SECRET,
            format!("x-api-key: {SECRET}"),
            vec![SECRET.to_string()],
        ),
        (
            "query",
            "inject = \"query\"\nquery = \"key\"",
            SECRET,
            format!(
                "key={}",
                form_urlencoded::byte_serialize(SECRET.as_bytes()).collect::<String>()
            ),
            vec![SECRET.to_string()],
        ),
    ];
    let files: Vec<(String, String)> = cases
        .iter()
        .map(|(n, _, s, _, _)| (format!("{n}.secret"), s.to_string()))
        .collect();
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_str()))
        .collect();
    let tools: String = cases
        .iter()
        .map(|(n, c, _, _, _)| tool(n, &up.url(), c))
        .collect();
    let (gw, token) = start(&files, &tools).await;
    let auth = bearer(&token);
    for (i, (name, _, _, arrives, secrets)) in cases.iter().enumerate() {
        let seen = get(
            &gw.url(&format!("/tools/{name}/anything?x=1")),
            &[("authorization", &auth), ("x-note", "hello/world")],
        )
        .await;
        assert_eq!(
            seen.status,
            200,
            "{name}: {}",
            String::from_utf8_lossy(&seen.body)
        );
        // The tool got keygate's credential…
        let head = &up.heads()[i];
        assert!(head.contains(arrives.as_str()), "{name}: {head}");
        // …and the agent none of it, in any form, anywhere.
        let everything = seen.everything();
        for secret in secrets {
            for form in forms(secret) {
                assert!(
                    !contains(&everything, &form),
                    "{name}: {form:?} came back:\n{}",
                    String::from_utf8_lossy(&everything)
                );
            }
        }
        assert!(contains(&everything, "keygate-redacted"), "{name}");
        // What is not the credential comes back as sent, streamed in many frames, with
        // the length the tool sent.
        assert!(contains(&seen.body, "hello/world"), "{name}");
        assert!(contains(&seen.body, "hello\\/world"), "{name}");
        assert_eq!(seen.header("x-echo-x-note"), "hello/world");
        assert!(seen.frames > 10, "{name}: {} frames", seen.frames);
        assert_eq!(seen.body.len(), up.sent.lock().unwrap()[i], "{name}");
    }
    // Specific places, for the bearer tool.
    let seen = get(&gw.url("/tools/bearer/x"), &[("authorization", &auth)]).await;
    assert_eq!(
        seen.reason.as_deref(),
        None,
        "the echoing reason phrase is dropped"
    );
    let m = marker(SECRET.len());
    assert_eq!(seen.header("x-echo-authorization"), format!("Bearer {m}"));
    assert_eq!(seen.header("set-cookie"), format!("echoed={m}; Path=/"));
    let seen = get(&gw.url("/tools/query/x?a=b"), &[("authorization", &auth)]).await;
    let encoded_len = forms(SECRET)[2].len();
    assert_eq!(
        seen.header("location"),
        format!("/back?a=b&key={}", marker(encoded_len))
    );
}

/// `keygate echo`, keygate's own debugging upstream, as the tool: the credential it
/// reflects in its JSON comes back redacted.
#[tokio::test]
async fn keygate_echo_upstream_does_not_leak_the_credential() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    tokio::spawn({
        let listen = listen.clone();
        async move { keygate::echo::run(&listen).await }
    });
    for _ in 0..200 {
        if TcpStream::connect(&listen).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (gw, token) = start(
        &[("echo.secret", SECRET)],
        &tool("echo", &format!("http://{listen}"), "inject = \"bearer\""),
    )
    .await;
    let seen = get(
        &gw.url("/tools/echo/anything"),
        &[("authorization", &bearer(&token))],
    )
    .await;
    assert_eq!(seen.status, 200);
    let j: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(
        j["headers"]["authorization"],
        format!("Bearer {}", marker(SECRET.len()))
    );
    for form in forms(SECRET) {
        assert!(!contains(&seen.everything(), &form), "{form}");
    }
}

/// TRACE is refused with 405 for every tool, and nothing reaches the upstream.
#[tokio::test]
async fn trace_is_refused_and_nothing_is_forwarded() {
    let up = Echo::start(|_| None).await;
    let (gw, token) = start(
        &[("t.secret", SECRET)],
        &tool("t", &up.url(), "inject = \"bearer\""),
    )
    .await;
    let auth = bearer(&token);
    for path in ["/tools/t/", "/tools/t/anything", "/tools/unknown/x", "/"] {
        let r = Client::http1()
            .send("TRACE", &gw.url(path), &[("authorization", &auth)], "")
            .await;
        assert_eq!(r.status, 405, "{path}: {}", r.text());
        assert_eq!(r.json()["error"], "method_not_allowed", "{path}");
        assert!(!r.text().contains(SECRET));
    }
    assert!(
        up.heads().is_empty(),
        "TRACE reached the tool: {:?}",
        up.heads()
    );
    // Other methods still pass.
    let r = Client::http1()
        .send(
            "OPTIONS",
            &gw.url("/tools/t/x"),
            &[("authorization", &auth)],
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(up.heads().len(), 1);
}

/// The agent's `Connection` header naming the header keygate injects does not remove
/// keygate's credential: the tool gets it, and the agent's hop-by-hop headers are gone.
#[tokio::test]
async fn connection_naming_the_injected_header_cannot_remove_it() {
    let up = RawUpstream::start().await;
    let (gw, token) = start(
        &[("bearer.secret", SECRET), ("apikey.secret", SECRET)],
        &format!(
            "{}{}",
            tool("bearer", &up.url(), "inject = \"bearer\""),
            tool(
                "apikey",
                &up.url(),
                "inject = \"header\"\nheader = \"X-Api-Key\""
            )
        ),
    )
    .await;
    let cases = [
        (
            "bearer",
            "authorization",
            "authorization",
            format!("Bearer {SECRET}"),
        ),
        (
            "bearer",
            "close, Authorization, x-other",
            "authorization",
            format!("Bearer {SECRET}"),
        ),
        ("apikey", "x-api-key", "x-api-key", SECRET.to_string()),
        (
            "apikey",
            "keep-alive, X-API-KEY",
            "x-api-key",
            SECRET.to_string(),
        ),
    ];
    for (i, (name, connection, header, want)) in cases.iter().enumerate() {
        let req = format!(
            "GET /tools/{name}/c HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {token}\r\nconnection: {connection}\r\nx-other: gone\r\n\r\n",
            gw.addr
        );
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let resp = String::from_utf8_lossy(&buf[..n]);
        assert!(resp.starts_with("HTTP/1.1 200"), "{connection}: {resp}");
        let got = &up.requests()[i];
        assert_eq!(
            got.header(header).as_deref(),
            Some(want.as_str()),
            "{connection}: {}",
            got.head
        );
        assert_eq!(got.header("connection"), None, "{}", got.head);
        if connection.contains("x-other") {
            assert_eq!(got.header("x-other"), None, "{}", got.head);
        }
    }
}

/// keygate asks for an uncompressed answer; a compressed one is refused (fail closed):
/// keygate cannot check it for its credential.
#[tokio::test]
async fn a_compressed_answer_is_refused() {
    let up = Echo::start(|head| {
        if head.contains("/gzip-hidden") {
            // `identity` first, the real coding after it.
            return Some(
                b"HTTP/1.1 200 OK\r\ncontent-encoding: identity\r\ncontent-encoding: gzip\r\ncontent-length: 4\r\n\r\n\x1f\x8b\x08\x00"
                    .to_vec(),
            );
        }
        head.contains("/gzip").then(|| {
            b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 4\r\n\r\n\x1f\x8b\x08\x00"
                .to_vec()
        })
    })
    .await;
    // A tool set to refuse compressed answers (the default decompresses gzip and deflate
    // for scanning: tests/response_secrets.rs).
    let (gw, token) = start(
        &[("t.secret", SECRET)],
        &tool("t", &up.url(), "inject = \"bearer\"").replace(
            "[tools.credential]",
            "compressed_responses = \"refuse\"\n[tools.credential]",
        ),
    )
    .await;
    let auth = bearer(&token);
    let r = Client::http1()
        .get(
            &gw.url("/tools/t/gzip"),
            &[("authorization", &auth), ("accept-encoding", "gzip, br")],
        )
        .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_unavailable");
    let head = &up.heads()[0];
    assert!(
        head.to_ascii_lowercase()
            .contains("accept-encoding: identity\r\n"),
        "{head}"
    );
    assert!(!head.contains("gzip, br"), "{head}");
    let r = Client::http1()
        .get(
            &gw.url("/tools/t/gzip-hidden"),
            &[("authorization", &auth), ("range", "bytes=0-3")],
        )
        .await;
    assert_eq!(r.status, 502, "{}", r.text());
    // A range of an echo could hold a piece of the credential: the tool answers whole.
    let head = up.heads()[1].to_ascii_lowercase();
    assert!(!head.contains("range:"), "{head}");
}

/// A JWT keygate mints: redacted on the call it is minted for and on the calls that
/// reuse it (the compiled search then comes from the cache), and on single-use tokens.
#[tokio::test]
async fn minted_jwts_never_come_back() {
    let up = Echo::start(|_| None).await;
    let jwt_tool = |name: &str, extra: &str| {
        format!(
            "[[tools]]\nname = {name:?}\nupstream = {:?}\n[tools.credential]\nprovider = \"jwt\"\nttl = \"60s\"\n{extra}\n",
            up.url()
        )
    };
    let (gw, token) = start(
        &[],
        &format!(
            "{}{}",
            jwt_tool("reused", ""),
            jwt_tool("single", "unique_per_call = true")
        ),
    )
    .await;
    let auth = bearer(&token);
    for (i, name) in ["reused", "reused", "reused", "single", "single"]
        .iter()
        .enumerate()
    {
        let seen = get(
            &gw.url(&format!("/tools/{name}/x")),
            &[("authorization", &auth)],
        )
        .await;
        assert_eq!(seen.status, 200);
        let head = &up.heads()[i];
        let minted = head
            .lines()
            .find_map(|l| l.strip_prefix("authorization: Bearer "))
            .unwrap()
            .to_string();
        assert_eq!(minted.split('.').count(), 3, "{head}");
        let everything = seen.everything();
        assert!(!contains(&everything, &minted), "{name} call {i}");
        let signature = minted.rsplit('.').next().unwrap();
        assert!(!contains(&everything, signature), "{name} call {i}");
        assert_eq!(
            seen.header("x-echo-authorization"),
            format!("Bearer {}", marker(minted.len()))
        );
    }
}

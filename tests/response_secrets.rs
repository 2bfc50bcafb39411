//! Secret formats in tool responses, end to end: an event stream whose token is split
//! across two chunks arrives event by event with the token redacted; a tool set to block
//! answers 502 secret_in_response (audited); a gzip answer is decompressed and scanned.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use http_body_util::BodyExt;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const TOKEN: &str = "ghp_SplitAcrossChunksToken0123456789abcdef";

/// An upstream that answers one request with an event stream, one chunk per message from
/// the test (so the test decides when each chunk is sent).
async fn sse_upstream() -> (String, mpsc::UnboundedSender<Option<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, mut rx) = mpsc::unbounded_channel::<Option<String>>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        while let Some(Some(chunk)) = rx.recv().await {
            s.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
                .await
                .unwrap();
        }
        s.write_all(b"0\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    (url, tx)
}

async fn gateway(upstream: &str, extra: &str) -> (TestGateway, String) {
    let dir = tempfile::tempdir().unwrap();
    let source = secret_file(dir.path(), "RS_TOOL", "rs-tool-credential-91b2");
    let iss = TestIssuer::new(dir.path(), "rs-iss", "keygate");
    let cfg = format!(
        "{}{}[[tools]]\nname = \"t\"\nupstream = {upstream:?}\n{extra}[tools.credential]\nprovider = \"static\"\n{source}",
        iss.toml(),
        agent("a1", "alice@example.com"),
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    let token = iss.token("a1");
    (gw, token)
}

/// Reads the next data frame, within a few seconds.
async fn next_data(body: &mut hyper::body::Incoming) -> Option<String> {
    loop {
        let f = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("a frame within 5 s")?;
        if let Ok(d) = f.unwrap().into_data() {
            return Some(String::from_utf8(d.to_vec()).unwrap());
        }
    }
}

#[tokio::test]
async fn a_token_split_across_chunks_is_redacted_and_events_arrive_one_by_one() {
    let (url, tx) = sse_upstream().await;
    let (gw, token) = gateway(&url, "").await;
    let auth = bearer(&token);
    let resp = Client::http1()
        .stream(&gw.url("/tools/t/events"), &[("authorization", &auth)])
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();

    tx.send(Some("data: first\n\n".into())).unwrap();
    assert_eq!(next_data(&mut body).await.unwrap(), "data: first\n\n");

    // The token's first half: nothing of it may go out before the rest is known.
    let (a, b) = TOKEN.split_at(17);
    tx.send(Some(format!("data: {{\"token\": \"{a}"))).unwrap();
    let mut seen = String::new();
    // What can be sent is (the event's start); the held token part is not.
    if let Ok(Some(part)) =
        tokio::time::timeout(Duration::from_millis(300), next_data(&mut body)).await
    {
        seen.push_str(&part);
    }
    assert!(
        !seen.contains("ghp_"),
        "part of the token went out: {seen:?}"
    );
    tx.send(Some(format!("{b}\"}}\n\n"))).unwrap();
    while !seen.ends_with("\n\n") {
        seen.push_str(&next_data(&mut body).await.unwrap());
    }
    assert!(!seen.contains(TOKEN) && !seen.contains("ghp_"), "{seen:?}");
    assert!(seen.contains("keygate-redacted"), "{seen:?}");
    assert_eq!(
        seen.len(),
        "data: {\"token\": \"\"}\n\n".len() + TOKEN.len()
    );

    tx.send(Some("data: third\n\n".into())).unwrap();
    assert_eq!(next_data(&mut body).await.unwrap(), "data: third\n\n");
    tx.send(None).unwrap();
    while next_data(&mut body).await.is_some() {}

    let audit = gw.audit().await;
    let rec = audit.last().unwrap();
    assert_eq!(
        rec["response_secrets"][0]["format"], "github_token",
        "{rec}"
    );
    assert_eq!(rec["response_secrets"][0]["location"], "body");
    assert_eq!(rec["response_secrets"][0]["count"], 1);
    assert_eq!(rec["response_secrets"][0]["action"], "redacted");
}

#[tokio::test]
async fn a_tool_set_to_block_answers_502_secret_in_response() {
    let leaky = format!(r#"{{"file": "config.yml", "content": "token: {TOKEN}"}}"#);
    let body = leaky.clone();
    let up = RawUpstream::with_responder(std::sync::Arc::new(move |_r: &Received| {
        (
            200,
            vec![("content-type".into(), "application/json".into())],
            body.clone().into_bytes(),
        )
    }))
    .await;
    let (gw, token) = gateway(&up.url(), "response_secrets = \"block\"\n").await;
    let auth = bearer(&token);
    let r = Client::http1()
        .get(&gw.url("/tools/t/repo/file"), &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "secret_in_response");
    assert!(!r.text().contains("ghp_"));
    let audit = gw.audit().await;
    let rec = audit.last().unwrap();
    assert_eq!(rec["error"], "secret_in_response", "{rec}");
    assert_eq!(rec["response_secrets"][0]["action"], "blocked", "{rec}");
    assert_eq!(rec["status"], 502);
    let metrics = Client::http1()
        .get(
            &format!("http://{}/metrics", gw.admin_addr),
            &[("authorization", &bearer(&gw.runtime.shared.admin_token))],
        )
        .await
        .text();
    assert!(
        metrics.contains(
            "keygate_response_secrets_total{tool=\"t\",format=\"github_token\",action=\"blocked\"} 1"
        ),
        "{metrics}"
    );

    // Default (redact): the same answer arrives, the token overwritten, same length.
    let (gw, token) = gateway(&up.url(), "").await;
    let r = Client::http1()
        .get(
            &gw.url("/tools/t/repo/file"),
            &[("authorization", &bearer(&token))],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), leaky.len());
    assert!(!r.text().contains("ghp_"), "{}", r.text());
    // Pass: unchanged, still audited.
    let (gw, token) = gateway(&up.url(), "response_secrets = \"pass\"\n").await;
    let r = Client::http1()
        .get(
            &gw.url("/tools/t/repo/file"),
            &[("authorization", &bearer(&token))],
        )
        .await;
    assert_eq!(r.text(), leaky);
    let audit = gw.audit().await;
    assert_eq!(
        audit.last().unwrap()["response_secrets"][0]["action"],
        "passed"
    );
}

#[tokio::test]
async fn a_gzip_answer_is_decompressed_and_scanned_or_refused() {
    use std::io::Write;
    let plain = format!("line one\nsecret {TOKEN}\nline three\n");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(plain.as_bytes()).unwrap();
    let gz = enc.finish().unwrap();
    let up = RawUpstream::with_responder(std::sync::Arc::new(move |_r: &Received| {
        (
            200,
            vec![
                ("content-type".into(), "text/plain".into()),
                ("content-encoding".into(), "gzip".into()),
            ],
            gz.clone(),
        )
    }))
    .await;
    let (gw, token) = gateway(&up.url(), "").await;
    let r = Client::http1()
        .get(
            &gw.url("/tools/t/log"),
            &[("authorization", &bearer(&token))],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.headers.get("content-encoding").is_none());
    assert!(
        r.text().starts_with("line one\nsecret keygate-redacted"),
        "{}",
        r.text()
    );
    assert_eq!(r.body.len(), plain.len());
    let (gw, token) = gateway(&up.url(), "compressed_responses = \"refuse\"\n").await;
    let r = Client::http1()
        .get(
            &gw.url("/tools/t/log"),
            &[("authorization", &bearer(&token))],
        )
        .await;
    assert_eq!(r.status, 502, "{}", r.text());
}

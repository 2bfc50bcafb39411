//! A forwarded call runs to its end and is audited whatever the agent's connection does:
//! an agent that closes its connection while the tool works leaves an audit record (and
//! an inventory record for an identity it created) that says the client went away, and
//! an agent that half-closes after sending still gets its answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

const WAIT: Duration = Duration::from_secs(10);

/// A GitHub stand-in that answers one request only when the test says so: it reports
/// each request it received, then waits for the release before it answers `201` with a
/// created deploy key.
struct SlowTool {
    url: String,
    received: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
}

async fn slow_tool() -> SlowTool {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // The head, then as many body bytes as Content-Length says.
                loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let (release, released) = oneshot::channel();
                tx.send(release).unwrap();
                let _ = released.await;
                let body = r#"{"id":4242,"title":"gone","read_only":true}"#;
                let resp = format!(
                    "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    SlowTool { url, received: rx }
}

const PREAPPROVE: &str = r#"
@id("a1-may-add-deploy-keys")
@preapproved
permit (principal == Agent::"a1", action == Action::"github:create_deploy_key", resource == Tool::"gh");
"#;

async fn gateway(tool: &SlowTool, env: &str) -> (TestGateway, TestIssuer) {
    let dir = tempfile::tempdir().unwrap();
    let source = secret_file(
        dir.path(),
        env,
        &format!("{}-secret", env.to_ascii_lowercase()),
    );
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/extra.cedar"), PREAPPROVE).unwrap();
    let iss = TestIssuer::new(dir.path(), "gone-issuer", "keygate");
    let cfg = format!(
        "{}{}[[tools]]\nname = \"gh\"\nkind = \"github\"\nupstream = {:?}\n[tools.credential]\nprovider = \"static\"\n{source}",
        iss.toml(),
        agent("a1", "alice@example.com"),
        tool.url,
    );
    (TestGateway::start_in(dir, &cfg).await, iss)
}

fn request(gw: &TestGateway, token: &str) -> Vec<u8> {
    let body =
        r#"{"title":"gone","key":"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGone","read_only":true}"#;
    format!(
        "POST /tools/gh/repos/acme/app/keys HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        gw.addr,
        body.len()
    )
    .into_bytes()
}

/// The audit records in the file so far, without closing the writer.
async fn audit_when(
    gw: &TestGateway,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let records: Vec<serde_json::Value> = std::fs::read_to_string(&gw.audit_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if done(&records) {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "no such audit record: {records:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_call_whose_agent_went_away_is_audited_and_its_identity_recorded() {
    let mut tool = slow_tool().await;
    let (gw, iss) = gateway(&tool, "GONE_CLOSE_SECRET").await;
    // Over HTTP/2 an agent that gives up resets its stream, and hyper drops the
    // request's future at once.
    let client = Client::http2();
    let auth = bearer(&iss.token("a1"));
    let url = gw.url("/tools/gh/repos/acme/app/keys");
    let body =
        r#"{"title":"gone","key":"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGone","read_only":true}"#;
    let call = tokio::spawn(async move {
        client
            .send(
                "POST",
                &url,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await
    });
    // The tool has the call; the agent goes away before it answers.
    let release = tokio::time::timeout(WAIT, tool.received.recv())
        .await
        .unwrap()
        .unwrap();
    call.abort();
    assert!(matches!(call.await, Err(e) if e.is_cancelled()));
    // Give keygate the time to see the reset before the tool answers (wide, for a
    // loaded machine).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    release.send(()).unwrap();

    let records = audit_when(&gw, |r| !r.is_empty()).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let rec = &records[0];
    assert_eq!(rec["decision"], "allow", "{rec}");
    assert_eq!(rec["status"], 201, "{rec}");
    assert_eq!(rec["client_gone"], true, "{rec}");
    assert_eq!(rec["completed"], false, "{rec}");
    assert_eq!(rec["operation"], "github:create_deploy_key", "{rec}");
    // The identity exists at the tool: the inventory knows it, and who asked for it.
    let (status, inv) = gw.admin("GET", "/inventory", None).await;
    assert_eq!(status, 200);
    let inv = inv["identities"].as_array().cloned().unwrap_or_default();
    assert_eq!(inv.len(), 1, "{inv:?}");
    assert_eq!(inv[0]["agent_id"], "a1");
    assert_eq!(inv[0]["identifier"], "4242");
    assert_eq!(rec["inventory_id"], inv[0]["id"], "{rec}");
}

#[tokio::test]
async fn an_agent_that_half_closes_after_sending_gets_its_answer() {
    let mut tool = slow_tool().await;
    let (gw, iss) = gateway(&tool, "GONE_HALF_CLOSE_SECRET").await;
    let mut agent = TcpStream::connect(gw.addr).await.unwrap();
    agent
        .write_all(&request(&gw, &iss.token("a1")))
        .await
        .unwrap();
    agent.shutdown().await.unwrap();
    let release = tokio::time::timeout(WAIT, tool.received.recv())
        .await
        .unwrap()
        .unwrap();
    release.send(()).unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, agent.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains(r#""id":4242"#), "{answer}");
    let records = audit_when(&gw, |r| !r.is_empty()).await;
    assert!(records[0].get("client_gone").is_none(), "{:?}", records[0]);
    assert_eq!(records[0]["completed"], true, "{:?}", records[0]);
}

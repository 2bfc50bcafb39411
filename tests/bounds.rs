//! Bounded under abuse: pending approvals per agent are capped, approval webhook
//! notifications are rate-limited, a held request waits on a signal instead of polling the
//! store, and `/metrics` counts approvals without loading them. Every test runs keygate
//! in-process in front of a GitHub stand-in on loopback (`kind = "github"`, so a deploy-key
//! creation needs an approval).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYS: &str = "/tools/gh/repos/acme/app/keys";
const WAIT: Duration = Duration::from_secs(10);

struct Env {
    gw: TestGateway,
    up: RawUpstream,
    iss: TestIssuer,
    client: Client,
}

/// keygate with agents `a1`, `a2` and tool `gh`; `top` goes before the tool (e.g. an
/// `[approvals]` table), `tool_extra` inside the tool's table. The tool's credential is
/// read from a file (no environment variable is set).
async fn start(top: &str, tool_extra: &str) -> Env {
    let up = RawUpstream::with_responder(Arc::new(|r: &Received| {
        if r.head.starts_with("POST ") {
            (201, vec![], br#"{"id": 4242}"#.to_vec())
        } else {
            (200, vec![], b"ok".to_vec())
        }
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gh.secret"), "bounds-tool-credential-9a7c").unwrap();
    let iss = TestIssuer::new(dir.path(), "bounds-issuer", "keygate");
    let cfg = format!(
        "{top}{}{}{}[[tools]]\nname = \"gh\"\nkind = \"github\"\nupstream = {:?}\n{tool_extra}[tools.credential]\nprovider = \"static\"\nfrom_file = \"gh.secret\"\n",
        iss.toml(),
        agent("a1", "alice@example.com"),
        agent("a2", "dave@example.com"),
        up.url(),
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    Env {
        gw,
        up,
        iss,
        client: Client::http1(),
    }
}

impl Env {
    /// `agent` asks to create a deploy key titled `title`.
    async fn create(&self, agent: &str, title: &str) -> Response {
        let auth = bearer(&self.iss.token(agent));
        self.client
            .send(
                "POST",
                &self.gw.url(KEYS),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                json!({"title": title, "key": "ssh-ed25519 AAAA", "read_only": true}).to_string(),
            )
            .await
    }

    async fn pending(&self) -> Vec<Value> {
        let (s, b) = self
            .gw
            .admin("GET", "/approvals?status=pending&limit=10000", None)
            .await;
        assert_eq!(s, 200, "{b}");
        b["approvals"].as_array().unwrap().clone()
    }

    /// The value of one sample of `/metrics` (the whole line before the value).
    async fn metric(&self, series: &str) -> Option<f64> {
        let r = Client::http1()
            .get(&format!("http://{}/metrics", self.gw.admin_addr), &[])
            .await;
        assert_eq!(r.status, 200);
        r.text().lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|v| v.strip_prefix(' '))
                .map(|v| v.parse().unwrap())
        })
    }
}

#[track_caller]
fn approval_required(r: &Response) -> String {
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "approval_required", "{}", r.text());
    r.json()["approval_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn pending_approvals_per_agent_are_capped() {
    let e = start("", "").await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(approval_required(&e.create("a1", &format!("k{i}")).await));
    }
    // The 21st distinct request: refused, nothing stored, nothing forwarded.
    let r = e.create("a1", "k20").await;
    assert_eq!(r.status, 429, "{}", r.text());
    let b = r.json();
    assert_eq!(b["error"], "too_many_pending_approvals", "{b}");
    assert!(b["message"].as_str().unwrap().contains("20"), "{b}");
    assert!(b.get("approval_id").is_none_or(Value::is_null), "{b}");
    assert_eq!(e.pending().await.len(), 20);
    // A retry of a pending request still gets its approval.
    assert_eq!(approval_required(&e.create("a1", "k3").await), ids[3]);
    // Other agents are not affected.
    approval_required(&e.create("a2", "k20").await);
    assert_eq!(e.pending().await.len(), 21);
    assert_eq!(e.up.count(), 0);
    // Once an approver decides one, the agent may ask again.
    let (s, b) =
        e.gw.admin(
            "POST",
            &format!("/approvals/{}/deny", ids[0]),
            Some(json!({"approver": "bob@example.com"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    approval_required(&e.create("a1", "k20").await);
    let audit = e.gw.audit().await;
    assert!(
        audit
            .iter()
            .any(|r| r["error"] == "too_many_pending_approvals"),
        "the refusal is audited"
    );
}

#[tokio::test]
async fn webhook_notifications_are_rate_limited_and_drops_counted() {
    let hook = RawUpstream::start().await;
    let top = format!(
        "[approvals]\nwebhook_url = \"{}/hook\"\nwebhook_max_per_minute = 3\n",
        hook.url()
    );
    let e = start(&top, "").await;
    for i in 0..7 {
        approval_required(&e.create("a1", &format!("k{i}")).await);
    }
    assert_eq!(e.pending().await.len(), 7, "every approval is still stored");
    // The counters are bumped before a notification is sent, so once they say 3 sent the
    // receiver will get exactly those 3.
    let sent = "keygate_webhook_notifications_total{result=\"sent\"}";
    let dropped = "keygate_webhook_notifications_total{result=\"dropped\"}";
    assert_eq!(e.metric(sent).await, Some(3.0));
    assert_eq!(e.metric(dropped).await, Some(4.0));
    let deadline = Instant::now() + WAIT;
    while hook.count() < 3 {
        assert!(
            Instant::now() < deadline,
            "the webhook got {}",
            hook.count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(hook.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_request_waits_on_the_decision_not_on_the_store() {
    let e = start("", "approval = \"hold\"\nhold_timeout = \"30s\"\n").await;
    let (url, auth, c) = (e.gw.url(KEYS), bearer(&e.iss.token("a1")), e.client.clone());
    let sent = Instant::now();
    let task = tokio::spawn(async move {
        c.send(
            "POST",
            &url,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            json!({"title": "ci", "key": "ssh-ed25519 AAAA"}).to_string(),
        )
        .await
    });
    let deadline = Instant::now() + WAIT;
    let id = loop {
        if let [one] = e.pending().await.as_slice() {
            break one["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no approval became pending");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Longer than the store poll interval keygate used to have (500 ms): a held request
    // now reads the store again only when woken (or every 5 s).
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!task.is_finished(), "the request was not held");
    let before = e
        .metric("keygate_approval_hold_rechecks_total")
        .await
        .unwrap();
    // None yet, unless a loaded machine took past the slow re-read (5 s) to get here.
    if sent.elapsed() < Duration::from_millis(4500) {
        assert_eq!(before, 0.0);
    }
    let (s, b) =
        e.gw.admin(
            "POST",
            &format!("/approvals/{id}/approve"),
            Some(json!({"approver": "bob@example.com", "owner": "carol@example.com"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let r = tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(e.up.count(), 1);
    // Released by the signal: one store read after it, no polling.
    assert_eq!(
        e.metric("keygate_approval_hold_rechecks_total").await,
        Some(before + 1.0)
    );
}

#[tokio::test]
async fn metrics_count_many_approvals_without_loading_them() {
    let e = start("", "").await;
    approval_required(&e.create("a1", "k0").await);
    // 12,000 more pending approvals, written straight into the store's file.
    let db = e.gw.dir.path().join("keygate.db");
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&db)
        .busy_timeout(Duration::from_secs(5));
    let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    let far = 4_000_000_000_000i64;
    let mut tx = pool.begin().await.unwrap();
    for i in 0..12_000 {
        sqlx::query(
            "INSERT INTO approvals (id, status, agent_id, agent_owner, tool, operation, digest, \
             method, path, created_at, pending_expires_at) \
             VALUES (?, 'pending', 'bulk', 'o', 'gh', 'op', ?, 'POST', '/', 1, ?)",
        )
        .bind(format!("apr_bulk{i:016}"))
        .bind(format!("d{i}"))
        .bind(far)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    pool.close().await;
    assert_eq!(e.metric("keygate_approvals_pending").await, Some(12_001.0));
    assert_eq!(
        e.metric("keygate_approvals{status=\"pending\"}").await,
        Some(12_001.0)
    );
}

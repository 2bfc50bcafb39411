//! Anomalies (issue 21): keygate keeps what each agent normally does, and detectors act
//! when it does otherwise. After a learning period a first call to a new tool suspends
//! the agent (the call refused, the reason in the audit log and the store, a human's
//! resume restores service); a burst of `secret_in_request` refusals trips its detector,
//! whose `require_approval` then holds the agent's writes; baselines survive a restart;
//! `keygate agents show` prints the baseline and the anomalies. Time moves by keygate's
//! injected clock, never by sleeping, so every detector decides the same on every run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::Value;
use std::time::Duration;

/// keygate with agents `a1`, `a2` and generic tools `t`, `u`, then `extra`.
async fn start(extra: &str) -> (TestGateway, RawUpstream, TestIssuer) {
    let up = RawUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "anomaly-issuer", "keygate");
    let source = secret_file(dir.path(), "t.secret", "anomaly-tool-credential-77d2");
    let cfg = format!(
        "{}{}{}{}{}{extra}",
        iss.toml(),
        agent("a1", "alice@example.com"),
        agent("a2", "dave@example.com"),
        static_tool("t", &up.url(), &source),
        static_tool("u", &up.url(), &source),
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    (gw, up, iss)
}

async fn call(
    gw: &TestGateway,
    iss: &TestIssuer,
    method: &str,
    agent: &str,
    path: &str,
) -> Response {
    // Good for a day: the tests move keygate's clock by hours.
    let token = iss.sign(serde_json::json!({
        "iss": iss.issuer, "aud": iss.audience, "sub": agent,
        "iat": now(), "exp": now() + 86_400,
    }));
    let auth = bearer(&token);
    Client::http1()
        .send(
            method,
            &gw.url(path),
            &[("authorization", &auth)],
            String::new(),
        )
        .await
}

async fn cli(gw: &TestGateway, args: &[&str]) -> String {
    let c = gw.cli(args).await;
    assert!(c.ok, "keygate {args:?}: {}", c.stderr);
    c.stdout
}

const NEW_TOOL_SUSPENDS: &str = "[anomalies]\nlearning_period = \"1h\"\nflush_interval = \"1s\"\n\
     [anomalies.new_tool]\naction = \"suspend\"\n";

#[tokio::test]
async fn after_learning_a_first_call_to_a_new_tool_suspends_the_agent_until_a_human_resumes_it() {
    let (gw, up, iss) = start(NEW_TOOL_SUSPENDS).await;
    // Learning: a1 uses t; a2 uses both.
    assert_eq!(call(&gw, &iss, "GET", "a1", "/tools/t/x").await.status, 200);
    assert_eq!(call(&gw, &iss, "GET", "a2", "/tools/t/x").await.status, 200);
    assert_eq!(call(&gw, &iss, "GET", "a2", "/tools/u/x").await.status, 200);
    gw.advance_clock(Duration::from_secs(2 * 3600));
    assert_eq!(call(&gw, &iss, "GET", "a1", "/tools/t/x").await.status, 200);
    let before = up.count();

    // a1's first call to u: refused, and a1 is suspended.
    let r = call(&gw, &iss, "GET", "a1", "/tools/u/x").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "agent_suspended", "{}", r.text());
    assert!(r.text().contains("new_tool"), "{}", r.text());
    let r = call(&gw, &iss, "GET", "a1", "/tools/t/x").await;
    assert_eq!(
        r.json()["error"],
        "agent_suspended",
        "every call now: {}",
        r.text()
    );
    assert_eq!(up.count(), before, "nothing reached a tool");
    // a2 goes on.
    assert_eq!(call(&gw, &iss, "GET", "a2", "/tools/u/x").await.status, 200);

    // The suspension names the detector and the reason, in the store.
    let (s, b) = gw.admin("GET", "/agents/suspended", None).await;
    assert_eq!(s, 200, "{b}");
    let sus = &b["suspended"][0];
    assert_eq!(sus["agent_id"], "a1", "{b}");
    assert_eq!(sus["by"], "anomaly:new_tool", "{b}");
    let reason = sus["reason"].as_str().unwrap();
    assert!(
        reason.contains("first call to tool u") && reason.contains("tools called before: t"),
        "{reason}"
    );
    // keygate agents show: the suspension, the baseline, the anomaly.
    let shown = cli(&gw, &["agents", "show", "a1"]).await;
    for want in [
        "anomaly:new_tool",
        "first call to tool u",
        "tools called before: t",
        "suspend",
        "TOOL",
    ] {
        assert!(shown.contains(want), "{want:?} not in:\n{shown}");
    }
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("keygate_anomalies_total{detector=\"new_tool\",action=\"suspend\"} 1"),
        "{metrics}"
    );

    // A human resumes a1: service is back, u is known now.
    let (s, b) = gw.admin("POST", "/agents/a1/resume", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(call(&gw, &iss, "GET", "a1", "/tools/u/x").await.status, 200);
    assert_eq!(call(&gw, &iss, "GET", "a1", "/tools/t/x").await.status, 200);

    let audit = gw.audit().await;
    let events: Vec<&Value> = audit.iter().filter(|r| !r["anomaly"].is_null()).collect();
    assert_eq!(events.len(), 1, "{audit:#?}");
    let e = events[0];
    assert_eq!(e["agent_id"], "a1");
    assert_eq!(e["tool"], "u");
    assert_eq!(e["operation"], "keygate:anomaly.new_tool");
    assert_eq!(e["anomaly"]["detector"], "new_tool");
    assert_eq!(e["anomaly"]["action"], "suspend");
    assert_eq!(e["anomaly"]["observed"], "first call to tool u");
    assert_eq!(e["anomaly"]["baseline"], "tools called before: t");
    // The refused call's own record says why.
    let refused = audit
        .iter()
        .find(|r| r["request_id"] == e["request_id"] && r["anomaly"].is_null())
        .unwrap();
    assert_eq!(refused["error"], "agent_suspended");
    assert!(refused["error_detail"]
        .as_str()
        .unwrap()
        .starts_with("anomaly:new_tool: first call to tool u"));
}

#[tokio::test]
async fn a_burst_of_secret_refusals_trips_its_detector_and_holds_the_agents_writes() {
    let (gw, up, iss) = start(
        "[anomalies]\n[anomalies.refusal_burst]\naction = \"require_approval\"\ncount = 20\nwindow = \"1m\"\n",
    )
    .await;
    // 19 refusals spread over more than a minute: no burst.
    for i in 0..19 {
        let r = call(
            &gw,
            &iss,
            "GET",
            "a1",
            "/tools/t/search?q=AKIAIOSFODNN7EXAMPLE",
        )
        .await;
        assert_eq!(r.json()["error"], "secret_in_request", "{i}: {}", r.text());
        gw.advance_clock(Duration::from_secs(4));
    }
    assert_eq!(
        call(&gw, &iss, "POST", "a1", "/tools/t/items").await.status,
        200
    );
    // 20 within a minute: the detector fires once.
    for _ in 0..20 {
        let r = call(
            &gw,
            &iss,
            "GET",
            "a1",
            "/tools/t/search?q=AKIAIOSFODNN7EXAMPLE",
        )
        .await;
        assert_eq!(r.status, 400);
    }
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(
            "keygate_anomalies_total{detector=\"refusal_burst\",action=\"require_approval\"} 1"
        ),
        "{metrics}"
    );
    // Its action: a1's writes need a human's approval; reads and a2 are unaffected.
    let r = call(&gw, &iss, "POST", "a1", "/tools/t/items").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "approval_required", "{}", r.text());
    assert_eq!(
        call(&gw, &iss, "GET", "a1", "/tools/t/items").await.status,
        200
    );
    assert_eq!(
        call(&gw, &iss, "POST", "a2", "/tools/t/items").await.status,
        200
    );
    let id = r.json()["approval_id"].as_str().unwrap().to_string();
    let (s, b) = gw.admin("GET", &format!("/approvals/{id}"), None).await;
    assert_eq!(s, 200, "{b}");
    let policies = b["policies"].to_string();
    assert!(policies.contains("anomaly:refusal_burst"), "{b}");
    // The hold ends when a1 is resumed.
    let (s, _) = gw.admin("POST", "/agents/a1/resume", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        call(&gw, &iss, "POST", "a1", "/tools/t/items").await.status,
        200
    );
    assert_eq!(
        up.count(),
        4,
        "the refused and held calls never reached the tool"
    );

    let audit = gw.audit().await;
    let events: Vec<&Value> = audit.iter().filter(|r| !r["anomaly"].is_null()).collect();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["anomaly"]["detector"], "refusal_burst");
    assert_eq!(
        events[0]["anomaly"]["observed"],
        "20 refusals within 1m (the last: secret_in_request)"
    );
}

#[tokio::test]
async fn baselines_survive_a_restart() {
    let (gw, _up, iss) = start(
        "[anomalies]\nlearning_period = \"1h\"\n[anomalies.new_tool]\naction = \"suspend\"\n",
    )
    .await;
    assert_eq!(call(&gw, &iss, "GET", "a1", "/tools/t/x").await.status, 200);
    // A graceful stop writes what the baselines learnt (the periodic flush is every
    // 30 s by default, far away).
    let gw = gw.restart().await;
    let (s, b) = gw.admin("GET", "/agents/a1", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["baseline"]["tools"][0]["tool"], "t", "{b}");
    // The learning period counts from the first call before the restart.
    gw.advance_clock(Duration::from_secs(2 * 3600));
    assert_eq!(call(&gw, &iss, "GET", "a1", "/tools/t/x").await.status, 200);
    let r = call(&gw, &iss, "GET", "a1", "/tools/u/x").await;
    assert_eq!(r.json()["error"], "agent_suspended", "{}", r.text());
}

#[tokio::test]
async fn detectors_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = TestGateway::write_config(
        &dir,
        "[anomalies]\nflush_interval = \"0s\"\n[anomalies.new_tool]\naction = \"shout\"\n\
         [anomalies.refusal_burst]\naction = \"record\"\ncount = 1\n\
         [anomalies.off_hours_identity_creation]\naction = \"notify\"\ndays = [\"someday\"]\nhours = \"18:00-08:00\"\nutc_offset = \"CET\"\n",
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let e = keygate::config::parse(&path, &text)
        .unwrap_err()
        .to_string();
    for want in [
        "anomalies.flush_interval: must be at least 1s",
        "anomalies.new_tool.action: \"shout\" is not",
        "anomalies.refusal_burst.count: must be at least 2",
        "anomalies.off_hours_identity_creation.days: \"someday\"",
        "anomalies.off_hours_identity_creation.hours: \"18:00-08:00\"",
        "anomalies.off_hours_identity_creation.utc_offset: \"CET\"",
    ] {
        assert!(e.contains(want), "{want:?} not in:\n{e}");
    }
}

#[tokio::test]
async fn baselines_are_written_to_the_store_periodically() {
    let (gw, _up, iss) = start(NEW_TOOL_SUSPENDS).await;
    assert_eq!(call(&gw, &iss, "GET", "a1", "/tools/t/x").await.status, 200);
    // Every second here, while keygate runs: read through a store of our own.
    let store = keygate::store::open_store(&gw.dir.path().join("keygate.db"))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = store.baselines().await.unwrap();
        if let Some((agent, doc)) = rows.first() {
            assert_eq!(agent, "a1");
            assert!(doc.contains("\"t\""), "{doc}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no baseline flushed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn notify_tells_the_approvals_webhook_what_was_seen_against_the_baseline() {
    let hook = RawUpstream::start().await;
    let (gw, _up, iss) = start(&format!(
        "[approvals]\nwebhook_url = {:?}\n[anomalies]\nlearning_period = \"1h\"\n\
         [anomalies.new_operation]\naction = \"notify\"\n",
        hook.url()
    ))
    .await;
    assert_eq!(call(&gw, &iss, "GET", "a1", "/tools/t/x").await.status, 200);
    gw.advance_clock(Duration::from_secs(2 * 3600));
    // A write, never called before: notified, and served (notify only tells).
    assert_eq!(
        call(&gw, &iss, "POST", "a1", "/tools/t/x").await.status,
        200
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while hook.count() == 0 {
        assert!(std::time::Instant::now() < deadline, "no notification");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent: Value = serde_json::from_slice(&hook.requests()[0].body).unwrap();
    assert_eq!(sent["anomaly"]["agent_id"], "a1", "{sent}");
    assert_eq!(sent["anomaly"]["detector"], "new_operation", "{sent}");
    assert_eq!(sent["anomaly"]["action"], "notify", "{sent}");
    assert_eq!(
        sent["anomaly"]["observed"], "first call of operation write",
        "{sent}"
    );
    assert_eq!(
        sent["anomaly"]["baseline"], "1 operations called before",
        "{sent}"
    );
    assert!(
        sent["text"].as_str().unwrap().contains("new_operation"),
        "{sent}"
    );
}

/// A suspension the store refuses to record (here a trigger makes SQLite refuse it) stays
/// in force over every re-read of the store, is recorded once the store takes it, and a
/// human's resume lifts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_the_store_cannot_record_yet_holds_until_it_is_recorded() {
    let (gw, up, iss) = start(NEW_TOOL_SUSPENDS).await;
    assert_eq!(call(&gw, &iss, "GET", "a1", "/tools/t/x").await.status, 200);
    gw.advance_clock(Duration::from_secs(2 * 3600));
    use sqlx::Connection;
    let db = gw.dir.path().join("keygate.db");
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_suspensions BEFORE INSERT ON suspensions \
         BEGIN SELECT RAISE(ABORT, 'the store refuses'); END",
    )
    .execute(&mut c)
    .await
    .unwrap();
    let r = call(&gw, &iss, "GET", "a1", "/tools/u/x").await;
    assert_eq!(r.json()["error"], "agent_suspended", "{}", r.text());
    let before = up.count();
    // Several re-reads of the store (every second) find no suspension there: it holds.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let r = call(&gw, &iss, "GET", "a1", "/tools/t/x").await;
        assert_eq!(r.json()["error"], "agent_suspended", "{}", r.text());
    }
    assert_eq!(up.count(), before);
    // The store takes it again: the suspension is recorded there.
    sqlx::query("DROP TRIGGER refuse_suspensions")
        .execute(&mut c)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, b) = gw.admin("GET", "/agents/suspended", None).await;
        if b["suspended"][0]["by"] == "anomaly:new_tool" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never recorded: {b}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (s, b) = gw.admin("POST", "/agents/a1/resume", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(call(&gw, &iss, "GET", "a1", "/tools/t/x").await.status, 200);
}

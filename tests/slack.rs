//! Approvals decided in Slack: the approval message carries Approve and Deny buttons, and
//! a click comes back as a callback signed with the Slack app's signing secret. keygate
//! decides only on a callback that verifies, is fresh and is new, from a Slack user the
//! configuration maps to an approver who does not own the agent that asked; it then
//! updates the message at Slack's `response_url`. Callbacks are signed here as Slack signs
//! them (its documented algorithm, whose published example the unit tests check).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const KEYS: &str = "/tools/gh/repos/acme/app/keys";
const SECRET: &str = "slack-signing-secret-0f3c9a7b5d1e";

async fn github() -> RawUpstream {
    RawUpstream::with_responder(Arc::new(|r: &Received| {
        if r.head.starts_with("POST ") && r.target().ends_with("/keys") {
            let body = json!({"id": 4242, "title": "ci", "read_only": true});
            return (
                201,
                vec![("content-type".into(), "application/json".into())],
                body.to_string().into_bytes(),
            );
        }
        (200, vec![], b"ok".to_vec())
    }))
    .await
}

struct Env {
    gw: TestGateway,
    up: RawUpstream,
    /// Receives the approval webhook and Slack's message updates.
    slack: RawUpstream,
    iss: TestIssuer,
    client: Client,
}

async fn start() -> Env {
    let up = github().await;
    let slack = RawUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("slack-secret"), SECRET).unwrap();
    let source = secret_file(dir.path(), "gh", "gh-tool-credential-9b1d4e");
    let iss = TestIssuer::new(dir.path(), "slack-issuer", "keygate");
    let cfg = format!(
        "[approvals]\nwebhook_url = \"{0}/webhook\"\n\
         [approvals.slack]\nsigning_secret_file = \"slack-secret\"\n\
         response_url_prefix = \"{0}/\"\n\
         users = {{ U_BOB = \"bob@example.com\", U_ALICE = \"alice@example.com\" }}\n\
         {1}{2}[[tools]]\nname = \"gh\"\nkind = \"github\"\nupstream = {3:?}\n\
         [tools.credential]\nprovider = \"static\"\n{source}",
        slack.url(),
        iss.toml(),
        agent("a1", "alice@example.com"),
        up.url(),
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    Env {
        gw,
        up,
        slack,
        iss,
        client: Client::http1(),
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `v0=<hex HMAC-SHA256(secret, "v0:<ts>:<body>")>`, as Slack signs.
fn sign(secret: &str, ts: i64, body: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, format!("v0:{ts}:{body}").as_bytes());
    format!("v0={}", const_hex::encode(tag))
}

/// A `block_actions` callback: `user` clicked `action` on approval `id`.
fn click(user: &str, action: &str, id: &str, response_url: &str) -> String {
    let payload = json!({
        "type": "block_actions",
        "user": {"id": user, "username": user.to_lowercase(), "team_id": "T1"},
        "actions": [{"action_id": action, "block_id": "keygate_decision", "value": id,
                     "type": "button", "action_ts": "1700000000.000100"}],
        "response_url": response_url,
        "trigger_id": "1.2.3",
    });
    form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish()
}

impl Env {
    async fn create(&self) -> Response {
        let auth = bearer(&self.iss.token("a1"));
        self.client
            .send(
                "POST",
                &self.gw.url(KEYS),
                &[("authorization", &auth), ("content-type", "application/json")],
                json!({"title": "ci", "key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAISlackTest", "read_only": true})
                    .to_string(),
            )
            .await
    }

    /// Posts a callback as Slack would; (status, body).
    async fn callback(&self, body: &str, ts: i64, signature: &str) -> (u16, Value) {
        let r = self
            .client
            .send(
                "POST",
                &format!("http://{}/slack/interactions", self.gw.admin_addr),
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("x-slack-request-timestamp", &ts.to_string()),
                    ("x-slack-signature", signature),
                ],
                body.to_string(),
            )
            .await;
        (r.status, r.json())
    }

    async fn signed(&self, body: &str) -> (u16, Value) {
        let ts = now_secs();
        self.callback(body, ts, &sign(SECRET, ts, body)).await
    }

    async fn approval(&self, id: &str) -> Value {
        self.gw
            .admin("GET", &format!("/approvals/{id}"), None)
            .await
            .1
    }

    /// The requests the Slack stand-in received at `path`, waiting up to 5 s for `n`.
    async fn slack_posts(&self, path: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got: Vec<Value> = self
                .slack
                .requests()
                .iter()
                .filter(|r| r.target() == path)
                .map(|r| serde_json::from_slice(&r.body).unwrap())
                .collect();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The agent's request needs approval; its id.
async fn pending(e: &Env) -> String {
    let r = e.create().await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "approval_required");
    r.json()["approval_id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signed_click_approves_and_the_retry_goes_through_once() {
    let e = start().await;
    let id = pending(&e).await;
    // The approval message has the two buttons, for this approval.
    let msg = &e.slack_posts("/webhook", 1).await[0];
    let buttons: Vec<(&str, &str)> = msg["blocks"][1]["elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["action_id"].as_str().unwrap(),
                b["value"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        buttons,
        [
            ("keygate_approve", id.as_str()),
            ("keygate_deny", id.as_str())
        ]
    );

    let respond_at = format!("{}/actions/T1/1", e.slack.url());
    let (s, b) = e
        .signed(&click("U_BOB", "keygate_approve", &id, &respond_at))
        .await;
    assert_eq!(s, 200, "{b}");
    let a = e.approval(&id).await;
    assert_eq!(a["status"], "approved");
    assert_eq!(a["approver"], "bob@example.com");
    assert_eq!(a["identity_owner"], "alice@example.com");
    // The message is updated where Slack said.
    let update = &e.slack_posts("/actions/T1/1", 1).await[0];
    assert_eq!(update["replace_original"], true);
    let text = update["text"].as_str().unwrap();
    assert!(
        text.contains("approved") && text.contains("bob@example.com"),
        "{text}"
    );

    let r = e.create().await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(e.up.count(), 1);
    let r = e.create().await;
    assert_eq!(r.status, 403, "the approval was used once: {}", r.text());
    assert_eq!(e.up.count(), 1);
    // The decision is in the audit log: who, and from Slack.
    let audit = e.gw.audit().await;
    let decision = audit
        .iter()
        .find(|r| r["admin"]["action"] == "approve")
        .expect("the Slack decision is audited");
    assert_eq!(decision["admin"]["by"], "bob@example.com");
    assert_eq!(decision["path"], "/slack/interactions");
    assert_eq!(decision["admin"]["via"], "slack");
    assert_eq!(decision["admin"]["from"], "Slack user U_BOB");
    assert_eq!(decision["identity"], "slack-signature");
    assert_eq!(decision["approval_id"], id.as_str());
    assert_eq!(decision["operation"], "keygate:approval.approve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_click_denies_too() {
    let e = start().await;
    let id = pending(&e).await;
    let (s, b) = e
        .signed(&click(
            "U_BOB",
            "keygate_deny",
            &id,
            "https://example.com/x",
        ))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(e.approval(&id).await["status"], "denied");
    let r = e.create().await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "approval_denied", "{}", r.text());
    // A response_url outside the configured prefix is never called.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(e.slack.requests().iter().all(|r| r.target() == "/webhook"));
    assert_eq!(e.up.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_stale_and_replayed_callbacks_decide_nothing() {
    let e = start().await;
    let id = pending(&e).await;
    let body = click("U_BOB", "keygate_approve", &id, "");
    let now = now_secs();
    let cases = [
        // Signed with another secret.
        (
            now,
            sign("not-the-signing-secret-at-all", now, &body),
            "bad_signature",
        ),
        // A body changed after signing.
        (
            now,
            sign(SECRET, now, &body.replace("U_BOB", "U_EVE")),
            "bad_signature",
        ),
        // Ten minutes old, and signed then.
        (now - 600, sign(SECRET, now - 600, &body), "stale_request"),
        // No signature.
        (now, String::new(), "bad_signature"),
    ];
    for (ts, sig, code) in cases {
        let (s, b) = e.callback(&body, ts, &sig).await;
        assert_eq!(s, 401, "{b}");
        assert_eq!(b["error"], code, "{b}");
    }
    assert_eq!(e.approval(&id).await["status"], "pending");
    // A valid callback is taken once; the same callback again is refused.
    let sig = sign(SECRET, now, &body);
    let (s, b) = e.callback(&body, now, &sig).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = e.callback(&body, now, &sig).await;
    assert_eq!(s, 401, "{b}");
    assert_eq!(b["error"], "replayed_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_agents_owner_and_unknown_slack_users_cannot_approve() {
    let e = start().await;
    let id = pending(&e).await;
    // Alice owns agent a1: not in Slack, not through the admin API.
    let (s, b) = e
        .signed(&click("U_ALICE", "keygate_approve", &id, ""))
        .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["error"], "separation_of_duties", "{b}");
    let (s, b) =
        e.gw.admin(
            "POST",
            &format!("/approvals/{id}/approve"),
            Some(json!({"approver": "Alice@Example.com", "owner": "carol@example.com"})),
        )
        .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["error"], "separation_of_duties", "{b}");
    // A Slack user the configuration does not name.
    let (s, b) = e
        .signed(&click("U_MALLORY", "keygate_approve", &id, ""))
        .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["error"], "unknown_approver", "{b}");
    assert_eq!(e.approval(&id).await["status"], "pending");
    assert_eq!(e.up.count(), 0);
    // She may still deny her own agent's request.
    let (s, b) = e.signed(&click("U_ALICE", "keygate_deny", &id, "")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(e.approval(&id).await["status"], "denied");
}

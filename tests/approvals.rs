//! The identity-creation gate end to end: approvals (approve, deny, expiry, restart,
//! concurrency, hold mode, webhook), the identity inventory, the CLI against a running
//! gateway, and the admin API's authentication. Every test runs keygate in-process against
//! a recording upstream on loopback that speaks for GitHub (`kind = "github"`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the built-in GitHub catalog calls `POST /repos/{owner}/{repo}/keys`.
const OP: &str = "github:create_deploy_key";
const KIND: &str = "deploy_key";
const GATE: &str = "identity-creation-needs-approval";
const KEYS: &str = "/tools/gh/repos/acme/app/keys";
/// The public half of the deploy key; the tool echoes it back in its answer. It must never
/// reach the inventory or the audit log.
const KEY_MATERIAL: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAprKeyMaterialNeverRecorded";
const KEY_MARK: &str = "AAAAC3NzaC1lZDI1NTE5";
const WAIT: Duration = Duration::from_secs(10);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A GitHub stand-in: `POST …/keys` → `201 {"id": 4242, "key": …, "title": …}` (or `422`
/// when the title is "invalid"); anything else → `200 ok`.
async fn github() -> RawUpstream {
    RawUpstream::with_responder(Arc::new(|r: &Received| {
        let json_ct = vec![("content-type".to_string(), "application/json".to_string())];
        if !(r.head.starts_with("POST ") && r.target().ends_with("/keys")) {
            return (200, vec![], b"ok".to_vec());
        }
        let asked: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        if asked["title"] == "invalid" {
            return (
                422,
                json_ct,
                br#"{"message":"Validation Failed","errors":[{"resource":"PublicKey","code":"custom"}]}"#.to_vec(),
            );
        }
        let body = json!({
            "id": 4242,
            "key": KEY_MATERIAL,
            "url": "https://api.github.com/repos/acme/app/keys/4242",
            "title": asked["title"],
            "verified": true,
            "read_only": true,
        });
        (201, json_ct, body.to_string().into_bytes())
    }))
    .await
}

/// A running keygate with agents `a1`, `a2` and tool `gh` (kind github) in front of
/// [`github`], its credential in a test-specific environment variable.
struct Env {
    gw: TestGateway,
    up: RawUpstream,
    iss: TestIssuer,
    secret: String,
    client: Client,
}

/// Starts keygate; `top` is added before the tool (e.g. an `[approvals]` table),
/// `tool_extra` inside the tool's table.
async fn start(env: &str, top: &str, tool_extra: &str) -> Env {
    start_with_policy(env, top, tool_extra, None).await
}

/// Like [`start`], with `policy` added to the default policies as `extra.cedar`.
async fn start_with_policy(env: &str, top: &str, tool_extra: &str, policy: Option<&str>) -> Env {
    let secret = format!("{}-tool-credential-5d8e1f", env.to_ascii_lowercase());
    let up = github().await;
    let dir = tempfile::tempdir().unwrap();
    let source = secret_file(dir.path(), env, &secret);
    if let Some(policy) = policy {
        std::fs::create_dir_all(dir.path().join("policies")).unwrap();
        std::fs::write(dir.path().join("policies/extra.cedar"), policy).unwrap();
    }
    let iss = TestIssuer::new(dir.path(), "apr-issuer", "keygate");
    let cfg = format!(
        "{top}{}{}{}[[tools]]\nname = \"gh\"\nkind = \"github\"\nupstream = {:?}\n{tool_extra}[tools.credential]\nprovider = \"static\"\n{source}",
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
        secret,
        client: Client::http1(),
    }
}

/// The body of a deploy-key creation with `title`.
fn key_body(title: &str) -> String {
    json!({"title": title, "key": KEY_MATERIAL, "read_only": true}).to_string()
}

impl Env {
    fn token(&self, agent: &str) -> String {
        self.iss.token(agent)
    }

    /// `agent` asks to create a deploy key titled `title` on acme/app.
    async fn create(&self, agent: &str, title: &str) -> Response {
        self.post(agent, KEYS, key_body(title)).await
    }

    async fn post(&self, agent: &str, path: &str, body: String) -> Response {
        let auth = bearer(&self.token(agent));
        self.client
            .send(
                "POST",
                &self.gw.url(path),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await
    }

    async fn get(&self, agent: &str, path: &str) -> Response {
        let auth = bearer(&self.token(agent));
        self.client
            .get(&self.gw.url(path), &[("authorization", &auth)])
            .await
    }

    /// Approves as bob for carol with ticket CHG-1; `extra` overrides or adds fields.
    async fn approve(&self, id: &str, extra: Value) -> (u16, Value) {
        let mut body =
            json!({"approver": "bob@example.com", "owner": "carol@example.com", "ticket": "CHG-1"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.gw
            .admin("POST", &format!("/approvals/{id}/approve"), Some(body))
            .await
    }

    async fn approve_ok(&self, id: &str) -> Value {
        let (s, b) = self.approve(id, json!({})).await;
        assert_eq!(s, 200, "approving {id}: {b}");
        assert_eq!(b["status"], "approved", "{b}");
        b
    }

    async fn deny(&self, id: &str) -> (u16, Value) {
        self.gw
            .admin(
                "POST",
                &format!("/approvals/{id}/deny"),
                Some(json!({"approver": "bob@example.com", "note": "not today"})),
            )
            .await
    }

    async fn approval(&self, id: &str) -> Value {
        let (s, b) = self
            .gw
            .admin("GET", &format!("/approvals/{id}"), None)
            .await;
        assert_eq!(s, 200, "GET /approvals/{id}: {b}");
        b
    }

    async fn approvals(&self, status: &str) -> Vec<Value> {
        let (s, b) = self
            .gw
            .admin("GET", &format!("/approvals?status={status}"), None)
            .await;
        assert_eq!(s, 200, "{b}");
        b["approvals"].as_array().unwrap().clone()
    }

    async fn inventory(&self) -> Vec<Value> {
        let (s, b) = self.gw.admin("GET", "/inventory", None).await;
        assert_eq!(s, 200, "{b}");
        b["identities"].as_array().unwrap().clone()
    }

    /// Stops keygate and starts it again on the same directory and configuration.
    async fn restart(self) -> Env {
        let Env {
            gw,
            up,
            iss,
            secret,
            client,
        } = self;
        Env {
            gw: gw.restart().await,
            up,
            iss,
            secret,
            client,
        }
    }

    /// Waits until exactly one approval is pending and returns it (for held requests).
    async fn wait_pending(&self) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let list = self.approvals("pending").await;
            if let [one] = list.as_slice() {
                return one.clone();
            }
            assert!(list.len() < 2, "more than one pending approval: {list:?}");
            assert!(Instant::now() < deadline, "no approval became pending");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The audit records of calls (the admin API's decisions are audited too, apart).
fn calls(records: Vec<Value>) -> Vec<Value> {
    records
        .into_iter()
        .filter(|r| r.get("admin").is_none())
        .collect()
}

/// Asserts `r` is `403 approval_required` with the documented body; returns its approval id.
#[track_caller]
fn approval_id(r: &Response) -> String {
    assert_eq!(r.status, 403, "{}", r.text());
    let b = r.json();
    assert_eq!(b["error"], "approval_required", "{b}");
    let id = b["approval_id"].as_str().expect("approval_id").to_string();
    assert!(
        id.starts_with("apr_") && id.len() == 24,
        "approval id {id:?}"
    );
    assert!(
        b["message"].as_str().unwrap().contains(&id),
        "the message names the approval: {b}"
    );
    assert!(
        b["request_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{b}"
    );
    id
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------- approve, retry, audit

#[tokio::test]
async fn an_approval_lets_exactly_that_request_through_once() {
    let e = start("APR_ONCE_SECRET", "", "").await;
    let mut sent = 0;

    // The agent asks; nothing reaches the tool; retries share the approval.
    let r = e.create("a1", "ci").await;
    sent += 1;
    let id = approval_id(&r);
    let msg = r.json()["message"].as_str().unwrap().to_string();
    assert!(msg.contains(KIND) && msg.contains("\"gh\""), "{msg}");
    for _ in 0..3 {
        assert_eq!(approval_id(&e.create("a1", "ci").await), id);
        sent += 1;
    }
    assert_eq!(
        e.up.count(),
        0,
        "a request needing approval reached the tool"
    );

    let a = e.approval(&id).await;
    assert_eq!(a["status"], "pending", "{a}");
    assert_eq!(a["agent_id"], "a1");
    assert_eq!(a["agent_owner"], "alice@example.com");
    assert_eq!(a["tool"], "gh");
    assert_eq!(a["operation"], OP);
    assert_eq!(a["identity_kind"], KIND);
    assert_eq!(a["method"], "POST");
    assert!(
        a["path"]
            .as_str()
            .unwrap()
            .ends_with("/repos/acme/app/keys"),
        "{a}"
    );
    assert!(strs(&a["policies"]).contains(&GATE.to_string()), "{a}");
    // The approver sees what is approved: the body as it will be forwarded.
    let seen = a["request"].as_str().unwrap_or_default();
    assert!(
        seen.contains("\"read_only\":true") && seen.contains("\"title\":\"ci\""),
        "{a}"
    );

    // A different body, repository, query or agent is a different request.
    // Same length, one byte apart: the digest covers the content, not just its size.
    let other_body = approval_id(&e.create("a1", "cd").await);
    let other_repo = approval_id(
        &e.post("a1", "/tools/gh/repos/acme/web/keys", key_body("ci"))
            .await,
    );
    let other_query = approval_id(&e.post("a1", &format!("{KEYS}?x=1"), key_body("ci")).await);
    let other_agent = approval_id(&e.create("a2", "ci").await);
    sent += 4;
    // Methods are matched case-insensitively: a lowercase `post` is gated too.
    let auth = bearer(&e.token("a1"));
    let r = e
        .client
        .send(
            "post",
            &e.gw.url(KEYS),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            key_body("ci"),
        )
        .await;
    let lowercase = approval_id(&r);
    sent += 1;
    let all: BTreeSet<&String> = [
        &id,
        &other_body,
        &other_repo,
        &other_query,
        &other_agent,
        &lowercase,
    ]
    .into_iter()
    .collect();
    assert_eq!(all.len(), 6, "distinct requests share an approval: {all:?}");
    assert_eq!(e.approvals("pending").await.len(), 6);

    // Approved: a1's approval is not a2's.
    let approved = e.approve_ok(&id).await;
    assert_eq!(approved["approver"], "bob@example.com");
    assert_eq!(approved["identity_owner"], "carol@example.com");
    assert_eq!(approved["ticket"], "CHG-1");
    assert_eq!(approval_id(&e.create("a2", "ci").await), other_agent);
    sent += 1;
    assert_eq!(e.up.count(), 0);

    // The identical retry goes through, with keygate's credential and the body unchanged.
    let r = e.create("a1", "ci").await;
    sent += 1;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["id"], 4242);
    assert_eq!(e.up.count(), 1);
    let got = &e.up.requests()[0];
    assert_eq!(got.target(), "/repos/acme/app/keys");
    assert!(got.head.starts_with("POST "), "{}", got.head);
    assert_eq!(
        got.header("authorization"),
        Some(format!("Bearer {}", e.secret))
    );
    assert_eq!(got.body, key_body("ci").into_bytes());
    assert_eq!(e.approval(&id).await["status"], "used");

    // Used up: the next identical request needs a new approval and reaches nothing.
    let r = e.create("a1", "ci").await;
    sent += 1;
    let next = approval_id(&r);
    assert_ne!(next, id);
    assert!(!all.contains(&next));
    assert_eq!(
        e.up.count(),
        1,
        "a used approval let a second request through"
    );
    // The others are untouched.
    for other in [
        &other_body,
        &other_repo,
        &other_query,
        &other_agent,
        &lowercase,
    ] {
        assert_eq!(e.approval(other).await["status"], "pending");
    }

    // The decision is audited: who, through what (the admin token, from the API).
    let all = e.gw.audit().await;
    let decision: Vec<&Value> = all.iter().filter(|r| r.get("admin").is_some()).collect();
    assert_eq!(decision.len(), 1, "{decision:#?}");
    assert_eq!(decision[0]["admin"]["action"], "approve");
    assert_eq!(decision[0]["admin"]["by"], "bob@example.com");
    assert_eq!(decision[0]["admin"]["via"], "api");
    assert_eq!(decision[0]["admin"]["from"], "admin token from 127.0.0.1");
    assert_eq!(decision[0]["identity"], "admin-token");
    assert_eq!(decision[0]["approval_id"], id.as_str());
    assert_eq!(decision[0]["operation"], "keygate:approval.approve");

    // Audit: one record per request; the forwarded one is "allow" with the approval.
    let audit = calls(all);
    assert_eq!(audit.len(), sent, "{audit:#?}");
    let mine: Vec<&Value> = audit.iter().filter(|r| r["approval_id"] == id).collect();
    assert_eq!(
        mine.len(),
        5,
        "4 refusals and the forwarded request: {mine:#?}"
    );
    let allowed: Vec<&&Value> = mine.iter().filter(|r| r["decision"] == "allow").collect();
    assert_eq!(allowed.len(), 1, "{mine:#?}");
    let rec = allowed[0];
    assert_eq!(rec["status"], 201, "{rec}");
    assert_eq!(rec["operation"], OP, "{rec}");
    assert_eq!(rec["identity_kind"], KIND, "{rec}");
    assert_eq!(rec["agent_id"], "a1");
    assert_eq!(rec["tool"], "gh");
    assert!(
        strs(&rec["tags"]).contains(&"identity_creation".to_string()),
        "{rec}"
    );
    assert!(strs(&rec["policies"]).contains(&GATE.to_string()), "{rec}");
    // ...and the permit that allowed it once approved.
    assert!(
        strs(&rec["policies"]).contains(&"agents-may-call-tools".to_string()),
        "{rec}"
    );
    assert!(
        rec["inventory_id"]
            .as_str()
            .is_some_and(|s| s.starts_with("idn_")),
        "{rec}"
    );
    assert!(rec["error"].is_null(), "{rec}");
    for r in audit.iter().filter(|r| r["decision"] != "allow") {
        assert_eq!(r["decision"], "needs_approval", "{r}");
        assert_eq!(r["status"], 403, "{r}");
        assert_eq!(r["error"], "approval_required", "{r}");
        assert_eq!(r["operation"], OP, "{r}");
        assert!(
            strs(&r["tags"]).contains(&"identity_creation".to_string()),
            "{r}"
        );
        assert_eq!(strs(&r["policies"]), vec![GATE.to_string()], "{r}");
        assert!(r["approval_id"].as_str().is_some(), "{r}");
        assert!(r["inventory_id"].is_null(), "{r}");
    }
    assert_eq!(audit.iter().filter(|r| r["decision"] == "allow").count(), 1);
}

#[tokio::test]
async fn another_spelling_of_the_same_path_is_the_same_request() {
    let e = start("APR_CANON_SECRET", "", "").await;
    let id = approval_id(&e.create("a1", "ci").await);
    for variant in [
        "/tools/gh/repos/acme/./app//keys",
        "/tools/gh/repos/acme/%61pp/keys",
        "/tools/gh/repos/acme/web/../app/keys",
    ] {
        let r = e.post("a1", variant, key_body("ci")).await;
        assert_eq!(approval_id(&r), id, "{variant}");
    }
    assert_eq!(e.up.count(), 0);
    e.approve_ok(&id).await;
    let r = e
        .post("a1", "/tools/gh/repos/acme/./app//keys", key_body("ci"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    // What was approved is what the tool got: the canonical path.
    assert_eq!(e.up.requests()[0].target(), "/repos/acme/app/keys");
    assert_ne!(approval_id(&e.create("a1", "ci").await), id);
    assert_eq!(e.up.count(), 1);
}

#[tokio::test]
async fn a_preapproving_policy_lets_its_requests_through_and_records_them() {
    let policy = r#"
@id("a2-may-add-ci-deploy-keys")
@preapproved
permit (principal == Agent::"a2", action == Action::"github:create_deploy_key", resource == Tool::"gh")
when { context.path like "/repos/acme/ci-*" };
"#;
    let e = start_with_policy("APR_PREAPPROVED_SECRET", "", "", Some(policy)).await;
    let ci_keys = "/tools/gh/repos/acme/ci-app/keys";
    let r = e.post("a2", ci_keys, key_body("ci")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(e.up.count(), 1);
    // Outside the policy: a human decides.
    approval_id(&e.create("a2", "ci").await);
    approval_id(&e.post("a1", ci_keys, key_body("ci")).await);
    assert_eq!(e.up.count(), 1);

    let inv = e.inventory().await;
    assert_eq!(inv.len(), 1, "{inv:?}");
    let i = &inv[0];
    assert_eq!(i["kind"], KIND);
    assert_eq!(i["identifier"], "4242");
    assert_eq!(i["agent_id"], "a2");
    assert_eq!(i["owner"], "dave@example.com", "the agent's owner owns it");
    assert!(i["approval_id"].is_null(), "{i}");
    assert!(i["ticket"].is_null(), "{i}");
    let approver = i["approver"].as_str().unwrap();
    assert!(
        approver.starts_with("policy:") && approver.contains("a2-may-add-ci-deploy-keys"),
        "{i}"
    );
    let audit = calls(e.gw.audit().await);
    let rec = audit.iter().find(|r| r["decision"] == "allow").unwrap();
    assert!(rec["approval_id"].is_null(), "{rec}");
    assert_eq!(rec["inventory_id"], i["id"]);
    assert!(
        strs(&rec["policies"]).contains(&"a2-may-add-ci-deploy-keys".to_string()),
        "{rec}"
    );
}

/// A gate annotated `@approvers("2")`: one approval is not enough, the same approver twice
/// is refused, a second, different one lets the request through, once.
#[tokio::test]
async fn a_gate_can_require_two_different_approvers() {
    let policy = r#"
@id("deploy-keys-need-two")
@approval("two humans approve a deploy key")
@approvers("2")
forbid (principal, action == Action::"github:create_deploy_key", resource)
unless { context.approved };
"#;
    let e = start_with_policy("APR_TWO_SECRET", "", "", Some(policy)).await;
    let id = approval_id(&e.create("a1", "ci").await);
    assert_eq!(e.approval(&id).await["approvers_needed"], 2);
    let (s, first) = e.approve(&id, json!({})).await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(first["status"], "pending");
    assert_eq!(first["first_approver"], "bob@example.com");
    let r = e.create("a1", "ci").await;
    assert_eq!(r.status, 403, "one approval of two lets nothing through");
    assert_eq!(e.up.count(), 0);
    let (s, b) = e.approve(&id, json!({"approver": "Bob@Example.com"})).await;
    assert_eq!((s, b["error"].as_str()), (409, Some("conflict")), "{b}");
    let (s, b) = e
        .approve(&id, json!({"approver": "erin@example.com"}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "approved");
    assert_eq!(b["approver"], "erin@example.com");
    let r = e.create("a1", "ci").await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(e.create("a1", "ci").await.status, 403, "used once");
    assert_eq!(e.up.count(), 1);
    let audit = e.gw.audit().await;
    let approvals: Vec<(&str, &str)> = audit
        .iter()
        .filter(|r| r["admin"]["action"] == "approve")
        .map(|r| {
            (
                r["admin"]["by"].as_str().unwrap(),
                r["admin"]["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        approvals,
        [
            ("bob@example.com", "first of two approvals"),
            ("erin@example.com", "")
        ]
    );

    // Anything but "1" or "2", or on another policy than an @approval forbid, is refused.
    for bad in [
        "@id(\"x\")\n@approval(\"x\")\n@approvers(\"3\")\nforbid (principal, action, resource) unless { context.approved };",
        "@id(\"x\")\n@approvers(\"2\")\npermit (principal, action, resource);",
    ] {
        std::fs::write(e.gw.dir.path().join("policies/extra.cedar"), bad).unwrap();
        let (s, b) = e.gw.admin("POST", "/reload", None).await;
        assert_eq!(s, 422, "{b}");
        assert!(b["message"].as_str().unwrap().contains("@approvers"), "{b}");
    }
}

#[tokio::test]
async fn the_approve_endpoint_checks_its_input_and_the_state() {
    let e = start("APR_INPUT_SECRET", "", "").await;
    let id = approval_id(&e.create("a1", "ci").await);
    let bad = [
        json!({"approver": "", "owner": "carol@example.com"}),
        json!({"approver": "bob@example.com", "owner": " "}),
        json!({"approver": "bob@example.com"}),
        json!({"approver": "bob@example.com", "owner": "o", "expires_in": "soon"}),
        json!({"approver": "bob@example.com", "owner": "o", "review_in": "later"}),
        json!({"approver": "bob@example.com", "owner": "o", "approved": true}),
    ];
    for body in bad {
        let (s, b) =
            e.gw.admin(
                "POST",
                &format!("/approvals/{id}/approve"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, 400, "{body} → {b}");
        assert_eq!(b["error"], "bad_request", "{b}");
    }
    assert_eq!(e.approval(&id).await["status"], "pending");
    let (s, b) = e.approve("apr_00000000000000000000", json!({})).await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(
        e.gw.admin("GET", "/approvals/apr_00000000000000000000", None)
            .await
            .0,
        404
    );
    let (s, b) = e.gw.admin("GET", "/approvals?status=maybe", None).await;
    assert_eq!(s, 400, "{b}");

    e.approve_ok(&id).await;
    // Decided once: neither approved again nor denied.
    let (s, b) = e.approve(&id, json!({})).await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["error"], "conflict");
    let (s, b) = e.deny(&id).await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(e.approval(&id).await["status"], "approved");
    assert_eq!(e.up.count(), 0);
}

// ---------------------------------------------------------------- deny

#[tokio::test]
async fn a_denied_request_stays_refused() {
    let e = start("APR_DENY_SECRET", "", "").await;
    let id = approval_id(&e.create("a1", "ci").await);
    let (s, b) = e.deny(&id).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "denied");
    let a = e.approval(&id).await;
    assert_eq!(a["status"], "denied", "{a}");
    assert_eq!(a["approver"], "bob@example.com");
    assert_eq!(a["note"], "not today");
    assert!(a["decided_at"].as_i64().is_some(), "{a}");
    let denied: Vec<String> = e
        .approvals("denied")
        .await
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(denied, vec![id.clone()]);

    // The denial stands for this request: the agent is told, no new approval is opened.
    for _ in 0..2 {
        let r = e.create("a1", "ci").await;
        assert_eq!(r.status, 403, "{}", r.text());
        let b = r.json();
        assert_eq!(b["error"], "approval_denied", "{b}");
        assert_eq!(b["approval_id"], id, "{b}");
    }
    assert!(e.approvals("pending").await.is_empty());
    // Another request is another question.
    let r = e.create("a1", "cd").await;
    assert_eq!(r.json()["error"], "approval_required", "{}", r.text());
    assert_eq!(e.up.count(), 0, "a denied request reached the tool");
    // A denial is final.
    let (s, b) = e.approve(&id, json!({})).await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(e.approval(&id).await["status"], "denied");
    assert!(e.inventory().await.is_empty());
}

// ---------------------------------------------------------------- expiry

#[tokio::test]
async fn a_granted_approval_expires_after_approval_ttl() {
    let e = start("APR_TTL_SECRET", "[approvals]\napproval_ttl = \"1s\"\n", "").await;
    let short = approval_id(&e.create("a1", "short").await);
    let long = approval_id(&e.create("a1", "long").await);
    let a = e.approve_ok(&short).await;
    let ttl = a["approval_expires_at"].as_i64().unwrap() - a["decided_at"].as_i64().unwrap();
    assert_eq!(ttl, 1000, "{a}");
    // The approver may give longer than the default.
    let (s, b) = e.approve(&long, json!({"expires_in": "1h"})).await;
    assert_eq!(s, 200, "{b}");
    let ttl = b["approval_expires_at"].as_i64().unwrap() - b["decided_at"].as_i64().unwrap();
    assert_eq!(ttl, 3_600_000, "{b}");

    e.gw.advance_clock(Duration::from_millis(1200));

    let r = e.create("a1", "short").await;
    let again = approval_id(&r);
    assert_ne!(again, short, "an expired approval was handed out again");
    assert_eq!(e.up.count(), 0, "an expired approval let a request through");
    assert_eq!(e.approval(&short).await["status"], "expired");
    let (s, b) = e.approve(&short, json!({})).await;
    assert_eq!(s, 409, "approving an expired approval: {b}");
    assert_eq!(b["error"], "conflict");

    let r = e.create("a1", "long").await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(e.up.count(), 1);
}

#[tokio::test]
async fn an_undecided_approval_expires_after_pending_ttl() {
    let e = start(
        "APR_PENDING_SECRET",
        "[approvals]\npending_ttl = \"1s\"\n",
        "",
    )
    .await;
    let id = approval_id(&e.create("a1", "ci").await);
    let a = e.approval(&id).await;
    assert_eq!(
        a["pending_expires_at"].as_i64().unwrap() - a["created_at"].as_i64().unwrap(),
        1000,
        "{a}"
    );
    e.gw.advance_clock(Duration::from_millis(1200));

    assert_eq!(e.approval(&id).await["status"], "expired");
    assert!(e.approvals("pending").await.is_empty());
    let expired = e.approvals("expired").await;
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0]["id"], id);
    let (s, b) = e.approve(&id, json!({})).await;
    assert_eq!(s, 409, "approving an expired approval: {b}");
    assert_eq!(b["error"], "conflict");
    let (s, _) = e.deny(&id).await;
    assert_eq!(s, 409);

    let again = approval_id(&e.create("a1", "ci").await);
    assert_ne!(again, id);
    assert_eq!(e.approval(&again).await["status"], "pending");
    assert_eq!(e.up.count(), 0);
}

#[tokio::test]
async fn a_pending_approval_past_its_ttl_cannot_be_approved_even_unlisted() {
    // The approve endpoint itself expires it (no listing in between).
    let e = start(
        "APR_PENDING2_SECRET",
        "[approvals]\npending_ttl = \"1s\"\n",
        "",
    )
    .await;
    let id = approval_id(&e.create("a1", "ci").await);
    e.gw.advance_clock(Duration::from_millis(1200));
    let (s, b) = e.approve(&id, json!({})).await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(e.approval(&id).await["status"], "expired");
    let again = approval_id(&e.create("a1", "ci").await);
    assert_ne!(again, id);
    assert_eq!(e.up.count(), 0);
}

// ---------------------------------------------------------------- restart

#[tokio::test]
async fn approvals_survive_a_restart() {
    let e = start("APR_RESTART_SECRET", "", "").await;
    let pending = approval_id(&e.create("a1", "pending-one").await);
    let approved = approval_id(&e.create("a1", "approved-one").await);
    e.approve_ok(&approved).await;
    let token_before = e.gw.runtime.shared.admin_token.clone();
    let old_addr = e.gw.addr;

    let e = e.restart().await;
    assert_ne!(e.gw.addr, old_addr, "a new listener");
    assert_eq!(e.gw.runtime.shared.admin_token, token_before);

    let listed = e.approvals("pending").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], pending);
    assert_eq!(e.approval(&approved).await["status"], "approved");
    // The pending request keeps its id across the restart.
    assert_eq!(approval_id(&e.create("a1", "pending-one").await), pending);
    assert_eq!(e.up.count(), 0);

    // The approved one goes through once.
    let r = e.create("a1", "approved-one").await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(e.up.count(), 1);
    let next = approval_id(&e.create("a1", "approved-one").await);
    assert_ne!(next, approved);
    assert_eq!(e.up.count(), 1);
    let inv = e.inventory().await;
    assert_eq!(inv.len(), 1);
    assert_eq!(inv[0]["approval_id"], approved);
}

// ---------------------------------------------------------------- concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_retries_forward_one() {
    let e = start("APR_RACE_SECRET", "", "").await;
    let id = approval_id(&e.create("a1", "ci").await);
    e.approve_ok(&id).await;

    let url = e.gw.url(KEYS);
    let auth = bearer(&e.token("a1"));
    let start_line = Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (url, auth, start_line) = (url.clone(), auth.clone(), start_line.clone());
            tokio::spawn(async move {
                // A connection each, so the requests really are concurrent.
                let c = Client::http1();
                start_line.wait().await;
                let r = c
                    .send(
                        "POST",
                        &url,
                        &[
                            ("authorization", &auth),
                            ("content-type", "application/json"),
                        ],
                        key_body("ci"),
                    )
                    .await;
                (r.status, r.json())
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let ok: Vec<_> = results
        .iter()
        .filter(|(s, _)| (200..300).contains(s))
        .collect();
    let refused: Vec<_> = results.iter().filter(|(s, _)| *s == 403).collect();
    assert_eq!(ok.len(), 1, "{results:?}");
    assert_eq!(refused.len(), 19, "{results:?}");
    assert_eq!(e.up.count(), 1, "the tool got more than one request");
    let new_ids: BTreeSet<&str> = refused
        .iter()
        .map(|(_, b)| {
            assert_eq!(b["error"], "approval_required", "{b}");
            b["approval_id"].as_str().unwrap_or("")
        })
        .collect();
    assert!(!new_ids.contains(id.as_str()), "{new_ids:?}");
    assert_eq!(e.approval(&id).await["status"], "used");
    assert_eq!(e.inventory().await.len(), 1);
    let audit = calls(e.gw.audit().await);
    assert_eq!(audit.iter().filter(|r| r["decision"] == "allow").count(), 1);
}

// ---------------------------------------------------------------- hold mode

const HOLD: &str = "approval = \"hold\"\nhold_timeout = \"30s\"\n";

/// Sends the deploy-key creation in a task (it is held) and returns its handle.
fn held(e: &Env, title: &str) -> tokio::task::JoinHandle<(Response, Duration)> {
    let (url, auth, body, c) = (
        e.gw.url(KEYS),
        bearer(&e.token("a1")),
        key_body(title),
        e.client.clone(),
    );
    tokio::spawn(async move {
        let t0 = Instant::now();
        let r = c
            .send(
                "POST",
                &url,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await;
        (r, t0.elapsed())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_request_completes_when_approved() {
    let e = start("APR_HOLD_OK_SECRET", "", HOLD).await;
    let task = held(&e, "ci");
    let a = e.wait_pending().await;
    let id = a["id"].as_str().unwrap().to_string();
    assert_eq!(a["operation"], OP);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!task.is_finished(), "the request was not held");
    assert_eq!(e.up.count(), 0);

    let decided = Instant::now();
    e.approve_ok(&id).await;
    let (r, _) = tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["id"], 4242);
    assert!(
        decided.elapsed() < Duration::from_secs(3),
        "the held request was answered {:?} after the approval",
        decided.elapsed()
    );
    assert_eq!(e.up.count(), 1);
    assert_eq!(e.approval(&id).await["status"], "used");
    let inv = e.inventory().await;
    assert_eq!(inv.len(), 1);
    assert_eq!(inv[0]["approval_id"], id);
    let audit = calls(e.gw.audit().await);
    assert_eq!(audit.len(), 1, "{audit:#?}");
    assert_eq!(audit[0]["decision"], "allow");
    assert_eq!(audit[0]["approval_id"], id);
    assert_eq!(audit[0]["status"], 201);
}

/// An agent suspended while its request waits for approval: the approval, once given,
/// is not spent on it and nothing is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_request_of_an_agent_suspended_meanwhile_is_refused() {
    let e = start("APR_HOLD_SUSPENDED_SECRET", "", HOLD).await;
    let task = held(&e, "ci");
    let id = e.wait_pending().await["id"].as_str().unwrap().to_string();
    let (s, b) =
        e.gw.admin("POST", "/agents/a1/suspend", Some(json!({"by": "sec"})))
            .await;
    assert_eq!(s, 200, "{b}");
    e.approve_ok(&id).await;
    let (r, _) = tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "agent_suspended", "{}", r.text());
    assert_eq!(e.up.count(), 0);
    assert_eq!(
        e.approval(&id).await["status"],
        "approved",
        "the approval was spent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_request_is_refused_when_denied() {
    let e = start("APR_HOLD_NO_SECRET", "", HOLD).await;
    let task = held(&e, "ci");
    let id = e.wait_pending().await["id"].as_str().unwrap().to_string();
    let (s, b) = e.deny(&id).await;
    assert_eq!(s, 200, "{b}");
    let (r, _) = tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "approval_denied", "{}", r.text());
    assert_eq!(r.json()["approval_id"], id);
    assert_eq!(e.up.count(), 0);
    assert!(e.inventory().await.is_empty());
    let audit = calls(e.gw.audit().await);
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["error"], "approval_denied");
    assert_ne!(audit[0]["decision"], "allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_request_times_out_as_approval_required() {
    let e = start(
        "APR_HOLD_TIMEOUT_SECRET",
        "",
        "approval = \"hold\"\nhold_timeout = \"300ms\"\n",
    )
    .await;
    let (r, took) = tokio::time::timeout(WAIT, held(&e, "ci"))
        .await
        .unwrap()
        .unwrap();
    let id = approval_id(&r);
    assert!(
        took >= Duration::from_millis(300),
        "answered after {took:?}"
    );
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    assert_eq!(e.approval(&id).await["status"], "pending");
    assert_eq!(e.up.count(), 0);
    // The same request waits on the same approval.
    let (r, _) = held(&e, "ci").await.unwrap();
    assert_eq!(approval_id(&r), id);
}

// ---------------------------------------------------------------- webhook

#[tokio::test]
async fn a_new_pending_approval_is_posted_to_the_webhook_once() {
    let hook = RawUpstream::start().await;
    let top = format!("[approvals]\nwebhook_url = \"{}/hook\"\n", hook.url());
    let e = start("APR_HOOK_SECRET", &top, "").await;
    let id = approval_id(&e.create("a1", "ci").await);

    let deadline = Instant::now() + WAIT;
    while hook.count() < 1 {
        assert!(Instant::now() < deadline, "the webhook was not called");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let post = hook.requests()[0].clone();
    assert!(post.head.starts_with("POST /hook "), "{}", post.head);
    assert!(
        post.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{}",
        post.head
    );
    let b: Value = serde_json::from_slice(&post.body).unwrap();
    let text = b["text"].as_str().unwrap();
    for want in [id.as_str(), "a1", OP] {
        assert!(text.contains(want), "{want:?} not in {text:?}");
    }
    assert_eq!(b["approval_id"], id);
    assert_eq!(b["agent_id"], "a1");
    assert_eq!(b["tool"], "gh");
    assert_eq!(b["operation"], OP);
    assert_eq!(b["identity_kind"], KIND);
    let raw = String::from_utf8_lossy(&post.raw);
    assert!(
        !raw.contains(&e.secret),
        "the tool credential was sent to the webhook"
    );
    assert!(
        !raw.contains(KEY_MARK),
        "the request body was sent to the webhook"
    );

    // Retries are the same approval: no new message.
    for _ in 0..3 {
        assert_eq!(approval_id(&e.create("a1", "ci").await), id);
    }
    // A different request is a new approval: one new message.
    let second = approval_id(&e.create("a1", "other").await);
    while hook.count() < 2 {
        assert!(
            Instant::now() < deadline,
            "the second approval was not posted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Anything the retries would have sent has had time to arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let posted: Vec<String> = hook
        .requests()
        .iter()
        .map(|p| {
            let b: Value = serde_json::from_slice(&p.body).unwrap();
            b["approval_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(posted.len(), 2, "{posted:?}");
    assert_eq!(
        posted.iter().collect::<BTreeSet<_>>(),
        [&id, &second].into_iter().collect::<BTreeSet<_>>()
    );
    assert_eq!(e.up.count(), 0);
}

// ---------------------------------------------------------------- inventory

#[tokio::test]
async fn an_approved_creation_is_recorded_in_the_inventory() {
    let e = start("APR_INV_SECRET", "", "").await;
    assert!(e.inventory().await.is_empty());
    let id = approval_id(&e.create("a1", "ci").await);
    let (s, a) = e
        .approve(
            &id,
            json!({"approver": "bob@example.com", "owner": "carol@example.com",
                   "ticket": "CHG-1042", "note": "rotating CI", "review_in": "30d"}),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    let before = now_ms();
    let r = e.create("a1", "ci").await;
    let after = now_ms();
    assert_eq!(r.status, 201, "{}", r.text());
    // The agent gets the tool's answer unchanged (the key it registered included).
    assert_eq!(r.json()["key"], KEY_MATERIAL);

    let inv = e.inventory().await;
    assert_eq!(inv.len(), 1, "{inv:?}");
    let i = &inv[0];
    assert!(i["id"].as_str().unwrap().starts_with("idn_"), "{i}");
    assert_eq!(i["kind"], KIND, "{i}");
    assert_eq!(i["tool"], "gh");
    assert_eq!(i["operation"], OP);
    assert_eq!(i["identifier"], "4242");
    assert_eq!(i["agent_id"], "a1");
    assert_eq!(i["approver"], "bob@example.com");
    assert_eq!(i["owner"], "carol@example.com");
    assert_eq!(i["ticket"], "CHG-1042");
    assert_eq!(i["approval_id"], id);
    let created = i["created_at"].as_i64().unwrap();
    assert!((before..=after).contains(&created), "{i}");
    let thirty_days = 30 * 24 * 3600 * 1000_i64;
    let review_by = i["review_by"].as_i64().unwrap();
    assert!(
        (review_by - (created + thirty_days)).abs() < 60_000,
        "review_by {review_by} is not 30 days after {created}"
    );

    // The audit record points at it; neither holds the key, the agent token or the
    // tool credential.
    let audit = calls(e.gw.audit().await);
    let rec = audit.iter().find(|r| r["decision"] == "allow").unwrap();
    assert_eq!(rec["inventory_id"], i["id"]);
    assert_eq!(rec["request_id"], i["request_id"]);
    let inventory_text = e.gw.admin("GET", "/inventory", None).await.1.to_string();
    let audit_text = std::fs::read_to_string(&e.gw.audit_path).unwrap();
    for (what, secret) in [
        ("key material", KEY_MARK),
        ("tool credential", e.secret.as_str()),
        ("agent token", &e.token("a1")[..40]),
    ] {
        assert!(!inventory_text.contains(secret), "{what} in the inventory");
        assert!(!audit_text.contains(secret), "{what} in the audit log");
    }
}

#[tokio::test]
async fn an_approval_without_review_in_uses_review_after() {
    let e = start(
        "APR_REVIEW_SECRET",
        "[approvals]\nreview_after = \"7d\"\n",
        "",
    )
    .await;
    let id = approval_id(&e.create("a1", "ci").await);
    let (s, a) = e
        .approve(
            &id,
            json!({"approver": "bob@example.com", "owner": "carol@example.com", "ticket": null}),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(e.create("a1", "ci").await.status, 201);
    let inv = e.inventory().await;
    assert_eq!(inv.len(), 1);
    let i = &inv[0];
    assert!(i["ticket"].is_null(), "{i}");
    let week = 7 * 24 * 3600 * 1000_i64;
    let d = i["review_by"].as_i64().unwrap() - i["created_at"].as_i64().unwrap();
    assert!((d - week).abs() < 60_000, "{i}");
}

#[tokio::test]
async fn a_failed_creation_records_nothing() {
    let e = start("APR_FAIL_SECRET", "", "").await;
    let id = approval_id(&e.create("a1", "invalid").await);
    e.approve_ok(&id).await;
    let r = e.create("a1", "invalid").await;
    assert_eq!(
        r.status,
        422,
        "the tool's refusal is passed on: {}",
        r.text()
    );
    assert_eq!(r.json()["message"], "Validation Failed");
    assert_eq!(e.up.count(), 1);
    assert!(
        e.inventory().await.is_empty(),
        "a failed creation was recorded"
    );
    let audit = calls(e.gw.audit().await);
    let rec = audit.iter().find(|r| r["status"] == 422).unwrap();
    assert_eq!(rec["decision"], "allow");
    assert_eq!(rec["approval_id"], id);
    assert!(rec["inventory_id"].is_null(), "{rec}");
}

// ---------------------------------------------------------------- CLI

/// Runs `keygate ARGS` against the gateway's admin API.
async fn cli(gw: &TestGateway, args: &[&str]) -> Cli {
    gw.cli(args).await
}

async fn cli_with(gw: &TestGateway, url: &str, token: &str, args: &[&str]) -> Cli {
    gw.cli_with(url, token, args).await
}

#[track_caller]
fn succeeded(c: &Cli) -> &str {
    assert!(c.ok, "the CLI failed:\n{}\n{}", c.stdout, c.stderr);
    &c.stdout
}

#[tokio::test]
async fn cli_lists_shows_approves_and_denies() {
    let e = start("APR_CLI_SECRET", "", "").await;
    let id = approval_id(&e.create("a1", "ci").await);

    let out = cli(&e.gw, &["approvals", "list", "--status", "pending"]).await;
    let table = succeeded(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATUS"),
        "{table}"
    );
    for want in [
        id.as_str(),
        "pending",
        "a1",
        "alice@example.com",
        "gh",
        OP,
        KIND,
    ] {
        assert!(lines[1].contains(want), "{want:?} not in {table}");
    }
    let out = cli(&e.gw, &["approvals", "list", "--status", "approved"]).await;
    assert_eq!(succeeded(&out).lines().count(), 1, "header only");

    let out = cli(&e.gw, &["approvals", "list", "--json"]).await;
    let list: Value = serde_json::from_str(succeeded(&out)).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["status"], "pending");

    let out = cli(&e.gw, &["approvals", "show", &id]).await;
    let shown: Value = serde_json::from_str(succeeded(&out)).unwrap();
    assert_eq!(shown["id"], id);
    assert_eq!(shown["operation"], OP);
    assert_eq!(shown["status"], "pending");

    let out = cli(
        &e.gw,
        &[
            "approvals",
            "approve",
            &id,
            "--approver",
            "a",
            "--owner",
            "o",
            "--ticket",
            "T-1",
        ],
    )
    .await;
    assert!(
        succeeded(&out).contains(&format!("approved {id}")),
        "{}",
        out.stdout
    );
    let shown = e.approval(&id).await;
    assert_eq!(shown["status"], "approved");
    assert_eq!(shown["approver"], "a");
    assert_eq!(shown["identity_owner"], "o");
    assert_eq!(shown["ticket"], "T-1");
    let r = e.create("a1", "ci").await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(e.up.count(), 1);

    // Approving it again is refused with the reason.
    let out = cli(
        &e.gw,
        &[
            "approvals",
            "approve",
            &id,
            "--approver",
            "a",
            "--owner",
            "o",
        ],
    )
    .await;
    assert!(!out.ok, "{}", out.stdout);
    assert!(out.stderr.contains("conflict"), "{}", out.stderr);

    let other = approval_id(&e.create("a1", "other").await);
    let out = cli(
        &e.gw,
        &[
            "approvals",
            "deny",
            &other,
            "--approver",
            "a",
            "--note",
            "no",
        ],
    )
    .await;
    assert!(
        succeeded(&out).contains(&format!("denied {other}")),
        "{}",
        out.stdout
    );
    assert_eq!(e.approval(&other).await["status"], "denied");
    let r = e.create("a1", "other").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(e.up.count(), 1);
}

#[tokio::test]
async fn cli_reports_an_unknown_approval_clearly() {
    let e = start("APR_CLI_UNKNOWN_SECRET", "", "").await;
    let missing = "apr_0123456789abcdef0123";
    for args in [
        vec!["approvals", "show", missing],
        vec![
            "approvals",
            "approve",
            missing,
            "--approver",
            "a",
            "--owner",
            "o",
        ],
        vec!["approvals", "deny", missing, "--approver", "a"],
    ] {
        let out = cli(&e.gw, &args).await;
        assert!(!out.ok, "{args:?} succeeded: {}", out.stdout);
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
        assert!(
            out.stderr.contains("not_found") && out.stderr.contains("no such approval"),
            "{args:?}: {}",
            out.stderr
        );
    }
    // A bad token is an error too, and says so.
    let url = format!("http://{}", e.gw.admin_addr);
    let out = cli_with(&e.gw, &url, "not-the-admin-token", &["approvals", "list"]).await;
    assert!(!out.ok);
    assert!(out.stderr.contains("unauthenticated"), "{}", out.stderr);
}

/// What an agent sends reaches the approver's terminal: its request body in `approvals
/// show`, names and decisions in the tables. None of it may carry a character the terminal
/// acts on (an escape sequence that clears the screen, a bidi override that reverses text),
/// while `show` still gives the exact data back as JSON.
#[tokio::test]
async fn cli_output_carries_no_terminal_control() {
    let e = start("APR_CLI_CONTROLS_SECRET", "", "").await;
    let hostile = "ci\x1b[2J\u{202e}yek-dlo\u{9b}31m";
    // A raw ESC is not valid inside a JSON string: the body is sent as raw bytes, and the
    // gateway holds it for approval whatever it makes of it.
    let body = format!(r#"{{"title":"{hostile}","key":"{KEY_MATERIAL}","read_only":true}}"#);
    let id = approval_id(&e.post("a1", KEYS, body).await);
    let clean = |text: &str| {
        !text.contains('\x1b') && !text.contains('\u{202e}') && !text.contains('\u{9b}')
    };

    let out = cli(&e.gw, &["approvals", "show", &id]).await;
    let text = succeeded(&out);
    assert!(clean(text), "{text:?}");
    let shown: Value = serde_json::from_str(text).unwrap();
    assert_eq!(shown, e.approval(&id).await, "show keeps the data");
    let request = shown["request"].as_str().unwrap();
    assert!(request.contains("\u{202e}yek-dlo"), "{request:?}");

    // The approver's name is shown in the list; through the admin API it may be anything.
    let (s, b) = e
        .approve(
            &id,
            json!({"approver": format!("bob{hostile}"), "ticket": format!("T{hostile}")}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let out = cli(&e.gw, &["approvals", "list"]).await;
    let table = succeeded(&out);
    assert!(clean(table), "{table:?}");
    assert!(table.contains("bobci[2Jyek-dlo31m"), "{table}");
    let out = cli(&e.gw, &["approvals", "list", "--json"]).await;
    assert!(clean(succeeded(&out)), "{:?}", out.stdout);

    let r = e
        .post(
            "a1",
            KEYS,
            format!(r#"{{"title":"{hostile}","key":"{KEY_MATERIAL}","read_only":true}}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    for args in [&["inventory", "list"][..], &["inventory", "list", "--csv"]] {
        let out = cli(&e.gw, args).await;
        let text = succeeded(&out);
        assert!(clean(text), "{args:?}: {text:?}");
        assert!(text.contains("Tci[2Jyek-dlo31m"), "{args:?}: {text}");
    }
}

/// Splits RFC 4180 CSV into records of fields.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let (mut record, mut field) = (Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, '\r') => {}
            (false, c) => field.push(c),
        }
    }
    assert!(!quoted, "unterminated quote in {text:?}");
    assert!(
        field.is_empty() && record.is_empty(),
        "no final newline in {text:?}"
    );
    records
}

#[tokio::test]
async fn cli_lists_the_inventory_as_table_json_and_csv() {
    let e = start("APR_CLI_INV_SECRET", "", "").await;
    let header =
        "ID,KIND,TOOL,IDENTIFIER,CREATED BY AGENT,APPROVER,OWNER,TICKET,CREATED,REVIEW BY,APPROVAL,CAPTURED,REVOKED,NOTIFIED,DEACTIVATED,RETIRE ATTEMPTS,RETIRE ERROR";
    let out = cli(&e.gw, &["inventory", "list", "--csv"]).await;
    assert_eq!(succeeded(&out), format!("{header}\n"), "an empty inventory");

    let id = approval_id(&e.create("a1", "ci").await);
    // A ticket with a comma and quotes, to see the CSV quoting.
    let ticket = "CHG-7, \"urgent\"";
    let (s, b) = e.approve(&id, json!({"ticket": ticket})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(e.create("a1", "ci").await.status, 201);
    let entry = e.inventory().await[0].clone();
    let entry_id = entry["id"].as_str().unwrap();

    let out = cli(&e.gw, &["inventory", "list"]).await;
    let table = succeeded(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("IDENTIFIER"),
        "{table}"
    );
    for want in [
        entry_id,
        KIND,
        "gh",
        "4242",
        "a1",
        "bob@example.com",
        "carol@example.com",
        ticket,
        id.as_str(),
    ] {
        assert!(lines[1].contains(want), "{want:?} not in {table}");
    }

    let out = cli(&e.gw, &["inventory", "list", "--json"]).await;
    let list: Value = serde_json::from_str(succeeded(&out)).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["identifier"], "4242");
    assert_eq!(list[0]["kind"], KIND);
    assert_eq!(list[0]["approval_id"], id);

    let out = cli(&e.gw, &["inventory", "list", "--csv"]).await;
    let text = succeeded(&out);
    assert!(text.starts_with(&format!("{header}\n")), "{text}");
    let records = parse_csv(text);
    assert_eq!(records.len(), 2, "{text}");
    assert_eq!(records[0].len(), 17);
    let row = &records[1];
    assert_eq!(row.len(), 17, "{row:?}");
    assert_eq!(row[0], entry_id);
    assert_eq!(row[1], KIND);
    assert_eq!(row[2], "gh");
    assert_eq!(row[3], "4242");
    assert_eq!(row[4], "a1");
    assert_eq!(row[5], "bob@example.com");
    assert_eq!(row[6], "carol@example.com");
    assert_eq!(row[7], ticket);
    assert!(row[8].ends_with('Z') && row[9].ends_with('Z'), "{row:?}");
    assert_eq!(row[10], id);
    // A deploy key returns no secret to capture; it is not revoked.
    assert_eq!((row[11].as_str(), row[12].as_str()), ("0", "'-"));
    // Not noticed, deactivated or failed by a retirement.
    assert_eq!(row[13..], ["'-", "'-", "0", "'-"], "{row:?}");

    let out = cli(&e.gw, &["inventory", "list", "--json", "--csv"]).await;
    assert!(!out.ok, "--json and --csv together");
}

#[tokio::test]
async fn cli_suspends_and_resumes_an_agent() {
    let e = start("APR_CLI_SUSPEND_SECRET", "", "").await;
    let read = "/tools/gh/repos/acme/app";
    assert_eq!(e.get("a1", read).await.status, 200);
    assert_eq!(e.up.count(), 1);

    let out = cli(&e.gw, &["agents", "suspend", "a1", "--reason", "x"]).await;
    assert!(succeeded(&out).contains("suspended a1"), "{}", out.stdout);
    let r = e.get("a1", read).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "agent_suspended");
    // Not even an approval is opened for a suspended agent.
    let r = e.create("a1", "ci").await;
    assert_eq!(r.json()["error"], "agent_suspended", "{}", r.text());
    assert!(e.approvals("pending").await.is_empty());
    assert_eq!(
        e.up.count(),
        1,
        "a suspended agent's request reached the tool"
    );
    // Others are unaffected.
    assert_eq!(e.get("a2", read).await.status, 200);
    assert_eq!(e.up.count(), 2);

    let out = cli(&e.gw, &["agents", "suspended"]).await;
    let table = succeeded(&out);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("a1 ") && l.contains(" x ")),
        "{table}"
    );
    let (s, b) = e.gw.admin("GET", "/agents/suspended", None).await;
    assert_eq!(s, 200);
    assert_eq!(b["suspended"][0]["agent_id"], "a1", "{b}");
    assert_eq!(b["suspended"][0]["reason"], "x", "{b}");

    let out = cli(&e.gw, &["agents", "resume", "a1"]).await;
    assert!(succeeded(&out).contains("resumed a1"), "{}", out.stdout);
    let r = e.get("a1", read).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(e.up.count(), 3);
    let (_, b) = e.gw.admin("GET", "/agents/suspended", None).await;
    assert_eq!(b["suspended"], json!([]));

    let audit = calls(e.gw.audit().await);
    let suspended = audit
        .iter()
        .filter(|r| r["error"] == "agent_suspended")
        .count();
    assert_eq!(suspended, 2);
}

// ---------------------------------------------------------------- admin API auth

#[tokio::test]
async fn the_admin_api_needs_the_admin_token() {
    let e = start("APR_ADMIN_AUTH_SECRET", "", "").await;
    let id = approval_id(&e.create("a1", "ci").await);
    let c = Client::http1();
    let base = format!("http://{}", e.gw.admin_addr);
    let good = bearer(&e.gw.runtime.shared.admin_token);
    let wrong = bearer("0123456789abcdef0123456789abcdef0123456789abcdef");
    let prefix = bearer(&e.gw.runtime.shared.admin_token[..10]);
    let agent = bearer(&e.token("a1"));
    let approve = json!({"approver": "mallory", "owner": "mallory"}).to_string();
    for auth in [
        None,
        Some(wrong.as_str()),
        Some(prefix.as_str()),
        Some(agent.as_str()),
        Some(e.gw.runtime.shared.admin_token.as_str()),
    ] {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        for (method, path) in [
            ("GET", "/approvals".to_string()),
            ("GET", format!("/approvals/{id}")),
            ("POST", format!("/approvals/{id}/approve")),
            ("POST", format!("/approvals/{id}/deny")),
            ("GET", "/inventory".to_string()),
            ("GET", "/agents/suspended".to_string()),
            ("POST", "/agents/a1/suspend".to_string()),
            ("POST", "/reload".to_string()),
        ] {
            let body = if method == "POST" {
                approve.clone()
            } else {
                String::new()
            };
            let r = c
                .send(method, &format!("{base}{path}"), &headers, body)
                .await;
            assert_eq!(r.status, 401, "{method} {path} with {auth:?}: {}", r.text());
            assert_eq!(r.json()["error"], "unauthenticated");
        }
    }
    // Nothing changed.
    assert_eq!(e.approval(&id).await["status"], "pending");
    assert_eq!(e.create("a1", "ci").await.status, 403);
    assert_eq!(e.get("a1", "/tools/gh/x").await.status, 200);

    let r = c.get(&format!("{base}/healthz"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "ok");
    let r = c
        .get(&format!("{base}/approvals"), &[("authorization", &good)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The data plane does not serve the admin API.
    let r = c
        .get(&e.gw.url("/approvals"), &[("authorization", &good)])
        .await;
    assert_ne!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn a_request_strip_refuses_never_opens_or_spends_an_approval() {
    let e = start("APR_STRIP_SECRET", "", "").await;
    let leaky = json!({"title": "ghp_0123456789abcdefghijABCDEFGHIJ012345", "key": KEY_MATERIAL})
        .to_string();
    let r = e.post("a1", KEYS, leaky).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], "secret_in_request");
    assert!(
        e.approvals("pending").await.is_empty(),
        "a doomed request asked a human"
    );
    assert_eq!(e.up.count(), 0);
}

// ---------------------------------------------------------------- what an approval covers

/// `agent` sends the deploy-key creation titled `title` with extra `headers`.
async fn create_with(e: &Env, agent: &str, title: &str, headers: &[(&str, &str)]) -> Response {
    let auth = bearer(&e.token(agent));
    let mut all = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    all.extend_from_slice(headers);
    e.client
        .send("POST", &e.gw.url(KEYS), &all, key_body(title))
        .await
}

#[tokio::test]
async fn an_approval_does_not_cover_a_header_that_changes_who_acts_or_where() {
    let e = start("APR_EFFECT_SECRET", "", "").await;
    let ns1 = [("x-vault-namespace", "team-a")];
    let id = approval_id(&create_with(&e, "a1", "ci", &ns1).await);
    // The approver sees the header the approval covers.
    let seen = e.approval(&id).await["request"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(seen.contains("\nx-vault-namespace: team-a\n"), "{seen}");
    e.approve_ok(&id).await;

    // Resent with a header that makes the tool act as someone else, or elsewhere: not
    // forwarded on this approval; each asks for its own.
    let mut others = BTreeSet::new();
    for extra in [
        vec![("x-vault-namespace", "team-a"), ("sudo", "root")],
        vec![
            ("x-vault-namespace", "team-a"),
            ("impersonate-user", "admin"),
        ],
        vec![
            ("x-vault-namespace", "team-a"),
            ("impersonate-group", "system:masters"),
        ],
        vec![
            ("x-vault-namespace", "team-a"),
            ("impersonate-extra-scopes", "all"),
        ],
        vec![("x-vault-namespace", "team-b")],
        vec![],
    ] {
        let r = create_with(&e, "a1", "ci", &extra).await;
        let other = approval_id(&r);
        assert_ne!(other, id, "{extra:?} was forwarded on the approval");
        assert!(others.insert(other.clone()), "{extra:?}");
        let shown = e.approval(&other).await["request"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for (name, value) in &extra {
            assert!(shown.contains(&format!("\n{name}: {value}\n")), "{shown}");
        }
    }
    assert_eq!(e.up.count(), 0, "a changed request reached the tool");
    assert_eq!(e.approval(&id).await["status"], "approved");

    // The request as approved goes through, with the header as approved.
    let r = create_with(&e, "a1", "ci", &ns1).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(e.up.count(), 1);
    assert_eq!(
        e.up.requests()[0].header("x-vault-namespace").as_deref(),
        Some("team-a")
    );
}

#[tokio::test]
async fn the_approver_sees_the_whole_request_however_padded() {
    let e = start("APR_PAD_SECRET", "", "").await;
    let padding = "p".repeat(6000);
    let body =
        json!({"pad": padding, "title": "ci", "key": KEY_MATERIAL, "read_only": false}).to_string();
    let id = approval_id(&e.post("a1", &format!("{KEYS}?note=n1"), body).await);
    let field = r#""read_only":false"#;

    // The admin API.
    let a = e.approval(&id).await;
    let seen = a["request"].as_str().unwrap_or_default();
    assert!(
        seen.starts_with("POST /repos/acme/app/keys?note=n1\ncontent-type: application/json\n"),
        "{seen}"
    );
    assert!(seen.contains(&padding) && seen.contains(field), "{seen}");
    let pending = e.approvals("pending").await;
    assert!(
        pending[0]["request"]
            .as_str()
            .unwrap_or_default()
            .contains(field),
        "{pending:?}"
    );

    // The CLI.
    let shown = cli(&e.gw, &["approvals", "show", &id]).await;
    let shown: Value = serde_json::from_str(succeeded(&shown)).unwrap();
    assert!(
        shown["request"]
            .as_str()
            .unwrap_or_default()
            .contains(field),
        "{shown}"
    );
    let listed = cli(&e.gw, &["approvals", "list", "--json"]).await;
    let listed: Value = serde_json::from_str(succeeded(&listed)).unwrap();
    assert!(
        listed[0]["request"]
            .as_str()
            .unwrap_or_default()
            .contains(field),
        "{listed}"
    );
}

/// A password, unique per case, that must appear nowhere keygate keeps or shows.
const PASSWORDS: [&str; 6] = [
    "Pw-gitlab-7f3a91c2",
    "Pw-aws-51be08d4",
    "Pw-okta-c09d2e77",
    "Pw-graph-3a6b1f90",
    "Pw-k8s-secret-e45a",
    "Pw-k8s-string-9b2d",
];

#[tokio::test]
async fn secrets_in_identity_creation_bodies_never_reach_the_approval_store() {
    let up = github().await;
    let dir = tempfile::tempdir().unwrap();
    let source = secret_file(
        dir.path(),
        "APR_AT_REST_SECRET",
        "apr-at-rest-tool-credential",
    );
    let iss = TestIssuer::new(dir.path(), "apr-rest-issuer", "keygate");
    let mut cfg = format!("{}{}", iss.toml(), agent("a1", "alice@example.com"));
    for kind in ["gitlab", "aws", "okta", "msgraph", "kubernetes"] {
        cfg.push_str(&format!(
            "[[tools]]\nname = {kind:?}\nkind = {kind:?}\nupstream = {:?}\n[tools.credential]\nprovider = \"static\"\n{source}",
            up.url()
        ));
    }
    let gw = TestGateway::start_in(dir, &cfg).await;
    let auth = bearer(&iss.token("a1"));
    let c = Client::http1();
    let [gl, aws, okta, graph, k8s_data, k8s_string] = PASSWORDS;
    let data = base64_of(k8s_data);
    let cases: Vec<(&str, &str, String)> = vec![
        (
            "/tools/gitlab/api/v4/users",
            "application/json",
            json!({"username": "bob", "email": "b@x", "password": gl, "reset_password": false})
                .to_string(),
        ),
        (
            "/tools/aws/",
            "application/x-www-form-urlencoded",
            format!("Action=CreateLoginProfile&UserName=bob&Password={aws}&PasswordResetRequired=true"),
        ),
        (
            "/tools/okta/api/v1/users",
            "application/json",
            json!({"profile": {"login": "b@x"}, "credentials": {"password": {"value": okta}}})
                .to_string(),
        ),
        (
            "/tools/msgraph/v1.0/users",
            "application/json",
            json!({"displayName": "Bob", "passwordProfile": {"password": graph, "forceChangePasswordNextSignIn": true}})
                .to_string(),
        ),
        (
            "/tools/kubernetes/api/v1/namespaces/d/secrets",
            "application/json",
            json!({"kind": "Secret", "type": "kubernetes.io/service-account-token",
                   "metadata": {"name": "s"}, "data": {"token": data}, "stringData": {"p": k8s_string}})
                .to_string(),
        ),
    ];
    let mut ids = Vec::new();
    for (path, ct, body) in &cases {
        let r = c
            .send(
                "POST",
                &gw.url(path),
                &[("authorization", &auth), ("content-type", ct)],
                body.clone(),
            )
            .await;
        let id = if path.starts_with("/tools/aws/") {
            // AWS tools refuse in AWS's XML error format.
            assert_eq!(r.status, 403, "{}", r.text());
            let text = r.text();
            let at = text.find("apr_").unwrap_or_else(|| panic!("{text}"));
            text[at..at + 24].to_string()
        } else {
            approval_id(&r)
        };
        let (s, a) = gw.admin("GET", &format!("/approvals/{id}"), None).await;
        assert_eq!(s, 200, "{a}");
        let shown = a["request"].as_str().unwrap_or_default();
        assert!(shown.contains("[REDACTED]"), "{path}: {shown}");
        ids.push(id);
    }
    assert_eq!(up.count(), 0);

    // Everything that shows or keeps an approval.
    let mut places: Vec<(String, Vec<u8>)> = Vec::new();
    let (_, list) = gw.admin("GET", "/approvals", None).await;
    places.push(("admin API list".into(), list.to_string().into_bytes()));
    for id in &ids {
        let (_, a) = gw.admin("GET", &format!("/approvals/{id}"), None).await;
        places.push((format!("admin API {id}"), a.to_string().into_bytes()));
        let out = cli(&gw, &["approvals", "show", id]).await;
        places.push((
            format!("CLI show {id}"),
            succeeded(&out).as_bytes().to_vec(),
        ));
    }
    let out = cli(&gw, &["approvals", "list", "--json"]).await;
    places.push(("CLI list".into(), succeeded(&out).as_bytes().to_vec()));
    for entry in std::fs::read_dir(gw.dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            places.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    assert!(
        places.iter().any(|(p, _)| p.contains("keygate.db")),
        "{:?}",
        places.iter().map(|p| &p.0).collect::<Vec<_>>()
    );
    for (place, bytes) in &places {
        for secret in PASSWORDS.iter().copied().chain([data.as_str()]) {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} in {place}"
            );
        }
    }
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

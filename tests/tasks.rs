//! Tasks: just-in-time access (issue 20, part 1), against the real OAuth2 authorization
//! server of `tests/oauth2_support` (panva's oidc-provider, revocation and introspection
//! on).
//!
//! An agent opens a task for itself (`POST /.keygate/tasks`) or an admin opens one for it
//! (`POST /tasks`, `keygate tasks open`); calls name it in `Keygate-Task`. Tested here:
//! a policy that allows writes only inside a task; a task's calls get credentials of
//! their own (an OAuth2 token issued for the task, a minted JWT carrying `task`), never
//! the agent's other ones, and the header never reaches the tool; a task narrowed to a
//! tool and an operation refuses the others; another agent cannot use it; when it ends,
//! the OAuth2 token issued for it is revoked at the authorization server (its
//! introspection says inactive) while the agent's other token stays active, keygate's
//! introspection refuses the JWT minted in it, and the next call in it is refused; a task
//! past its time limit is refused the same way; the audit log and the admin API show it
//! all.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod oauth2_support;
use common::*;
use oauth2_support::*;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const AGENT: &str = "task-agent";
const OTHER: &str = "other-agent";
const CLIENT: &str = "t-task";

const ROUTES: &str = r#"routes = [
  { method = "GET", path = "/things", operation = "read_things", tags = ["read"] },
  { method = "POST", path = "/things", operation = "write_things", tags = ["write"] },
  { method = "POST", path = "/keys", operation = "create_key", tags = ["write", "identity_creation"], identity_kind = "api_key" },
]
"#;

/// Writes to `api` only inside a task.
const POLICY: &str = r#"
@id("writes-only-in-a-task")
forbid (principal, action == Action::"write_things", resource)
unless { context has task && context.task.ticket != "" };
"#;

struct Kg {
    gw: TestGateway,
    api: RawUpstream,
    minted: RawUpstream,
    iss: TestIssuer,
}

async fn recorder() -> RawUpstream {
    RawUpstream::with_responder(Arc::new(|_r: &Received| {
        (
            200,
            vec![("content-type".to_string(), "application/json".to_string())],
            b"{}".to_vec(),
        )
    }))
    .await
}

async fn start() -> Kg {
    logs();
    let a = auth_server();
    let api = recorder().await;
    let minted = recorder().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "task-iss", "keygate");
    let mut credential = credential_toml(
        dir.path(),
        &a.token_endpoint(),
        a.client(CLIENT),
        CLIENT_CREDENTIALS,
    );
    credential.push_str(&format!(
        "revocation_endpoint = \"{}/revocation\"\nscope = \"tools:read\"\nresource = {OPAQUE_RESOURCE:?}\n\
         [tools.credential.operations.write_things]\nscope = \"tools:write\"\n",
        a.token_endpoint()
    ));
    let cfg = format!(
        "{}{}{}[[tools]]\nname = \"api\"\nupstream = {:?}\napproval = \"hold\"\nhold_timeout = \"20s\"\n{ROUTES}{credential}\
         [[tools]]\nname = \"minted\"\nupstream = {:?}\n[tools.credential]\nprovider = \"jwt\"\nscope = \"read\"\n",
        iss.toml(),
        agent(AGENT, "owner@example.com"),
        agent(OTHER, "owner@example.com"),
        api.url(),
        minted.url(),
    );
    copy_default_policies(dir.path());
    std::fs::write(dir.path().join("policies/tasks.cedar"), POLICY).unwrap();
    let gw = TestGateway::start_in(dir, &cfg).await;
    Kg {
        gw,
        api,
        minted,
        iss,
    }
}

impl Kg {
    async fn call(&self, agent: &str, tool: &str, method: &str, task: Option<&str>) -> Response {
        let auth = bearer(&self.iss.token(agent));
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        if let Some(t) = task {
            headers.push(("keygate-task", t));
        }
        let body = if method == "POST" { "{}" } else { "" };
        Client::http1()
            .send(
                method,
                &self.gw.url(&format!("/tools/{tool}/things")),
                &headers,
                body,
            )
            .await
    }

    /// POST to one of keygate's own endpoints as `agent`.
    async fn own(&self, agent: &str, path: &str, body: Value) -> Response {
        let auth = bearer(&self.iss.token(agent));
        Client::http1()
            .send(
                "POST",
                &self.gw.url(path),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                body.to_string(),
            )
            .await
    }

    /// keygate's introspection of a token it minted.
    async fn introspect(&self, token: &str) -> Value {
        let r = Client::http1()
            .send(
                "POST",
                &self.gw.url("/.keygate/introspect"),
                &[("content-type", "application/x-www-form-urlencoded")],
                format!("token={}", form_encode(token)),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    fn last_token(up: &RawUpstream) -> String {
        let r = up.requests().pop().expect("the tool was called");
        assert!(
            r.header("keygate-task").is_none(),
            "the task header reached the tool:\n{}",
            r.head
        );
        bearer_token(&r.header("authorization").unwrap()).to_string()
    }
}

/// Ends task `id` through the admin API, as carol: the answer's status and body.
async fn end_as_carol(gw: &TestGateway, id: &str) -> (u16, Value) {
    gw.admin(
        "POST",
        &format!("/tasks/{id}/end"),
        Some(json!({"by": "carol"})),
    )
    .await
}

async fn audit_of(gw: &TestGateway, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(r) = gw.audit().await.into_iter().rev().find(|r| pred(r)) {
            return r;
        }
        assert!(Instant::now() < deadline, "no such audit record");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the authorization server's introspection until `active` is `want`.
async fn until_active(token: &str, want: bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let i = auth_server().introspect(token).await;
        if i["active"] == want {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "introspection still says {i} (wanted active = {want})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_gets_credentials_of_its_own_and_they_are_revoked_when_it_ends() {
    let kg = start().await;

    // Outside a task: reads go through, writes are refused by the policy.
    let r = kg.call(AGENT, "api", "GET", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let outside = Kg::last_token(&kg.api);
    let r = kg.call(AGENT, "api", "POST", None).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "forbidden");

    // The agent opens a task for itself.
    let r = kg
        .own(
            AGENT,
            "/.keygate/tasks",
            json!({"purpose": "rotate the deploy key", "ticket": "OPS-7", "ttl": "30m", "tools": ["api", "minted"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let task = r.json();
    let id = task["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("task_"), "{task}");
    assert_eq!(task["state"], "open");
    assert_eq!(task["opened_by"], "agent");
    assert_eq!(task["agent_id"], AGENT);

    // Inside it: the write is allowed, with a token issued for the task alone.
    let r = kg.call(AGENT, "api", "POST", Some(&id)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let in_task = Kg::last_token(&kg.api);
    assert_ne!(
        in_task, outside,
        "the task's call got the agent's other token"
    );
    let r = kg.call(AGENT, "api", "GET", Some(&id)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let read_in_task = Kg::last_token(&kg.api);
    assert_ne!(
        read_in_task, outside,
        "a read in the task got the token outside it"
    );
    until_active(&in_task, true).await;
    until_active(&read_in_task, true).await;
    let rec = audit_of(&kg.gw, |r| {
        r["operation"] == "write_things" && r["status"] == 200
    })
    .await;
    assert_eq!(rec["task"], id.as_str(), "{rec}");

    // A JWT minted inside the task names it; keygate's introspection vouches for it.
    let r = kg.call(AGENT, "minted", "GET", Some(&id)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let jwt = Kg::last_token(&kg.minted);
    assert_eq!(jwt_claims(&jwt).unwrap()["task"], id.as_str());
    let i = kg.introspect(&jwt).await;
    assert_eq!(i["active"], true, "{i}");
    assert_eq!(i["task"], id.as_str(), "{i}");
    assert_eq!(i["sub"], AGENT, "{i}");
    // One minted outside the task carries none and is reused only outside it.
    let r = kg.call(AGENT, "minted", "GET", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let plain = Kg::last_token(&kg.minted);
    assert_ne!(plain, jwt);
    assert!(jwt_claims(&plain).unwrap().get("task").is_none());
    assert_eq!(kg.introspect("not-a-token").await["active"], false);

    // A JWT minted in a task shorter than the tokens' lifetime (5 minutes) expires with
    // the task, not after it.
    let r = kg
        .own(
            AGENT,
            "/.keygate/tasks",
            json!({"purpose": "a quick look", "ticket": "OPS-9", "ttl": "90s", "tools": ["minted"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let short = r.json();
    let r = kg.call(AGENT, "minted", "GET", short["id"].as_str()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let claims = jwt_claims(&Kg::last_token(&kg.minted)).unwrap();
    let ends = short["expires_at"].as_i64().unwrap() / 1000;
    assert_eq!(claims["exp"].as_i64(), Some(ends), "{claims} {short}");
    assert!(ends - claims["iat"].as_i64().unwrap() <= 90, "{claims}");
    let (s, b) = end_as_carol(&kg.gw, short["id"].as_str().unwrap()).await;
    assert_eq!(s, 200, "{b}");

    // Another agent cannot use the task.
    let r = kg.call(OTHER, "api", "GET", Some(&id)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "task_unknown");
    let r = kg
        .own(OTHER, &format!("/.keygate/tasks/{id}/end"), json!({}))
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "task_unknown");

    // The agent ends it.
    let calls = kg.api.count();
    let r = kg
        .own(AGENT, &format!("/.keygate/tasks/{id}/end"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "ended");
    assert_eq!(r.json()["already_ended"], false);

    // Its OAuth2 tokens are revoked at the server; the agent's other token is not.
    until_active(&in_task, false).await;
    until_active(&read_in_task, false).await;
    assert_eq!(auth_server().introspect(&outside).await["active"], true);
    // keygate refuses the JWT minted in it, and still vouches for the other.
    assert_eq!(kg.introspect(&jwt).await["active"], false);
    assert_eq!(kg.introspect(&plain).await["active"], true);
    // The next call of the task is refused, and nothing reaches the tool.
    let r = kg.call(AGENT, "api", "GET", Some(&id)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "task_ended", "{}", r.text());
    assert_eq!(kg.api.count(), calls);
    // Outside a task the agent still reads.
    let r = kg.call(AGENT, "api", "GET", None).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let rec = audit_of(&kg.gw, |r| {
        r["path"] == format!("/.keygate/tasks/{id}/end") && r["status"] == 200
    })
    .await;
    assert_eq!(rec["agent_id"], AGENT, "{rec}");
    assert_eq!(rec["task"], id.as_str(), "{rec}");
    let (s, list) = kg.gw.admin("GET", "/tasks", None).await;
    assert_eq!(s, 200, "{list}");
    let t = list["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(t["state"], "ended", "{t}");
    assert_eq!(t["ended_by"], "agent", "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrow_task_refuses_other_tools_and_operations_and_expires() {
    let kg = start().await;
    // An admin opens a task for reads of `api` only.
    let (s, task) = kg
        .gw
        .admin(
            "POST",
            "/tasks",
            Some(
                json!({"agent": AGENT, "purpose": "read the things", "ticket": "OPS-8",
                        "ttl": "10m", "tools": ["api"], "operations": ["read"], "by": "carol"}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_string();
    assert_eq!(task["opened_by"], "carol");

    let r = kg.call(AGENT, "api", "GET", Some(&id)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = kg.call(AGENT, "api", "POST", Some(&id)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "task_out_of_scope");
    let r = kg.call(AGENT, "minted", "GET", Some(&id)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "task_out_of_scope");

    // Bad requests are refused with a reason, and keygate keeps serving.
    for (body, why) in [
        (json!({"purpose": ""}), "purpose"),
        (json!({"purpose": "x", "ttl": "9h"}), "ttl"),
        (json!({"purpose": "x", "tools": ["nope"]}), "nope"),
        (json!({"purpose": "x", "agent": OTHER}), "itself"),
    ] {
        let r = kg.own(AGENT, "/.keygate/tasks", body).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains(why), "{}", r.text());
    }
    let r = kg
        .call(AGENT, "api", "GET", Some("task_doesnotexist"))
        .await;
    assert_eq!(r.json()["error"], "task_unknown");
    let r = kg.call(AGENT, "api", "GET", Some("bad id!")).await;
    assert_eq!(r.status, 400, "{}", r.text());

    // Past its time limit it is refused like an ended task (keygate's clock moves).
    kg.gw.advance_clock(Duration::from_secs(11 * 60));
    let r = kg.call(AGENT, "api", "GET", Some(&id)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "task_ended");
    let (_, list) = kg.gw.admin("GET", "/tasks", None).await;
    let t = list["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(t["state"], "expired", "{t}");
    // Ending it afterwards records who did.
    let (s, ended) = end_as_carol(&kg.gw, &id).await;
    assert_eq!(s, 200, "{ended}");
    assert_eq!(ended["ended_by"], "carol");
    let rec = audit_of(&kg.gw, |r| r["operation"] == "keygate:task.end").await;
    assert_eq!(rec["task"], id.as_str(), "{rec}");
    assert_eq!(rec["admin"]["by"], "carol", "{rec}");
}

/// Runs `keygate ARGS` against the gateway's admin API (off the runtime's threads).
async fn cli(gw: &TestGateway, args: &[&str]) -> (bool, String, String) {
    let c = gw.cli(args).await;
    (c.ok, c.stdout, c.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_opens_lists_and_ends_tasks() {
    let kg = start().await;
    let (ok, out, err) = cli(
        &kg.gw,
        &[
            "tasks",
            "open",
            "--agent",
            AGENT,
            "--purpose",
            "write a thing",
            "--ticket",
            "OPS-9",
            "--ttl",
            "20m",
            "--tool",
            "api",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    let id = out.trim().to_string();
    assert!(id.starts_with("task_"), "{out}");
    let r = kg.call(AGENT, "api", "POST", Some(&id)).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let (ok, out, err) = cli(&kg.gw, &["tasks", "list"]).await;
    assert!(ok, "{err}");
    let line = out.lines().find(|l| l.contains(&id)).expect(&out);
    for want in [AGENT, "open", "write a thing", "OPS-9", "api", "any"] {
        assert!(line.contains(want), "{want:?} not in {line:?}");
    }
    let (ok, out, err) = cli(&kg.gw, &["tasks", "end", &id, "--by", "dave"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("ended"), "{out}");
    let (ok, out, _) = cli(&kg.gw, &["tasks", "end", &id]).await;
    assert!(ok);
    assert!(out.contains("had already ended"), "{out}");
    let r = kg.call(AGENT, "api", "POST", Some(&id)).await;
    assert_eq!(r.json()["error"], "task_ended", "{}", r.text());
    // A refusal is the admin API's, with its reason.
    let (ok, _, err) = cli(
        &kg.gw,
        &["tasks", "open", "--agent", "nobody", "--purpose", "x"],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("no agent"), "{err}");
}

/// A request held for approval in a task is refused, not sent, when the task ended while
/// it waited; and the approval binds the task (the approver sees it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_held_in_a_task_that_ends_meanwhile_is_refused() {
    let kg = Arc::new(start().await);
    let (s, task) = kg
        .gw
        .admin(
            "POST",
            "/tasks",
            Some(json!({"agent": AGENT, "purpose": "make a key", "ticket": "OPS-5"})),
        )
        .await;
    assert_eq!(s, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_string();
    let held = {
        let (kg, id) = (kg.clone(), id.clone());
        tokio::spawn(async move {
            let auth = bearer(&kg.iss.token(AGENT));
            Client::http1()
                .send(
                    "POST",
                    &kg.gw.url("/tools/api/keys"),
                    &[
                        ("authorization", auth.as_str()),
                        ("content-type", "application/json"),
                        ("keygate-task", id.as_str()),
                    ],
                    "{}",
                )
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let approval = loop {
        let (_, list) = kg.gw.admin("GET", "/approvals?status=pending", None).await;
        if let Some(a) = list["approvals"]
            .as_array()
            .and_then(|l| l.first())
            .cloned()
        {
            break a;
        }
        assert!(Instant::now() < deadline, "no approval became pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        approval["request"].to_string().contains(&id),
        "the approver does not see the task: {approval}"
    );
    let calls = kg.api.count();
    let (s, _) = end_as_carol(&kg.gw, &id).await;
    assert_eq!(s, 200);
    approve_as_bob(&kg.gw, approval["id"].as_str().unwrap(), "OPS-5").await;
    let r = held.await.unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "task_ended", "{}", r.text());
    assert_eq!(kg.api.count(), calls, "the held request reached the tool");
}

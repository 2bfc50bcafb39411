//! MCP (Model Context Protocol, Streamable HTTP transport) through keygate, against real
//! peers: the official MCP Python SDK as the agent's client (`tests/mcp/client.py`), the
//! reference server `@modelcontextprotocol/server-everything`, and a small server of our
//! own on the Python SDK (`tests/mcp/server.py`) that reports the headers it receives and
//! has an identity-creating tool. `scripts/test` installs them (see `tests/mcp/`).
//!
//! - the peers talk to each other directly (the install works, the tools are as expected);
//! - through keygate: initialize, `tools/list` filtered to what the policies allow, an
//!   allowed call answered, a forbidden one refused as a JSON-RPC error, progress
//!   notifications streamed as they are sent;
//! - the agent's credential never reaches the MCP server, keygate's does;
//! - an identity-creating MCP tool waits for a human's approval, then goes through once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod mcp_support;
use common::*;
use mcp_support::*;
use serde_json::{json, Value};
use std::time::Duration;

const AGENT: &str = "mcp-agent";
const OWNER: &str = "owner@example.com";

/// Policies for server-everything: the protocol itself (`read`) and three of its tools.
const SOME_TOOLS: &str = r#"
@id("mcp-protocol")
permit (principal, action in Action::"read", resource);

@id("mcp-some-tools")
permit (
  principal,
  action in [
    Action::"mcp:echo",
    Action::"mcp:get-sum",
    Action::"mcp:trigger-long-running-operation"
  ],
  resource
);
"#;

/// The tools [`SOME_TOOLS`] allows, sorted.
const ALLOWED: [&str; 3] = ["echo", "get-sum", "trigger-long-running-operation"];

/// keygate in front of the MCP server at `upstream` (tool `everything`, endpoint
/// `/tools/everything/mcp`), injecting the static secret `secret` (from env var `env`).
/// `policies`: the `.cedar` files instead of the default policies, or `None` for the
/// defaults (every tool allowed; identity creation needs approval). Returns keygate and
/// an agent token.
async fn gateway(
    upstream: &str,
    env: &str,
    secret: &str,
    policies: Option<&[(&str, &str)]>,
) -> (TestGateway, String) {
    let dir = tempfile::tempdir().unwrap();
    let source = secret_file(dir.path(), env, secret);
    let iss = TestIssuer::new(dir.path(), "mcp-iss", "keygate");
    let pdir = copy_default_policies(dir.path());
    if let Some(files) = policies {
        std::fs::remove_file(pdir.join("default.cedar")).unwrap();
        for (name, text) in files {
            std::fs::write(pdir.join(name), text).unwrap();
        }
    }
    let config = format!(
        "[policies]\ndir = \"policies\"\n{}{}[[tools]]\nname = \"everything\"\nprotocol = \"mcp\"\nupstream = {upstream:?}\n[tools.credential]\nprovider = \"static\"\n{source}",
        iss.toml(),
        agent(AGENT, OWNER),
    );
    let gw = TestGateway::start_in(dir, &config).await;
    let token = iss.token(AGENT);
    (gw, token)
}

fn endpoint(gw: &TestGateway) -> String {
    gw.url("/tools/everything/mcp")
}

// ---------------------------------------------------------------- the peers alone

#[tokio::test]
async fn the_sdk_client_talks_to_server_everything_directly() {
    let server = Peer::everything().await;
    let report = run_client(
        &server.mcp_url(),
        &[],
        json!([
            initialize(),
            list_tools(),
            call("echo", json!({"message": "hello"})),
            call("get-sum", json!({"a": 2, "b": 3})),
        ]),
    )
    .await;
    let init = step(&report, 0);
    assert_eq!(init["ok"], true, "{init}");
    assert_eq!(init["server_name"], "mcp-servers/everything", "{init}");
    assert!(init["protocol_version"].as_str().unwrap().starts_with("20"));
    assert!(init["session_id"].is_string(), "{init}");

    let tools = tool_names(step(&report, 1));
    for t in ALLOWED.iter().chain(&["get-env", "get-tiny-image"]) {
        assert!(tools.contains(&t.to_string()), "{t} not in {tools:?}");
    }
    assert_eq!(step(&report, 2)["text"], "Echo: hello");
    assert_eq!(step(&report, 3)["text"], "The sum of 2 and 3 is 5.");
}

#[tokio::test]
async fn the_test_server_reports_the_headers_it_receives() {
    let server = Peer::test_server().await;
    let report = run_client(
        &server.mcp_url(),
        &[("authorization", "Bearer direct-123")],
        json!([initialize(), list_tools(), call("whoami", json!({}))]),
    )
    .await;
    assert_eq!(step(&report, 0)["server_name"], "keygate-test-server");
    assert_eq!(
        tool_names(step(&report, 1)),
        ["create_api_token", "debug_env", "echo", "whoami"]
    );
    let seen: Value = serde_json::from_str(step(&report, 2)["text"].as_str().unwrap()).unwrap();
    assert_eq!(seen["authorization"], "Bearer direct-123");
    let requests = server.requests();
    assert!(requests.len() >= 3, "{requests:?}");
    assert!(requests
        .iter()
        .all(|r| r["headers"]["authorization"] == "Bearer direct-123"));
}

// ---------------------------------------------------------------- through keygate

#[tokio::test]
async fn through_keygate_the_agent_sees_and_calls_only_the_allowed_tools() {
    let server = Peer::everything().await;
    let (gw, token) = gateway(
        &server.url(),
        "KG_MCP_SECRET_LIST",
        "kg-static-mcp-list",
        Some(&[("main.cedar", SOME_TOOLS)]),
    )
    .await;
    let auth = bearer(&token);
    let report = run_client(
        &endpoint(&gw),
        &[("authorization", &auth)],
        json!([
            initialize(),
            list_tools(),
            call("echo", json!({"message": "through keygate"})),
            call("get-sum", json!({"a": 2, "b": 3})),
            call("get-env", json!({})),
            ping(),
        ]),
    )
    .await;

    let init = step(&report, 0);
    assert_eq!(init["ok"], true, "initialize through keygate: {init}");
    assert_eq!(init["server_name"], "mcp-servers/everything", "{init}");
    assert!(init["session_id"].is_string(), "no Mcp-Session-Id: {init}");

    let list = step(&report, 1);
    assert_eq!(list["ok"], true, "tools/list through keygate: {list}");
    assert_eq!(
        tool_names(list),
        ALLOWED,
        "the listing is not filtered: {list}"
    );

    let echo = step(&report, 2);
    assert_eq!(echo["ok"], true, "{echo}");
    assert_eq!(echo["text"], "Echo: through keygate", "{echo}");
    assert_eq!(step(&report, 3)["text"], "The sum of 2 and 3 is 5.");

    // The forbidden tool: a JSON-RPC error the agent's client shows, in an HTTP 200.
    let env = step(&report, 4);
    assert_eq!(env["ok"], false, "get-env was not refused: {env}");
    assert_eq!(
        http_status_of(env, "tools/call"),
        Some(200),
        "the refusal is an HTTP error, not a JSON-RPC one: {env}"
    );
    let err = &env["error"];
    assert_eq!(err["code"], -32001, "{err}");
    assert_eq!(err["data"]["error"], "forbidden", "{err}");
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains("mcp:get-env"), "{msg}");
    assert!(err["data"]["request_id"].is_string(), "{err}");

    // The session goes on after a refusal.
    assert_eq!(step(&report, 5)["ok"], true, "{}", step(&report, 5));

    // The audit log has the refusal, under the request id the agent was given, with the
    // session and the call (never the arguments' values).
    let rid = err["data"]["request_id"].as_str().unwrap();
    let audit = gw.audit().await;
    let rec = audit
        .iter()
        .find(|r| r["request_id"] == rid)
        .unwrap_or_else(|| panic!("no audit record {rid}: {audit:#?}"));
    assert_eq!(rec["decision"], "deny", "{rec}");
    assert_eq!(rec["operation"], "mcp:get-env", "{rec}");
    assert_eq!(rec["mcp"]["calls"][0]["method"], "tools/call", "{rec}");
    assert_eq!(rec["mcp"]["calls"][0]["name"], "get-env", "{rec}");
    assert_eq!(rec["mcp"]["session_id"], init["session_id"], "{rec}");
    drop(server);
}

/// The Streamable HTTP transport's own requests (the GET stream, the DELETE that ends a
/// session) are protocol, like initialize or ping: an agent allowed the protocol (`read`)
/// and some tools opens its stream and ends its session through keygate.
#[tokio::test]
async fn through_keygate_the_agent_opens_its_stream_and_ends_its_session() {
    let server = Peer::everything().await;
    let (gw, token) = gateway(
        &server.url(),
        "KG_MCP_SECRET_SESSION",
        "kg-static-mcp-session",
        Some(&[("main.cedar", SOME_TOOLS)]),
    )
    .await;
    let auth = bearer(&token);
    let report = run_client(
        &endpoint(&gw),
        &[("authorization", &auth)],
        json!([initialize(), list_tools(), ping()]),
    )
    .await;
    assert_eq!(step(&report, 2)["ok"], true, "{report:#}");
    let http = report["http"].as_array().unwrap();
    let status_of = |method: &str| {
        http.iter()
            .find(|h| h["method"] == method)
            .and_then(|h| h["status"].as_u64())
    };
    assert_eq!(
        status_of("GET"),
        Some(200),
        "the session's GET stream: {http:#?}"
    );
    let audit = gw.audit().await;
    let delete = audit.iter().find(|r| r["method"] == "DELETE");
    assert_eq!(
        status_of("DELETE"),
        Some(200),
        "ending the session (DELETE with Mcp-Session-Id) was refused: {http:#?}\n{delete:#?}"
    );
}

#[tokio::test]
async fn through_keygate_progress_notifications_arrive_as_they_are_sent() {
    let server = Peer::everything().await;
    let (gw, token) = gateway(
        &server.url(),
        "KG_MCP_SECRET_PROGRESS",
        "kg-static-mcp-progress",
        Some(&[("main.cedar", SOME_TOOLS)]),
    )
    .await;
    let auth = bearer(&token);
    // 5 steps over 2 s: a notification every 0.4 s, then the result.
    let report = run_client(
        &endpoint(&gw),
        &[("authorization", &auth)],
        json!([
            initialize(),
            call_with_progress(
                "trigger-long-running-operation",
                json!({"duration": 2, "steps": 5})
            ),
        ]),
    )
    .await;
    let r = step(&report, 1);
    assert_eq!(r["ok"], true, "{r}");
    assert!(
        r["text"]
            .as_str()
            .unwrap()
            .starts_with("Long running operation completed"),
        "{r}"
    );
    let progress = r["progress"].as_array().unwrap();
    let values: Vec<f64> = progress
        .iter()
        .map(|p| p["progress"].as_f64().unwrap())
        .collect();
    assert_eq!(values, [1.0, 2.0, 3.0, 4.0, 5.0], "{r}");
    assert!(progress.iter().all(|p| p["total"] == 5.0), "{r}");
    let t: Vec<f64> = progress.iter().map(|p| p["t"].as_f64().unwrap()).collect();
    let done = r["t_done"].as_f64().unwrap();
    // Streamed, not buffered until the end: the first notification arrives about 0.4 s in,
    // more than a second before the result, and they are spread over the operation.
    assert!(t[0] < 1.2, "first progress only at {:.2} s: {t:?}", t[0]);
    assert!(
        done - t[0] > 1.0,
        "progress arrived with the result ({done:.2} s): {t:?}"
    );
    assert!(
        t[4] - t[0] > 1.0,
        "progress notifications arrived together: {t:?}"
    );
    assert!(t.windows(2).all(|w| w[0] <= w[1]), "{t:?}");
    assert!(
        done < 10.0,
        "the call took {done:.2} s; the operation takes 2 s"
    );
}

#[tokio::test]
async fn the_agents_credential_never_reaches_the_mcp_server() {
    let server = Peer::test_server().await;
    let secret = "kg-static-mcp-whoami-7f3a";
    let (gw, token) = gateway(&server.url(), "KG_MCP_SECRET_WHOAMI", secret, None).await;
    let auth = bearer(&token);
    let report = run_client(
        &endpoint(&gw),
        &[
            ("authorization", &auth),
            ("cookie", "session=agent-cookie-91"),
            ("x-api-key", "agent-api-key-91"),
        ],
        json!([
            initialize(),
            list_tools(),
            call("whoami", json!({})),
            ping()
        ]),
    )
    .await;
    assert_eq!(step(&report, 0)["ok"], true, "{}", step(&report, 0));
    let who = step(&report, 2);
    assert_eq!(who["ok"], true, "{who}");
    let seen: Value = serde_json::from_str(who["text"].as_str().unwrap()).unwrap();
    // The server echoes what it got; keygate's credential comes back to the agent only as
    // keygate's marker (what the server got is checked below, from its own record).
    assert_eq!(
        seen["authorization"],
        format!("Bearer keygate-redacted{}", "*".repeat(secret.len() - 16)),
        "the MCP server echoed: {seen}"
    );
    assert!(!who.to_string().contains(secret), "{who}");

    // No request at all (initialize, notifications, lists, the GET stream, DELETE) carried
    // anything of the agent's: every one carried keygate's credential.
    let requests = server.requests();
    assert!(requests.len() >= 4, "{requests:#?}");
    let signature = token.rsplit('.').next().unwrap();
    for r in &requests {
        let text = r["headers"].to_string();
        for leaked in [signature, "agent-cookie-91", "agent-api-key-91"] {
            assert!(!text.contains(leaked), "{leaked} reached the server: {r}");
        }
        assert_eq!(
            r["headers"]["authorization"],
            format!("Bearer {secret}"),
            "{r}"
        );
    }
    drop(gw);
}

#[tokio::test]
async fn an_identity_creating_mcp_tool_waits_for_approval_then_goes_through_once() {
    let server = Peer::test_server().await;
    let (gw, token) = gateway(
        &server.url(),
        "KG_MCP_SECRET_IDENTITY",
        "kg-static-mcp-identity",
        None,
    )
    .await;
    let auth = bearer(&token);
    let go = gw.dir.path().join("approved");
    let args = json!({"name": "ci"});
    let steps = json!([
        initialize(),
        call("create_api_token", args.clone()),
        {"op": "wait_for_file", "path": go.display().to_string(), "timeout": 20},
        call("create_api_token", args.clone()),
        call("create_api_token", args.clone()),
    ]);
    let url = endpoint(&gw);
    let client =
        tokio::spawn(async move { run_client(&url, &[("authorization", &auth)], steps).await });

    // A human sees the pending request and approves it, while the agent's session is open.
    let mut pending = Vec::new();
    for _ in 0..200 {
        let (s, b) = gw.admin("GET", "/approvals?status=pending", None).await;
        assert_eq!(s, 200, "{b}");
        pending = b["approvals"].as_array().cloned().unwrap_or_default();
        if !pending.is_empty() || client.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if pending.len() != 1 {
        std::fs::write(&go, "").unwrap();
        let report = client.await.unwrap();
        panic!("expected one pending approval, got {pending:?}; client: {report:#}");
    }
    let id = pending[0]["id"].as_str().unwrap().to_string();
    let (s, b) = gw
        .admin(
            "POST",
            &format!("/approvals/{id}/approve"),
            Some(json!({"approver": "a", "owner": "o"})),
        )
        .await;
    assert_eq!(s, 200, "approve: {b}");
    std::fs::write(&go, "").unwrap();
    let report = client.await.unwrap();

    let first = step(&report, 1);
    assert_eq!(first["ok"], false, "created without approval: {first}");
    assert_eq!(http_status_of(first, "tools/call"), Some(200), "{first}");
    assert_eq!(first["error"]["code"], -32001, "{first}");
    assert_eq!(
        first["error"]["data"]["error"], "approval_required",
        "{first}"
    );
    assert_eq!(
        first["error"]["data"]["approval_id"],
        id.as_str(),
        "{first}"
    );

    // The approved retry goes through, and it is the first call the server saw.
    let retry = step(&report, 3);
    assert_eq!(retry["ok"], true, "the approved retry: {retry}");
    assert_eq!(retry["is_error"], false, "{retry}");
    let created: Value = serde_json::from_str(retry["text"].as_str().unwrap()).unwrap();
    assert_eq!(created["created"], 1, "{created}");
    assert_eq!(created["token"], "tok-1", "{created}");

    // Once: the next identical call needs a new approval.
    let again = step(&report, 4);
    assert_eq!(
        again["ok"], false,
        "a second creation without approval: {again}"
    );
    assert_eq!(
        again["error"]["data"]["error"], "approval_required",
        "{again}"
    );
    let second_id = again["error"]["data"]["approval_id"].as_str().unwrap();
    assert_ne!(second_id, id, "{again}");
}

/// What keygate authorizes is what the server runs, against the official SDK's server:
/// a message a server could read two ways (CVE-2026-27896: `Name` beside `name`, a
/// `Method` variant, `name` twice, `paramſ`) never reaches it, and an agent with no
/// permit on the tool reaches nothing of it (a response-only POST, a notification, the
/// GET stream), while a plain session still works.
#[tokio::test]
async fn through_keygate_only_what_was_decided_reaches_the_server() {
    let server = Peer::test_server().await;
    const ECHO_ONLY: &str = r#"
@id("mcp-protocol") permit (principal, action in Action::"read", resource);
@id("echo") permit (principal, action == Action::"mcp:echo", resource);
"#;
    let (gw, token) = gateway(
        &server.url(),
        "KG_MCP_SECRET_STRICT",
        "kg-static-mcp-strict",
        Some(&[("main.cedar", ECHO_ONLY)]),
    )
    .await;
    let auth = bearer(&token);
    let post = |gw: &TestGateway, auth: &str, method: &str, body: &str| {
        let (url, auth, method, body) = (
            endpoint(gw),
            auth.to_string(),
            method.to_string(),
            body.to_string(),
        );
        async move {
            Client::http1()
                .send(
                    &method,
                    &url,
                    &[
                        ("authorization", auth.as_str()),
                        ("content-type", "application/json"),
                        ("accept", "application/json, text/event-stream"),
                    ],
                    body,
                )
                .await
        }
    };
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","Name":"create_api_token"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call","params":{"name":"create_api_token","arguments":{"name":"x"}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"create_api_token"}}"#,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"message\":\"x\"}},\"param\u{17f}\":{\"name\":\"create_api_token\",\"arguments\":{\"name\":\"x\"}}}",
    ] {
        let r = post(&gw, &auth, "POST", body).await;
        assert_eq!(
            r.json()["error"]["data"]["error"],
            "ambiguous_json",
            "{body}: {}",
            r.text()
        );
    }
    assert_eq!(server.requests(), Vec::<Value>::new(), "reached the server");

    // An agent with no permit on this tool: nothing it sends is forwarded.
    let (gw2, token2) = gateway(
        &server.url(),
        "KG_MCP_SECRET_STRICT2",
        "kg-static-mcp-strict2",
        Some(&[(
            "main.cedar",
            r#"@id("elsewhere") permit (principal, action, resource == Tool::"elsewhere");"#,
        )]),
    )
    .await;
    let auth2 = bearer(&token2);
    for (method, body) in [
        ("POST", r#"{"jsonrpc":"2.0","id":0,"result":{"roots":[]}}"#),
        (
            "POST",
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        ),
        ("GET", ""),
    ] {
        let r = post(&gw2, &auth2, method, body).await;
        assert_eq!(r.status, 403, "{method} {body}: {}", r.text());
    }
    assert_eq!(server.requests(), Vec::<Value>::new(), "reached the server");

    // The plain session goes through.
    let report = run_client(
        &endpoint(&gw),
        &[("authorization", &auth)],
        json!([initialize(), call("echo", json!({"message": "plain"}))]),
    )
    .await;
    assert_eq!(step(&report, 1)["text"], "plain", "{report:#}");
    assert!(!server.requests().is_empty());
}

/// A tool result that carries credentials (a debug dump of an environment) reaches the
/// agent with each redacted, over the SDK's SSE stream, and the audit names each by format
/// and place, never by value.
#[tokio::test]
async fn credentials_in_a_tool_result_are_redacted() {
    let server = Peer::test_server().await;
    let policy = r#"
@id("mcp-protocol")
permit (principal, action in Action::"read", resource);
@id("mcp-debug-env")
permit (principal, action == Action::"mcp:debug_env", resource);
"#;
    let (gw, token) = gateway(
        &server.url(),
        "KG_MCP_SECRET_DUMP",
        "kg-static-mcp-dump",
        Some(&[("main.cedar", policy)]),
    )
    .await;
    let auth = bearer(&token);
    let report = run_client(
        &endpoint(&gw),
        &[("authorization", &auth)],
        json!([initialize(), call("debug_env", json!({}))]),
    )
    .await;
    let dump = step(&report, 1);
    assert_eq!(dump["ok"], true, "{dump}");
    let text = dump["text"].as_str().unwrap();
    for secret in [
        "AKIAQX7TESTDUMPKEY42",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYDUMPKEY042",
        "ghp_R3alLookingTokenFromADebugDump0000042",
    ] {
        assert!(!text.contains(secret), "{secret} reached the agent: {text}");
    }
    assert!(text.contains("HOME=/srv"), "{text}");
    assert!(
        text.contains("AWS_ACCESS_KEY_ID=keygate-redacted"),
        "{text}"
    );
    assert!(text.contains("GITHUB_TOKEN=keygate-redacted"), "{text}");
    let audit = gw.audit().await;
    let rec = audit
        .iter()
        .find(|r| !r["response_secrets"].is_null())
        .expect("a record with the findings");
    let mut formats: Vec<&str> = rec["response_secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f["location"], "body", "{f}");
            assert_eq!(f["action"], "redacted", "{f}");
            f["format"].as_str().unwrap()
        })
        .collect();
    formats.sort();
    assert_eq!(
        formats,
        ["aws_access_key_id", "aws_secret_access_key", "github_token"]
    );
    let raw = std::fs::read_to_string(&gw.audit_path).unwrap();
    assert!(!raw.contains("ghp_R3alLooking"));
}

//! keygate's MCP handling against a scripted MCP server: per-call policy on tools/call,
//! JSON-RPC refusals, tools/list filtering (JSON and SSE answers), the approval gate for
//! identity-creating tools bound to the call's arguments, secrets in arguments, and the
//! audit record of each JSON-RPC call. The real-peer tests (official SDK, reference
//! server) are in tests/mcp.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::{json, Value};
use std::sync::Arc;

const TOOLS: &str =
    r#"{"tools":[{"name":"echo"},{"name":"delete_repo"},{"name":"create_api_token"}]}"#;

/// An MCP server that answers tools/list (as JSON, or as SSE when asked by the agent's
/// `x-answer: sse` header) and echoes tools/call.
async fn server() -> RawUpstream {
    RawUpstream::with_responder(Arc::new(|r: &Received| {
        let msg: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        let result = match msg.get("method").and_then(|m| m.as_str()) {
            Some("tools/list") => serde_json::from_str::<Value>(TOOLS).unwrap(),
            Some("tools/call") => json!({"content": [{"type": "text", "text": format!("called {}", msg["params"]["name"])}]}),
            _ => json!({}),
        };
        let answer = json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
        if r.head.to_ascii_lowercase().contains("x-answer: sse") {
            let body = format!("event: message\ndata: {answer}\n\n");
            (200, vec![("content-type".into(), "text/event-stream".into())], body.into_bytes())
        } else {
            (200, vec![("content-type".into(), "application/json".into()), ("mcp-session-id".into(), "s-1".into())], answer.into_bytes())
        }
    }))
    .await
}

struct Env {
    gw: TestGateway,
    iss: TestIssuer,
    up: RawUpstream,
}

async fn start(policy: Option<&str>) -> Env {
    start_with(policy, "").await
}

/// Like [`start`], with `tool_extra` in the tool's table.
async fn start_with(policy: Option<&str>, tool_extra: &str) -> Env {
    let up = server().await;
    let dir = tempfile::tempdir().unwrap();
    let source = secret_file(dir.path(), "MCPG_SECRET", "mcp-tool-secret");
    let iss = TestIssuer::new(dir.path(), "mcpg-iss", "keygate");
    let mut cfg = format!(
        "{}{}[[tools]]\nname = \"srv\"\nprotocol = \"mcp\"\nupstream = {:?}\n{tool_extra}[tools.credential]\nprovider = \"static\"\n{source}",
        iss.toml(),
        agent("a1", "o@x"),
        up.url()
    );
    if let Some(p) = policy {
        let dirp = copy_default_policies(dir.path());
        std::fs::write(dirp.join("default.cedar"), p).unwrap();
        cfg.push_str("[policies]\ndir = \"policies\"\n");
    }
    let gw = TestGateway::start_in(dir, &cfg).await;
    Env { gw, iss, up }
}

impl Env {
    async fn rpc(&self, body: Value, extra: &[(&str, &str)]) -> Response {
        let auth = bearer(&self.iss.token("a1"));
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-session-id", "s-1"),
        ];
        headers.extend_from_slice(extra);
        Client::http1()
            .send(
                "POST",
                &self.gw.url("/tools/srv/mcp"),
                &headers,
                body.to_string(),
            )
            .await
    }
}

impl Env {
    /// Sends `body` as it is (bytes a JSON library would not write: duplicate members,
    /// integers beyond 64 bits) with the HTTP method `method`.
    async fn raw(&self, method: &str, body: &str) -> Response {
        let auth = bearer(&self.iss.token("a1"));
        Client::http1()
            .send(
                method,
                &self.gw.url("/tools/srv/mcp"),
                &[
                    ("authorization", auth.as_str()),
                    ("content-type", "application/json"),
                    ("accept", "application/json, text/event-stream"),
                    ("mcp-session-id", "s-1"),
                ],
                body.to_string(),
            )
            .await
    }
}

fn call(id: i64, name: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": args}})
}

fn names(v: &Value) -> Vec<String> {
    v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

const ONLY_ECHO: &str = r#"
@id("protocol") permit (principal, action == Action::"read", resource);
@id("echo") permit (principal, action == Action::"mcp:echo", resource);
@id("identity-creation-needs-approval") @approval("human")
forbid (principal, action in Action::"identity_creation", resource) unless { context.approved };
"#;

#[tokio::test]
async fn tools_list_shows_only_what_the_agent_may_call_json_and_sse() {
    let e = start(Some(ONLY_ECHO)).await;
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let r = e.rpc(list.clone(), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(names(&r.json()), vec!["echo"]);
    assert_eq!(r.headers["mcp-session-id"], "s-1");
    let r = e.rpc(list, &[("x-answer", "sse")]).await;
    assert_eq!(r.status, 200);
    let data = r
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("data: ").map(str::to_string))
        .unwrap();
    assert_eq!(names(&serde_json::from_str(&data).unwrap()), vec!["echo"]);
    // With the default policies every tool is callable (one with approval): all are listed.
    let e = start(None).await;
    let r = e
        .rpc(
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
            &[],
        )
        .await;
    assert_eq!(
        names(&r.json()),
        vec!["echo", "delete_repo", "create_api_token"]
    );
}

#[tokio::test]
async fn a_forbidden_call_is_a_json_rpc_error_and_reaches_nothing() {
    let e = start(Some(ONLY_ECHO)).await;
    let r = e.rpc(call(7, "echo", json!({"message": "hi"})), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["result"]["content"][0]["text"], "called \"echo\"");
    let upstream = e.up.requests();
    assert_eq!(
        upstream[0].header("authorization").as_deref(),
        Some("Bearer mcp-tool-secret")
    );
    assert!(upstream[0].header("mcp-session-id").is_some());

    let r = e
        .rpc(call(8, "delete_repo", json!({"repo": "acme/app"})), &[])
        .await;
    assert_eq!(
        r.status, 200,
        "MCP clients read JSON-RPC errors, not HTTP errors"
    );
    let b = r.json();
    assert_eq!(b["jsonrpc"], "2.0");
    assert_eq!(b["id"], 8);
    assert_eq!(b["error"]["code"], -32001);
    assert_eq!(b["error"]["data"]["error"], "forbidden");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mcp:delete_repo"),
        "{b}"
    );
    assert_eq!(e.up.count(), 1);

    let audit = e.gw.audit().await;
    let rec = audit
        .iter()
        .find(|r| r["status"] == 200 && r["operation"] == "mcp:delete_repo")
        .unwrap();
    assert_eq!(rec["decision"], "deny");
    assert_eq!(rec["mcp"]["session_id"], "s-1");
    assert_eq!(rec["mcp"]["calls"][0]["method"], "tools/call");
    assert_eq!(rec["mcp"]["calls"][0]["name"], "delete_repo");
    assert!(rec["mcp"]["calls"][0]["arguments_digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert!(
        !serde_json::to_string(&audit).unwrap().contains("acme/app"),
        "argument values are never logged"
    );
}

#[tokio::test]
async fn arguments_are_in_the_policy_context() {
    let policy = r#"
@id("protocol") permit (principal, action == Action::"read", resource);
@id("echo-safe") permit (principal, action == Action::"mcp:echo", resource)
  when { context.mcp_arguments.hasTag("message") && context.mcp_arguments.getTag("message") like "safe*" };
"#;
    let e = start(Some(policy)).await;
    assert!(e
        .rpc(call(1, "echo", json!({"message": "safe words"})), &[])
        .await
        .json()["result"]
        .is_object());
    assert_eq!(
        e.rpc(call(2, "echo", json!({"message": "rm -rf /"})), &[])
            .await
            .json()["error"]["data"]["error"],
        "forbidden"
    );
}

#[tokio::test]
async fn an_identity_creating_tool_waits_for_approval_bound_to_its_arguments() {
    let e = start(None).await;
    let r = e
        .rpc(call(1, "create_api_token", json!({"scope": "repo"})), &[])
        .await;
    let b = r.json();
    assert_eq!(b["id"], 1);
    assert_eq!(b["error"]["data"]["error"], "approval_required", "{b}");
    let id = b["error"]["data"]["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(e.up.count(), 0);
    // A retry is a new JSON-RPC id, the same call: the same approval.
    let b = e
        .rpc(call(2, "create_api_token", json!({"scope": "repo"})), &[])
        .await
        .json();
    assert_eq!(b["error"]["data"]["approval_id"], id.as_str());
    // Other arguments are another request.
    let b = e
        .rpc(call(3, "create_api_token", json!({"scope": "admin"})), &[])
        .await
        .json();
    assert_ne!(b["error"]["data"]["approval_id"], id.as_str());

    let (s, a) =
        e.gw.admin(
            "POST",
            &format!("/approvals/{id}/approve"),
            Some(json!({"approver": "h", "owner": "o"})),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    let b = e
        .rpc(call(4, "create_api_token", json!({"scope": "repo"})), &[])
        .await
        .json();
    assert_eq!(b["id"], 4);
    assert!(b["result"].is_object(), "{b}");
    assert_eq!(e.up.count(), 1);
    let b = e
        .rpc(call(5, "create_api_token", json!({"scope": "repo"})), &[])
        .await
        .json();
    assert_eq!(b["error"]["data"]["error"], "approval_required");
    assert_eq!(e.up.count(), 1);
}

#[tokio::test]
async fn secrets_in_arguments_and_bad_messages_are_json_rpc_errors() {
    let e = start(None).await;
    let b = e
        .rpc(
            call(9, "echo", json!({"message": "AKIAIOSFODNN7EXAMPLE"})),
            &[],
        )
        .await
        .json();
    assert_eq!(b["id"], 9);
    assert_eq!(b["error"]["data"]["error"], "secret_in_request", "{b}");
    let auth = bearer(&e.iss.token("a1"));
    let r = Client::http1()
        .send(
            "POST",
            &e.gw.url("/tools/srv/mcp"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            "{not json",
        )
        .await;
    assert_eq!(r.json()["error"]["code"], -32700, "{}", r.text());
    // Batches: each request is decided; one refusal refuses the batch, per id.
    let batch = json!([
        call(1, "echo", json!({})),
        call(2, "create_api_token", json!({}))
    ]);
    let b = e.rpc(batch, &[]).await.json();
    assert!(b.is_array() && b.as_array().unwrap().len() == 2, "{b}");
    assert_eq!(e.up.count(), 0);
}

/// CVE-2026-27896: a Go server (`encoding/json`) matches member names case-insensitively
/// (and folds `ſ` onto `s`), so a message keygate read as a call of `echo` could run
/// `create_api_token`. keygate refuses every message that could be read two ways, at any
/// depth, and nothing of it reaches the server.
#[tokio::test]
async fn messages_a_server_could_read_two_ways_are_refused() {
    let e = start(None).await;
    for body in [
        // The advisory's example: `Name` beside `name`.
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","Name":"create_api_token"}}"#,
        // A case variant of the method beside it.
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call","params":{"name":"create_api_token"}}"#,
        // `name` twice (JSON parsers keep the first or the last).
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"create_api_token"}}"#,
        // `paramſ` (U+017F, which Go folds onto `s`) in place of `params`, raw and escaped.
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\"},\"param\u{17f}\":{\"name\":\"create_api_token\"}}",
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"},"param\u017f":{"name":"create_api_token"}}"#,
        // In the arguments, which the server reads too.
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi","message":"rm -rf /"}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi","Message":"rm -rf /"}}}"#,
        // In a batch.
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","NAME":"create_api_token"}}]"#,
    ] {
        let r = e.raw("POST", body).await;
        let b = r.json();
        assert_eq!(r.status, 400, "{body}: {b}");
        assert_eq!(b["jsonrpc"], "2.0", "{b}");
        assert_eq!(b["error"]["code"], -32600, "{body}: {b}");
        assert_eq!(b["error"]["data"]["error"], "ambiguous_json", "{body}: {b}");
        assert_eq!(e.up.count(), 0, "{body} reached the server");
    }
    // A case variant alone, where the server would read it as the member.
    for body in [
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"Name":"create_api_token"}}"#,
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","Arguments":{"message":"x"}}}"#,
    ] {
        let b = e.raw("POST", body).await.json();
        assert_eq!(b["id"], 5, "{b}");
        assert_eq!(b["error"]["data"]["error"], "ambiguous_json", "{body}: {b}");
    }
    assert_eq!(e.up.count(), 0);
    // The plain call goes through.
    let b = e.raw("POST", r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}"#).await.json();
    assert_eq!(b["result"]["content"][0]["text"], "called \"echo\"", "{b}");
    assert_eq!(e.up.count(), 1);
}

/// Every message an agent POSTs gets a Cedar decision, a response to the server or a
/// notification as much as a call, and so does the GET stream and the DELETE: an agent
/// with no permit on the MCP tool reaches nothing of it.
#[tokio::test]
async fn an_agent_with_no_permit_on_the_tool_reaches_nothing_of_it() {
    let e = start(Some(
        r#"@id("elsewhere") permit (principal, action, resource == Tool::"elsewhere");"#,
    ))
    .await;
    for (method, body) in [
        (
            "POST",
            r#"{"jsonrpc":"2.0","id":"srv-1","result":{"roots":[]}}"#,
        ),
        (
            "POST",
            r#"{"jsonrpc":"2.0","id":"srv-2","error":{"code":-1,"message":"no"}}"#,
        ),
        (
            "POST",
            r#"[{"jsonrpc":"2.0","id":"srv-3","result":{}},{"jsonrpc":"2.0","id":"srv-4","result":{}}]"#,
        ),
        (
            "POST",
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        ),
        ("POST", r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
        ("GET", ""),
        ("DELETE", ""),
    ] {
        let r = e.raw(method, body).await;
        // A refused request is answered in JSON-RPC (HTTP 200, its id); the rest is 403.
        let status = if body.contains("ping") { 200 } else { 403 };
        assert_eq!(r.status, status, "{method} {body}: {}", r.text());
        let b = r.json();
        let code = if b["error"].is_object() {
            b["error"]["data"]["error"].clone()
        } else {
            b["error"].clone()
        };
        assert_eq!(code, "forbidden", "{method} {body}: {b}");
        assert_eq!(e.up.count(), 0, "{method} {body} reached the server");
    }
    let audit = e.gw.audit().await;
    assert_eq!(audit.len(), 7, "{audit:#?}");
    assert!(audit.iter().all(|r| r["decision"] == "deny"), "{audit:#?}");
}

/// What keygate cannot decide it refuses: a tools/call without a string name, a method
/// it does not know, an HTTP method MCP does not use (even `post`), never a read.
#[tokio::test]
async fn what_keygate_cannot_decide_is_refused_not_read() {
    // The default policies allow every tool: a refusal here is not a denial.
    let e = start(None).await;
    let call =
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;
    for (method, body, status, code, rpc) in [
        (
            "POST",
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"arguments":{}}}"#,
            200,
            "bad_request",
            Some(-32602),
        ),
        (
            "POST",
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":["create_api_token"]}}"#,
            200,
            "bad_request",
            Some(-32602),
        ),
        (
            "POST",
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call"}"#,
            200,
            "bad_request",
            Some(-32602),
        ),
        (
            "POST",
            r#"{"jsonrpc":"2.0","id":3,"method":"Tools/Call","params":{"name":"create_api_token"}}"#,
            200,
            "unknown_mcp_method",
            Some(-32601),
        ),
        (
            "POST",
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/execute","params":{"name":"create_api_token"}}"#,
            200,
            "unknown_mcp_method",
            Some(-32601),
        ),
        (
            "POST",
            r#"{"jsonrpc":"2.0","method":"notifications/tools/call","params":{"name":"create_api_token"}}"#,
            400,
            "unknown_mcp_method",
            Some(-32601),
        ),
        (
            "POST",
            r#"{"jsonrpc":"2.0","id":3}"#,
            400,
            "bad_request",
            Some(-32600),
        ),
        ("post", call, 405, "method_not_allowed", None),
        ("PUT", call, 405, "method_not_allowed", None),
        ("PATCH", call, 405, "method_not_allowed", None),
    ] {
        let r = e.raw(method, body).await;
        assert_eq!(r.status, status, "{method} {body}: {}", r.text());
        let b = r.json();
        match rpc {
            Some(rpc) => {
                assert_eq!(b["error"]["code"], rpc, "{method} {body}: {b}");
                assert_eq!(b["error"]["data"]["error"], code, "{method} {body}: {b}");
            }
            None => assert_eq!(b["error"], code, "{method} {body}: {b}"),
        }
        assert_eq!(e.up.count(), 0, "{method} {body} reached the server");
    }
}

/// The approval of an identity-creating call is bound to its exact arguments: integers
/// beyond 64 bits that an f64 would make equal are two calls; the same members in
/// another order are one.
#[tokio::test]
async fn an_approval_binds_the_exact_arguments() {
    let e = start(None).await;
    let body = |id: u32, args: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"create_api_token","arguments":{args}}}}}"#
        )
    };
    let approval = |b: &Value| {
        b["error"]["data"]["approval_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let low = e
        .raw(
            "POST",
            &body(1, r#"{"n":18446744073709551616,"scope":"repo"}"#),
        )
        .await
        .json();
    assert_eq!(low["error"]["data"]["error"], "approval_required", "{low}");
    let high = e
        .raw(
            "POST",
            &body(2, r#"{"n":18446744073709551617,"scope":"repo"}"#),
        )
        .await
        .json();
    assert_ne!(approval(&low), approval(&high), "two calls, one approval");
    let reordered = e
        .raw(
            "POST",
            &body(3, r#"{"scope":"repo","n":18446744073709551616}"#),
        )
        .await
        .json();
    assert_eq!(approval(&low), approval(&reordered));

    let (s, a) =
        e.gw.admin(
            "POST",
            &format!("/approvals/{}/approve", approval(&low)),
            Some(json!({"approver": "h", "owner": "o"})),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    // The approved call sent elsewhere on the server (another path or query, where a
    // server may serve other tool sets) is another request.
    let auth = bearer(&e.iss.token("a1"));
    for elsewhere in ["/tools/srv/mcp/admin", "/tools/srv/mcp?toolsets=all"] {
        let b = Client::http1()
            .send(
                "POST",
                &e.gw.url(elsewhere),
                &[
                    ("authorization", auth.as_str()),
                    ("content-type", "application/json"),
                    ("accept", "application/json, text/event-stream"),
                ],
                body(6, r#"{"n":18446744073709551616,"scope":"repo"}"#),
            )
            .await
            .json();
        assert_eq!(
            b["error"]["data"]["error"], "approval_required",
            "{elsewhere}: {b}"
        );
        assert_ne!(approval(&b), approval(&low), "{elsewhere}");
    }
    // So is the approved call with other members in its params (`_meta`).
    let b = e
        .raw(
            "POST",
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"create_api_token","arguments":{"n":18446744073709551616,"scope":"repo"},"_meta":{"progressToken":"x"}}}"#,
        )
        .await
        .json();
    assert_eq!(b["error"]["data"]["error"], "approval_required", "{b}");
    assert_eq!(e.up.count(), 0);
    let b = e
        .raw(
            "POST",
            &body(4, r#"{"n":18446744073709551617,"scope":"repo"}"#),
        )
        .await
        .json();
    assert_eq!(b["error"]["data"]["error"], "approval_required", "{b}");
    assert_eq!(e.up.count(), 0);
    let b = e
        .raw(
            "POST",
            &body(5, r#"{"n":18446744073709551616,"scope":"repo"}"#),
        )
        .await
        .json();
    assert!(b["result"].is_object(), "{b}");
    assert_eq!(e.up.count(), 1);
    assert!(String::from_utf8_lossy(&e.up.requests()[0].body).contains("18446744073709551616"));
}

/// A batch holds 64 messages at most; a larger one is refused whole, with a stable code.
#[tokio::test]
async fn batches_have_a_size_limit() {
    let e = start(None).await;
    let batch = |n: usize| {
        let one = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}"#;
        format!("[{}]", vec![one; n].join(","))
    };
    let r = e.raw("POST", &batch(65)).await;
    assert_eq!(r.status, 413, "{}", r.text());
    let b = r.json();
    assert_eq!(b["error"]["code"], -32600, "{b}");
    assert_eq!(b["error"]["data"]["error"], "batch_too_large", "{b}");
    assert_eq!(e.up.count(), 0);
    let r = e.raw("POST", &batch(64)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(e.up.count(), 1);
}

/// With `on_secret = "redact"`, a secret in an MCP body is refused, never redacted: a
/// redaction after the decision could make the server read another call (a private key's
/// markers in two messages would swallow everything between them).
#[tokio::test]
async fn a_secret_in_an_mcp_body_is_refused_even_where_the_tool_redacts() {
    let e = start_with(None, "on_secret = \"redact\"\n").await;
    let r = e
        .raw(
            "POST",
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"k":"-----BEGIN PRIVATE KEY-----"}}},{"jsonrpc":"2.0","id":2,"method":"ping","params":{"_meta":{"k":"-----END PRIVATE KEY-----"}}}]"#,
        )
        .await;
    let b = r.json();
    assert!(
        b.to_string().contains("secret_in_request"),
        "{}: {b}",
        r.status
    );
    assert_eq!(e.up.count(), 0);
}

/// A call made in a task: every message of a batch is within the task (a task narrowed
/// to `echo` cannot smuggle `delete_repo` in a batch that ends with `echo`), and
/// `tools/list` is decided in it.
#[tokio::test]
async fn a_batch_in_a_task_is_within_the_task_message_by_message() {
    let policy = r#"
@id("protocol") permit (principal, action == Action::"read", resource);
@id("echo") permit (principal, action == Action::"mcp:echo", resource);
@id("delete") permit (principal, action == Action::"mcp:delete_repo", resource);
"#;
    let e = start(Some(policy)).await;
    let (s, task) =
        e.gw.admin(
            "POST",
            "/tasks",
            Some(
                json!({"agent": "a1", "purpose": "echo only", "operations": ["mcp:echo", "read"]}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_string();
    let in_task = [("keygate-task", id.as_str())];
    // tools/list in the task shows only what the task includes; outside it, what the
    // policies allow.
    let list = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list"});
    let r = e.rpc(list.clone(), &in_task).await;
    assert_eq!(names(&r.json()), vec!["echo"], "{}", r.text());
    let r = e.rpc(list, &[]).await;
    assert_eq!(
        names(&r.json()),
        vec!["echo", "delete_repo"],
        "{}",
        r.text()
    );
    let listed = e.up.count();
    let batch = json!([
        call(1, "delete_repo", json!({"repo": "acme/app"})),
        call(2, "echo", json!({"message": "hi"}))
    ]);
    let b = e.rpc(batch, &in_task).await.json();
    assert!(b.is_array(), "{b}");
    assert_eq!(b[0]["error"]["data"]["error"], "task_out_of_scope", "{b}");
    assert_eq!(
        e.up.count(),
        listed,
        "nothing of the batch reached the server"
    );
    let b = e
        .rpc(call(3, "echo", json!({"message": "hi"})), &in_task)
        .await
        .json();
    assert_eq!(b["result"]["content"][0]["text"], "called \"echo\"", "{b}");
    let b = e
        .rpc(
            call(4, "delete_repo", json!({"repo": "acme/app"})),
            &in_task,
        )
        .await
        .json();
    assert_eq!(b["error"]["data"]["error"], "task_out_of_scope", "{b}");
    // Outside the task, the policies alone decide.
    let b = e
        .rpc(call(5, "delete_repo", json!({"repo": "acme/app"})), &[])
        .await
        .json();
    assert!(b["result"].is_object(), "{b}");
}

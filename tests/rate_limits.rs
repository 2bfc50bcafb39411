//! Rate limits per agent (issue 21): a burst above an agent's limit gets 429
//! `rate_limited` with `Retry-After` in the tool's dialect, other agents are unaffected,
//! keygate's clock refills the allowance, and boto3 (through keygate, in front of moto)
//! reads AWS's `Throttling` and retries it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod aws_support;
mod common;
use aws_support::*;
use common::*;
use std::time::Duration;

/// keygate with agents `a1`, `a2` and a generic tool `t` (and `u`), then `extra`.
async fn start(extra: &str) -> (TestGateway, RawUpstream, TestIssuer) {
    let up = RawUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "limits-issuer", "keygate");
    let source = secret_file(dir.path(), "t.secret", "limits-tool-credential-5c1e");
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

async fn get(gw: &TestGateway, iss: &TestIssuer, agent: &str, tool: &str) -> Response {
    let auth = bearer(&iss.token(agent));
    Client::http1()
        .get(
            &gw.url(&format!("/tools/{tool}/items")),
            &[("authorization", &auth)],
        )
        .await
}

#[tokio::test]
async fn a_burst_above_an_agents_limit_gets_429_with_retry_after_and_other_agents_go_on() {
    let (gw, up, iss) = start(
        "[[rate_limits]]\nagent = \"a1\"\nper_minute = 3\n\
         [[rate_limits]]\ntool = \"u\"\nper = \"agent_and_tool\"\nper_hour = 1\n",
    )
    .await;
    for i in 0..3 {
        assert_eq!(get(&gw, &iss, "a1", "t").await.status, 200, "call {i}");
    }
    let r = get(&gw, &iss, "a1", "t").await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"], "rate_limited", "{}", r.text());
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&wait), "Retry-After {wait}");
    assert_eq!(up.count(), 3, "the refused call never reached the tool");
    // The limit is a1's only.
    for _ in 0..5 {
        assert_eq!(get(&gw, &iss, "a2", "t").await.status, 200);
    }
    // Another tool is limited per agent and tool: a2's one call there leaves a1's.
    assert_eq!(get(&gw, &iss, "a2", "u").await.status, 200);
    assert_eq!(get(&gw, &iss, "a2", "u").await.status, 429);
    // By keygate's clock, a1's allowance refills.
    gw.advance_clock(Duration::from_secs(wait));
    assert_eq!(get(&gw, &iss, "a1", "t").await.status, 200);
    assert_eq!(get(&gw, &iss, "a1", "t").await.status, 429);

    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("keygate_rate_limited_total{tool=\"t\"} 2"),
        "{metrics}"
    );
    let audit = gw.audit().await;
    let limited: Vec<_> = audit
        .iter()
        .filter(|r| r["error"] == "rate_limited")
        .collect();
    assert_eq!(limited.len(), 3, "{audit:#?}");
    assert!(limited
        .iter()
        .all(|r| r["decision"] == "deny" && r["status"] == 429));
    assert!(limited[0]["error_detail"]
        .as_str()
        .unwrap()
        .contains("rate_limits[0]"));
}

#[tokio::test]
async fn limits_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = TestGateway::write_config(
        &dir,
        &format!(
            "{}[[rate_limits]]\nagent = \"nobody\"\ntool = \"nothing\"\ntag = \"no_such_tag\"\nper = \"planet\"\nper_second = 1\nper_minute = 2\n\
             [[rate_limits]]\nper_second = 0\n[[rate_limits]]\nper_second = 1\nburst = 0\n\
             [[rate_limits]]\nper_minute = 5\nshared = true\n",
            agent("a1", "alice@example.com")
        ),
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let e = keygate::config::parse(&path, &text)
        .unwrap_err()
        .to_string();
    for want in [
        "rate_limits[0].agent: no agent \"nobody\"",
        "rate_limits[0].tool: no tool \"nothing\"",
        "rate_limits[0].tag: no operation has the tag \"no_such_tag\"",
        "rate_limits[0].per: \"planet\"",
        "rate_limits[0]: set exactly one of per_second, per_minute and per_hour",
        "rate_limits[1]: the rate must be at least 1",
        "rate_limits[2].burst: must be at least 1",
        "rate_limits[3].shared: needs the PostgreSQL store (store.url)",
    ] {
        assert!(e.contains(want), "{want:?} not in:\n{e}");
    }
}

#[tokio::test]
async fn boto3_reads_throttling_and_retries() {
    let m = moto();
    let relay = Relay::to_moto();
    let dir = tempfile::tempdir().unwrap();
    let base = secret_file(dir.path(), "aws-base.json", &m.base_credential_json());
    let cfg = format!(
        "{}[[tools]]\nname = \"aws\"\nkind = \"aws\"\nupstream = {:?}\n\
         [tools.credential]\nprovider = \"aws\"\nrole_arn = {ROLE_ARN:?}\nsts_endpoint = {:?}\nregion = \"us-east-1\"\n{base}\
         [[rate_limits]]\nagent = \"aws-agent\"\nper_minute = 1\n",
        agent("aws-agent", "owner@example.com"),
        relay.url(),
        relay.url(),
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    let (s, b) = gw
        .admin(
            "POST",
            "/agents/aws-agent/aws-keys",
            Some(serde_json::json!({})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let env = AwsEnv::new(
        format!("http://{}/tools/aws", gw.addr),
        b["access_key_id"].as_str().unwrap(),
        b["secret_access_key"].as_str().unwrap(),
    );
    let first = env
        .boto_json(&["list-users-retrying", "--attempts", "3"])
        .await;
    assert_eq!(first["ok"]["retry_attempts"], 0, "{first}");
    let second = env
        .boto_json(&["list-users-retrying", "--attempts", "3"])
        .await;
    let e = &second["error"];
    assert_eq!(e["code"], "Throttling", "{second}");
    assert_eq!(e["status"], 429, "{second}");
    // (botocore's `max_attempts` in a Config counts the retries: 1 + 3 attempts.)
    assert_eq!(
        e["retry_attempts"], 3,
        "boto3 retried the throttled call: {second}"
    );
    assert_eq!(
        relay.count("iam:ListUsers"),
        1,
        "only the first call reached AWS"
    );
    let audit = gw.audit().await;
    let limited = audit
        .iter()
        .filter(|r| r["error"] == "rate_limited")
        .count();
    assert_eq!(limited, 4, "four attempts, each refused: {audit:#?}");
}

#[tokio::test]
async fn an_mcp_agent_over_its_limit_gets_a_json_rpc_error_with_retry_after() {
    let up = RawUpstream::with_responder(std::sync::Arc::new(|r: &Received| {
        let msg: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let answer =
            serde_json::json!({"jsonrpc": "2.0", "id": msg["id"], "result": {"content": []}});
        (
            200,
            vec![("content-type".into(), "application/json".into())],
            answer.to_string().into_bytes(),
        )
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "limits-mcp", "keygate");
    let source = secret_file(dir.path(), "mcp.secret", "limits-mcp-secret-31f0");
    let cfg = format!(
        "{}{}[[tools]]\nname = \"srv\"\nprotocol = \"mcp\"\nupstream = {:?}\n[tools.credential]\nprovider = \"static\"\n{source}\
         [[rate_limits]]\nagent = \"a1\"\nper_minute = 2\n",
        iss.toml(),
        agent("a1", "alice@example.com"),
        up.url(),
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    let auth = bearer(&iss.token("a1"));
    let rpc = |id: i64| {
        let body = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "echo", "arguments": {}}})
        .to_string();
        let (url, auth) = (gw.url("/tools/srv/mcp"), auth.clone());
        async move {
            Client::http1()
                .send(
                    "POST",
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
    for id in 1..=2 {
        let r = rpc(id).await;
        assert!(r.json()["result"].is_object(), "{}", r.text());
    }
    let r = rpc(3).await;
    assert_eq!(
        r.status,
        200,
        "MCP clients read JSON-RPC errors: {}",
        r.text()
    );
    let b = r.json();
    assert_eq!(b["id"], 3, "{b}");
    assert_eq!(b["error"]["data"]["error"], "rate_limited", "{b}");
    assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);
    assert_eq!(up.count(), 2);
}

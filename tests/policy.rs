//! Policies end to end: classification of every request as an operation (catalog, routes,
//! read/write), Cedar authorization (default deny, forbid over permit, tags, context,
//! agent attributes), approvals and pre-approvals, canonical paths, and reloading
//! policies without a restart (in-process, admin API, file watch, SIGHUP on the binary).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The policy file the tests write (besides the schema).
const MAIN: &str = "main.cedar";

const PERMIT_READ: &str = r#"
@id("read-only")
permit (principal, action in Action::"read", resource);
"#;

const PERMIT_READ_WRITE: &str = r#"
@id("read-only")
permit (principal, action in Action::"read", resource);

@id("may-write")
permit (principal, action in Action::"write", resource);
"#;

/// `dir/policies` with the repository's schema and exactly the given `.cedar` files (the
/// default policies removed). Returns the folder.
fn write_policies(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    let p = copy_default_policies(dir);
    std::fs::remove_file(p.join("default.cedar")).unwrap();
    for (name, text) in files {
        std::fs::write(p.join(name), text).unwrap();
    }
    p
}

/// A `[[tools]]` block with keygate-minted credentials; `extra` goes before the
/// credential table (kind, routes, …).
fn tool(name: &str, upstream: &str, extra: &str) -> String {
    format!(
        "[[tools]]\nname = {name:?}\nupstream = {upstream:?}\n{extra}[tools.credential]\nprovider = \"jwt\"\nscope = \"pol\"\n"
    )
}

/// An upstream answering 200 with JSON holding keygate's request id (so each response
/// can be matched to its audit record) and an `id` (a created identity's identifier).
async fn id_upstream() -> RawUpstream {
    RawUpstream::with_responder(Arc::new(|r: &Received| {
        let body = json!({
            "id": 4242,
            "request_id": r.header("x-request-id").unwrap_or_default(),
        })
        .to_string();
        (
            200,
            vec![("content-type".to_string(), "application/json".to_string())],
            body.into_bytes(),
        )
    }))
    .await
}

/// The text of the first `<tag>…</tag>` of an XML document.
fn xml_tag(text: &str, tag: &str) -> Option<String> {
    let start = text.find(&format!("<{tag}>"))? + tag.len() + 2;
    let len = text[start..].find(&format!("</{tag}>"))?;
    Some(text[start..start + len].to_string())
}

/// The request id of a response: keygate's in a refusal (JSON, or AWS `ErrorResponse`
/// XML for `kind = "aws"` tools), the upstream's echo of `X-Request-Id` in a forwarded
/// answer.
fn rid(r: &Response) -> String {
    match r.json()["request_id"].as_str() {
        Some(id) => id.to_string(),
        None => xml_tag(&r.text(), "RequestId")
            .unwrap_or_else(|| panic!("no request id in {}", r.text())),
    }
}

/// The error code of a refusal, JSON or AWS XML.
fn error_code(r: &Response) -> Option<String> {
    match r.json()["error"].as_str() {
        Some(c) => Some(c.to_string()),
        None => xml_tag(&r.text(), "Code"),
    }
}

/// The approval id of an `approval_required` refusal, JSON or AWS XML (in the message).
fn approval_id(r: &Response) -> Option<String> {
    if let Some(id) = r.json()["approval_id"].as_str() {
        return Some(id.to_string());
    }
    let msg = xml_tag(&r.text(), "Message")?;
    let start = msg.find("(approval_id: ")? + "(approval_id: ".len();
    let len = msg[start..].find(')')?;
    Some(msg[start..start + len].to_string())
}

/// The audit record of one request (waits for the background writer).
async fn audit_of(gw: &TestGateway, request_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(r) = gw
            .audit()
            .await
            .into_iter()
            .find(|r| r["request_id"] == request_id)
        {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "no audit record for request {request_id}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// Sends a request as the agent holding `token`.
async fn call(
    gw: &TestGateway,
    token: &str,
    method: &str,
    path: &str,
    ctype: Option<&str>,
    body: &str,
) -> Response {
    let auth = bearer(token);
    let mut headers: Vec<(&str, &str)> = vec![("authorization", &auth)];
    if let Some(c) = ctype {
        headers.push(("content-type", c));
    }
    Client::http1()
        .send(method, &gw.url(path), &headers, body.to_string())
        .await
}

async fn get(gw: &TestGateway, token: &str, path: &str) -> Response {
    call(gw, token, "GET", path, None, "").await
}

async fn post(gw: &TestGateway, token: &str, path: &str) -> Response {
    call(
        gw,
        token,
        "POST",
        path,
        Some("application/json"),
        "{\"a\":1}",
    )
    .await
}

/// Starts keygate in `dir` on its own policies (already written) with `rest` appended to
/// the issuer's config.
async fn start(dir: tempfile::TempDir, iss: &TestIssuer, rest: &str) -> TestGateway {
    let cfg = format!("[policies]\ndir = \"policies\"\n{}{rest}", iss.toml());
    TestGateway::start_in(dir, &cfg).await
}

fn assert_refused(r: &Response, status: u16, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert_eq!(error_code(r).as_deref(), Some(code), "{what}: {}", r.text());
}

// ------------------------------------------------------------------ 1. default deny

#[tokio::test]
async fn default_deny_permit_and_forbid_override() {
    let up = id_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "pol-iss", "keygate");
    let forbid = r#"
@id("no-secret-area")
forbid (principal, action, resource)
when { context.path like "/secret*" };
"#;
    write_policies(dir.path(), &[(MAIN, PERMIT_READ), ("forbid.cedar", forbid)]);
    let gw = start(
        dir,
        &iss,
        &format!("{}{}", agent("a1", "o@x"), tool("t", &up.url(), "")),
    )
    .await;
    let token = iss.token("a1");

    // Allowed by the read permit.
    let r = get(&gw, &token, "/tools/t/items").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = audit_of(&gw, &rid(&r)).await;
    assert_eq!(rec["decision"], "allow");
    assert_eq!(rec["operation"], "read");
    assert_eq!(strings(&rec["tags"]), ["read"]);
    assert_eq!(strings(&rec["policies"]), ["read-only"]);
    assert_eq!(up.count(), 1);

    // No permit for writes: default deny, nothing forwarded, no policy named.
    let r = post(&gw, &token, "/tools/t/items").await;
    assert_refused(&r, 403, "forbidden", "POST under a read-only policy set");
    let rec = audit_of(&gw, &rid(&r)).await;
    assert_eq!(rec["decision"], "deny");
    assert_eq!(rec["error"], "forbidden");
    assert_eq!(rec["operation"], "write");
    assert_eq!(rec["status"], 403);
    assert_eq!(strings(&rec["policies"]), Vec::<String>::new());
    for m in ["PUT", "DELETE", "PATCH"] {
        let r = call(&gw, &token, m, "/tools/t/items", None, "").await;
        assert_refused(&r, 403, "forbidden", m);
    }
    assert_eq!(up.count(), 1, "a denied request reached the upstream");

    // A matching forbid beats the permit, and the audit names it.
    let r = get(&gw, &token, "/tools/t/secret/plans").await;
    assert_refused(&r, 403, "forbidden", "GET under a forbid");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("no-secret-area"),
        "{}",
        r.text()
    );
    let rec = audit_of(&gw, &rid(&r)).await;
    assert_eq!(rec["decision"], "deny");
    assert_eq!(strings(&rec["policies"]), ["no-secret-area"]);
    // The forbid sees the canonical path: dot segments do not get around it.
    let r = get(&gw, &token, "/tools/t/public/../secret/plans").await;
    assert_refused(&r, 403, "forbidden", "forbid through a dot segment");
    assert_eq!(up.count(), 1, "a forbidden request reached the upstream");
}

// ------------------------------------------------------------------ 2. routes

const ISSUE_ROUTES: &str = r#"routes = [
  { method = "GET", path = "/repos/{owner}/{repo}/issues", operation = "gh:list_issues", tags = ["read"] },
  { method = "POST", path = "/repos/{owner}/{repo}/issues", operation = "gh:create_issue", tags = ["write", "issues"] },
]
"#;

#[tokio::test]
async fn route_operations_and_custom_groups_decide() {
    let up = id_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "pol-iss", "keygate");
    let policies = r#"
@id("anyone-lists-issues")
permit (principal, action == Action::"gh:list_issues", resource == Tool::"gh");

@id("writer-creates-issues")
permit (principal == Agent::"writer", action == Action::"gh:create_issue", resource);

@id("triager-does-issues")
permit (principal == Agent::"triager", action in Action::"issues", resource);
"#;
    write_policies(dir.path(), &[(MAIN, policies)]);
    let rest = format!(
        "{}{}{}{}",
        agent("reader", "o@x"),
        agent("writer", "o@x"),
        agent("triager", "o@x"),
        tool("gh", &up.url(), ISSUE_ROUTES)
    );
    let gw = start(dir, &iss, &rest).await;
    let (reader, writer, triager) = (
        iss.token("reader"),
        iss.token("writer"),
        iss.token("triager"),
    );

    // GET issues is gh:list_issues (tag read), which the first policy permits.
    let r = get(&gw, &reader, "/tools/gh/repos/acme/app/issues").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = audit_of(&gw, &rid(&r)).await;
    assert_eq!(rec["operation"], "gh:list_issues");
    assert_eq!(strings(&rec["tags"]), ["read"]);
    assert_eq!(strings(&rec["policies"]), ["anyone-lists-issues"]);
    // Literal segments match whatever their case.
    let r = get(&gw, &reader, "/tools/gh/REPOS/acme/app/Issues").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(audit_of(&gw, &rid(&r)).await["operation"], "gh:list_issues");
    // Another GET is plain `read`, which no policy permits: the route decided above.
    let r = get(&gw, &reader, "/tools/gh/repos/acme/app/pulls").await;
    assert_refused(&r, 403, "forbidden", "plain read");
    assert_eq!(audit_of(&gw, &rid(&r)).await["operation"], "read");

    // POST issues is gh:create_issue: the reader has no permit...
    let r = post(&gw, &reader, "/tools/gh/repos/acme/app/issues").await;
    assert_refused(&r, 403, "forbidden", "reader creating an issue");
    let rec = audit_of(&gw, &rid(&r)).await;
    assert_eq!(rec["operation"], "gh:create_issue");
    assert_eq!(strings(&rec["tags"]), ["write", "issues"]);
    assert_eq!(strings(&rec["policies"]), Vec::<String>::new());
    // Methods are matched whatever their case (servers such as Django and Flask
    // upper-case them): `post` is gh:create_issue too, and is forwarded as POST.
    for m in ["post", "Post"] {
        let r = call(&gw, &reader, m, "/tools/gh/repos/acme/app/issues", None, "").await;
        assert_refused(&r, 403, "forbidden", m);
        assert_eq!(
            audit_of(&gw, &rid(&r)).await["operation"],
            "gh:create_issue",
            "{m}"
        );
    }
    // ...the writer's names the action...
    let r = post(&gw, &writer, "/tools/gh/repos/acme/app/issues").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = audit_of(&gw, &rid(&r)).await;
    assert_eq!(rec["operation"], "gh:create_issue");
    assert_eq!(strings(&rec["tags"]), ["write", "issues"]);
    assert_eq!(strings(&rec["policies"]), ["writer-creates-issues"]);
    // ...and the triager's names the custom group `issues`.
    let r = post(&gw, &triager, "/tools/gh/repos/acme/app/issues").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        strings(&audit_of(&gw, &rid(&r)).await["policies"]),
        ["triager-does-issues"]
    );
    let r = call(
        &gw,
        &triager,
        "post",
        "/tools/gh/repos/acme/app/issues",
        None,
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        audit_of(&gw, &rid(&r)).await["operation"],
        "gh:create_issue"
    );
    // The group holds gh:create_issue only: the triager's other writes are denied.
    let r = post(&gw, &triager, "/tools/gh/repos/acme/app/pulls").await;
    assert_refused(&r, 403, "forbidden", "triager's plain write");
    assert_eq!(audit_of(&gw, &rid(&r)).await["operation"], "write");
    // The writer's permit is for gh:create_issue, not for writes in general.
    let r = post(&gw, &writer, "/tools/gh/repos/acme/app/pulls").await;
    assert_refused(&r, 403, "forbidden", "writer's plain write");
    assert_eq!(up.count(), 5);

    // `keygate schema` prints the route actions and the group.
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["schema", "--config"])
        .arg(gw.dir.path().join("keygate.toml"))
        .output()
        .unwrap();
    let schema = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "action \"issues\";",
        "action \"gh:create_issue\" in [\"write\", \"issues\"]",
        "action \"gh:list_issues\" in [\"read\"]",
        "action \"github:create_deploy_key\" in [\"write\", \"identity_creation\"]",
        "entity Agent",
    ] {
        assert!(schema.contains(line), "schema lacks {line:?}:\n{schema}");
    }
}

// ------------------------------------------------------------------ 3. attributes, context

#[tokio::test]
async fn agent_attributes_context_and_resource() {
    let up = id_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "pol-iss", "keygate");
    let policies = r#"
@id("platform-team-runs-infra")
permit (principal, action, resource == Tool::"infra")
when { principal.hasTag("team") && principal.getTag("team") == "platform" };

@id("anyone-reads-infra-status")
permit (principal, action, resource == Tool::"infra")
when { context.method == "GET" && context.path == "/status" };

@id("no-deletes")
forbid (principal, action, resource)
when { context.method == "DELETE" };

@id("anyone-reads-docs")
permit (principal, action in Action::"read", resource == Tool::"docs");
"#;
    write_policies(dir.path(), &[(MAIN, policies)]);
    let rest = format!(
        "[[agents]]\nid = \"plat\"\nowner = \"o@x\"\nattributes = {{ team = \"platform\" }}\n\
         [[agents]]\nid = \"web\"\nowner = \"o@x\"\nattributes = {{ team = \"web\", role = \"platform\" }}\n\
         {}{}{}",
        agent("plain", "o@x"),
        tool("infra", &up.url(), ""),
        tool("docs", &up.url(), "")
    );
    let gw = start(dir, &iss, &rest).await;
    let (plat, web, plain) = (iss.token("plat"), iss.token("web"), iss.token("plain"));

    // The tag decides.
    let r = post(&gw, &plat, "/tools/infra/deploy").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        strings(&audit_of(&gw, &rid(&r)).await["policies"]),
        ["platform-team-runs-infra"]
    );
    // A forbid on context.method holds whatever the method's case.
    for m in ["DELETE", "delete", "Delete"] {
        let r = call(&gw, &plat, m, "/tools/infra/deploy", None, "").await;
        assert_refused(&r, 403, "forbidden", m);
        assert_eq!(
            strings(&audit_of(&gw, &rid(&r)).await["policies"]),
            ["no-deletes"],
            "{m}"
        );
    }
    let r = post(&gw, &web, "/tools/infra/deploy").await;
    assert_refused(&r, 403, "forbidden", "another team");
    let r = post(&gw, &plain, "/tools/infra/deploy").await;
    assert_refused(&r, 403, "forbidden", "no team tag");

    // context.method and context.path (canonical, relative to the tool).
    let r = get(&gw, &web, "/tools/infra/status").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        strings(&audit_of(&gw, &rid(&r)).await["policies"]),
        ["anyone-reads-infra-status"]
    );
    let r = get(&gw, &plain, "/tools/infra/x/..//status").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call(&gw, &web, "POST", "/tools/infra/status", None, "").await;
    assert_refused(&r, 403, "forbidden", "method in context");
    let r = get(&gw, &web, "/tools/infra/status/more").await;
    assert_refused(&r, 403, "forbidden", "path in context");

    // resource == Tool::"docs" for reads only; the platform permit names infra only.
    let r = get(&gw, &plain, "/tools/docs/page").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post(&gw, &plat, "/tools/docs/page").await;
    assert_refused(&r, 403, "forbidden", "platform writing docs");
    let r = get(&gw, &plain, "/tools/infra/page").await;
    assert_refused(&r, 403, "forbidden", "reading infra beyond /status");
    assert_eq!(up.count(), 4);
}

// ------------------------------------------------------------------ policy errors

/// Policy conditions whose evaluation fails for every request and that strict validation
/// lets through (it refuses unguarded tag and attribute reads): an overflow that depends on
/// the request, and one that does not (so its slice's decisions would be cached).
const FAILING_CONDITIONS: [(&str, &str); 2] = [
    (
        "overflow on the request's time",
        "context.time * 9223372036854775807 > 0",
    ),
    ("constant overflow", "9223372036854775807 + 1 > 0"),
];

#[tokio::test]
async fn a_forbid_that_fails_to_evaluate_denies_and_is_named() {
    for (what, condition) in FAILING_CONDITIONS {
        let up = id_upstream().await;
        let dir = tempfile::tempdir().unwrap();
        let iss = TestIssuer::new(dir.path(), "pol-iss", "keygate");
        let forbid = format!(
            "@id(\"failing-forbid\")\nforbid (principal, action in Action::\"write\", resource)\nwhen {{ {condition} }};\n"
        );
        write_policies(
            dir.path(),
            &[(MAIN, PERMIT_READ_WRITE), ("f.cedar", &forbid)],
        );
        let rest = format!("{}{}", agent("plain", "o@x"), tool("t", &up.url(), ""));
        let gw = start(dir, &iss, &rest).await;
        let token = iss.token("plain");

        // Twice: the second answer must not come from a cache that forgot the failure.
        for i in 0..2 {
            let r = post(&gw, &token, "/tools/t/items").await;
            assert_refused(&r, 403, "forbidden", &format!("{what} {i}"));
            let msg = r.json()["message"].as_str().unwrap().to_string();
            assert!(msg.contains("failing-forbid"), "{what} {i}: {msg}");
            let rec = audit_of(&gw, &rid(&r)).await;
            assert_eq!(rec["decision"], "deny", "{what} {i}");
            assert_eq!(strings(&rec["policies"]), ["failing-forbid"], "{what} {i}");
            assert_eq!(
                strings(&rec["policy_errors"]),
                ["failing-forbid"],
                "{what} {i}"
            );
        }
        // The forbid does not apply to reads: nothing fails, nothing is named.
        let r = get(&gw, &token, "/tools/t/items").await;
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        let rec = audit_of(&gw, &rid(&r)).await;
        assert_eq!(strings(&rec["policies"]), ["read-only"], "{what}");
        assert!(rec.get("policy_errors").is_none(), "{what}: {rec}");
        assert_eq!(
            up.count(),
            1,
            "{what}: a denied request reached the upstream"
        );
    }
}

#[tokio::test]
async fn a_permit_that_fails_to_evaluate_does_not_permit() {
    for (what, condition) in FAILING_CONDITIONS {
        let up = id_upstream().await;
        let dir = tempfile::tempdir().unwrap();
        let iss = TestIssuer::new(dir.path(), "pol-iss", "keygate");
        let permit = format!(
            "@id(\"failing-permit\")\npermit (principal, action, resource)\nwhen {{ {condition} }};\n"
        );
        write_policies(dir.path(), &[(MAIN, PERMIT_READ), ("p.cedar", &permit)]);
        let rest = format!("{}{}", agent("plain", "o@x"), tool("t", &up.url(), ""));
        let gw = start(dir, &iss, &rest).await;
        let token = iss.token("plain");

        // Only the failing permit could allow a write: default deny, and it is named.
        for i in 0..2 {
            let r = post(&gw, &token, "/tools/t/items").await;
            assert_refused(&r, 403, "forbidden", &format!("{what} {i}"));
            let rec = audit_of(&gw, &rid(&r)).await;
            assert_eq!(
                strings(&rec["policies"]),
                Vec::<String>::new(),
                "{what} {i}"
            );
            assert_eq!(
                strings(&rec["policy_errors"]),
                ["failing-permit"],
                "{what} {i}"
            );
        }
        // Another permit still allows a read; the failure is on the record.
        let r = get(&gw, &token, "/tools/t/items").await;
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        let rec = audit_of(&gw, &rid(&r)).await;
        assert_eq!(strings(&rec["policies"]), ["read-only"], "{what}");
        assert_eq!(strings(&rec["policy_errors"]), ["failing-permit"], "{what}");
        assert_eq!(up.count(), 1, "{what}");
    }
}

#[tokio::test]
async fn an_approval_gate_that_fails_once_approved_denies_without_asking() {
    let up = id_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "pol-iss", "keygate");
    // Unapproved, the gate matches; approved, its condition fails to evaluate: an
    // approval would not let the request through, so none is asked for.
    let policies = r#"
@id("agents-may-call-tools")
permit (principal is Agent, action, resource is Tool);

@id("failing-gate")
@approval("a human approves every write")
forbid (principal, action in Action::"write", resource)
unless { context.approved && context.time * 9223372036854775807 < 0 };
"#;
    write_policies(dir.path(), &[(MAIN, policies)]);
    let rest = format!("{}{}", agent("plain", "o@x"), tool("t", &up.url(), ""));
    let gw = start(dir, &iss, &rest).await;
    let r = post(&gw, &iss.token("plain"), "/tools/t/items").await;
    assert_refused(&r, 403, "forbidden", "a write behind a failing gate");
    let rec = audit_of(&gw, &rid(&r)).await;
    assert_eq!(strings(&rec["policies"]), ["failing-gate"]);
    assert_eq!(strings(&rec["policy_errors"]), ["failing-gate"]);
    assert!(rec["approval_id"].is_null(), "{rec}");
    // Reads are not gated.
    let r = get(&gw, &iss.token("plain"), "/tools/t/items").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.count(), 1);
}

// ------------------------------------------------------------------ 4. @preapproved

#[tokio::test]
async fn preapproved_permit_lifts_the_approval_gate_for_its_requests_only() {
    let up = id_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "pol-iss", "keygate");
    copy_default_policies(dir.path());
    std::fs::write(
        dir.path().join("policies/preapproved.cedar"),
        r#"
@id("ci-bot-may-rotate-its-deploy-keys")
@preapproved
permit (principal == Agent::"ci-bot", action == Action::"github:create_deploy_key", resource == Tool::"github")
when { context.path like "/repos/acme/ci-*" };

@id("no-keys-on-prod")
forbid (principal, action, resource)
when { context.path like "/repos/acme/ci-prod/*" };
"#,
    )
    .unwrap();
    let rest = format!(
        "{}{}{}",
        agent("ci-bot", "ci-owner@x"),
        agent("other", "o@x"),
        tool("github", &up.url(), "kind = \"github\"\n")
    );
    let gw = start(dir, &iss, &rest).await;
    let key_body =
        r#"{"title":"ci","key":"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample","read_only":true}"#;
    let create = |token: String, path: &'static str| {
        let gw = &gw;
        async move { call(gw, &token, "POST", path, Some("application/json"), key_body).await }
    };

    // Pre-approved: forwarded without a human.
    let r = create(iss.token("ci-bot"), "/tools/github/repos/acme/ci-app/keys").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.count(), 1);
    let rec = audit_of(&gw, &rid(&r)).await;
    assert_eq!(rec["decision"], "allow");
    assert_eq!(rec["operation"], "github:create_deploy_key");
    assert_eq!(rec["identity_kind"], "deploy_key");
    assert!(rec["approval_id"].is_null(), "{rec}");
    assert!(rec["inventory_id"].is_string(), "{rec}");
    assert!(
        strings(&rec["policies"]).contains(&"ci-bot-may-rotate-its-deploy-keys".to_string()),
        "{rec}"
    );

    // Another agent, same request: a human must approve.
    let r = create(iss.token("other"), "/tools/github/repos/acme/ci-app/keys").await;
    assert_refused(&r, 403, "approval_required", "other agent");
    assert!(
        r.json()["approval_id"]
            .as_str()
            .unwrap()
            .starts_with("apr_"),
        "{}",
        r.text()
    );
    let rec = audit_of(&gw, &rid(&r)).await;
    assert_eq!(
        strings(&rec["policies"]),
        ["identity-creation-needs-approval"]
    );
    // The same agent outside the pre-approved repositories: a human must approve.
    let r = create(iss.token("ci-bot"), "/tools/github/repos/acme/web/keys").await;
    assert_refused(&r, 403, "approval_required", "ci-bot outside ci-*");
    // Nor does it lift a plain forbid, or the gate of another operation.
    let r = create(iss.token("ci-bot"), "/tools/github/repos/acme/ci-prod/keys").await;
    assert_refused(&r, 403, "forbidden", "pre-approved but forbidden");
    let denied_by = strings(&audit_of(&gw, &rid(&r)).await["policies"]);
    assert!(
        denied_by.contains(&"no-keys-on-prod".to_string()),
        "{denied_by:?}"
    );
    let r = create(iss.token("ci-bot"), "/tools/github/user/keys").await;
    assert_refused(&r, 403, "approval_required", "ci-bot creating an SSH key");
    assert_eq!(
        audit_of(&gw, &rid(&r)).await["operation"],
        "github:create_ssh_key"
    );
    assert_eq!(
        up.count(),
        1,
        "a request needing approval reached the upstream"
    );

    // The inventory records the pre-approved creation, the policy as approver.
    let (status, inv) = gw.admin("GET", "/inventory", None).await;
    assert_eq!(status, 200, "{inv}");
    let ids = inv["identities"].as_array().unwrap();
    assert_eq!(ids.len(), 1, "{inv}");
    let e = &ids[0];
    assert_eq!(e["agent_id"], "ci-bot");
    assert_eq!(e["tool"], "github");
    assert_eq!(e["kind"], "deploy_key");
    assert_eq!(e["operation"], "github:create_deploy_key");
    assert_eq!(e["identifier"], "4242");
    assert_eq!(e["owner"], "ci-owner@x");
    assert!(e["approval_id"].is_null(), "{e}");
    let approver = e["approver"].as_str().unwrap();
    assert!(approver.starts_with("policy:"), "{approver}");
    assert!(
        approver.contains("ci-bot-may-rotate-its-deploy-keys"),
        "{approver}"
    );
}

// ------------------------------------------------------------------ 5. obfuscation

/// A request that must be held for approval: what it is, its expected operation, method,
/// content type, body and path.
type Gated = (
    String,
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
    &'static str,
);

#[tokio::test]
async fn obfuscated_identity_creation_is_still_gated() {
    let up = id_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "pol-iss", "keygate");
    // The default policies: everything allowed, identity creation needs approval.
    let rest = format!(
        "{}{}{}{}{}",
        agent("a1", "o@x"),
        tool("github", &up.url(), "kind = \"github\"\n"),
        tool("aws", &up.url(), "kind = \"aws\"\n"),
        tool("k8s", &up.url(), "kind = \"kubernetes\"\n"),
        tool(
            "svc",
            &up.url(),
            "routes = [{ method = \"POST\", path = \"/tokens\", operation = \"svc:create_token\", tags = [\"write\"], identity_kind = \"api_token\" }]\n"
        )
    );
    let cfg = format!("{}{rest}", iss.toml());
    let gw = TestGateway::start_in(dir, &cfg).await;
    let token = iss.token("a1");
    let json_ct = Some("application/json");
    let form_ct = Some("application/x-www-form-urlencoded");
    let key_body = r#"{"title":"ci","key":"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample"}"#;

    let mut cases: Vec<Gated> = Vec::new();
    for path in [
        "/tools/github/repos/o/r/keys",
        "/tools/github//repos//o/r/keys",
        "/tools/github/repos/o/./r/keys",
        "/tools/github/repos/x/../o/r/keys",
        "/tools/x/../github/repos/o/r/keys",
        "/tools/github/%72epos/o/r/keys",
        "/tools/github/repos/o/r/%6B%65%79%73",
        "/tools/github/REPOS/o/r/KEYS",
        "/tools/github/repos/o/r/keys/",
        "/tools/github/repos/o/r/keys;x=1",
    ] {
        cases.push((
            format!("github {path}"),
            "github:create_deploy_key",
            "POST",
            json_ct,
            key_body,
            path,
        ));
    }
    cases.push((
        "github lowercase method".into(),
        "github:create_deploy_key",
        "post",
        json_ct,
        key_body,
        "/tools/github/repos/o/r/keys",
    ));
    for m in ["POST", "post", "pOsT"] {
        cases.push((
            format!("route with identity_kind, method {m}"),
            "svc:create_token",
            m,
            json_ct,
            "{}",
            "/tools/svc/tokens",
        ));
    }
    let aws: [(&str, &str, Option<&str>, &str, &str); 8] = [
        (
            "query",
            "GET",
            None,
            "",
            "/tools/aws/?Action=CreateAccessKey&UserName=bob",
        ),
        (
            "form body",
            "POST",
            form_ct,
            "Action=CreateAccessKey&UserName=bob",
            "/tools/aws/",
        ),
        (
            "percent-encoded",
            "GET",
            None,
            "",
            "/tools/aws/?Action=Create%41ccessKey",
        ),
        (
            "mixed case",
            "GET",
            None,
            "",
            "/tools/aws/?aCtIoN=createaccesskey",
        ),
        (
            "JSON body",
            "POST",
            json_ct,
            r#"{"Action":"CreateAccessKey"}"#,
            "/tools/aws/",
        ),
        (
            "duplicated",
            "GET",
            None,
            "",
            "/tools/aws/?Action=ListUsers&Action=CreateAccessKey",
        ),
        (
            "form body, no content type",
            "POST",
            None,
            "Version=2010-05-08&Action=CreateAccessKey",
            "/tools/aws/",
        ),
        (
            "form body, JSON content type",
            "POST",
            json_ct,
            "Action=CreateAccessKey",
            "/tools/aws/iam",
        ),
    ];
    for (what, method, ct, body, path) in aws {
        cases.push((
            format!("aws {what}"),
            "aws:CreateAccessKey",
            method,
            ct,
            body,
            path,
        ));
    }
    let sa_token = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s","annotations":{"kubernetes.io/service-account.name":"sa"}},"type":"kubernetes.io/service-account-token"}"#;
    cases.push((
        "kubernetes service-account-token secret".into(),
        "kubernetes:create_serviceaccount_token_secret",
        "POST",
        json_ct,
        sa_token,
        "/tools/k8s/api/v1/namespaces/ns/secrets",
    ));
    cases.push((
        "kubernetes service-account-token secret, obfuscated path".into(),
        "kubernetes:create_serviceaccount_token_secret",
        "POST",
        json_ct,
        sa_token,
        "/tools/k8s/API/v1//namespaces/ns/./%73ecrets/",
    ));

    for (what, op, method, ct, body, path) in &cases {
        let r = call(&gw, &token, method, path, *ct, body).await;
        assert_refused(&r, 403, "approval_required", what);
        let id =
            approval_id(&r).unwrap_or_else(|| panic!("{what}: no approval id in {}", r.text()));
        assert!(id.starts_with("apr_"), "{what}: {id}");
        let rec = audit_of(&gw, &rid(&r)).await;
        assert_eq!(rec["approval_id"], id.as_str(), "{what}: {rec}");
        assert_eq!(rec["operation"], *op, "{what}: {rec}");
        assert_eq!(rec["decision"], "needs_approval", "{what}: {rec}");
        assert_eq!(
            up.count(),
            0,
            "{what}: an identity creation reached the upstream"
        );
    }

    // Near misses pass: they are not identity creation.
    let r = get(&gw, &token, "/tools/aws/?Action=ListAccessKeys").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(audit_of(&gw, &rid(&r)).await["operation"], "read");
    let r = call(
        &gw,
        &token,
        "POST",
        "/tools/aws/",
        form_ct,
        "Action=ListAccessKeys",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(audit_of(&gw, &rid(&r)).await["operation"], "write");
    let r = get(&gw, &token, "/tools/github/repos/o/r/keys").await;
    assert_eq!(r.status, 200, "listing deploy keys: {}", r.text());
    let opaque = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"type":"Opaque","data":{"k":"dg=="}}"#;
    let r = call(
        &gw,
        &token,
        "POST",
        "/tools/k8s/api/v1/namespaces/ns/secrets",
        json_ct,
        opaque,
    )
    .await;
    assert_eq!(r.status, 200, "Opaque secret: {}", r.text());
    assert_eq!(audit_of(&gw, &rid(&r)).await["operation"], "write");
    assert_eq!(up.count(), 4);
    let got = up.requests();
    assert_eq!(got[0].target(), "/?Action=ListAccessKeys");
    assert_eq!(got[3].target(), "/api/v1/namespaces/ns/secrets");
    assert_eq!(got[3].body, opaque.as_bytes());
}

// ------------------------------------------------------------------ 6. ambiguous paths

#[tokio::test]
async fn ambiguous_paths_are_refused_and_canonical_paths_forwarded() {
    let up = id_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "pol-iss", "keygate");
    let base = format!("{}/base", up.url());
    let cfg = format!(
        "{}{}{}{}",
        iss.toml(),
        agent("a1", "o@x"),
        tool("t", &up.url(), ""),
        tool("b", &base, "")
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    let token = iss.token("a1");

    for path in [
        "/tools/t/a%2Fb",
        "/tools/t/a%2fb",
        "/tools/t%2Fa",
        "/tools/t/a/%2e%2e/b",
        "/tools/t/a/%2E/b",
        "/tools/t/%2e",
        "/tools/t/a%00b",
        "/tools/t/a%5Cb",
        "/tools/t/a%5cb",
        "/tools/t/a%zz",
    ] {
        let r = get(&gw, &token, path).await;
        assert_refused(&r, 400, "ambiguous_path", path);
        let rec = audit_of(&gw, &rid(&r)).await;
        assert_eq!(rec["error"], "ambiguous_path", "{path}");
        let r = post(&gw, &token, path).await;
        assert_refused(&r, 400, "ambiguous_path", path);
    }
    assert_eq!(up.count(), 0, "an ambiguous path was forwarded");

    let cases = [
        ("/tools/t/a//b/./c", "/a/b/c"),
        ("/tools/t/a/x/../b/c?q=1&r=%2F", "/a/b/c?q=1&r=%2F"),
        ("/tools/t/%7Euser/%61%62c", "/~user/abc"),
        ("/tools/t/a/%e2%82%ac", "/a/%E2%82%AC"),
        ("/tools/t/a/b/../../etc/passwd", "/etc/passwd"),
        ("/tools/t/dir/", "/dir/"),
        ("/tools/b/x/./y", "/base/x/y"),
        ("/tools/b/x/y/../../z", "/base/z"),
    ];
    for (i, (path, target)) in cases.iter().enumerate() {
        let r = get(&gw, &token, path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(up.requests()[i].target(), *target, "{path}");
    }
    // `/tools/t/../../x` climbs out of the tool: it is `/x`, no tool.
    let r = get(&gw, &token, "/tools/t/../../x").await;
    assert_refused(&r, 404, "unknown_tool", "climbing out of the tool prefix");
    assert_eq!(up.count(), cases.len());
}

// ------------------------------------------------------------------ 7. reload

#[tokio::test]
async fn reload_applies_new_policies_and_refuses_broken_ones() {
    let up = id_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "pol-iss", "keygate");
    let pdir = write_policies(dir.path(), &[(MAIN, PERMIT_READ)]);
    let gw = start(
        dir,
        &iss,
        &format!("{}{}", agent("a1", "o@x"), tool("t", &up.url(), "")),
    )
    .await;
    let token = iss.token("a1");
    let check = |get_status: u16, post_status: u16, what: &'static str| {
        let (gw, token) = (&gw, &token);
        async move {
            assert_eq!(
                get(gw, token, "/tools/t/x").await.status,
                get_status,
                "{what}: GET"
            );
            assert_eq!(
                post(gw, token, "/tools/t/x").await.status,
                post_status,
                "{what}: POST"
            );
        }
    };
    check(200, 403, "initial read-only policies").await;

    // In-process reload.
    std::fs::write(pdir.join(MAIN), PERMIT_READ_WRITE).unwrap();
    check(200, 403, "edited but not reloaded").await;
    gw.runtime.reload().await.unwrap();
    check(200, 200, "after Runtime::reload").await;
    let r = post(&gw, &token, "/tools/t/x").await;
    assert_eq!(
        strings(&audit_of(&gw, &rid(&r)).await["policies"]),
        ["may-write"]
    );

    // Admin API reload.
    std::fs::write(pdir.join(MAIN), PERMIT_READ).unwrap();
    let (status, body) = gw.admin("POST", "/reload", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reloaded"], true);
    check(200, 403, "after POST /reload").await;

    // Broken policies are refused; the running ones stay.
    let broken: [(&str, &str, &str); 5] = [
        ("syntax.cedar", "permit (principal action resource", "syntax error"),
        (
            "unknown-action.cedar",
            "@id(\"bad-action\")\npermit (principal, action == Action::\"no_such_operation\", resource);",
            "unknown action",
        ),
        (
            "unknown-attribute.cedar",
            "@id(\"bad-attr\")\npermit (principal, action, resource) when { principal.nickname == \"x\" };",
            "unknown attribute",
        ),
        (
            "unknown-context.cedar",
            "@id(\"bad-context\")\npermit (principal, action, resource) when { context.weather == \"sunny\" };",
            "unknown context field",
        ),
        (
            "approval-on-permit.cedar",
            "@id(\"bad-annotation\")\n@approval(\"x\")\npermit (principal, action, resource);",
            "@approval on a permit",
        ),
    ];
    for (file, text, what) in broken {
        // Each broken file also permits writes if it were loaded.
        let path = pdir.join(file);
        std::fs::write(&path, format!("{text}\n@id(\"{file}-write\")\npermit (principal, action in Action::\"write\", resource);\n")).unwrap();
        let before = gw.runtime.current();
        let err = gw.runtime.reload().await.expect_err(what);
        assert!(
            err.contains(file),
            "{what}: the error does not name {file}: {err}"
        );
        assert!(
            Arc::ptr_eq(&before, &gw.runtime.current()),
            "{what}: the gateway was replaced"
        );
        let (status, body) = gw.admin("POST", "/reload", None).await;
        assert_eq!(status, 422, "{what}: {body}");
        assert_eq!(body["error"], "reload_refused", "{what}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(file),
            "{what}: {body}"
        );
        check(200, 403, what).await;
        std::fs::remove_file(&path).unwrap();
    }
    // A broken config file is refused the same way.
    let cfg_path = gw.dir.path().join("keygate.toml");
    let good_cfg = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(&cfg_path, format!("{good_cfg}\nnot_a_key = 1\n")).unwrap();
    std::fs::write(pdir.join(MAIN), PERMIT_READ_WRITE).unwrap();
    assert!(
        gw.runtime.reload().await.is_err(),
        "a broken config was accepted"
    );
    check(200, 403, "broken config").await;
    // Fixed: the next reload applies.
    std::fs::write(&cfg_path, good_cfg).unwrap();
    let (status, body) = gw.admin("POST", "/reload", None).await;
    assert_eq!(status, 200, "{body}");
    check(200, 200, "fixed").await;
}

#[tokio::test]
async fn file_watch_reloads_policies() {
    let up = id_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "pol-iss", "keygate");
    let pdir = write_policies(dir.path(), &[(MAIN, PERMIT_READ)]);
    let gw = start(
        dir,
        &iss,
        &format!("{}{}", agent("a1", "o@x"), tool("t", &up.url(), "")),
    )
    .await;
    let token = iss.token("a1");
    keygate::gateway::spawn_file_watch(&gw.runtime, Duration::from_millis(200));
    assert_eq!(post(&gw, &token, "/tools/t/x").await.status, 403);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let wait_for = |want: u16, what: &'static str| {
        let (gw, token) = (&gw, &token);
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let s = post(gw, token, "/tools/t/x").await.status;
                if s == want {
                    return;
                }
                assert!(Instant::now() < deadline, "{what}: still {s} after 10 s");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    std::fs::write(pdir.join(MAIN), PERMIT_READ_WRITE).unwrap();
    wait_for(200, "edit picked up by the file watch").await;

    // A broken edit is seen and refused; the running policies stay.
    let before = gw.runtime.current();
    std::fs::write(
        pdir.join(MAIN),
        "permit (principal, action in Action::\"read\" resource);",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        Arc::ptr_eq(&before, &gw.runtime.current()),
        "a broken policy replaced the gateway"
    );
    assert_eq!(post(&gw, &token, "/tools/t/x").await.status, 200);
    assert_eq!(get(&gw, &token, "/tools/t/x").await.status, 200);

    // A new file is a change too.
    std::fs::write(pdir.join(MAIN), PERMIT_READ_WRITE).unwrap();
    std::fs::write(
        pdir.join("forbid.cedar"),
        "@id(\"freeze\")\nforbid (principal, action in Action::\"write\", resource);",
    )
    .unwrap();
    wait_for(403, "new forbid file picked up").await;
    assert_eq!(get(&gw, &token, "/tools/t/x").await.status, 200);
}

// ------------------------------------------------------------------ 8. in-flight requests

/// An upstream that records each request target as it arrives and answers `/slow…` only
/// after at least 500 ms and after `release` turns true (so the test decides when).
async fn slow_upstream() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    tokio::sync::watch::Sender<bool>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (release, release_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            let mut release = release_rx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let target = head.split(' ').nth(1).unwrap_or("").to_string();
                let request_id = head
                    .lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case("x-request-id")
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let _ = tx.send(target.clone());
                if target.starts_with("/slow") {
                    let started = Instant::now();
                    let _ = tokio::time::timeout(Duration::from_secs(15), release.wait_for(|r| *r))
                        .await;
                    tokio::time::sleep(
                        Duration::from_millis(500).saturating_sub(started.elapsed()),
                    )
                    .await;
                }
                let body = json!({ "request_id": request_id }).to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}"), rx, release)
}

#[tokio::test]
async fn reload_does_not_disturb_requests_in_flight() {
    let (url, mut arrived, release) = slow_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "pol-iss", "keygate");
    let v1 = "@id(\"v1-all\")\npermit (principal, action, resource);\n";
    let v2 = "@id(\"v2-all\")\npermit (principal, action, resource);\n\
              @id(\"v2-no-slow\")\nforbid (principal, action, resource) when { context.path like \"/slow*\" };\n";
    let pdir = write_policies(dir.path(), &[(MAIN, v1)]);
    let gw = Arc::new(
        start(
            dir,
            &iss,
            &format!("{}{}", agent("a1", "o@x"), tool("t", &url, "")),
        )
        .await,
    );
    let token = iss.token("a1");

    // A request in flight at the slow upstream...
    let in_flight = {
        let (gw, token) = (gw.clone(), token.clone());
        tokio::spawn(async move { get(&gw, &token, "/tools/t/slow").await })
    };
    let first = tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await
        .expect("the slow request did not reach the upstream")
        .unwrap();
    assert_eq!(first, "/slow");

    // ...while the policies change and reload.
    std::fs::write(pdir.join(MAIN), v2).unwrap();
    gw.runtime.reload().await.unwrap();
    assert!(
        !in_flight.is_finished(),
        "the slow request finished before the reload"
    );

    // New requests see the new policies.
    let r = get(&gw, &token, "/tools/t/slow").await;
    assert_refused(
        &r,
        403,
        "forbidden",
        "new request to /slow after the reload",
    );
    assert_eq!(
        strings(&audit_of(&gw, &rid(&r)).await["policies"]),
        ["v2-no-slow"]
    );
    let r = get(&gw, &token, "/tools/t/fast").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        strings(&audit_of(&gw, &rid(&r)).await["policies"]),
        ["v2-all"]
    );
    assert!(
        !in_flight.is_finished(),
        "the slow request was not held by the upstream"
    );

    // The request in flight completes, authorized by the old policies.
    release.send(true).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(15), in_flight)
        .await
        .expect("the request in flight never completed")
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = audit_of(&gw, &rid(&r)).await;
    assert_eq!(rec["decision"], "allow");
    assert_eq!(rec["status"], 200);
    assert_eq!(rec["completed"], true);
    assert_eq!(strings(&rec["policies"]), ["v1-all"]);
    // The upstream saw the slow request once and /fast; the refused one never arrived.
    assert_eq!(arrived.recv().await.unwrap(), "/fast");
    assert!(arrived.try_recv().is_err());
}

// ------------------------------------------------------------------ 9. SIGHUP

/// The keygate binary, killed if the test fails before it exits.
struct Binary {
    child: Option<std::process::Child>,
    addr: std::net::SocketAddr,
    log: Arc<std::sync::Mutex<String>>,
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_binary(config: &Path) -> Binary {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["run", "--config"])
        .arg(config)
        .env("KEYGATE_LOG", "info")
        .env("KEYGATE_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stderr);
        let mut line = String::new();
        let mut sent = false;
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            if !sent && line.contains("keygate is listening") {
                let v: Value = serde_json::from_str(&line).unwrap();
                let _ = tx.send(v["fields"]["local_addr"].as_str().unwrap().to_string());
                sent = true;
            }
            sink.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    let mut b = Binary {
        child: Some(child),
        addr: "127.0.0.1:1".parse().unwrap(),
        log,
    };
    let addr = rx.recv_timeout(Duration::from_secs(30));
    let addr = addr.unwrap_or_else(|_| panic!("keygate did not start:\n{}", b.log.lock().unwrap()));
    b.addr = addr.parse().unwrap();
    b
}

fn kill(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid} failed");
}

/// Replaces `path`'s content keeping its modification time (by renaming a file written
/// outside the watched folder), so the binary's file watch cannot see the change.
fn replace_unseen(path: &Path, text: &str, scratch: &Path) {
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    std::fs::write(scratch, text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(scratch)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::fs::rename(scratch, path).unwrap();
    assert_eq!(std::fs::metadata(path).unwrap().modified().unwrap(), mtime);
}

#[tokio::test]
async fn sighup_reloads_the_running_binary_and_sigterm_stops_it() {
    let up = id_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "pol-iss", "keygate");
    let pdir = write_policies(dir.path(), &[(MAIN, PERMIT_READ)]);
    let config = dir.path().join("keygate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[audit]\npath = \"audit.jsonl\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n[store]\npath = \"keygate.db\"\n\
             [policies]\ndir = \"policies\"\n{}{}{}",
            iss.toml(),
            agent("a1", "o@x"),
            tool("t", &up.url(), "")
        ),
    )
    .unwrap();
    let mut kg = spawn_binary(&config);
    let pid = kg.child.as_ref().unwrap().id();
    let auth = bearer(&iss.token("a1"));
    let url = format!("http://{}/tools/t/x", kg.addr);
    let c = Client::http1();
    let post_status = || {
        let (c, url, auth) = (&c, &url, &auth);
        async move {
            c.send(
                "POST",
                url,
                &[
                    ("authorization", auth),
                    ("content-type", "application/json"),
                ],
                "{}",
            )
            .await
            .status
        }
    };
    assert_eq!(c.get(&url, &[("authorization", &auth)]).await.status, 200);
    assert_eq!(post_status().await, 403);

    // Change the policies behind the file watch's back: nothing changes on its own...
    replace_unseen(
        &pdir.join(MAIN),
        PERMIT_READ_WRITE,
        &dir.path().join("scratch.cedar"),
    );
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert_eq!(
        post_status().await,
        403,
        "the policies changed without SIGHUP"
    );

    // ...until SIGHUP.
    kill("-HUP", pid);
    let deadline = Instant::now() + Duration::from_secs(10);
    while post_status().await != 200 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the policies:\n{}",
            kg.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.get(&url, &[("authorization", &auth)]).await.status, 200);
    assert_eq!(up.count(), 3);

    // A broken policy and SIGHUP: refused, the running policies stay, the process lives.
    replace_unseen(
        &pdir.join(MAIN),
        "permit (principal,",
        &dir.path().join("scratch.cedar"),
    );
    kill("-HUP", pid);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !kg.log.lock().unwrap().contains("reload refused") {
        assert!(
            Instant::now() < deadline,
            "no refusal logged:\n{}",
            kg.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(post_status().await, 200);

    // SIGTERM: a clean exit.
    kill("-TERM", pid);
    let mut child = kg.child.take().unwrap();
    let status = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || child.wait().unwrap()),
    )
    .await
    .expect("keygate did not exit after SIGTERM")
    .unwrap();
    assert!(status.success(), "keygate exited with {status}");
    let log = kg.log.lock().unwrap().clone();
    assert!(log.contains("SIGHUP: reloading"), "{log}");
    assert!(log.contains("configuration and policies reloaded"), "{log}");
    assert!(
        log.contains("main.cedar"),
        "the refusal does not name the file:\n{log}"
    );
}

// ------------------------------------------------------------------ 10. keygate check

#[test]
fn check_names_the_broken_policy_file() {
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "pol-iss", "keygate");
    let pdir = write_policies(dir.path(), &[(MAIN, PERMIT_READ)]);
    let config = dir.path().join("keygate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[audit]\npath = \"audit.jsonl\"\n\
             [store]\npath = \"keygate.db\"\n[policies]\ndir = \"policies\"\n{}{}{}",
            iss.toml(),
            agent("a1", "o@x"),
            tool("t", "http://127.0.0.1:9", "")
        ),
    )
    .unwrap();
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for (file, text) in [
        (
            "broken.cedar",
            "permit (principal, action, resource) when { ;",
        ),
        (
            "unknown-action.cedar",
            "permit (principal, action == Action::\"nope\", resource);",
        ),
        (
            "preapproved-forbid.cedar",
            "@preapproved\nforbid (principal, action, resource);",
        ),
    ] {
        let path = pdir.join(file);
        std::fs::write(&path, text).unwrap();
        let out = check();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {err}");
        assert!(
            err.contains(&path.display().to_string()),
            "{file} not named:\n{err}"
        );
        assert!(
            !err.contains(&pdir.join(MAIN).display().to_string()),
            "{file}: a sound file was blamed:\n{err}"
        );
        std::fs::remove_file(&path).unwrap();
    }
    // Two schemas are one too many.
    std::fs::write(pdir.join("second.cedarschema"), "entity X;").unwrap();
    let out = check();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than one .cedarschema"));
}

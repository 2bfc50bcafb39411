//! The keygate binary as users run it: every audit line has the fields auditors rely on,
//! exactly one per request, and no secret value appears in the audit log or in any log
//! output (at the most verbose log level), whatever the agent sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

const STATIC_SECRET: &str = "static-tool-secret-Zq8x1";
const COOKIE: &str = "session=cookie-secret-Wm3p9";
const API_KEY: &str = "xapikey-secret-Hh2k7";
const AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const GH_TOKEN: &str = "ghp_0123456789abcdefghijABCDEFGHIJ012345";

struct Child {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

fn spawn_keygate(config: &std::path::Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["run", "--config"])
        .arg(config)
        .env("KEYGATE_LOG", "trace")
        .env("KEYGATE_LOG_FORMAT", "json")
        .env("AUDIT_TEST_SECRET", STATIC_SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stderr);
        let mut line = String::new();
        let mut sent = false;
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            if !sent && line.contains("keygate is listening") {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                tx.send(v["fields"]["local_addr"].as_str().unwrap().to_string())
                    .unwrap();
                sent = true;
            }
            sink.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("keygate did not start")
        .parse()
        .unwrap();
    Child {
        child,
        addr,
        stderr: log,
    }
}

#[tokio::test]
async fn audit_lines_are_complete_and_no_secret_reaches_any_log() {
    let up = RawUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "audit-iss", "keygate");
    let audit_path = dir.path().join("audit.jsonl");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[audit]\npath = {:?}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n[store]\npath = \"keygate.db\"\n\
         [policies]\ndir = \"policies\"\n{}{}\
         [[tools]]\nname = \"static\"\nupstream = {:?}\n[tools.credential]\nprovider = \"static\"\nfrom_env = \"AUDIT_TEST_SECRET\"\n\
         [[tools]]\nname = \"minted\"\nupstream = {:?}\non_secret = \"redact\"\n[tools.credential]\nprovider = \"jwt\"\nscope = \"read\"\n",
        audit_path.display().to_string(),
        iss.toml(),
        agent("auditor-agent", "owner@example.com"),
        up.url(),
        up.url(),
    );
    let config_path = dir.path().join("keygate.toml");
    std::fs::write(&config_path, config).unwrap();
    copy_default_policies(dir.path());
    let mut kg = spawn_keygate(&config_path);
    let base = format!("http://{}", kg.addr);
    let token = iss.token("auditor-agent");
    let expired = iss.sign(serde_json::json!({
        "iss": "audit-iss", "aud": "keygate", "sub": "auditor-agent", "exp": now() - 3600,
    }));
    let auth = bearer(&token);
    let c = Client::http1();
    let mut sent = 0;
    let mut statuses = Vec::new();
    for (method, path, headers, body) in [
        (
            "GET",
            "/tools/static/repos",
            vec![
                ("authorization", auth.as_str()),
                ("cookie", COOKIE),
                ("x-api-key", API_KEY),
            ],
            "",
        ),
        (
            "GET",
            "/tools/minted/items?page=2",
            vec![("authorization", auth.as_str()), ("cookie", COOKIE)],
            "",
        ),
        (
            "GET",
            &format!("/tools/static/x?key={AWS_KEY}"),
            vec![("authorization", auth.as_str())],
            "",
        ),
        (
            "POST",
            "/tools/minted/notes",
            vec![
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ],
            &format!("{{\"token\":\"{GH_TOKEN}\"}}"),
        ),
        (
            "GET",
            "/tools/static/y",
            vec![("authorization", &bearer(&expired))],
            "",
        ),
        ("GET", "/tools/static/z", vec![], ""),
        (
            "GET",
            "/tools/nope/z",
            vec![("authorization", auth.as_str())],
            "",
        ),
    ] {
        let r = c
            .send(method, &format!("{base}{path}"), &headers, body.to_string())
            .await;
        statuses.push(r.status);
        sent += 1;
    }
    assert_eq!(statuses, vec![200, 200, 400, 200, 401, 401, 404]);

    // What the tool received: keygate's credentials, which are secrets too.
    let received = up.requests();
    assert_eq!(received.len(), 3);
    let minted_header = received[1].header("authorization").unwrap();
    let minted = minted_header.strip_prefix("Bearer ").unwrap().to_string();
    assert!(received[0]
        .header("authorization")
        .unwrap()
        .contains(STATIC_SECRET));
    assert!(String::from_utf8_lossy(&received[2].body).contains("[REDACTED]"));

    // Graceful stop on SIGTERM flushes the audit log.
    let status = Command::new("kill")
        .args(["-TERM", &kg.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || {
        let s = kg.child.wait().unwrap();
        let mut out = String::new();
        kg.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        (s, out, kg.stderr)
    })
    .await
    .unwrap();
    let (exit_status, stdout, stderr) = exit;
    assert!(exit_status.success(), "keygate exited with {exit_status}");
    std::thread::sleep(Duration::from_millis(100));
    let stderr = stderr.lock().unwrap().clone();
    assert!(
        stderr.contains("request"),
        "trace logging produced no request spans"
    );

    let audit_text = std::fs::read_to_string(&audit_path).unwrap();
    let lines: Vec<serde_json::Value> = audit_text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), sent, "exactly one audit line per request");
    for l in &lines {
        for field in [
            "time",
            "request_id",
            "agent_id",
            "agent_owner",
            "tool",
            "method",
            "path",
            "decision",
            "status",
            "duration_ms",
            "bytes_in",
            "bytes_out",
            "credential_provider",
            "credential_id",
            "stripped",
        ] {
            assert!(l.get(field).is_some(), "audit line lacks {field}: {l}");
        }
    }
    let ok = &lines[0];
    assert_eq!(ok["agent_id"], "auditor-agent");
    assert_eq!(ok["agent_owner"], "owner@example.com");
    assert_eq!(ok["tool"], "static");
    assert_eq!(ok["decision"], "allow");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["credential_provider"], "static");
    assert!(ok["credential_id"].as_str().unwrap().starts_with("sha256:"));
    let stripped: Vec<&str> = ok["stripped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        stripped.contains(&"header:authorization")
            && stripped.contains(&"header:cookie")
            && stripped.contains(&"header:x-api-key"),
        "{stripped:?}"
    );
    assert_eq!(lines[1]["credential_provider"], "jwt");
    assert_eq!(lines[2]["error"], "secret_in_request");
    assert_eq!(lines[2]["decision"], "deny");
    assert_eq!(lines[4]["error"], "unauthenticated");
    assert_eq!(lines[6]["error"], "unknown_tool");
    let ids: std::collections::HashSet<&str> = lines
        .iter()
        .map(|l| l["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), lines.len(), "request ids are unique");

    let signing_key = std::fs::read_to_string(dir.path().join("data/signing-ed25519.pem")).unwrap();
    let key_body: String = signing_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let secrets = [
        ("agent token", token.as_str()),
        ("expired agent token", expired.as_str()),
        ("cookie", "cookie-secret-Wm3p9"),
        ("x-api-key", API_KEY),
        ("AWS key id", AWS_KEY),
        ("GitHub token", GH_TOKEN),
        ("static tool secret", STATIC_SECRET),
        ("minted JWT", minted.as_str()),
        ("signing key", key_body.as_str()),
    ];
    // A JWT's signature alone is enough to look for: it is the part that must never leak.
    for (what, secret) in secrets {
        let needle = secret.rsplit('.').next().unwrap();
        for (name, text) in [
            ("audit log", &audit_text),
            ("stderr", &stderr),
            ("stdout", &stdout),
        ] {
            assert!(!text.contains(needle), "{what} appears in the {name}");
        }
    }
}

#[test]
fn check_reports_every_error_with_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"not-an-address\"\n\
         [[agents]]\nid = \"a\"\nowner = \"\"\n\
         [[tools]]\nname = \"t\"\nupstream = \"ftp://x\"\n[tools.credential]\nprovider = \"jwt\"\nttl = \"1h\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    for key in [
        "server.listen",
        "agents[0].owner",
        "tools.t.upstream",
        "tools.t.credential.ttl",
    ] {
        assert!(
            err.contains(&format!("{file}: {key}:")),
            "missing {key} in:\n{err}"
        );
    }
    assert!(err.contains("4 problem(s) found"), "{err}");

    let good = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/keygate.toml"),
        ])
        .output()
        .unwrap();
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
}

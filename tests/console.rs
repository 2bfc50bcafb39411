//! The approvals console in a real browser: Debian's Chromium driven by Playwright
//! (tests/console/scenario.py, the venv target/console-venv), approvers signing in through
//! a real OpenID Connect provider on loopback (panva's oidc-provider, tests/oauth2/idp.mjs,
//! authorization code with PKCE). The scenario asks this test for what is not a browser
//! (the agent's calls, the admin API's view, keygate's clock) over a line protocol; this
//! test then checks what the tool received and the audit log.
//!
//! Screenshots of the main pages are written to target/console-screenshots/.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const KEYS: &str = "/tools/gh/repos/acme/app/keys";
const TOOL_CREDENTIAL: &str = "gh-tool-credential-5c8e2a";
const CLIENT_SECRET: &str = "console-client-secret-3f9d0b7a1c";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The identity provider's users: login → (password, email, groups). Frank's email is
/// one the provider says is not verified.
const USERS: [(&str, &str, &str, &[&str]); 6] = [
    ("bob", "bob-pw-71c2", "bob@example.com", &["security"]),
    ("alice", "alice-pw-93ad", "alice@example.com", &[]),
    ("carol", "carol-pw-2b6e", "carol@example.com", &["audit"]),
    ("dave", "dave-pw-e40f", "dave@example.com", &["platform"]),
    (
        "mallory",
        "mallory-pw-88aa",
        "mallory@example.com",
        &["contractors"],
    ),
    ("frank", "frank-pw-5a1c", "alice@example.com", &["security"]),
];

/// The identity provider, running while it is held (it exits when its stdin closes).
struct Idp {
    issuer: String,
    _child: tokio::process::Child,
}

async fn start_idp(dir: &Path, redirect_uri: &str) -> Idp {
    let users: serde_json::Map<String, Value> = USERS
        .iter()
        .map(|(login, pw, email, groups)| {
            (
                login.to_string(),
                json!({"password": pw, "email": email, "name": login, "groups": groups,
                       "email_verified": *login != "frank"}),
            )
        })
        .collect();
    let config = json!({
        "port": 0,
        "clients": [{
            "client_id": "keygate-console",
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [redirect_uri],
            "token_endpoint_auth_method": "client_secret_basic",
        }],
        "users": users,
    });
    let path = dir.join("idp.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let mut child = tokio::process::Command::new("node")
        .arg("idp.mjs")
        .arg(&path)
        .arg("--exit-on-stdin-eof")
        .current_dir(root().join("tests/oauth2"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("idp.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("cannot start node tests/oauth2/idp.mjs (scripts/test installs it)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the identity provider did not start")
        .unwrap()
        .unwrap_or_default();
    let issuer = line
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("the identity provider did not start: {line:?}"))
        .trim()
        .to_string();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Idp {
        issuer,
        _child: child,
    }
}

/// A free port on 127.0.0.1 (the console's address must be known to the identity
/// provider before keygate starts).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Env {
    gw: TestGateway,
    up: RawUpstream,
    iss: TestIssuer,
    client: Client,
    console: String,
    _idp: Idp,
}

async fn start() -> Env {
    let up = RawUpstream::with_responder(Arc::new(|r: &Received| {
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
    .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let console = format!("http://127.0.0.1:{port}");
    let idp = start_idp(dir.path(), &format!("{console}/console/callback")).await;
    std::fs::write(dir.path().join("console-secret"), CLIENT_SECRET).unwrap();
    let source = secret_file(dir.path(), "gh", TOOL_CREDENTIAL);
    let iss = TestIssuer::new(dir.path(), "console-issuer", "keygate");
    let cfg = format!(
        "[admin]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"admin.token\"\n\
         [console]\nissuer = {issuer:?}\nclient_id = \"keygate-console\"\n\
         client_secret_file = \"console-secret\"\npublic_url = {console:?}\n\
         scopes = [\"openid\", \"email\", \"profile\", \"groups\"]\n\
         [console.roles]\nadmin = [\"dave@example.com\"]\n\
         approver = [\"group:security\", \"alice@example.com\"]\nauditor = [\"group:audit\"]\n\
         [anomalies]\nlearning_period = \"0s\"\n[anomalies.new_tool]\naction = \"record\"\n\
         {iss_toml}{agent}[[tools]]\nname = \"gh\"\nkind = \"github\"\nupstream = {up:?}\n\
         [tools.credential]\nprovider = \"static\"\n{source}",
        issuer = idp.issuer,
        iss_toml = iss.toml(),
        agent = agent("a1", "alice@example.com"),
        up = up.url(),
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    Env {
        gw,
        up,
        iss,
        client: Client::http1(),
        console,
        _idp: idp,
    }
}

impl Env {
    /// The agent asks to add a deploy key (identity creation: it needs approval).
    async fn create(&self) -> Response {
        let auth = bearer(&self.iss.token("a1"));
        self.client
            .send(
                "POST",
                &self.gw.url(KEYS),
                &[("authorization", &auth), ("content-type", "application/json")],
                json!({"title": "ci", "key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIConsoleTest", "read_only": true})
                    .to_string(),
            )
            .await
    }

    /// Answers one of the scenario's questions.
    async fn answer(&self, ask: &Value) -> Value {
        match ask["op"].as_str().unwrap() {
            "create" => {
                let r = self.create().await;
                let body = r.json();
                json!({"status": r.status, "error": body["error"], "approval_id": body["approval_id"]})
            }
            "approval" => {
                let id = ask["id"].as_str().unwrap();
                self.gw
                    .admin("GET", &format!("/approvals/{id}"), None)
                    .await
                    .1
            }
            "advance" => {
                let secs = ask["secs"].as_u64().unwrap();
                self.gw
                    .runtime
                    .shared
                    .clock
                    .advance(Duration::from_secs(secs));
                json!({"ok": true})
            }
            other => panic!("unknown scenario op {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approvers_sign_in_and_decide_in_a_real_browser() {
    let e = start().await;
    let shots = root().join("target/console-screenshots");
    let admin_token = std::fs::read_to_string(e.gw.dir.path().join("admin.token")).unwrap();
    let agent_token = e.iss.token("a1");
    let mut secrets: Vec<String> = vec![
        TOOL_CREDENTIAL.into(),
        CLIENT_SECRET.into(),
        admin_token.trim().into(),
        agent_token.clone(),
        // The JWT's signature alone, in case only part of the token were shown.
        agent_token.rsplit('.').next().unwrap().into(),
    ];
    secrets.extend(USERS.iter().map(|u| u.1.to_string()));
    let config = json!({
        "console": e.console,
        "users": USERS.iter().map(|u| (u.0, u.1)).collect::<std::collections::BTreeMap<_, _>>(),
        "secrets": secrets,
        "screenshots": shots,
    });
    let config_path = e.gw.dir.path().join("scenario.json");
    std::fs::write(&config_path, config.to_string()).unwrap();

    let python = root().join("target/console-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test installs Playwright",
        python.display()
    );
    let mut child = tokio::process::Command::new(python)
        .arg(root().join("tests/console/scenario.py"))
        .arg(&config_path)
        .current_dir(root().join("tests/console"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut done = None;
    let run = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(ask) = line.strip_prefix("ASK ") {
                let ask: Value = serde_json::from_str(ask).unwrap();
                let answer = e.answer(&ask).await;
                stdin
                    .write_all(format!("{answer}\n").as_bytes())
                    .await
                    .unwrap();
                stdin.flush().await.unwrap();
            } else if let Some(result) = line.strip_prefix("DONE ") {
                done = Some(serde_json::from_str::<Value>(result).unwrap());
            } else {
                eprintln!("scenario: {line}");
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser scenario did not finish within 4 minutes");
    let status = child.wait().await.unwrap();
    assert!(
        status.success(),
        "the browser scenario failed (its traceback is above)"
    );
    let done = done.expect("the scenario did not finish");
    assert_eq!(done["scanned"].as_array().unwrap().len(), 7, "{done}");
    for shot in ["sign-in", "approvals", "inventory", "agents"] {
        assert!(shots.join(format!("{shot}.png")).exists(), "{shot}.png");
    }

    // The tool saw the approved request once.
    assert_eq!(e.up.count(), 1);
    // The audit log: who signed in, and the decision by the signed-in approver, from the
    // console, proved by OpenID Connect; the suspension and resumption by the admin.
    let audit = e.gw.audit().await;
    let admin: Vec<&Value> = audit.iter().filter(|r| r.get("admin").is_some()).collect();
    let sign_ins: Vec<&str> = admin
        .iter()
        .filter(|r| r["admin"]["action"] == "sign_in")
        .map(|r| r["admin"]["by"].as_str().unwrap())
        .collect();
    assert!(
        sign_ins
            .iter()
            .any(|s| s.starts_with("frank@http://127.0.0.1:")),
        "frank, without a verified email, is named by subject and issuer: {sign_ins:?}"
    );
    for who in [
        "bob@example.com",
        "alice@example.com",
        "carol@example.com",
        "dave@example.com",
        "mallory@example.com",
    ] {
        assert!(sign_ins.contains(&who), "{who} signed in: {sign_ins:?}");
    }
    let decision = admin
        .iter()
        .find(|r| r["admin"]["action"] == "approve")
        .expect("the decision is audited");
    assert_eq!(decision["admin"]["by"], "bob@example.com");
    assert_eq!(decision["admin"]["via"], "console");
    assert_eq!(decision["identity"], "oidc");
    assert!(
        decision["admin"]["from"]
            .as_str()
            .unwrap()
            .starts_with("bob from 127.0.0.1"),
        "{decision}"
    );
    assert_eq!(
        admin
            .iter()
            .filter(|r| r["admin"]["action"] == "approve")
            .count(),
        1,
        "only bob's approval was made: {admin:#?}"
    );
    let suspend = admin
        .iter()
        .find(|r| r["admin"]["action"] == "suspend")
        .expect("the suspension is audited");
    assert_eq!(suspend["admin"]["by"], "dave@example.com");
    assert_eq!(suspend["admin"]["agent"], "a1");
    assert_eq!(suspend["operation"], "keygate:agent.suspend");
    assert!(admin.iter().any(|r| r["admin"]["action"] == "resume"));
    // Nothing secret in the audit log either.
    let text = std::fs::read_to_string(&e.gw.audit_path).unwrap();
    for s in &secrets[..4] {
        assert!(!text.contains(s.as_str()), "a secret is in the audit log");
    }
}

/// Without a browser: what the console answers to someone not signed in, or signed in
/// with a cookie keygate did not sign.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_refuses_what_it_did_not_sign() {
    let e = start().await;
    let url = |p: &str| format!("{}{p}", e.console);
    // Signed out: the sign-in page, never the approvals, with the strict headers.
    let r = e
        .client
        .send("GET", &url("/console/approvals"), &[], "")
        .await;
    assert_eq!(r.status, 200);
    let csp = r.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(r.headers["x-frame-options"], "DENY");
    assert_eq!(r.headers["cache-control"], "no-store");
    assert!(r.text().contains("id=\"sign-in\""), "{}", r.text());
    // A forged session cookie (any payload, a made-up signature) is nobody.
    let forged = format!(
        "kg_session={}.{}",
        "eyJzaWQiOiJ4IiwiaXNzIjoieCIsInN1YiI6ImRhdmUiLCJlbWFpbCI6ImRhdmVAZXhhbXBsZS5jb20iLCJleHAiOjk5OTk5OTk5OTl9",
        "AAAA"
    );
    let r = e
        .client
        .send("GET", &url("/console/agents"), &[("cookie", &forged)], "")
        .await;
    assert!(r.text().contains("id=\"sign-in\""), "{}", r.text());
    let r = e
        .client
        .send(
            "POST",
            &url("/console/agents/a1/suspend"),
            &[
                ("cookie", &forged),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            "reason=x",
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(e.gw.runtime.shared.suspended.read().unwrap().is_empty());
    // The sign-in goes to the identity provider with PKCE, a state and a nonce, and a
    // sign-in cookie that comes back on its redirect.
    let r = e.client.send("GET", &url("/console/login"), &[], "").await;
    assert_eq!(r.status, 303);
    let to = r.headers["location"].to_str().unwrap();
    for p in [
        "response_type=code",
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "nonce=",
        "client_id=keygate-console",
    ] {
        assert!(to.contains(p), "{p} in {to}");
    }
    let set = r.headers["set-cookie"].to_str().unwrap();
    assert!(
        set.starts_with("kg_login=") && set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    // A callback without that cookie, or with another state, signs nobody in.
    let r = e
        .client
        .send("GET", &url("/console/callback?code=x&state=y"), &[], "")
        .await;
    assert_eq!(r.status, 400);
    assert!(
        !r.headers.contains_key("set-cookie")
            || !r.headers["set-cookie"]
                .to_str()
                .unwrap()
                .starts_with("kg_session")
    );
    let cookie = set.split(';').next().unwrap();
    let r = e
        .client
        .send(
            "GET",
            &url("/console/callback?code=x&state=another"),
            &[("cookie", cookie)],
            "",
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("state does not match"), "{}", r.text());
    // The assets need no session and carry the same policy.
    let r = e
        .client
        .send("GET", &url("/console/assets/console.js"), &[], "")
        .await;
    assert_eq!(r.status, 200);
    assert!(r.headers.contains_key("content-security-policy"));
}

/// The admin listener over TLS: the API, the CLI (trusting the listener's CA) and the
/// console, whose cookies are then `__Host-` cookies, `Secure`, with HSTS.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_listener_serves_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let port = free_port();
    let console = format!("https://127.0.0.1:{port}");
    let idp = start_idp(dir.path(), &format!("{console}/console/callback")).await;
    std::fs::write(dir.path().join("console-secret"), CLIENT_SECRET).unwrap();
    let cfg = format!(
        "[admin]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"admin.token\"\n\
         [admin.tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n\
         [console]\nissuer = {issuer:?}\nclient_id = \"keygate-console\"\n\
         client_secret_file = \"console-secret\"\npublic_url = {console:?}\n\
         [console.roles]\napprover = [\"bob@example.com\"]\n",
        cert = pki.server_cert_path.display().to_string(),
        key = pki.server_key_path.display().to_string(),
        issuer = idp.issuer,
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    let tls = Client::tls(&pki, None, false);
    let r = tls
        .send("GET", &format!("{console}/healthz"), &[], "")
        .await;
    assert_eq!(r.status, 200);
    // Plain HTTP gets no answer from a TLS listener.
    {
        use tokio::io::AsyncReadExt;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    }
    // The CLI, trusting the listener's CA; without it, the certificate is refused.
    let token = gw.runtime.shared.admin_token.clone();
    let cli = |ca: Option<PathBuf>| {
        let (console, token, dir) = (console.clone(), token.clone(), gw.dir.path().to_path_buf());
        tokio::task::spawn_blocking(move || {
            let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"));
            c.args(["approvals", "list"])
                .env("KEYGATE_ADMIN_URL", console)
                .env("KEYGATE_ADMIN_TOKEN", token)
                .current_dir(dir);
            if let Some(ca) = ca {
                c.env("KEYGATE_ADMIN_CA_FILE", ca);
            }
            c.output().unwrap()
        })
    };
    let ok = cli(Some(pki.ca_path.clone())).await.unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let refused = cli(None).await.unwrap();
    assert!(!refused.status.success());
    // The console's cookies and headers over https.
    let r = tls
        .send("GET", &format!("{console}/console/login"), &[], "")
        .await;
    assert_eq!(r.status, 303);
    let set = r.headers["set-cookie"].to_str().unwrap();
    assert!(
        set.starts_with("__Host-kg_login=") && set.contains("Path=/;") && set.contains("Secure"),
        "{set}"
    );
    let r = tls
        .send("GET", &format!("{console}/console/approvals"), &[], "")
        .await;
    assert!(r.headers["strict-transport-security"]
        .to_str()
        .unwrap()
        .starts_with("max-age="));
}

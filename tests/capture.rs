//! Captured secrets end to end, against a GitLab stand-in on loopback: an approved
//! project-access-token creation hands the agent a `kgh_` handle, never the token; the
//! handle, presented where GitLab reads a token, reaches the stand-in as the real token;
//! only the agents allowed may use it; revealing it needs an approver and a reason and is
//! audited; revoking the inventory record kills the handle at once. The token is never in
//! the audit log, the store's files or the log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use serde_json::{json, Value};
use std::sync::Arc;

const REAL: &str = "glpat-Rea1TokenFromTheStandIn0042";
const CREATE: &str = "/tools/gl/api/v4/projects/7/access_tokens";
const PROJECT: &str = "/tools/gl/api/v4/projects/7";

/// GitLab, as far as this test needs: creating a project access token answers with the
/// new token once; reading the project answers with what token it was called with.
async fn gitlab() -> RawUpstream {
    RawUpstream::with_responder(Arc::new(|r: &Received| {
        let ct = vec![("content-type".to_string(), "application/json".to_string())];
        if r.head.starts_with("POST ") && r.target().ends_with("/access_tokens") {
            let body = json!({
                "id": 77, "name": "ci", "revoked": false, "scopes": ["api"],
                "access_level": 30, "token": REAL,
            });
            return (201, ct, body.to_string().into_bytes());
        }
        let ok = r.header("private-token").as_deref() == Some(REAL);
        let body = json!({"id": 7, "name": "app", "authenticated": ok});
        (
            if ok { 200 } else { 401 },
            ct,
            body.to_string().into_bytes(),
        )
    }))
    .await
}

struct Env {
    gw: TestGateway,
    up: RawUpstream,
    iss: TestIssuer,
    tool_secret: String,
    cfg: String,
}

async fn start(tool_extra: &str) -> Env {
    start_with(gitlab().await, tool_extra).await
}

async fn start_with(up: RawUpstream, tool_extra: &str) -> Env {
    let _ = logs();
    let dir = tempfile::tempdir().unwrap();
    let tool_secret = "gl-tool-credential-capture-7f3a".to_string();
    let source = secret_file(dir.path(), "GL_CAPTURE", &tool_secret);
    let iss = TestIssuer::new(dir.path(), "cap-issuer", "keygate");
    let cfg = format!(
        "{}{}{}[[tools]]\nname = \"gl\"\nkind = \"gitlab\"\nupstream = {:?}\n{tool_extra}[tools.credential]\nprovider = \"static\"\ninject = \"header\"\nheader = \"PRIVATE-TOKEN\"\n{source}",
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
        tool_secret,
        cfg,
    }
}

impl Env {
    async fn call(
        &self,
        agent: &str,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
    ) -> Response {
        let auth = bearer(&self.iss.token(agent));
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        headers.extend_from_slice(extra);
        let body = if method == "POST" {
            json!({"name": "ci", "scopes": ["api"], "access_level": 30}).to_string()
        } else {
            String::new()
        };
        Client::http1()
            .send(method, &self.gw.url(path), &headers, body)
            .await
    }

    /// a1 creates a token, bob approves; the answer the agent gets.
    async fn create_approved(&self) -> Value {
        let r = self.call("a1", "POST", CREATE, &[]).await;
        assert_eq!(r.status, 403, "{}", r.text());
        let id = r.json()["approval_id"].as_str().unwrap().to_string();
        approve_as_bob(&self.gw, &id, "SEC-17").await;
        let r = self.call("a1", "POST", CREATE, &[]).await;
        assert_eq!(r.status, 201, "{}", r.text());
        assert!(
            !r.text().contains(REAL),
            "the agent got the real token: {}",
            r.text()
        );
        r.json()
    }

    async fn inventory_id(&self) -> String {
        let (s, inv) = self.gw.admin("GET", "/inventory", None).await;
        assert_eq!(s, 200);
        inv["identities"][0]["id"].as_str().unwrap().to_string()
    }

    /// Every file under the data directory, the store and the audit log, read raw.
    fn files_hold(&self, needle: &str) -> Vec<String> {
        files_under(self.gw.dir.path())
            .into_iter()
            .filter(|p| {
                std::fs::read(p)
                    .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
                    .unwrap_or(false)
            })
            .map(|p| p.display().to_string())
            .collect()
    }
}

#[tokio::test]
async fn a_created_token_is_captured_and_its_handle_works_for_its_agent_only() {
    let env = start("").await;
    let answer = env.create_approved().await;
    let handle = answer["token"].as_str().unwrap().to_string();
    assert!(handle.starts_with("kgh_") && handle.len() == 47, "{answer}");
    // The rest of the answer is GitLab's.
    assert_eq!(answer["id"], 77);
    assert_eq!(answer["scopes"], json!(["api"]));
    let inv_id = env.inventory_id().await;
    let (_, inv) = env.gw.admin("GET", "/inventory", None).await;
    assert_eq!(inv["identities"][0]["captured"], 1, "{inv}");
    assert_eq!(inv["identities"][0]["identifier"], "77", "{inv}");

    // The handle where GitLab reads a token: the stand-in gets the real one, and not
    // keygate's own credential for the tool.
    let r = env
        .call("a1", "GET", PROJECT, &[("private-token", &handle)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["authenticated"], true);
    let seen = env.up.requests().last().unwrap().clone();
    assert_eq!(seen.header("private-token").as_deref(), Some(REAL));
    assert!(!String::from_utf8_lossy(&seen.raw).contains(&env.tool_secret));
    assert!(!String::from_utf8_lossy(&seen.raw).contains("kgh_"));

    // Another agent may not use it; a handle keygate never issued is refused.
    let r = env
        .call("a2", "GET", PROJECT, &[("private-token", &handle)])
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "handle_not_allowed");
    let forged = format!("kgh_{}", "A".repeat(43));
    let before = env.up.count();
    let r = env
        .call("a1", "GET", PROJECT, &[("private-token", &forged)])
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "unknown_handle");
    let r = env
        .call("a1", "GET", PROJECT, &[("private-token", "kgh_short")])
        .await;
    assert_eq!(r.json()["error"], "unknown_handle", "{}", r.text());
    assert_eq!(env.up.count(), before, "a refused handle reached the tool");

    // Its owner shares it with a2: now a2 may.
    let (s, b) = env
        .gw
        .admin(
            "POST",
            &format!("/inventory/{inv_id}/share"),
            Some(json!({"agent": "a2", "by": "carol@example.com"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let r = env
        .call("a2", "GET", PROJECT, &[("private-token", &handle)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Revealing needs an approver and a reason; it is audited.
    let (s, _) = env
        .gw
        .admin(
            "POST",
            &format!("/inventory/{inv_id}/reveal"),
            Some(json!({"approver": "bob@example.com", "reason": " "})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, b) = env
        .gw
        .admin(
            "POST",
            &format!("/inventory/{inv_id}/reveal"),
            Some(json!({"approver": "bob@example.com", "reason": "INC-9 rotate by hand"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["secrets"][0]["value"], REAL);
    assert_eq!(b["secrets"][0]["field"], "/token");

    // Revoked: the handle is dead at once.
    let (s, b) = env
        .gw
        .admin(
            "POST",
            &format!("/inventory/{inv_id}/revoke"),
            Some(json!({"by": "carol@example.com"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["handles_revoked"], 1, "{b}");
    let r = env
        .call("a1", "GET", PROJECT, &[("private-token", &handle)])
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "unknown_handle");
    let (_, inv) = env.gw.admin("GET", "/inventory", None).await;
    assert_eq!(inv["identities"][0]["captured"], 0, "{inv}");
    assert_eq!(inv["identities"][0]["revoked_by"], "carol@example.com");

    // The audit: the creation captured one secret; the calls with the handle name the
    // inventory record; the reveal names its approver and reason.
    let audit = env.gw.audit().await;
    let created = audit
        .iter()
        .find(|r| r["status"] == 201)
        .expect("creation record");
    assert_eq!(created["captured"], 1, "{created}");
    assert_eq!(created["inventory_id"], inv_id.as_str());
    let used: Vec<&Value> = audit
        .iter()
        .filter(|r| r["path"] == "/tools/gl/api/v4/projects/7" && r["status"] == 200)
        .collect();
    assert_eq!(used.len(), 2);
    for u in used {
        assert_eq!(u["handle"], inv_id.as_str(), "{u}");
        assert_eq!(u["credential_provider"], "captured", "{u}");
    }
    let reveal = audit
        .iter()
        .find(|r| r["admin"]["action"] == "reveal")
        .expect("reveal record");
    assert_eq!(reveal["admin"]["by"], "bob@example.com");
    assert_eq!(reveal["admin"]["reason"], "INC-9 rotate by hand");
    assert!(audit.iter().any(|r| r["admin"]["action"] == "revoke"));

    // The real token is nowhere keygate writes: audit log, store files, key files, log;
    // nor the handle itself (only its SHA-256 is stored).
    assert_eq!(env.files_hold(REAL), Vec::<String>::new());
    assert_eq!(env.files_hold(&handle), Vec::<String>::new());
    let log = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(!log.contains(REAL), "the log holds the token");
}

#[tokio::test]
async fn the_sealed_token_survives_a_restart_and_a_key_rotation() {
    let env = start("").await;
    let handle = env.create_approved().await["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(env.files_hold(REAL), Vec::<String>::new());
    let old_key = env.gw.dir.path().join("data/capture.key");
    assert!(old_key.exists());
    // Rotate: the old key becomes a previous key, a new current key; rekey; restart.
    let Env { gw, up, iss, .. } = env;
    let dir = gw.dir.path().to_path_buf();
    std::fs::rename(&old_key, dir.join("old-capture.key")).unwrap();
    let cfg_path = dir.join("keygate.toml");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(
        &cfg_path,
        format!("[capture]\nkey_file = \"new-capture.key\"\nprevious_key_files = [\"old-capture.key\"]\n{cfg}"),
    )
    .unwrap();
    let gw = gw.restart().await;
    let env = Env {
        gw,
        up,
        iss,
        tool_secret: String::new(),
        cfg: String::new(),
    };
    let r = env
        .call("a1", "GET", PROJECT, &[("private-token", &handle)])
        .await;
    assert_eq!(r.status, 200, "after restart: {}", r.text());
    let (s, b) = env
        .gw
        .admin("POST", "/capture/rekey", Some(json!({})))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["resealed"], 1, "{b}");
    // Without the old key now: still opens.
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(
        &cfg_path,
        cfg.replace("previous_key_files = [\"old-capture.key\"]\n", ""),
    )
    .unwrap();
    let Env { gw, up, iss, .. } = env;
    let gw = gw.restart().await;
    let env = Env {
        gw,
        up,
        iss,
        tool_secret: String::new(),
        cfg: String::new(),
    };
    let r = env
        .call("a1", "GET", PROJECT, &[("private-token", &handle)])
        .await;
    assert_eq!(r.status, 200, "after rekey: {}", r.text());
}

#[tokio::test]
async fn a_tool_set_to_pass_hands_the_token_over() {
    let env = start("created_secrets = \"pass\"\nresponse_secrets = \"pass\"\n").await;
    let r = env.call("a1", "POST", CREATE, &[]).await;
    let id = r.json()["approval_id"].as_str().unwrap().to_string();
    approve_as_bob(&env.gw, &id, "SEC-18").await;
    let r = env.call("a1", "POST", CREATE, &[]).await;
    assert_eq!(r.status, 201);
    // Passed, as configured (both the capture and the response scan).
    assert!(r.text().contains(REAL), "{}", r.text());
}

/// A handle is taken only as a credential header's whole value (or after a scheme), and
/// only value: nothing rides along with it past strip, and the agent cannot place the real
/// secret inside a value a tool might echo in part.
#[tokio::test]
async fn a_handle_is_accepted_only_alone_in_a_credential_header() {
    let env = start("").await;
    let handle = env.create_approved().await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let own = "glpat-AgentOwnedSecretXyz0123456789";
    let with_own = format!("{own} {handle}");
    let padded = format!("{handle}........");
    let bearer_handle = format!("Bearer {handle}");
    let before = env.up.count();
    for (headers, code) in [
        // A second value of the handle's header.
        (
            vec![("private-token", handle.as_str()), ("private-token", own)],
            "bad_request",
        ),
        // A secret of the agent's own in the same value.
        (vec![("private-token", with_own.as_str())], "unknown_handle"),
        // A header that is no credential header (a tool might echo it).
        (vec![("x-note", padded.as_str())], "handle_not_allowed"),
        (vec![("x-note", handle.as_str())], "handle_not_allowed"),
        // Bytes after the handle.
        (vec![("private-token", padded.as_str())], "unknown_handle"),
    ] {
        let r = env.call("a1", "GET", PROJECT, &headers).await;
        assert_eq!(r.json()["error"], code, "{headers:?}: {}", r.text());
    }
    // On the reverse proxy the agent's token is in Authorization: a handle there too is
    // refused, so the token never goes to the tool beside the secret.
    let r = env
        .call("a1", "GET", PROJECT, &[("authorization", &bearer_handle)])
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(env.up.count(), before, "a refused request reached the tool");
    // As the whole value, or after a scheme, in a credential header: it works.
    for v in [handle.clone(), format!("token {handle}")] {
        let r = env
            .call("a1", "GET", PROJECT, &[("private-token", &v)])
            .await;
        assert_eq!(
            r.status,
            if v == handle { 200 } else { 401 },
            "{v}: {}",
            r.text()
        );
    }
    let seen = env.up.requests().last().unwrap().clone();
    assert_eq!(
        seen.header("private-token").as_deref(),
        Some(format!("token {REAL}").as_str())
    );
}

/// Replicas share the store: a handle captured through one works through the other, and
/// one revoked through either is refused by both within the store re-read (2 s).
#[tokio::test]
async fn replicas_learn_captured_and_revoked_handles_from_the_store() {
    let env = start("").await;
    let a_dir = env.gw.dir.path().to_path_buf();
    let dir_b = tempfile::tempdir().unwrap();
    let cfg_b = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n[store]\npath = {:?}\n{}",
        a_dir.join("data").display().to_string(),
        a_dir.join("keygate.db").display().to_string(),
        env.cfg
    );
    let gw_b = TestGateway::start_in(dir_b, &cfg_b).await;
    let handle = env.create_approved().await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let call_b = |gw_b: &TestGateway| {
        let auth = bearer(&env.iss.token("a1"));
        let url = gw_b.url(PROJECT);
        let handle = handle.clone();
        async move {
            Client::http1()
                .send(
                    "GET",
                    &url,
                    &[("authorization", &auth), ("private-token", &handle)],
                    String::new(),
                )
                .await
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = call_b(&gw_b).await;
        if r.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica B never learned the handle: {}",
            r.text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let id = env.inventory_id().await;
    let (s, b) = env
        .gw
        .admin(
            "POST",
            &format!("/inventory/{id}/revoke"),
            Some(json!({"by": "carol@example.com"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = call_b(&gw_b).await;
        if r.status == 401 {
            assert_eq!(r.json()["error"], "unknown_handle");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica B still takes the revoked handle"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Runs the keygate CLI against `gw`'s admin API; (succeeded, stdout, stderr).
async fn cli(gw: &TestGateway, args: &[&str]) -> (bool, String, String) {
    let c = gw.cli(args).await;
    (c.ok, c.stdout, c.stderr)
}

#[tokio::test]
async fn the_cli_shares_reveals_rekeys_and_revokes() {
    let env = start("").await;
    let handle = env.create_approved().await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let id = env.inventory_id().await;
    let (ok, out, err) = cli(&env.gw, &["inventory", "list", "--csv"]).await;
    assert!(ok, "{err}");
    // Captured 1, not revoked (then no notice, deactivation or retirement failure).
    assert!(
        out.lines().nth(1).unwrap().ends_with(",1,'-,'-,'-,0,'-"),
        "{out}"
    );
    let (ok, out, err) = cli(&env.gw, &["inventory", "share", &id, "--agent", "a2"]).await;
    assert!(ok && out.contains("a2 may now use"), "{out}{err}");
    let r = env
        .call("a2", "GET", PROJECT, &[("private-token", &handle)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (ok, _, err) = cli(
        &env.gw,
        &["inventory", "reveal", &id, "--approver", "bob@example.com"],
    )
    .await;
    assert!(!ok, "reveal without a reason: {err}");
    let (ok, out, err) = cli(
        &env.gw,
        &[
            "inventory",
            "reveal",
            &id,
            "--approver",
            "bob@example.com",
            "--reason",
            "INC-10",
        ],
    )
    .await;
    assert!(ok && out.contains(REAL), "{out}{err}");
    let (ok, out, err) = cli(&env.gw, &["capture", "rekey"]).await;
    assert!(
        ok && out.starts_with("0 captured secrets sealed again"),
        "{out}{err}"
    );
    let (ok, out, err) = cli(
        &env.gw,
        &["inventory", "revoke", &id, "--by", "carol@example.com"],
    )
    .await;
    assert!(ok && out.contains("1 handles revoked"), "{out}{err}");
    let r = env
        .call("a1", "GET", PROJECT, &[("private-token", &handle)])
        .await;
    assert_eq!(r.json()["error"], "unknown_handle", "{}", r.text());
    let (ok, out, _) = cli(&env.gw, &["inventory", "list", "--csv"]).await;
    assert!(ok && out.lines().nth(1).unwrap().contains(",0,20"), "{out}");
}

/// An answer that names the secret's field in a shape keygate cannot read (here a number)
/// is withheld: the agent gets 502 capture_failed and nothing of the answer; the identity
/// is in the inventory and the audit record names it.
#[tokio::test]
async fn an_answer_keygate_cannot_capture_from_is_withheld_and_audited() {
    let up = RawUpstream::with_responder(Arc::new(|r: &Received| {
        let ct = vec![("content-type".to_string(), "application/json".to_string())];
        if r.head.starts_with("POST ") {
            let body = json!({"id": 78, "token": 4242424242u64, "note": "glpat-shape"});
            return (201, ct, body.to_string().into_bytes());
        }
        (200, ct, b"{}".to_vec())
    }))
    .await;
    let env = start_with(up, "").await;
    let r = env.call("a1", "POST", CREATE, &[]).await;
    let id = r.json()["approval_id"].as_str().unwrap().to_string();
    approve_as_bob(&env.gw, &id, "SEC-19").await;
    let r = env.call("a1", "POST", CREATE, &[]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "capture_failed");
    assert!(!r.text().contains("4242424242"), "{}", r.text());
    let inv_id = env.inventory_id().await;
    let audit = env.gw.audit().await;
    let rec = audit.last().unwrap();
    assert_eq!(rec["error"], "capture_failed", "{rec}");
    assert_eq!(rec["inventory_id"], inv_id.as_str(), "{rec}");
}

//! Agents running an unmodified boto3 / AWS CLI through keygate (issue 14), against moto's
//! server with request authentication on (see `tests/aws_support`): keygate identifies the
//! agent by a key pair it issued (verifying the agent's SigV4) or by its JWT, re-signs
//! with session credentials from STS AssumeRole scoped to the one action called, passes
//! S3 bodies through in every signing mode, gates identity creation on a human's approval,
//! and fails closed when STS cannot issue. `scripts/test` installs the peers
//! (`tests/aws/requirements.txt` into `target/aws-venv`).
//!
//! Every request moto receives goes through a recording relay, so the tests assert on
//! what AWS would have seen: the session key id (never the agent's), the AssumeRole
//! parameters, the body mode.
//!
//! S3 body modes as botocore 1.44 produces them (`tests/aws/driver.py` `config_for`):
//! over http it always signs the payload (`x-amz-content-sha256: <hex>`); over https,
//! `request_checksum_calculation="when_required"` with `s3.payload_signing_enabled` True
//! gives the signed payload and False gives `UNSIGNED-PAYLOAD`; the default
//! `"when_supported"` (here with `ChecksumAlgorithm="CRC32"`) gives
//! `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: `Content-Encoding: aws-chunked`,
//! `Transfer-Encoding: chunked`, `x-amz-decoded-content-length`, trailer
//! `x-amz-checksum-crc32`. botocore never sends `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`, so that
//! refusal is tested with a request signed by the driver and sent as is.
//!
//! The `harness_*` tests check the peers themselves (moto, the relay, boto3 and the CLI)
//! without keygate in between.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod aws_support;
mod common;
use aws_support::*;
use common::*;
use keygate::pipeline::identify::aws_key::fingerprint;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

const AGENT: &str = "aws-agent";
const OWNER: &str = "owner@example.com";

// ---------------------------------------------------------------- logs

// ---------------------------------------------------------------- keygate in front of moto

/// keygate with agent [`AGENT`] and tool `aws` (kind aws) in front of a relay to moto.
struct Kg {
    gw: TestGateway,
    relay: Relay,
    iss: TestIssuer,
    pki: Option<Pki>,
}

struct Opts {
    /// `role_arn` set (else static key mode).
    role: bool,
    /// keygate listens with TLS (for UNSIGNED-PAYLOAD and aws-chunked, which botocore
    /// sends over https only).
    tls: bool,
    /// `sts_endpoint` other than the relay.
    sts: Option<String>,
    /// A policy file added to the defaults.
    policy: Option<&'static str>,
}

const ROLE: Opts = Opts {
    role: true,
    tls: false,
    sts: None,
    policy: None,
};

async fn start(opts: Opts) -> Kg {
    logs();
    let m = moto();
    let relay = Relay::to_moto();
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "aws-iss", "keygate");
    let base = secret_file(dir.path(), "aws-base.json", &m.base_credential_json());
    let pki = opts.tls.then(|| Pki::new(dir.path()));
    let tls = pki
        .as_ref()
        .map(|p| p.server_toml("off"))
        .unwrap_or_default();
    let role = if opts.role {
        format!("role_arn = {ROLE_ARN:?}\n")
    } else {
        String::new()
    };
    let sts = opts.sts.unwrap_or_else(|| relay.url());
    if let Some(p) = opts.policy {
        std::fs::create_dir_all(dir.path().join("policies")).unwrap();
        std::fs::write(dir.path().join("policies/extra.cedar"), p).unwrap();
    }
    let cfg = format!(
        "{tls}{}{}[[tools]]\nname = \"aws\"\nkind = \"aws\"\nupstream = {:?}\nmax_body_bytes = 16777216\n\
         [tools.credential]\nprovider = \"aws\"\n{role}sts_endpoint = {sts:?}\nregion = \"us-east-1\"\n{base}",
        iss.toml(),
        agent(AGENT, OWNER),
        relay.url(),
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    Kg {
        gw,
        relay,
        iss,
        pki,
    }
}

impl Kg {
    /// The endpoint boto3 is given (`endpoint_url`): the tool's path prefix.
    fn endpoint(&self) -> String {
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/tools/aws", self.gw.addr)
    }

    /// A key pair issued to `agent` through the admin API.
    async fn issue_key(&self, agent: &str) -> (String, String) {
        let (s, b) = self
            .gw
            .admin(
                "POST",
                &format!("/agents/{agent}/aws-keys"),
                Some(json!({})),
            )
            .await;
        assert_eq!(s, 201, "POST /agents/{agent}/aws-keys: {b}");
        assert_eq!(b["agent"], agent, "{b}");
        let id = b["access_key_id"]
            .as_str()
            .expect("access_key_id")
            .to_string();
        let secret = b["secret_access_key"]
            .as_str()
            .expect("secret_access_key")
            .to_string();
        assert!(id.starts_with("KGAK"), "issued key id {id:?}");
        assert!(secret.len() >= 30, "issued secret too short");
        (id, secret)
    }

    /// boto3 / CLI environment with a key pair keygate issued to [`AGENT`].
    async fn agent_env(&self) -> (AwsEnv, String, String) {
        let (id, secret) = self.issue_key(AGENT).await;
        let mut env = AwsEnv::new(self.endpoint(), &id, &secret);
        env.ca = self.pki.as_ref().map(|p| p.ca_path.clone());
        (env, id, secret)
    }

    /// The admin listener's `/metrics` text.
    async fn metrics(&self) -> String {
        self.gw.metrics().await
    }
}

/// The actions a session policy allows (every statement's `Action`, string or list).
fn policy_actions(policy: &Value) -> BTreeSet<String> {
    let statements = match &policy["Statement"] {
        Value::Array(a) => a.clone(),
        s @ Value::Object(_) => vec![s.clone()],
        _ => vec![],
    };
    let mut out = BTreeSet::new();
    for s in statements {
        assert_eq!(s["Effect"], "Allow", "session policy statement {s}");
        match &s["Action"] {
            Value::String(a) => {
                out.insert(a.clone());
            }
            Value::Array(a) => out.extend(a.iter().map(|v| v.as_str().unwrap().to_string())),
            other => panic!("session policy Action {other}"),
        }
    }
    out
}

/// The resources a session policy names.
fn policy_resources(policy: &Value) -> BTreeSet<String> {
    let statements = match &policy["Statement"] {
        Value::Array(a) => a.clone(),
        s @ Value::Object(_) => vec![s.clone()],
        _ => vec![],
    };
    let mut out = BTreeSet::new();
    for s in statements {
        match &s["Resource"] {
            Value::String(r) => {
                out.insert(r.clone());
            }
            Value::Array(a) => out.extend(a.iter().map(|v| v.as_str().unwrap().to_string())),
            _ => {}
        }
    }
    out
}

/// Asserts what moto received through `relay`: every call but keygate's own AssumeRole
/// is signed by a session key moto issued in one of those AssumeRole answers, with its
/// session token, never by `agent_key`; every AssumeRole is keygate's base key asking
/// for [`ROLE_ARN`] for 900 s, named for [`AGENT`], with a session policy allowing
/// exactly the one action of a call. Returns the tool calls.
fn assert_signed_by_sessions(relay: &Relay, agent_key: &str) -> Vec<Exchange> {
    let m = moto();
    let sessions = relay.sessions();
    let assumes = relay.assume_roles();
    assert!(!assumes.is_empty(), "keygate assumed no role");
    assert_eq!(
        sessions.len(),
        assumes.len(),
        "an AssumeRole failed at moto: {assumes:#?}"
    );
    let mut scoped = BTreeSet::new();
    for a in &assumes {
        assert_eq!(
            a.access_key_id().as_deref(),
            Some(m.base_access_key_id.as_str()),
            "AssumeRole not signed by keygate's base key"
        );
        assert_eq!(a.param("RoleArn").as_deref(), Some(ROLE_ARN));
        assert_eq!(a.param("DurationSeconds").as_deref(), Some("900"));
        let name = a.param("RoleSessionName").unwrap_or_default();
        assert!(name.contains(AGENT), "RoleSessionName {name:?}");
        let source = a.param("SourceIdentity").unwrap_or_default();
        assert!(source.contains(AGENT), "SourceIdentity {source:?}");
        let tags = a.session_tags();
        assert!(
            tags.iter().any(|(_, v)| v == AGENT) && tags.iter().any(|(_, v)| v == OWNER),
            "session tags name the agent and its owner: {tags:?}"
        );
        let policy = a
            .session_policy()
            .expect("AssumeRole without a session Policy");
        let actions = policy_actions(&policy);
        assert_eq!(
            actions.len(),
            1,
            "session policy allows one action: {policy}"
        );
        scoped.extend(actions);
    }
    let calls = relay.tool_calls();
    assert!(!calls.is_empty(), "nothing reached moto");
    let session_keys: BTreeSet<String> = sessions.iter().map(|s| s.access_key_id.clone()).collect();
    for c in &calls {
        let key = c.access_key_id().unwrap_or_default();
        assert_ne!(key, agent_key, "moto received the agent's key id");
        assert!(
            session_keys.contains(&key),
            "{} signed by {key:?}, not a session key moto issued ({session_keys:?})",
            c.action()
        );
        let session = sessions.iter().find(|s| s.access_key_id == key).unwrap();
        assert_eq!(
            c.header("x-amz-security-token").as_deref(),
            Some(session.session_token.as_str()),
            "{} without its session token",
            c.action()
        );
        assert!(
            scoped.contains(&c.action()),
            "{} was called with no session scoped to it (scopes: {scoped:?})",
            c.action()
        );
        assert!(
            c.header("proxy-authorization").is_none(),
            "Proxy-Authorization reached moto"
        );
    }
    let called: BTreeSet<String> = calls.iter().map(Exchange::action).collect();
    assert_eq!(scoped, called, "one session scope per action called");
    calls
}

async fn approve(gw: &TestGateway, id: &str) {
    approve_as_bob(gw, id, "CHG-1").await;
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn expect_err(r: Result<Value, AwsError>, code: &str, status: u16) -> AwsError {
    match r {
        Ok(v) => panic!("expected {code}, got {v}"),
        Err(e) => {
            assert_eq!(e.code, code, "{e:?}");
            assert_eq!(e.status, status, "{e:?}");
            e
        }
    }
}

// ---------------------------------------------------------------- harness

/// moto refuses what AWS refuses once set up; the relay forwards and records; boto3 and
/// the CLI run from the venv.
#[tokio::test]
async fn harness_moto_checks_signatures_and_the_relay_records_what_it_received() {
    let m = moto();
    eprintln!("moto {} set up in {:?}", m.version, m.setup);
    let relay = Relay::to_moto();
    let base = AwsEnv::new(
        relay.url(),
        &m.base_access_key_id,
        &m.base_secret_access_key,
    );
    assert_eq!(
        base.boto(&["whoami"]).await.unwrap(),
        format!("arn:aws:iam::{ACCOUNT}:user/keygate")
    );
    // The base user may only assume the role.
    expect_err(base.boto(&["list-users"]).await, "AccessDenied", 403);
    let creds = base.boto(&["assume-role", ROLE_ARN]).await.unwrap();
    let session = SessionCredentials {
        access_key_id: creds["access_key_id"].as_str().unwrap().into(),
        secret_access_key: creds["secret_access_key"].as_str().unwrap().into(),
        session_token: creds["session_token"].as_str().unwrap().into(),
    };
    assert_eq!(relay.sessions(), vec![session.clone()]);
    let mut env = AwsEnv::new(
        relay.url(),
        &session.access_key_id,
        &session.secret_access_key,
    );
    env.session_token = Some(session.session_token.clone());
    let who = env.boto(&["whoami"]).await.unwrap();
    assert_eq!(
        who,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/keygate-agents/harness")
    );
    let users = env.boto(&["list-users"]).await.unwrap();
    assert!(users.as_array().unwrap().contains(&json!("keygate")));
    let rt = env
        .boto(&[
            "s3-roundtrip",
            "--bucket",
            "harness-plain",
            "--mode",
            "signed",
            "--size",
            "200000",
        ])
        .await
        .unwrap();
    assert_eq!(rt["sent_sha256"], rt["got_sha256"], "{rt}");
    let put = relay
        .exchanges()
        .into_iter()
        .find(|e| e.action() == "s3:PutObject")
        .unwrap();
    assert_eq!(put.access_key_id(), Some(session.access_key_id.clone()));
    assert_eq!(
        put.header("x-amz-security-token"),
        Some(session.session_token.clone())
    );
    assert_eq!(put.request.body.len(), 200000);
    let list = relay
        .exchanges()
        .into_iter()
        .find(|e| e.action() == "iam:ListUsers" && e.status == 200)
        .unwrap();
    assert_eq!(list.access_key_id(), Some(session.access_key_id.clone()));

    // 100 at once (as the concurrency test sends them through keygate).
    let before = relay.count("iam:ListUsers");
    let all = env.boto(&["concurrent", "--n", "100"]).await.unwrap();
    assert!(all.as_array().unwrap().iter().all(|r| r == "ok"), "{all}");
    assert_eq!(relay.count("iam:ListUsers"), before + 100);

    // Refusals: unknown key, wrong secret, a session key without its token.
    let unknown = AwsEnv::new(relay.url(), "AKIAUNKNOWNUNKNOWN00", "x");
    expect_err(
        unknown.boto(&["list-users"]).await,
        "InvalidClientTokenId",
        403,
    );
    let wrong = AwsEnv::new(relay.url(), &m.base_access_key_id, "wrong-secret");
    expect_err(wrong.boto(&["whoami"]).await, "SignatureDoesNotMatch", 403);
    let no_token = AwsEnv::new(
        relay.url(),
        &session.access_key_id,
        &session.secret_access_key,
    );
    expect_err(
        no_token.boto(&["list-users"]).await,
        "InvalidClientTokenId",
        403,
    );

    // The AWS CLI.
    let out = base.cli(&["sts", "get-caller-identity"]).await;
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(":user/keygate"), "{}", out.stdout);
    let out = base.cli(&["iam", "list-users"]).await;
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("AccessDenied"), "{}", out.stderr);
}

/// The three S3 body modes as botocore sends them over https, straight to moto through
/// the relay (TLS towards boto3): each mode is what the relay sees, and the bytes come
/// back unchanged.
#[tokio::test]
async fn harness_s3_body_modes_reach_moto_as_sent() {
    let m = moto();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let relay = Relay::to_moto_tls(&pki);
    let mut base = AwsEnv::new(
        relay.url(),
        &m.base_access_key_id,
        &m.base_secret_access_key,
    );
    base.ca = Some(pki.ca_path.clone());
    let creds = base.boto(&["assume-role", ROLE_ARN]).await.unwrap();
    let mut env = AwsEnv::new(
        relay.url(),
        creds["access_key_id"].as_str().unwrap(),
        creds["secret_access_key"].as_str().unwrap(),
    );
    env.session_token = Some(creds["session_token"].as_str().unwrap().into());
    env.ca = Some(pki.ca_path.clone());
    for mode in ["signed", "unsigned", "chunked"] {
        let key = format!("harness-{mode}.bin");
        let rt = env
            .boto(&[
                "s3-roundtrip",
                "--bucket",
                "harness-modes",
                "--key",
                &key,
                "--mode",
                mode,
                "--size",
                "1048576",
            ])
            .await
            .unwrap();
        assert_eq!(rt["sent_sha256"], rt["got_sha256"], "{mode}: {rt}");
        assert_eq!(rt["got_len"], 1048576, "{mode}: {rt}");
        let put = relay
            .exchanges()
            .into_iter()
            .find(|e| e.action() == "s3:PutObject" && e.request.target().contains(&key))
            .unwrap();
        let sha = put.header("x-amz-content-sha256").unwrap();
        assert_eq!(
            Some(sha.clone()),
            rt["sent_content_sha256"].as_str().map(String::from)
        );
        assert_body_mode(mode, &put, &rt);
    }
}

/// The PutObject `put` (as moto received it) is in body mode `mode`.
fn assert_body_mode(mode: &str, put: &Exchange, rt: &Value) {
    let sha = put.header("x-amz-content-sha256").unwrap_or_default();
    match mode {
        "signed" => {
            assert_eq!(sha, rt["sent_sha256"].as_str().unwrap(), "signed payload");
            assert_eq!(put.request.body.len(), 1048576);
        }
        "unsigned" => {
            assert_eq!(sha, "UNSIGNED-PAYLOAD");
            assert_eq!(put.request.body.len(), 1048576);
        }
        "chunked" => {
            assert_eq!(sha, "STREAMING-UNSIGNED-PAYLOAD-TRAILER");
            let enc = put.header("content-encoding").unwrap_or_default();
            assert!(enc.contains("aws-chunked"), "Content-Encoding {enc:?}");
            assert_eq!(
                put.header("x-amz-decoded-content-length").as_deref(),
                Some("1048576")
            );
            assert_eq!(
                put.header("x-amz-trailer").as_deref(),
                Some("x-amz-checksum-crc32")
            );
            assert!(
                contains(&put.request.body, "x-amz-checksum-crc32:"),
                "the aws-chunked body ends with its checksum trailer"
            );
        }
        _ => unreachable!(),
    }
}

// ---------------------------------------------------------------- through keygate

/// boto3 with a key pair keygate issued: STS, IAM and S3 work, and moto sees only the
/// assumed role's session keys, each scoped to the one action called.
#[tokio::test]
async fn boto3_with_an_issued_key_pair_acts_as_the_assumed_role() {
    let kg = start(ROLE).await;
    let (env, agent_key, agent_secret) = kg.agent_env().await;
    let arn = env.boto(&["whoami"]).await.unwrap();
    let arn = arn.as_str().unwrap();
    assert!(
        arn.starts_with(&format!(
            "arn:aws:sts::{ACCOUNT}:assumed-role/keygate-agents/"
        )) && arn.contains(AGENT),
        "GetCallerIdentity through keygate: {arn}"
    );
    let users = env.boto(&["list-users"]).await.unwrap();
    assert!(users.as_array().unwrap().contains(&json!("keygate")));
    let rt = env
        .boto(&[
            "s3-roundtrip",
            "--bucket",
            "kg-issued-key",
            "--key",
            "dir/object.bin",
            "--mode",
            "signed",
            "--size",
            "65536",
        ])
        .await
        .unwrap();
    assert_eq!(rt["sent_sha256"], rt["got_sha256"], "{rt}");

    let calls = assert_signed_by_sessions(&kg.relay, &agent_key);
    let actions: BTreeSet<String> = calls.iter().map(Exchange::action).collect();
    for a in [
        "sts:GetCallerIdentity",
        "iam:ListUsers",
        "s3:CreateBucket",
        "s3:PutObject",
        "s3:GetObject",
    ] {
        assert!(actions.contains(a), "{a} did not reach moto: {actions:?}");
    }
    assert!(calls.iter().all(|c| c.status < 300), "moto refused a call");
    // The object's session policy names the object.
    let put_scope = kg
        .relay
        .assume_roles()
        .into_iter()
        .find(|a| policy_actions(&a.session_policy().unwrap()).contains("s3:PutObject"))
        .unwrap();
    assert_eq!(
        policy_resources(&put_scope.session_policy().unwrap()),
        BTreeSet::from(["arn:aws:s3:::kg-issued-key/dir/object.bin".to_string()])
    );
    assert!(!contains(&kg.relay.all_bytes(), &agent_secret));

    // The audit records name the session key that signed, never the agent's key.
    let sessions: BTreeSet<String> = kg
        .relay
        .sessions()
        .into_iter()
        .map(|s| s.access_key_id)
        .collect();
    let audit = kg.gw.audit().await;
    let with_cred: Vec<&Value> = audit
        .iter()
        .filter(|r| r["credential_provider"] == "aws")
        .collect();
    assert!(
        with_cred.len() >= 5,
        "audit records with an aws credential: {audit:#?}"
    );
    for r in with_cred {
        let id = r["credential_id"].as_str().unwrap_or_default();
        assert!(sessions.contains(id), "audit credential.id {id:?}: {r}");
    }
}

/// A call made in a task gets a session of its own, tagged with the task, whose session
/// policy ends its grants when the task ends (`aws:CurrentTime`): STS cannot revoke a
/// session, and it lives at least 15 minutes.
#[tokio::test]
async fn a_tasks_session_is_tagged_and_its_grants_end_with_the_task() {
    let kg = start(ROLE).await;
    let (mut env, _, _) = kg.agent_env().await;
    let (s, task) = kg
        .gw
        .admin(
            "POST",
            "/tasks",
            Some(
                json!({"agent": AGENT, "purpose": "audit the users", "ticket": "OPS-3",
                        "ttl": "10m", "tools": ["aws"], "by": "carol"}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_string();
    env.task = Some(id.clone());
    let users = env.boto(&["list-users"]).await.unwrap();
    assert!(users.as_array().unwrap().contains(&json!("keygate")));

    let assumed = kg.relay.assume_roles();
    let in_task = assumed
        .iter()
        .find(|a| {
            a.session_tags()
                .contains(&("keygate-task".into(), id.clone()))
        })
        .unwrap_or_else(|| panic!("no AssumeRole tagged with the task: {assumed:#?}"));
    let ends = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_secs(task["expires_at"].as_u64().unwrap() / 1000),
    )
    .to_string();
    let policy = in_task.session_policy().unwrap();
    for s in policy["Statement"].as_array().unwrap() {
        assert_eq!(
            s["Condition"],
            json!({"DateLessThan": {"aws:CurrentTime": ends}}),
            "{policy}"
        );
    }
    assert_eq!(in_task.param("DurationSeconds").as_deref(), Some("900"));
    // moto took the session, and the call went through it.
    assert!(in_task.status < 300, "{in_task:?}");
    let rec = kg
        .gw
        .audit()
        .await
        .into_iter()
        .find(|r| r["task"] == id.as_str() && r["tool"] == "aws")
        .expect("no audit record of a call names the task");
    assert_eq!(rec["status"], 200, "{rec}");
    assert_eq!(rec["credential_provider"], "aws", "{rec}");

    // Outside the task: no end to the grants.
    env.task = None;
    env.boto(&["list-users"]).await.unwrap();
    let plain = kg
        .relay
        .assume_roles()
        .into_iter()
        .find(|a| !a.session_tags().iter().any(|(k, _)| k == "keygate-task"))
        .unwrap();
    let policy = plain.session_policy().unwrap();
    assert!(
        policy["Statement"][0].get("Condition").is_none(),
        "{policy}"
    );
}

/// The same with the agent's JWT in `Proxy-Authorization` and dummy keys: keygate
/// ignores the dummy signature and strips the header.
#[tokio::test]
async fn boto3_with_a_jwt_and_dummy_keys_acts_as_the_assumed_role() {
    let kg = start(ROLE).await;
    let dummy = "AKIADUMMYDUMMYDUMMY0";
    let jwt = kg.iss.token(AGENT);
    let mut env = AwsEnv::new(kg.endpoint(), dummy, "dummy-secret-dummy-secret");
    env.jwt = Some(jwt.clone());
    let arn = env.boto(&["whoami"]).await.unwrap();
    assert!(
        arn.as_str()
            .unwrap()
            .contains(":assumed-role/keygate-agents/"),
        "{arn}"
    );
    let users = env.boto(&["list-users"]).await.unwrap();
    assert!(users.as_array().unwrap().contains(&json!("keygate")));
    let rt = env
        .boto(&[
            "s3-roundtrip",
            "--bucket",
            "kg-jwt",
            "--mode",
            "signed",
            "--size",
            "4096",
        ])
        .await
        .unwrap();
    assert_eq!(rt["sent_sha256"], rt["got_sha256"], "{rt}");
    assert_signed_by_sessions(&kg.relay, dummy);
    let seen = kg.relay.all_bytes();
    assert!(!contains(&seen, dummy), "the dummy key id reached moto");
    assert!(!contains(&seen, &jwt), "the JWT reached moto");

    // Without the JWT the dummy keys are no identity.
    let bare = AwsEnv::new(kg.endpoint(), dummy, "dummy-secret-dummy-secret");
    let before = kg.relay.exchanges().len();
    expect_err(
        bare.boto(&["list-users"]).await,
        "InvalidClientTokenId",
        403,
    );
    assert_eq!(kg.relay.exchanges().len(), before);
}

/// S3 PutObject / GetObject of 1 MiB in each body mode botocore has: signed payload
/// (`x-amz-content-sha256: <hex>`), `UNSIGNED-PAYLOAD`, and aws-chunked with a CRC32
/// trailer. keygate listens with TLS (botocore sends the last two over https only).
#[tokio::test]
async fn s3_bodies_pass_through_in_every_mode() {
    let kg = start(Opts { tls: true, ..ROLE }).await;
    let (env, agent_key, _) = kg.agent_env().await;
    for mode in ["signed", "unsigned", "chunked"] {
        let key = format!("mode-{mode}.bin");
        let rt = env
            .boto(&[
                "s3-roundtrip",
                "--bucket",
                "kg-body-modes",
                "--key",
                &key,
                "--mode",
                mode,
                "--size",
                "1048576",
            ])
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e:?}"));
        assert_eq!(rt["sent_sha256"], rt["got_sha256"], "{mode}: {rt}");
        assert_eq!(rt["got_len"], 1048576, "{mode}: {rt}");
        // What boto3 sent is the mode asked for...
        let sent = rt["sent_content_sha256"].as_str().unwrap_or_default();
        match mode {
            "signed" => assert_eq!(sent, rt["sent_sha256"].as_str().unwrap()),
            "unsigned" => assert_eq!(sent, "UNSIGNED-PAYLOAD"),
            _ => assert_eq!(sent, "STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
        }
        // ...and so is what moto received.
        let put = kg
            .relay
            .tool_calls()
            .into_iter()
            .find(|e| e.action() == "s3:PutObject" && e.request.target().contains(&key))
            .unwrap_or_else(|| panic!("{mode}: no PutObject reached moto"));
        assert_body_mode(mode, &put, &rt);
        assert!(put.status < 300, "{mode}: moto answered {}", put.status);
    }
    assert_signed_by_sessions(&kg.relay, &agent_key);
}

/// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` (chunk signatures by the agent's key, which
/// keygate could not re-sign) is refused with an AWS error; nothing reaches moto.
#[tokio::test]
async fn signed_chunk_streaming_is_refused() {
    let kg = start(ROLE).await;
    let (env, _, _) = kg.agent_env().await;
    let body =
        "400;chunk-signature=0000000000000000000000000000000000000000000000000000000000000000\r\n";
    let req = env
        .boto(&[
            "signed-request",
            "--service",
            "s3",
            "--method",
            "PUT",
            "--path",
            "/kg-streaming/object.bin",
            "--body",
            body,
            "--header",
            "x-amz-content-sha256:STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            "--header",
            "x-amz-decoded-content-length:1024",
            "--header",
            "content-encoding:aws-chunked",
        ])
        .await
        .unwrap();
    let r = send_signed(&req).await;
    assert!(
        (400..500).contains(&r.status) || r.status == 501,
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD: {} {}",
        r.status,
        r.text()
    );
    let text = r.text();
    assert!(
        text.contains("<Code>") && text.contains("<Message>"),
        "AWS XML error: {text}"
    );
    assert!(kg.relay.exchanges().is_empty(), "something reached moto");
}

/// Calls that answer with AWS credentials (STS AssumeRole, GetSessionToken, ...) are
/// refused: an agent holding them could call AWS without keygate.
#[tokio::test]
async fn credential_minting_calls_are_refused() {
    let kg = start(ROLE).await;
    let (env, _, _) = kg.agent_env().await;
    for body in [
        "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fkeygate-agents&RoleSessionName=escape",
        "Action=GetSessionToken&Version=2011-06-15",
    ] {
        let req = env
            .boto(&["signed-request", "--service", "sts", "--method", "POST", "--path", "/", "--body", body])
            .await
            .unwrap();
        let r = send_signed(&req).await;
        assert_eq!(r.status, 403, "{body}: {}", r.text());
        assert!(r.text().contains("<Code>forbidden</Code>"), "{}", r.text());
        assert!(r.text().contains("does not hand AWS credentials"), "{}", r.text());
    }
    assert!(kg.relay.exchanges().is_empty(), "something reached moto");
}

/// keygate's policies see an AWS call's IAM actions and the resources they act on
/// (`context.aws_actions`, `context.aws_resources`), a copy's source included.
#[tokio::test]
async fn policies_decide_on_the_aws_actions_and_resources() {
    let kg = start(Opts {
        policy: Some(
            r#"@id("no-user-listing")
forbid (principal, action, resource) when { context.aws_actions.contains("iam:ListUsers") };
@id("no-secret-reads")
forbid (principal, action, resource) when { context.aws_resources.contains("arn:aws:s3:::kg-policy/secret.txt") };
"#,
        ),
        ..ROLE
    })
    .await;
    let (env, _, _) = kg.agent_env().await;
    let e = expect_err(env.boto(&["list-users"]).await, "forbidden", 403);
    assert!(
        e.message.contains("no-user-listing") || !e.message.is_empty(),
        "{e:?}"
    );
    // Another action is not caught by it.
    env.boto(&["whoami"]).await.unwrap();
    // Reading the object, or copying it elsewhere (the copy reads its source), is refused.
    for (method, path, header) in [
        ("GET", "/kg-policy/secret.txt", None),
        (
            "PUT",
            "/kg-policy/copy.txt",
            Some("x-amz-copy-source:kg-policy/secret.txt"),
        ),
    ] {
        let mut args = vec![
            "signed-request",
            "--service",
            "s3",
            "--method",
            method,
            "--path",
            path,
            "--body",
            "",
        ];
        if let Some(h) = header {
            args.extend(["--header", h]);
        }
        let req = env.boto(&args).await.unwrap();
        let r = send_signed(&req).await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.text());
        assert!(r.text().contains("<Code>forbidden</Code>"), "{}", r.text());
    }
    let calls = kg.relay.tool_calls();
    assert!(
        calls
            .iter()
            .all(|c| c.request.head.contains("GetCallerIdentity")
                || c.request
                    .body
                    .windows(17)
                    .any(|w| w == b"GetCallerIdentity")),
        "only whoami reached moto: {}",
        calls.len()
    );
}

/// Sends a request printed by `driver.py signed-request` as it is.
async fn send_signed(req: &Value) -> Response {
    let headers: Vec<(String, String)> = req["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Client::http1()
        .send(
            req["method"].as_str().unwrap(),
            req["url"].as_str().unwrap(),
            &refs,
            req["body"].as_str().unwrap().to_string(),
        )
        .await
}

/// `aws iam create-user` and boto3 `create_access_key` wait for a human: the first call
/// fails with an ordinary AWS error naming the approval; once approved, the same call
/// reaches moto exactly once.
#[tokio::test]
async fn identity_creation_waits_for_approval_then_goes_through_once() {
    let kg = start(ROLE).await;
    let (env, agent_key, _) = kg.agent_env().await;
    let user = "kg-approved-user";

    // The AWS CLI.
    let out = env.cli(&["iam", "create-user", "--user-name", user]).await;
    assert_ne!(out.status, 0, "create-user went through unapproved");
    assert!(
        out.stderr.contains("(approval_required)") && out.stderr.contains("CreateUser"),
        "{}",
        out.stderr
    );
    let id = approval_id_in(&out.stderr);
    assert_eq!(
        kg.relay.count("iam:CreateUser"),
        0,
        "reached moto unapproved"
    );
    approve(&kg.gw, &id).await;
    let out = env.cli(&["iam", "create-user", "--user-name", user]).await;
    assert_eq!(out.status, 0, "approved create-user: {}", out.stderr);
    let created: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(created["User"]["UserName"], user);
    assert_eq!(kg.relay.count("iam:CreateUser"), 1);
    // The approval was for one request.
    let out = env.cli(&["iam", "create-user", "--user-name", user]).await;
    assert!(out.stderr.contains("(approval_required)"), "{}", out.stderr);
    assert_eq!(kg.relay.count("iam:CreateUser"), 1);

    // boto3.
    let e = expect_err(
        env.boto(&["create-access-key", user]).await,
        "approval_required",
        403,
    );
    let id = approval_id_in(&e.message);
    assert_eq!(kg.relay.count("iam:CreateAccessKey"), 0);
    approve(&kg.gw, &id).await;
    let made = env.boto(&["create-access-key", user]).await.unwrap();
    assert_eq!(made, json!(user));
    assert_eq!(kg.relay.count("iam:CreateAccessKey"), 1);

    assert_signed_by_sessions(&kg.relay, &agent_key);
}

/// A wrong secret, an unknown key id and a replayed request are refused as AWS errors
/// boto3 reads; none of them reaches moto (not even an AssumeRole).
#[tokio::test]
async fn bad_agent_signatures_are_refused_before_moto() {
    let kg = start(ROLE).await;
    let (env, agent_key, _) = kg.agent_env().await;

    let mut wrong = env.clone();
    wrong.secret_access_key = "wrong-secret-wrong-secret-wrong-secret00".into();
    expect_err(
        wrong.boto(&["list-users"]).await,
        "SignatureDoesNotMatch",
        403,
    );
    let mut unknown = env.clone();
    unknown.access_key_id = "KGAKUNKNOWNUNKNOWN00".into();
    expect_err(
        unknown.boto(&["list-users"]).await,
        "InvalidClientTokenId",
        403,
    );
    assert!(
        kg.relay.exchanges().is_empty(),
        "a refused call reached moto"
    );

    // A request signed now goes through once...
    let req = env.boto(&["signed-request"]).await.unwrap();
    // An x-amz-* header added on the way (unsigned) is refused: keygate would sign it.
    let mut tampered = req.clone();
    tampered["headers"]["x-amz-acl"] = json!("public-read");
    let r = send_signed(&tampered).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().contains("x-amz-acl header is not signed"),
        "{}",
        r.text()
    );
    assert!(
        kg.relay.exchanges().is_empty(),
        "a tampered request reached moto"
    );
    let r = send_signed(&req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The relay records an exchange once moto's answer is through it, which can be just
    // after keygate's answer reached the test.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while kg.relay.tool_calls().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the call never reached moto"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = kg.relay.exchanges().len();
    // ...and is stale ten minutes later, replayed or not.
    kg.gw.advance_clock(Duration::from_secs(600));
    let r = send_signed(&req).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().contains("<Code>RequestTimeTooSkewed</Code>"),
        "{}",
        r.text()
    );
    assert!(
        r.headers
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().contains("xml")),
        "{:?}",
        r.headers
    );
    // boto3 signing with its own (now ten minutes slow) clock.
    expect_err(env.boto(&["list-users"]).await, "RequestTimeTooSkewed", 403);
    assert_eq!(
        kg.relay.exchanges().len(),
        seen,
        "a stale call reached moto"
    );
    assert!(!contains(&kg.relay.all_bytes(), &agent_key));
}

/// STS down (nothing listens) or refusing (403 AccessDenied): the call fails with
/// `credential_unavailable` as an AWS error, nothing reaches the tool, and the metric
/// counts it.
#[tokio::test]
async fn sts_down_or_refusing_fails_closed() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let refusing = RawUpstream::with_responder(Arc::new(|_r: &Received| {
        (
            403,
            vec![("content-type".to_string(), "text/xml".to_string())],
            b"<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User is not authorized to perform: sts:AssumeRole</Message></Error><RequestId>r1</RequestId></ErrorResponse>".to_vec(),
        )
    }))
    .await;
    for (what, sts) in [
        ("down", format!("http://{closed}")),
        ("refusing", refusing.url()),
    ] {
        let kg = start(Opts {
            sts: Some(sts),
            ..ROLE
        })
        .await;
        let (env, _, _) = kg.agent_env().await;
        let e = expect_err(
            env.boto(&["list-users"]).await,
            "credential_unavailable",
            502,
        );
        assert!(!e.message.is_empty());
        let e = expect_err(env.boto(&["whoami"]).await, "credential_unavailable", 502);
        assert!(!e.message.is_empty());
        assert!(
            kg.relay.exchanges().is_empty(),
            "STS {what}: a call reached the tool"
        );
        let metrics = kg.metrics().await;
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("keygate_credential_failures_total{")
                    && l.contains("provider=\"aws\"")
            })
            .unwrap_or_else(|| panic!("STS {what}: no credential_unavailable metric:\n{metrics}"));
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        // Every call that failed is counted, the SDK's retries of a 502 included.
        let failed = kg
            .gw
            .audit()
            .await
            .iter()
            .filter(|r| r["error"] == "credential_unavailable")
            .count();
        assert!(failed >= 2, "STS {what}: {failed} failed calls audited");
        assert_eq!(n, failed as f64, "STS {what}: {line}");
    }
    assert!(
        refusing.count() >= 1,
        "keygate did not ask the refusing STS"
    );
}

/// 100 concurrent cold calls of one agent for one action make one AssumeRole.
#[tokio::test]
async fn concurrent_cold_calls_assume_the_role_once() {
    let kg = start(ROLE).await;
    let (env, agent_key, _) = kg.agent_env().await;
    let results = env.boto(&["concurrent", "--n", "100"]).await.unwrap();
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 100);
    assert!(results.iter().all(|r| r == "ok"), "{results:?}");
    assert_eq!(
        kg.relay.assume_roles().len(),
        1,
        "one AssumeRole for one scope"
    );
    assert_eq!(kg.relay.count("iam:ListUsers"), 100);
    assert_signed_by_sessions(&kg.relay, &agent_key);
}

/// Without `role_arn` the base key signs directly: moto sees keygate's user, no
/// AssumeRole, no session token.
#[tokio::test]
async fn static_key_mode_signs_with_the_base_key() {
    let kg = start(Opts {
        role: false,
        ..ROLE
    })
    .await;
    let m = moto();
    let (env, agent_key, _) = kg.agent_env().await;
    assert_eq!(
        env.boto(&["whoami"]).await.unwrap(),
        format!("arn:aws:iam::{ACCOUNT}:user/keygate")
    );
    // The base user may only assume roles: moto itself refuses ListUsers for it.
    let e = expect_err(env.boto(&["list-users"]).await, "AccessDenied", 403);
    assert!(e.message.contains("user/keygate"), "{e:?}");
    let seen = kg.relay.exchanges();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    for e in &seen {
        assert!(!e.is_assume_role());
        assert_eq!(e.access_key_id(), Some(m.base_access_key_id.clone()));
        assert!(e.header("x-amz-security-token").is_none());
        assert_ne!(e.access_key_id(), Some(agent_key.clone()));
    }
}

/// A revoked agent key is unknown from then on.
#[tokio::test]
async fn a_revoked_agent_key_is_refused() {
    let kg = start(ROLE).await;
    let (env, agent_key, _) = kg.agent_env().await;
    env.boto(&["list-users"]).await.unwrap();
    let (s, b) = kg
        .gw
        .admin("GET", &format!("/agents/{AGENT}/aws-keys"), None)
        .await;
    assert_eq!(s, 200, "{b}");
    let key = b["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["fingerprint"] == fingerprint(&agent_key).as_str())
        .unwrap_or_else(|| panic!("issued key not listed: {b}"))
        .clone();
    assert!(
        key["created_at"].is_string() || key["created_at"].is_number(),
        "{key}"
    );
    assert!(key["revoked_at"].is_null(), "{key}");
    assert!(
        !b.to_string().contains(&env.secret_access_key),
        "the list shows the secret"
    );

    let (s, b) = kg
        .gw
        .admin("DELETE", &format!("/aws-keys/{agent_key}"), None)
        .await;
    assert_eq!(s, 200, "DELETE /aws-keys/{agent_key}: {b}");
    let (_, b) = kg
        .gw
        .admin("GET", &format!("/agents/{AGENT}/aws-keys"), None)
        .await;
    let key = b["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["fingerprint"] == fingerprint(&agent_key).as_str())
        .cloned()
        .unwrap_or(Value::Null);
    assert!(!key["revoked_at"].is_null(), "revoked key listed as {key}");

    let before = kg.relay.exchanges().len();
    expect_err(env.boto(&["list-users"]).await, "InvalidClientTokenId", 403);
    assert_eq!(
        kg.relay.exchanges().len(),
        before,
        "a revoked key's call reached moto"
    );
}

/// The agent's key id and secret, keygate's base secret and the session secrets appear
/// nowhere: not at moto, not in the audit log, the store, or any log line.
#[tokio::test]
async fn keys_and_secrets_never_leave_keygate() {
    let mut kg = start(ROLE).await;
    let m = moto();
    let (env, agent_key, agent_secret) = kg.agent_env().await;
    env.boto(&["whoami"]).await.unwrap();
    env.boto(&["list-users"]).await.unwrap();
    let rt = env
        .boto(&[
            "s3-roundtrip",
            "--bucket",
            "kg-secrets",
            "--mode",
            "signed",
            "--size",
            "2048",
        ])
        .await
        .unwrap();
    assert_eq!(rt["sent_sha256"], rt["got_sha256"]);
    let mut wrong = env.clone();
    wrong.secret_access_key = "not-the-secret-not-the-secret-not-the-s".into();
    expect_err(
        wrong.boto(&["list-users"]).await,
        "SignatureDoesNotMatch",
        403,
    );
    let sessions = kg.relay.sessions();
    assert!(!sessions.is_empty());

    let relay_bytes = kg.relay.all_bytes();
    for (what, needle) in [
        ("agent key id", agent_key.as_str()),
        ("agent secret", agent_secret.as_str()),
        ("base secret", m.base_secret_access_key.as_str()),
    ] {
        assert!(!contains(&relay_bytes, needle), "the {what} reached moto");
    }

    let audit = kg.gw.audit().await;
    assert!(!audit.is_empty());
    kg.gw.stop().await;
    let audit_text = std::fs::read(&kg.gw.audit_path).unwrap();
    let logs = logs().lock().unwrap().clone();
    assert!(!logs.is_empty(), "no log line captured");
    let mut secrets = vec![
        ("agent key id", agent_key.clone()),
        ("agent secret", agent_secret.clone()),
        ("base secret", m.base_secret_access_key.clone()),
    ];
    for s in &sessions {
        secrets.push(("session secret", s.secret_access_key.clone()));
        secrets.push(("session token", s.session_token.clone()));
    }
    for (what, needle) in &secrets {
        assert!(
            !contains(&audit_text, needle),
            "the {what} is in the audit log"
        );
        assert!(!contains(&logs, needle), "the {what} is in a log line");
    }
    // The store and every other file keygate keeps (the base credential file aside).
    let secrets_dir = kg.gw.dir.path().join("secrets");
    for f in files_under(kg.gw.dir.path()) {
        if f.starts_with(&secrets_dir) {
            continue;
        }
        let bytes = std::fs::read(&f).unwrap();
        for (what, needle) in [
            ("agent key id", &agent_key),
            ("agent secret", &agent_secret),
        ] {
            assert!(
                !contains(&bytes, needle),
                "the {what} is in {}",
                f.display()
            );
        }
    }
    assert!(
        files_under(kg.gw.dir.path())
            .iter()
            .any(|f| f.file_name().is_some_and(|n| n == "keygate.db")),
        "no store file under the gateway's directory"
    );
}

/// An approved CreateAccessKey: boto3 gets a handle pair, never the key moto made; signing
/// with the handle pair, boto3 reaches S3 through keygate, which signs with the real key
/// (moto sees it); the real secret is in nothing boto3 received, the audit log, the store
/// or a log line; revoking the inventory record kills the handle pair at once.
#[tokio::test]
async fn a_created_access_key_is_captured_and_its_handle_pair_signs_for_it() {
    let mut kg = start(ROLE).await;
    let (env, _, _) = kg.agent_env().await;
    let user = "kg-captured-user";
    let e = expect_err(
        env.boto(&["create-user", user]).await,
        "approval_required",
        403,
    );
    approve(&kg.gw, &approval_id_in(&e.message)).await;
    env.boto(&["create-user", user]).await.unwrap();
    // What the user may do: granted through keygate, approved (privilege escalation).
    let grant = ["put-user-policy", user, "s3:*", "sts:GetCallerIdentity"];
    match env.boto(&grant).await {
        Ok(_) => {}
        Err(e) => {
            assert_eq!(e.code, "approval_required", "{e:?}");
            approve(&kg.gw, &approval_id_in(&e.message)).await;
            env.boto(&grant).await.unwrap();
        }
    }

    let e = expect_err(
        env.boto(&["create-access-key-pair", user]).await,
        "approval_required",
        403,
    );
    approve(&kg.gw, &approval_id_in(&e.message)).await;
    let pair = env.boto(&["create-access-key-pair", user]).await.unwrap();
    let handle_id = pair["AccessKeyId"].as_str().unwrap().to_string();
    let handle_secret = pair["SecretAccessKey"].as_str().unwrap().to_string();
    assert!(handle_id.starts_with("KGAK"), "{pair}");
    assert_eq!(pair["UserName"], user);
    // moto made a real key: the inventory knows its id; keygate's answer carried neither.
    let (_, inv) = kg.gw.admin("GET", "/inventory", None).await;
    let entry = inv["identities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["operation"] == "aws:CreateAccessKey")
        .unwrap()
        .clone();
    let real_id = entry["identifier"].as_str().unwrap().to_string();
    assert!(real_id.starts_with("AKIA"), "{entry}");
    assert_eq!(entry["captured"], 1, "{entry}");
    let moto_answer = kg
        .relay
        .tool_calls()
        .into_iter()
        .rev()
        .find(|x| x.action() == "iam:CreateAccessKey")
        .unwrap();
    let real_secret = xml_text(
        &String::from_utf8_lossy(&moto_answer.response_body),
        "SecretAccessKey",
    )
    .expect("moto's answer has the secret");
    assert!(!pair.to_string().contains(&real_secret));
    assert!(!pair.to_string().contains(&real_id));

    // boto3 with the handle pair: S3 through keygate, signed by the real key.
    let mut handle_env = AwsEnv::new(kg.endpoint(), &handle_id, &handle_secret);
    handle_env.ca = env.ca.clone();
    let rt = handle_env
        .boto(&[
            "s3-roundtrip",
            "--bucket",
            "kg-captured",
            "--mode",
            "signed",
            "--size",
            "1024",
        ])
        .await
        .unwrap();
    assert_eq!(rt["sent_sha256"], rt["got_sha256"]);
    let arn = handle_env.boto(&["whoami"]).await.unwrap();
    assert_eq!(arn, json!(format!("arn:aws:iam::123456789012:user/{user}")));
    let last = kg.relay.tool_calls().into_iter().last().unwrap();
    assert_eq!(last.access_key_id().as_deref(), Some(real_id.as_str()));
    // The agent named by its token instead, signing with the handle pair: the same.
    let mut jwt_env = handle_env.clone();
    jwt_env.jwt = Some(kg.iss.token(AGENT));
    let arn = jwt_env.boto(&["whoami"]).await.unwrap();
    assert_eq!(arn, json!(format!("arn:aws:iam::123456789012:user/{user}")));
    let audit = kg.gw.audit().await;
    let used = audit.iter().filter(|r| r["handle"] == entry["id"]).count();
    assert!(used >= 4, "calls with the handle name the inventory record");

    // Revoked: the next call with the handle pair is refused by keygate.
    let (s, b) = kg
        .gw
        .admin(
            "POST",
            &format!("/inventory/{}/revoke", entry["id"].as_str().unwrap()),
            Some(json!({"by": "owner@example.com"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let before = kg.relay.tool_calls().len();
    expect_err(
        handle_env.boto(&["whoami"]).await,
        "InvalidClientTokenId",
        403,
    );
    assert_eq!(
        kg.relay.tool_calls().len(),
        before,
        "a revoked handle reached moto"
    );

    // The real secret is in nothing keygate wrote or logged.
    kg.gw.stop().await;
    let logs = logs().lock().unwrap().clone();
    assert!(
        !contains(&logs, &real_secret),
        "the captured secret is in a log line"
    );
    for f in files_under(kg.gw.dir.path()) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !contains(&bytes, &real_secret),
            "the captured secret is in {}",
            f.display()
        );
    }
}

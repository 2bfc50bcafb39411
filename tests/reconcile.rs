//! Reconciling the inventory with the real AWS account (issue 20), against moto's server
//! with request authentication on (see `tests/aws_support`): identities created through
//! keygate with an approval are `present`; users and keys created directly in moto, around
//! keygate, are `shadow` (with their user's `owner` tag); a key deleted directly in moto is
//! `gone`, and its inventory record retired (revoked by `reconcile`, its handle dead,
//! audited, counted); `adopt` records a shadow key, which the next reconcile finds
//! present; a reconcile that cannot list the account changes nothing.
//!
//! moto is shared by the tests of this file (one per test binary), so each test names its
//! own users and looks for them, never for the whole account.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod aws_support;
mod common;
use aws_support::*;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const AGENT: &str = "aws-agent";
const OWNER: &str = "owner@example.com";

struct Kg {
    gw: TestGateway,
    relay: Relay,
}

/// keygate with agent [`AGENT`] and tool `aws` in front of moto (through a relay); with
/// `role`, sessions of the role sign (else the base key, which may only assume the role).
async fn start(role: bool) -> Kg {
    start_with(role, &moto().base_credential_json()).await
}

/// [`start`] with another base key (`credential_process` JSON).
async fn start_with(role: bool, base_json: &str) -> Kg {
    start_at(role, base_json, None).await
}

/// [`start_with`], the tool's upstream another server than moto.
/// (The grace that keeps a just-created record from being taken for gone is off: these
/// tests delete keys right after creating them.)
async fn start_at(role: bool, base_json: &str, upstream: Option<String>) -> Kg {
    start_config(role, base_json, upstream, "reconcile_grace = \"0s\"\n").await
}

/// [`start_at`] with more lines for `[tools.credential]`.
async fn start_config(role: bool, base_json: &str, upstream: Option<String>, extra: &str) -> Kg {
    logs();
    let relay = Relay::to_moto();
    let upstream = upstream.unwrap_or_else(|| relay.url());
    let dir = tempfile::tempdir().unwrap();
    let base = secret_file(dir.path(), "aws-base.json", base_json);
    let role = if role {
        format!("role_arn = {ROLE_ARN:?}\n")
    } else {
        String::new()
    };
    let cfg = format!(
        "{}[[tools]]\nname = \"aws\"\nkind = \"aws\"\nupstream = {:?}\n\
         [tools.credential]\nprovider = \"aws\"\n{extra}{role}sts_endpoint = {:?}\nregion = \"us-east-1\"\n{base}\
         {}",
        agent(AGENT, OWNER),
        upstream,
        relay.url(),
        static_tool("plain", "http://127.0.0.1:9", "from_env = \"RECONCILE_UNSET\"\n"),
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    Kg { gw, relay }
}

impl Kg {
    fn endpoint(&self) -> String {
        format!("http://{}/tools/aws", self.gw.addr)
    }

    /// boto3 as agent [`AGENT`], with a key pair keygate issued it.
    async fn agent_env(&self) -> AwsEnv {
        let (s, b) = self
            .gw
            .admin(
                "POST",
                &format!("/agents/{AGENT}/aws-keys"),
                Some(json!({})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        AwsEnv::new(
            self.endpoint(),
            b["access_key_id"].as_str().unwrap(),
            b["secret_access_key"].as_str().unwrap(),
        )
    }

    /// Runs an identity-creating boto3 command through keygate: refused until approved,
    /// approved by bob, then run again.
    async fn approved(&self, env: &AwsEnv, args: &[&str]) -> Value {
        let e = env.boto(args).await.expect_err("went through unapproved");
        assert_eq!(e.code, "approval_required", "{e:?}");
        approve_as_bob(&self.gw, &approval_id_in(&e.message), "CHG-20").await;
        env.boto(args).await.unwrap()
    }

    async fn reconcile(&self) -> Value {
        let (s, b) = self
            .gw
            .admin(
                "POST",
                "/inventory/reconcile/aws",
                Some(json!({"by": "ops@example.com"})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        b
    }

    async fn inventory(&self) -> Vec<Value> {
        let (s, b) = self.gw.admin("GET", "/inventory", None).await;
        assert_eq!(s, 200, "{b}");
        b["identities"].as_array().unwrap().clone()
    }

    async fn metrics(&self) -> String {
        self.gw.metrics().await
    }
}

/// The entry of `report[state]` with this kind and identifier.
fn find<'a>(report: &'a Value, state: &str, kind: &str, identifier: &str) -> Option<&'a Value> {
    report[state]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == kind && e["identifier"] == identifier)
}

#[track_caller]
fn only_in(report: &Value, state: &str, kind: &str, identifier: &str) -> Value {
    for other in ["present", "gone", "shadow"] {
        let found = find(report, other, kind, identifier);
        assert_eq!(
            found.is_some(),
            other == state,
            "{kind} {identifier}: expected only in {state}, {other} has {found:?}\n{report:#}"
        );
    }
    find(report, state, kind, identifier).unwrap().clone()
}

/// A metric sample's value.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn reconcile_finds_present_shadow_and_gone_and_retires_what_is_gone() {
    let kg = start(true).await;
    let env = kg.agent_env().await;
    let user = "rc-made-through-keygate";
    kg.approved(&env, &["create-user", user]).await;
    let kept = kg.approved(&env, &["create-access-key-pair", user]).await;
    let doomed = kg.approved(&env, &["create-access-key-pair", user]).await;
    let doomed_handle = (
        doomed["AccessKeyId"].as_str().unwrap().to_string(),
        doomed["SecretAccessKey"].as_str().unwrap().to_string(),
    );
    assert!(doomed_handle.0.starts_with("KGAK"), "captured: {doomed}");
    let inventory = kg.inventory().await;
    let keys: Vec<&Value> = inventory
        .iter()
        .filter(|e| e["kind"] == "access_key")
        .collect();
    assert_eq!(keys.len(), 2, "{inventory:?}");
    // Newest first: the doomed key's record, then the kept one's.
    let (doomed_entry, kept_entry) = (keys[0].clone(), keys[1].clone());
    let doomed_id = doomed_entry["identifier"].as_str().unwrap().to_string();
    let kept_id = kept_entry["identifier"].as_str().unwrap().to_string();
    assert!(doomed_id.starts_with("AKIA") && kept_id.starts_with("AKIA"));
    let _ = kept;

    // Around keygate: a tagged user with a key, an untagged user; the doomed key deleted.
    let aws = role_session_at_moto().await;
    let tagged = "rc-shadow-tagged";
    let untagged = "rc-shadow-untagged";
    aws.boto(&[
        "create-user",
        tagged,
        "--tag",
        "owner=dana@example.com",
        "--tag",
        "team=x",
    ])
    .await
    .unwrap();
    let shadow_key = aws.boto(&["create-access-key-pair", tagged]).await.unwrap();
    let shadow_key = shadow_key["AccessKeyId"].as_str().unwrap().to_string();
    aws.boto(&["create-user", untagged]).await.unwrap();
    aws.boto(&["delete-access-key", user, &doomed_id])
        .await
        .unwrap();

    let report = kg.reconcile().await;
    let u = only_in(&report, "present", "user", user);
    assert_eq!(u["owner"], "carol@example.com", "{u}");
    let k = only_in(&report, "present", "access_key", &kept_id);
    assert_eq!(
        (k["user"].as_str(), k["status"].as_str()),
        (Some(user), Some("Active"))
    );
    assert_eq!(k["id"], kept_entry["id"]);
    let g = only_in(&report, "gone", "access_key", &doomed_id);
    assert_eq!(g["id"], doomed_entry["id"]);
    assert_eq!(g["retired"], true, "{g}");
    // The captured secret's handle and the AWS handle key that stands for it.
    assert_eq!(g["handles_revoked"], 2, "{g}");
    let s = only_in(&report, "shadow", "user", tagged);
    assert_eq!(s["owner"], "dana@example.com", "{s}");
    assert!(s["created"].as_str().unwrap().starts_with("20"), "{s}");
    let s = only_in(&report, "shadow", "access_key", &shadow_key);
    assert_eq!(s["user"], tagged);
    assert_eq!(s["owner"], "dana@example.com", "{s}");
    assert_eq!(s["status"], "Active");
    let s = only_in(&report, "shadow", "user", untagged);
    assert_eq!(s["owner"], Value::Null, "{s}");
    let shadows = report["shadow"].as_array().unwrap().len();
    // Listed with keygate's own session, whose policy allows the listings and nothing else.
    let session = kg
        .relay
        .assume_roles()
        .into_iter()
        .find(|x| x.param("RoleSessionName").as_deref() == Some("keygate-reconcile"))
        .expect("an AssumeRole for the reconcile");
    let policy = session.session_policy().unwrap();
    assert_eq!(
        policy["Statement"][0]["Action"],
        json!(["iam:ListUsers", "iam:ListAccessKeys", "iam:ListUserTags"]),
        "{policy}"
    );
    assert_eq!(policy["Statement"].as_array().unwrap().len(), 1, "{policy}");
    let listed: Vec<String> = kg
        .relay
        .tool_calls()
        .iter()
        .filter(|x| x.access_key_id() == session.session_credentials().map(|c| c.access_key_id))
        .map(Exchange::action)
        .collect();
    assert!(listed.contains(&"iam:ListUsers".to_string()), "{listed:?}");
    assert!(
        listed.iter().all(
            |a| ["iam:ListUsers", "iam:ListAccessKeys", "iam:ListUserTags"].contains(&a.as_str())
        ),
        "{listed:?}"
    );

    // Retired: revoked by "reconcile"; the kept key's record untouched.
    let inventory = kg.inventory().await;
    let by_id = |id: &Value| inventory.iter().find(|e| e["id"] == *id).unwrap().clone();
    let d = by_id(&doomed_entry["id"]);
    assert!(d["revoked_at"].is_i64(), "{d}");
    assert_eq!(d["revoked_by"], "reconcile", "{d}");
    assert_eq!(d["captured"], 0, "its captured secret is deleted: {d}");
    assert_eq!(by_id(&kept_entry["id"])["revoked_at"], Value::Null);
    // Its handle pair no longer signs anything.
    let handle_env = AwsEnv::new(kg.endpoint(), &doomed_handle.0, &doomed_handle.1);
    let e = handle_env.boto(&["whoami"]).await.unwrap_err();
    assert_eq!(e.code, "InvalidClientTokenId", "{e:?}");

    // Audited: the retirement (naming the record and the tool) and the reconcile.
    let audit = kg.gw.audit().await;
    let retire: Vec<&Value> = audit
        .iter()
        .filter(|r| r["operation"] == "keygate:inventory.retire")
        .collect();
    assert_eq!(retire.len(), 1, "{retire:?}");
    assert_eq!(retire[0]["inventory_id"], doomed_entry["id"]);
    assert_eq!(retire[0]["tool"], "aws");
    assert_eq!(retire[0]["admin"]["by"], "reconcile");
    let runs: Vec<&Value> = audit
        .iter()
        .filter(|r| r["operation"] == "keygate:inventory.reconcile")
        .collect();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["admin"]["by"], "ops@example.com");

    // Counted; a second reconcile retires nothing more.
    let m = kg.metrics().await;
    assert_eq!(
        sample(&m, "keygate_inventory_shadow_identities{tool=\"aws\"}"),
        Some(shadows as f64),
        "{m}"
    );
    assert_eq!(
        sample(&m, "keygate_inventory_retired_total{tool=\"aws\"}"),
        Some(1.0),
        "{m}"
    );
    let again = kg.reconcile().await;
    assert!(
        find(&again, "gone", "access_key", &doomed_id).is_none(),
        "{again:#}"
    );
    only_in(&again, "present", "access_key", &kept_id);
    let m = kg.metrics().await;
    assert_eq!(
        sample(&m, "keygate_inventory_retired_total{tool=\"aws\"}"),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test]
async fn an_adopted_shadow_key_is_present_at_the_next_reconcile() {
    let kg = start(true).await;
    let aws = role_session_at_moto().await;
    let user = "rc-adopt-me";
    aws.boto(&["create-user", user, "--tag", "owner=erin@example.com"])
        .await
        .unwrap();
    let key = aws.boto(&["create-access-key-pair", user]).await.unwrap();
    let key = key["AccessKeyId"].as_str().unwrap().to_string();

    // The CLI's table shows it as shadow, with its owner tag.
    let out = cli(&kg.gw, &["inventory", "reconcile", "aws"]).await;
    let line = out
        .lines()
        .find(|l| l.contains(&key))
        .unwrap_or_else(|| panic!("{key} not in\n{out}"));
    assert!(
        line.starts_with("shadow") && line.contains("erin@example.com") && line.contains(user),
        "{line}"
    );
    assert!(out.starts_with("STATE"), "{out}");

    let out = cli(
        &kg.gw,
        &[
            "inventory",
            "adopt",
            "aws",
            &key,
            "--kind",
            "access_key",
            "--owner",
            "erin@example.com",
            "--review-in",
            "90d",
            "--approver",
            "frank@example.com",
        ],
    )
    .await;
    assert!(out.starts_with("adopted access_key"), "{out}");
    let inventory = kg.inventory().await;
    let e = inventory
        .iter()
        .find(|e| e["identifier"] == key.as_str())
        .unwrap();
    assert_eq!(e["agent_id"], "(adopted)");
    assert_eq!(e["approver"], "frank@example.com");
    assert_eq!(e["owner"], "erin@example.com");
    assert_eq!(e["tool"], "aws");
    let review_in = e["review_by"].as_i64().unwrap() - e["created_at"].as_i64().unwrap();
    assert_eq!(review_in, 90 * 86_400_000, "{e}");

    let out = cli(&kg.gw, &["inventory", "reconcile", "aws", "--json"]).await;
    let report: Value = serde_json::from_str(&out).unwrap();
    let p = only_in(&report, "present", "access_key", &key);
    assert_eq!(p["id"], e["id"]);
    // The user itself was not adopted: still shadow.
    only_in(&report, "shadow", "user", user);

    // Adopting it again is refused; so is a kind a reconcile does not compare.
    let body = json!({"tool": "aws", "identifier": key, "kind": "access_key",
        "owner": "erin@example.com", "approver": "frank@example.com"});
    let (s, b) = kg
        .gw
        .admin("POST", "/inventory/adopt", Some(body.clone()))
        .await;
    assert_eq!(s, 409, "{b}");
    let mut role = body.clone();
    role["kind"] = json!("role");
    let (s, b) = kg.gw.admin("POST", "/inventory/adopt", Some(role)).await;
    assert_eq!(s, 400, "{b}");

    let audit = kg.gw.audit().await;
    let adopted: Vec<&Value> = audit
        .iter()
        .filter(|r| r["operation"] == "keygate:inventory.adopt")
        .collect();
    assert_eq!(adopted.len(), 1, "{adopted:?}");
    assert_eq!(adopted[0]["inventory_id"], e["id"]);
    assert_eq!(adopted[0]["admin"]["by"], "frank@example.com");
    assert_eq!(adopted[0]["tool"], "aws");
}

/// Without the role, keygate's base key may not list users: the reconcile fails and
/// retires nothing, although the account has none of the inventory's keys; so does one
/// whose key may list the users but not their access keys.
#[tokio::test]
async fn a_reconcile_that_cannot_list_the_account_changes_nothing() {
    let kg = start(false).await;
    let body = json!({"tool": "aws", "identifier": "AKIANOTINMOTO0000000", "kind": "access_key",
        "owner": "erin@example.com", "approver": "frank@example.com"});
    let (s, b) = kg.gw.admin("POST", "/inventory/adopt", Some(body)).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = kg
        .gw
        .admin("POST", "/inventory/reconcile/aws", Some(json!({})))
        .await;
    assert_eq!(s, 502, "{b}");
    assert_eq!(b["error"], "reconcile_failed", "{b}");
    assert!(b["message"].as_str().unwrap().contains("ListUsers"), "{b}");
    let inventory = kg.inventory().await;
    assert_eq!(inventory[0]["revoked_at"], Value::Null, "{inventory:?}");
    let m = kg.metrics().await;
    assert_eq!(
        sample(&m, "keygate_inventory_retired_total{tool=\"aws\"}"),
        None,
        "{m}"
    );

    // A key that may list the users but not their keys: the same.
    let aws = role_session_at_moto().await;
    let lister = "rc-lists-users-only";
    aws.boto(&["create-user", lister]).await.unwrap();
    aws.boto(&["put-user-policy", lister, "iam:ListUsers"])
        .await
        .unwrap();
    let key = aws.boto(&["create-access-key-pair", lister]).await.unwrap();
    let base = json!({"Version": 1, "AccessKeyId": key["AccessKeyId"],
        "SecretAccessKey": key["SecretAccessKey"]});
    let kg2 = start_with(false, &base.to_string()).await;
    let body = json!({"tool": "aws", "identifier": "AKIANOTINMOTO0000001", "kind": "access_key",
        "owner": "erin@example.com", "approver": "frank@example.com"});
    let (s, b) = kg2.gw.admin("POST", "/inventory/adopt", Some(body)).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = kg2
        .gw
        .admin("POST", "/inventory/reconcile/aws", Some(json!({})))
        .await;
    assert_eq!(s, 502, "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("ListAccessKeys"),
        "{b}"
    );
    assert_eq!(kg2.inventory().await[0]["revoked_at"], Value::Null);

    // Other tools, unknown tools, and callers without the admin token.
    let (s, b) = kg
        .gw
        .admin("POST", "/inventory/reconcile/plain", Some(json!({})))
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("not_supported")),
        "{b}"
    );
    let (s, _) = kg
        .gw
        .admin("POST", "/inventory/reconcile/nope", Some(json!({})))
        .await;
    assert_eq!(s, 404);
    let r = Client::http1()
        .send(
            "POST",
            &format!("http://{}/inventory/reconcile/aws", kg.gw.admin_addr),
            &[],
            String::new(),
        )
        .await;
    assert_eq!(r.status, 401);
}

/// Runs the keygate CLI against this gateway's admin API; its stdout (it must succeed).
async fn cli(gw: &TestGateway, args: &[&str]) -> String {
    let c = gw.cli(args).await;
    assert!(c.ok, "the CLI failed:\n{}\n{}", c.stdout, c.stderr);
    c.stdout
}

/// An IAM that answers in pages (moto ignores `MaxItems` and `Marker` for these listings):
/// two pages of users, two of one user's keys. keygate reads them all, asking for each
/// next page with the `Marker` it was given.
#[tokio::test]
async fn reconcile_reads_every_page() {
    fn user(n: &str) -> String {
        format!(
            "<member><UserName>{n}</UserName><Arn>arn:aws:iam::123456789012:user/{n}</Arn>\
             <CreateDate>2024-01-01T00:00:00Z</CreateDate></member>"
        )
    }
    fn key(id: &str) -> String {
        format!(
            "<member><UserName>paged-3</UserName><AccessKeyId>{id}</AccessKeyId>\
             <Status>Active</Status><CreateDate>2024-01-02T00:00:00Z</CreateDate></member>"
        )
    }
    let page = move |r: &Received| -> (u16, Vec<(String, String)>, Vec<u8>) {
        let form: std::collections::HashMap<String, String> =
            form_urlencoded::parse(&r.body).into_owned().collect();
        let marker = form.get("Marker").map(String::as_str);
        let user_name = form.get("UserName").map(String::as_str);
        let (action, inner) = match (form["Action"].as_str(), marker, user_name) {
            ("ListUsers", None, _) => (
                "ListUsers",
                format!("<Users>{}{}</Users><IsTruncated>true</IsTruncated><Marker>users-2</Marker>", user("paged-1"), user("paged-2")),
            ),
            ("ListUsers", Some("users-2"), _) => (
                "ListUsers",
                format!("<Users>{}</Users><IsTruncated>false</IsTruncated>", user("paged-3")),
            ),
            ("ListAccessKeys", None, Some("paged-3")) => (
                "ListAccessKeys",
                format!("<AccessKeyMetadata>{}</AccessKeyMetadata><IsTruncated>true</IsTruncated><Marker>keys-2</Marker>", key("AKIAPAGEDKEY00000001")),
            ),
            ("ListAccessKeys", Some("keys-2"), Some("paged-3")) => (
                "ListAccessKeys",
                format!("<AccessKeyMetadata>{}</AccessKeyMetadata><IsTruncated>false</IsTruncated>", key("AKIAPAGEDKEY00000002")),
            ),
            ("ListAccessKeys", None, _) => (
                "ListAccessKeys",
                "<AccessKeyMetadata/><IsTruncated>false</IsTruncated>".to_string(),
            ),
            ("ListUserTags", None, _) => (
                "ListUserTags",
                "<Tags/><IsTruncated>false</IsTruncated>".to_string(),
            ),
            _ => return (400, vec![], b"<ErrorResponse><Error><Code>Unexpected</Code><Message>unexpected call</Message></Error></ErrorResponse>".to_vec()),
        };
        let body = format!(
            "<{action}Response><{action}Result>{inner}</{action}Result></{action}Response>"
        );
        (
            200,
            vec![("content-type".into(), "text/xml".into())],
            body.into_bytes(),
        )
    };
    let iam = RawUpstream::with_responder(std::sync::Arc::new(page)).await;
    let base =
        json!({"Version": 1, "AccessKeyId": "AKIAFAKEBASE00000000", "SecretAccessKey": "fake"});
    let kg = start_at(false, &base.to_string(), Some(iam.url())).await;
    let report = kg.reconcile().await;
    for u in ["paged-1", "paged-2", "paged-3"] {
        only_in(&report, "shadow", "user", u);
    }
    for k in ["AKIAPAGEDKEY00000001", "AKIAPAGEDKEY00000002"] {
        let s = only_in(&report, "shadow", "access_key", k);
        assert_eq!(s["user"], "paged-3");
    }
    assert_eq!(report["shadow"].as_array().unwrap().len(), 5, "{report:#}");
    // Signed with keygate's key for IAM, every call.
    for r in iam.requests() {
        let auth = r.header("authorization").unwrap();
        assert!(
            auth.contains("Credential=AKIAFAKEBASE00000000/")
                && auth.contains("/us-east-1/iam/aws4_request"),
            "{auth}"
        );
    }
}

/// With `reconcile_every`, keygate reconciles by itself: a record whose key is not in the
/// account is retired without anyone asking.
#[tokio::test]
async fn a_scheduled_reconcile_retires_what_is_gone() {
    let kg = start_config(
        true,
        &moto().base_credential_json(),
        None,
        "reconcile_every = \"1s\"\nreconcile_grace = \"0s\"\n",
    )
    .await;
    let body = json!({"tool": "aws", "identifier": "AKIANOTINMOTO0000002", "kind": "access_key",
        "owner": "erin@example.com", "approver": "frank@example.com"});
    let (s, b) = kg.gw.admin("POST", "/inventory/adopt", Some(body)).await;
    assert_eq!(s, 201, "{b}");
    let id = b["id"].clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let inventory = kg.inventory().await;
        let e = inventory.iter().find(|e| e["id"] == id).unwrap();
        if e["revoked_at"].is_i64() {
            assert_eq!(e["revoked_by"], "reconcile", "{e}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not retired by a scheduled reconcile: {e}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let audit = kg.gw.audit().await;
    let run = audit
        .iter()
        .find(|r| r["operation"] == "keygate:inventory.reconcile")
        .expect("the scheduled reconcile is audited");
    assert_eq!(run["admin"]["by"], "schedule", "{run}");
    assert_eq!(run["tool"], "aws");
    let m = kg.metrics().await;
    assert_eq!(
        sample(&m, "keygate_inventory_retired_total{tool=\"aws\"}"),
        Some(1.0),
        "{m}"
    );
}

/// With the default grace, a record created a moment ago whose key IAM does not list (yet)
/// is only counted as too recent, never retired; once older, it is retired.
#[tokio::test]
async fn a_just_created_record_is_not_taken_for_gone() {
    let kg = start_config(true, &moto().base_credential_json(), None, "").await;
    let body = json!({"tool": "aws", "identifier": "AKIANOTINMOTO0000003", "kind": "access_key",
        "owner": "erin@example.com", "approver": "frank@example.com"});
    let (s, b) = kg.gw.admin("POST", "/inventory/adopt", Some(body)).await;
    assert_eq!(s, 201, "{b}");
    let report = kg.reconcile().await;
    assert_eq!(report["too_recent"], 1, "{report}");
    assert!(report["gone"].as_array().unwrap().is_empty(), "{report}");
    let e = kg
        .inventory()
        .await
        .into_iter()
        .find(|e| e["id"] == b["id"])
        .unwrap();
    assert!(e["revoked_at"].is_null(), "{e}");
    kg.gw
        .runtime
        .shared
        .clock
        .advance(Duration::from_secs(11 * 60));
    let report = kg.reconcile().await;
    assert_eq!(report["gone"].as_array().unwrap().len(), 1, "{report}");
}

//! Retiring AWS access keys at their review date (issue 20), against moto's server with
//! request authentication on (see `tests/aws_support`): an access key created through
//! keygate with an approval is announced to its owner through the approvals webhook ahead
//! of its review date, deactivated at IAM once it is overdue, and deleted (its inventory
//! record revoked by `retire`) after the grace; a renewed key is left alone; a dry run
//! changes nothing; a step that fails is counted and tried again.
//!
//! keygate's clock is moved by a few minutes at most, so the review dates and the grace
//! are minutes long here: IAM calls are signed with the system time and STS's with
//! keygate's clock; moto accepted AssumeRole signed a day ahead, but keygate then judges
//! the session STS issued (expiring by the system time) already expired.
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
const MINUTE: Duration = Duration::from_secs(60);

struct Kg {
    gw: TestGateway,
    relay: Relay,
    hook: RawUpstream,
}

/// keygate with agent [`AGENT`] and tool `aws` in front of moto (through a relay), the
/// role's sessions signing, the approvals webhook a [`RawUpstream`]; a key is noticed an
/// hour ahead of its review date and deleted a minute after it was deactivated.
async fn start() -> Kg {
    start_with("").await
}

/// [`start`] with more lines for `[tools.credential]`.
async fn start_with(extra: &str) -> Kg {
    start_hooked(RawUpstream::start().await, extra).await
}

/// [`start_with`], the approvals webhook `hook`.
async fn start_hooked(hook: RawUpstream, extra: &str) -> Kg {
    logs();
    let relay = Relay::to_moto();
    let dir = tempfile::tempdir().unwrap();
    let base = secret_file(dir.path(), "aws-base.json", &moto().base_credential_json());
    let cfg = format!(
        "[approvals]\nwebhook_url = \"{}/hook\"\n{}[[tools]]\nname = \"aws\"\nkind = \"aws\"\nupstream = {:?}\n\
         [tools.credential]\nprovider = \"aws\"\nretire_notice = \"1h\"\nretire_grace = \"1m\"\n{extra}\
         role_arn = {ROLE_ARN:?}\nsts_endpoint = {:?}\nregion = \"us-east-1\"\n{base}",
        hook.url(),
        agent(AGENT, OWNER),
        relay.url(),
        relay.url(),
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    Kg { gw, relay, hook }
}

impl Kg {
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
            format!("http://{}/tools/aws", self.gw.addr),
            b["access_key_id"].as_str().unwrap(),
            b["secret_access_key"].as_str().unwrap(),
        )
    }

    /// Runs an identity-creating boto3 command through keygate: refused until approved
    /// (by bob, due for review `review_in` from now), then run again.
    async fn approved(&self, env: &AwsEnv, args: &[&str], review_in: &str) -> Value {
        let e = env.boto(args).await.expect_err("went through unapproved");
        assert_eq!(e.code, "approval_required", "{e:?}");
        let id = approval_id_in(&e.message);
        let body = json!({"approver": "bob@example.com", "owner": "carol@example.com",
            "ticket": "CHG-20", "review_in": review_in});
        let (s, b) = self
            .gw
            .admin("POST", &format!("/approvals/{id}/approve"), Some(body))
            .await;
        assert_eq!(s, 200, "{b}");
        env.boto(args).await.unwrap()
    }

    /// A user made through keygate and an access key of it due for review in a minute:
    /// the key's id and its inventory record's id.
    async fn key_due_in_a_minute(&self, user: &str) -> (String, String) {
        let env = self.agent_env().await;
        self.approved(&env, &["create-user", user], "90d").await;
        let k = self
            .approved(&env, &["create-access-key-pair", user], "1m")
            .await;
        assert!(
            k["AccessKeyId"].as_str().unwrap().starts_with("KGAK"),
            "{k}"
        );
        let e = self.record(|e| e["kind"] == "access_key").await;
        (
            e["identifier"].as_str().unwrap().to_string(),
            e["id"].as_str().unwrap().to_string(),
        )
    }

    async fn retire(&self, dry_run: bool) -> Value {
        let (s, b) = self
            .gw
            .admin(
                "POST",
                "/inventory/retire/aws",
                Some(json!({"by": "ops@example.com", "dry_run": dry_run})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        b
    }

    async fn record(&self, pick: impl Fn(&Value) -> bool) -> Value {
        let (s, b) = self.gw.admin("GET", "/inventory", None).await;
        assert_eq!(s, 200, "{b}");
        b["identities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| pick(e))
            .cloned()
            .expect("no such inventory record")
    }

    async fn by_id(&self, id: &str) -> Value {
        self.record(|e| e["id"] == id).await
    }

    async fn metrics(&self) -> String {
        self.gw.metrics().await
    }
}

/// The keys of `user` in moto: id → status.
async fn keys_at_moto(user: &str) -> Value {
    role_session_at_moto()
        .await
        .boto(&["list-access-keys", user])
        .await
        .unwrap()
}

/// The report's actions about the inventory record `id`.
fn actions_of(report: &Value, id: &str) -> Vec<Value> {
    report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["id"] == id)
        .cloned()
        .collect()
}

/// A metric sample's value.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// A day `days` from now, `YYYY-MM-DD`.
fn day_in(days: u64) -> String {
    let t = std::time::SystemTime::now() + Duration::from_secs(days * 86_400);
    humantime::format_rfc3339_seconds(t).to_string()[..10].to_string()
}

#[tokio::test]
async fn an_overdue_key_is_noticed_deactivated_then_deleted() {
    let kg = start().await;
    let user = "rt-overdue";
    let (key, id) = kg.key_due_in_a_minute(user).await;
    let webhook_before = kg.hook.count();

    // Within the notice: the owner is told once, through the webhook.
    let report = kg.retire(false).await;
    let a = actions_of(&report, &id);
    assert_eq!(a.len(), 1, "{report:#}");
    assert_eq!(
        (a[0]["action"].as_str(), a[0]["done"].as_bool()),
        (Some("notify"), Some(true))
    );
    assert_eq!(kg.hook.count(), webhook_before + 1);
    let post = kg.hook.requests().last().unwrap().clone();
    assert!(post.head.starts_with("POST /hook "), "{}", post.head);
    let b: Value = serde_json::from_slice(&post.body).unwrap();
    assert_eq!(b["event"], "inventory.review_due", "{b}");
    assert_eq!(
        (b["identity_id"].as_str(), b["owner"].as_str()),
        (Some(id.as_str()), Some("carol@example.com"))
    );
    assert_eq!(b["identifier"], key.as_str());
    assert!(b["text"].as_str().unwrap().contains(&key), "{b}");
    assert!(kg.by_id(&id).await["notified_at"].is_i64());
    let again = kg.retire(false).await;
    assert!(actions_of(&again, &id).is_empty(), "{again:#}");
    assert_eq!(kg.hook.count(), webhook_before + 1, "notified twice");
    assert_eq!(keys_at_moto(user).await[&key], "Active");

    // Overdue: deactivated at IAM, the time recorded.
    kg.gw.advance_clock(2 * MINUTE);
    let report = kg.retire(false).await;
    let a = actions_of(&report, &id);
    assert_eq!(
        (a[0]["action"].as_str(), a[0]["done"].as_bool()),
        (Some("deactivate"), Some(true)),
        "{report:#}"
    );
    assert_eq!(keys_at_moto(user).await[&key], "Inactive");
    let e = kg.by_id(&id).await;
    assert!(
        e["deactivated_at"].is_i64() && e["revoked_at"].is_null(),
        "{e}"
    );
    // Within the grace: left deactivated.
    let report = kg.retire(false).await;
    assert!(actions_of(&report, &id).is_empty(), "{report:#}");
    assert_eq!(keys_at_moto(user).await[&key], "Inactive");

    // After the grace: deleted at IAM, the record revoked by "retire".
    kg.gw.advance_clock(2 * MINUTE);
    let report = kg.retire(false).await;
    let a = actions_of(&report, &id);
    assert_eq!(
        (a[0]["action"].as_str(), a[0]["done"].as_bool()),
        (Some("delete"), Some(true)),
        "{report:#}"
    );
    assert!(
        keys_at_moto(user).await.get(&key).is_none(),
        "still at moto"
    );
    let e = kg.by_id(&id).await;
    assert_eq!(e["revoked_by"], "retire", "{e}");
    assert_eq!(e["captured"], 0, "{e}");

    // Done with keygate's own session, whose policy allows the retirement's calls only.
    let session = kg
        .relay
        .assume_roles()
        .into_iter()
        .find(|x| x.param("RoleSessionName").as_deref() == Some("keygate-retire"))
        .expect("an AssumeRole for the retirement");
    let policy = session.session_policy().unwrap();
    assert_eq!(
        policy["Statement"][0]["Action"],
        json!([
            "iam:ListUsers",
            "iam:ListAccessKeys",
            "iam:UpdateAccessKey",
            "iam:DeleteAccessKey"
        ]),
        "{policy}"
    );
    let m = kg.metrics().await;
    assert_eq!(
        sample(
            &m,
            "keygate_inventory_identities{tool=\"aws\",state=\"retired\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "keygate_inventory_identities{tool=\"aws\",state=\"overdue\"}"
        ),
        Some(0.0),
        "{m}"
    );
    let audit = kg.gw.audit().await;
    for op in ["notify", "deactivate", "retire"] {
        let rec = audit
            .iter()
            .find(|r| {
                r["operation"] == format!("keygate:inventory.{op}")
                    && r["inventory_id"] == id.as_str()
            })
            .unwrap_or_else(|| panic!("no audit record of {op}"));
        assert_eq!(rec["tool"], "aws", "{rec}");
    }
}

#[tokio::test]
async fn a_renewed_key_is_left_alone_and_a_dry_run_changes_nothing() {
    let kg = start().await;
    let (kept, kept_id) = kg.key_due_in_a_minute("rt-renewed").await;
    let (due, due_id) = kg.key_due_in_a_minute("rt-dry-run").await;

    // A renewal to a past day, or of an unknown record, is refused.
    let gw = &kg.gw;
    let renew = |id: &str, until: String| {
        let path = format!("/inventory/{id}/renew");
        let body = json!({"until": until, "approver": "erin@example.com"});
        async move { gw.admin("POST", &path, Some(body)).await }
    };
    assert_eq!(renew(&kept_id, "2001-01-01".into()).await.0, 409);
    assert_eq!(renew(&kept_id, "soon".into()).await.0, 400);
    assert_eq!(renew("idn_nosuch", day_in(30)).await.0, 404);
    let (s, b) = renew(&kept_id, day_in(30)).await;
    assert_eq!(s, 200, "{b}");
    assert!(
        b["review_by"].as_i64().unwrap() > now() as i64 * 1000 + 29 * 86_400_000,
        "{b}"
    );

    kg.gw.advance_clock(2 * MINUTE);
    let before = kg.by_id(&due_id).await;
    let hooks = kg.hook.count();
    let report = kg.retire(true).await;
    assert_eq!(report["dry_run"], true);
    assert!(actions_of(&report, &kept_id).is_empty(), "{report:#}");
    let a = actions_of(&report, &due_id);
    assert_eq!(
        (a[0]["action"].as_str(), a[0]["done"].as_bool()),
        (Some("deactivate"), Some(false)),
        "{report:#}"
    );
    // Nothing changed: moto, the store, the webhook.
    assert_eq!(keys_at_moto("rt-dry-run").await[&due], "Active");
    assert_eq!(kg.by_id(&due_id).await, before);
    assert_eq!(kg.hook.count(), hooks);

    // The real pass deactivates the overdue key and leaves the renewed one alone.
    let report = kg.retire(false).await;
    assert!(actions_of(&report, &kept_id).is_empty(), "{report:#}");
    assert_eq!(actions_of(&report, &due_id)[0]["done"], true, "{report:#}");
    assert_eq!(keys_at_moto("rt-dry-run").await[&due], "Inactive");
    assert_eq!(keys_at_moto("rt-renewed").await[&kept], "Active");
    // A deactivated record is not renewed.
    assert_eq!(renew(&due_id, day_in(30)).await.0, 409);
    let audit = kg.gw.audit().await;
    let rec = audit
        .iter()
        .find(|r| r["operation"] == "keygate:inventory.renew")
        .expect("the renewal audited");
    assert_eq!(rec["inventory_id"], kept_id.as_str(), "{rec}");
}

#[tokio::test]
async fn a_failed_step_is_counted_and_tried_again() {
    let kg = start().await;
    // A key that is not in the account: deactivating it fails.
    let (s, b) = kg
        .gw
        .admin(
            "POST",
            "/inventory/adopt",
            Some(
                json!({"tool": "aws", "identifier": "AKIARTNOTTHERE000000", "kind": "access_key",
                "owner": "carol@example.com", "approver": "bob@example.com", "review_in": "1m"}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    kg.gw.advance_clock(2 * MINUTE);
    for attempt in 1..=2 {
        let report = kg.retire(false).await;
        let a = actions_of(&report, &id);
        assert_eq!(
            (a[0]["action"].as_str(), a[0]["done"].as_bool()),
            (Some("deactivate"), Some(false)),
            "{report:#}"
        );
        assert_eq!(a[0]["attempts"], attempt, "{report:#}");
        assert!(
            a[0]["error"]
                .as_str()
                .unwrap()
                .contains("not in the account"),
            "{report:#}"
        );
        assert_eq!(report["failed"], 1);
        let e = kg.by_id(&id).await;
        assert_eq!(e["retire_attempts"], attempt, "{e}");
        assert!(
            e["deactivated_at"].is_null() && e["revoked_at"].is_null(),
            "{e}"
        );
    }
    let m = kg.metrics().await;
    assert_eq!(
        sample(&m, "keygate_inventory_retire_failures_total{tool=\"aws\"}"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "keygate_inventory_overdue_reviews{tool=\"aws\"}"),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test]
async fn retire_overdue_runs_the_pass_by_itself() {
    let kg = start_with("retire_overdue = true\nretire_every = \"1s\"\n").await;
    let user = "rt-scheduled";
    let (key, id) = kg.key_due_in_a_minute(user).await;
    kg.gw.advance_clock(2 * MINUTE);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while kg.by_id(&id).await["deactivated_at"].is_null() {
        assert!(
            std::time::Instant::now() < deadline,
            "not deactivated by the schedule"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(keys_at_moto(user).await[&key], "Inactive");
    let audit = kg.gw.audit().await;
    let rec = audit
        .iter()
        .find(|r| {
            r["operation"] == "keygate:inventory.deactivate" && r["inventory_id"] == id.as_str()
        })
        .expect("the deactivation audited");
    assert_eq!(rec["admin"]["by"], "retire", "{rec}");
    assert!(
        rec["admin"]["reason"]
            .as_str()
            .unwrap()
            .contains("run by schedule"),
        "{rec}"
    );
}

/// Runs `keygate ARGS` against the gateway's admin API (off the runtime's threads).
async fn cli(gw: &TestGateway, args: &[&str]) -> (bool, String) {
    let c = gw.cli(args).await;
    (c.ok, format!("{}{}", c.stdout, c.stderr))
}

#[tokio::test]
async fn the_cli_retires_dry_and_renews() {
    let kg = start().await;
    let user = "rt-cli";
    let (key, id) = kg.key_due_in_a_minute(user).await;
    kg.gw.advance_clock(2 * MINUTE);
    let (ok, out) = cli(&kg.gw, &["inventory", "retire", "aws", "--dry-run"]).await;
    assert!(ok, "{out}");
    let line = out
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("{id} not in {out}"));
    assert!(
        line.starts_with("deactivate") && line.contains(&key),
        "{out}"
    );
    assert!(out.contains("dry run, nothing changed"), "{out}");
    assert_eq!(keys_at_moto(user).await[&key], "Active");
    assert!(kg.by_id(&id).await["deactivated_at"].is_null());

    let until = day_in(10);
    let (ok, out) = cli(
        &kg.gw,
        &[
            "inventory",
            "renew",
            &id,
            "--until",
            &until,
            "--approver",
            "erin@example.com",
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains(&until), "{out}");
    let (ok, out) = cli(&kg.gw, &["inventory", "retire", "aws"]).await;
    assert!(ok, "{out}");
    assert!(!out.contains(&id), "{out}");
    assert_eq!(keys_at_moto(user).await[&key], "Active");
    let (ok, out) = cli(
        &kg.gw,
        &[
            "inventory",
            "renew",
            &id,
            "--until",
            "2001-01-01",
            "--approver",
            "e",
        ],
    )
    .await;
    assert!(!ok, "a past date: {out}");
}

#[tokio::test]
async fn a_notice_the_webhook_refuses_is_not_remembered_and_is_sent_again() {
    let refusing = RawUpstream::with_responder(std::sync::Arc::new(|_: &Received| {
        (503, Vec::new(), b"down".to_vec())
    }))
    .await;
    let kg = start_hooked(refusing, "").await;
    let (_, id) = kg.key_due_in_a_minute("rt-hook-down").await;
    let before = kg.hook.count();
    for attempt in 1..=2 {
        let report = kg.retire(false).await;
        let a = actions_of(&report, &id);
        assert_eq!(
            (a[0]["action"].as_str(), a[0]["done"].as_bool()),
            (Some("notify"), Some(false)),
            "{report:#}"
        );
        assert!(
            a[0]["error"].as_str().unwrap().contains("HTTP 503"),
            "{report:#}"
        );
        let e = kg.by_id(&id).await;
        assert!(e["notified_at"].is_null(), "{e}");
        assert_eq!(e["retire_attempts"], attempt, "{e}");
        assert_eq!(kg.hook.count(), before + attempt as usize);
    }
}

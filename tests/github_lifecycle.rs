//! GitHub deploy keys at the end of their life (issue 20), against the GitHub stand-in
//! (`tests/github/standin.py`, see `tests/github_support`): a deploy key an agent created
//! through keygate with an approval (PyGithub, as in tests/github_app.rs) is announced to
//! its owner through the approvals webhook ahead of its review date and deleted at GitHub
//! once it is overdue, with keygate's own installation token (`administration: write` on
//! the one repository); a renewed key is left alone; a dry run changes nothing; a refused
//! deletion is counted and tried again. A reconcile lists the deploy keys of the
//! configured repositories (every page) and finds a key created around keygate (shadow,
//! adopted by an approver) and one deleted around it (gone: its record retired).
//!
//! Review dates are seconds long here and the tests wait them out: keygate's clock is not
//! moved, since the App JWT it signs with that clock must not look issued in the future to
//! the stand-in.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod github_support;
use common::*;
use github_support::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const AGENT: &str = "gh-agent";
const OWNER: &str = "owner@example.com";

/// The public half of the `n`th deploy key of a test.
fn public_key(n: u32) -> String {
    format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeygateLifecycleDeployKeyForTests{n:04}")
}

struct Kg {
    gw: TestGateway,
    gh: GitHub,
    hook: RawUpstream,
    jwt: String,
}

/// keygate with agent [`AGENT`] and tool `github` (provider github_app) in front of a
/// stand-in instance of its own, the approvals webhook a [`RawUpstream`]; `lifecycle` is
/// added to `[tools.credential]`.
async fn start(lifecycle: &str) -> Kg {
    logs();
    let gh = GitHub::new();
    let hook = RawUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "gh-iss", "keygate");
    let cfg = config(dir.path(), &gh, &iss, &hook, lifecycle);
    let gw = TestGateway::start_in(dir, &cfg).await;
    let jwt = iss.token(AGENT);
    Kg { gw, gh, hook, jwt }
}

fn config(dir: &Path, gh: &GitHub, iss: &TestIssuer, hook: &RawUpstream, extra: &str) -> String {
    let key_file = write_key(dir, "app.pem", &app_key().pkcs1_pem, 0o600);
    format!(
        "[approvals]\nwebhook_url = \"{}/hook\"\n{}{}[[tools]]\nname = \"github\"\nkind = \"github\"\n\
         upstream = {:?}\n[tools.credential]\nprovider = \"github_app\"\napp_id = {APP_ID}\n\
         private_key_file = {key_file:?}\ninstallation_id = {INSTALLATION_ID}\n{extra}",
        hook.url(),
        iss.toml(),
        agent(AGENT, OWNER),
        gh.url(),
    )
}

/// Retirement on (a notice an hour ahead), reconcile of both repositories.
const LIFECYCLE: &str = "retire_overdue = true\nretire_notice = \"1h\"\n\
    reconcile_repositories = [\"octo/hello\", \"octo/secret\"]\nreconcile_grace = \"1s\"\n";

impl Kg {
    /// Creates a deploy key in `repo` through keygate as the agent (PyGithub): refused
    /// until approved (by bob, owner carol, due for review `review_in` from now), then
    /// run again. The key's id and its inventory record's id.
    async fn deploy_key(&self, repo: &str, title: &str, n: u32, review_in: &str) -> (u64, String) {
        let pk = public_key(n);
        let args = ["create-deploy-key", repo, "--title", title, "--key", &pk];
        let py = PyGithub::new(self.gw.url("/tools/github"), &self.jwt);
        let e = py.run(&args).await.expect_err("created unapproved");
        assert_eq!(e.status, 403, "{e:?}");
        let approval = approval_id(&e.data);
        let body = json!({"approver": "bob@example.com", "owner": "carol@example.com",
            "ticket": "CHG-20", "review_in": review_in});
        let (s, b) = self
            .gw
            .admin(
                "POST",
                &format!("/approvals/{approval}/approve"),
                Some(body),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        let made = py.run(&args).await.expect("the approved call");
        let id = made["id"].as_u64().unwrap_or_else(|| panic!("{made}"));
        let want = id.to_string();
        let rec = self
            .record(|e| e["kind"] == "deploy_key" && e["identifier"] == want.as_str())
            .await;
        (id, rec["id"].as_str().unwrap().to_string())
    }

    async fn retire(&self, dry_run: bool) -> Value {
        let (s, b) = self
            .gw
            .admin(
                "POST",
                "/inventory/retire/github",
                Some(json!({"by": "ops@example.com", "dry_run": dry_run})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        b
    }

    async fn reconcile(&self) -> (u16, Value) {
        self.gw
            .admin(
                "POST",
                "/inventory/reconcile/github",
                Some(json!({"by": "ops@example.com"})),
            )
            .await
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

    /// The ids of the deploy keys of `repo` at the stand-in.
    fn keys_at_github(&self, repo: &str) -> Vec<u64> {
        let (s, _, b) = self.gh.call("GET", "/_standin/keys", &[], "");
        assert_eq!(s, 200, "{b}");
        b["keys"][repo]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_u64().unwrap())
            .collect()
    }

    /// A token for `repo` minted directly (around keygate), as another App client would.
    fn direct_token(&self, repo: &str, level: &str) -> String {
        let (s, b) = self.gh.mint(json!({"repositories": [repo],
            "permissions": {"administration": level}}));
        assert_eq!(s, 201, "{b}");
        b["token"].as_str().unwrap().to_string()
    }

    /// Creates a deploy key of octo/`repo` around keygate; its id.
    fn create_directly(&self, repo: &str, title: &str, n: u32) -> u64 {
        let auth = format!("Bearer {}", self.direct_token(repo, "write"));
        let (s, _, b) = self.gh.call(
            "POST",
            &format!("/repos/octo/{repo}/keys"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            &json!({"title": title, "key": public_key(n), "read_only": true}).to_string(),
        );
        assert_eq!(s, 201, "{b}");
        b["id"].as_u64().unwrap()
    }

    /// Deletes deploy key `id` of octo/`repo` around keygate.
    fn delete_directly(&self, repo: &str, id: u64) {
        let auth = format!("Bearer {}", self.direct_token(repo, "write"));
        let (s, _, b) = self.gh.call(
            "DELETE",
            &format!("/repos/octo/{repo}/keys/{id}"),
            &[("authorization", &auth)],
            "",
        );
        assert_eq!(s, 204, "{b}");
    }

    /// The calls keygate made on its own (`User-Agent: keygate`; an agent's calls carry
    /// its own, the test's direct ones none) to GitHub's API that are `method` on a path
    /// starting with `prefix`.
    fn calls(&self, method: &str, prefix: &str) -> Vec<Seen> {
        self.gh
            .api_calls()
            .into_iter()
            .filter(|c| {
                c.header("user-agent").as_deref() == Some("keygate")
                    && c.method() == method
                    && c.path().starts_with(prefix)
            })
            .collect()
    }
}

/// The approval id of an `approval_required` body (`approval_id`, top level or under
/// `error`, else the first `apr_…` in it).
fn approval_id(body: &Value) -> String {
    for v in [&body["approval_id"], &body["error"]["approval_id"]] {
        if let Some(id) = v.as_str() {
            return id.to_string();
        }
    }
    let text = body.to_string();
    let at = text
        .find("apr_")
        .unwrap_or_else(|| panic!("no approval id in {body}"));
    text[at..]
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .next()
        .unwrap()
        .to_string()
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

/// The entries of a reconcile's `set` with `identifier`.
fn in_set(report: &Value, set: &str, identifier: u64) -> Vec<Value> {
    let want = identifier.to_string();
    report[set]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["identifier"] == want.as_str())
        .cloned()
        .collect()
}

#[tokio::test]
async fn an_overdue_deploy_key_is_noticed_then_deleted_at_github() {
    let kg = start(LIFECYCLE).await;
    let (key, id) = kg.deploy_key("octo/hello", "ci", 1, "30s").await;
    // One deleted around keygate before its date: gone at GitHub already (404).
    let (vanished, vanished_id) = kg.deploy_key("octo/secret", "vanished", 2, "30s").await;
    kg.delete_directly("secret", vanished);
    assert_eq!(kg.keys_at_github("octo/hello"), vec![key]);
    let hooks = kg.hook.count();

    // Another replica holds the claim to notify the owner of `key`: this one does not.
    let store = &kg.gw.runtime.shared.store;
    let claimed_at = kg.gw.runtime.shared.clock.unix_millis();
    assert!(store.claim_notice(&id, claimed_at, 60_000).await.unwrap());
    let report = kg.retire(false).await;
    let a = actions_of(&report, &id);
    assert_eq!(a[0]["claimed_elsewhere"], true, "{report:#}");
    assert_eq!(report["failed"], 0, "{report:#}");
    assert_eq!(kg.hook.count(), hooks + 1, "only the other key's owner");
    assert!(kg.by_id(&id).await["notified_at"].is_null());
    // It could not deliver it and let go of it.
    store.release_notice(&id, claimed_at).await.unwrap();

    // Within the notice: the owner is told once, through the webhook.
    let report = kg.retire(false).await;
    assert_eq!(report["kind"], "deploy_key", "{report:#}");
    let a = actions_of(&report, &id);
    assert_eq!(a.len(), 1, "{report:#}");
    assert!(actions_of(&report, &vanished_id).is_empty(), "{report:#}");
    assert_eq!(
        (a[0]["action"].as_str(), a[0]["done"].as_bool()),
        (Some("notify"), Some(true)),
        "{report:#}"
    );
    assert_eq!(kg.hook.count(), hooks + 2);
    let post = kg
        .hook
        .requests()
        .into_iter()
        .rev()
        .find(|r| String::from_utf8_lossy(&r.body).contains(&id))
        .unwrap();
    let b: Value = serde_json::from_slice(&post.body).unwrap();
    assert_eq!(b["event"], "inventory.review_due", "{b}");
    assert_eq!(
        (
            b["identity_id"].as_str(),
            b["owner"].as_str(),
            b["kind"].as_str()
        ),
        (
            Some(id.as_str()),
            Some("carol@example.com"),
            Some("deploy_key")
        )
    );
    assert_eq!(b["identifier"], key.to_string());
    assert!(b["text"].as_str().unwrap().contains("deleted then"), "{b}");
    assert!(kg.by_id(&id).await["notified_at"].is_i64());
    let again = kg.retire(false).await;
    assert!(actions_of(&again, &id).is_empty(), "{again:#}");
    assert_eq!(kg.hook.count(), hooks + 2, "notified twice");
    assert_eq!(kg.keys_at_github("octo/hello"), vec![key]);
    assert!(kg.calls("DELETE", "/repos/").is_empty());

    // Overdue: deleted at GitHub at once, the record revoked by "retire".
    // (keygate's clock: the review dates are 30 s out, far enough for the slow steps
    // above on a loaded machine; the App's JWTs are backdated 60 s, so still valid.)
    kg.gw.advance_clock(Duration::from_secs(31));
    let report = kg.retire(false).await;
    let a = actions_of(&report, &id);
    assert_eq!(
        (a[0]["action"].as_str(), a[0]["done"].as_bool()),
        (Some("delete"), Some(true)),
        "{report:#}"
    );
    assert!(
        kg.keys_at_github("octo/hello").is_empty(),
        "still at GitHub"
    );
    let e = kg.by_id(&id).await;
    assert_eq!(e["revoked_by"], "retire", "{e}");
    assert!(e["revoked_at"].is_i64(), "{e}");
    // The one GitHub no longer has (404): retired all the same.
    let a = actions_of(&report, &vanished_id);
    assert_eq!(
        (a[0]["action"].as_str(), a[0]["done"].as_bool()),
        (Some("delete"), Some(true)),
        "{report:#}"
    );
    assert_eq!(kg.by_id(&vanished_id).await["revoked_by"], "retire");
    let gone = kg.calls("DELETE", "/repos/octo/secret/");
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].status(), 404);
    // With keygate's own token: administration write on octo/hello, nothing more.
    let deletes = kg.calls("DELETE", "/repos/octo/hello/");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].path(), format!("/repos/octo/hello/keys/{key}"));
    assert_eq!(deletes[0].status(), 204, "{:?}", deletes[0].reason());
    let token = deletes[0].credential().unwrap();
    let info = kg.gh.token_info(&token);
    assert_eq!(
        (&info["repositories"], &info["requested_permissions"]),
        (&json!(["hello"]), &json!({"administration": "write"}))
    );
    // Retired once: a later pass leaves it.
    let report = kg.retire(false).await;
    assert!(actions_of(&report, &id).is_empty(), "{report:#}");

    let m = kg.gw.metrics().await;
    for (state, n) in [("retired", 2.0), ("overdue", 0.0), ("active", 0.0)] {
        assert_eq!(
            sample(
                &m,
                &format!("keygate_inventory_identities{{tool=\"github\",state=\"{state}\"}}")
            ),
            Some(n),
            "{state}: {m}"
        );
    }
    let audit = kg.gw.audit().await;
    for op in ["notify", "retire"] {
        let rec = audit
            .iter()
            .find(|r| {
                r["operation"] == format!("keygate:inventory.{op}")
                    && r["inventory_id"] == id.as_str()
            })
            .unwrap_or_else(|| panic!("no audit record of {op}"));
        assert_eq!(rec["tool"], "github", "{rec}");
    }
}

#[tokio::test]
async fn a_renewed_deploy_key_is_kept_a_dry_run_changes_nothing_a_failure_is_retried() {
    // No reconcile_repositories: each key's repository is the one its approval names.
    let kg = start("retire_overdue = true\nretire_notice = \"1h\"\n").await;
    let (kept, kept_id) = kg.deploy_key("octo/hello", "kept", 1, "2s").await;
    let (due, due_id) = kg.deploy_key("octo/secret", "due", 2, "2s").await;
    let path = format!("/inventory/{kept_id}/renew");
    let (s, b) = kg
        .gw
        .admin(
            "POST",
            &path,
            Some(json!({"until": day_in(30), "approver": "erin@example.com"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // A dry run: says what it would do, and does nothing.
    let before = kg.by_id(&due_id).await;
    let hooks = kg.hook.count();
    let report = kg.retire(true).await;
    assert_eq!(report["dry_run"], true);
    let a = actions_of(&report, &due_id);
    assert_eq!(
        (a[0]["action"].as_str(), a[0]["done"].as_bool()),
        (Some("delete"), Some(false)),
        "{report:#}"
    );
    assert!(actions_of(&report, &kept_id).is_empty(), "{report:#}");
    assert_eq!(kg.by_id(&due_id).await, before);
    assert_eq!(kg.keys_at_github("octo/secret"), vec![due]);
    assert!(kg.calls("DELETE", "/repos/").is_empty());
    assert_eq!(kg.hook.count(), hooks);

    // GitHub refuses: counted, recorded, retried at the next pass.
    kg.gh.control(json!({"fail_delete_keys": 500}));
    let report = kg.retire(false).await;
    assert_eq!(report["failed"], 1, "{report:#}");
    let a = actions_of(&report, &due_id);
    assert_eq!(a[0]["done"], false, "{report:#}");
    assert!(
        a[0]["error"].as_str().unwrap().contains("HTTP 500"),
        "{report:#}"
    );
    let e = kg.by_id(&due_id).await;
    assert_eq!(e["retire_attempts"], 1, "{e}");
    assert!(
        e["retire_error"].as_str().unwrap().contains("HTTP 500"),
        "{e}"
    );
    assert!(e["revoked_at"].is_null(), "{e}");
    assert_eq!(kg.keys_at_github("octo/secret"), vec![due]);
    let m = kg.gw.metrics().await;
    assert_eq!(
        sample(
            &m,
            "keygate_inventory_retire_failures_total{tool=\"github\"}"
        ),
        Some(1.0),
        "{m}"
    );

    kg.gh.control(json!({"fail_delete_keys": null}));
    let report = kg.retire(false).await;
    let a = actions_of(&report, &due_id);
    assert_eq!(
        (a[0]["action"].as_str(), a[0]["done"].as_bool()),
        (Some("delete"), Some(true)),
        "{report:#}"
    );
    assert!(kg.keys_at_github("octo/secret").is_empty());
    assert_eq!(kg.by_id(&due_id).await["revoked_by"], "retire");
    // The renewed key: untouched.
    assert_eq!(kg.keys_at_github("octo/hello"), vec![kept]);
    assert!(kg.by_id(&kept_id).await["revoked_at"].is_null());
}

#[tokio::test]
async fn a_reconcile_finds_shadow_and_gone_deploy_keys_and_a_shadow_one_is_adopted() {
    let kg = start(LIFECYCLE).await;
    // Pages of one key: every page of a listing is read.
    kg.gh.control(json!({"max_per_page": 1}));
    let (known, known_id) = kg.deploy_key("octo/hello", "known", 1, "90d").await;
    let (gone, gone_id) = kg.deploy_key("octo/hello", "gone", 2, "90d").await;
    kg.delete_directly("hello", gone);
    let shadow = kg.create_directly("secret", "made-by-hand", 3);
    let other = kg.create_directly("hello", "another-by-hand", 4);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let (s, report) = kg.reconcile().await;
    assert_eq!(s, 200, "{report:#}");
    let p = in_set(&report, "present", known);
    assert_eq!(p.len(), 1, "{report:#}");
    assert_eq!(p[0]["id"], known_id.as_str());
    assert_eq!(p[0]["repository"], "octo/hello");
    let g = in_set(&report, "gone", gone);
    assert_eq!(g.len(), 1, "{report:#}");
    assert_eq!(
        (g[0]["id"].as_str(), g[0]["retired"].as_bool()),
        (Some(gone_id.as_str()), Some(true))
    );
    assert_eq!(kg.by_id(&gone_id).await["revoked_by"], "reconcile");
    let sh = in_set(&report, "shadow", shadow);
    assert_eq!(sh.len(), 1, "{report:#}");
    assert_eq!(
        (
            sh[0]["kind"].as_str(),
            sh[0]["repository"].as_str(),
            sh[0]["owner"].as_str()
        ),
        (
            Some("deploy_key"),
            Some("octo/secret"),
            Some("made-by-hand")
        )
    );
    assert!(sh[0]["created"].is_string(), "{report:#}");
    assert_eq!(in_set(&report, "shadow", other).len(), 1, "{report:#}");
    assert_eq!(report["shadow"].as_array().unwrap().len(), 2, "{report:#}");
    // Every page was asked for: octo/hello has two keys, one per page.
    let lists = kg.calls("GET", "/repos/octo/hello/keys");
    assert!(
        lists.iter().any(|c| c.path().contains("page=2")),
        "{:?}",
        lists
            .iter()
            .map(|c| c.path().to_string())
            .collect::<Vec<_>>()
    );
    assert!(lists.iter().all(|c| c.status() == 200));

    // Adopted by an approver: in the inventory, no longer shadow.
    let adopt = |identifier: String, kind: &str| {
        let body = json!({"tool": "github", "identifier": identifier, "kind": kind,
            "owner": "dave@example.com", "approver": "bob@example.com", "review_in": "3s"});
        let gw = &kg.gw;
        async move { gw.admin("POST", "/inventory/adopt", Some(body)).await }
    };
    assert_eq!(adopt(shadow.to_string(), "access_key").await.0, 400);
    assert_eq!(adopt("not-a-number".into(), "deploy_key").await.0, 400);
    let (s, adopted) = adopt(shadow.to_string(), "deploy_key").await;
    assert_eq!(s, 201, "{adopted}");
    assert_eq!(adopted["agent_id"], "(adopted)");
    assert_eq!(adopted["owner"], "dave@example.com");
    assert_eq!(adopt(shadow.to_string(), "deploy_key").await.0, 409);
    let (_, report) = kg.reconcile().await;
    assert!(in_set(&report, "shadow", shadow).is_empty(), "{report:#}");
    assert_eq!(in_set(&report, "present", shadow).len(), 1, "{report:#}");

    // Adopted, it retires at its review date like any other: its repository found by
    // listing reconcile_repositories (no approval names it).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let report = kg.retire(false).await;
    let a = actions_of(&report, adopted["id"].as_str().unwrap());
    assert_eq!(
        (a[0]["action"].as_str(), a[0]["done"].as_bool()),
        (Some("delete"), Some(true)),
        "{report:#}"
    );
    assert!(kg.keys_at_github("octo/secret").is_empty());
    assert_eq!(kg.keys_at_github("octo/hello"), vec![known, other]);
}

#[tokio::test]
async fn a_github_reconcile_needs_its_repositories() {
    let kg = start("").await;
    let (s, b) = kg.reconcile().await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"], "not_configured", "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("reconcile_repositories"),
        "{b}"
    );
    assert!(kg.gh.api_calls().is_empty());
}

/// With `retire_overdue` and `reconcile_every`, both run by themselves: an overdue deploy
/// key is deleted at GitHub, and the record of one deleted around keygate is retired.
#[tokio::test]
async fn the_scheduled_passes_retire_and_reconcile_deploy_keys() {
    let kg = start(
        "retire_overdue = true\nretire_every = \"1s\"\nretire_notice = \"1h\"\n\
         reconcile_every = \"1s\"\nreconcile_grace = \"1s\"\nreconcile_repositories = [\"octo/secret\"]\n",
    )
    .await;
    let (due, due_id) = kg.deploy_key("octo/hello", "due", 1, "2s").await;
    let (gone, gone_id) = kg.deploy_key("octo/secret", "gone", 2, "90d").await;
    kg.delete_directly("secret", gone);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let retired = kg.by_id(&due_id).await["revoked_by"] == "retire";
        let reconciled = kg.by_id(&gone_id).await["revoked_by"] == "reconcile";
        if retired && reconciled {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retired by the schedule: {retired}, reconciled: {reconciled}: {}",
            kg.by_id(&due_id).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!kg.keys_at_github("octo/hello").contains(&due));
    let audit = kg.gw.audit().await;
    assert!(
        audit
            .iter()
            .any(|r| r["operation"] == "keygate:inventory.reconcile"
                && r["admin"]["by"] == "schedule"),
        "no scheduled reconcile audited"
    );
}

/// A deploy key of a repository the reconcile does not list is never taken for gone.
#[tokio::test]
async fn a_deploy_key_of_a_repository_not_listed_is_not_taken_for_gone() {
    let kg = start("reconcile_repositories = [\"octo/secret\"]\nreconcile_grace = \"1s\"\n").await;
    let (key, id) = kg.deploy_key("octo/hello", "elsewhere", 1, "90d").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, report) = kg.reconcile().await;
    assert_eq!(s, 200, "{report:#}");
    assert!(in_set(&report, "gone", key).is_empty(), "{report:#}");
    assert_eq!(report["unchecked"], 1, "{report:#}");
    assert!(kg.by_id(&id).await["revoked_at"].is_null());
    assert_eq!(kg.keys_at_github("octo/hello"), vec![key]);
    // Only the configured repository was listed.
    assert!(kg.calls("GET", "/repos/octo/hello").is_empty());
    assert_eq!(kg.calls("GET", "/repos/octo/secret/keys").len(), 1);
}

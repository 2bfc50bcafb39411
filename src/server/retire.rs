//! Retiring keys at their review date (AWS access keys, GitHub deploy keys), and renewing
//! a review date.
//!
//! `POST /inventory/retire/{tool}` (and [`schedule`], every `retire_every` of a tool with
//! `retire_overdue = true`) takes every inventory record of the kind its provider's
//! `Retirer` retires: `access_key` for an `aws` tool, `deploy_key` for a `github_app`
//! tool:
//!
//! - its review date within `retire_notice` and its owner not yet notified: the owner is
//!   notified through the approvals webhook (`keygate:inventory.notify`), and that is
//!   remembered (`notified_at`), once it was delivered;
//! - its review date passed: an access key is deactivated at IAM (`UpdateAccessKey`
//!   `Status=Inactive`) and the time recorded (`deactivated_at`,
//!   `keygate:inventory.deactivate`); a deploy key, which has no inactive state, is
//!   deleted at once (below);
//! - deactivated `retire_grace` ago: the key is deleted at IAM (`DeleteAccessKey`) and the
//!   record revoked by `retire` (its captured secrets deleted, its handles dead;
//!   `keygate:inventory.retire`).
//!
//! IAM's calls are keygate's own, with a session whose policy allows only
//! `iam:ListUsers`, `iam:ListAccessKeys` (to find each key's user), `iam:UpdateAccessKey`
//! and `iam:DeleteAccessKey`. GitHub's (`DELETE /repos/{owner}/{repo}/keys/{key_id}`,
//! [`super::deploy_keys`]) use keygate's own installation token, narrowed to the one
//! repository and `administration: write`; GitHub's 404 means the key is gone already,
//! and it is retired all the same. A deploy key's repository is the one its approval's
//! path names, else the one of `reconcile_repositories` that lists it. Overdue records of
//! other kinds are reported (`not_retired`, with why: a user's SSH or GPG key cannot be
//! deleted with an installation token), never acted on.
//!
//! A step that fails changes nothing for that record: it is counted (`retire_attempts`,
//! `retire_error`, `keygate_inventory_retire_failures_total`), audited, and tried again
//! at the next pass. A dry run (`?dry_run=true`, or `retire_dry_run` for the scheduled
//! passes) reports what would be done, and calls neither the tool nor the webhook and
//! writes nothing.
//!
//! One pass runs at a time in a process; with several replicas each runs its own. The
//! tools' steps are idempotent, and an owner is notified once: a replica claims the
//! notice in the store first ([`crate::store::Store::claim_notice`], atomic, a lease of
//! `NOTICE_LEASE`); the one that wins posts it, and releases the claim when the webhook
//! refuses it.
//!
//! `POST /inventory/{id}/renew` moves a live record's review date to a later day
//! (`keygate:inventory.renew`, by its approver).

use super::decide::{audit_inventory, error, json, store_error, AdminBody};
use crate::credentials::Provider;
use crate::gateway::Runtime;
use crate::store::{InventoryEntry, Millis, RetireStep, StoreError};
use crate::telemetry::audit_log::AdminAction;
use http::{Response, StatusCode};
use serde_json::json as j;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The agent keygate's own retirement calls are issued for (session name, tags).
const AGENT: &str = "keygate-retire";
/// The IAM actions a retirement's session may call.
const ACTIONS: [&str; 4] = [
    "iam:ListUsers",
    "iam:ListAccessKeys",
    "iam:UpdateAccessKey",
    "iam:DeleteAccessKey",
];
/// The session policy allowing exactly [`ACTIONS`].
const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["iam:ListUsers","iam:ListAccessKeys","iam:UpdateAccessKey","iam:DeleteAccessKey"],"Resource":"*"}]}"#;
/// Who retires (in the store and the audit log).
const BY: &str = "retire";
/// One retirement pass at a time in this process (the scheduled one and one asked for
/// would otherwise notify an owner twice).
static PASS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// How long the webhook may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a replica's claim to send a notice holds: another replica takes it over
/// after this (the claiming one stopped while sending). Far longer than the webhook may
/// take.
const NOTICE_LEASE: Duration = Duration::from_secs(60);
/// Kinds a GitHub App's installation token cannot delete (a user's own keys): reported,
/// never retired.
const USER_KEYS: [&str; 2] = ["ssh_key", "gpg_key"];

/// What a pass does to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Notify,
    Deactivate,
    Delete,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Notify => "notify",
            Step::Deactivate => "deactivate",
            Step::Delete => "delete",
        }
    }
}

/// The state of a record (an index into [`crate::telemetry::metrics::RETIRE_STATES`]) and
/// the step due for it. Without a `grace` an overdue record is deleted at once (it has
/// no inactive state to wait in).
fn classify(
    e: &InventoryEntry,
    now: Millis,
    notice: Millis,
    grace: Option<Millis>,
) -> (usize, Option<Step>) {
    if e.revoked_at.is_some() {
        return (3, None);
    }
    if let Some(at) = e.deactivated_at {
        let due = grace.is_none_or(|g| now.saturating_sub(at) >= g);
        return (2, due.then_some(Step::Delete));
    }
    match e.review_by {
        Some(r) if r <= now && grace.is_some() => (1, Some(Step::Deactivate)),
        Some(r) if r <= now => (1, Some(Step::Delete)),
        Some(r) if r - now <= notice && e.notified_at.is_none() => (0, Some(Step::Notify)),
        _ => (0, None),
    }
}

/// What retires a tool's identities at its provider: each provider's kind of record, and
/// what it takes to deactivate and delete one there.
enum Retirer<'a> {
    /// AWS access keys (kind `access_key`): deactivated at IAM, deleted after the grace.
    /// Each key's user, listed once per pass when IAM is to be called.
    AwsAccessKeys {
        t: &'a crate::tools::ToolRuntime,
        users: Option<Result<HashMap<String, String>, String>>,
    },
    /// GitHub deploy keys (kind `deploy_key`): deleted at once with keygate's installation
    /// token (`administration: write` on the one repository). A key's repository is the
    /// one its approved creating call named, else found by listing the tool's
    /// `reconcile_repositories` (once per pass).
    GithubDeployKeys {
        t: &'a crate::tools::ToolRuntime,
        repositories: Vec<String>,
        listed: Option<Result<HashMap<u64, String>, String>>,
    },
}

impl<'a> Retirer<'a> {
    fn of(t: &'a crate::tools::ToolRuntime) -> Option<Retirer<'a>> {
        match &t.provider {
            Provider::Aws(_) => Some(Retirer::AwsAccessKeys { t, users: None }),
            Provider::GithubApp(p) => Some(Retirer::GithubDeployKeys {
                t,
                repositories: p.spec().reconcile_repositories.clone(),
                listed: None,
            }),
            _ => None,
        }
    }

    /// The kind of record it retires.
    fn kind(&self) -> &'static str {
        match self {
            Retirer::AwsAccessKeys { .. } => "access_key",
            Retirer::GithubDeployKeys { .. } => "deploy_key",
        }
    }

    /// How the kind is named to people.
    fn noun(&self) -> &'static str {
        match self {
            Retirer::AwsAccessKeys { .. } => "access key",
            Retirer::GithubDeployKeys { .. } => "deploy key",
        }
    }

    /// What happens to the identity at its review date, for the owner's notice.
    fn fate(&self) -> &'static str {
        match self {
            Retirer::AwsAccessKeys { .. } => "deactivated",
            Retirer::GithubDeployKeys { .. } => "deleted",
        }
    }

    /// Why an overdue record of another kind of this tool is not retired.
    fn not_retired(&self, kind: &str) -> String {
        match self {
            Retirer::GithubDeployKeys { .. } if USER_KEYS.contains(&kind) => format!(
                "a user's {kind}: a GitHub App's installation token cannot delete it; its user must (with their own token), then renew or revoke the record"
            ),
            _ => format!(
                "keygate retires only the {}s of this tool; review it by hand",
                self.noun()
            ),
        }
    }

    /// Deactivates or deletes the identity `e` at the tool. `Ok` when it is done (a
    /// deploy key already gone is done).
    async fn step(&mut self, rt: &Runtime, e: &InventoryEntry, step: Step) -> Result<(), String> {
        let identifier = e.identifier.clone().unwrap_or_default();
        if identifier.is_empty() {
            return Err(format!("the record has no {} id", self.noun()));
        }
        match self {
            Retirer::AwsAccessKeys { t, users } => {
                if users.is_none() {
                    *users = Some(key_users(t).await);
                }
                match users
                    .as_ref()
                    .map(|u| u.as_ref().map(|u| u.get(&identifier)))
                {
                    Some(Ok(Some(user))) => at_iam(t, step, user, &identifier).await,
                    // Deleted already (an earlier pass deleted it and then failed).
                    Some(Ok(None)) if step == Step::Delete => Ok(()),
                    Some(Ok(None)) => Err(format!(
                        "access key {identifier} is not in the account (a reconcile retires it)"
                    )),
                    Some(Err(why)) => Err(format!("the account's keys could not be listed: {why}")),
                    None => Err("the account's keys were not listed".into()),
                }
            }
            Retirer::GithubDeployKeys {
                t,
                repositories,
                listed,
            } => {
                let Ok(id) = identifier.parse::<u64>() else {
                    return Err(format!("{identifier:?} is not a deploy key id"));
                };
                let repository = match super::deploy_keys::creating_repository(rt, e).await? {
                    Some(r) => r,
                    None => {
                        if listed.is_none() {
                            *listed = Some(list_deploy_keys(t, repositories).await);
                        }
                        match listed.as_ref().map(|l| l.as_ref().map(|l| l.get(&id))) {
                            Some(Ok(Some(r))) => r.clone(),
                            Some(Err(why)) => return Err(why.clone()),
                            _ => {
                                return Err(format!(
                                    "deploy key {id} was created without an approval naming its repository, and is in none of reconcile_repositories"
                                ))
                            }
                        }
                    }
                };
                super::deploy_keys::delete(t, &repository, id)
                    .await
                    .map(|_| ())
            }
        }
    }
}

/// Every deploy key of `repositories`: key id → repository.
async fn list_deploy_keys(
    t: &crate::tools::ToolRuntime,
    repositories: &[String],
) -> Result<HashMap<u64, String>, String> {
    let mut out = HashMap::new();
    for r in repositories {
        for k in super::deploy_keys::list(t, r).await? {
            out.insert(k.id, k.repository);
        }
    }
    Ok(out)
}

/// keygate's IAM session for the tool and every access key's user, by key id.
async fn key_users(t: &crate::tools::ToolRuntime) -> Result<HashMap<String, String>, String> {
    let (credential, endpoint) = super::reconcile::session(t, AGENT, &ACTIONS, POLICY).await?;
    let iam = crate::aws::iam::Iam {
        client: &t.client,
        endpoint: &endpoint,
        host: &t.tool.upstream.host_header,
        key: credential.value.signing_key(),
    };
    let mut out = HashMap::new();
    for u in iam.users().await? {
        for k in iam.access_keys(&u.name).await? {
            out.insert(k.id, k.user);
        }
    }
    Ok(out)
}

/// Deactivates or deletes `id` (of `user`) at IAM.
async fn at_iam(
    t: &crate::tools::ToolRuntime,
    step: Step,
    user: &str,
    id: &str,
) -> Result<(), String> {
    let (credential, endpoint) = super::reconcile::session(t, AGENT, &ACTIONS, POLICY).await?;
    let iam = crate::aws::iam::Iam {
        client: &t.client,
        endpoint: &endpoint,
        host: &t.tool.upstream.host_header,
        key: credential.value.signing_key(),
    };
    match step {
        Step::Deactivate => iam.update_access_key(user, id, "Inactive").await,
        _ => iam.delete_access_key(user, id).await,
    }
}

/// Tells the owner, through the approvals webhook, that an identity is due for review
/// (and what happens to it then: `fate`).
async fn notify(rt: &Runtime, e: &InventoryEntry, fate: &str) -> Result<(), String> {
    let settings = rt.current().snapshot.approvals.clone();
    let Some(url) = settings.webhook_url.clone() else {
        return Err("no approvals.webhook_url to notify the owner through".into());
    };
    let sent = rt.shared.webhooks.allow(settings.webhook_max_per_minute);
    rt.shared.metrics.webhook_notification(sent);
    if !sent {
        return Err("the approval webhook's rate limit was reached".into());
    }
    let review = e
        .review_by
        .map(|r| {
            crate::pipeline::audit::rfc3339_millis(
                std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(r).unwrap_or(0)),
            )
        })
        .unwrap_or_default();
    let text = format!(
        "keygate: the {} `{}` of tool `{}` (inventory `{}`, owner {}) is due for review on {review}. \
         Renew it (`keygate inventory renew {} --until YYYY-MM-DD --approver …`) or it is {fate} then.",
        e.kind,
        e.identifier.as_deref().unwrap_or(""),
        e.tool,
        e.id,
        e.owner,
        e.id,
    );
    let body = j!({
        "text": text,
        "event": "inventory.review_due",
        "identity_id": e.id,
        "tool": e.tool,
        "kind": e.kind,
        "identifier": e.identifier,
        "owner": e.owner,
        "review_by": e.review_by,
    })
    .to_string();
    let req = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(crate::error::full_body(body))
        .map_err(|e| format!("cannot build the webhook request: {e}"))?;
    match tokio::time::timeout(WEBHOOK_TIMEOUT, rt.shared.http.request(req)).await {
        Ok(Ok(r)) if r.status().is_success() => Ok(()),
        Ok(Ok(r)) => Err(format!(
            "the approval webhook refused the notice (HTTP {})",
            r.status().as_u16()
        )),
        // Not the client's error: it may name the webhook's URL, which can hold a secret.
        Ok(Err(_)) => Err("the approval webhook is unreachable".into()),
        Err(_) => Err("the approval webhook timed out".into()),
    }
}

/// What notifying an owner came to.
enum Noticed {
    Sent(Millis),
    /// Another replica holds the claim to send it.
    Claimed,
}

/// Notifies the owner once across replicas: the notice is claimed in the store first
/// (exactly one replica wins), and the claim released when the webhook refuses it.
async fn notify_once(rt: &Runtime, e: &InventoryEntry, fate: &str) -> Result<Noticed, String> {
    let store = &rt.shared.store;
    let claimed_at = rt.shared.clock.unix_millis();
    let lease = i64::try_from(NOTICE_LEASE.as_millis()).unwrap_or(i64::MAX);
    match store.claim_notice(&e.id, claimed_at, lease).await {
        Ok(true) => {}
        Ok(false) => return Ok(Noticed::Claimed),
        Err(err) => return Err(format!("the notice could not be claimed: {err}")),
    }
    match notify(rt, e, fate).await {
        Ok(()) => Ok(Noticed::Sent(rt.shared.clock.unix_millis())),
        Err(why) => {
            if let Err(err) = store.release_notice(&e.id, claimed_at).await {
                // The claim lapses after the lease: the next pass after it sends again.
                tracing::warn!(identity = %e.id, "the notice's claim could not be released: {err}");
            }
            Err(why)
        }
    }
}

/// `POST /inventory/retire/{tool}`: one retirement pass; `dry_run` changes nothing.
pub async fn retire(
    rt: &Runtime,
    tool: &str,
    path: &str,
    by: &str,
    dry_run: bool,
) -> Response<AdminBody> {
    let (t, settings) = match super::reconcile::lifecycle_tool(rt, tool) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let Some(mut retirer) = Retirer::of(&t) else {
        return error(
            StatusCode::BAD_REQUEST,
            "not_supported",
            "keygate retires the identities of aws and github_app tools only",
        );
    };
    let _one_at_a_time = PASS.lock().await;
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let notice = ms(settings.retire_notice);
    let grace = settings.retire_grace.map(ms);
    let all: Vec<InventoryEntry> = match rt.shared.store.inventory().await {
        Ok(all) => all.into_iter().filter(|e| e.tool == tool).collect(),
        Err(e) => return store_error(e),
    };
    let now = rt.shared.clock.unix_millis();
    let overdue =
        |e: &InventoryEntry| e.revoked_at.is_none() && e.review_by.is_some_and(|r| r <= now);
    let overdue_reviews = all.iter().filter(|e| overdue(e)).count() as u64;
    let kind = retirer.kind();
    // Overdue records this pass cannot retire, and why (a user's SSH key at GitHub).
    let not_retired: Vec<serde_json::Value> = all
        .iter()
        .filter(|e| e.kind != kind && overdue(e))
        .map(|e| {
            j!({"id": e.id, "kind": e.kind, "identifier": e.identifier, "owner": e.owner,
                "review_by": e.review_by, "reason": retirer.not_retired(&e.kind)})
        })
        .collect();
    let mut states = [0u64; 4];
    let mut due = Vec::new();
    for e in all.iter().filter(|e| e.kind == kind) {
        let (state, step) = classify(e, now, notice, grace);
        states[state] += 1;
        if let Some(step) = step {
            due.push((e, state, step));
        }
    }
    let noun = retirer.noun();
    let mut actions = Vec::new();
    let mut failures = 0u64;
    for (e, state, step) in due {
        let identifier = e.identifier.clone().unwrap_or_default();
        let mut item = j!({
            "id": e.id, "kind": e.kind, "identifier": e.identifier, "owner": e.owner,
            "review_by": e.review_by, "deactivated_at": e.deactivated_at,
            "action": step.name(), "attempts": e.retire_attempts,
        });
        if dry_run {
            item["done"] = j!(false);
            actions.push(item);
            continue;
        }
        let outcome: Result<Option<Millis>, String> = match step {
            Step::Notify => match notify_once(rt, e, retirer.fate()).await {
                Ok(Noticed::Sent(at)) => Ok(Some(at)),
                Ok(Noticed::Claimed) => {
                    // Another replica is notifying: nothing to do or record here.
                    item["done"] = j!(false);
                    item["claimed_elsewhere"] = j!(true);
                    actions.push(item);
                    continue;
                }
                Err(why) => Err(why),
            },
            _ => retirer.step(rt, e, step).await.map(|()| None),
        };
        let at = rt.shared.clock.unix_millis();
        let recorded = match (&outcome, step) {
            (Ok(sent), Step::Notify) => rt
                .shared
                .store
                .retire_step(&e.id, &RetireStep::Notified(sent.unwrap_or(at)))
                .await
                .map(|_| ()),
            (Ok(_), Step::Deactivate) => rt
                .shared
                .store
                .retire_step(&e.id, &RetireStep::Deactivated(at))
                .await
                .map(|_| ()),
            (Ok(_), Step::Delete) => match rt.shared.store.revoke_identity(&e.id, BY, at).await {
                Ok(done) => {
                    rt.shared.vault.forget_identity(&e.id);
                    for h in &done.handles {
                        rt.shared.agent_keys.forget(h);
                    }
                    Ok(())
                }
                Err(err) => Err(err),
            },
            (Err(why), _) => {
                rt.shared
                    .store
                    .retire_step(&e.id, &RetireStep::Failed(why.clone()))
                    .await
            }
        };
        if let Err(err) = recorded {
            return store_error(err);
        }
        let action = match step {
            Step::Notify => "notify",
            Step::Deactivate => "deactivate",
            Step::Delete => "retire",
        };
        let status = if outcome.is_ok() { 200 } else { 502 };
        audit_inventory(
            rt,
            path,
            tool,
            Some(&e.id),
            "admin-token",
            AdminAction {
                action,
                by: BY.into(),
                reason: Some(match &outcome {
                    Ok(_) => format!(
                        "{noun} {identifier}, owner {} (retirement pass run by {by})",
                        e.owner
                    ),
                    Err(why) => {
                        format!("{noun} {identifier}: failed, retried at the next pass: {why}")
                    }
                }),
                agent: Some(e.agent_id.clone()),
                ..Default::default()
            },
            status,
        );
        match &outcome {
            Ok(_) => {
                tracing::info!(identity = %e.id, tool = %tool, action, "retirement step done");
                item["done"] = j!(true);
                match step {
                    Step::Deactivate => {
                        states[state] -= 1;
                        states[2] += 1;
                    }
                    Step::Delete => {
                        states[state] -= 1;
                        states[3] += 1;
                    }
                    Step::Notify => {}
                }
            }
            Err(why) => {
                tracing::warn!(identity = %e.id, tool = %tool, action, "retirement step failed, retried at the next pass: {why}");
                failures += 1;
                item["done"] = j!(false);
                item["error"] = j!(why);
                item["attempts"] = j!(e.retire_attempts.saturating_add(1));
            }
        }
        actions.push(item);
    }
    if !dry_run {
        rt.shared
            .metrics
            .retirement(tool, states, overdue_reviews, failures);
    }
    let [active, overdue, deactivated, retired] = states;
    tracing::info!(tool = %tool, dry_run, by = %by, actions = actions.len(), failures,
        "retirement pass: active {active}, overdue {overdue}, deactivated {deactivated}, retired {retired}");
    json(
        StatusCode::OK,
        j!({
            "tool": tool,
            "dry_run": dry_run,
            "kind": kind,
            "actions": actions,
            "failed": failures,
            "states": {"active": active, "overdue": overdue, "deactivated": deactivated, "retired": retired},
            "overdue_reviews": overdue_reviews,
            "not_retired": not_retired,
        }),
    )
}

/// What `POST /inventory/{id}/renew` is given.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewBody {
    /// The new review date, `YYYY-MM-DD` (its start, UTC).
    pub until: String,
    pub approver: String,
}

/// The start (UTC) of a `YYYY-MM-DD` day, in milliseconds since the epoch.
fn day_start(day: &str) -> Option<Millis> {
    let ok = day.len() == 10 && day.chars().all(|c| c.is_ascii_digit() || c == '-');
    if !ok {
        return None;
    }
    let t = humantime::parse_rfc3339(&format!("{day}T00:00:00Z")).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

/// `POST /inventory/{id}/renew`.
pub async fn renew(rt: &Runtime, id: &str, b: RenewBody, path: &str) -> Response<AdminBody> {
    let approver = b.approver.trim();
    if approver.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "approver must not be empty",
        );
    }
    let Some(until) = day_start(b.until.trim()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("until: {:?} is not a date such as 2030-01-31", b.until),
        );
    };
    let now = rt.shared.clock.unix_millis();
    let entry = match rt.shared.store.renew_identity(id, until, now).await {
        Ok(e) => e,
        Err(StoreError::NotFound) => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such inventory record",
            )
        }
        Err(e) => return store_error(e),
    };
    audit_inventory(
        rt,
        path,
        &entry.tool,
        Some(&entry.id),
        "admin-token",
        AdminAction {
            action: "renew",
            by: approver.to_string(),
            reason: Some(format!("review date moved to {}", b.until.trim())),
            agent: Some(entry.agent_id.clone()),
            ..Default::default()
        },
        200,
    );
    tracing::info!(identity = %entry.id, tool = %entry.tool, "inventory record renewed");
    json(StatusCode::OK, j!(entry))
}

/// Runs a retirement pass of every AWS and GitHub App tool with `retire_overdue`, every `retire_every`
/// (the first an interval after start; read again from the current configuration every
/// second), until `shutdown` turns true. `retire_dry_run` makes them report only.
pub async fn schedule(rt: Arc<Runtime>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let started = tokio::time::Instant::now();
    let mut last: HashMap<Arc<str>, tokio::time::Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let due: Vec<(Arc<str>, bool)> = rt
            .current()
            .tools
            .by_name
            .iter()
            .filter_map(|(name, t)| {
                let l = super::reconcile::lifecycle(&t.provider)?;
                let every = l.retire_every?;
                let since = last.get(name).copied().unwrap_or(started);
                (since.elapsed() >= every).then(|| (name.clone(), l.retire_dry_run))
            })
            .collect();
        for (tool, dry_run) in due {
            let path = format!("/inventory/retire/{tool}");
            let answer = tokio::select! {
                r = retire(&rt, &tool, &path, "schedule", dry_run) => r,
                _ = shutdown.changed() => return,
            };
            if !answer.status().is_success() {
                tracing::warn!(tool = %tool, status = answer.status().as_u16(),
                    "scheduled retirement pass failed; it runs again at the next interval");
            }
            last.insert(tool, tokio::time::Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dates_are_whole_days() {
        assert_eq!(day_start("1970-01-02"), Some(86_400_000));
        for bad in [
            "1970-1-2",
            "tomorrow",
            "1970-01-02T00:00:00Z",
            "1970-13-01",
            "",
        ] {
            assert_eq!(day_start(bad), None, "{bad}");
        }
    }
}

//! Reconciling the inventory with the identities that really exist at a tool, and adopting
//! the ones created around keygate.
//!
//! `POST /inventory/reconcile/{tool}`, for a tool whose credential provider is `aws`:
//! keygate reads its inventory of the tool first, then lists the account's IAM users and
//! each user's access keys (every page) with its own credential for the tool, a session
//! whose policy allows only `iam:ListUsers`, `iam:ListAccessKeys` and `iam:ListUserTags`
//! (the base key when the tool has no role); for a tool whose provider is `github_app`,
//! the deploy keys of each of its `reconcile_repositories` (every page,
//! [`super::deploy_keys`], with keygate's own installation token narrowed to the
//! repository and `administration: read`; refused without any), and compares:
//!
//! - `present`: in the inventory and at the tool;
//! - `gone`: in the inventory, not revoked, and no longer at the tool. The record is
//!   retired (revoked by `reconcile`: its captured secrets deleted, its handles dead at
//!   once) and each retirement audited (`keygate:inventory.retire`);
//!   A record younger than `reconcile_grace` (10 minutes unless configured) is only
//!   counted (`too_recent`): IAM's listings are eventually consistent, and a key created a
//!   moment ago may not be listed yet;
//! - `shadow`: at the tool but unknown to keygate (created around it), with its creation
//!   date and its user's `owner` tag when it has one (a deploy key: its title).
//!
//! Users (kind `user`, identified by `UserName`) and access keys (`access_key`, by
//! `AccessKeyId`) are compared, or deploy keys (`deploy_key`, by `id`); records of other
//! kinds, or without an identifier, are counted as `unchecked`, and so is a deploy key
//! missing from the listing whose repository (the one its approval names) was not listed
//! or cannot be told (adopted, or approved by a policy): it is never taken for gone. Nothing is retired unless
//! every listing was read whole: a refusal or a failure of any call fails the reconcile
//! (502) and changes nothing. The inventory is read before the tool is, so an identity
//! created while the listing runs is never taken for gone (at worst it shows as shadow
//! until the next reconcile).
//!
//! With `reconcile_every` on the tool's credential, [`schedule`] runs the same reconcile
//! by itself (by `schedule`), the first one an interval after start.
//!
//! `POST /inventory/adopt` records a shadow identity in the inventory (agent `(adopted)`,
//! the approver and owner given, a review date), audited as `keygate:inventory.adopt`.

use super::decide::{audit_inventory, error, json, store_error, AdminBody};
use crate::credentials::Provider;
use crate::gateway::Runtime;
use crate::store::{InventoryEntry, NewIdentity, StoreError};
use crate::telemetry::audit_log::AdminAction;
use http::{Response, StatusCode};
use serde_json::json as j;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// The agent keygate's own listings are issued for (session name, tags).
const AGENT: &str = "keygate-reconcile";
/// The IAM actions a reconcile's session may call.
const ACTIONS: [&str; 3] = ["iam:ListUsers", "iam:ListAccessKeys", "iam:ListUserTags"];
/// The session policy allowing exactly [`ACTIONS`].
const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["iam:ListUsers","iam:ListAccessKeys","iam:ListUserTags"],"Resource":"*"}]}"#;
/// The tag of an IAM user that names its owner.
const OWNER_TAG: &str = "owner";
/// The kinds a reconcile of an AWS tool compares, and an adoption may record.
pub const KINDS: [&str; 2] = ["user", "access_key"];
/// The kinds a reconcile of a GitHub App tool compares, and an adoption may record.
pub const GITHUB_KINDS: [&str; 1] = ["deploy_key"];

/// The kinds a reconcile of the tool compares.
fn kinds_of(p: &Provider) -> &'static [&'static str] {
    match p {
        Provider::GithubApp(_) => &GITHUB_KINDS,
        _ => &KINDS,
    }
}
/// Who retires an identity that is gone.
const RETIRED_BY: &str = "reconcile";
/// How many IAM calls of one reconcile are in flight at once.
const CONCURRENT_CALLS: usize = 8;
/// The agent an adopted identity is recorded for.
pub const ADOPTED: &str = "(adopted)";

/// A tool's reconcile and retirement settings, whatever its provider.
#[derive(Debug, Clone)]
pub(super) struct Lifecycle {
    pub reconcile_every: Option<Duration>,
    pub reconcile_grace: Duration,
    pub retire_every: Option<Duration>,
    pub retire_notice: Duration,
    /// How long a deactivated identity waits before it is deleted; `None`: it is deleted
    /// at once (a GitHub deploy key has no inactive state).
    pub retire_grace: Option<Duration>,
    pub retire_dry_run: bool,
}

/// The settings of a tool whose identities keygate reconciles and retires: `aws` (IAM
/// users and access keys) and `github_app` (deploy keys).
pub(super) fn lifecycle(p: &Provider) -> Option<Lifecycle> {
    match p {
        Provider::Aws(p) => {
            let s = p.spec();
            Some(Lifecycle {
                reconcile_every: s.reconcile_every,
                reconcile_grace: s.reconcile_grace,
                retire_every: s.retire_every,
                retire_notice: s.retire_notice,
                retire_grace: Some(s.retire_grace),
                retire_dry_run: s.retire_dry_run,
            })
        }
        Provider::GithubApp(p) => {
            let s = p.spec();
            Some(Lifecycle {
                reconcile_every: s.reconcile_every,
                reconcile_grace: s.reconcile_grace,
                retire_every: s.retire_every,
                retire_notice: s.retire_notice,
                retire_grace: None,
                retire_dry_run: s.retire_dry_run,
            })
        }
        _ => None,
    }
}

/// The tool's runtime when its provider is `aws` or `github_app`; an error answer
/// otherwise.
pub(super) fn lifecycle_tool(
    rt: &Runtime,
    tool: &str,
) -> Result<(Arc<crate::tools::ToolRuntime>, Lifecycle), Box<Response<AdminBody>>> {
    let gw = rt.current();
    let Some(t) = gw.tools.by_name.get(tool).cloned() else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "unknown_tool",
            format!("no tool {tool:?} in the configuration"),
        )));
    };
    match lifecycle(&t.provider) {
        Some(l) => Ok((t, l)),
        None => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "not_supported",
            format!(
                "tool {tool:?}: reconcile, adopt and retire support tools whose credential provider is aws or github_app"
            ),
        ))),
    }
}

/// What IAM says exists: the users and every user's access keys.
struct Listing {
    users: Vec<crate::aws::iam::User>,
    keys: Vec<crate::aws::iam::AccessKey>,
}

/// keygate's credential for its own IAM calls (issued for `agent`, with a session policy
/// allowing `actions`), and the endpoint they go to.
pub(super) async fn session(
    t: &crate::tools::ToolRuntime,
    agent: &str,
    actions: &[&str],
    policy: &str,
) -> Result<
    (
        Arc<crate::credentials::cache::Entry<crate::credentials::aws::AwsCredential>>,
        http::Uri,
    ),
    String,
> {
    let Provider::Aws(provider) = &t.provider else {
        return Err("the tool's credential provider is not aws".into());
    };
    let agent = crate::config::Agent {
        id: agent.into(),
        owner: "keygate".into(),
        spiffe_id: None,
        issuers: Vec::new(),
        attributes: BTreeMap::new(),
    };
    let actions: Vec<String> = actions.iter().map(|a| a.to_string()).collect();
    let call = crate::credentials::aws::AwsCall {
        actions: &actions,
        policy,
        task: None,
        task_ends_ms: None,
    };
    let (credential, _) = provider
        .issue(&agent, &call)
        .await
        .map_err(|e| format!("keygate could not obtain AWS credentials: {}", e.reason))?;
    let up = &t.tool.upstream;
    let endpoint: http::Uri = format!("{}://{}{}/", up.scheme, up.authority, up.base_path)
        .parse()
        .map_err(|e| format!("the tool's upstream is not a URL: {e}"))?;
    Ok((credential, endpoint))
}

/// Lists the account, then reads the owner tag of the users `shadow_users` picks from it.
async fn list(
    t: &crate::tools::ToolRuntime,
    shadow_users: impl FnOnce(&Listing) -> BTreeSet<String>,
) -> Result<(Listing, HashMap<String, String>), String> {
    let (credential, endpoint) = session(t, AGENT, &ACTIONS, POLICY).await?;
    let iam = crate::aws::iam::Iam {
        client: &t.client,
        endpoint: &endpoint,
        host: &t.tool.upstream.host_header,
        key: credential.value.signing_key(),
    };
    let users = iam.users().await?;
    // A few users' keys at a time; the first failure fails the listing.
    let mut keys = Vec::new();
    for some in users.chunks(CONCURRENT_CALLS) {
        let mut calls = Vec::with_capacity(some.len());
        for u in some {
            calls.push(iam.access_keys(&u.name));
        }
        for listed in futures_util::future::try_join_all(calls).await? {
            keys.extend(listed);
        }
    }
    let listing = Listing { users, keys };
    // The tag is informative: a user whose tags cannot be read has no owner shown.
    let mut owners = HashMap::new();
    for u in shadow_users(&listing) {
        match iam.user_tags(&u).await {
            Ok(tags) => {
                if let Some((_, v)) = tags
                    .into_iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(OWNER_TAG))
                {
                    owners.insert(u, v);
                }
            }
            Err(e) => tracing::warn!(user = %u, "reconcile: cannot read the user's tags: {e}"),
        }
    }
    Ok((listing, owners))
}

/// Whether an inventory record is one a reconcile compares (of `kinds`): its kind and
/// identifier.
fn compared<'e>(e: &'e InventoryEntry, kinds: &[&str]) -> Option<(&'e str, &'e str)> {
    let id = e.identifier.as_deref()?;
    kinds
        .contains(&e.kind.as_str())
        .then_some((e.kind.as_str(), id))
}

/// What exists at the tool: what a reconcile shows of each identity it found, by kind and
/// identifier, and the ones keygate does not know (shadow).
struct Observed {
    found: HashMap<(String, String), serde_json::Value>,
    shadow: Vec<serde_json::Value>,
}

/// The IAM users and access keys of the account, the shadow ones with their user's
/// `owner` tag.
async fn observe_aws(
    t: &crate::tools::ToolRuntime,
    is_known: &(dyn Fn(&str, &str) -> bool + Sync),
) -> Result<Observed, String> {
    let (listing, owners) = list(t, |l| {
        let mut users: BTreeSet<String> = l
            .users
            .iter()
            .filter(|u| !is_known("user", &u.name))
            .map(|u| u.name.clone())
            .collect();
        users.extend(
            l.keys
                .iter()
                .filter(|k| !is_known("access_key", &k.id))
                .map(|k| k.user.clone()),
        );
        users
    })
    .await?;
    let mut found = HashMap::new();
    let mut shadow = Vec::new();
    for u in &listing.users {
        found.insert(
            ("user".to_string(), u.name.clone()),
            j!({"created": u.created}),
        );
        if !is_known("user", &u.name) {
            shadow.push(j!({
                "kind": "user", "identifier": u.name, "user": u.name, "created": u.created,
                "owner": owners.get(&u.name),
            }));
        }
    }
    for k in &listing.keys {
        found.insert(
            ("access_key".to_string(), k.id.clone()),
            j!({"created": k.created, "user": k.user, "status": k.status}),
        );
        if !is_known("access_key", &k.id) {
            shadow.push(j!({
                "kind": "access_key", "identifier": k.id, "user": k.user, "status": k.status,
                "created": k.created, "owner": owners.get(&k.user),
            }));
        }
    }
    Ok(Observed { found, shadow })
}

/// The deploy keys of the tool's `reconcile_repositories` (every page of each); a shadow
/// key's only owner hint is its title (and who added it, when GitHub says).
async fn observe_github(
    t: &crate::tools::ToolRuntime,
    repositories: &[String],
    is_known: &(dyn Fn(&str, &str) -> bool + Sync),
) -> Result<Observed, String> {
    let mut found = HashMap::new();
    let mut shadow = Vec::new();
    for r in repositories {
        for k in super::deploy_keys::list(t, r).await? {
            let id = k.id.to_string();
            let v = j!({"created": k.created, "repository": k.repository, "title": k.title,
                "read_only": k.read_only, "added_by": k.added_by});
            if !is_known("deploy_key", &id) {
                let mut s = v.clone();
                s["kind"] = j!("deploy_key");
                s["identifier"] = j!(id);
                s["owner"] = j!(k.title);
                shadow.push(s);
            }
            found.insert(("deploy_key".to_string(), id), v);
        }
    }
    Ok(Observed { found, shadow })
}

/// `POST /inventory/reconcile/{tool}`.
pub async fn reconcile(rt: &Runtime, tool: &str, path: &str, by: &str) -> Response<AdminBody> {
    let (t, settings) = match lifecycle_tool(rt, tool) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let repositories = match &t.provider {
        Provider::GithubApp(p) if p.spec().reconcile_repositories.is_empty() => {
            return error(
                StatusCode::BAD_REQUEST,
                "not_configured",
                format!(
                    "tool {tool:?}: a GitHub reconcile lists the deploy keys of the repositories in the credential's reconcile_repositories (e.g. [\"octo/hello\"]), and it has none"
                ),
            )
        }
        Provider::GithubApp(p) => Some(p.spec().reconcile_repositories.clone()),
        _ => None,
    };
    let kinds = kinds_of(&t.provider);
    // Read first: whatever the listing then misses existed before it began.
    let inventory: Vec<InventoryEntry> = match rt.shared.store.inventory().await {
        Ok(all) => all.into_iter().filter(|e| e.tool == tool).collect(),
        Err(e) => return store_error(e),
    };
    let known: HashSet<(String, String)> = inventory
        .iter()
        .filter_map(|e| compared(e, kinds))
        .map(|(k, i)| (k.to_string(), i.to_string()))
        .collect();
    let is_known = |kind: &str, id: &str| known.contains(&(kind.to_string(), id.to_string()));
    let observed = match &repositories {
        Some(r) => observe_github(&t, r, &is_known).await,
        None => observe_aws(&t, &is_known).await,
    };
    let Observed { found, shadow } = match observed {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(tool = %tool, "reconcile failed, nothing changed: {e}");
            return error(
                StatusCode::BAD_GATEWAY,
                "reconcile_failed",
                format!("the identities at {tool} could not be listed, nothing was changed: {e}"),
            );
        }
    };

    // Listings may be eventually consistent (IAM's are): a record this young is not taken
    // for gone.
    let grace_ms = i64::try_from(settings.reconcile_grace.as_millis()).unwrap_or(i64::MAX);
    let now = rt.shared.clock.unix_millis();
    let mut too_recent = 0u64;
    let (mut present, mut gone_entries, mut unchecked) = (Vec::new(), Vec::new(), 0u64);
    for e in &inventory {
        let Some((kind, id)) = compared(e, kinds) else {
            unchecked += 1;
            continue;
        };
        match found.get(&(kind.to_string(), id.to_string())).cloned() {
            Some(mut v) => {
                v["id"] = j!(e.id);
                v["kind"] = j!(kind);
                v["identifier"] = j!(id);
                v["owner"] = j!(e.owner);
                v["revoked_at"] = j!(e.revoked_at);
                present.push(v);
            }
            None if e.revoked_at.is_none() && now - e.created_at < grace_ms => too_recent += 1,
            None if e.revoked_at.is_none() => gone_entries.push(e),
            None => {}
        }
    }
    // A deploy key is gone only from a repository that was listed: one of another
    // repository, or whose repository keygate cannot tell (adopted, or approved by a
    // policy), is not checked.
    if let Some(listed) = &repositories {
        let mut checked = Vec::with_capacity(gone_entries.len());
        for e in gone_entries {
            match super::deploy_keys::creating_repository(rt, e).await {
                Ok(Some(r)) if listed.iter().any(|l| l.eq_ignore_ascii_case(&r)) => checked.push(e),
                Ok(_) => unchecked += 1,
                Err(why) => {
                    tracing::warn!(tool = %tool, "reconcile failed, nothing changed: {why}");
                    return error(
                        StatusCode::BAD_GATEWAY,
                        "reconcile_failed",
                        format!("nothing was changed: {why}"),
                    );
                }
            }
        }
        gone_entries = checked;
    }

    let mut gone = Vec::new();
    let mut retired = 0u64;
    for e in gone_entries {
        let done = match rt
            .shared
            .store
            .revoke_identity(&e.id, RETIRED_BY, rt.shared.clock.unix_millis())
            .await
        {
            Ok(d) => d,
            Err(err) => return store_error(err),
        };
        // The handles stop working in this process at once.
        rt.shared.vault.forget_identity(&e.id);
        for h in &done.handles {
            rt.shared.agent_keys.forget(h);
        }
        if !done.already {
            retired += 1;
            audit_inventory(
                rt,
                path,
                tool,
                Some(&e.id),
                "admin-token",
                AdminAction {
                    action: "retire",
                    by: RETIRED_BY.into(),
                    reason: Some(format!(
                        "{} {} no longer exists at {tool} (reconcile run by {by})",
                        e.kind,
                        e.identifier.as_deref().unwrap_or("")
                    )),
                    agent: Some(e.agent_id.clone()),
                    ..Default::default()
                },
                200,
            );
            tracing::info!(identity = %e.id, tool = %tool, handles = done.handles.len(),
                "inventory record retired: the identity no longer exists at the tool");
        }
        gone.push(j!({
            "id": e.id, "kind": e.kind, "identifier": e.identifier, "owner": e.owner,
            "agent_id": e.agent_id, "retired": !done.already,
            "handles_revoked": done.handles.len(),
        }));
    }
    rt.shared
        .metrics
        .reconciled(tool, shadow.len() as u64, retired);
    let summary = format!(
        "present {}, gone {} (retired {retired}), shadow {}, unchecked {unchecked}, too recent {too_recent}",
        present.len(),
        gone.len(),
        shadow.len()
    );
    audit_inventory(
        rt,
        path,
        tool,
        None,
        "admin-token",
        AdminAction {
            action: "reconcile",
            by: by.to_string(),
            reason: Some(summary.clone()),
            ..Default::default()
        },
        200,
    );
    tracing::info!(tool = %tool, "reconciled: {summary}");
    json(
        StatusCode::OK,
        j!({
            "tool": tool,
            "present": present,
            "gone": gone,
            "shadow": shadow,
            "unchecked": unchecked,
            "too_recent": too_recent,
        }),
    )
}

/// What `POST /inventory/adopt` is given.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdoptBody {
    pub tool: String,
    pub identifier: String,
    pub kind: String,
    pub owner: String,
    pub approver: String,
    /// When it is due for review, e.g. "90d"; `approvals.review_after` otherwise.
    pub review_in: Option<String>,
    pub ticket: Option<String>,
}

/// `POST /inventory/adopt`: a shadow identity recorded in the inventory. Refused when a
/// record of it that is not revoked exists already (409).
pub async fn adopt(rt: &Runtime, b: AdoptBody, path: &str) -> Response<AdminBody> {
    let kinds = match lifecycle_tool(rt, &b.tool) {
        Ok((t, _)) => kinds_of(&t.provider),
        Err(r) => return *r,
    };
    let (identifier, owner, approver) = (b.identifier.trim(), b.owner.trim(), b.approver.trim());
    if identifier.is_empty() || owner.is_empty() || approver.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "identifier, owner and approver must not be empty",
        );
    }
    if !kinds.contains(&b.kind.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("kind must be one of {}", kinds.join(", ")),
        );
    }
    if b.kind == "deploy_key" && identifier.parse::<u64>().is_err() {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "a deploy key's identifier is its id, a number",
        );
    }
    let review_after = rt.current().snapshot.approvals.review_after;
    let review = match &b.review_in {
        None => review_after,
        Some(s) => match humantime::parse_duration(s) {
            Ok(d) => d,
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("review_in: {s:?} is not a duration such as 90d"),
                )
            }
        },
    };
    let store = &rt.shared.store;
    match store.inventory().await {
        Ok(all) => {
            let dup = all.iter().find(|e| {
                e.tool == b.tool
                    && e.revoked_at.is_none()
                    && compared(e, kinds) == Some((b.kind.as_str(), identifier))
            });
            if let Some(e) = dup {
                return store_error(StoreError::Conflict(format!(
                    "{} {identifier} of {} is in the inventory already ({})",
                    b.kind, b.tool, e.id
                )));
            }
        }
        Err(e) => return store_error(e),
    }
    let now = rt.shared.clock.unix_millis();
    let new = NewIdentity {
        kind: b.kind.clone(),
        tool: b.tool.clone(),
        operation: "keygate:inventory.adopt".into(),
        identifier: Some(identifier.to_string()),
        agent_id: ADOPTED.into(),
        approver: Some(approver.to_string()),
        owner: owner.to_string(),
        ticket: b.ticket.clone(),
        approval_id: None,
        request_id: rt.current().next_request_id().to_string(),
        created_at: now,
        review_by: Some(now + review.as_millis() as i64),
    };
    let entry = match store.record_identity(new).await {
        Ok(e) => e,
        Err(e) => return store_error(e),
    };
    audit_inventory(
        rt,
        path,
        &b.tool,
        Some(&entry.id),
        "admin-token",
        AdminAction {
            action: "adopt",
            by: approver.to_string(),
            reason: Some(format!("{} {identifier}, owner {owner}", b.kind)),
            ..Default::default()
        },
        201,
    );
    tracing::info!(identity = %entry.id, tool = %b.tool, kind = %b.kind, "shadow identity adopted into the inventory");
    json(StatusCode::CREATED, j!(entry))
}

/// Reconciles every AWS and GitHub App tool that has `reconcile_every`, each that often (the first an
/// interval after start; tools and intervals read again from the current configuration
/// at every tick, so a reload applies), until `shutdown` turns true.
pub async fn schedule(rt: Arc<Runtime>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let started = tokio::time::Instant::now();
    let mut last: HashMap<Arc<str>, tokio::time::Instant> = HashMap::new();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let due: Vec<Arc<str>> = rt
            .current()
            .tools
            .by_name
            .iter()
            .filter_map(|(name, t)| {
                let every = lifecycle(&t.provider)?.reconcile_every?;
                let since = last.get(name).copied().unwrap_or(started);
                (since.elapsed() >= every).then(|| name.clone())
            })
            .collect();
        for tool in due {
            let path = format!("/inventory/reconcile/{tool}");
            let answer = tokio::select! {
                r = reconcile(&rt, &tool, &path, "schedule") => r,
                _ = shutdown.changed() => return,
            };
            if !answer.status().is_success() {
                tracing::warn!(tool = %tool, status = answer.status().as_u16(),
                    "scheduled reconcile failed; it runs again at the next interval");
            }
            last.insert(tool, tokio::time::Instant::now());
        }
    }
}

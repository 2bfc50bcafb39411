//! Reconciling the inventory with the identities that really exist at a tool, and adopting
//! the ones created around keygate.
//!
//! `POST /inventory/reconcile/{tool}`, for a tool whose credential provider is `aws`:
//! keygate reads its inventory of the tool first, then lists the account's IAM users and
//! each user's access keys (every page) with its own credential for the tool, a session
//! whose policy allows only `iam:ListUsers`, `iam:ListAccessKeys` and `iam:ListUserTags`
//! (the base key when the tool has no role), and compares:
//!
//! - `present`: in the inventory and at AWS;
//! - `gone`: in the inventory, not revoked, and no longer at AWS. The record is retired
//!   (revoked by `reconcile`: its captured secrets deleted, its handles dead at once) and
//!   each retirement audited (`keygate:inventory.retire`);
//!   A record younger than `reconcile_grace` (10 minutes unless configured) is only
//!   counted (`too_recent`): IAM's listings are eventually consistent, and a key created a
//!   moment ago may not be listed yet;
//! - `shadow`: at AWS but unknown to keygate (created around it), with its creation date
//!   and its user's `owner` tag when it has one.
//!
//! Users (kind `user`, identified by `UserName`) and access keys (`access_key`, by
//! `AccessKeyId`) are compared; records of other kinds, or without an identifier, are
//! counted as `unchecked`. Nothing is retired unless every listing was read whole: a
//! refusal or a failure of any IAM call fails the reconcile (502) and changes nothing.
//! The inventory is read before AWS is, so an identity created while the listing runs is
//! never taken for gone (at worst it shows as shadow until the next reconcile).
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

/// The agent keygate's own listings are issued for (session name, tags).
const AGENT: &str = "keygate-reconcile";
/// The IAM actions a reconcile's session may call.
const ACTIONS: [&str; 3] = ["iam:ListUsers", "iam:ListAccessKeys", "iam:ListUserTags"];
/// The session policy allowing exactly [`ACTIONS`].
const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["iam:ListUsers","iam:ListAccessKeys","iam:ListUserTags"],"Resource":"*"}]}"#;
/// The tag of an IAM user that names its owner.
const OWNER_TAG: &str = "owner";
/// The kinds a reconcile compares, and an adoption may record.
pub const KINDS: [&str; 2] = ["user", "access_key"];
/// Who retires an identity that is gone.
const RETIRED_BY: &str = "reconcile";
/// How many IAM calls of one reconcile are in flight at once.
const CONCURRENT_CALLS: usize = 8;
/// The agent an adopted identity is recorded for.
pub const ADOPTED: &str = "(adopted)";

/// The tool's runtime when its provider is `aws`; an error answer otherwise.
pub(super) fn aws_tool(
    rt: &Runtime,
    tool: &str,
) -> Result<Arc<crate::tools::ToolRuntime>, Box<Response<AdminBody>>> {
    let gw = rt.current();
    let Some(t) = gw.tools.by_name.get(tool).cloned() else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "unknown_tool",
            format!("no tool {tool:?} in the configuration"),
        )));
    };
    if !matches!(t.provider, Provider::Aws(_)) {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "not_supported",
            format!(
                "tool {tool:?}: reconcile, adopt and retire support tools whose credential provider is aws"
            ),
        )));
    }
    Ok(t)
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

/// Whether an inventory record is one a reconcile compares: its kind and identifier.
fn compared(e: &InventoryEntry) -> Option<(&str, &str)> {
    let id = e.identifier.as_deref()?;
    KINDS
        .contains(&e.kind.as_str())
        .then_some((e.kind.as_str(), id))
}

/// `POST /inventory/reconcile/{tool}`.
pub async fn reconcile(rt: &Runtime, tool: &str, path: &str, by: &str) -> Response<AdminBody> {
    let t = match aws_tool(rt, tool) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    // Read first: whatever the listing then misses existed before it began.
    let inventory: Vec<InventoryEntry> = match rt.shared.store.inventory().await {
        Ok(all) => all.into_iter().filter(|e| e.tool == tool).collect(),
        Err(e) => return store_error(e),
    };
    let known: HashSet<(String, String)> = inventory
        .iter()
        .filter_map(compared)
        .map(|(k, i)| (k.to_string(), i.to_string()))
        .collect();
    let is_known = |kind: &str, id: &str| known.contains(&(kind.to_string(), id.to_string()));
    let listed = list(&t, |l| {
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
    .await;
    let (listing, owners) = match listed {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(tool = %tool, "reconcile failed, nothing changed: {e}");
            return error(
                StatusCode::BAD_GATEWAY,
                "reconcile_failed",
                format!("the identities at {tool} could not be listed, nothing was changed: {e}"),
            );
        }
    };
    let users: HashMap<&str, &crate::aws::iam::User> =
        listing.users.iter().map(|u| (u.name.as_str(), u)).collect();
    let keys: HashMap<&str, &crate::aws::iam::AccessKey> =
        listing.keys.iter().map(|k| (k.id.as_str(), k)).collect();

    // IAM's listings are eventually consistent: a record this young is not taken for gone.
    let grace_ms = match &t.provider {
        Provider::Aws(p) => p.spec().reconcile_grace.as_millis() as i64,
        _ => 0,
    };
    let now = rt.shared.clock.unix_millis();
    let mut too_recent = 0u64;
    let (mut present, mut gone_entries, mut unchecked) = (Vec::new(), Vec::new(), 0u64);
    for e in &inventory {
        let Some((kind, id)) = compared(e) else {
            unchecked += 1;
            continue;
        };
        let found = match kind {
            "user" => users.get(id).map(|u| j!({"created": u.created})),
            _ => keys
                .get(id)
                .map(|k| j!({"created": k.created, "user": k.user, "status": k.status})),
        };
        match found {
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
    let mut shadow = Vec::new();
    for u in listing.users.iter().filter(|u| !is_known("user", &u.name)) {
        shadow.push(j!({
            "kind": "user", "identifier": u.name, "user": u.name, "created": u.created,
            "owner": owners.get(&u.name),
        }));
    }
    for k in listing
        .keys
        .iter()
        .filter(|k| !is_known("access_key", &k.id))
    {
        shadow.push(j!({
            "kind": "access_key", "identifier": k.id, "user": k.user, "status": k.status,
            "created": k.created, "owner": owners.get(&k.user),
        }));
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
    if let Err(r) = aws_tool(rt, &b.tool) {
        return *r;
    }
    let (identifier, owner, approver) = (b.identifier.trim(), b.owner.trim(), b.approver.trim());
    if identifier.is_empty() || owner.is_empty() || approver.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "identifier, owner and approver must not be empty",
        );
    }
    if !KINDS.contains(&b.kind.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("kind must be one of {}", KINDS.join(", ")),
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
                    && compared(e) == Some((b.kind.as_str(), identifier))
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

/// Reconciles every AWS tool that has `reconcile_every`, each that often (the first an
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
                let Provider::Aws(p) = &t.provider else {
                    return None;
                };
                let every = p.spec().reconcile_every?;
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

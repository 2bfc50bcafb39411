//! `aws`: each call signed (SigV4) with credentials made for it.
//!
//! With a role (`role_arn`), keygate asks STS for a session of that role for this agent
//! and this action: a session policy that allows only the action being called (and its
//! resource, where keygate knows it), the shortest duration configured (15 minutes by
//! default), `RoleSessionName` and `SourceIdentity` naming the agent, and session tags
//! for agent and owner. Sessions are cached per agent and scope (role and policy) in an
//! [`IssuedCache`], refreshed ahead of expiry, so a warm call only signs. Without a role,
//! keygate's base key signs every call itself (accounts without roles); it is re-read
//! from its file or the environment every few minutes, in the background.
//!
//! The base key that calls STS comes from a `credential_process`-style JSON file or from
//! `<PREFIX>_ACCESS_KEY_ID` / `<PREFIX>_SECRET_ACCESS_KEY` / `<PREFIX>_SESSION_TOKEN`.
//! Nothing falls back: a provider that cannot issue fails the call.

use super::cache::{Cacheable, Entry, IssuedCache, Key, Served};
use super::issued::Unavailable;
use crate::aws::sign::SigningKey;
use crate::aws::sts;
use crate::clock::Clock;
use crate::config::{Agent, AwsSpec, SecretSource};
use crate::http_client::HttpClient;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the base key, when it signs calls itself, is used before it is read again.
const BASE_KEY_LIFE: u64 = 300;

/// Credentials a call is signed with.
pub struct AwsCredential {
    pub access_key_id: Arc<str>,
    secret_access_key: String,
    session_token: Option<String>,
    pub expires_unix: u64,
    /// The role whose session this is (none: keygate's base key).
    pub role: Option<Arc<str>>,
}

impl AwsCredential {
    /// A long-lived key (a captured one): no session token, no expiry keygate knows.
    pub fn long_lived(access_key_id: &str, secret_access_key: String) -> AwsCredential {
        AwsCredential {
            access_key_id: access_key_id.into(),
            secret_access_key,
            session_token: None,
            expires_unix: u64::MAX,
            role: None,
        }
    }

    pub fn signing_key(&self) -> SigningKey<'_> {
        SigningKey {
            access_key_id: &self.access_key_id,
            secret_access_key: &self.secret_access_key,
            session_token: self.session_token.as_deref(),
        }
    }
}

impl std::fmt::Debug for AwsCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredential")
            .field("access_key_id", &self.access_key_id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Cacheable for AwsCredential {
    fn expires_unix(&self) -> u64 {
        self.expires_unix
    }
    fn weight(&self) -> usize {
        self.access_key_id.len()
            + self.secret_access_key.len()
            + self.session_token.as_ref().map_or(0, String::len)
            + self.role.as_ref().map_or(0, |r| r.len())
    }
}

/// The call a credential is for.
pub struct AwsCall<'a> {
    /// The IAM actions the call needs (`iam:ListUsers`; a copy needs two).
    pub actions: &'a [String],
    /// The session policy allowing only them.
    pub policy: &'a str,
    /// The task the call is made in (its session is its own, tagged `keygate-task`).
    pub task: Option<&'a str>,
    /// When that task ends (unix ms): its session is asked for no longer than it needs
    /// (STS's least is 15 minutes; the session policy ends the grants with the task).
    pub task_ends_ms: Option<i64>,
}

/// The `aws` provider of one tool.
pub struct AwsProvider {
    spec: Arc<AwsSpec>,
    http: HttpClient,
    cache: IssuedCache<AwsCredential>,
    clock: Clock,
}

impl std::fmt::Debug for AwsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsProvider")
            .field("role_arn", &self.spec.role_arn)
            .finish_non_exhaustive()
    }
}

/// A `credential_process` answer (the file's shape).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BaseFile {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

struct BaseKey {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

impl AwsProvider {
    pub fn new(spec: Arc<AwsSpec>, http: HttpClient, clock: Clock) -> AwsProvider {
        AwsProvider {
            spec,
            http,
            cache: IssuedCache::new(clock.clone()),
            clock,
        }
    }

    pub fn spec(&self) -> &AwsSpec {
        &self.spec
    }

    /// Whether the base key can be read (for the start-up log).
    pub fn status(&self) -> Result<(), String> {
        read_base(&self.spec.base).map(|_| ())
    }

    /// The role a call with these actions assumes: the first action with a role of its
    /// own, else the tool's.
    fn role_for(&self, actions: &[String]) -> Option<&str> {
        actions
            .iter()
            .find_map(|a| self.spec.action_roles.get(a))
            .or(self.spec.role_arn.as_ref())
            .map(String::as_str)
    }

    /// The credentials to sign `call` of `agent` with: from the cache, or issued now.
    pub async fn issue(
        &self,
        agent: &Agent,
        call: &AwsCall<'_>,
    ) -> Result<(Arc<Entry<AwsCredential>>, Served), Unavailable> {
        // Without a role there is no session to make for a task: the base key signs.
        let Some(role) = self.role_for(call.actions) else {
            let base = self.spec.base.clone();
            let clock = self.clock.clone();
            let key = Key {
                agent: "".into(),
                scope: "base-key".into(),
                task: None,
            };
            return self
                .cache
                .get_or_issue(key, move || {
                    let (base, clock) = (base.clone(), clock.clone());
                    async move {
                        let b = read_base(&base).map_err(Unavailable::new)?;
                        Ok(AwsCredential {
                            access_key_id: b.access_key_id.into(),
                            secret_access_key: b.secret_access_key,
                            session_token: b.session_token,
                            expires_unix: unix(clock.now()) + BASE_KEY_LIFE,
                            role: None,
                        })
                    }
                })
                .await;
        };
        let role: Arc<str> = role.into();
        let key = Key {
            agent: agent.id.clone(),
            scope: format!("{role}\n{}", call.policy).into(),
            task: call.task.map(Arc::from),
        };
        let session_name = sts::session_name(&agent.id);
        let agent_tag = sts::tag_value(&agent.id);
        let owner_tag = sts::tag_value(&agent.owner);
        let task_tag = call.task.map(sts::tag_value).unwrap_or_default();
        let duration = session_duration(
            self.spec.session_duration,
            call.task_ends_ms,
            self.clock.unix_millis(),
        );
        let (spec, http, clock, policy) = (
            self.spec.clone(),
            self.http.clone(),
            self.clock.clone(),
            Arc::<str>::from(call.policy),
        );
        self.cache
            .get_or_issue(key, move || {
                let (spec, http, clock, policy, role) = (
                    spec.clone(),
                    http.clone(),
                    clock.clone(),
                    policy.clone(),
                    role.clone(),
                );
                let (session_name, agent_tag, owner_tag, task_tag) = (
                    session_name.clone(),
                    agent_tag.clone(),
                    owner_tag.clone(),
                    task_tag.clone(),
                );
                async move {
                    let base = read_base(&spec.base).map_err(Unavailable::new)?;
                    let tags = session_tags(&agent_tag, &owner_tag, &task_tag);
                    let request = sts::AssumeRole {
                        role_arn: &role,
                        session_name: &session_name,
                        source_identity: Some(&session_name),
                        policy: Some(&policy),
                        duration,
                        tags: &tags,
                        external_id: spec.external_id.as_deref(),
                    };
                    let key = SigningKey {
                        access_key_id: &base.access_key_id,
                        secret_access_key: &base.secret_access_key,
                        session_token: base.session_token.as_deref(),
                    };
                    let s = sts::assume_role(
                        &http,
                        &spec.sts_endpoint,
                        &spec.sts_region,
                        &key,
                        &request,
                        clock.now(),
                    )
                    .await
                    .map_err(Unavailable::new)?;
                    Ok(AwsCredential {
                        access_key_id: s.access_key_id.into(),
                        secret_access_key: s.secret_access_key,
                        session_token: Some(s.session_token),
                        expires_unix: unix(s.expires),
                        role: Some(role),
                    })
                }
            })
            .await
    }

    /// Drops the sessions cached for `agent`.
    pub fn invalidate_agent(&self, agent: &str) {
        self.cache.invalidate_agent(agent);
    }

    /// Drops the sessions made for `task` (STS cannot revoke one session: they end at
    /// their expiry, at most `session_duration` later, and no call of the task gets one).
    pub fn end_task(&self, task: &str) -> usize {
        self.cache.take_task(task).len()
    }
}

/// How long a session is asked for: `configured`, or for a task's call only as long as the
/// task has left (but no less than STS's least, 15 minutes).
fn session_duration(configured: Duration, task_ends_ms: Option<i64>, now_ms: i64) -> Duration {
    let Some(ends) = task_ends_ms else {
        return configured;
    };
    let left = Duration::from_millis(u64::try_from(ends.saturating_sub(now_ms)).unwrap_or(0));
    configured.min(left.max(crate::config::AWS_MIN_SESSION))
}

/// The session tags of a session made for an agent (and its owner, and the task the
/// call is made in): an empty value is left out.
fn session_tags<'a>(agent: &'a str, owner: &'a str, task: &'a str) -> Vec<(&'static str, &'a str)> {
    [
        ("keygate-agent", agent),
        ("keygate-owner", owner),
        ("keygate-task", task),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .collect()
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Reads the base key from its file or the environment.
fn read_base(source: &SecretSource) -> Result<BaseKey, String> {
    match source {
        SecretSource::File(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            let f: BaseFile = serde_json::from_str(&text).map_err(|_| {
                format!(
                    "{} is not credential_process JSON (AccessKeyId, SecretAccessKey)",
                    p.display()
                )
            })?;
            base_key(f.access_key_id, f.secret_access_key, f.session_token)
        }
        SecretSource::Env(prefix) => {
            let var = |name: &str| std::env::var(format!("{prefix}_{name}")).ok();
            let (Some(id), Some(secret)) = (var("ACCESS_KEY_ID"), var("SECRET_ACCESS_KEY")) else {
                return Err(format!(
                    "{prefix}_ACCESS_KEY_ID and {prefix}_SECRET_ACCESS_KEY must be set"
                ));
            };
            base_key(id, secret, var("SESSION_TOKEN"))
        }
    }
}

fn base_key(id: String, secret: String, token: Option<String>) -> Result<BaseKey, String> {
    let (id, secret) = (id.trim().to_string(), secret.trim().to_string());
    if id.is_empty() || secret.is_empty() {
        return Err("the base AWS key is empty".into());
    }
    Ok(BaseKey {
        access_key_id: id,
        secret_access_key: secret,
        session_token: token.filter(|t| !t.trim().is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tasks_session_is_asked_for_no_longer_than_the_task_has_left() {
        let (hour, min) = (Duration::from_secs(3600), Duration::from_secs(60));
        assert_eq!(session_duration(hour, None, 0), hour);
        // 40 minutes left of the task: 40 minutes, not the configured hour.
        assert_eq!(session_duration(hour, Some(40 * 60_000), 0), 40 * min);
        // STS's least is 15 minutes, however little is left.
        assert_eq!(session_duration(hour, Some(60_000), 0), 15 * min);
        assert_eq!(session_duration(hour, Some(0), 60_000), 15 * min);
        // Never longer than configured.
        assert_eq!(session_duration(20 * min, Some(3 * 3_600_000), 0), 20 * min);
    }

    #[test]
    fn a_tasks_session_is_tagged_with_the_task() {
        assert_eq!(
            session_tags("agent-1", "team", "task_0a1b"),
            [
                ("keygate-agent", "agent-1"),
                ("keygate-owner", "team"),
                ("keygate-task", "task_0a1b")
            ]
        );
        assert_eq!(
            session_tags("agent-1", "", ""),
            [("keygate-agent", "agent-1")]
        );
    }
}

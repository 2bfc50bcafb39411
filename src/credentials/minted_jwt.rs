//! `jwt`: a JWT keygate signs for every call, scoped to one agent and one tool.
//!
//! Claims: `iss` (keygate), `sub` (the agent), `aud` (the tool), `scope`, `owner` (the
//! agent's accountable human), `iat`, `nbf`, `exp` (at most five minutes later, and never
//! after the end of the task the call is made in) and a unique `jti`, which is also the credential id in the audit log. Tools verify it with the
//! keys keygate serves at `/.well-known/jwks.json`.
//!
//! Reuse: a token minted for an agent is reused for that agent's calls to the tool while
//! most of its lifetime is left (`reuse_window`, half the ttl by default), so the hot path
//! signs once per agent per window rather than once per call; the audit names the id of
//! the token actually sent. Tools that need single-use tokens set `unique_per_call`.

use super::issued::{place, Issued, Unavailable};
use super::signer::Signer;
use crate::clock::Clock;
use crate::config::{Agent, Injection};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// Tokens by (agent id, owner, task), with the unix time (ms, by keygate's clock) each was
/// minted at.
type ReuseCache =
    moka::sync::Cache<(Arc<str>, Arc<str>, Option<Arc<str>>), (Issued, i64), crate::FastHash>;

pub struct MintedJwt {
    signer: Arc<Signer>,
    issuer: String,
    audience: String,
    scope: Option<String>,
    ttl: Duration,
    injection: Injection,
    /// Tokens minted within the reuse window, by agent id and owner.
    reuse: Option<ReuseCache>,
    reuse_window: Duration,
    clock: Clock,
}

impl std::fmt::Debug for MintedJwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedJwt")
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .field("reuse", &self.reuse.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    owner: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: &'a str,
    /// The task the call is made in: once it ends, keygate's introspection answers
    /// `active: false` for the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    task: Option<&'a str>,
}

impl MintedJwt {
    pub fn new(
        signer: Arc<Signer>,
        issuer: String,
        audience: String,
        scope: Option<String>,
        ttl: Duration,
        reuse: Duration,
        injection: Injection,
    ) -> Self {
        MintedJwt {
            signer,
            issuer,
            audience,
            scope,
            ttl,
            injection,
            reuse: (!reuse.is_zero()).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(reuse)
                    .support_invalidation_closures()
                    .build_with_hasher(crate::FastHash::default())
            }),
            reuse_window: reuse,
            clock: Clock::default(),
        }
    }

    /// Mints and reuses by `clock` (the gateway's) rather than the system clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// A token for `agent`'s call, made in `task` (which ends at `task_ends_ms`, unix ms):
    /// such a token expires no later than the task.
    pub fn issue(
        &self,
        agent: &Agent,
        task: Option<&str>,
        task_ends_ms: Option<i64>,
    ) -> Result<Issued, Unavailable> {
        let Some(cache) = &self.reuse else {
            return self.mint(agent, task, task_ends_ms);
        };
        let key = (agent.id.clone(), agent.owner.clone(), task.map(Arc::from));
        let now = self.clock.unix_millis();
        // The cache drops an entry after the window by its own timer; this check holds the
        // window to keygate's clock.
        let window = i64::try_from(self.reuse_window.as_millis()).unwrap_or(i64::MAX);
        if let Some((mut issued, minted_at)) = cache.get(&key) {
            if now.saturating_sub(minted_at) < window {
                issued.minted = false;
                return Ok(issued);
            }
        }
        let issued = self.mint(agent, task, task_ends_ms)?;
        cache.insert(key, (issued.clone(), now));
        Ok(issued)
    }

    /// Drops the tokens minted for `task` from the reuse cache (those already sent are
    /// refused by keygate's introspection until they expire).
    pub fn end_task(&self, task: &str) {
        if let Some(cache) = &self.reuse {
            let task: Arc<str> = task.into();
            if let Err(e) = cache.invalidate_entries_if(move |k, _| k.2.as_ref() == Some(&task)) {
                tracing::error!("could not drop a task's minted tokens: {e}");
            }
        }
    }

    /// The tool the tokens are for (`aud`).
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// How long a token minted now lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn mint(
        &self,
        agent: &Agent,
        task: Option<&str>,
        task_ends_ms: Option<i64>,
    ) -> Result<Issued, Unavailable> {
        let now = u64::try_from(self.clock.unix_secs())
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| Unavailable::new("system clock is before 1970"))?;
        let mut exp = now + self.ttl.as_secs();
        if let Some(ends) = task_ends_ms {
            // The second the task ends in (JWT times are whole seconds): past it, the token
            // is expired, as the task is.
            let ends = u64::try_from(ends.div_euclid(1000)).unwrap_or(0);
            if ends <= now {
                return Err(Unavailable::new("the task ended"));
            }
            exp = exp.min(ends);
        }
        let jti = uuid::Uuid::new_v4().to_string();
        let claims = Claims {
            iss: &self.issuer,
            sub: &agent.id,
            aud: &self.audience,
            scope: self.scope.as_deref(),
            owner: &agent.owner,
            iat: now,
            nbf: now,
            exp,
            jti: &jti,
            task,
        };
        let token = self.signer.sign_jwt(&claims).map_err(Unavailable::new)?;
        Ok(Issued {
            id: jti.into(),
            placement: place(&self.injection, &token)?,
            minted: true,
            scope: None,
            expires_unix: None,
            cached: None,
        })
    }
}

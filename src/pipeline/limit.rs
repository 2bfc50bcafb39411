//! **limit**: per-agent rate limits (`[[rate_limits]]`), checked once the agent is known
//! and the call classified (so an unknown agent learns nothing of them, and an
//! operation's tags can select them), before the policies are asked.
//!
//! Each entry is one GCRA limiter of `governor` (a keyed one: each agent, each agent and
//! tool, or each tool its own allowance), read by keygate's clock ([`crate::clock`]), so
//! a test that moves the clock refills the allowance. A warm call takes, per entry that
//! matches, one hash of its key and one uncontended lock of governor's map; no allocation
//! (the keys hold the agent's and tool's names as reference-counted strings).
//!
//! Limits are per replica: N replicas allow up to N times a limit in all. An allowance
//! lives as long as the configuration: a reload starts every allowance afresh.

use crate::clock::Clock;
use crate::config::{LimitPer, RateLimitRule};
use crate::error::{Error, ErrorKind};
use crate::routes::Operation;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use std::sync::Arc;
use std::time::SystemTime;

/// keygate's clock as governor's.
#[derive(Clone, Debug)]
pub struct LimitClock(Clock);

impl governor::clock::Clock for LimitClock {
    type Instant = SystemTime;

    fn now(&self) -> SystemTime {
        self.0.now()
    }
}

/// Whose allowance a call draws on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Agent(Arc<str>),
    Tool(Arc<str>),
    AgentTool(Arc<str>, Arc<str>),
}

type Limiter =
    governor::RateLimiter<Key, HashMapStateStore<Key>, LimitClock, NoOpMiddleware<SystemTime>>;

/// The rate limits of one configuration.
pub struct RateLimits {
    rules: Vec<(RateLimitRule, Limiter)>,
    clock: LimitClock,
}

impl RateLimits {
    pub fn new(rules: &[RateLimitRule], clock: &Clock) -> RateLimits {
        let clock = LimitClock(clock.clone());
        RateLimits {
            rules: rules
                .iter()
                .map(|r| {
                    let limiter = governor::RateLimiter::new(
                        r.quota,
                        HashMapStateStore::default(),
                        clock.clone(),
                    );
                    (r.clone(), limiter)
                })
                .collect(),
            clock,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Draws one call of `agent` to `tool` (an operation `op`, when known: entries with a
    /// `tag` count only calls whose operation has it) from every entry that matches; the
    /// first that has nothing left refuses it with 429 `rate_limited` and how long to
    /// wait. Entries checked before the one that refuses have counted the call: a refused
    /// call still costs its allowance there, which only makes the limit stricter.
    pub fn check(
        &self,
        agent: &Arc<str>,
        tool: &Arc<str>,
        op: Option<&Operation>,
        aws: bool,
    ) -> Result<(), Error> {
        for (rule, limiter) in &self.rules {
            if rule.agent.as_ref().is_some_and(|a| a != agent)
                || rule.tool.as_ref().is_some_and(|t| t != tool)
            {
                continue;
            }
            if let Some(tag) = &rule.tag {
                if !op.is_some_and(|o| o.has_tag(tag)) {
                    continue;
                }
            }
            let key = match rule.per {
                LimitPer::Agent => Key::Agent(agent.clone()),
                LimitPer::Tool => Key::Tool(tool.clone()),
                LimitPer::AgentAndTool => Key::AgentTool(agent.clone(), tool.clone()),
            };
            if let Err(not_until) = limiter.check_key(&key) {
                use governor::clock::Clock as _;
                let wait = not_until.wait_time_from(self.clock.now());
                // Rounded up, and at least a second: a client that waits as told succeeds.
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let secs = u32::try_from(secs.max(1)).unwrap_or(u32::MAX);
                let mut e = Error::new(
                    ErrorKind::RateLimited,
                    format!(
                        "agent {:?} is calling tool {:?} faster than its rate limit allows; retry in {secs}s",
                        &**agent, &**tool
                    ),
                )
                .with_detail(format!("rate limit {}", rule.name))
                .with_retry_after(secs);
                if aws {
                    // The code AWS throttles with: SDKs retry it (with backoff).
                    e = e.with_aws_code("Throttling");
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Forgets allowances that are full again (memory stays bounded by the agents and
    /// tools active within one refill period). Off the request path.
    pub fn forget_idle(&self) {
        for (_, limiter) in &self.rules {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;
    use std::time::Duration;

    fn rule(per: LimitPer, tag: Option<&str>) -> RateLimitRule {
        RateLimitRule {
            agent: None,
            tool: None,
            tag: tag.map(Arc::from),
            per,
            quota: governor::Quota::per_minute(NonZeroU32::MIN)
                .allow_burst(NonZeroU32::new(2).unwrap()),
            name: "rate_limits[0]".into(),
        }
    }

    #[test]
    fn each_agent_has_its_allowance_and_the_clock_refills_it() {
        let clock = Clock::default();
        let limits = RateLimits::new(&[rule(LimitPer::Agent, None)], &clock);
        let (a, b, t): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "t".into());
        assert!(limits.check(&a, &t, None, false).is_ok());
        assert!(limits.check(&a, &t, None, false).is_ok());
        let e = limits.check(&a, &t, None, false).unwrap_err();
        assert_eq!(e.kind, ErrorKind::RateLimited);
        assert!(e.aws_code.is_none());
        let wait = e.retry_after.unwrap();
        assert!((59..=60).contains(&wait), "{wait}");
        assert_eq!(
            limits.check(&a, &t, None, true).unwrap_err().aws_code,
            Some("Throttling")
        );
        assert!(limits.check(&b, &t, None, false).is_ok(), "another agent");
        clock.advance(Duration::from_secs(61));
        assert!(limits.check(&a, &t, None, false).is_ok(), "refilled");
    }

    #[test]
    fn a_tagged_entry_counts_only_its_operations() {
        let clock = Clock::default();
        let limits = RateLimits::new(&[rule(LimitPer::Tool, Some("identity_creation"))], &clock);
        let (a, t): (Arc<str>, Arc<str>) = ("a".into(), "t".into());
        let read = Operation::new("read", &["read"], None);
        let create = Operation::new("create_key", &["identity_creation"], Some("key"));
        for _ in 0..5 {
            assert!(limits.check(&a, &t, Some(&read), false).is_ok());
            assert!(limits.check(&a, &t, None, false).is_ok());
        }
        assert!(limits.check(&a, &t, Some(&create), false).is_ok());
        assert!(limits.check(&"b".into(), &t, Some(&create), false).is_ok());
        assert!(
            limits.check(&"c".into(), &t, Some(&create), false).is_err(),
            "per tool: every agent together"
        );
    }
}

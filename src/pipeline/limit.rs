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
//!
//! **Shared limits** (`shared = true`, PostgreSQL store): besides its GCRA, such an entry
//! allows at most its count of calls in each fixed window of its period (`per_minute = 6`:
//! 6 calls in each minute of the Unix epoch) across every replica. Each replica counts
//! what it admitted per key and window in memory ([`SharedLimits`]); every
//! `store.share_interval`, off the request path, it writes those counts (one batch) and
//! reads the other replicas' ([`crate::store::Store::share_limit_counts`]). A call is
//! admitted while `mine + others' as last read < count`: no database round trip per
//! call, and the total can exceed the count by what the other replicas admitted since
//! this one last read theirs (at most (replicas − 1) × what one replica admits in about
//! two intervals). Counts of a replica that died still count until their window ends.
//! While sharing fails (or has not succeeded for three intervals and a read's timeout),
//! each replica also caps its own count at `count / replicas` (rounded down, at least 1;
//! replicas: those that shared in the last few intervals), so that it is never looser
//! than its share.

use crate::clock::Clock;
use crate::config::{LimitPer, RateLimitRule, SharedWindow};
use crate::error::{Error, ErrorKind};
use crate::routes::Operation;
use crate::store::{LimitCount, SharedCounts};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

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

impl Key {
    /// As stored in PostgreSQL (names cannot hold a control character).
    fn encode(&self) -> String {
        match self {
            Key::Agent(a) => a.to_string(),
            Key::Tool(t) => t.to_string(),
            Key::AgentTool(a, t) => format!("{a}\u{1f}{t}"),
        }
    }

    fn decode(per: LimitPer, s: &str) -> Option<Key> {
        Some(match per {
            LimitPer::Agent => Key::Agent(s.into()),
            LimitPer::Tool => Key::Tool(s.into()),
            LimitPer::AgentAndTool => {
                let (a, t) = s.split_once('\u{1f}')?;
                Key::AgentTool(a.into(), t.into())
            }
        })
    }
}

/// How long one share through the store may take before it counts as failed.
pub const SHARE_TIMEOUT: Duration = Duration::from_secs(2);

/// One key's counts of a shared rule: what this replica admitted in its current window,
/// and what the others had admitted in theirs when last read.
#[derive(Debug, Default)]
struct Cell {
    window: i64,
    mine: u32,
    others_window: i64,
    others: u32,
    /// `mine` changed since it was last written.
    dirty: bool,
}

/// The counts of one shared rule, kept across reloads while a configuration has it.
pub struct SharedRule {
    fingerprint: String,
    per: LimitPer,
    window: SharedWindow,
    cells: Mutex<HashMap<Key, Cell>>,
}

impl SharedRule {
    fn period_ms(&self) -> i64 {
        i64::try_from(self.window.period.as_millis())
            .unwrap_or(i64::MAX)
            .max(1)
    }

    fn cells(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Cell>> {
        // Counters only: what a panicking holder left is still a count.
        self.cells.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Process-wide state of the shared rate limits: the rules of the running configurations
/// (by fingerprint) and how sharing goes.
pub struct SharedLimits {
    rules: Mutex<HashMap<String, Weak<SharedRule>>>,
    started: Instant,
    /// Milliseconds after `started` when the last successful share began.
    shared_at: AtomicU64,
    failing: AtomicBool,
    replicas: AtomicU32,
    interval_ms: AtomicU64,
}

impl Default for SharedLimits {
    fn default() -> Self {
        SharedLimits {
            rules: Mutex::default(),
            started: Instant::now(),
            shared_at: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            replicas: AtomicU32::new(1),
            interval_ms: AtomicU64::new(1000),
        }
    }
}

impl SharedLimits {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The counts of `rule`: those of a running configuration's identical rule, or new.
    fn register(
        &self,
        fingerprint: String,
        rule: &RateLimitRule,
        window: SharedWindow,
    ) -> Arc<SharedRule> {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        rules.retain(|_, r| r.strong_count() > 0);
        if let Some(r) = rules.get(&fingerprint).and_then(Weak::upgrade) {
            return r;
        }
        let r = Arc::new(SharedRule {
            fingerprint: fingerprint.clone(),
            per: rule.per,
            window,
            cells: Mutex::default(),
        });
        rules.insert(fingerprint, Arc::downgrade(&r));
        r
    }

    fn live_rules(&self) -> Vec<Arc<SharedRule>> {
        let rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        rules.values().filter_map(Weak::upgrade).collect()
    }

    /// Whether any running configuration has a shared rule.
    pub fn is_empty(&self) -> bool {
        self.live_rules().is_empty()
    }

    /// How many calls of a window this replica may admit on its own: the whole count
    /// while sharing works, its share of it while it does not.
    fn own_cap(&self, count: u32) -> u32 {
        let interval = self.interval_ms.load(Ordering::Relaxed);
        let stale_after = interval
            .saturating_mul(3)
            .saturating_add(SHARE_TIMEOUT.as_millis() as u64);
        let age = self
            .now_ms()
            .saturating_sub(self.shared_at.load(Ordering::Acquire));
        if self.failing.load(Ordering::Acquire) || age > stale_after {
            let replicas = self.replicas.load(Ordering::Relaxed).max(1);
            (count / replicas).max(1)
        } else {
            count
        }
    }

    /// Starts a share: the interval it runs at, the time it began (for [`Self::shared`])
    /// and this replica's counts that changed since the last share, at `now` (Unix ms).
    pub fn begin_share(&self, interval: Duration, now: i64) -> (u64, Vec<LimitCount>) {
        self.interval_ms.store(
            u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let began = self.now_ms();
        let mut rows = Vec::new();
        for r in self.live_rules() {
            let period = r.period_ms();
            let current = now.div_euclid(period);
            for (key, cell) in r.cells().iter_mut() {
                if cell.dirty && cell.window >= current - 1 {
                    cell.dirty = false;
                    rows.push(LimitCount {
                        rule: r.fingerprint.clone(),
                        key: key.encode(),
                        window_start: cell.window.saturating_mul(period),
                        window_end: cell.window.saturating_add(1).saturating_mul(period),
                        count: i64::from(cell.mine),
                    });
                }
            }
        }
        (began, rows)
    }

    /// The share that began at `began` succeeded: the others' counts are applied.
    pub fn shared(&self, began: u64, counts: SharedCounts) {
        let rules: HashMap<String, Arc<SharedRule>> = self
            .live_rules()
            .into_iter()
            .map(|r| (r.fingerprint.clone(), r))
            .collect();
        for c in counts.others {
            let Some(r) = rules.get(&c.rule) else {
                continue;
            };
            let Some(key) = Key::decode(r.per, &c.key) else {
                continue;
            };
            let window = c.window_start.div_euclid(r.period_ms());
            let count = u32::try_from(c.count.max(0)).unwrap_or(u32::MAX);
            let mut cells = r.cells();
            let cell = cells.entry(key).or_default();
            if window > cell.others_window || (window == cell.others_window && count > cell.others)
            {
                cell.others_window = window;
                cell.others = count;
            }
        }
        self.replicas
            .store(counts.replicas.max(1), Ordering::Relaxed);
        self.shared_at.fetch_max(began, Ordering::AcqRel);
        self.failing.store(false, Ordering::Release);
    }

    /// The share failed: what it was to write is written next time, and each replica
    /// holds to its share of every shared limit until a share succeeds.
    pub fn share_failed(&self, unwritten: &[LimitCount]) {
        self.failing.store(true, Ordering::Release);
        for r in self.live_rules() {
            let period = r.period_ms();
            let mut cells = r.cells();
            for u in unwritten.iter().filter(|u| u.rule == r.fingerprint) {
                if let Some(key) = Key::decode(r.per, &u.key) {
                    if let Some(cell) = cells.get_mut(&key) {
                        if cell.window == u.window_start.div_euclid(period) {
                            cell.dirty = true;
                        }
                    }
                }
            }
        }
    }
}

type Limiter =
    governor::RateLimiter<Key, HashMapStateStore<Key>, LimitClock, NoOpMiddleware<SystemTime>>;

/// The rate limits of one configuration.
pub struct RateLimits {
    rules: Vec<(RateLimitRule, Limiter, Option<Arc<SharedRule>>)>,
    clock: LimitClock,
    shared: Arc<SharedLimits>,
}

impl RateLimits {
    /// The limiters of `rules`; those of shared rules count in `shared` (process-wide,
    /// kept across reloads).
    pub fn new(rules: &[RateLimitRule], clock: &Clock, shared: &Arc<SharedLimits>) -> RateLimits {
        let clock = LimitClock(clock.clone());
        // Two identical shared entries in one configuration keep two counts.
        let mut seen: HashMap<String, usize> = HashMap::new();
        RateLimits {
            rules: rules
                .iter()
                .map(|r| {
                    let limiter = governor::RateLimiter::new(
                        r.quota,
                        HashMapStateStore::default(),
                        clock.clone(),
                    );
                    let counts = r.shared.map(|w| {
                        let f = r.fingerprint();
                        let n = seen.entry(f.clone()).or_default();
                        *n += 1;
                        let f = if *n > 1 { format!("{f}#{n}") } else { f };
                        shared.register(f, r, w)
                    });
                    (r.clone(), limiter, counts)
                })
                .collect(),
            clock,
            shared: shared.clone(),
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
        for (rule, limiter, counts) in &self.rules {
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
            let Some(counts) = counts else {
                if let Err(not_until) = limiter.check_key(&key) {
                    use governor::clock::Clock as _;
                    let wait = not_until.wait_time_from(self.clock.now());
                    return Err(refusal(rule, agent, tool, aws, wait));
                }
                continue;
            };
            // Shared: the window's count across replicas, then this replica's GCRA; the
            // call counts in the window only once both allow it.
            let now = self.clock.0.unix_millis();
            let period = counts.period_ms();
            let window = now.div_euclid(period);
            let count = counts.window.count.get();
            let own_cap = self.shared.own_cap(count);
            let mut cells = counts.cells();
            let cell = cells.entry(key.clone()).or_default();
            if cell.window != window {
                cell.window = window;
                cell.mine = 0;
            }
            let others = if cell.others_window == window {
                cell.others
            } else {
                0
            };
            if cell.mine.saturating_add(others) >= count || cell.mine >= own_cap {
                let end = window.saturating_add(1).saturating_mul(period);
                let wait = Duration::from_millis(u64::try_from(end - now).unwrap_or(0));
                return Err(refusal(rule, agent, tool, aws, wait));
            }
            if let Err(not_until) = limiter.check_key(&key) {
                use governor::clock::Clock as _;
                let wait = not_until.wait_time_from(self.clock.now());
                return Err(refusal(rule, agent, tool, aws, wait));
            }
            cell.mine += 1;
            cell.dirty = true;
        }
        Ok(())
    }

    /// Forgets allowances that are full again (memory stays bounded by the agents and
    /// tools active within one refill period). Off the request path.
    pub fn forget_idle(&self) {
        let now = self.clock.0.unix_millis();
        for (_, limiter, counts) in &self.rules {
            limiter.retain_recent();
            limiter.shrink_to_fit();
            if let Some(c) = counts {
                let current = now.div_euclid(c.period_ms());
                let mut cells = c.cells();
                cells.retain(|_, cell| {
                    cell.dirty || cell.window >= current - 1 || cell.others_window >= current - 1
                });
                cells.shrink_to_fit();
            }
        }
    }
}

/// The 429 of `rule`, to retry after `wait`.
fn refusal(rule: &RateLimitRule, agent: &str, tool: &str, aws: bool, wait: Duration) -> Error {
    // Rounded up, and at least a second: a client that waits as told succeeds.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs = u32::try_from(secs.max(1)).unwrap_or(u32::MAX);
    let mut e = Error::new(
        ErrorKind::RateLimited,
        format!(
            "agent {agent:?} is calling tool {tool:?} faster than its rate limit allows; retry in {secs}s"
        ),
    )
    .with_detail(format!("rate limit {}", rule.name))
    .with_retry_after(secs);
    if aws {
        // The code AWS throttles with: SDKs retry it (with backoff).
        e = e.with_aws_code("Throttling");
    }
    e
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
            shared: None,
        }
    }

    fn shared_rule(count: u32) -> RateLimitRule {
        let count = NonZeroU32::new(count).unwrap();
        RateLimitRule {
            quota: governor::Quota::per_minute(count),
            shared: Some(SharedWindow {
                count,
                period: Duration::from_secs(60),
            }),
            ..rule(LimitPer::Agent, None)
        }
    }

    /// A clock at the start of a minute (so that a test's calls share one window).
    fn minute_clock() -> Clock {
        let clock = Clock::default();
        let into = clock.unix_millis().rem_euclid(60_000);
        clock.advance(Duration::from_millis(u64::try_from(60_000 - into).unwrap()));
        clock
    }

    #[test]
    fn a_shared_rule_counts_what_the_others_admitted_in_the_window() {
        let clock = minute_clock();
        let shared = Arc::new(SharedLimits::default());
        let limits = RateLimits::new(&[shared_rule(5)], &clock, &shared);
        let (a, b, t): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "t".into());
        assert!(limits.check(&a, &t, None, false).is_ok());
        let now = clock.unix_millis();
        let (began, mine) = shared.begin_share(Duration::from_secs(1), now);
        assert_eq!(mine.len(), 1);
        assert_eq!((mine[0].key.as_str(), mine[0].count), ("a", 1));
        assert_eq!(mine[0].window_start, now - now.rem_euclid(60_000));
        // Nothing changed: nothing to write.
        assert!(shared.begin_share(Duration::from_secs(1), now).1.is_empty());
        // The other replicas admitted 3 of a's calls in this window, 1 in the last.
        let other = |start: i64, count: i64| LimitCount {
            rule: mine[0].rule.clone(),
            key: "a".into(),
            window_start: start,
            window_end: start + 60_000,
            count,
        };
        let start = mine[0].window_start;
        shared.shared(
            began,
            SharedCounts {
                others: vec![other(start, 3), other(start - 60_000, 50)],
                replicas: 3,
            },
        );
        assert!(limits.check(&a, &t, None, false).is_ok(), "1 + 3 < 5");
        let e = limits.check(&a, &t, None, false).unwrap_err();
        assert_eq!(e.kind, ErrorKind::RateLimited);
        assert!(e.retry_after.unwrap() <= 60);
        assert!(limits.check(&b, &t, None, false).is_ok(), "b has its own");
        // A reload keeps the counts of an identical rule.
        let reloaded = RateLimits::new(&[shared_rule(5)], &clock, &shared);
        assert!(reloaded.check(&a, &t, None, false).is_err());
        // The next window starts afresh (the GCRA has refilled by then too).
        clock.advance(Duration::from_secs(60));
        assert!(reloaded.check(&a, &t, None, false).is_ok());
    }

    #[test]
    fn two_identical_shared_entries_keep_two_counts() {
        let clock = minute_clock();
        let limits = RateLimits::new(
            &[shared_rule(3), shared_rule(3)],
            &clock,
            &Default::default(),
        );
        let (a, t): (Arc<str>, Arc<str>) = ("a".into(), "t".into());
        for i in 0..3 {
            assert!(limits.check(&a, &t, None, false).is_ok(), "call {i}");
        }
        assert!(limits.check(&a, &t, None, false).is_err());
    }

    #[test]
    fn while_sharing_fails_each_replica_holds_to_its_share() {
        let clock = minute_clock();
        let shared = Arc::new(SharedLimits::default());
        let limits = RateLimits::new(&[shared_rule(7)], &clock, &shared);
        let (a, t): (Arc<str>, Arc<str>) = ("a".into(), "t".into());
        let (began, _) = shared.begin_share(Duration::from_secs(1), clock.unix_millis());
        shared.shared(
            began,
            SharedCounts {
                others: vec![],
                replicas: 3,
            },
        );
        let (_, mine) = shared.begin_share(Duration::from_secs(1), clock.unix_millis());
        shared.share_failed(&mine);
        for i in 0..2 {
            assert!(limits.check(&a, &t, None, false).is_ok(), "call {i}");
        }
        assert!(
            limits.check(&a, &t, None, false).is_err(),
            "7 / 3 replicas: 2 each"
        );
        // What was not written is written by the next share.
        let (began, mine) = shared.begin_share(Duration::from_secs(1), clock.unix_millis());
        assert_eq!(mine[0].count, 2);
        shared.shared(
            began,
            SharedCounts {
                others: vec![],
                replicas: 3,
            },
        );
        assert!(limits.check(&a, &t, None, false).is_ok(), "sharing again");
    }

    #[test]
    fn each_agent_has_its_allowance_and_the_clock_refills_it() {
        let clock = Clock::default();
        let limits = RateLimits::new(&[rule(LimitPer::Agent, None)], &clock, &Default::default());
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
        let limits = RateLimits::new(
            &[rule(LimitPer::Tool, Some("identity_creation"))],
            &clock,
            &Default::default(),
        );
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

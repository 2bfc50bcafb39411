//! What each agent normally does (its baseline), and the detectors that notice when it
//! does otherwise (`[anomalies]`).
//!
//! A baseline holds the tools, operations and forward-proxy hosts the agent has called,
//! and per tool its call rate: calls counted per minute (by keygate's clock), folded into
//! an exponentially weighted mean and variance at each new minute (weight 1/32: about the
//! last half hour counts). Refusals are kept as the times of the last few, within the
//! burst detector's window. Everything is bounded: [`MAX_TOOLS`], [`MAX_OPERATIONS`],
//! [`MAX_HOSTS`] names, [`MAX_RECENT`] anomalies, the burst's count of refusal times, and
//! [`MAX_AGENTS`] agents; past a bound a name is not learnt, so every call with it is
//! new (detected, never hidden).
//!
//! The detectors are functions of the call and the baseline at `now`, which the caller
//! reads from keygate's clock ([`crate::clock`]): deterministic under a test's clock.
//! During the learning period (from the agent's first call) the detectors of what is
//! new and of rates stay quiet; the refusal burst and off-hours identity creation do not
//! need one.
//!
//! Cost on the request path: a read lock of the agents' map, one agent's mutex, a few
//! hash lookups of names held as reference-counted strings, a few float operations once a
//! minute per tool; no allocation on a warm call (`benches/hot_path.rs`,
//! `baseline_update`). Baselines are written to the store off the request path, every
//! `flush_interval`, and read back at start.

use crate::config::{AnomalyAction, AnomalySettings};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

/// Tools, operations and hosts learnt per agent, at most.
pub const MAX_TOOLS: usize = 256;
pub const MAX_OPERATIONS: usize = 1024;
pub const MAX_HOSTS: usize = 256;
/// Recent anomalies kept per agent (for `keygate agents show`; the audit log has all).
pub const MAX_RECENT: usize = 20;
/// Agents with a baseline, at most (agents taken from token claims are not bounded by the
/// configuration): beyond, a new agent is not watched, and a warning says so.
pub const MAX_AGENTS: usize = 100_000;
/// Weight of the newest minute in a tool's mean and variance.
const ALPHA: f64 = 1.0 / 32.0;
/// How far ahead of this replica's clock a stored baseline's times may be and be merged.
pub const MERGE_SKEW_MS: i64 = 10 * 60_000;
/// Idle minutes folded into a rate at most (after that many the mean is near zero).
const MAX_IDLE_FOLD: i64 = 180;

/// A call as the detectors see it.
pub struct Call<'a> {
    pub tool: &'a Arc<str>,
    pub operation: &'a Arc<str>,
    pub identity_creation: bool,
    /// The host of the forward-proxy tunnel the call came through.
    pub host: Option<&'a str>,
    pub owner: &'a str,
}

/// A detector that fired: what it saw against what the agent normally does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub detector: &'static str,
    pub action: AnomalyActionName,
    pub observed: String,
    pub baseline: String,
}

/// An [`AnomalyAction`] as stored and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyActionName {
    Record,
    Notify,
    RequireApproval,
    Suspend,
}

impl From<AnomalyAction> for AnomalyActionName {
    fn from(a: AnomalyAction) -> Self {
        match a {
            AnomalyAction::Record => AnomalyActionName::Record,
            AnomalyAction::Notify => AnomalyActionName::Notify,
            AnomalyAction::RequireApproval => AnomalyActionName::RequireApproval,
            AnomalyAction::Suspend => AnomalyActionName::Suspend,
        }
    }
}

impl AnomalyActionName {
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyActionName::Record => "record",
            AnomalyActionName::Notify => "notify",
            AnomalyActionName::RequireApproval => "require_approval",
            AnomalyActionName::Suspend => "suspend",
        }
    }
}

/// One anomaly remembered with the agent's baseline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recent {
    pub at_ms: i64,
    pub detector: String,
    pub action: AnomalyActionName,
    pub observed: String,
    pub baseline: String,
}

/// A tool's call rate for one agent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Rate {
    /// The minute (Unix minutes) being counted, and its calls so far.
    minute: i64,
    count: u32,
    /// Calls per minute: weighted mean and variance of the minutes before.
    mean: f64,
    var: f64,
    /// The last minute the spike detector fired in (once a minute at most).
    #[serde(default)]
    fired: i64,
    /// Minutes folded so far (the first one sets the mean).
    #[serde(default)]
    minutes: u32,
}

impl Rate {
    /// Counts a call in minute `m`, folding the minutes that ended into the mean.
    fn count(&mut self, m: i64) -> u32 {
        if m != self.minute {
            if self.minute != 0 && m > self.minute {
                self.fold(f64::from(self.count));
                for _ in 0..(m - self.minute - 1).min(MAX_IDLE_FOLD) {
                    self.fold(0.0);
                }
            }
            self.minute = m;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.count
    }

    /// Counts a call in minute `m`; with the spike detector on, fires (once a minute) when
    /// the minute's calls are far above the mean.
    fn count_and_check(
        &mut self,
        m: i64,
        spike: Option<&crate::config::RateSpike>,
        tool: &str,
        out: &mut Vec<Finding>,
    ) {
        let count = self.count(m);
        let Some(spike) = spike else { return };
        let bar = self.mean + spike.sigmas * self.deviation().max(1.0);
        if self.fired != m && count >= spike.min_per_minute && f64::from(count) > bar {
            self.fired = m;
            out.push(Finding {
                detector: "rate_spike",
                action: spike.action.into(),
                observed: format!("{count} calls to tool {tool} this minute"),
                baseline: format!(
                    "{:.1} ± {:.1} calls a minute (alert above {bar:.1})",
                    self.mean,
                    self.deviation()
                ),
            });
        }
    }

    fn fold(&mut self, x: f64) {
        self.minutes = self.minutes.saturating_add(1);
        if self.minutes == 1 {
            self.mean = x;
            return;
        }
        let d = x - self.mean;
        self.mean += ALPHA * d;
        self.var = (1.0 - ALPHA) * (self.var + ALPHA * d * d);
    }

    fn deviation(&self) -> f64 {
        self.var.max(0.0).sqrt()
    }
}

/// What one agent normally does. Serialized as its stored form.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Baseline {
    first_seen_ms: i64,
    tools: HashMap<Arc<str>, Rate>,
    operations: HashSet<Arc<str>>,
    hosts: HashSet<Arc<str>>,
    recent: VecDeque<Recent>,
    /// `require_approval`: until when, and which detector asked.
    hold_until_ms: Option<i64>,
    hold_by: Option<String>,
    /// When the hold was set, and when a human last lifted one (resumed the agent): of
    /// two replicas' views, the later of the two stands.
    #[serde(default)]
    hold_at_ms: i64,
    #[serde(default)]
    released_at_ms: i64,
    /// Times of recent refusals (not stored: a burst is minutes long).
    #[serde(skip)]
    refusals: VecDeque<i64>,
    #[serde(skip)]
    dirty: bool,
}

/// Learns `name` into `set` (bounded); whether it was new.
fn learn(set: &mut HashSet<Arc<str>>, name: &str, max: usize) -> bool {
    if set.contains(name) {
        return false;
    }
    if set.len() < max {
        set.insert(Arc::from(name));
    }
    true
}

impl Baseline {
    /// The detectors of calls, on this call at `now_ms`; the baseline learns the call.
    fn observe(
        &mut self,
        call: &Call<'_>,
        s: &AnomalySettings,
        now_ms: i64,
        out: &mut Vec<Finding>,
    ) {
        if self.first_seen_ms == 0 {
            self.first_seen_ms = now_ms;
        }
        self.dirty = true;
        let learnt = now_ms.saturating_sub(self.first_seen_ms)
            >= i64::try_from(s.learning_period.as_millis()).unwrap_or(i64::MAX);
        let minute = now_ms.div_euclid(60_000);
        let spike = s.rate_spike.as_ref().filter(|_| learnt);
        let new_tool = match self.tools.get_mut(&**call.tool) {
            Some(r) => {
                r.count_and_check(minute, spike, call.tool, out);
                false
            }
            None => {
                // Past the bound a tool is not learnt: every call to it is new.
                if self.tools.len() < MAX_TOOLS {
                    let r = self.tools.entry(call.tool.clone()).or_default();
                    r.count_and_check(minute, spike, call.tool, out);
                }
                true
            }
        };
        let new_operation = learn(&mut self.operations, call.operation, MAX_OPERATIONS);
        let new_host = call
            .host
            .is_some_and(|h| learn(&mut self.hosts, h, MAX_HOSTS));
        if learnt {
            if let (Some(a), true) = (s.new_tool, new_tool) {
                out.push(Finding {
                    detector: "new_tool",
                    action: a.into(),
                    observed: format!("first call to tool {}", call.tool),
                    baseline: format!("tools called before: {}", self.names_of_tools(call.tool)),
                });
            }
            if let (Some(a), true) = (s.new_operation, new_operation) {
                out.push(Finding {
                    detector: "new_operation",
                    action: a.into(),
                    observed: format!("first call of operation {}", call.operation),
                    baseline: format!("{} operations called before", self.operations.len() - 1),
                });
            }
            if let (Some(a), true, Some(h)) = (s.new_host, new_host, call.host) {
                out.push(Finding {
                    detector: "new_host",
                    action: a.into(),
                    observed: format!("first call to host {h} through the forward proxy"),
                    baseline: format!("{} hosts reached before", self.hosts.len() - 1),
                });
            }
        }
        if let (Some(o), true) = (&s.off_hours_identity_creation, call.identity_creation) {
            let hours = o.hours_of(call.owner);
            if !hours.contains(now_ms.div_euclid(1000)) {
                out.push(Finding {
                    detector: "off_hours_identity_creation",
                    action: o.action.into(),
                    observed: format!(
                        "identity creation ({}) at {}",
                        call.operation,
                        humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH
                                + std::time::Duration::from_millis(
                                    u64::try_from(now_ms).unwrap_or(0)
                                )
                        )
                    ),
                    baseline: format!(
                        "business hours of {}: {}",
                        call.owner,
                        describe_hours(hours)
                    ),
                });
            }
        }
    }

    fn names_of_tools(&self, except: &str) -> String {
        let mut names: Vec<&str> = self
            .tools
            .keys()
            .map(|k| &**k)
            .filter(|k| *k != except)
            .collect();
        names.sort_unstable();
        if names.is_empty() {
            return "none".into();
        }
        names.join(", ")
    }

    /// A refusal (`code`) at `now_ms`: the burst detector.
    fn refused(&mut self, code: &str, s: &AnomalySettings, now_ms: i64, out: &mut Vec<Finding>) {
        let Some(b) = &s.refusal_burst else { return };
        let window = i64::try_from(b.window.as_millis()).unwrap_or(i64::MAX);
        while self
            .refusals
            .front()
            .is_some_and(|t| *t <= now_ms.saturating_sub(window))
        {
            self.refusals.pop_front();
        }
        self.refusals.push_back(now_ms);
        if self.refusals.len() >= b.count as usize {
            self.refusals.clear();
            out.push(Finding {
                detector: "refusal_burst",
                action: b.action.into(),
                observed: format!(
                    "{} refusals within {} (the last: {code})",
                    b.count,
                    humantime::format_duration(b.window)
                ),
                baseline: format!(
                    "fewer than {} within {}",
                    b.count,
                    humantime::format_duration(b.window)
                ),
            });
        }
    }
}

fn describe_hours(h: &crate::config::BusinessHours) -> String {
    const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let days: Vec<&str> = NAMES
        .iter()
        .zip(h.days)
        .filter(|(_, on)| *on)
        .map(|(n, _)| *n)
        .collect();
    let off = h.utc_offset_secs / 60;
    format!(
        "{} {:02}:{:02}-{:02}:{:02} UTC{}{:02}:{:02}",
        days.join(","),
        h.start / 60,
        h.start % 60,
        h.end / 60,
        h.end % 60,
        if off < 0 { '-' } else { '+' },
        off.abs() / 60,
        off.abs() % 60
    )
}

/// Every agent's baseline, process-wide (it survives reloads).
#[derive(Default)]
pub struct Baselines {
    agents: RwLock<HashMap<Arc<str>, Arc<Mutex<Baseline>>, crate::FastHash>>,
}

impl Baselines {
    fn agent(&self, agent: &Arc<str>) -> Option<Arc<Mutex<Baseline>>> {
        if let Some(b) = crate::locks::read(&self.agents).get(agent) {
            return Some(b.clone());
        }
        let mut all = crate::locks::write(&self.agents);
        if all.len() >= MAX_AGENTS && !all.contains_key(agent) {
            tracing::warn!(agent = %agent, "{MAX_AGENTS} agents have baselines already: this one is not watched");
            return None;
        }
        Some(all.entry(agent.clone()).or_default().clone())
    }

    /// The call detectors, on one call of `agent` at `now_ms` (its baseline learns it);
    /// what fired is pushed to `out`.
    pub fn observe(
        &self,
        agent: &Arc<str>,
        call: &Call<'_>,
        s: &AnomalySettings,
        now_ms: i64,
        out: &mut Vec<Finding>,
    ) {
        if let Some(b) = self.agent(agent) {
            crate::locks::lock(&b).observe(call, s, now_ms, out);
        }
    }

    /// The refusal burst detector, on one refusal of `agent`.
    pub fn refused(
        &self,
        agent: &Arc<str>,
        code: &str,
        s: &AnomalySettings,
        now_ms: i64,
        out: &mut Vec<Finding>,
    ) {
        if s.refusal_burst.is_none() {
            return;
        }
        if let Some(b) = self.agent(agent) {
            crate::locks::lock(&b).refused(code, s, now_ms, out);
        }
    }

    /// Remembers what fired (and what it does) with the agent's baseline; for
    /// `require_approval`, holds the agent's write calls until `hold_until_ms`.
    pub fn remember(&self, agent: &Arc<str>, f: &Finding, now_ms: i64, hold_until_ms: i64) {
        let Some(b) = self.agent(agent) else { return };
        let mut b = crate::locks::lock(&b);
        if b.recent.len() >= MAX_RECENT {
            b.recent.pop_front();
        }
        b.recent.push_back(Recent {
            at_ms: now_ms,
            detector: f.detector.to_string(),
            action: f.action,
            observed: f.observed.clone(),
            baseline: f.baseline.clone(),
        });
        if f.action == AnomalyActionName::RequireApproval {
            b.hold_until_ms = Some(hold_until_ms.max(b.hold_until_ms.unwrap_or(0)));
            b.hold_by = Some(f.detector.to_string());
            b.hold_at_ms = now_ms
                .max(b.hold_at_ms.saturating_add(1))
                .max(b.released_at_ms.saturating_add(1));
        }
        b.dirty = true;
    }

    /// The detector whose `require_approval` holds `agent`'s write calls at `now_ms`.
    pub fn held_by(&self, agent: &str, now_ms: i64) -> Option<String> {
        let b = crate::locks::read(&self.agents).get(agent)?.clone();
        let b = crate::locks::lock(&b);
        match (b.hold_until_ms, &b.hold_by) {
            (Some(until), Some(by)) if now_ms < until => Some(by.clone()),
            _ => None,
        }
    }

    /// Lifts a `require_approval` hold (the agent was resumed by a human at `now_ms`);
    /// the other replicas lift theirs when they next read the stored baselines.
    pub fn release(&self, agent: &str, now_ms: i64) {
        // Recorded even without a baseline here yet: a hold another replica made since
        // this one last read is lifted too.
        let Some(b) = self.agent(&Arc::from(agent)) else {
            return;
        };
        let mut b = crate::locks::lock(&b);
        if b.hold_until_ms.take().is_some() {
            b.hold_by = None;
        }
        b.released_at_ms = now_ms.max(b.hold_at_ms);
        b.dirty = true;
    }

    /// The agent's recent anomalies, newest first (the console's agents page).
    pub fn recent(&self, agent: &str) -> Vec<Recent> {
        let Some(b) = crate::locks::read(&self.agents).get(agent).cloned() else {
            return Vec::new();
        };
        let b = crate::locks::lock(&b);
        b.recent.iter().rev().cloned().collect()
    }

    /// What `keygate agents show` prints: the baseline and the recent anomalies.
    pub fn show(&self, agent: &str, now_ms: i64) -> Option<serde_json::Value> {
        let b = crate::locks::read(&self.agents).get(agent)?.clone();
        let b = crate::locks::lock(&b);
        let mut tools: Vec<serde_json::Value> = b
            .tools
            .iter()
            .map(|(name, r)| {
                serde_json::json!({
                    "tool": &**name,
                    "calls_per_minute_mean": (r.mean * 100.0).round() / 100.0,
                    "calls_per_minute_deviation": (r.deviation() * 100.0).round() / 100.0,
                    "calls_this_minute": if r.minute == now_ms.div_euclid(60_000) { r.count } else { 0 },
                })
            })
            .collect();
        tools.sort_by(|a, b| a["tool"].as_str().cmp(&b["tool"].as_str()));
        let mut operations: Vec<&str> = b.operations.iter().map(|o| &**o).collect();
        operations.sort_unstable();
        let mut hosts: Vec<&str> = b.hosts.iter().map(|h| &**h).collect();
        hosts.sort_unstable();
        Some(serde_json::json!({
            "first_seen_ms": b.first_seen_ms,
            "tools": tools,
            "operations": operations,
            "hosts": hosts,
            "require_approval_until_ms": b.hold_until_ms.filter(|u| *u > now_ms),
            "require_approval_by": b.hold_by,
            "recent_anomalies": b.recent.iter().rev().collect::<Vec<_>>(),
        }))
    }

    /// The baselines changed since the last call, as stored (agent id, JSON document).
    pub fn take_dirty(&self) -> Vec<(String, String)> {
        let all: Vec<(Arc<str>, Arc<Mutex<Baseline>>)> = crate::locks::read(&self.agents)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut out = Vec::new();
        for (agent, b) in all {
            let mut b = crate::locks::lock(&b);
            if !b.dirty {
                continue;
            }
            match serde_json::to_string(&*b) {
                Ok(doc) => {
                    b.dirty = false;
                    out.push((agent.to_string(), doc));
                }
                Err(e) => tracing::warn!(agent = %agent, "cannot serialize a baseline: {e}"),
            }
        }
        out
    }

    /// Marks baselines dirty again (a write to the store failed).
    pub fn mark_dirty(&self, agents: &[(String, String)]) {
        let all = crate::locks::read(&self.agents);
        for (a, _) in agents {
            if let Some(b) = all.get(a.as_str()) {
                crate::locks::lock(b).dirty = true;
            }
        }
    }

    /// Merges stored baselines (at start, then those other replicas wrote since) into
    /// this replica's: what either has learnt is learnt ([`Baseline::merge`]). A
    /// baseline that then holds what the stored one lacks is written back at the next
    /// flush, so that every replica's view converges. A document that does not read is
    /// skipped. Returns how many baselines learnt something.
    ///
    /// Times in a stored document later than `now_ms` plus [`MERGE_SKEW_MS`] (a clock far
    /// ahead, or a document written by hand) are not taken: they could stretch the
    /// learning period, or make a hold or a release stand for ever.
    pub fn merge(&self, rows: Vec<(String, String)>, now_ms: i64) -> usize {
        let mut learnt = 0;
        let latest = now_ms.saturating_add(MERGE_SKEW_MS);
        for (agent, doc) in rows {
            let mut stored = match serde_json::from_str::<Baseline>(&doc) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(agent = %agent, "stored baseline skipped: {e}");
                    continue;
                }
            };
            // A document from before baselines were shared has a hold but no time for it.
            if stored.hold_until_ms.is_some() && stored.hold_at_ms == 0 {
                stored.hold_at_ms = 1;
            }
            if stored.first_seen_ms > latest {
                stored.first_seen_ms = 0;
            }
            if stored.hold_at_ms > latest {
                (stored.hold_at_ms, stored.hold_until_ms, stored.hold_by) = (0, None, None);
            }
            if stored.released_at_ms > latest {
                stored.released_at_ms = 0;
            }
            let agent: Arc<str> = agent.into();
            let Some(b) = self.agent(&agent) else {
                continue;
            };
            let mut b = crate::locks::lock(&b);
            let (gained, ahead) = b.merge(stored);
            learnt += usize::from(gained);
            b.dirty |= ahead;
        }
        learnt
    }
}

impl Baseline {
    /// Takes in what another replica's view of the agent learnt: the tools, operations
    /// and hosts either has seen (a tool first seen elsewhere starts its rate afresh:
    /// rates are each replica's own, of the calls it serves), the earlier first call,
    /// the recent anomalies of both (the newest [`MAX_RECENT`]), and of the hold and its
    /// release the later. Returns (whether this view gained anything, whether it holds
    /// anything `other` lacks).
    fn merge(&mut self, other: Baseline) -> (bool, bool) {
        let (mut gained, mut ahead) = (false, false);
        let first = match (self.first_seen_ms, other.first_seen_ms) {
            (0, o) => o,
            (m, 0) => m,
            (m, o) => m.min(o),
        };
        gained |= first != self.first_seen_ms;
        ahead |= first != other.first_seen_ms;
        self.first_seen_ms = first;
        // (Ahead of a full set only if it could still take a name: two replicas full of
        // different names would otherwise write theirs back at every flush.)
        ahead |= other.tools.len() < MAX_TOOLS
            && self.tools.keys().any(|t| !other.tools.contains_key(t));
        for (tool, rate) in other.tools {
            if !self.tools.contains_key(&tool) && self.tools.len() < MAX_TOOLS {
                // The stored rate (at start: this replica's own before it stopped).
                self.tools.insert(tool, rate);
                gained = true;
            }
        }
        let union = |mine: &mut HashSet<Arc<str>>, theirs: HashSet<Arc<str>>, max: usize| {
            let ahead = theirs.len() < max && mine.iter().any(|n| !theirs.contains(n));
            let mut gained = false;
            for n in theirs {
                if mine.len() >= max {
                    break;
                }
                gained |= mine.insert(n);
            }
            (gained, ahead)
        };
        let (g, a) = union(&mut self.operations, other.operations, MAX_OPERATIONS);
        (gained, ahead) = (gained | g, ahead | a);
        let (g, a) = union(&mut self.hosts, other.hosts, MAX_HOSTS);
        (gained, ahead) = (gained | g, ahead | a);
        let same = |x: &Recent, y: &Recent| {
            x.at_ms == y.at_ms && x.detector == y.detector && x.observed == y.observed
        };
        ahead |= self
            .recent
            .iter()
            .any(|r| !other.recent.iter().any(|o| same(r, o)));
        let mut recent: Vec<Recent> = self.recent.drain(..).collect();
        for r in other.recent {
            if !recent.iter().any(|m| same(m, &r)) {
                recent.push(r);
                gained = true;
            }
        }
        recent.sort_by_key(|r| r.at_ms);
        let extra = recent.len().saturating_sub(MAX_RECENT);
        self.recent = recent.into_iter().skip(extra).collect();
        // The hold: the later of the two holds (of two at once, the longer), then the
        // later release lifts it.
        let longer = other.hold_until_ms.unwrap_or(0) > self.hold_until_ms.unwrap_or(0);
        if other.hold_at_ms > self.hold_at_ms || (other.hold_at_ms == self.hold_at_ms && longer) {
            self.hold_at_ms = other.hold_at_ms;
            self.hold_until_ms = other.hold_until_ms;
            self.hold_by = other.hold_by;
            gained = true;
        } else if self.hold_at_ms > other.hold_at_ms {
            ahead = true;
        }
        if other.released_at_ms > self.released_at_ms {
            self.released_at_ms = other.released_at_ms;
            gained = true;
        } else if self.released_at_ms > other.released_at_ms {
            ahead = true;
        }
        if self.released_at_ms >= self.hold_at_ms && self.hold_until_ms.is_some() {
            self.hold_until_ms = None;
            self.hold_by = None;
        }
        (gained, ahead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{OffHours, RateSpike, RefusalBurst};
    use std::time::Duration;

    const T0: i64 = 1_796_634_000_000; // a Monday, 09:00 UTC
    /// The merging replica's clock.
    const NOW: i64 = T0 + 86_400_000;

    fn settings() -> AnomalySettings {
        AnomalySettings {
            learning_period: Duration::from_secs(3600),
            new_tool: Some(AnomalyAction::Suspend),
            new_operation: Some(AnomalyAction::Record),
            new_host: Some(AnomalyAction::Notify),
            rate_spike: Some(RateSpike {
                action: AnomalyAction::Notify,
                sigmas: 4.0,
                min_per_minute: 20,
            }),
            refusal_burst: Some(RefusalBurst {
                action: AnomalyAction::Suspend,
                count: 5,
                window: Duration::from_secs(60),
            }),
            off_hours_identity_creation: Some(OffHours {
                action: AnomalyAction::RequireApproval,
                default: Default::default(),
                owners: Default::default(),
            }),
            ..Default::default()
        }
    }

    fn call<'a>(tool: &'a Arc<str>, op: &'a Arc<str>) -> Call<'a> {
        Call {
            tool,
            operation: op,
            identity_creation: false,
            host: None,
            owner: "o",
        }
    }

    #[test]
    fn what_is_new_fires_only_after_learning_and_once() {
        let (b, s) = (Baselines::default(), settings());
        let agent: Arc<str> = "a".into();
        let (t, u, read): (Arc<str>, Arc<str>, Arc<str>) = ("t".into(), "u".into(), "read".into());
        let mut out = Vec::new();
        b.observe(&agent, &call(&t, &read), &s, T0, &mut out);
        b.observe(&agent, &call(&u, &read), &s, T0 + 1000, &mut out);
        assert!(out.is_empty(), "learning: {out:?}");
        let later = T0 + 3_600_000;
        b.observe(&agent, &call(&t, &read), &s, later, &mut out);
        assert!(out.is_empty(), "known: {out:?}");
        let v: Arc<str> = "v".into();
        b.observe(&agent, &call(&v, &read), &s, later, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].detector, "new_tool");
        assert_eq!(out[0].action, AnomalyActionName::Suspend);
        assert_eq!(out[0].baseline, "tools called before: t, u");
        out.clear();
        b.observe(&agent, &call(&v, &read), &s, later, &mut out);
        assert!(out.is_empty(), "once: {out:?}");
    }

    #[test]
    fn a_rate_far_above_the_baseline_fires_once_a_minute() {
        let (b, s) = (Baselines::default(), settings());
        let agent: Arc<str> = "a".into();
        let (t, read): (Arc<str>, Arc<str>) = ("t".into(), "read".into());
        let mut out = Vec::new();
        // Two hours at 5 calls a minute.
        for m in 0..120 {
            for i in 0..5 {
                b.observe(&agent, &call(&t, &read), &s, T0 + m * 60_000 + i, &mut out);
            }
        }
        assert!(out.is_empty(), "{out:?}");
        let now = T0 + 120 * 60_000;
        for i in 0..40 {
            b.observe(&agent, &call(&t, &read), &s, now + i, &mut out);
        }
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].detector, "rate_spike");
        assert_eq!(out[0].observed, "20 calls to tool t this minute");
        assert!(
            out[0].baseline.starts_with("5.0 ± 0.0"),
            "{}",
            out[0].baseline
        );
    }

    #[test]
    fn refusal_bursts_and_off_hours_creation() {
        let (b, s) = (Baselines::default(), settings());
        let agent: Arc<str> = "a".into();
        let mut out = Vec::new();
        for i in 0..4 {
            b.refused(&agent, "forbidden", &s, T0 + i * 20_000, &mut out);
        }
        assert!(
            out.is_empty(),
            "4 in 60 s, spread: the first left the window: {out:?}"
        );
        b.refused(&agent, "secret_in_request", &s, T0 + 61_000, &mut out);
        assert!(out.is_empty(), "{out:?}");
        for i in 0..5 {
            b.refused(&agent, "secret_in_request", &s, T0 + 120_000 + i, &mut out);
        }
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].detector, "refusal_burst");
        out.clear();
        let (t, create): (Arc<str>, Arc<str>) = ("t".into(), "create_key".into());
        let c = Call {
            identity_creation: true,
            ..call(&t, &create)
        };
        b.observe(&agent, &c, &s, T0, &mut out);
        assert!(out.is_empty(), "monday 09:00: {out:?}");
        b.observe(&agent, &c, &s, T0 + 12 * 3_600_000, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].detector, "off_hours_identity_creation");
        assert!(
            out[0]
                .baseline
                .contains("mon,tue,wed,thu,fri 08:00-18:00 UTC+00:00"),
            "{}",
            out[0].baseline
        );
    }

    #[test]
    fn baselines_round_trip_through_their_stored_form() {
        let (b, s) = (Baselines::default(), settings());
        let agent: Arc<str> = "a".into();
        let (t, read): (Arc<str>, Arc<str>) = ("t".into(), "read".into());
        b.observe(&agent, &call(&t, &read), &s, T0, &mut Vec::new());
        let rows = b.take_dirty();
        assert_eq!(rows.len(), 1);
        assert!(b.take_dirty().is_empty(), "clean after a flush");
        let again = Baselines::default();
        again.merge(rows, NOW);
        let mut out = Vec::new();
        let u: Arc<str> = "u".into();
        again.observe(&agent, &call(&t, &read), &s, T0 + 3_600_000, &mut out);
        assert!(out.is_empty(), "{out:?}");
        again.observe(&agent, &call(&u, &read), &s, T0 + 3_600_000, &mut out);
        assert_eq!(
            out.len(),
            1,
            "the learning period counts from the stored first call"
        );
    }

    /// Two replicas' views of one agent: each learns what the other saw, the earlier first
    /// call stands, and they converge (what one holds that the stored view lacks is
    /// written back; what it only gained is not).
    #[test]
    fn replicas_views_merge_and_converge() {
        let s = settings();
        let (a, b) = (Baselines::default(), Baselines::default());
        let agent: Arc<str> = "ag".into();
        let (t, u, read, write): (Arc<str>, Arc<str>, Arc<str>, Arc<str>) =
            ("t".into(), "u".into(), "read".into(), "write".into());
        a.observe(&agent, &call(&t, &read), &s, T0, &mut Vec::new());
        b.observe(&agent, &call(&u, &write), &s, T0 + 60_000, &mut Vec::new());
        let from_a = a.take_dirty();
        let from_b = b.take_dirty();
        // B learns from A: it gained, and holds what A's stored view lacks (u, write).
        assert_eq!(b.merge(from_a.clone(), NOW), 1);
        let back = b.take_dirty();
        assert_eq!(back.len(), 1, "b writes back what a lacks");
        // A learns from B's merged view: it gained, holds nothing more: not written.
        assert_eq!(a.merge(back.clone(), NOW), 1);
        assert!(a.take_dirty().is_empty());
        // Merging again changes nothing.
        assert_eq!(a.merge(back, NOW), 0);
        // Its own older view teaches b nothing.
        assert_eq!(b.merge(from_b, NOW), 0);
        for v in [&a, &b] {
            let shown = v.show("ag", T0).unwrap();
            assert_eq!(shown["first_seen_ms"], T0, "{shown}");
            assert_eq!(shown["operations"], serde_json::json!(["read", "write"]));
            assert_eq!(shown["tools"].as_array().unwrap().len(), 2, "{shown}");
        }
        // After learning, nothing either replica saw is new on the other.
        let mut out = Vec::new();
        a.observe(&agent, &call(&u, &write), &s, T0 + 7_200_000, &mut out);
        b.observe(&agent, &call(&t, &read), &s, T0 + 7_200_000, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    /// What a restart reads back: a hold stored before baselines were shared (no time
    /// for it) still holds, and the stored rates stand (a busy agent does not look like a
    /// spike the minute after a restart).
    #[test]
    fn a_restart_keeps_old_holds_and_rates() {
        let old = r#"{"first_seen_ms":1796634000000,"tools":{"t":{"minute":29943900,"count":3,"mean":40.0,"var":16.0}},
            "operations":["read"],"hosts":[],"recent":[],"hold_until_ms":1796720500000,"hold_by":"new_tool"}"#;
        let b = Baselines::default();
        b.merge(vec![("ag".into(), old.into())], NOW);
        assert_eq!(b.held_by("ag", NOW).as_deref(), Some("new_tool"));
        let shown = b.show("ag", NOW).unwrap();
        assert_eq!(shown["tools"][0]["calls_per_minute_mean"], 40.0, "{shown}");
        assert!(b.take_dirty().is_empty(), "nothing new to write back");
    }

    /// Times from a clock far ahead are not taken: they would stretch the learning period,
    /// or make a hold or a release stand for ever.
    #[test]
    fn times_far_ahead_are_not_merged() {
        let far = NOW + MERGE_SKEW_MS + 1;
        let doc = format!(
            r#"{{"first_seen_ms":{far},"tools":{{}},"operations":["x"],"hosts":[],"recent":[],
                "hold_until_ms":{},"hold_by":"new_tool","hold_at_ms":{far},"released_at_ms":{far}}}"#,
            far + 1
        );
        let b = Baselines::default();
        let agent: Arc<str> = "ag".into();
        b.merge(vec![("ag".into(), doc)], NOW);
        assert_eq!(b.held_by("ag", NOW), None);
        assert_eq!(b.show("ag", NOW).unwrap()["first_seen_ms"], 0);
        // A hold made now is not lifted by the far release.
        let f = Finding {
            detector: "rate_spike",
            action: AnomalyActionName::RequireApproval,
            observed: "o".into(),
            baseline: "b".into(),
        };
        b.remember(&agent, &f, NOW, NOW + 60_000);
        let again = Baselines::default();
        again.merge(b.take_dirty(), NOW);
        assert_eq!(again.held_by("ag", NOW + 1).as_deref(), Some("rate_spike"));
    }

    /// A hold set on one replica holds on the other once merged; a human's release on
    /// either lifts it on both; a later hold stands over an earlier release.
    #[test]
    fn holds_and_releases_merge_the_later_standing() {
        let (a, b) = (Baselines::default(), Baselines::default());
        let agent: Arc<str> = "ag".into();
        let f = Finding {
            detector: "new_tool",
            action: AnomalyActionName::RequireApproval,
            observed: "o".into(),
            baseline: "b".into(),
        };
        a.remember(&agent, &f, T0, T0 + 3_600_000);
        b.merge(a.take_dirty(), NOW);
        assert_eq!(b.held_by("ag", T0 + 1).as_deref(), Some("new_tool"));
        assert_eq!(b.recent("ag").len(), 1);
        b.release("ag", T0 + 10);
        assert_eq!(b.held_by("ag", T0 + 11), None);
        // A release on a replica that has not seen the agent yet is recorded all the same,
        // and lifts the hold where it is merged.
        let c = Baselines::default();
        c.release("ag", T0 + 10);
        let from_c = c.take_dirty();
        assert_eq!(from_c.len(), 1, "the release is written");
        a.merge(b.take_dirty(), NOW);
        assert_eq!(a.held_by("ag", T0 + 11), None, "the release reached a");
        // A new hold after the release stands, on both.
        a.remember(&agent, &f, T0 + 20, T0 + 3_600_000);
        b.merge(a.take_dirty(), NOW);
        assert_eq!(b.held_by("ag", T0 + 21).as_deref(), Some("new_tool"));
        assert_eq!(b.recent("ag").len(), 2);
    }
}

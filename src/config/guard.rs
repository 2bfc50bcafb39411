//! `[[rate_limits]]` and `[anomalies]`, validated into what the limit phase and the
//! anomaly detectors run on: every selector names something that exists, every rate and
//! window is positive, every action is one keygate knows.

use super::check::Checker;
use super::file;
use crate::routes::Operations;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// Whose calls share one allowance of a [`RateLimitRule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitPer {
    /// Each agent its own.
    Agent,
    /// Each agent on each tool its own.
    AgentAndTool,
    /// Every agent on a tool together.
    Tool,
}

/// One `[[rate_limits]]` entry: the calls it counts (every selector set must match) and
/// what it allows (a GCRA quota: a sustained rate and a burst).
#[derive(Debug, Clone)]
pub struct RateLimitRule {
    pub agent: Option<Arc<str>>,
    pub tool: Option<Arc<str>>,
    pub tag: Option<Arc<str>>,
    pub per: LimitPer,
    pub quota: governor::Quota,
    /// `rate_limits[i]`, for the audit record and the log.
    pub name: Arc<str>,
    /// Counted across replicas (PostgreSQL store only): at most `count` calls in each
    /// fixed window of `period` (aligned on the Unix epoch), besides the quota.
    pub shared: Option<SharedWindow>,
}

/// The cluster-wide allowance of a `shared = true` rate limit: the rate as written
/// (`per_minute = 6`: 6 calls a minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedWindow {
    pub count: NonZeroU32,
    pub period: Duration,
}

impl RateLimitRule {
    /// What identifies a shared rule across replicas (their configurations may order, or
    /// differ in, their entries): its selectors, `per` and rate, not its position.
    pub fn fingerprint(&self) -> String {
        let w = self.shared.map(|w| (w.count.get(), w.period.as_secs()));
        format!(
            "{:?}|{}|{}|{}|{:?}",
            self.per,
            self.agent.as_deref().unwrap_or("*"),
            self.tool.as_deref().unwrap_or("*"),
            self.tag.as_deref().unwrap_or("*"),
            w
        )
    }
}

/// What a detector does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnomalyAction {
    /// An audit event, a span event and a metric; nothing else.
    Record,
    /// Also the approvals webhook (and the console log).
    Notify,
    /// The agent's write calls need a human's approval for `require_approval_for`.
    RequireApproval,
    /// The agent is suspended (as by `keygate agents suspend`) until a human resumes it.
    Suspend,
}

impl AnomalyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyAction::Record => "record",
            AnomalyAction::Notify => "notify",
            AnomalyAction::RequireApproval => "require_approval",
            AnomalyAction::Suspend => "suspend",
        }
    }

    fn parse(s: &str) -> Option<AnomalyAction> {
        Some(match s {
            "record" => AnomalyAction::Record,
            "notify" => AnomalyAction::Notify,
            "require_approval" => AnomalyAction::RequireApproval,
            "suspend" => AnomalyAction::Suspend,
            _ => return None,
        })
    }
}

/// A call rate far above the agent's baseline for a tool.
#[derive(Debug, Clone, Copy)]
pub struct RateSpike {
    pub action: AnomalyAction,
    pub sigmas: f64,
    pub min_per_minute: u32,
}

/// `count` refusals within `window`.
#[derive(Debug, Clone, Copy)]
pub struct RefusalBurst {
    pub action: AnomalyAction,
    pub count: u32,
    pub window: Duration,
}

/// Business hours: the days of the week and a range of minutes of the day, in one UTC
/// offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusinessHours {
    /// Monday first.
    pub days: [bool; 7],
    /// Minutes after midnight: from `start` (included) to `end` (excluded).
    pub start: u16,
    pub end: u16,
    pub utc_offset_secs: i32,
}

impl Default for BusinessHours {
    fn default() -> Self {
        BusinessHours {
            days: [true, true, true, true, true, false, false],
            start: 8 * 60,
            end: 18 * 60,
            utc_offset_secs: 0,
        }
    }
}

impl BusinessHours {
    /// Whether `unix_secs` falls within these hours.
    pub fn contains(&self, unix_secs: i64) -> bool {
        let local = unix_secs + i64::from(self.utc_offset_secs);
        let days = local.div_euclid(86_400);
        let minute = local.rem_euclid(86_400) / 60;
        // 1970-01-01 was a Thursday (index 3, Monday first).
        let weekday = (days + 3).rem_euclid(7) as usize;
        self.days[weekday] && minute >= i64::from(self.start) && minute < i64::from(self.end)
    }
}

/// Identity creation outside business hours, by the owner's hours where they have some.
#[derive(Debug, Clone)]
pub struct OffHours {
    pub action: AnomalyAction,
    pub default: BusinessHours,
    pub owners: std::collections::HashMap<String, BusinessHours>,
}

impl OffHours {
    pub fn hours_of(&self, owner: &str) -> &BusinessHours {
        self.owners.get(owner).unwrap_or(&self.default)
    }
}

/// `[anomalies]`, compiled. A detector that is `None` is off.
#[derive(Debug, Clone)]
pub struct AnomalySettings {
    pub learning_period: Duration,
    pub flush_interval: Duration,
    pub require_approval_for: Duration,
    pub new_tool: Option<AnomalyAction>,
    pub new_operation: Option<AnomalyAction>,
    pub new_host: Option<AnomalyAction>,
    pub rate_spike: Option<RateSpike>,
    pub refusal_burst: Option<RefusalBurst>,
    pub off_hours_identity_creation: Option<OffHours>,
}

impl Default for AnomalySettings {
    fn default() -> Self {
        let f = file::AnomaliesSection::default();
        AnomalySettings {
            learning_period: f.learning_period,
            flush_interval: f.flush_interval,
            require_approval_for: f.require_approval_for,
            new_tool: None,
            new_operation: None,
            new_host: None,
            rate_spike: None,
            refusal_burst: None,
            off_hours_identity_creation: None,
        }
    }
}

pub(super) fn compile_rate_limits(
    c: &mut Checker,
    entries: Vec<file::RateLimitEntry>,
    known_agent: &dyn Fn(&str) -> bool,
    known_tool: &dyn Fn(&str) -> bool,
    operations: &Operations,
    shared_store: bool,
) -> Vec<RateLimitRule> {
    let mut rules = Vec::new();
    for (i, e) in entries.into_iter().enumerate() {
        let key = format!("rate_limits[{i}]");
        if let Some(a) = &e.agent {
            if !known_agent(a) {
                c.error(
                    format!("{key}.agent"),
                    format!("no agent {a:?} is declared"),
                );
            }
        }
        if let Some(t) = &e.tool {
            if !known_tool(t) {
                c.error(format!("{key}.tool"), format!("no tool {t:?} is declared"));
            }
        }
        if let Some(t) = &e.tag {
            let known = operations
                .by_name
                .values()
                .any(|o| o.tags.iter().any(|x| **x == **t));
            if !known {
                c.error(
                    format!("{key}.tag"),
                    format!("no operation has the tag {t:?} (such as \"identity_creation\", \"write\", \"read\")"),
                );
            }
        }
        let per = match e.per.as_deref() {
            None | Some("agent") => LimitPer::Agent,
            Some("agent_and_tool") => LimitPer::AgentAndTool,
            Some("tool") => LimitPer::Tool,
            Some(other) => {
                c.error(
                    format!("{key}.per"),
                    format!("{other:?} is not \"agent\", \"agent_and_tool\" or \"tool\""),
                );
                LimitPer::Agent
            }
        };
        if e.shared && !shared_store {
            c.error(
                format!("{key}.shared"),
                "needs the PostgreSQL store (store.url): with SQLite there is one replica, \
                 whose limits are already all there is",
            );
        }
        let (rate, period) = match (e.per_second, e.per_minute, e.per_hour) {
            (Some(n), None, None) => (n, 1),
            (None, Some(n), None) => (n, 60),
            (None, None, Some(n)) => (n, 3600),
            _ => {
                c.error(
                    key.clone(),
                    "set exactly one of per_second, per_minute and per_hour",
                );
                continue;
            }
        };
        let Some(count) = NonZeroU32::new(rate) else {
            c.error(key, "the rate must be at least 1");
            continue;
        };
        let mut quota = match period {
            1 => governor::Quota::per_second(count),
            60 => governor::Quota::per_minute(count),
            _ => governor::Quota::per_hour(count),
        };
        if let Some(b) = e.burst {
            match NonZeroU32::new(b) {
                Some(b) => quota = quota.allow_burst(b),
                None => c.error(format!("{key}.burst"), "must be at least 1"),
            }
        }
        rules.push(RateLimitRule {
            agent: e.agent.map(Arc::from),
            tool: e.tool.map(Arc::from),
            tag: e.tag.map(Arc::from),
            per,
            quota,
            name: key.into(),
            shared: e.shared.then_some(SharedWindow {
                count,
                period: Duration::from_secs(period),
            }),
        });
    }
    rules
}

fn action(c: &mut Checker, key: &str, s: &str) -> AnomalyAction {
    AnomalyAction::parse(s).unwrap_or_else(|| {
        c.error(
            format!("{key}.action"),
            format!("{s:?} is not \"record\", \"notify\", \"require_approval\" or \"suspend\""),
        );
        AnomalyAction::Record
    })
}

pub(super) fn compile_anomalies(c: &mut Checker, a: file::AnomaliesSection) -> AnomalySettings {
    if a.flush_interval < Duration::from_secs(1) {
        c.error("anomalies.flush_interval", "must be at least 1s");
    }
    if a.require_approval_for.is_zero() {
        c.error("anomalies.require_approval_for", "must be longer than zero");
    }
    let new_tool = a
        .new_tool
        .map(|d| action(c, "anomalies.new_tool", &d.action));
    let new_operation = a
        .new_operation
        .map(|d| action(c, "anomalies.new_operation", &d.action));
    let new_host = a
        .new_host
        .map(|d| action(c, "anomalies.new_host", &d.action));
    let rate_spike = a.rate_spike.map(|r| {
        if !(r.sigmas.is_finite() && r.sigmas > 0.0) {
            c.error("anomalies.rate_spike.sigmas", "must be a number above zero");
        }
        if r.min_per_minute == 0 {
            c.error("anomalies.rate_spike.min_per_minute", "must be at least 1");
        }
        RateSpike {
            action: action(c, "anomalies.rate_spike", &r.action),
            sigmas: r.sigmas,
            min_per_minute: r.min_per_minute,
        }
    });
    let refusal_burst = a.refusal_burst.map(|r| {
        if r.count < 2 {
            c.error("anomalies.refusal_burst.count", "must be at least 2");
        }
        if r.window.is_zero() {
            c.error("anomalies.refusal_burst.window", "must be longer than zero");
        }
        RefusalBurst {
            action: action(c, "anomalies.refusal_burst", &r.action),
            count: r.count.clamp(2, 10_000),
            window: r.window,
        }
    });
    let off_hours_identity_creation = a.off_hours_identity_creation.map(|o| {
        let key = "anomalies.off_hours_identity_creation";
        let default = business_hours(
            c,
            key,
            &file::BusinessHoursSection {
                days: o.days,
                hours: o.hours,
                utc_offset: o.utc_offset,
            },
        );
        let owners = o
            .owners
            .iter()
            .map(|(owner, h)| {
                let k = format!("{key}.owners.{owner:?}");
                (owner.clone(), business_hours(c, &k, h))
            })
            .collect();
        OffHours {
            action: action(c, key, &o.action),
            default,
            owners,
        }
    });
    AnomalySettings {
        learning_period: a.learning_period,
        flush_interval: a.flush_interval,
        require_approval_for: a.require_approval_for,
        new_tool,
        new_operation,
        new_host,
        rate_spike,
        refusal_burst,
        off_hours_identity_creation,
    }
}

fn business_hours(c: &mut Checker, key: &str, h: &file::BusinessHoursSection) -> BusinessHours {
    let mut out = BusinessHours::default();
    if let Some(days) = &h.days {
        out.days = [false; 7];
        const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        for d in days {
            match NAMES.iter().position(|n| d.eq_ignore_ascii_case(n)) {
                Some(i) => out.days[i] = true,
                None => c.error(
                    format!("{key}.days"),
                    format!("{d:?} is not a day such as \"mon\""),
                ),
            }
        }
    }
    if let Some(range) = &h.hours {
        let parsed = range
            .split_once('-')
            .and_then(|(a, b)| Some((minute_of_day(a.trim())?, minute_of_day(b.trim())?)));
        match parsed {
            Some((start, end)) if start < end => {
                out.start = start;
                out.end = end;
            }
            _ => c.error(
                format!("{key}.hours"),
                format!("{range:?} is not a range such as \"08:00-18:00\" (start before end)"),
            ),
        }
    }
    if let Some(off) = &h.utc_offset {
        match utc_offset(off) {
            Some(s) => out.utc_offset_secs = s,
            None => c.error(
                format!("{key}.utc_offset"),
                format!("{off:?} is not an offset such as \"+01:00\""),
            ),
        }
    }
    out
}

/// `HH:MM` (`24:00` is the end of the day).
fn minute_of_day(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    let total = h * 60 + m;
    (m < 60 && total <= 24 * 60).then_some(total)
}

/// `+HH:MM` or `-HH:MM`.
fn utc_offset(s: &str) -> Option<i32> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let m = i32::from(minute_of_day(rest)?);
    (m <= 14 * 60).then_some(sign * m * 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn business_hours_by_weekday_time_and_offset() {
        let h = BusinessHours::default();
        // 2026-12-07 is a Monday; 09:00 UTC.
        let monday_9 = 1_796_634_000;
        assert!(h.contains(monday_9));
        assert!(!h.contains(monday_9 - 2 * 3600), "07:00");
        assert!(!h.contains(monday_9 + 9 * 3600), "18:00");
        assert!(!h.contains(monday_9 - 2 * 86400), "saturday");
        let east = BusinessHours {
            utc_offset_secs: 10 * 3600,
            ..h
        };
        assert!(!east.contains(monday_9), "19:00 at +10:00");
        assert_eq!(utc_offset("-05:30"), Some(-(5 * 3600 + 1800)));
        assert_eq!(utc_offset("05:30"), None);
        assert_eq!(minute_of_day("24:00"), Some(1440));
        assert_eq!(minute_of_day("8:00"), None);
    }
}

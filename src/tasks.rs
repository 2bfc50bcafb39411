//! Tasks: an agent's just-in-time access.
//!
//! An agent (or its orchestrator, or an admin) opens a task with a purpose, a ticket, a
//! time limit and optionally the tools and operations it narrows the agent to. A call
//! names its task with the `Keygate-Task` header (in a forward-proxy tunnel: on the
//! `CONNECT`); keygate checks that the task is this agent's and still open, that the tool
//! and operation are within it, lets the policies read it (`context.task`), issues the
//! call's credential for the task alone (its own cache entries, the task's id in minted
//! JWTs and AWS session tags), and records it in the audit record and span. The header
//! never reaches the tool.
//!
//! When a task ends (by the agent, an admin, or its time limit), every replica drops what
//! it issued for the task and revokes what the issuer lets it (OAuth2 tokens, RFC 7009);
//! keygate's own minted tokens carry the task's id, and keygate's introspection refuses
//! them from then on until they expire. Calls naming an ended task are refused.
//!
//! The tasks live in the store (so every replica sees them) and in memory here, read
//! with the rest of the store's view ([`crate::gateway`]); a warm call looks its task up
//! in memory only.

use crate::error::{Error, ErrorKind};
use crate::store::{Millis, Task};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

/// The header a call names its task with.
pub const HEADER: http::HeaderName = http::HeaderName::from_static(HEADER_STR);
/// [`HEADER`]'s name.
pub const HEADER_STR: &str = "keygate-task";

/// How long an ended or expired task is still known (its calls are refused as
/// `task_ended`, its minted tokens as inactive), past its time limit.
pub const RETAIN_MS: Millis = 24 * 3600 * 1000;

/// How long after a task closed its credentials are dropped again on every pass (longer
/// than a credential request may take).
pub const SETTLE_MS: Millis = 60_000;

/// The most open tasks an agent may have at once.
pub const MAX_OPEN_PER_AGENT: usize = 64;

/// The most characters a task id has (`task_` and 20 hex digits; room to spare).
const MAX_ID: usize = 64;

/// The tasks this process knows, by id, and those whose credentials it has dropped.
#[derive(Default)]
pub struct Tasks {
    by_id: RwLock<HashMap<String, Arc<Task>>>,
    /// Bumped by every task opened or ended through this process, so that a read of the
    /// store that began before one of them does not undo it ([`Tasks::set_if_unchanged`]).
    epoch: std::sync::atomic::AtomicU64,
    /// Closed tasks whose credentials this process has dropped already.
    dropped: Mutex<HashSet<String>>,
}

impl Tasks {
    /// Where the next read of the store starts from ([`Tasks::set_if_unchanged`]).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Replaces what is known with what the store holds, read since `epoch`; returns
    /// false, changing nothing, when a task was opened or ended through this process
    /// meanwhile (what was read may be older than it: read again). An end is never
    /// undone: a read that began before a task ended here (or was pushed from another
    /// replica) does not reopen it.
    pub fn set_if_unchanged(&self, all: Vec<Task>, epoch: u64) -> bool {
        let Ok(mut m) = self.by_id.write() else {
            return false;
        };
        if self.epoch() != epoch {
            return false;
        }
        let map = all
            .into_iter()
            .map(|t| {
                let known = m
                    .get(&t.id)
                    .filter(|k| k.ended_at.is_some() && t.ended_at.is_none());
                let t = match known {
                    Some(k) => k.clone(),
                    None => Arc::new(t),
                };
                (t.id.clone(), t)
            })
            .collect();
        *m = map;
        true
    }

    /// A task opened or ended through this process (the store was written first).
    pub fn put(&self, task: Task) {
        if let Ok(mut m) = self.by_id.write() {
            m.insert(task.id.clone(), Arc::new(task));
            self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Task>> {
        self.by_id.read().ok()?.get(id).cloned()
    }

    /// Every task known, oldest first.
    pub fn list(&self) -> Vec<Arc<Task>> {
        let mut all: Vec<_> = self
            .by_id
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by(|a, b| (a.opened_at, &a.id).cmp(&(b.opened_at, &b.id)));
        all
    }

    /// Tasks closed (ended or expired) by `now` whose credentials this process has not
    /// dropped yet, and those closed within [`SETTLE_MS`] (a credential whose issue or
    /// refresh was in flight when the task closed lands in the cache after the first
    /// drop: it is dropped, and revoked, by a later one).
    pub fn take_closed(&self, now: Millis) -> Vec<Arc<Task>> {
        let closed: Vec<_> = self
            .by_id
            .read()
            .map(|m| {
                m.values()
                    .filter(|t| t.closed_at(now).is_some())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let Ok(mut dropped) = self.dropped.lock() else {
            return closed;
        };
        // Forget ids the store no longer returns (past their retention).
        if dropped.len() > 4 * closed.len() + 1024 {
            let known: HashSet<&str> = closed.iter().map(|t| t.id.as_str()).collect();
            dropped.retain(|id| known.contains(id.as_str()));
        }
        closed
            .into_iter()
            .filter(|t| {
                let settling = t
                    .closed_at(now)
                    .is_some_and(|at| now.saturating_sub(at) < SETTLE_MS);
                dropped.insert(t.id.clone()) || settling
            })
            .collect()
    }

    /// How many open tasks `agent` has at `now`.
    pub fn open_count(&self, agent: &str, now: Millis) -> usize {
        self.by_id
            .read()
            .map(|m| {
                m.values()
                    .filter(|t| *t.agent_id == *agent && t.is_open(now))
                    .count()
            })
            .unwrap_or(usize::MAX)
    }

    /// Whether a token minted for `task` may still be used at `now`: only while the task
    /// is known and open (an id this process does not know is not vouched for).
    pub fn is_open(&self, task: &str, now: Millis) -> bool {
        self.get(task).is_some_and(|t| t.is_open(now))
    }

    /// The open task `named` for `agent` at `now`, or the refusal.
    pub fn check(&self, agent: &str, named: &str, now: Millis) -> Result<Arc<Task>, Error> {
        let unknown = || {
            Error::new(
                ErrorKind::TaskUnknown,
                "the task named in Keygate-Task is not one of this agent's tasks",
            )
        };
        let task = self.get(named).ok_or_else(unknown)?;
        if *task.agent_id != *agent {
            return Err(unknown().with_detail(format!("task {named} is another agent's")));
        }
        if let Some(at) = task.closed_at(now) {
            let how = if task.ended_at.is_some() {
                "ended"
            } else {
                "expired"
            };
            return Err(Error::new(
                ErrorKind::TaskEnded,
                format!("task {} {how}; open a new task for further calls", task.id),
            )
            .with_detail(format!("closed at {at}")));
        }
        Ok(task)
    }
}

/// A request to open a task (the admin API's body; the agent's endpoint takes the same
/// without `agent`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Opening {
    /// The agent (admin API only: an agent opens tasks for itself).
    pub agent: Option<String>,
    pub purpose: String,
    pub ticket: Option<String>,
    /// The time limit (`30m`, `2h`); default `tasks.default_ttl`, at most `tasks.max_ttl`.
    pub ttl: Option<String>,
    /// The tools its calls may reach (default: any the policies allow).
    #[serde(default)]
    pub tools: Vec<String>,
    /// The operations its calls may do, by name or tag (default: any).
    #[serde(default)]
    pub operations: Vec<String>,
    /// Who opens it (admin API; recorded).
    pub by: Option<String>,
}

/// A text field of a task: trimmed, at most `max` characters, no control, format
/// (bidi, zero-width) or separator characters (what could mislead a log or a terminal).
pub fn text(field: &str, v: &str, max: usize) -> Result<String, String> {
    let v = v.trim();
    if v.chars().count() > max {
        return Err(format!("{field} is longer than {max} characters"));
    }
    if v.chars().any(crate::admin_client::acts_on_terminal) {
        return Err(format!(
            "{field} holds control, formatting or separator characters"
        ));
    }
    Ok(v.to_string())
}

/// The task `opening` asks for, for `agent`, opened by `opened_by` at `now`; or why it
/// cannot be opened. `known_tool` says whether a tool is configured.
pub fn new_task(
    opening: Opening,
    agent: &str,
    opened_by: &str,
    settings: &crate::config::TaskSettings,
    known_tool: impl Fn(&str) -> bool,
    now: Millis,
) -> Result<Task, String> {
    let opened_by = text("by", opened_by, 200)?;
    if opened_by.is_empty() {
        return Err("by is empty".into());
    }
    let purpose = text("purpose", &opening.purpose, 500)?;
    if purpose.is_empty() {
        return Err("purpose is required: what the task is for".into());
    }
    let ticket = match opening.ticket.as_deref() {
        Some(t) => Some(text("ticket", t, 200)?).filter(|t| !t.is_empty()),
        None => None,
    };
    let ttl = match opening.ttl.as_deref() {
        None => settings.default_ttl,
        Some(t) => humantime::parse_duration(t.trim())
            .map_err(|_| format!("ttl: {t:?} is not a duration such as 30m or 2h"))?,
    };
    if ttl.is_zero() || ttl > settings.max_ttl {
        return Err(format!(
            "ttl must be longer than zero and at most {} (tasks.max_ttl)",
            humantime::format_duration(settings.max_ttl)
        ));
    }
    if let Some(t) = opening.tools.iter().find(|t| !known_tool(t)) {
        return Err(format!("no tool {t:?} in the configuration"));
    }
    let mut operations = Vec::with_capacity(opening.operations.len());
    for o in &opening.operations {
        let o = text("operations", o, 200)?;
        if o.is_empty() {
            return Err("operations holds an empty name".into());
        }
        operations.push(o);
    }
    if opening.tools.len() > 64 || operations.len() > 256 {
        return Err("a task names at most 64 tools and 256 operations".into());
    }
    let ttl_ms = Millis::try_from(ttl.as_millis()).unwrap_or(Millis::MAX);
    Ok(Task {
        id: crate::store::new_task_id(),
        agent_id: agent.to_string(),
        purpose,
        ticket,
        tools: opening.tools,
        operations,
        opened_by,
        opened_at: now,
        expires_at: now.saturating_add(ttl_ms),
        ended_at: None,
        ended_by: None,
    })
}

/// A task as the API shows it: with its state at `now` (`open`, `ended`, `expired`).
pub fn view(task: &Task, now: Millis) -> serde_json::Value {
    let state = if task.ended_at.is_some() {
        "ended"
    } else if now >= task.expires_at {
        "expired"
    } else {
        "open"
    };
    let mut v = serde_json::to_value(task).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("state".into(), state.into());
    }
    v
}

/// The task a request names (`Keygate-Task`), if any: one value, a plausible id.
pub fn named(headers: &http::HeaderMap) -> Result<Option<&str>, Error> {
    let mut values = headers.get_all(&HEADER).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    let bad = |why: &str| {
        Error::new(
            ErrorKind::BadRequest,
            format!("the Keygate-Task header {why}"),
        )
    };
    if values.next().is_some() {
        return Err(bad("is given more than once"));
    }
    let id = v.to_str().map_err(|_| bad("is not a task id"))?.trim();
    if id.is_empty()
        || id.len() > MAX_ID
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(bad("is not a task id"));
    }
    Ok(Some(id))
}

/// Whether `task` lets its calls reach `tool` and do `operation` (by its name or one of
/// its tags); the refusal otherwise.
pub fn in_scope(
    task: &Task,
    tool: &str,
    operation: &crate::routes::Operation,
) -> Result<(), Error> {
    if !task.tools.is_empty() && !task.tools.iter().any(|t| t == tool) {
        return Err(Error::new(
            ErrorKind::TaskOutOfScope,
            format!("task {} does not include the tool {tool:?}", task.id),
        ));
    }
    if !task.operations.is_empty()
        && !task
            .operations
            .iter()
            .any(|o| *o == *operation.name || operation.tags.iter().any(|t| **t == **o))
    {
        return Err(Error::new(
            ErrorKind::TaskOutOfScope,
            format!(
                "task {} does not include the operation {:?}",
                task.id, operation.name
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, agent: &str, expires_at: Millis) -> Task {
        Task {
            id: id.into(),
            agent_id: agent.into(),
            purpose: "p".into(),
            ticket: None,
            tools: vec![],
            operations: vec![],
            opened_by: "agent".into(),
            opened_at: 0,
            expires_at,
            ended_at: None,
            ended_by: None,
        }
    }

    #[test]
    fn a_task_is_only_its_agents_and_only_while_open() {
        let t = Tasks::default();
        assert!(t.set_if_unchanged(vec![task("task_a", "agent-1", 1000)], t.epoch()));
        assert!(t.check("agent-1", "task_a", 999).is_ok());
        assert_eq!(
            t.check("agent-2", "task_a", 10).unwrap_err().kind,
            ErrorKind::TaskUnknown
        );
        assert_eq!(
            t.check("agent-1", "task_b", 10).unwrap_err().kind,
            ErrorKind::TaskUnknown
        );
        assert_eq!(
            t.check("agent-1", "task_a", 1000).unwrap_err().kind,
            ErrorKind::TaskEnded
        );
        let mut ended = task("task_a", "agent-1", 1000);
        ended.ended_at = Some(500);
        t.put(ended);
        assert_eq!(
            t.check("agent-1", "task_a", 600).unwrap_err().kind,
            ErrorKind::TaskEnded
        );
        assert!(!t.is_open("task_a", 600));
        // Closed tasks are handed out to drop their credentials, until they settle.
        assert_eq!(t.take_closed(600).len(), 1);
        assert!(t.take_closed(500 + SETTLE_MS).is_empty());
    }

    #[test]
    fn a_read_of_the_store_never_reopens_an_ended_task() {
        let t = Tasks::default();
        let mut ended = task("task_a", "agent-1", 10_000);
        ended.ended_at = Some(100);
        t.put(ended);
        // A read that began before the end (but was applied: say it began after the
        // epoch it names): the task as it was, open.
        assert!(t.set_if_unchanged(vec![task("task_a", "agent-1", 10_000)], t.epoch()));
        assert!(!t.is_open("task_a", 200));
        assert_eq!(
            t.check("agent-1", "task_a", 200).unwrap_err().kind,
            ErrorKind::TaskEnded
        );
    }

    /// A read of the store that began before a task was opened here is not applied: it
    /// would forget the task (seen: an agent's first call in a task an administrator had
    /// just opened got `task_unknown` on a loaded machine).
    #[test]
    fn a_read_that_began_before_an_opening_does_not_forget_it() {
        let t = Tasks::default();
        let before = t.epoch();
        t.put(task("task_new", "agent-1", 10_000));
        assert!(
            !t.set_if_unchanged(Vec::new(), before),
            "a stale read applied"
        );
        assert!(t.check("agent-1", "task_new", 10).is_ok());
        // Read again: applied.
        assert!(t.set_if_unchanged(vec![task("task_new", "agent-1", 10_000)], t.epoch()));
        assert!(t.check("agent-1", "task_new", 10).is_ok());
    }

    #[test]
    fn a_closed_tasks_credentials_are_dropped_again_while_it_settles() {
        let t = Tasks::default();
        let mut ended = task("task_a", "agent-1", 10_000_000);
        ended.ended_at = Some(1_000);
        t.put(ended);
        assert_eq!(t.take_closed(1_000).len(), 1);
        // Within the settling time: handed out again (a credential whose issue was in
        // flight lands after the first drop).
        assert_eq!(t.take_closed(1_000 + SETTLE_MS - 1).len(), 1);
        assert!(t.take_closed(1_000 + SETTLE_MS).is_empty());
    }

    #[test]
    fn text_that_could_mislead_a_log_is_refused() {
        for bad in ["a\u{202e}b", "a\u{2028}b", "a\u{200b}b", "a\nb"] {
            assert!(text("purpose", bad, 100).is_err(), "{bad:?}");
        }
        assert_eq!(text("purpose", "  fine text ", 100).unwrap(), "fine text");
        assert!(text("purpose", &"x".repeat(101), 100).is_err());
    }

    #[test]
    fn the_header_names_one_plausible_id() {
        let mut h = http::HeaderMap::new();
        assert_eq!(named(&h).unwrap(), None);
        h.insert(HEADER, "task_0123abcd".parse().unwrap());
        assert_eq!(named(&h).unwrap(), Some("task_0123abcd"));
        h.append(HEADER, "task_other".parse().unwrap());
        assert!(named(&h).is_err());
        for bad in ["", "a b", "x/y", &"a".repeat(65)] {
            let mut h = http::HeaderMap::new();
            h.insert(HEADER, bad.parse().unwrap());
            assert!(named(&h).is_err(), "{bad:?}");
        }
    }
}

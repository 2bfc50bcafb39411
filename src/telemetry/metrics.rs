//! Prometheus metrics: a small fixed registry of counters, one histogram and gauges,
//! rendered in the text exposition format (version 0.0.4) by the admin API's `/metrics`.
//!
//! One [`Metrics`] per [`Runtime`](crate::gateway::Runtime), held in
//! [`Shared`](crate::gateway::Shared), so it survives reloads and two gateways in one
//! process (tests) count apart.
//!
//! Labels are low-cardinality only: tool names (from the configuration), decisions, status
//! codes, credential provider kinds. Never an agent id, a path or a credential id.
//!
//! Cost on the request path: fixed series are plain atomics. The per-tool series (request
//! counts by decision and status, the duration histogram) sit in a map behind a read-write
//! lock that is only written the first time a tool, or a status code of a tool, is seen;
//! a request takes two read locks, one hash lookup of the tool name, one of the status, and
//! a few relaxed atomic additions.

use crate::locks::{read, write};
pub use crate::store::ApprovalCounts;
use crate::telemetry::record::Decision;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Upper bounds of the request-duration buckets, in seconds (a `+Inf` bucket follows).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// [`DURATION_BUCKETS`] in nanoseconds, for the comparison on the request path.
const BUCKET_NANOS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// The decisions, in label order; indexes the per-status counters.
const DECISIONS: [Decision; 5] = [
    Decision::Allow,
    Decision::Deny,
    Decision::Error,
    Decision::Local,
    Decision::NeedsApproval,
];

fn decision_index(d: Decision) -> usize {
    match d {
        Decision::Allow => 0,
        Decision::Deny => 1,
        Decision::Error => 2,
        Decision::Local => 3,
        Decision::NeedsApproval => 4,
    }
}

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The series of one tool (`""`: requests that reached no tool).
#[derive(Default)]
struct ToolSeries {
    /// Requests by status code, then by decision ([`DECISIONS`] order).
    by_status: RwLock<HashMap<u16, [AtomicU64; 5], crate::FastHash>>,
    /// Request durations: one count per bucket (not cumulative), the last one `+Inf`.
    buckets: [AtomicU64; 15],
    sum_nanos: AtomicU64,
}

/// Successes and failures of one credential provider.
#[derive(Default)]
struct ProviderSeries {
    issued: AtomicU64,
    failed: AtomicU64,
}

/// The registry. Cheap to update from any thread; [`Metrics::render`] reads it.
#[derive(Default)]
pub struct Metrics {
    tools: RwLock<HashMap<Arc<str>, ToolSeries, crate::FastHash>>,
    providers: RwLock<HashMap<&'static str, ProviderSeries, crate::FastHash>>,
    approvals_requested: AtomicU64,
    approvals_approved: AtomicU64,
    approvals_denied: AtomicU64,
    token_cache_hits: AtomicU64,
    token_cache_misses: AtomicU64,
    token_refused_again: AtomicU64,
    spans_dropped: AtomicU64,
    audit_records: AtomicU64,
    audit_refusals: AtomicU64,
    webhook_sent: AtomicU64,
    webhook_dropped: AtomicU64,
    hold_rechecks: AtomicU64,
}

impl ToolSeries {
    fn observe(&self, decision: Decision, status: u16, duration: Duration) {
        let d = decision_index(decision);
        let counted = read(&self.by_status)
            .get(&status)
            .map(|c| c[d].fetch_add(1, Relaxed))
            .is_some();
        if !counted {
            write(&self.by_status).entry(status).or_default()[d].fetch_add(1, Relaxed);
        }
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        // The first bucket whose bound is >= the duration (`le` is inclusive); 14 is +Inf.
        let i = BUCKET_NANOS.partition_point(|&b| b < nanos);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// One finished request: `keygate_requests_total` and
    /// `keygate_request_duration_seconds`. `tool` is `""` when the request reached none.
    pub fn request(&self, tool: &str, decision: Decision, status: u16, duration: Duration) {
        if let Some(series) = read(&self.tools).get(tool) {
            series.observe(decision, status, duration);
            return;
        }
        write(&self.tools)
            .entry(Arc::from(tool))
            .or_default()
            .observe(decision, status, duration);
    }

    /// A new approval was requested (a pending approval created, not a retry's).
    pub fn approval_requested(&self) {
        self.approvals_requested.fetch_add(1, Relaxed);
    }

    /// A human approved (`true`) or denied (`false`) an approval.
    pub fn approval_decided(&self, approved: bool) {
        let c = if approved {
            &self.approvals_approved
        } else {
            &self.approvals_denied
        };
        c.fetch_add(1, Relaxed);
    }

    /// A credential provider issued a credential (`true`) or could not (`false`).
    pub fn credential(&self, provider: &'static str, issued: bool) {
        let bump = |p: &ProviderSeries| {
            let c = if issued { &p.issued } else { &p.failed };
            c.fetch_add(1, Relaxed);
        };
        if let Some(p) = read(&self.providers).get(provider) {
            bump(p);
            return;
        }
        bump(write(&self.providers).entry(provider).or_default());
    }

    /// A token was found in the verified-token cache (`true`) or verified cold (`false`).
    pub fn token_cache(&self, hit: bool) {
        let c = if hit {
            &self.token_cache_hits
        } else {
            &self.token_cache_misses
        };
        c.fetch_add(1, Relaxed);
    }

    /// A token that failed verification moments ago was refused again without a check.
    pub fn token_refused_again(&self) {
        self.token_refused_again.fetch_add(1, Relaxed);
    }

    /// Spans the (coming) OTLP exporter had to drop.
    pub fn spans_dropped(&self, n: u64) {
        self.spans_dropped.fetch_add(n, Relaxed);
    }

    /// An audit record was queued for the audit log.
    pub fn audit_record(&self) {
        self.audit_records.fetch_add(1, Relaxed);
    }

    /// A held request read its approval again (woken by a decision, or the slow re-check).
    pub fn hold_recheck(&self) {
        self.hold_rechecks.fetch_add(1, Relaxed);
    }

    /// A request was refused because the audit log could not be written.
    pub fn audit_refusal(&self) {
        self.audit_refusals.fetch_add(1, Relaxed);
    }

    /// An approval webhook notification was sent (`true`) or dropped by the rate limit.
    pub fn webhook_notification(&self, sent: bool) {
        let c = if sent {
            &self.webhook_sent
        } else {
            &self.webhook_dropped
        };
        c.fetch_add(1, Relaxed);
    }

    /// The exposition, text format 0.0.4. `approvals` (counts by status) is read from the
    /// store by the caller; `None` (the store did not answer) leaves those gauges without
    /// a sample.
    pub fn render(&self, approvals: Option<&ApprovalCounts>, audit: AuditQueueStats) -> String {
        let mut out = String::with_capacity(4096);
        family(
            &mut out,
            "keygate_build_info",
            "gauge",
            "Always 1; the version of keygate running.",
        );
        let _ = writeln!(
            out,
            "keygate_build_info{{version=\"{}\"}} 1",
            escape(env!("CARGO_PKG_VERSION"))
        );

        // Per-tool series, tools and status codes sorted for a stable output.
        let tools = read(&self.tools);
        let mut names: Vec<&Arc<str>> = tools.keys().collect();
        names.sort();
        family(
            &mut out,
            "keygate_requests_total",
            "counter",
            "Requests handled on the data plane, by tool (empty: none), decision and status.",
        );
        for name in &names {
            let by_status = read(&tools[*name].by_status);
            let mut statuses: Vec<(&u16, &[AtomicU64; 5])> = by_status.iter().collect();
            statuses.sort_by_key(|(s, _)| **s);
            for (status, counts) in statuses {
                for (d, c) in DECISIONS.iter().zip(counts) {
                    let n = c.load(Relaxed);
                    if n > 0 {
                        let _ = writeln!(
                            out,
                            "keygate_requests_total{{tool=\"{}\",decision=\"{}\",status=\"{status}\"}} {n}",
                            escape(name),
                            d.as_str()
                        );
                    }
                }
            }
        }
        family(
            &mut out,
            "keygate_request_duration_seconds",
            "histogram",
            "Time from a request's arrival to the end of its response body, by tool.",
        );
        for name in &names {
            let s = &tools[*name];
            let tool = escape(name);
            let mut cumulative = 0u64;
            for (i, c) in s.buckets.iter().enumerate() {
                cumulative += c.load(Relaxed);
                let le = match DURATION_BUCKETS.get(i) {
                    Some(b) => b.to_string(),
                    None => "+Inf".to_string(),
                };
                let _ = writeln!(
                    out,
                    "keygate_request_duration_seconds_bucket{{tool=\"{tool}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let sum = s.sum_nanos.load(Relaxed) as f64 / 1e9;
            let _ = writeln!(
                out,
                "keygate_request_duration_seconds_sum{{tool=\"{tool}\"}} {sum}"
            );
            // The count is the +Inf bucket, so the two agree even while requests finish.
            let _ = writeln!(
                out,
                "keygate_request_duration_seconds_count{{tool=\"{tool}\"}} {cumulative}"
            );
        }
        drop(tools);

        family(
            &mut out,
            "keygate_approvals_requested_total",
            "counter",
            "Approvals requested: identity-creating calls held for a human's decision.",
        );
        let _ = writeln!(
            out,
            "keygate_approvals_requested_total {}",
            self.approvals_requested.load(Relaxed)
        );
        family(
            &mut out,
            "keygate_approvals_decided_total",
            "counter",
            "Approvals decided through this process's admin API, by decision.",
        );
        for (d, c) in [
            ("approved", &self.approvals_approved),
            ("denied", &self.approvals_denied),
        ] {
            let _ = writeln!(
                out,
                "keygate_approvals_decided_total{{decision=\"{d}\"}} {}",
                c.load(Relaxed)
            );
        }
        family(
            &mut out,
            "keygate_approvals_pending",
            "gauge",
            "Approvals waiting for a human's decision, read from the store at scrape time.",
        );
        if let Some(a) = approvals {
            let _ = writeln!(out, "keygate_approvals_pending {}", a.pending);
        }
        family(
            &mut out,
            "keygate_approvals",
            "gauge",
            "Approvals in the store by status, counted at scrape time (pending: not expired).",
        );
        if let Some(a) = approvals {
            for (status, n) in &a.by_status {
                let _ = writeln!(
                    out,
                    "keygate_approvals{{status=\"{}\"}} {n}",
                    escape(status)
                );
            }
        }
        family(
            &mut out,
            "keygate_approval_hold_rechecks_total",
            "counter",
            "Store reads by held requests after their first: one per decision signal or slow re-check.",
        );
        let _ = writeln!(
            out,
            "keygate_approval_hold_rechecks_total {}",
            self.hold_rechecks.load(Relaxed)
        );
        family(
            &mut out,
            "keygate_webhook_notifications_total",
            "counter",
            "Approval webhook notifications: sent, or dropped by approvals.webhook_max_per_minute.",
        );
        for (r, c) in [
            ("sent", &self.webhook_sent),
            ("dropped", &self.webhook_dropped),
        ] {
            let _ = writeln!(
                out,
                "keygate_webhook_notifications_total{{result=\"{r}\"}} {}",
                c.load(Relaxed)
            );
        }

        let providers = read(&self.providers);
        let mut kinds: Vec<(&&'static str, &ProviderSeries)> = providers.iter().collect();
        kinds.sort_by_key(|(k, _)| **k);
        family(
            &mut out,
            "keygate_credentials_issued_total",
            "counter",
            "Credentials issued for calls, by provider kind.",
        );
        for (k, p) in &kinds {
            let _ = writeln!(
                out,
                "keygate_credentials_issued_total{{provider=\"{}\"}} {}",
                escape(k),
                p.issued.load(Relaxed)
            );
        }
        family(
            &mut out,
            "keygate_credential_failures_total",
            "counter",
            "Calls failed because the provider could not issue a credential, by provider kind.",
        );
        for (k, p) in &kinds {
            let _ = writeln!(
                out,
                "keygate_credential_failures_total{{provider=\"{}\"}} {}",
                escape(k),
                p.failed.load(Relaxed)
            );
        }
        drop(providers);

        family(
            &mut out,
            "keygate_token_cache_requests_total",
            "counter",
            "Agent tokens looked up in the verified-token cache: hit, miss (verified cold), or refused (failed verification moments ago; refused without a check).",
        );
        for (r, c) in [
            ("hit", &self.token_cache_hits),
            ("miss", &self.token_cache_misses),
            ("refused", &self.token_refused_again),
        ] {
            let _ = writeln!(
                out,
                "keygate_token_cache_requests_total{{result=\"{r}\"}} {}",
                c.load(Relaxed)
            );
        }
        for (name, help, c) in [
            (
                "keygate_audit_records_total",
                "Audit records queued for the audit log (one per request).",
                &self.audit_records,
            ),
            (
                "keygate_spans_dropped_total",
                "Trace spans dropped by the span exporter.",
                &self.spans_dropped,
            ),
        ] {
            family(&mut out, name, "counter", help);
            let mut v = c.load(Relaxed);
            if name == "keygate_spans_dropped_total" {
                // The span exporter is process-wide.
                v += crate::telemetry::otel::dropped_spans();
            }
            let _ = writeln!(out, "{name} {v}");
        }
        family(
            &mut out,
            "keygate_audit_backpressure_waits_total",
            "counter",
            "Requests that waited before being served because the audit writer was behind.",
        );
        let _ = writeln!(
            out,
            "keygate_audit_backpressure_waits_total {}",
            audit.waits
        );
        family(
            &mut out,
            "keygate_audit_queue_depth",
            "gauge",
            "Audit records queued and not yet written.",
        );
        let _ = writeln!(out, "keygate_audit_queue_depth {}", audit.depth);
        family(
            &mut out,
            "keygate_audit_write_failures_total",
            "counter",
            "Writes to the audit log that failed (each retry counts).",
        );
        let _ = writeln!(
            out,
            "keygate_audit_write_failures_total {}",
            audit.write_failures
        );
        family(
            &mut out,
            "keygate_audit_writing",
            "gauge",
            "1 while the audit log is being written; 0 while writes fail (requests are refused \
             when audit.fail_closed is on).",
        );
        let _ = writeln!(out, "keygate_audit_writing {}", u8::from(audit.writing));
        family(
            &mut out,
            "keygate_audit_unavailable_refusals_total",
            "counter",
            "Requests refused with audit_unavailable because the audit log could not be written.",
        );
        let _ = writeln!(
            out,
            "keygate_audit_unavailable_refusals_total {}",
            self.audit_refusals.load(Relaxed)
        );
        out
    }
}

/// The audit writer's queue, as the metrics endpoint shows it.
#[derive(Debug, Default, Clone, Copy)]
pub struct AuditQueueStats {
    /// Requests that waited for the writer ([`crate::telemetry::audit_log::AuditLog::admit`]).
    pub waits: u64,
    /// Records queued and not yet written.
    pub depth: usize,
    /// Failed write attempts.
    pub write_failures: u64,
    /// Whether the last write succeeded.
    pub writing: bool,
}

/// The `# HELP` and `# TYPE` lines of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value escaped for the text format: backslash, double quote, newline.
fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(v);
    }
    let mut s = String::with_capacity(v.len() + 2);
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    std::borrow::Cow::Owned(s)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn buckets_are_inclusive_and_cumulative() {
        let m = Metrics::new();
        for ms in [0.1, 0.5, 0.6, 1000.0, 20_000.0] {
            m.request("t", Decision::Allow, 200, Duration::from_secs_f64(ms / 1e3));
        }
        let text = m.render(Some(&ApprovalCounts::default()), AuditQueueStats::default());
        // 0.1 ms and exactly 0.5 ms fall in le=0.0005; 0.6 ms in le=0.001; 1 s in le=1;
        // 20 s only in +Inf.
        for (le, n) in [
            ("0.0005", 2),
            ("0.001", 3),
            ("0.5", 3),
            ("1", 4),
            ("10", 4),
            ("+Inf", 5),
        ] {
            let line =
                format!("keygate_request_duration_seconds_bucket{{tool=\"t\",le=\"{le}\"}} {n}\n");
            assert!(text.contains(&line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("keygate_request_duration_seconds_count{tool=\"t\"} 5\n"));
        assert!(text
            .contains("keygate_requests_total{tool=\"t\",decision=\"allow\",status=\"200\"} 5\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.request("a\"b\\c\nd", Decision::Deny, 403, Duration::ZERO);
        let text = m.render(None, AuditQueueStats::default());
        assert!(text.contains(r#"tool="a\"b\\c\nd",decision="deny",status="403"} 1"#));
        assert!(!text.contains("\nkeygate_approvals_pending "));
    }
}

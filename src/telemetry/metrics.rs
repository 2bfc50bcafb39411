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
//! Cost on the request path: fixed series are plain atomics. The per-tool series (request counts by decision and status, the duration
//! histogram) sit in a map behind a read-write lock that is only written the first time a
//! tool, or a status code of a tool, is seen; a request takes two read locks, one hash
//! lookup of the tool name, one of the status, and a few relaxed atomic additions. They are
//! all kept here rather than in prometheus-client's metric types because those would cost
//! more per request: its `Counter` is an `Arc` (one more pointer to follow), a `Family`
//! lookup needs an owned label set (an allocation for the tool name) and its `Histogram`
//! takes a mutex on every observation.
//!
//! The exposition is prometheus-client's: at scrape time a [`Collector`] reads the atomics
//! and its text encoder ([`prometheus_text`]) writes the families (names, `_total` and
//! histogram suffixes, label escaping, bucket bounds).

use crate::locks::{read, write};
pub use crate::store::ApprovalCounts;
use crate::telemetry::record::Decision;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
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
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

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
    /// Rounds of sharing `shared` rate limit counts through the store: done, failed.
    limit_shares: AtomicU64,
    limit_share_failures: AtomicU64,
    /// Secret formats found in responses, by (tool, format, action).
    response_secrets:
        std::sync::Mutex<std::collections::BTreeMap<(String, &'static str, &'static str), u64>>,
    /// Secrets captured from identity-creation answers, by tool.
    captured: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Calls refused by a rate limit, by tool.
    rate_limited: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Anomalies detected, by detector and action.
    anomalies: std::sync::Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
    /// By tool: the shadow identities the last reconcile found, and the inventory records
    /// reconciles retired.
    reconciled: std::sync::Mutex<std::collections::BTreeMap<String, Reconciled>>,
    /// By tool: what the last retirement pass counted, and its failures (counted).
    retirement: std::sync::Mutex<std::collections::BTreeMap<String, Retirement>>,
}

/// The states of an inventory record a retirement pass counts.
pub const RETIRE_STATES: [&str; 4] = ["active", "overdue", "deactivated", "retired"];

/// What retirement passes of one tool found.
#[derive(Default, Clone, Copy)]
struct Retirement {
    /// Records by state ([`RETIRE_STATES`]), as the last pass found them.
    states: [u64; 4],
    /// Live records past their review date, as the last pass found them.
    overdue: u64,
    failures: u64,
}

/// What reconciles of one tool found.
#[derive(Default, Clone, Copy)]
struct Reconciled {
    shadow: u64,
    retired: u64,
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
    /// Secret formats found in one response (`count` of `format`), and what was done.
    pub fn response_secret(
        &self,
        tool: &str,
        format: &'static str,
        action: &'static str,
        count: u64,
    ) {
        if let Ok(mut m) = self.response_secrets.lock() {
            *m.entry((tool.to_string(), format, action)).or_default() += count;
        }
    }

    /// Secrets an identity-creation answer carried that keygate captured.
    pub fn captured(&self, tool: &str, count: u64) {
        if let Ok(mut m) = self.captured.lock() {
            *m.entry(tool.to_string()).or_default() += count;
        }
    }

    /// A call to `tool` was refused by a rate limit.
    pub fn rate_limited(&self, tool: &str) {
        if let Ok(mut m) = self.rate_limited.lock() {
            match m.get_mut(tool) {
                Some(n) => *n += 1,
                None => {
                    m.insert(tool.to_string(), 1);
                }
            }
        }
    }

    /// A detector fired, and what keygate did.
    pub fn anomaly(&self, detector: &'static str, action: &'static str) {
        if let Ok(mut m) = self.anomalies.lock() {
            *m.entry((detector, action)).or_default() += 1;
        }
    }

    /// A reconcile of `tool` finished: it found `shadow` identities keygate does not know
    /// (a gauge: the last reconcile's) and retired `retired` inventory records (counted).
    pub fn reconciled(&self, tool: &str, shadow: u64, retired: u64) {
        if let Ok(mut m) = self.reconciled.lock() {
            let r = m.entry(tool.to_string()).or_default();
            r.shadow = shadow;
            r.retired += retired;
        }
    }

    /// A retirement pass of `tool` counted its records by state ([`RETIRE_STATES`]) and
    /// the live ones past their review date (gauges: the last pass's), and `failures`
    /// steps failed (counted).
    pub fn retirement(&self, tool: &str, states: [u64; 4], overdue: u64, failures: u64) {
        if let Ok(mut m) = self.retirement.lock() {
            let r = m.entry(tool.to_string()).or_default();
            r.states = states;
            r.overdue = overdue;
            r.failures += failures;
        }
    }

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

    /// A round of sharing rate limit counts through the store: done, or failed.
    pub fn limit_share(&self, ok: bool) {
        let c = if ok {
            &self.limit_shares
        } else {
            &self.limit_share_failures
        };
        c.fetch_add(1, Relaxed);
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
    pub fn render(
        self: &Arc<Self>,
        approvals: Option<&ApprovalCounts>,
        audit: AuditQueueStats,
    ) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape {
            metrics: Arc::clone(self),
            approvals: approvals.cloned(),
            audit,
        }));
        let mut out = String::with_capacity(8192);
        // Writing to a String fails only if a collector fails, and `Scrape` fails only if
        // the encoder does: nothing to report but what was written.
        let _ = prometheus_text::encode(&mut out, &registry);
        out
    }
}

/// One scrape: the live series and what the caller read at scrape time.
struct Scrape {
    metrics: Arc<Metrics>,
    approvals: Option<ApprovalCounts>,
    audit: AuditQueueStats,
}

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

/// The labels of one sample, in the order they are written.
type Labels<'a, const N: usize> = [(&'static str, &'a str); N];

/// A family of one metric type: its `# HELP` and `# TYPE` lines, then one sample per
/// label set. The encoder adds the type's suffix to `name` (`_total` for a counter, `_info`
/// for an info).
fn family<'a, S: EncodeLabelSet + 'a, M: EncodeMetric + 'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (S, M)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in samples {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A counter family without labels.
fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    ConstCounter::new(v).encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// A gauge family without labels; no sample when `v` is `None`.
fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: Option<u64>,
) -> Result<(), std::fmt::Error> {
    let family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    match v {
        Some(v) => ConstGauge::new(v).encode(family),
        None => Ok(()),
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &*self.metrics;
        let enc = &mut encoder;
        enc.encode_descriptor(
            "keygate_build",
            "Always 1; the version of keygate running.",
            None,
            MetricType::Info,
        )?
        .encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;

        // Per-tool series, tools and status codes sorted for a stable output.
        let tools = read(&s.tools);
        let mut names: Vec<&Arc<str>> = tools.keys().collect();
        names.sort();
        let mut requests: Vec<(&str, &'static str, u16, u64)> = Vec::new();
        for name in &names {
            let by_status = read(&tools[*name].by_status);
            let mut statuses: Vec<(&u16, &[AtomicU64; 5])> = by_status.iter().collect();
            statuses.sort_by_key(|(s, _)| **s);
            for (status, counts) in statuses {
                for (d, c) in DECISIONS.iter().zip(counts) {
                    let n = c.load(Relaxed);
                    if n > 0 {
                        requests.push((name, d.as_str(), *status, n));
                    }
                }
            }
        }
        let statuses: Vec<String> = requests.iter().map(|r| r.2.to_string()).collect();
        family(
            enc,
            "keygate_requests",
            "Requests handled on the data plane, by tool (empty: none), decision and status.",
            MetricType::Counter,
            requests
                .iter()
                .zip(&statuses)
                .map(|((tool, d, _, n), status)| {
                    let labels: Labels<3> = [("tool", tool), ("decision", d), ("status", status)];
                    (labels, ConstCounter::new(*n))
                }),
        )?;

        let mut durations = enc.encode_descriptor(
            "keygate_request_duration_seconds",
            "Time from a request's arrival to the end of its response body, by tool.",
            None,
            MetricType::Histogram,
        )?;
        for name in &names {
            let series = &tools[*name];
            let mut buckets = [(f64::INFINITY, 0u64); 15];
            for ((bucket, bound), c) in buckets
                .iter_mut()
                .zip(DURATION_BUCKETS.iter().chain([&f64::INFINITY]))
                .zip(&series.buckets)
            {
                *bucket = (*bound, c.load(Relaxed));
            }
            // The count is the +Inf bucket, so the two agree even while requests finish.
            let count = buckets.iter().map(|(_, n)| n).sum();
            let sum = series.sum_nanos.load(Relaxed) as f64 / 1e9;
            let labels: Labels<1> = [("tool", name)];
            durations.encode_family(&labels)?.encode_histogram(
                sum,
                count,
                &buckets,
                None::<&HashMap<usize, Exemplar<NoLabelSet, f64>>>,
            )?;
        }
        drop(tools);

        counter(
            enc,
            "keygate_approvals_requested",
            "Approvals requested: identity-creating calls held for a human's decision.",
            s.approvals_requested.load(Relaxed),
        )?;
        family(
            enc,
            "keygate_approvals_decided",
            "Approvals decided through this process's admin API, by decision.",
            MetricType::Counter,
            [
                (
                    [("decision", "approved")],
                    ConstCounter::new(s.approvals_approved.load(Relaxed)),
                ),
                (
                    [("decision", "denied")],
                    ConstCounter::new(s.approvals_denied.load(Relaxed)),
                ),
            ],
        )?;
        gauge(
            enc,
            "keygate_approvals_pending",
            "Approvals waiting for a human's decision, read from the store at scrape time.",
            self.approvals.as_ref().map(|a| a.pending),
        )?;
        family(
            enc,
            "keygate_approvals",
            "Approvals in the store by status, counted at scrape time (pending: not expired).",
            MetricType::Gauge,
            self.approvals
                .iter()
                .flat_map(|a| &a.by_status)
                .map(|(status, n)| {
                    let labels: Labels<1> = [("status", status)];
                    (labels, ConstGauge::new(*n))
                }),
        )?;
        counter(
            enc,
            "keygate_approval_hold_rechecks",
            "Store reads by held requests after their first: one per decision signal or slow re-check.",
            s.hold_rechecks.load(Relaxed),
        )?;
        family(
            enc,
            "keygate_rate_limit_shares",
            "Rounds of sharing shared rate limits' counts through the store: ok, or failed (each replica then holds to its share).",
            MetricType::Counter,
            [
                (
                    [("result", "ok")],
                    ConstCounter::new(s.limit_shares.load(Relaxed)),
                ),
                (
                    [("result", "failed")],
                    ConstCounter::new(s.limit_share_failures.load(Relaxed)),
                ),
            ],
        )?;
        family(
            enc,
            "keygate_webhook_notifications",
            "Approval webhook notifications: sent, or dropped by approvals.webhook_max_per_minute.",
            MetricType::Counter,
            [
                (
                    [("result", "sent")],
                    ConstCounter::new(s.webhook_sent.load(Relaxed)),
                ),
                (
                    [("result", "dropped")],
                    ConstCounter::new(s.webhook_dropped.load(Relaxed)),
                ),
            ],
        )?;

        let providers = read(&s.providers);
        let mut kinds: Vec<(&&'static str, &ProviderSeries)> = providers.iter().collect();
        kinds.sort_by_key(|(k, _)| **k);
        family(
            enc,
            "keygate_credentials_issued",
            "Credentials issued for calls, by provider kind.",
            MetricType::Counter,
            kinds.iter().map(|(k, p)| {
                (
                    [("provider", **k)],
                    ConstCounter::new(p.issued.load(Relaxed)),
                )
            }),
        )?;
        let found: Vec<((String, &'static str, &'static str), u64)> = s
            .response_secrets
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        family(
            enc,
            "keygate_response_secrets",
            "Known secret formats found in tool responses, by tool, format and action (redacted, blocked, passed).",
            MetricType::Counter,
            found.iter().map(|((tool, format, action), v)| {
                (
                    [("tool", tool.as_str()), ("format", *format), ("action", *action)],
                    ConstCounter::new(*v),
                )
            }),
        )?;
        let captured: Vec<(String, u64)> = s
            .captured
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        family(
            enc,
            "keygate_captured_secrets",
            "Secrets returned by identity-creation calls that keygate sealed (the agent got a handle), by tool.",
            MetricType::Counter,
            captured
                .iter()
                .map(|(tool, v)| ([("tool", tool.as_str())], ConstCounter::new(*v))),
        )?;
        let limited: Vec<(String, u64)> = s
            .rate_limited
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        family(
            enc,
            "keygate_rate_limited",
            "Calls refused with 429 rate_limited by a [[rate_limits]] entry, by tool.",
            MetricType::Counter,
            limited
                .iter()
                .map(|(tool, v)| ([("tool", tool.as_str())], ConstCounter::new(*v))),
        )?;
        let anomalies: Vec<((&'static str, &'static str), u64)> = s
            .anomalies
            .lock()
            .map(|m| m.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default();
        family(
            enc,
            "keygate_anomalies",
            "Anomalies the detectors found in agents' calls, by detector and the action taken.",
            MetricType::Counter,
            anomalies.iter().map(|((detector, action), v)| {
                (
                    [("detector", *detector), ("action", *action)],
                    ConstCounter::new(*v),
                )
            }),
        )?;
        let reconciled: Vec<(String, Reconciled)> = s
            .reconciled
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        family(
            enc,
            "keygate_inventory_shadow_identities",
            "Identities that exist at the tool but not in the inventory (created around keygate), as the last reconcile of the tool found them.",
            MetricType::Gauge,
            reconciled
                .iter()
                .map(|(tool, r)| ([("tool", tool.as_str())], ConstGauge::new(r.shadow))),
        )?;
        family(
            enc,
            "keygate_inventory_retired",
            "Inventory records retired by reconciles because the identity no longer exists at the tool, by tool.",
            MetricType::Counter,
            reconciled
                .iter()
                .map(|(tool, r)| ([("tool", tool.as_str())], ConstCounter::new(r.retired))),
        )?;
        let retirement: Vec<(String, Retirement)> = s
            .retirement
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        family(
            enc,
            "keygate_inventory_identities",
            "Inventory records of the keys a retirement pass retires (AWS access keys, GitHub deploy keys) by state (active, overdue, deactivated, retired), as the last retirement pass of the tool found them.",
            MetricType::Gauge,
            retirement.iter().flat_map(|(tool, r)| {
                RETIRE_STATES.iter().zip(r.states).map(move |(state, v)| {
                    ([("tool", tool.as_str()), ("state", *state)], ConstGauge::new(v))
                })
            }),
        )?;
        family(
            enc,
            "keygate_inventory_overdue_reviews",
            "Live inventory records past their review date, as the last retirement pass of the tool found them.",
            MetricType::Gauge,
            retirement
                .iter()
                .map(|(tool, r)| ([("tool", tool.as_str())], ConstGauge::new(r.overdue))),
        )?;
        family(
            enc,
            "keygate_inventory_retire_failures",
            "Retirement steps (notify, deactivate, delete) that failed and are retried at the next pass, by tool.",
            MetricType::Counter,
            retirement
                .iter()
                .map(|(tool, r)| ([("tool", tool.as_str())], ConstCounter::new(r.failures))),
        )?;
        family(
            enc,
            "keygate_credential_failures",
            "Calls failed because the provider could not issue a credential, by provider kind.",
            MetricType::Counter,
            kinds.iter().map(|(k, p)| {
                (
                    [("provider", **k)],
                    ConstCounter::new(p.failed.load(Relaxed)),
                )
            }),
        )?;
        drop(providers);

        family(
            enc,
            "keygate_token_cache_requests",
            "Agent tokens looked up in the verified-token cache: hit, miss (verified cold), or refused (failed verification moments ago; refused without a check).",
            MetricType::Counter,
            [
                ([("result", "hit")], ConstCounter::new(s.token_cache_hits.load(Relaxed))),
                ([("result", "miss")], ConstCounter::new(s.token_cache_misses.load(Relaxed))),
                ([("result", "refused")], ConstCounter::new(s.token_refused_again.load(Relaxed))),
            ],
        )?;
        counter(
            enc,
            "keygate_audit_records",
            "Audit records queued for the audit log (one per request).",
            s.audit_records.load(Relaxed),
        )?;
        counter(
            enc,
            "keygate_spans_dropped",
            "Trace spans dropped by the span exporter.",
            // The span exporter is process-wide.
            s.spans_dropped.load(Relaxed) + crate::telemetry::otel::dropped_spans(),
        )?;
        let audit = &self.audit;
        counter(
            enc,
            "keygate_audit_backpressure_waits",
            "Requests that waited before being served because the audit writer was behind.",
            audit.waits,
        )?;
        gauge(
            enc,
            "keygate_audit_queue_depth",
            "Audit records queued and not yet written.",
            Some(u64::try_from(audit.depth).unwrap_or(u64::MAX)),
        )?;
        counter(
            enc,
            "keygate_audit_write_failures",
            "Writes to the audit log that failed (each retry counts).",
            audit.write_failures,
        )?;
        gauge(
            enc,
            "keygate_audit_writing",
            "1 while the audit log is being written; 0 while writes fail (requests are refused \
             when audit.fail_closed is on).",
            Some(u64::from(audit.writing)),
        )?;
        counter(
            enc,
            "keygate_audit_unavailable_refusals",
            "Requests refused with audit_unavailable because the audit log could not be written.",
            s.audit_refusals.load(Relaxed),
        )
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn buckets_are_inclusive_and_cumulative() {
        let m = Arc::new(Metrics::new());
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
    fn retirement_passes_set_the_state_gauges_and_add_to_the_failures() {
        let m = Arc::new(Metrics::new());
        let text = m.render(None, AuditQueueStats::default());
        assert!(!text.contains("keygate_inventory_identities{"), "{text}");
        m.retirement("aws", [4, 3, 2, 1], 5, 2);
        m.retirement("aws", [5, 0, 3, 2], 1, 1);
        let text = m.render(None, AuditQueueStats::default());
        for line in [
            "# TYPE keygate_inventory_identities gauge\n",
            "keygate_inventory_identities{tool=\"aws\",state=\"active\"} 5\n",
            "keygate_inventory_identities{tool=\"aws\",state=\"overdue\"} 0\n",
            "keygate_inventory_identities{tool=\"aws\",state=\"deactivated\"} 3\n",
            "keygate_inventory_identities{tool=\"aws\",state=\"retired\"} 2\n",
            "# TYPE keygate_inventory_overdue_reviews gauge\n",
            "keygate_inventory_overdue_reviews{tool=\"aws\"} 1\n",
            "# TYPE keygate_inventory_retire_failures_total counter\n",
            "keygate_inventory_retire_failures_total{tool=\"aws\"} 3\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn reconciles_set_the_shadow_gauge_and_add_to_the_retired_counter() {
        let m = Arc::new(Metrics::new());
        let text = m.render(None, AuditQueueStats::default());
        assert!(
            !text.contains("keygate_inventory_shadow_identities{"),
            "{text}"
        );
        m.reconciled("aws", 3, 2);
        m.reconciled("aws", 1, 0);
        m.reconciled("aws", 5, 1);
        m.reconciled("aws-2", 0, 0);
        let text = m.render(None, AuditQueueStats::default());
        for line in [
            "# TYPE keygate_inventory_shadow_identities gauge\n",
            "keygate_inventory_shadow_identities{tool=\"aws\"} 5\n",
            "keygate_inventory_shadow_identities{tool=\"aws-2\"} 0\n",
            "# TYPE keygate_inventory_retired_total counter\n",
            "keygate_inventory_retired_total{tool=\"aws\"} 3\n",
            "keygate_inventory_retired_total{tool=\"aws-2\"} 0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Arc::new(Metrics::new());
        m.request("a\"b\\c\nd", Decision::Deny, 403, Duration::ZERO);
        let text = m.render(None, AuditQueueStats::default());
        assert!(text.contains(r#"tool="a\"b\\c\nd",decision="deny",status="403"} 1"#));
        assert!(!text.contains("\nkeygate_approvals_pending "));
    }
}

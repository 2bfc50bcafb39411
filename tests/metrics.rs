//! Prometheus metrics and health endpoints on the admin listener: known traffic through a
//! running keygate, then `/metrics` parsed strictly as text format 0.0.4 and every counter
//! checked against the traffic; `/healthz` and `/readyz`; no admin token needed for them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ------------------------------------------------------------ a strict text-format parser

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Family {
    help: Option<String>,
    kind: Option<String>,
    samples: Vec<Sample>,
}

#[derive(Debug)]
struct Exposition {
    families: BTreeMap<String, Family>,
}

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `{a="x",b="y\"z"}` → labels and the rest of the line after `}`.
fn parse_labels(s: &str, line: &str) -> (BTreeMap<String, String>, String) {
    let mut labels = BTreeMap::new();
    let mut chars = s.chars().peekable();
    assert_eq!(chars.next(), Some('{'), "line {line:?}");
    loop {
        if chars.peek() == Some(&'}') {
            chars.next();
            break;
        }
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        assert!(is_name(&key), "bad label name {key:?} in {line:?}");
        assert_eq!(chars.next(), Some('"'), "unquoted label value in {line:?}");
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                Some('"') => break,
                Some('\n') | None => panic!("unterminated label value in {line:?}"),
                Some(c) => value.push(c),
            }
        }
        assert!(
            labels.insert(key.clone(), value).is_none(),
            "label {key} twice in {line:?}"
        );
        match chars.next() {
            Some(',') => {}
            Some('}') => break,
            other => panic!("expected , or }} after a label, got {other:?} in {line:?}"),
        }
    }
    (labels, chars.collect())
}

fn parse_value(v: &str, line: &str) -> f64 {
    match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value {v:?} in {line:?}")),
    }
}

/// The family a sample belongs to: its own name, or for a histogram's series the name
/// without `_bucket`, `_sum`, `_count`.
fn family_of(name: &str, families: &BTreeMap<String, Family>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if families
                .get(base)
                .is_some_and(|f| f.kind.as_deref() == Some("histogram"))
            {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

/// Parses an exposition; panics on anything text format 0.0.4 does not allow or that
/// keygate must not do (a sample before its family's HELP and TYPE, a family split in
/// two, a duplicate series, a histogram whose buckets are not cumulative or whose `+Inf`
/// bucket differs from its `_count`).
fn parse(text: &str) -> Exposition {
    assert!(
        text.ends_with('\n'),
        "the exposition must end with a newline"
    );
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    for line in text.lines() {
        assert!(!line.trim().is_empty(), "empty line in the exposition");
        if let Some(rest) = line.strip_prefix("# ") {
            let (what, rest) = rest.split_once(' ').expect("comment without a metric");
            let (name, arg) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(is_name(name), "bad metric name {name:?}");
            if order.last().map(String::as_str) != Some(name) {
                assert!(
                    !order.contains(&name.to_string()),
                    "family {name} appears twice"
                );
                order.push(name.to_string());
            }
            let f = families.entry(name.to_string()).or_default();
            assert!(f.samples.is_empty(), "{what} of {name} after its samples");
            match what {
                "HELP" => {
                    assert!(f.help.is_none(), "two HELP lines for {name}");
                    assert!(!arg.is_empty(), "empty HELP for {name}");
                    f.help = Some(arg.to_string());
                }
                "TYPE" => {
                    assert!(f.kind.is_none(), "two TYPE lines for {name}");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg),
                        "bad TYPE {arg:?} for {name}"
                    );
                    f.kind = Some(arg.to_string());
                }
                _ => panic!("unexpected comment {line:?}"),
            }
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        let name_end = line.find(['{', ' ']).expect("a sample line needs a value");
        let name = &line[..name_end];
        assert!(is_name(name), "bad metric name in {line:?}");
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..], line)
        } else {
            (BTreeMap::new(), line[name_end..].to_string())
        };
        let rest = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no space before the value in {line:?}"));
        let parts: Vec<&str> = rest.split(' ').collect();
        assert!(
            parts.len() == 1,
            "keygate writes no timestamps; extra fields in {line:?}"
        );
        let value = parse_value(parts[0], line);
        let fam = family_of(name, &families);
        assert_eq!(
            order.last(),
            Some(&fam),
            "sample {line:?} is not in its family's block (or has no HELP/TYPE)"
        );
        let f = families.get_mut(&fam).unwrap();
        assert!(
            f.help.is_some() && f.kind.is_some(),
            "{fam}: HELP and TYPE must precede its samples"
        );
        let kind = f.kind.as_deref().unwrap();
        if kind == "counter" {
            assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            );
            assert!(value >= 0.0 && value.is_finite(), "counter {line:?}");
        }
        if kind == "histogram" {
            assert!(
                name != fam,
                "a histogram has only _bucket, _sum and _count samples: {line:?}"
            );
            assert_eq!(
                labels.contains_key("le"),
                name.ends_with("_bucket"),
                "le on exactly the buckets: {line:?}"
            );
        }
        assert!(
            seen.insert((name.to_string(), labels.clone())),
            "duplicate series {line:?}"
        );
        f.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    for (name, f) in &families {
        assert!(
            f.help.is_some() && f.kind.is_some(),
            "{name} lacks HELP or TYPE"
        );
        if f.kind.as_deref() == Some("histogram") {
            check_histogram(name, f);
        }
    }
    Exposition { families }
}

fn check_histogram(name: &str, f: &Family) {
    // Series by their labels other than `le`, in the order written.
    let mut series: BTreeMap<Vec<(String, String)>, Vec<&Sample>> = BTreeMap::new();
    for s in &f.samples {
        let key = s
            .labels
            .iter()
            .filter(|(k, _)| *k != "le")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        series.entry(key).or_default().push(s);
    }
    for (labels, samples) in series {
        let buckets: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.name == format!("{name}_bucket"))
            .map(|s| (parse_value(&s.labels["le"], "le"), s.value))
            .collect();
        assert!(buckets.len() >= 2, "{name}{labels:?}: too few buckets");
        for w in buckets.windows(2) {
            assert!(w[0].0 < w[1].0, "{name}{labels:?}: le not increasing");
            assert!(w[0].1 <= w[1].1, "{name}{labels:?}: buckets not cumulative");
        }
        let (last_le, inf) = *buckets.last().unwrap();
        assert_eq!(last_le, f64::INFINITY, "{name}{labels:?}: no +Inf bucket");
        let one = |suffix: &str| {
            let v: Vec<f64> = samples
                .iter()
                .filter(|s| s.name == format!("{name}{suffix}"))
                .map(|s| s.value)
                .collect();
            assert_eq!(v.len(), 1, "{name}{suffix}{labels:?}: want exactly one");
            v[0]
        };
        assert_eq!(one("_count"), inf, "{name}{labels:?}: +Inf != _count");
        assert!(one("_sum") >= 0.0, "{name}{labels:?}: negative _sum");
    }
}

impl Exposition {
    fn family(&self, name: &str) -> &Family {
        self.families
            .get(name)
            .unwrap_or_else(|| panic!("no family {name}"))
    }

    /// The value of the sample `name` with exactly these labels.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.families
            .get(&family_of(name, &self.families))?
            .samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }

    /// `keygate_requests_total` as (tool, decision, status) → count.
    fn requests(&self) -> BTreeMap<(String, String, String), f64> {
        self.family("keygate_requests_total")
            .samples
            .iter()
            .map(|s| {
                assert_eq!(
                    s.labels.keys().collect::<Vec<_>>(),
                    ["decision", "status", "tool"],
                    "{s:?}"
                );
                (
                    (
                        s.labels["tool"].clone(),
                        s.labels["decision"].clone(),
                        s.labels["status"].clone(),
                    ),
                    s.value,
                )
            })
            .collect()
    }
}

#[test]
fn the_parser_refuses_what_it_must() {
    let ok = "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"b\\\"c\"} 3\n";
    assert_eq!(parse(ok).value("x_total", &[("a", "b\"c")]), 3.0);
    let bad = [
        // no HELP/TYPE
        "x_total 1\n",
        // TYPE after the sample
        "# HELP x_total X.\nx_total 1\n# TYPE x_total counter\n",
        // buckets not cumulative
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        // +Inf != count
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
        // unterminated label
        "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"b} 1\n",
        // duplicate series
        "# HELP x_total X.\n# TYPE x_total counter\nx_total 1\nx_total 2\n",
    ];
    for text in bad {
        assert!(
            std::panic::catch_unwind(move || parse(text)).is_err(),
            "accepted: {text:?}"
        );
    }
}

// ------------------------------------------------------------ the gateway under test

const KEYS: &str = "/tools/gh/repos/acme/app/keys";
const READ: &str = "/tools/gh/repos/acme/app";
const WAIT: Duration = Duration::from_secs(10);

/// A GitHub stand-in: `POST …/keys` → 201; anything else → 200.
async fn github() -> RawUpstream {
    RawUpstream::with_responder(Arc::new(|r: &Received| {
        if r.head.starts_with("POST ") && r.target().ends_with("/keys") {
            (201, vec![], br#"{"id":4242,"title":"ci"}"#.to_vec())
        } else {
            (200, vec![], b"ok".to_vec())
        }
    }))
    .await
}

struct Env {
    gw: TestGateway,
    iss: TestIssuer,
    _up: RawUpstream,
}

/// keygate with agent `a1` and tool `gh` (kind github, static credential from the file
/// `secrets/<env>`);
/// `extra` is appended to the config.
async fn start(env: &str, extra: &str) -> Env {
    let up = github().await;
    let dir = tempfile::tempdir().unwrap();
    let source = secret_file(
        dir.path(),
        env,
        &format!("{}-tool-secret", env.to_ascii_lowercase()),
    );
    let iss = TestIssuer::new(dir.path(), "metrics-issuer", "keygate");
    let cfg = format!(
        "{}{}[[tools]]\nname = \"gh\"\nkind = \"github\"\nupstream = {:?}\n[tools.credential]\nprovider = \"static\"\n{source}{extra}",
        iss.toml(),
        agent("a1", "alice@example.com"),
        up.url(),
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    Env { gw, iss, _up: up }
}

/// GET on the admin listener without any token.
async fn admin_get(gw: &TestGateway, path: &str) -> Response {
    Client::http1()
        .get(&format!("http://{}{}", gw.admin_addr, path), &[])
        .await
}

async fn scrape(gw: &TestGateway) -> Exposition {
    let r = admin_get(gw, "/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    parse(&r.text())
}

/// Waits until `n` audit records are written: every request's metrics are counted by then
/// (they are bumped just before its record is queued).
async fn wait_for_records(gw: &TestGateway, n: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        // The calls' records (decisions through the admin API are audited apart).
        let got = gw
            .audit()
            .await
            .iter()
            .filter(|r| r.get("admin").is_none())
            .count();
        if got == n {
            return;
        }
        assert!(got < n, "{got} audit records, expected {n}");
        assert!(Instant::now() < deadline, "only {got} of {n} audit records");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn key_body() -> String {
    json!({"title": "ci", "key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMetricsTest", "read_only": true})
        .to_string()
}

fn req_key(tool: &str, decision: &str, status: &str) -> (String, String, String) {
    (tool.into(), decision.into(), status.into())
}

// ------------------------------------------------------------ tests

#[tokio::test]
async fn counters_match_the_traffic() {
    let env = start("METRICS_TRAFFIC_SECRET", "").await;
    let gw = &env.gw;
    let c = Client::http1();
    // One token throughout: the first use verifies it, the others hit the cache.
    let auth = bearer(&env.iss.token("a1"));
    let with_token = [("authorization", auth.as_str())];

    for _ in 0..3 {
        let r = c.get(&gw.url(READ), &with_token).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for _ in 0..2 {
        let r = c.get(&gw.url(READ), &[]).await;
        assert_eq!(r.status, 401, "{}", r.text());
    }
    let r = c.get(&gw.url("/tools/nope/x"), &with_token).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"], "unknown_tool");
    let post_headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let r = c
        .send("POST", &gw.url(KEYS), &post_headers, key_body())
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "approval_required");
    let approval = r.json()["approval_id"].as_str().unwrap().to_string();
    wait_for_records(gw, 7).await;

    // Before the decision: one pending approval, nothing decided.
    let m = scrape(gw).await;
    assert_eq!(m.value("keygate_approvals_requested_total", &[]), 1.0);
    assert_eq!(m.value("keygate_approvals_pending", &[]), 1.0);
    assert_eq!(
        m.value(
            "keygate_approvals_decided_total",
            &[("decision", "approved")]
        ),
        0.0
    );

    let (s, b) = gw
        .admin(
            "POST",
            &format!("/approvals/{approval}/approve"),
            Some(json!({"approver": "bob@example.com", "owner": "carol@example.com"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let r = c
        .send("POST", &gw.url(KEYS), &post_headers, key_body())
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    wait_for_records(gw, 8).await;

    let m = scrape(gw).await;
    let want: BTreeMap<_, _> = [
        (req_key("gh", "allow", "200"), 3.0),
        (req_key("gh", "allow", "201"), 1.0),
        (req_key("gh", "needs_approval", "403"), 1.0),
        (req_key("", "deny", "401"), 2.0),
        (req_key("", "deny", "404"), 1.0),
    ]
    .into_iter()
    .collect();
    assert_eq!(m.requests(), want);

    let hist = "keygate_request_duration_seconds";
    assert_eq!(m.value(&format!("{hist}_count"), &[("tool", "gh")]), 5.0);
    assert_eq!(m.value(&format!("{hist}_count"), &[("tool", "")]), 3.0);
    let sum = m.value(&format!("{hist}_sum"), &[("tool", "gh")]);
    assert!(sum > 0.0 && sum < 50.0, "sum {sum}");
    let les: Vec<String> = m
        .family(hist)
        .samples
        .iter()
        .filter(|s| s.name.ends_with("_bucket") && s.labels["tool"] == "gh")
        .map(|s| s.labels["le"].clone())
        .collect();
    assert_eq!(
        les,
        [
            "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
            "1", "2.5", "5", "10", "+Inf"
        ]
    );

    assert_eq!(m.value("keygate_approvals_requested_total", &[]), 1.0);
    assert_eq!(
        m.value(
            "keygate_approvals_decided_total",
            &[("decision", "approved")]
        ),
        1.0
    );
    assert_eq!(
        m.value("keygate_approvals_decided_total", &[("decision", "denied")]),
        0.0
    );
    assert_eq!(m.value("keygate_approvals_pending", &[]), 0.0);
    // inject runs before approve: the held request got its credential too (3 reads, the
    // held POST, the approved POST).
    assert_eq!(
        m.value(
            "keygate_credentials_issued_total",
            &[("provider", "static")]
        ),
        5.0
    );
    assert_eq!(
        m.value(
            "keygate_credential_failures_total",
            &[("provider", "static")]
        ),
        0.0
    );
    // Six requests carried the token (3 reads, unknown tool, 2 POSTs): one cold check.
    assert_eq!(
        m.value("keygate_token_cache_requests_total", &[("result", "miss")]),
        1.0
    );
    assert_eq!(
        m.value("keygate_token_cache_requests_total", &[("result", "hit")]),
        5.0
    );
    assert_eq!(m.value("keygate_audit_records_total", &[]), 8.0);
    assert_eq!(m.value("keygate_spans_dropped_total", &[]), 0.0);
    assert_eq!(
        m.value(
            "keygate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // Nothing names an agent, an owner, a path or an approval.
    let text = admin_get(gw, "/metrics").await.text();
    for never in ["a1", "alice", "carol", "acme", &approval, "/tools"] {
        assert!(!text.contains(never), "/metrics mentions {never:?}");
    }
}

#[tokio::test]
async fn a_denial_and_a_credential_failure_are_counted() {
    // A second tool whose credential's environment variable is never set.
    let env = start(
        "METRICS_DENY_SECRET",
        "[[tools]]\nname = \"broken\"\nupstream = \"http://127.0.0.1:9\"\n[tools.credential]\nprovider = \"static\"\nfrom_env = \"METRICS_NEVER_SET_7c1e\"\n",
    )
    .await;
    let gw = &env.gw;
    let c = Client::http1();
    let auth = bearer(&env.iss.token("a1"));
    let r = c
        .get(&gw.url("/tools/broken/x"), &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "credential_unavailable");
    let r = c
        .send(
            "POST",
            &gw.url(KEYS),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            key_body(),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let approval = r.json()["approval_id"].as_str().unwrap().to_string();
    let (s, b) = gw
        .admin(
            "POST",
            &format!("/approvals/{approval}/deny"),
            Some(json!({"approver": "bob@example.com"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let r = c
        .send(
            "POST",
            &gw.url(KEYS),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            key_body(),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "approval_denied");
    wait_for_records(gw, 3).await;

    let m = scrape(gw).await;
    let want: BTreeMap<_, _> = [
        (req_key("broken", "error", "502"), 1.0),
        (req_key("gh", "needs_approval", "403"), 1.0),
        (req_key("gh", "deny", "403"), 1.0),
    ]
    .into_iter()
    .collect();
    assert_eq!(m.requests(), want);
    assert_eq!(
        m.value(
            "keygate_credential_failures_total",
            &[("provider", "static")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "keygate_credentials_issued_total",
            &[("provider", "static")]
        ),
        2.0
    );
    assert_eq!(m.value("keygate_approvals_requested_total", &[]), 1.0);
    assert_eq!(
        m.value("keygate_approvals_decided_total", &[("decision", "denied")]),
        1.0
    );
    assert_eq!(
        m.value(
            "keygate_approvals_decided_total",
            &[("decision", "approved")]
        ),
        0.0
    );
    assert_eq!(m.value("keygate_approvals_pending", &[]), 0.0);
}

#[tokio::test]
async fn probes_and_metrics_need_no_token_and_gateways_count_apart() {
    let one = start("METRICS_PROBE_SECRET_1", "").await;
    let two = start("METRICS_PROBE_SECRET_2", "").await;

    for gw in [&one.gw, &two.gw] {
        let r = admin_get(gw, "/healthz").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), json!({"status": "ok"}));
        let r = admin_get(gw, "/readyz").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), json!({"status": "ready"}));
        // The rest of the admin API still wants the token.
        let r = admin_get(gw, "/approvals").await;
        assert_eq!(r.status, 401, "{}", r.text());
    }

    // A fresh gateway: every fixed series is there, at zero, and no request series yet.
    let m = scrape(&two.gw).await;
    let names: BTreeSet<&str> = m.families.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "keygate_build_info",
        "keygate_requests_total",
        "keygate_request_duration_seconds",
        "keygate_approvals_requested_total",
        "keygate_approvals_decided_total",
        "keygate_approvals_pending",
        "keygate_credentials_issued_total",
        "keygate_credential_failures_total",
        "keygate_token_cache_requests_total",
        "keygate_audit_records_total",
        "keygate_audit_backpressure_waits_total",
        "keygate_audit_queue_depth",
        "keygate_spans_dropped_total",
        "keygate_approvals",
        "keygate_approval_hold_rechecks_total",
        "keygate_webhook_notifications_total",
        "keygate_audit_write_failures_total",
        "keygate_audit_writing",
        "keygate_audit_unavailable_refusals_total",
        "keygate_response_secrets_total",
        "keygate_captured_secrets_total",
        "keygate_inventory_shadow_identities",
        "keygate_inventory_retired_total",
        "keygate_inventory_identities",
        "keygate_inventory_overdue_reviews",
        "keygate_inventory_retire_failures_total",
        "keygate_rate_limited_total",
        "keygate_rate_limit_shares_total",
        "keygate_anomalies_total",
    ]
    .into_iter()
    .collect();
    assert_eq!(names, expected);
    for (name, kind) in [
        ("keygate_requests_total", "counter"),
        ("keygate_request_duration_seconds", "histogram"),
        ("keygate_approvals_pending", "gauge"),
        ("keygate_build_info", "gauge"),
        ("keygate_audit_backpressure_waits_total", "counter"),
        ("keygate_audit_queue_depth", "gauge"),
    ] {
        assert_eq!(m.family(name).kind.as_deref(), Some(kind), "{name}");
    }
    assert!(m.requests().is_empty());
    assert_eq!(m.value("keygate_spans_dropped_total", &[]), 0.0);
    assert_eq!(m.value("keygate_approvals_pending", &[]), 0.0);

    // Traffic through the first gateway shows in its metrics only.
    let auth = bearer(&one.iss.token("a1"));
    for _ in 0..2 {
        let r = Client::http1()
            .get(&one.gw.url(READ), &[("authorization", &auth)])
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    wait_for_records(&one.gw, 2).await;
    let m1 = scrape(&one.gw).await;
    let m2 = scrape(&two.gw).await;
    assert_eq!(
        m1.requests(),
        [(req_key("gh", "allow", "200"), 2.0)].into_iter().collect()
    );
    assert!(m2.requests().is_empty(), "{:?}", m2.requests());
    assert_eq!(m2.value("keygate_audit_records_total", &[]), 0.0);
    assert_eq!(
        m2.value("keygate_token_cache_requests_total", &[("result", "miss")]),
        0.0
    );

    // Scrapes and probes are not data-plane requests.
    let _: Value = admin_get(&one.gw, "/readyz").await.json();
    let again = scrape(&one.gw).await;
    assert_eq!(again.requests(), m1.requests());
}

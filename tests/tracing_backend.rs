//! keygate's OpenTelemetry traces in a real backend: the keygate binary, as users run it,
//! exports its spans over OTLP (gRPC, and HTTP/protobuf) to Arize Phoenix
//! (tests/phoenix_support), and the spans are read back from Phoenix's REST API: one
//! `keygate.request` span per request with the semantic-convention and `keygate.*`
//! attributes, child spans for the phases, the agent's `traceparent` as its parent, keygate's
//! own `traceparent` sent to the tool, and no secret anywhere. A collector that is down, or
//! that takes connections and never answers, slows no request; the spans it cannot take
//! are counted in `keygate_spans_dropped_total`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod phoenix_support;

use common::*;
use phoenix_support::{attr, closed_port, in_trace, Phoenix, DEFAULT_PROJECT};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STATIC_SECRET: &str = "static-tool-secret-Tr4c3x";
const AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const AGENT: &str = "trace-agent";
const OWNER: &str = "tracer@example.com";
/// How long spans may take to be exported, ingested and readable.
const SPANS_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- keygate, the binary

/// keygate running as a child process; killed on drop.
struct Keygate {
    child: std::process::Child,
    addr: SocketAddr,
    admin_addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Keygate {
    /// `keygate run` on the config in `dir` (written by [`TestGateway::write_config`]),
    /// with the given environment on top of a clean one (no inherited `OTEL_*`). Waits for
    /// the "keygate is listening" and "admin API is listening" log lines.
    fn spawn(dir: &tempfile::TempDir, config: &str, env: &[(&str, &str)]) -> Keygate {
        let path = TestGateway::write_config(dir, config);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keygate"));
        cmd.args(["run", "--config"])
            .arg(&path)
            .env("KEYGATE_LOG", "info")
            .env("KEYGATE_LOG_FORMAT", "json")
            .env("TRACE_TEST_SECRET", STATIC_SECRET);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let f = &v["fields"];
                    if f["message"] == "keygate is listening" {
                        let _ = tx.send(("data", f["local_addr"].as_str().unwrap().to_string()));
                    } else if f["message"] == "admin API is listening" {
                        let _ = tx.send(("admin", f["addr"].as_str().unwrap().to_string()));
                    }
                }
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let (mut addr, mut admin_addr) = (None, None);
        while addr.is_none() || admin_addr.is_none() {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(("data", a)) => addr = Some(a.parse().unwrap()),
                Ok((_, a)) => admin_addr = Some(a.parse().unwrap()),
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "keygate did not start (or logged no listening address):\n{}",
                        log.lock().unwrap()
                    );
                }
            }
        }
        Keygate {
            child,
            addr: addr.unwrap(),
            admin_addr: admin_addr.unwrap(),
            stderr: log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `keygate_spans_dropped_total` from the admin listener's `/metrics` (no token).
    async fn spans_dropped(&self) -> f64 {
        let r = Client::http1()
            .get(&format!("http://{}/metrics", self.admin_addr), &[])
            .await;
        assert_eq!(r.status, 200, "/metrics: {}", r.text());
        let text = r.text();
        text.lines()
            .find_map(|l| l.strip_prefix("keygate_spans_dropped_total "))
            .unwrap_or_else(|| panic!("no keygate_spans_dropped_total in /metrics:\n{text}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// Polls `/metrics` until `keygate_spans_dropped_total` is above 0 or `timeout` passes.
    async fn wait_for_dropped(&self, timeout: Duration) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.spans_dropped().await;
            if n > 0.0 || Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Keygate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- helpers

/// One `static` tool (static credential from `TRACE_TEST_SECRET`) on `upstream`, the
/// issuer and the agent, plus `extra` TOML.
fn config(iss: &TestIssuer, upstream: &RawUpstream, extra: &str) -> String {
    format!(
        "{}{}{}{extra}",
        iss.toml(),
        agent(AGENT, OWNER),
        static_tool("static", &upstream.url(), &from_env("TRACE_TEST_SECRET")),
    )
}

/// A new W3C trace context: (trace id, parent span id, `traceparent` header value).
fn new_trace() -> (String, String, String) {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let span = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
    let header = format!("00-{trace}-{span}-01");
    (trace, span, header)
}

/// (trace id, parent id) of a `traceparent` value.
fn parse_traceparent(v: &str) -> (String, String) {
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "malformed traceparent {v:?}");
    assert_eq!(parts[0], "00", "traceparent version of {v:?}");
    assert_eq!(parts[1].len(), 32, "trace id of {v:?}");
    assert_eq!(parts[2].len(), 16, "parent id of {v:?}");
    (parts[1].to_string(), parts[2].to_string())
}

/// keygate's request span: `keygate.request`, or that with a suffix such as the method.
fn is_request_span(s: &Value) -> bool {
    let name = s["name"].as_str().unwrap_or("");
    name == "keygate.request" || name.starts_with("keygate.request ")
}

/// The one request span of `trace_id`.
fn request_span<'a>(spans: &'a [Value], trace_id: &str) -> &'a Value {
    let found: Vec<&Value> = in_trace(spans, trace_id)
        .into_iter()
        .filter(|s| is_request_span(s))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one keygate.request span in trace {trace_id}; spans read from Phoenix:\n{}",
        pretty(spans)
    );
    found[0]
}

fn has_request_span(spans: &[Value], trace_id: &str) -> bool {
    in_trace(spans, trace_id).into_iter().any(is_request_span)
}

fn pretty(spans: &[Value]) -> String {
    serde_json::to_string_pretty(spans).unwrap()
}

/// Asserts the span's attribute `key` is `want`.
fn assert_attr(span: &Value, key: &str, want: &str) {
    assert_eq!(
        attr(span, key).as_deref(),
        Some(want),
        "attribute {key} of span:\n{}",
        serde_json::to_string_pretty(span).unwrap()
    );
}

/// The span's attribute `key`, which must be there and not empty.
fn must_attr(span: &Value, key: &str) -> String {
    match attr(span, key) {
        Some(v) if !v.is_empty() => v,
        _ => panic!(
            "span lacks attribute {key}:\n{}",
            serde_json::to_string_pretty(span).unwrap()
        ),
    }
}

/// `server.address` is the address the agent called (the semantic conventions want the
/// host alone; the authority with its port is accepted too).
fn assert_server_address(span: &Value, kg: &Keygate) {
    let got = must_attr(span, "server.address");
    let host = kg.addr.ip().to_string();
    assert!(
        got == host || got == kg.addr.to_string(),
        "server.address is {got:?}, not {host:?} (or {})",
        kg.addr
    );
}

/// The names of the spans whose parent is `parent`.
fn children<'a>(spans: &'a [Value], parent: &str) -> Vec<&'a str> {
    spans
        .iter()
        .filter(|s| s["parent_id"].as_str() == Some(parent))
        .map(|s| s["name"].as_str().unwrap_or(""))
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Sends `n` allowed requests one after the other; returns each one's duration.
async fn timed_requests(kg: &Keygate, token: &str, n: usize) -> Vec<Duration> {
    let c = Client::http1();
    let auth = bearer(token);
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let (_, _, tp) = new_trace();
        let started = Instant::now();
        let r = c
            .get(
                &kg.url(&format!("/tools/static/items/{i}")),
                &[("authorization", &auth), ("traceparent", &tp)],
            )
            .await;
        took.push(started.elapsed());
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    took
}

// ---------------------------------------------------------------- tests

/// OTLP/gRPC to Phoenix: the request spans with their attributes and parentage, the
/// phases as child spans, the tool's `traceparent`, and no secret in any span; then
/// Phoenix goes away mid-run and requests go on as fast, the spans counted as dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_reaches_phoenix_with_attributes_parentage_and_no_secret() {
    let phoenix = Phoenix::start().await;
    let up = RawUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "trace-iss", "keygate");
    let grpc = phoenix.grpc_endpoint();
    let minted_up = RawUpstream::start().await;
    let leaky_up = RawUpstream::with_responder(std::sync::Arc::new(|_r: &Received| {
        let body = "{\"content\": \"token: ghp_LeakedIntoAResponse0123456789abcdef\"}";
        (200, vec![], body.as_bytes().to_vec())
    }))
    .await;
    let minted_tool = format!(
        "[[tools]]\nname = \"minted\"\nupstream = {:?}\n[tools.credential]\nprovider = \"jwt\"\n\
         scope = \"read\"\nunique_per_call = true\n\
         [[tools]]\nname = \"leaky\"\nupstream = {:?}\n[tools.credential]\nprovider = \"jwt\"\n\
         scope = \"read\"\n",
        minted_up.url(),
        leaky_up.url()
    );
    let kg = Keygate::spawn(
        &dir,
        &config(&iss, &up, &minted_tool),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", grpc.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "keygate-trace-test"),
        ],
    );

    let token = iss.token(AGENT);
    let auth = bearer(&token);
    let c = Client::http1();
    let (allowed, allowed_parent, tp) = new_trace();
    let r = c
        .get(
            &kg.url("/tools/static/repos"),
            &[("authorization", &auth), ("traceparent", &tp)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (unauth, unauth_parent, tp) = new_trace();
    let r = c
        .get(&kg.url("/tools/static/repos"), &[("traceparent", &tp)])
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    let (in_query, in_query_parent, tp) = new_trace();
    let r = c
        .get(
            &kg.url(&format!("/tools/static/search?q={AWS_KEY}")),
            &[("authorization", &auth), ("traceparent", &tp)],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let (in_path, _, tp) = new_trace();
    let r = c
        .get(
            &kg.url(&format!("/tools/static/keys/{AWS_KEY}")),
            &[("authorization", &auth), ("traceparent", &tp)],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // No traceparent: keygate's span starts a trace of its own.
    let r = c
        .get(&kg.url("/tools/static/orgs"), &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // An unsampled agent trace does not switch keygate's spans off: a trace of keygate's
    // own records the call.
    let (unsampled, _, tp) = new_trace();
    let tp = format!("{}-00", tp.trim_end_matches("-01"));
    let r = c
        .get(
            &kg.url("/tools/static/unsampled"),
            &[("authorization", &auth), ("traceparent", &tp)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A tool whose credential is minted for every call.
    let (minted, _, tp) = new_trace();
    let r = c
        .get(
            &kg.url("/tools/minted/repos"),
            &[("authorization", &auth), ("traceparent", &tp)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // A tool whose answer carries a token: redacted, and the span says what was found.
    let (leaky, _, tp) = new_trace();
    let r = c
        .get(
            &kg.url("/tools/leaky/file"),
            &[("authorization", &auth), ("traceparent", &tp)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains("ghp_"), "{}", r.text());

    let received = up.requests();
    assert_eq!(
        received.len(),
        3,
        "only the allowed requests reach the tool"
    );
    assert!(received[0]
        .header("authorization")
        .unwrap()
        .contains(STATIC_SECRET));

    let traces = [&allowed, &unauth, &in_query, &in_path, &minted, &leaky];
    let spans = phoenix
        .wait_for_spans(DEFAULT_PROJECT, SPANS_TIMEOUT, |s| {
            traces.iter().all(|t| has_request_span(s, t))
                && [&allowed, &minted].iter().all(|t| {
                    in_trace(s, t)
                        .iter()
                        .any(|s| s["name"] == "keygate.upstream")
                })
                && s.iter()
                    .filter(|s| is_request_span(s) && s["parent_id"].is_null())
                    .count()
                    >= 1
                && s.iter()
                    .filter(|s| is_request_span(s) && s["parent_id"].is_null())
                    .all(|r| {
                        children(s, r["span_id"].as_str().unwrap_or(""))
                            .contains(&"keygate.upstream")
                    })
                && in_trace(s, &minted)
                    .iter()
                    .any(|s| s["name"] == "keygate.credential")
                && s.iter().any(|s| {
                    is_request_span(s)
                        && attr(s, "url.path").as_deref() == Some("/tools/static/unsampled")
                })
        })
        .await;
    let own = spans
        .iter()
        .find(|s| {
            is_request_span(s) && attr(s, "url.path").as_deref() == Some("/tools/static/unsampled")
        })
        .unwrap();
    assert!(
        own["parent_id"].is_null() && in_trace(&spans, &unsampled).is_empty(),
        "the unsampled call's span is a root of keygate's own trace: {own}"
    );
    eprintln!("{} spans read back from Phoenix", spans.len());

    // The allowed request.
    let req = request_span(&spans, &allowed);
    eprintln!(
        "the allowed request's span, as Phoenix has it: {}",
        serde_json::to_string_pretty(req).unwrap()
    );
    assert_eq!(
        req["parent_id"], allowed_parent,
        "parent of the request span"
    );
    assert_attr(req, "http.request.method", "GET");
    assert_attr(req, "url.path", "/tools/static/repos");
    assert_server_address(req, &kg);
    assert_attr(req, "http.response.status_code", "200");
    assert_attr(req, "keygate.agent.id", AGENT);
    assert_attr(req, "keygate.agent.owner", OWNER);
    assert_attr(req, "keygate.tool", "static");
    assert_attr(req, "keygate.decision", "allow");
    must_attr(req, "keygate.operation");
    must_attr(req, "keygate.policies");
    assert_attr(req, "keygate.credential.provider", "static");
    let cred = must_attr(req, "keygate.credential.id");
    assert!(cred.starts_with("sha256:"), "credential id {cred:?}");
    assert_eq!(
        attr(req, "error.type"),
        None,
        "an allowed request has no error.type"
    );
    // The phases that took time, as children of the request span: the token is new
    // (identify is cold), the decision is the first (authorize evaluated the policies).
    // A static credential is not minted: no credential span.
    let req_id = req["span_id"].as_str().unwrap();
    let mut kids = children(&spans, req_id);
    kids.sort();
    assert_eq!(
        kids,
        ["keygate.authorize", "keygate.identify", "keygate.upstream"],
        "child spans of the first request's span\n{}",
        pretty(&spans)
    );
    // One tree: every other span of the trace descends from the request span.
    let ids: Vec<&str> = in_trace(&spans, &allowed)
        .iter()
        .map(|s| s["span_id"].as_str().unwrap())
        .collect();
    for s in in_trace(&spans, &allowed) {
        assert!(
            s["span_id"] == req_id || ids.contains(&s["parent_id"].as_str().unwrap_or("")),
            "span {} of the allowed request's trace hangs off no span of keygate's",
            s["name"]
        );
    }
    // The tool got keygate's own traceparent: same trace, keygate's span as parent.
    let tp = received[0]
        .header("traceparent")
        .expect("no traceparent at the tool");
    let (tool_trace, tool_parent) = parse_traceparent(&tp);
    assert_eq!(tool_trace, allowed, "trace id the tool received");
    assert_ne!(
        tool_parent, allowed_parent,
        "the tool received the agent's span as its parent, not keygate's"
    );
    let keygate_ids: Vec<&str> = in_trace(&spans, &allowed)
        .iter()
        .map(|s| s["span_id"].as_str().unwrap())
        .collect();
    assert!(
        keygate_ids.contains(&tool_parent.as_str()),
        "the tool's parent span {tool_parent} is none of keygate's spans {keygate_ids:?}"
    );

    // Refused: no token.
    let req = request_span(&spans, &unauth);
    assert_eq!(req["parent_id"], unauth_parent);
    assert_attr(req, "http.response.status_code", "401");
    assert_attr(req, "error.type", "unauthenticated");
    assert_attr(req, "url.path", "/tools/static/repos");
    must_attr(req, "keygate.decision");
    assert_eq!(attr(req, "keygate.agent.id"), None);

    // Refused: a secret in the query, then in the path (which the span shows redacted).
    let req = request_span(&spans, &in_query);
    assert_eq!(req["parent_id"], in_query_parent);
    assert_attr(req, "http.response.status_code", "400");
    assert_attr(req, "error.type", "secret_in_request");
    assert_attr(req, "keygate.decision", "deny");
    assert_attr(req, "keygate.agent.id", AGENT);
    assert_attr(req, "keygate.tool", "static");
    let req = request_span(&spans, &in_path);
    assert_attr(req, "http.response.status_code", "400");
    assert_attr(req, "error.type", "secret_in_request");
    must_attr(req, "url.path");

    // Without a traceparent: a root span, and the tool got its trace.
    let roots: Vec<&Value> = spans
        .iter()
        .filter(|s| {
            is_request_span(s)
                && s["parent_id"].is_null()
                && attr(s, "url.path").as_deref() != Some("/tools/static/unsampled")
        })
        .collect();
    assert_eq!(roots.len(), 1, "root request spans:\n{}", pretty(&spans));
    let (tool_trace, _) = parse_traceparent(
        &received[1]
            .header("traceparent")
            .expect("no traceparent at the tool"),
    );
    assert_eq!(roots[0]["trace_id"], tool_trace);
    assert_attr(roots[0], "url.path", "/tools/static/orgs");
    // The same agent again on the same tool: token and decision come from the caches, so
    // the upstream call is the only phase worth a span.
    let kids = children(&spans, roots[0]["span_id"].as_str().unwrap());
    assert_eq!(kids, ["keygate.upstream"], "{}", pretty(&spans));

    // Secret formats found in a response: by format and place, never the value.
    let req = request_span(&spans, &leaky);
    assert_attr(req, "keygate.response_secrets", "github_token@body\u{d7}1");
    assert!(!req.to_string().contains("ghp_LeakedInto"), "{req}");

    // A minted credential is a phase of its own.
    let req = request_span(&spans, &minted);
    assert_attr(req, "keygate.credential.provider", "jwt");
    let mut kids = children(&spans, req["span_id"].as_str().unwrap());
    kids.sort();
    assert_eq!(
        kids,
        [
            "keygate.authorize",
            "keygate.credential",
            "keygate.upstream"
        ],
        "{}",
        pretty(&spans)
    );
    assert_eq!(minted_up.count(), 1);

    // No secret in anything Phoenix has.
    let all = serde_json::to_string(&spans).unwrap();
    let signature = token.rsplit('.').next().unwrap();
    for (what, secret) in [
        ("agent token", token.as_str()),
        ("agent token's signature", signature),
        ("static tool secret", STATIC_SECRET),
        ("AWS key id", AWS_KEY),
    ] {
        assert!(!all.contains(secret), "the {what} appears in the spans");
    }

    // The collector goes away: requests go on as fast, the spans are dropped and counted.
    let mut phoenix = phoenix;
    phoenix.kill();
    let before = kg.spans_dropped().await;
    let took = timed_requests(&kg, &token, 30).await;
    let slowest = took.iter().max().unwrap();
    eprintln!(
        "with Phoenix gone: median {:?}, slowest {slowest:?}",
        median(took.clone())
    );
    // (Under the 5 s keygate gives an export: a request that waited on one would show;
    // wide of what a loaded machine takes.)
    assert!(
        *slowest < Duration::from_secs(3),
        "a request took {slowest:?} with the collector gone"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut after = kg.spans_dropped().await;
    while after <= before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        after = kg.spans_dropped().await;
    }
    assert!(
        after > before,
        "keygate_spans_dropped_total stayed at {before} with the collector gone"
    );

    // Checked last, so that everything above is checked whatever this says: the semantic
    // conventions type `http.response.status_code` as an int, and a backend's numeric
    // filters (status >= 500) need one. Phoenix keeps an attribute's OTLP type.
    for trace in [&allowed, &unauth, &in_query] {
        let req = request_span(&spans, trace);
        assert!(
            req["attributes"]["http.response.status_code"].is_i64(),
            "http.response.status_code is exported as {}, not as an int",
            req["attributes"]["http.response.status_code"]
        );
    }
}

/// OTLP over HTTP/protobuf to Phoenix's HTTP port, configured by the standard variables
/// and, in a second keygate, by `[telemetry]` in the config file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_export_reaches_phoenix_by_env_and_by_config() {
    let phoenix = Phoenix::start().await;
    let up = RawUpstream::start().await;
    let endpoint = phoenix.http_endpoint();

    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "trace-iss", "keygate");
    let by_env = Keygate::spawn(
        &dir,
        &config(&iss, &up, ""),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_SERVICE_NAME", "keygate-http-env"),
        ],
    );
    let dir2 = tempfile::tempdir().unwrap();
    let iss2 = TestIssuer::new(dir2.path(), "trace-iss", "keygate");
    let by_config = Keygate::spawn(
        &dir2,
        &config(
            &iss2,
            &up,
            &format!(
                "[telemetry]\notlp_endpoint = {endpoint:?}\notlp_protocol = \"http/protobuf\"\n\
                 service_name = \"keygate-http-config\"\n\
                 [anomalies]\nlearning_period = \"0s\"\n[anomalies.new_tool]\naction = \"record\"\n"
            ),
        ),
        &[],
    );

    let c = Client::http1();
    let mut sent = Vec::new();
    for (kg, iss) in [(&by_env, &iss), (&by_config, &iss2)] {
        let (trace, parent, tp) = new_trace();
        let r = c
            .get(
                &kg.url("/tools/static/repos"),
                &[
                    ("authorization", &bearer(&iss.token(AGENT))),
                    ("traceparent", &tp),
                ],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        sent.push((trace, parent));
    }
    let spans = phoenix
        .wait_for_spans(DEFAULT_PROJECT, SPANS_TIMEOUT, |s| {
            sent.iter().all(|(t, _)| {
                has_request_span(s, t)
                    && in_trace(s, t)
                        .iter()
                        .any(|s| s["name"] == "keygate.upstream")
            })
        })
        .await;
    for (i, (trace, parent)) in sent.iter().enumerate() {
        let req = request_span(&spans, trace);
        assert_eq!(&req["parent_id"], parent, "keygate {i}: parent");
        assert_attr(req, "http.response.status_code", "200");
        assert_attr(req, "keygate.agent.id", AGENT);
        assert_attr(req, "keygate.decision", "allow");
        let kids = children(&spans, req["span_id"].as_str().unwrap());
        assert!(kids.contains(&"keygate.upstream"), "keygate {i}: {kids:?}");
        // The second keygate watches its agents: the agent's first call to the tool is an
        // anomaly, an event of the request's span an auditor reads with the call.
        let events = req["events"].as_array().cloned().unwrap_or_default();
        let anomaly = events.iter().find(|e| e["name"] == "keygate.anomaly");
        if i == 0 {
            assert!(anomaly.is_none(), "keygate {i}: {events:?}");
            continue;
        }
        let a = anomaly.unwrap_or_else(|| panic!("no keygate.anomaly event: {req:#}"));
        let at = |k: &str| a["attributes"][k].as_str().map(str::to_string);
        assert_eq!(
            at("keygate.anomaly.detector").as_deref(),
            Some("new_tool"),
            "{a}"
        );
        assert_eq!(
            at("keygate.anomaly.action").as_deref(),
            Some("record"),
            "{a}"
        );
        assert_eq!(
            at("keygate.anomaly.observed").as_deref(),
            Some("first call to tool static"),
            "{a}"
        );
        assert!(at("keygate.anomaly.baseline").is_some(), "{a}");
    }
    for (i, r) in up.requests().iter().enumerate() {
        let (trace, _) = parse_traceparent(&r.header("traceparent").unwrap());
        assert_eq!(
            trace, sent[i].0,
            "trace id the tool received from keygate {i}"
        );
    }
}

/// A collector that refuses connections (gRPC to a closed port) or takes them and never
/// answers (HTTP/protobuf): every request as fast as without tracing, and the spans lost
/// are counted as dropped: those the refusing collector did not take, and, while the
/// silent one holds an export, those beyond the (smallest possible) queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_or_silent_slows_nothing_and_drops_are_counted() {
    const N: usize = 50;
    /// While the silent collector holds keygate's first export, at most this many more
    /// requests (about 4 spans each) to overflow the queue of 16 and any batch in making.
    const MAX_SILENT: usize = 400;
    let up = RawUpstream::start().await;

    // Takes connections and never answers (nor closes them).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let silent_url = format!("http://{silent_addr}");

    struct Outcome {
        name: &'static str,
        median: Duration,
        slowest: Duration,
        dropped: f64,
        warnings: usize,
        log: String,
    }
    let mut results = Vec::new();
    for (name, env) in [
        ("no tracing", vec![]),
        (
            "gRPC to a closed port",
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", closed.as_str()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
        ),
        (
            "HTTP to a silent collector",
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", silent_url.as_str()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let iss = TestIssuer::new(dir.path(), "trace-iss", "keygate");
        // The smallest queue keygate takes: 16 spans.
        let kg = Keygate::spawn(
            &dir,
            &config(&iss, &up, "[telemetry]\nqueue_size = 16\n"),
            &env,
        );
        let token = iss.token(AGENT);
        // One request first: connections and the token's cold verification are warm.
        timed_requests(&kg, &token, 1).await;
        let started = Instant::now();
        let mut took = timed_requests(&kg, &token, N).await;
        let dropped = if env.is_empty() {
            kg.spans_dropped().await
        } else if name.contains("silent") {
            // The first export hangs (keygate gives a collector 5 s, OTLP's default is
            // 10 s); what comes meanwhile finds the queue full and is dropped at once.
            let mut dropped = kg.spans_dropped().await;
            while dropped == 0.0 && took.len() < N + MAX_SILENT {
                took.extend(timed_requests(&kg, &token, 25).await);
                dropped = kg.spans_dropped().await;
            }
            let when = started.elapsed();
            eprintln!(
                "{name}: {dropped} spans dropped after {} requests, {when:?}",
                took.len()
            );
            assert!(
                dropped == 0.0 || when < Duration::from_secs(4),
                "{name}: the first spans were dropped only after {when:?}: when the export \
                 timed out, not when the queue was full"
            );
            dropped
        } else {
            kg.wait_for_dropped(Duration::from_secs(20)).await
        };
        let (median, slowest) = (median(took.clone()), *took.iter().max().unwrap());
        eprintln!(
            "{name}: {} requests, median {median:?}, slowest {slowest:?}; \
             keygate_spans_dropped_total {dropped}",
            took.len()
        );
        let log = kg.log();
        let warned: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
            .collect();
        for w in &warned {
            eprintln!("{name}: keygate warned: {w}");
        }
        results.push(Outcome {
            name,
            median,
            slowest,
            dropped,
            warnings: warned.len(),
            log: log.clone(),
        });
    }

    let baseline = &results[0];
    assert_eq!(baseline.dropped, 0.0, "spans dropped without tracing");
    for r in &results[1..] {
        let name = r.name;
        // Bounds far under an export's 5 s (a request that waited on one would show),
        // and far over what a loaded machine adds.
        assert!(
            r.slowest < Duration::from_secs(3),
            "{name}: a request took {:?}",
            r.slowest
        );
        assert!(
            r.median < baseline.median + Duration::from_millis(250),
            "{name}: median {:?}, without tracing {:?}",
            r.median,
            baseline.median
        );
        assert!(
            r.dropped > 0.0,
            "{name}: keygate_spans_dropped_total is {}; log:\n{}",
            r.dropped,
            r.log
        );
        assert!(
            r.warnings <= 3,
            "{name}: {} warnings for one collector outage:\n{}",
            r.warnings,
            r.log
        );
    }
}

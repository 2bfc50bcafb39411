//! A real OpenTelemetry backend for tests/tracing_backend.rs: Arize Phoenix, which takes
//! OTLP over gRPC and over HTTP/protobuf (`/v1/traces`), stores spans in SQLite, and serves
//! them back through its REST API (`GET /v1/projects/{project}/spans`).
//!
//! `scripts/test` installs it from the pins in `tests/phoenix/requirements.txt` into
//! `target/phoenix-venv`; these helpers only run it, and fail loudly when it is missing.
//! It runs through `tests/phoenix/serve.py`, which keeps its gRPC listener on 127.0.0.1
//! (Phoenix itself would take every interface) and exits when the test process does.
//!
//! Phoenix puts spans whose resource has no `openinference.project.name` into the project
//! [`DEFAULT_PROJECT`], whatever their `service.name`.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The project of spans that do not name one.
pub const DEFAULT_PROJECT: &str = "default";

/// How long Phoenix may take to start (migrations on a new database, then importing a
/// large Python application; several seconds alone, far more on a busy machine).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's interpreter, with Phoenix.
pub fn python() -> PathBuf {
    let p = root().join("target/phoenix-venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/test, which installs Arize Phoenix \
         (tests/phoenix/requirements.txt into target/phoenix-venv)",
        p.display()
    );
    p
}

/// Two distinct ports of 127.0.0.1 that were free a moment ago (bound, then released).
pub fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

/// A port of 127.0.0.1 where nothing listens (it was free a moment ago).
pub fn closed_port() -> u16 {
    free_ports().0
}

/// A Phoenix server on 127.0.0.1, with its data in a temporary directory; killed on drop.
pub struct Phoenix {
    child: Child,
    /// UI, REST API and OTLP/HTTP (`/v1/traces`).
    pub http_port: u16,
    /// OTLP/gRPC.
    pub grpc_port: u16,
    /// Phoenix's stdout and stderr.
    pub log: PathBuf,
    dir: tempfile::TempDir,
}

impl Phoenix {
    /// Starts Phoenix on two free ports and waits until it answers `/healthz` (it does
    /// only once its gRPC listener is up too). A process that exits first (a port was
    /// taken meanwhile) is started again on other ports, twice at most.
    pub async fn start() -> Phoenix {
        let py = python();
        for _attempt in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let log = dir.path().join("phoenix.log");
            let (http_port, grpc_port) = free_ports();
            let out = std::fs::File::create(&log).unwrap();
            let child = Command::new(&py)
                .arg(root().join("tests/phoenix/serve.py"))
                .current_dir(dir.path())
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("HOME", dir.path())
                .env("PHOENIX_HOST", "127.0.0.1")
                .env("PHOENIX_PORT", http_port.to_string())
                .env("PHOENIX_GRPC_PORT", grpc_port.to_string())
                // SQLite database and exports, in the temporary directory.
                .env("PHOENIX_WORKING_DIR", dir.path())
                // No analytics pixels, no fonts or downloads from the internet.
                .env("PHOENIX_TELEMETRY_ENABLED", "false")
                .env("PHOENIX_ALLOW_EXTERNAL_RESOURCES", "false")
                // What the tests do not use: less to start, and quieter.
                .env("PHOENIX_ENABLE_MCP_SERVER", "false")
                .env("PHOENIX_DISABLE_AGENT_ASSISTANT", "true")
                .env("PHOENIX_LOG_MIGRATIONS", "false")
                .env("PHOENIX_TEST_EXIT_ON_STDIN_EOF", "1")
                .stdin(Stdio::piped())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start Phoenix: {e}"));
            let mut p = Phoenix {
                child,
                http_port,
                grpc_port,
                log,
                dir,
            };
            let started = Instant::now();
            loop {
                if let Ok((200, _)) = p.get("/healthz").await {
                    if tokio::net::TcpStream::connect(p.grpc_addr()).await.is_ok() {
                        eprintln!(
                            "Phoenix is ready on 127.0.0.1:{http_port} (gRPC {grpc_port}) after {:.1} s",
                            started.elapsed().as_secs_f64()
                        );
                        return p;
                    }
                }
                if let Some(status) = p.child.try_wait().unwrap() {
                    eprintln!(
                        "Phoenix exited ({status}) on ports {http_port}/{grpc_port}:\n{}",
                        p.log_tail()
                    );
                    break;
                }
                assert!(
                    started.elapsed() < START_TIMEOUT,
                    "Phoenix did not become ready within {} s:\n{}",
                    START_TIMEOUT.as_secs(),
                    p.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        panic!("Phoenix could not be started");
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for OTLP/gRPC.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for OTLP/HTTP (the exporter adds `/v1/traces`).
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.grpc_port))
    }

    /// Where Phoenix keeps its data.
    pub fn working_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The end of what Phoenix printed (its banner and log).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Kills Phoenix now (a collector going away); idempotent.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// GET on Phoenix's HTTP port: (status, body).
    pub async fn get(&self, path_and_query: &str) -> Result<(u16, Bytes), String> {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Empty<Bytes>>();
        let uri: http::Uri = format!("http://127.0.0.1:{}{path_and_query}", self.http_port)
            .parse()
            .map_err(|e| format!("{e}"))?;
        let resp = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }

    /// Every span of `project` stored so far (all pages), each as
    /// `{"name", "trace_id", "span_id", "parent_id" (null for a root), "kind",
    /// "status_code", "status_message", "start_time", "end_time", "attributes", "events"}` with the
    /// attributes as a flat object of dotted keys. An unknown project (no span yet) is
    /// empty.
    pub async fn spans(&self, project: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q =
                format!("/v1/projects/{project}/spans?limit=1000&sort=start_time&order=asc");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={}", urlencode(c)));
            }
            let (status, body) = self
                .get(&q)
                .await
                .unwrap_or_else(|e| panic!("GET {q} from Phoenix failed: {e}"));
            if status == 404 && out.is_empty() {
                return out;
            }
            assert_eq!(
                status,
                200,
                "GET {q} from Phoenix: {}",
                String::from_utf8_lossy(&body)
            );
            let page: Value = serde_json::from_slice(&body).unwrap();
            for s in page["data"].as_array().unwrap() {
                out.push(json!({
                    "name": s["name"],
                    "trace_id": s["context"]["trace_id"],
                    "span_id": s["context"]["span_id"],
                    "parent_id": s["parent_id"],
                    "kind": s["span_kind"],
                    "status_code": s["status_code"],
                    "status_message": s["status_message"],
                    "start_time": s["start_time"],
                    "end_time": s["end_time"],
                    "attributes": s["attributes"],
                    "events": s["events"],
                }));
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
    }

    /// Polls [`Phoenix::spans`] until `ready` holds for the spans of `project`, or
    /// `timeout` passes; returns the last spans read either way (the caller's assertions
    /// then say what is missing).
    pub async fn wait_for_spans(
        &self,
        project: &str,
        timeout: Duration,
        ready: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans(project).await;
            if ready(&spans) || Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Polls until `project` has at least `n` spans, or `timeout` passes.
    pub async fn wait_for_n_spans(&self, project: &str, n: usize, timeout: Duration) -> Vec<Value> {
        self.wait_for_spans(project, timeout, |s| s.len() >= n)
            .await
    }
}

impl Drop for Phoenix {
    fn drop(&mut self) {
        self.kill();
    }
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The spans (of those given) whose trace id is `trace_id`.
pub fn in_trace<'a>(spans: &'a [Value], trace_id: &str) -> Vec<&'a Value> {
    spans
        .iter()
        .filter(|s| s["trace_id"].as_str() == Some(trace_id))
        .collect()
}

/// A span's attribute as text (numbers and booleans too), if it has it.
pub fn attr(span: &Value, key: &str) -> Option<String> {
    match &span["attributes"][key] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        v => Some(v.to_string()),
    }
}

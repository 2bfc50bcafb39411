//! Real MCP peers for tests/mcp.rs: the reference server `@modelcontextprotocol/server-everything`
//! (Node), a small server of our own on the official MCP Python SDK (`tests/mcp/server.py`),
//! and a scripted client on that SDK (`tests/mcp/client.py`).
//!
//! `scripts/test` installs them from the pins in `tests/mcp/` (the venv in
//! `target/mcp-venv`, the Node packages in `tests/mcp/node_modules`); these helpers only
//! run them, and fail loudly when they are missing.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's interpreter, with the MCP Python SDK.
pub fn python() -> PathBuf {
    let p = root().join("target/mcp-venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/test, which installs the MCP test peers \
         (tests/mcp/requirements.txt into target/mcp-venv)",
        p.display()
    );
    p
}

/// The reference server's entry point.
pub fn everything_js() -> PathBuf {
    let p =
        root().join("tests/mcp/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(
        p.exists(),
        "{} is missing: run scripts/test, which installs the MCP test peers \
         (npm ci --prefix tests/mcp)",
        p.display()
    );
    p
}

/// A port of 127.0.0.1 that was free a moment ago (bound, then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// An MCP server running as a child process on 127.0.0.1; killed on drop.
pub struct Peer {
    child: Child,
    pub port: u16,
    /// The process's stdout and stderr.
    pub log: PathBuf,
    /// For the test server: every HTTP request it received, one JSON line each.
    pub header_log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Peer {
    /// `@modelcontextprotocol/server-everything` with the Streamable HTTP transport
    /// (`node dist/index.js streamableHttp`; endpoint `/mcp`; port from `PORT`), on
    /// 127.0.0.1 only (through `tests/mcp/loopback.mjs`).
    pub async fn everything() -> Peer {
        let js = everything_js();
        Self::start("server-everything", |port, _| {
            let mut c = Command::new("node");
            // Listening on 127.0.0.1 only (it would take every interface).
            c.arg("--import")
                .arg("./tests/mcp/loopback.mjs")
                .arg(&js)
                .arg("streamableHttp")
                .env("PORT", port.to_string());
            c
        })
        .await
    }

    /// `tests/mcp/server.py`: tools `whoami`, `create_api_token`, `echo` (endpoint `/mcp`),
    /// recording every request's headers in [`Peer::header_log`].
    pub async fn test_server() -> Peer {
        let py = python();
        let script = root().join("tests/mcp/server.py");
        Self::start("tests/mcp/server.py", |port, header_log| {
            let mut c = Command::new(&py);
            c.arg(&script).arg(port.to_string()).arg(header_log);
            c
        })
        .await
    }

    /// Starts `command(port, header_log)` on a free port and waits until the port accepts
    /// connections. A process that exits first (the port was taken meanwhile) is started
    /// again on another port, twice at most.
    async fn start(name: &str, command: impl Fn(u16, &Path) -> Command) -> Peer {
        for _attempt in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let log = dir.path().join("peer.log");
            let header_log = dir.path().join("headers.jsonl");
            let port = free_port();
            let out = std::fs::File::create(&log).unwrap();
            let child = command(port, &header_log)
                .current_dir(root())
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
            let mut peer = Peer {
                child,
                port,
                log,
                header_log,
                _dir: dir,
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if tokio::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))
                    .await
                    .is_ok()
                {
                    return peer;
                }
                if let Some(status) = peer.child.try_wait().unwrap() {
                    eprintln!(
                        "{name} exited ({status}) on port {port}:\n{}",
                        peer.log_text()
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name} did not listen on port {port} within 20 s:\n{}",
                    peer.log_text()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("{name} could not be started");
    }

    /// The base URL: a keygate tool's `upstream`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The MCP endpoint.
    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.url())
    }

    /// What the process printed so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// For the test server: every HTTP request received so far.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.header_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tests/mcp/client.py` against `url` with `headers` on every HTTP request and the
/// given `steps` (see that file), off the runtime's worker threads; returns its report:
/// `{"results": [one per step], "http": [...], "error": null | "..."}`.
pub async fn run_client(url: &str, headers: &[(&str, &str)], steps: Value) -> Value {
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    let script = json!({"url": url, "headers": headers, "timeout": 30, "steps": steps});
    let py = python();
    let client = root().join("tests/mcp/client.py");
    let arg = script.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py)
            .arg(client)
            .arg(arg)
            .current_dir(root())
            .stdin(Stdio::null())
            .output()
    })
    .await
    .unwrap()
    .expect("cannot run tests/mcp/client.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tests/mcp/client.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("tests/mcp/client.py printed no JSON ({e}):\n{stdout}\n{stderr}")
    })
}

/// The result of step `i` of a report, after checking the script ran to its end.
pub fn step(report: &Value, i: usize) -> &Value {
    assert!(
        report["error"].is_null(),
        "the MCP client stopped early: {}\n{}\n{report:#}",
        report["error"],
        report["traceback"].as_str().unwrap_or("")
    );
    &report["results"][i]
}

/// Script steps.
pub fn initialize() -> Value {
    json!({"op": "initialize"})
}
pub fn list_tools() -> Value {
    json!({"op": "list_tools"})
}
pub fn ping() -> Value {
    json!({"op": "ping"})
}
pub fn call(name: &str, arguments: Value) -> Value {
    json!({"op": "call_tool", "name": name, "arguments": arguments})
}
/// A call that records every progress notification with its arrival time.
pub fn call_with_progress(name: &str, arguments: Value) -> Value {
    json!({"op": "call_tool", "name": name, "arguments": arguments, "progress": true})
}

/// The names of a `list_tools` result, sorted.
pub fn tool_names(result: &Value) -> Vec<String> {
    let mut v: Vec<String> = result["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools in {result}"))
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// The HTTP status of the POST that carried the JSON-RPC request `rpc_method` in a step.
pub fn http_status_of(result: &Value, rpc_method: &str) -> Option<u64> {
    result["http"]
        .as_array()?
        .iter()
        .rev()
        .find(|h| h["rpc_method"] == rpc_method)
        .and_then(|h| h["status"].as_u64())
}

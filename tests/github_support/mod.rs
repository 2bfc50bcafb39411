//! The GitHub peers of tests/github_app.rs: a GitHub stand-in (`tests/github/standin.py`)
//! that authenticates a GitHub App and issues installation access tokens as GitHub
//! documents it, and PyGithub (`tests/github/driver.py`) run as an agent runs it.
//!
//! `scripts/test` installs them: PyGithub, PyJWT and jsonschema from
//! `tests/github/requirements.txt` into `target/github-venv`, and @octokit/openapi (the
//! published description the stand-in validates access-token requests against) from
//! `tests/github/package-lock.json` into `tests/github/node_modules`. These helpers only
//! run them, and fail loudly when they are missing.
//!
//! The stand-in process is started once per test binary with the public half of the
//! App's key ([`app_key`], RSA 2048 generated here with rcgen); each test takes an
//! instance of its own ([`GitHub::new`]: its own port and state), so tests in parallel
//! never see each other's requests or tokens.
//!
//! What PyGithub 2.10 does, found by running it against the stand-in:
//! - `Github(base_url=…, auth=Auth.Token(t))` sends `Authorization: token <t>` (the
//!   `token` scheme, not `Bearer`), `User-Agent: PyGithub/Python`, `Accept: */*`, and no
//!   `X-GitHub-Api-Version` unless `api_version` is given;
//! - a non-2xx answer raises `GithubException` (404 "Not Found": its subclass
//!   `UnknownObjectException`; 401 "Bad credentials": `BadCredentialsException`) with
//!   `.status` and `.data`, the JSON body as parsed;
//! - by default it retries 5xx and 403 (`GithubRetry`) and spaces requests 0.25 s apart
//!   (1 s for writes): the driver turns both off, so one call is one request;
//! - a repository fetched with `get_repo` takes the URLs of later calls from the `url`
//!   fields of GitHub's answer (here: the stand-in's own address); a lazy one builds them
//!   from `base_url`, so the driver uses lazy repositories for every call after the first.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The App's id, as configured in keygate and known to the stand-in.
pub const APP_ID: u64 = 12345;
/// The App's installation on the account `octo` (repositories hello and secret).
pub const INSTALLATION_ID: u64 = 42;
/// Repository ids of the stand-in.
pub const HELLO_ID: u64 = 1296269;
pub const SECRET_ID: u64 = 1296270;
/// The permissions the installation was granted.
pub fn installation_grant() -> Value {
    json!({"metadata": "read", "issues": "write", "contents": "read", "administration": "write"})
}

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A program of the venv `target/github-venv`.
pub fn venv_bin(name: &str) -> PathBuf {
    let p = root().join("target/github-venv/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/test, which installs the GitHub test peers \
         (tests/github/requirements.txt into target/github-venv)",
        p.display()
    );
    p
}

pub fn standin_py() -> PathBuf {
    root().join("tests/github/standin.py")
}

pub fn driver_py() -> PathBuf {
    root().join("tests/github/driver.py")
}

// ---------------------------------------------------------------- keys

/// An RSA key of a GitHub App, in the forms keygate may be given.
pub struct AppKey {
    /// PKCS#1 (`BEGIN RSA PRIVATE KEY`), as GitHub hands out an App's private key.
    pub pkcs1_pem: String,
    /// PKCS#8 (`BEGIN PRIVATE KEY`).
    pub pkcs8_pem: String,
    /// SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`): what the stand-in verifies with.
    pub public_pem: String,
}

impl AppKey {
    /// A fresh RSA 2048 key (rcgen on aws-lc-rs).
    pub fn generate() -> AppKey {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
            .expect("RSA key generation (rcgen with aws_lc_rs)");
        let pkcs8 = kp.serialize_der();
        let pkcs1 = pkcs1_of_pkcs8(&pkcs8);
        AppKey {
            pkcs1_pem: pem("RSA PRIVATE KEY", &pkcs1),
            pkcs8_pem: kp.serialize_pem(),
            public_pem: kp.public_key_pem(),
        }
    }

    /// An App JWT with `claims`, signed RS256 with this key.
    pub fn sign(&self, claims: &Value) -> String {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(self.pkcs1_pem.as_bytes()).unwrap();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            claims,
            &key,
        )
        .unwrap()
    }

    /// An App JWT as GitHub documents it: `iss` the App id, `iat` 60 s ago, `exp` in 9
    /// minutes.
    pub fn app_jwt(&self) -> String {
        let now = super::common::now();
        self.sign(&json!({"iss": APP_ID.to_string(), "iat": now - 60, "exp": now + 540}))
    }
}

/// The App key the stand-in knows (one per test binary).
pub fn app_key() -> &'static AppKey {
    static KEY: OnceLock<AppKey> = OnceLock::new();
    KEY.get_or_init(AppKey::generate)
}

/// Another RSA key: a wrong App key.
pub fn wrong_key() -> &'static AppKey {
    static KEY: OnceLock<AppKey> = OnceLock::new();
    KEY.get_or_init(AppKey::generate)
}

/// One DER element at `pos`: (tag, start of its content, end of its content).
fn der_element(der: &[u8], pos: usize) -> (u8, usize, usize) {
    let tag = der[pos];
    let first = der[pos + 1] as usize;
    let (len, start) = if first < 0x80 {
        (first, pos + 2)
    } else {
        let n = first & 0x7f;
        let mut len = 0usize;
        for b in &der[pos + 2..pos + 2 + n] {
            len = (len << 8) | *b as usize;
        }
        (len, pos + 2 + n)
    };
    (tag, start, start + len)
}

/// The RSAPrivateKey (PKCS#1) inside a PrivateKeyInfo (PKCS#8):
/// `SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING privateKey }`.
fn pkcs1_of_pkcs8(pkcs8: &[u8]) -> Vec<u8> {
    let (tag, start, _) = der_element(pkcs8, 0);
    assert_eq!(tag, 0x30, "PKCS#8 is a SEQUENCE");
    let (tag, _, end) = der_element(pkcs8, start);
    assert_eq!(tag, 0x02, "PKCS#8 version");
    let (tag, _, end) = der_element(pkcs8, end);
    assert_eq!(tag, 0x30, "PKCS#8 algorithm");
    let (tag, start, end) = der_element(pkcs8, end);
    assert_eq!(tag, 0x04, "PKCS#8 privateKey");
    pkcs8[start..end].to_vec()
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Writes `pem` to `dir/secrets/<name>` with `mode` (keygate wants 0600) and returns
/// the path relative to `dir` (where keygate.toml is).
pub fn write_key(dir: &Path, name: &str, pem: &str, mode: u32) -> String {
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = secrets.join(name);
    std::fs::write(&path, pem).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    format!("secrets/{name}")
}

// ---------------------------------------------------------------- the stand-in process

/// The stand-in process, started once per test binary. It stops when the test process
/// exits (its stdin closes).
pub struct Standin {
    pub addr: SocketAddr,
    /// What it printed on start: port, @octokit/openapi's version and the description
    /// file it loaded, the versions of PyGithub, PyJWT and jsonschema.
    pub info: Value,
    /// Its stderr: one line per request, tracebacks.
    pub log: PathBuf,
    _child: Mutex<Child>,
}

static STANDIN: OnceLock<Standin> = OnceLock::new();

/// The shared stand-in process (started on first use).
pub fn standin() -> &'static Standin {
    STANDIN.get_or_init(start_standin)
}

fn start_standin() -> Standin {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("github-tests");
    std::fs::create_dir_all(&dir).unwrap();
    // One log per test process (runs may overlap); those of past runs go after an hour.
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(3600));
        if old && e.file_name().to_string_lossy().starts_with("standin-") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let log = dir.join(format!("standin-{}.log", std::process::id()));
    let public = dir.join(format!("standin-{}.pub.pem", std::process::id()));
    std::fs::write(&public, &app_key().public_pem).unwrap();
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = Command::new(venv_bin("python"));
    cmd.arg(standin_py())
        .arg("--app-id")
        .arg(APP_ID.to_string())
        .arg("--public-key")
        .arg(&public);
    clean_env(&mut cmd, &home);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("cannot start tests/github/standin.py");
    let stdout = child.stdout.take().unwrap();
    let info = super::common::ready_line(stdout, &log, "the GitHub stand-in");
    let _ = std::fs::remove_file(&public);
    let port = info["port"].as_u64().unwrap() as u16;
    Standin {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        info,
        log,
        _child: Mutex::new(child),
    }
}

/// A child's environment with nothing of this machine's: PATH (the venv first), HOME (a
/// fresh directory), no GitHub variables but those given.
fn clean_env(cmd: &mut Command, home: &Path) {
    let path = format!(
        "{}:/usr/local/bin:/usr/bin:/bin",
        root().join("target/github-venv/bin").display()
    );
    cmd.env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        .env("PYTHONDONTWRITEBYTECODE", "1");
}

/// A minimal blocking HTTP/1.1 exchange (one request, `Connection: close`) with the
/// stand-in: (status, response headers lower-cased, JSON body or Null).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, BTreeMap<String, String>, Value) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("stand-in at {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    (
        status,
        headers,
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

// ---------------------------------------------------------------- an instance

/// One test's GitHub: an instance of the stand-in on a port of its own.
pub struct GitHub {
    pub addr: SocketAddr,
}

impl GitHub {
    /// A new instance knowing [`app_key`], App [`APP_ID`] and installation
    /// [`INSTALLATION_ID`] with [`installation_grant`].
    pub fn new() -> GitHub {
        Self::with(json!({}))
    }

    /// A new instance with overrides: `{"app_id", "public_key" (PEM), "grant"}`.
    pub fn with(overrides: Value) -> GitHub {
        let s = standin();
        let (status, _, b) = http(
            s.addr,
            "POST",
            "/_standin/instances",
            &[("content-type", "application/json")],
            &overrides.to_string(),
        );
        assert_eq!(status, 201, "new stand-in instance: {b}");
        GitHub {
            addr: SocketAddr::from(([127, 0, 0, 1], b["port"].as_u64().unwrap() as u16)),
        }
    }

    /// The base URL: a tool's `upstream` (and `api_url`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A request to this instance: (status, response headers, JSON body).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, BTreeMap<String, String>, Value) {
        http(self.addr, method, path, headers, body)
    }

    /// Every request this instance received (test-only endpoints aside), in order.
    pub fn requests(&self) -> Vec<Seen> {
        let (status, _, b) = self.call("GET", "/_standin/requests", &[], "");
        assert_eq!(status, 200, "{b}");
        b["requests"]
            .as_array()
            .unwrap()
            .iter()
            .cloned()
            .map(Seen)
            .collect()
    }

    /// The requests of one kind: `app`, `installation`, `access_tokens` or `api`.
    pub fn requests_of(&self, kind: &str) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(|r| r.kind() == kind)
            .collect()
    }

    /// The access-token requests.
    pub fn token_requests(&self) -> Vec<Seen> {
        self.requests_of("access_tokens")
    }

    /// The calls of the GitHub API proper (not App authentication).
    pub fn api_calls(&self) -> Vec<Seen> {
        self.requests_of("api")
    }

    /// Every token issued: `{"token", "installation_id", "repositories",
    /// "repository_ids", "requested_permissions", "permissions", "expires_at",
    /// "expires_at_unix"}`.
    pub fn tokens(&self) -> Vec<Value> {
        let (status, _, b) = self.call("GET", "/_standin/tokens", &[], "");
        assert_eq!(status, 200, "{b}");
        b["tokens"].as_array().unwrap().clone()
    }

    /// What `token` was issued for.
    pub fn token_info(&self, token: &str) -> Value {
        self.tokens()
            .into_iter()
            .find(|t| t["token"] == token)
            .unwrap_or_else(|| {
                panic!(
                    "the stand-in never issued {}…",
                    &token[..8.min(token.len())]
                )
            })
    }

    /// Sets failure switches: `fail_access_tokens`, `fail_installation`,
    /// `fail_delete_keys` (a status or null), `access_tokens_delay_ms`, `token_ttl`
    /// (seconds), `max_per_page` (the most items of a listing's page).
    pub fn control(&self, switches: Value) {
        let (status, _, b) = self.call(
            "POST",
            "/_standin/control",
            &[("content-type", "application/json")],
            &switches.to_string(),
        );
        assert_eq!(status, 200, "control {switches}: {b}");
    }

    /// Forgets the requests seen so far.
    pub fn reset(&self) {
        let (status, _, b) = self.call("POST", "/_standin/reset", &[], "");
        assert_eq!(status, 200, "{b}");
    }

    /// Mints a token the way an App does (App JWT, then access_tokens) with `body`.
    pub fn mint(&self, body: Value) -> (u16, Value) {
        let jwt = app_key().app_jwt();
        let auth = format!("Bearer {jwt}");
        let (status, _, b) = self.call(
            "POST",
            &format!("/app/installations/{INSTALLATION_ID}/access_tokens"),
            &[
                ("authorization", &auth),
                ("accept", "application/vnd.github+json"),
                ("x-github-api-version", "2022-11-28"),
                ("content-type", "application/json"),
            ],
            &body.to_string(),
        );
        (status, b)
    }
}

impl Drop for GitHub {
    fn drop(&mut self) {
        let _ = TcpStream::connect(self.addr).and_then(|mut s| {
            s.write_all(
                b"POST /_standin/shutdown HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            )?;
            let mut sink = Vec::new();
            s.read_to_end(&mut sink)
        });
    }
}

/// One request as the stand-in recorded it.
#[derive(Clone, Debug)]
pub struct Seen(pub Value);

impl Seen {
    pub fn kind(&self) -> &str {
        self.0["kind"].as_str().unwrap_or("")
    }
    pub fn method(&self) -> &str {
        self.0["method"].as_str().unwrap_or("")
    }
    /// The request target (path and query).
    pub fn path(&self) -> &str {
        self.0["path"].as_str().unwrap_or("")
    }
    pub fn status(&self) -> u16 {
        self.0["status"].as_u64().unwrap_or(0) as u16
    }
    /// Every value of header `name` (case-insensitive).
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.0["headers"]
            .as_array()
            .map(|hs| {
                hs.iter()
                    .filter(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
                    .map(|h| h[1].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }
    /// The body as text.
    pub fn body(&self) -> &str {
        self.0["body"].as_str().unwrap_or("")
    }
    /// The body parsed (an empty body is `{}`, as GitHub takes it).
    pub fn body_json(&self) -> Value {
        if self.body().trim().is_empty() {
            return json!({});
        }
        serde_json::from_str(self.body()).unwrap_or(Value::Null)
    }
    /// The token of `Authorization: Bearer <t>` or `token <t>`.
    pub fn credential(&self) -> Option<String> {
        let auth = self.header("authorization")?;
        let (scheme, value) = auth.split_once(' ')?;
        (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
            .then(|| value.trim().to_string())
    }
    /// Why the stand-in refused it, if it did.
    pub fn reason(&self) -> Option<&str> {
        self.0["reason"].as_str()
    }
    /// The claims of its App JWT, when one was verified.
    pub fn app_jwt(&self) -> &Value {
        &self.0["app_jwt"]
    }
    /// The token an access-token request issued.
    pub fn issued(&self) -> Option<&str> {
        self.0["issued"].as_str()
    }
    /// The time it arrived (unix seconds, fractional).
    pub fn time(&self) -> f64 {
        self.0["time"].as_f64().unwrap_or(0.0)
    }
    /// The whole record as JSON text (to search it).
    pub fn text(&self) -> String {
        self.0.to_string()
    }
}

// ---------------------------------------------------------------- PyGithub

/// A GitHub error as PyGithub raised it (`GithubException`).
#[derive(Clone, Debug)]
pub struct GhError {
    pub status: u16,
    /// The response body as PyGithub parsed it.
    pub data: Value,
    /// PyGithub's exception class (`GithubException`, `UnknownObjectException`, ...).
    pub kind: String,
    pub message: Option<String>,
}

/// PyGithub as an agent runs it: `Github(base_url=base_url, auth=Auth.Token(token))`.
#[derive(Clone, Debug)]
pub struct PyGithub {
    pub base_url: String,
    pub token: String,
}

impl PyGithub {
    pub fn new(base_url: impl Into<String>, token: impl Into<String>) -> PyGithub {
        PyGithub {
            base_url: base_url.into(),
            token: token.into(),
        }
    }

    /// Runs `tests/github/driver.py ARGS`: `Ok(result)` or the GithubException raised.
    pub async fn run(&self, args: &[&str]) -> Result<Value, GhError> {
        let me = self.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (code, v) = tokio::task::spawn_blocking(move || {
            let home = tempfile::tempdir().unwrap();
            let mut cmd = Command::new(venv_bin("python"));
            cmd.arg(driver_py()).args(&args);
            clean_env(&mut cmd, home.path());
            cmd.env("GITHUB_BASE_URL", &me.base_url)
                .env("GITHUB_TOKEN", &me.token);
            let out = cmd
                .stdin(Stdio::null())
                .output()
                .expect("cannot run tests/github/driver.py");
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            let code = out.status.code().unwrap_or(-1);
            assert!(
                code == 0 || code == 1,
                "driver.py {args:?} failed ({code}):\n{stdout}\n{stderr}"
            );
            let line = stdout.lines().last().unwrap_or("");
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|_| panic!("driver.py {args:?} printed {stdout:?}\n{stderr}"));
            (code, v)
        })
        .await
        .unwrap();
        if let Some(e) = v.get("error") {
            assert_eq!(code, 1, "driver.py: an error but exit {code}");
            return Err(GhError {
                status: e["status"].as_u64().unwrap_or(0) as u16,
                data: e["data"].clone(),
                kind: e["type"].as_str().unwrap_or("").into(),
                message: e["message"].as_str().map(str::to_string),
            });
        }
        assert_eq!(code, 0, "driver.py: a result but exit {code}");
        Ok(v["ok"].clone())
    }
}

//! Shared helpers for the integration tests: real servers on loopback.
//!
//! - [`RawUpstream`]: a TCP server that records the exact bytes each request arrived with
//!   and answers 200 (or whatever a test's responder says);
//! - [`TestIssuer`]: an Ed25519 agent-token issuer with its JWKS file;
//! - [`Pki`]: a CA, a server certificate for 127.0.0.1/localhost, and client certificates
//!   with SPIFFE IDs;
//! - [`TestGateway`]: keygate started in-process from a config text;
//! - [`Client`]: HTTP/1.1 or HTTP/2 client, cleartext or TLS, optionally with a client cert.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use keygate::config::SigningAlgorithm;
use keygate::credentials::Signer;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------------------------------------------------------------- upstream

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// Request line and headers, exactly as received.
    pub head: String,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Every byte received for this request (head and body as on the wire).
    pub raw: Vec<u8>,
}

impl Received {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
    /// The request target (path and query).
    pub fn target(&self) -> String {
        self.head.split(' ').nth(1).unwrap_or("").to_string()
    }
}

pub type Responder = Arc<dyn Fn(&Received) -> (u16, Vec<(String, String)>, Vec<u8>) + Send + Sync>;

/// A plain TCP HTTP/1.1 server recording every request's raw bytes.
pub struct RawUpstream {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl RawUpstream {
    /// Answers every request 200 with body `ok`.
    pub async fn start() -> RawUpstream {
        Self::with_responder(Arc::new(|_r: &Received| (200, vec![], b"ok".to_vec()))).await
    }

    pub async fn with_responder(responder: Responder) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let rec = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let rec = rec.clone();
                let responder = responder.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(r) = read_request(&mut s, &mut buf).await else {
                            return;
                        };
                        rec.lock().unwrap().push(r.clone());
                        let (status, headers, body) = responder(&r);
                        let mut out =
                            format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
                        for (k, v) in headers {
                            out.push_str(&format!("{k}: {v}\r\n"));
                        }
                        out.push_str("\r\n");
                        let mut bytes = out.into_bytes();
                        bytes.extend_from_slice(&body);
                        if s.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        RawUpstream { addr, received }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn read_more(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

async fn read_request(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<Received> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        if !read_more(s, buf).await {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    let consumed;
    if lower.contains("transfer-encoding: chunked") {
        let mut pos = head_end;
        loop {
            let line_end = loop {
                if let Some(i) = find(&buf[pos..], b"\r\n") {
                    break pos + i;
                }
                if !read_more(s, buf).await {
                    return None;
                }
            };
            let size_txt = String::from_utf8_lossy(&buf[pos..line_end]).to_string();
            let size =
                usize::from_str_radix(size_txt.split(';').next().unwrap().trim(), 16).ok()?;
            let start = line_end + 2;
            while buf.len() < start + size + 2 {
                if !read_more(s, buf).await {
                    return None;
                }
            }
            body.extend_from_slice(&buf[start..start + size]);
            pos = start + size + 2;
            if size == 0 {
                break;
            }
        }
        consumed = pos;
    } else {
        let len = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse::<usize>().unwrap())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            if !read_more(s, buf).await {
                return None;
            }
        }
        body.extend_from_slice(&buf[head_end..head_end + len]);
        consumed = head_end + len;
    }
    let raw = buf[..consumed].to_vec();
    buf.drain(..consumed);
    Some(Received { head, body, raw })
}

// ---------------------------------------------------------------- issuer

/// An agent-token issuer: an Ed25519 key and its JWKS file.
pub struct TestIssuer {
    pub signer: Signer,
    pub jwks_path: PathBuf,
    pub issuer: String,
    pub audience: String,
}

impl TestIssuer {
    pub fn new(dir: &Path, issuer: &str, audience: &str) -> TestIssuer {
        let key = dir.join(format!("{issuer}-key.pem"));
        let signer = Signer::load_or_generate(&key, SigningAlgorithm::EdDsa, true).unwrap();
        let jwks_path = dir.join(format!("{issuer}-jwks.json"));
        std::fs::write(
            &jwks_path,
            keygate::credentials::signer::jwks_document([&signer]),
        )
        .unwrap();
        TestIssuer {
            signer,
            jwks_path,
            issuer: issuer.into(),
            audience: audience.into(),
        }
    }

    /// A valid token for `agent`, good for an hour.
    pub fn token(&self, agent: &str) -> String {
        self.sign(serde_json::json!({
            "iss": self.issuer, "aud": self.audience, "sub": agent,
            "iat": now(), "exp": now() + 3600,
        }))
    }

    pub fn sign(&self, claims: serde_json::Value) -> String {
        self.signer.sign_jwt(&claims).unwrap()
    }

    /// The `[[identity.issuers]]` TOML block for this issuer.
    pub fn toml(&self) -> String {
        format!(
            "[[identity.issuers]]\nname = {:?}\nissuer = {:?}\naudiences = [{:?}]\njwks_file = {:?}\n",
            self.issuer,
            self.issuer,
            self.audience,
            self.jwks_path.display().to_string()
        )
    }
}

// ---------------------------------------------------------------- PKI

/// A test CA with a server certificate and a way to issue client certificates.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_cert_pem: String,
    ca_cert: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
    pub ca_path: PathBuf,
    pub server_cert_path: PathBuf,
    pub server_key_path: PathBuf,
}

/// A client certificate and key, PEM.
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "keygate test CA");
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = p.self_signed(&ca_key).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let mut sp =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        sp.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = sp.signed_by(&server_key, &ca_cert, &ca_key).unwrap();
        let ca_path = dir.join("ca.pem");
        let server_cert_path = dir.join("server.pem");
        let server_key_path = dir.join("server-key.pem");
        std::fs::write(&ca_path, ca_cert.pem()).unwrap();
        std::fs::write(&server_cert_path, server_cert.pem()).unwrap();
        std::fs::write(&server_key_path, server_key.serialize_pem()).unwrap();
        Pki {
            dir: dir.to_path_buf(),
            ca_cert_pem: ca_cert.pem(),
            ca_cert,
            ca_key,
            ca_path,
            server_cert_path,
            server_key_path,
        }
    }

    /// A client certificate signed by this CA with `spiffe_id` as its URI SAN.
    pub fn client_cert(&self, spiffe_id: &str) -> ClientCert {
        use rcgen::{CertificateParams, KeyPair, SanType};
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![SanType::URI(spiffe_id.try_into().unwrap())];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        ClientCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// `[server.tls]` TOML for the gateway with the given client_auth mode.
    pub fn server_toml(&self, client_auth: &str) -> String {
        format!(
            "[server.tls]\ncert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\nclient_auth = {:?}\n",
            self.server_cert_path.display().to_string(),
            self.server_key_path.display().to_string(),
            self.ca_path.display().to_string(),
            client_auth
        )
    }
}

// ---------------------------------------------------------------- gateway

/// keygate started in-process.
/// What one run of the keygate CLI did.
pub struct Cli {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

pub struct TestGateway {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The forward-proxy listener, when the config has a `[proxy]`.
    pub proxy_addr: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    pub audit_path: PathBuf,
    pub runtime: Arc<keygate::Runtime>,
    running: Option<keygate::server::Running>,
}

/// The repository's default policies (every agent may call every tool; identity creation
/// and privilege escalation need approval) copied into `dir/policies`.
pub fn copy_default_policies(dir: &Path) -> PathBuf {
    let to = dir.join("policies");
    std::fs::create_dir_all(&to).unwrap();
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for f in ["keygate.cedarschema", "default.cedar"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    to
}

impl TestGateway {
    /// Starts keygate with `config` (TOML) written to a fresh directory. Unless the config
    /// has the section itself: the listener and the admin API are on free ports of
    /// 127.0.0.1, and the audit log, store, admin token and policies (the repository's
    /// defaults) are in that directory.
    pub async fn start(config: &str) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, config).await
    }

    pub async fn start_in(dir: tempfile::TempDir, config: &str) -> TestGateway {
        let path = Self::write_config(&dir, config);
        let text = std::fs::read_to_string(&path).unwrap();
        let snapshot = match keygate::config::parse(&path, &text) {
            Ok(s) => s,
            Err(e) => panic!("config errors:\n{e}\n---\n{text}"),
        };
        let audit_path = dir.path().join("audit.jsonl");
        let runtime = keygate::Runtime::start(snapshot).await.unwrap();
        let running = keygate::server::serve(runtime.clone()).await.unwrap();
        TestGateway {
            addr: running.local_addr,
            admin_addr: running.admin_addr,
            proxy_addr: running.proxy_addr,
            dir,
            audit_path,
            runtime,
            running: Some(running),
        }
    }

    /// Writes `keygate.toml` (with the test defaults above) into `dir`; returns its path.
    pub fn write_config(dir: &tempfile::TempDir, config: &str) -> PathBuf {
        let audit_path = dir.path().join("audit.jsonl");
        let mut text = String::new();
        if !config.contains("[server]") {
            text.push_str("[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n");
        }
        if !config.contains("[audit]") {
            text.push_str(&format!(
                "[audit]\npath = {:?}\n",
                audit_path.display().to_string()
            ));
        }
        if !config.contains("[admin]") {
            text.push_str("[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n");
        }
        if !config.contains("[store]") {
            text.push_str("[store]\npath = \"keygate.db\"\n");
        }
        if !config.contains("[policies]") {
            copy_default_policies(dir.path());
            text.push_str("[policies]\ndir = \"policies\"\n");
        }
        text.push_str(config);
        let path = dir.path().join("keygate.toml");
        std::fs::write(&path, &text).unwrap();
        path
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The current gateway.
    pub fn gateway(&self) -> Arc<keygate::Gateway> {
        self.runtime.current()
    }

    /// Moves this gateway's clock forward by `by`: what expires by then (approvals,
    /// minted-token reuse, agent tokens) has expired, without the test sleeping. Only this
    /// gateway's clock moves; the other tests' gateways keep theirs.
    pub fn advance_clock(&self, by: Duration) {
        self.runtime.shared.clock.advance(by);
    }

    /// Gracefully stops keygate (flushing the audit log) and waits for it.
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
            r.wait().await;
        }
    }

    /// The audit records written so far (waits briefly for the writer).
    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let auth = bearer(&self.runtime.shared.admin_token);
        Client::http1()
            .get(
                &format!("http://{}/metrics", self.admin_addr),
                &[("authorization", &auth)],
            )
            .await
            .text()
    }

    pub async fn audit(&self) -> Vec<serde_json::Value> {
        self.runtime.shared.audit.close().await;
        std::fs::read_to_string(&self.audit_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Runs `keygate ARGS` against this gateway's admin API (its URL and token in the
    /// environment, the gateway's directory as the working directory), off the runtime's
    /// threads, within a minute.
    pub async fn cli(&self, args: &[&str]) -> Cli {
        let url = format!("http://{}", self.admin_addr);
        self.cli_with(&url, &self.runtime.shared.admin_token, args)
            .await
    }

    /// [`TestGateway::cli`] with another admin URL and token.
    pub async fn cli_with(&self, url: &str, token: &str, args: &[&str]) -> Cli {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (url, token, dir) = (
            url.to_string(),
            token.to_string(),
            self.dir.path().to_path_buf(),
        );
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
                .args(&args)
                .env("KEYGATE_ADMIN_URL", url)
                .env("KEYGATE_ADMIN_TOKEN", token)
                .current_dir(dir)
                .output()
                .unwrap()
        });
        let out = tokio::time::timeout(Duration::from_secs(60), out)
            .await
            .expect("the CLI did not finish")
            .unwrap();
        Cli {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Calls the admin API with the admin token; returns (status, JSON body).
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let token = self.runtime.shared.admin_token.clone();
        let auth = bearer(&token);
        let r = Client::http1()
            .send(
                method,
                &format!("http://{}{}", self.admin_addr, path),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                body.map(|b| b.to_string()).unwrap_or_default(),
            )
            .await;
        (r.status, r.json())
    }
}

// ---------------------------------------------------------------- secrets
//
// How a test gives keygate a secret: in a file, never through the process environment.
// The tests of one file run in parallel threads of one process, where `std::env::set_var`
// races with every environment read (and is unsound for it). So:
//
// - a tool's static secret: [`secret_file`] writes it under the gateway's directory (the
//   `tempfile::TempDir` passed to [`TestGateway::start_in`]) and returns the
//   `from_file = ...` line for the tool's `[tools.credential]` table, which
//   [`static_tool`] takes;
// - the admin token: [`TestGateway`] points `[admin] token_file` at `admin.token` in the
//   same directory (generated on first start; [`TestGateway::admin`] reads it back);
// - a test of an environment source itself (`from_env`, `token_env`, `KEYGATE_*`) runs
//   the keygate binary as a child process and sets the variable with `Command::env`.

/// Writes `value` to `secrets/<name>` under `dir` (the gateway's directory) and returns
/// the credential line that reads it: `from_file = "secrets/<name>"` (a relative path is
/// resolved against the folder of `keygate.toml`, which is `dir`).
pub fn secret_file(dir: &Path, name: &str, value: &str) -> String {
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join(name), value).unwrap();
    format!("from_file = \"secrets/{name}\"\n")
}

/// The credential line `from_env = "<var>"`: only for keygate run as a child process
/// with `Command::env` (see above), or for a variable no test sets.
pub fn from_env(var: &str) -> String {
    format!("from_env = {var:?}\n")
}

/// A `[[tools]]` block with a static bearer credential read from `source`
/// ([`secret_file`] or [`from_env`]).
pub fn static_tool(name: &str, upstream: &str, source: &str) -> String {
    format!(
        "[[tools]]\nname = {name:?}\nupstream = {upstream:?}\n[tools.credential]\nprovider = \"static\"\n{source}"
    )
}

/// An `[[agents]]` block.
pub fn agent(id: &str, owner: &str) -> String {
    format!("[[agents]]\nid = {id:?}\nowner = {owner:?}\n")
}

// ---------------------------------------------------------------- client

pub struct Response {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

type Inner = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// An HTTP client for tests.
#[derive(Clone)]
pub struct Client {
    inner: Inner,
}

impl Client {
    /// HTTP/1.1, cleartext (or TLS trusting nothing but the system roots).
    pub fn http1() -> Client {
        Self::build(None, None, false)
    }
    /// HTTP/2 with prior knowledge over cleartext, or ALPN h2 over TLS.
    pub fn http2() -> Client {
        Self::build(None, None, true)
    }
    /// TLS trusting `pki`'s CA, with an optional client certificate.
    pub fn tls(pki: &Pki, client: Option<&ClientCert>, h2: bool) -> Client {
        Self::build(Some(pki), client, h2)
    }

    fn build(pki: Option<&Pki>, client: Option<&ClientCert>, h2: bool) -> Client {
        use rustls::pki_types::pem::PemObject;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        if let Some(p) = pki {
            for c in rustls::pki_types::CertificateDer::pem_slice_iter(p.ca_cert_pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
        }
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let cfg = match client {
            Some(c) => {
                let certs =
                    rustls::pki_types::CertificateDer::pem_slice_iter(c.cert_pem.as_bytes())
                        .map(|c| c.unwrap())
                        .collect();
                let key =
                    rustls::pki_types::PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap();
                b.with_client_auth_cert(certs, key).unwrap()
            }
            None => b.with_no_client_auth(),
        };
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        let conn = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(cfg)
            .https_or_http();
        let conn = if h2 {
            conn.enable_http2().wrap_connector(http)
        } else {
            conn.enable_http1().wrap_connector(http)
        };
        let inner =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(h2)
                .build(conn);
        Client { inner }
    }

    /// Sends a request; `headers` are (name, value) pairs.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Response {
        let mut b = http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(body.into())).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(20), self.inner.request(req))
            .await
            .expect("request timed out")
            .expect("request failed");
        let status = resp.status().as_u16();
        let version = resp.version();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Response {
            status,
            headers,
            body,
            version,
        }
    }

    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Response {
        self.send("GET", url, headers, Bytes::new()).await
    }

    /// Sends a request and returns the streaming response.
    pub async fn stream(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> http::Response<hyper::body::Incoming> {
        let mut b = http::Request::builder().method("GET").uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.inner
            .request(b.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap()
    }
}

/// Bearer header pair.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Sends raw bytes on a new connection and returns everything read until the server
/// closes or `wait` passes.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------- fallible requests

impl Client {
    /// Like [`Client::get`], but an exchange that fails (refused TLS handshake, reset
    /// connection) is returned as an error instead of panicking.
    pub async fn try_get(&self, url: &str, headers: &[(&str, &str)]) -> Result<Response, String> {
        let mut b = http::Request::builder().method("GET").uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(20), self.inner.request(req))
            .await
            .map_err(|_| "request timed out".to_string())?
            .map_err(|e| format!("request failed: {e:?}"))?;
        let status = resp.status().as_u16();
        let version = resp.version();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Response {
            status,
            headers,
            body,
            version,
        })
    }
}

// ---------------------------------------------------------------- restart

impl TestGateway {
    /// Stops keygate gracefully and starts it again in the same directory with the same
    /// `keygate.toml`: same store, admin token, keys and audit log; new listener ports.
    pub async fn restart(mut self) -> TestGateway {
        self.stop().await;
        let text = std::fs::read_to_string(self.dir.path().join("keygate.toml")).unwrap();
        TestGateway::start_in(self.dir, &text).await
    }
}

// ---------------------------------------------------------------- logs and files

/// Everything keygate logged in this process (every gateway of every test), at trace
/// level, as JSON lines.
pub fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .with_writer(move || LogSink(sink.clone()))
            .try_init();
        buf
    })
    .clone()
}

pub struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

// ---------------------------------------------------------------- peers and approvals

/// The first line a test peer prints on stdout (its port and facts, as JSON), within 60
/// s; `what` names the peer in the panic, with its log.
pub fn ready_line(stdout: std::process::ChildStdout, log: &Path, what: &str) -> serde_json::Value {
    use std::io::{BufRead, BufReader};
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
    serde_json::from_str(&line).unwrap_or_else(|_| {
        panic!(
            "{what} did not start: {line:?}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    })
}

/// Approves pending approval `id` through the admin API (bob approves, carol owns what is
/// created, ticket `ticket`).
pub async fn approve_as_bob(gw: &TestGateway, id: &str, ticket: &str) {
    let body = serde_json::json!({"approver": "bob@example.com", "owner": "carol@example.com", "ticket": ticket});
    let (s, b) = gw
        .admin("POST", &format!("/approvals/{id}/approve"), Some(body))
        .await;
    assert_eq!(s, 200, "approving {id}: {b}");
    assert_eq!(b["status"], "approved", "{b}");
}

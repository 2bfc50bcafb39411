//! The AWS peers of tests/aws.rs: moto's server as the AWS keygate signs for (request
//! authentication on), a recording relay in front of it, and boto3 / the AWS CLI run as
//! an agent runs them.
//!
//! `scripts/test` installs them from `tests/aws/requirements.txt` into `target/aws-venv`;
//! these helpers only run them, and fail loudly when they are missing.
//!
//! What moto (5.2.5, server mode) does, found by experiment:
//! - Authentication: moto starts with it off; `POST /moto-api/reset-auth` with body `0`
//!   (Content-Type text/plain) turns it on at once (the `INITIAL_NO_AUTH_ACTION_COUNT`
//!   setting, counted from that call). From then on every request must carry a SigV4
//!   `Authorization` by a key moto issued: an unknown key id gets `InvalidClientTokenId`
//!   (IAM/STS) or `InvalidAccessKeyId` (S3); a wrong signature `SignatureDoesNotMatch`; an
//!   AssumeRole session key without its session token `InvalidClientTokenId`. moto
//!   recomputes the signature with botocore over the headers it received (Host included),
//!   taking the payload hash from `x-amz-content-sha256` as sent, so a relay in between
//!   that forwards bytes unchanged does not disturb it.
//! - moto does NOT check `X-Amz-Date` against its clock: a replayed request is accepted by
//!   moto, so `RequestExpired` is keygate's own check.
//! - Authorization: the caller's identity policies (user or role, inline and attached) are
//!   enforced, and AssumeRole also checks the role's trust policy. Session policies (the
//!   `Policy` of AssumeRole) are accepted and recorded but NOT enforced: a session whose
//!   policy allows only `iam:ListUsers` may still create a bucket. So the tests check the
//!   Policy keygate sends, not moto's enforcement of it. `sts:GetCallerIdentity` is always
//!   allowed. `SourceIdentity` and session `Tags` are accepted.
//! - Bodies: S3 decodes `STREAMING-UNSIGNED-PAYLOAD-TRAILER` (aws-chunked; the trailer's
//!   checksum is dropped, not verified) and `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` (chunk
//!   signatures not verified); request bodies with `Transfer-Encoding: chunked` are
//!   accepted; `Expect: 100-continue` gets an interim `100 Continue`.
//! - Dispatch: with Host `127.0.0.1:port` moto picks the service from the credential scope
//!   of the `Authorization` header (`.../us-east-1/sts/aws4_request`); S3 is path-style.
#![allow(dead_code)]

use super::common::{Pki, Received};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub const ACCOUNT: &str = "123456789012";
pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/keygate-agents";

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A program of the venv `target/aws-venv` (python, aws).
pub fn venv_bin(name: &str) -> PathBuf {
    let p = root().join("target/aws-venv/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/test, which installs the AWS test peers \
         (tests/aws/requirements.txt into target/aws-venv)",
        p.display()
    );
    p
}

pub fn driver_py() -> PathBuf {
    root().join("tests/aws/driver.py")
}

// ---------------------------------------------------------------- moto

/// moto's server, started once per test binary and set up for keygate (see
/// `tests/aws/driver.py serve-moto`): user `keygate` (may assume the role; its access key
/// is keygate's base credential) and role `keygate-agents` (iam:*, s3:*,
/// sts:GetCallerIdentity). It stops when the test process exits (its stdin closes).
pub struct Moto {
    pub addr: SocketAddr,
    pub base_access_key_id: String,
    pub base_secret_access_key: String,
    pub version: String,
    /// moto's own output (werkzeug's request lines, tracebacks).
    pub log: PathBuf,
    /// How long starting and setting it up took.
    pub setup: Duration,
    _child: Mutex<Child>,
}

static MOTO: OnceLock<Moto> = OnceLock::new();

/// The shared moto server (started on first use).
pub fn moto() -> &'static Moto {
    MOTO.get_or_init(start_moto)
}

fn start_moto() -> Moto {
    let started = std::time::Instant::now();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("aws-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("moto.log");
    let home = dir.join("moto-home");
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = Command::new(venv_bin("python"));
    cmd.arg(driver_py()).arg("serve-moto");
    clean_env(&mut cmd, &home);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("cannot start moto (tests/aws/driver.py serve-moto)");
    let stdout = child.stdout.take().unwrap();
    let v = super::common::ready_line(stdout, &log, "moto");
    let port = v["port"].as_u64().unwrap() as u16;
    Moto {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        base_access_key_id: v["base_access_key_id"].as_str().unwrap().into(),
        base_secret_access_key: v["base_secret_access_key"].as_str().unwrap().into(),
        version: v["moto"].as_str().unwrap_or("").into(),
        log,
        setup: started.elapsed(),
        _child: Mutex::new(child),
    }
}

impl Moto {
    /// keygate's base credential in the `credential_process` JSON form, for `from_file`.
    pub fn base_credential_json(&self) -> String {
        serde_json::json!({
            "Version": 1,
            "AccessKeyId": self.base_access_key_id,
            "SecretAccessKey": self.base_secret_access_key,
        })
        .to_string()
    }
}

// ---------------------------------------------------------------- relay

/// One request the relay forwarded to moto, and moto's answer.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub request: Received,
    pub status: u16,
    /// The final response's head (moto's interim 1xx answers are in `response_raw` only).
    pub response_head: String,
    /// The response body, de-chunked.
    pub response_body: Vec<u8>,
    /// Every byte moto answered (interim responses included).
    pub response_raw: Vec<u8>,
}

/// Credentials of an AssumeRole session, as moto issued them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
}

impl Exchange {
    /// A request header (first value, case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.request.header(name)
    }

    /// The access key id of the request's SigV4 `Authorization` (`Credential=<id>/...`).
    pub fn access_key_id(&self) -> Option<String> {
        let auth = self.header("authorization")?;
        let cred = auth.split("Credential=").nth(1)?;
        Some(cred.split('/').next()?.to_string())
    }

    /// The service of the credential scope (`iam`, `sts`, `s3`).
    pub fn service(&self) -> Option<String> {
        let auth = self.header("authorization")?;
        let cred = auth.split("Credential=").nth(1)?;
        Some(cred.split(',').next()?.split('/').nth(3)?.to_string())
    }

    /// Query-string and form-body parameters (decoded), in order.
    pub fn params(&self) -> Vec<(String, String)> {
        let target = self.request.target();
        let mut out: Vec<(String, String)> = match target.split_once('?') {
            Some((_, q)) => form_urlencoded::parse(q.as_bytes()).into_owned().collect(),
            None => vec![],
        };
        let form = self
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if form {
            out.extend(form_urlencoded::parse(&self.request.body).into_owned());
        }
        out
    }

    pub fn param(&self, name: &str) -> Option<String> {
        self.params()
            .into_iter()
            .find_map(|(k, v)| (k == name).then_some(v))
    }

    /// The operation: `sts:AssumeRole`, `iam:ListUsers` (Query `Action`), or for S3 one
    /// of `s3:CreateBucket`, `s3:PutObject`, `s3:GetObject`, `s3:HeadObject`,
    /// `s3:ListBuckets`, `s3:ListObjects`, `s3:<METHOD>` otherwise.
    pub fn action(&self) -> String {
        let service = self.service().unwrap_or_default();
        if let Some(a) = self.param("Action") {
            return format!("{service}:{a}");
        }
        let method = self
            .request
            .head
            .split(' ')
            .next()
            .unwrap_or("")
            .to_string();
        let target = self.request.target();
        let path = target.split('?').next().unwrap_or("");
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let op = match (method.as_str(), segments.len()) {
            ("GET", 0) => "ListBuckets",
            ("PUT", 1) => "CreateBucket",
            ("GET", 1) => "ListObjects",
            ("PUT", _) => "PutObject",
            ("GET", _) => "GetObject",
            ("HEAD", n) if n > 1 => "HeadObject",
            _ => return format!("{service}:{method}"),
        };
        format!("{service}:{op}")
    }

    pub fn is_assume_role(&self) -> bool {
        self.param("Action").as_deref() == Some("AssumeRole")
    }

    /// The session `Policy` of an AssumeRole request, parsed.
    pub fn session_policy(&self) -> Option<Value> {
        serde_json::from_str(&self.param("Policy")?).ok()
    }

    /// Session tags of an AssumeRole request: `Tags.member.N.Key` → `...Value`.
    pub fn session_tags(&self) -> Vec<(String, String)> {
        let params = self.params();
        let mut out = vec![];
        for n in 1.. {
            let key = format!("Tags.member.{n}.Key");
            let value = format!("Tags.member.{n}.Value");
            let Some(k) = params.iter().find(|(p, _)| *p == key) else {
                break;
            };
            let v = params
                .iter()
                .find(|(p, _)| *p == value)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            out.push((k.1.clone(), v));
        }
        out
    }

    /// The credentials in a successful AssumeRole response.
    pub fn session_credentials(&self) -> Option<SessionCredentials> {
        if !self.is_assume_role() || self.status != 200 {
            return None;
        }
        let body = String::from_utf8_lossy(&self.response_body);
        Some(SessionCredentials {
            access_key_id: xml_text(&body, "AccessKeyId")?,
            secret_access_key: xml_text(&body, "SecretAccessKey")?,
            session_token: xml_text(&body, "SessionToken")?,
        })
    }
}

/// The text of the first `<tag>…</tag>` (no nesting, no entities beyond what tests need).
pub fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(xml[start..end].to_string())
}

/// A TCP proxy on 127.0.0.1 in front of an HTTP/1.1 upstream (moto) that forwards every
/// byte unchanged both ways and records each exchange. One per test, so a test sees only
/// its own traffic; moto behind it is shared. Cleartext, or TLS towards its clients
/// ([`Relay::start_tls`], for boto3 talking to moto directly over https).
pub struct Relay {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Exchange>>>,
    stop: Arc<AtomicBool>,
    tls: bool,
}

impl Relay {
    /// A relay in front of the shared moto.
    pub fn to_moto() -> Relay {
        Self::start(moto().addr, None)
    }

    /// A relay in front of the shared moto that its clients reach over TLS with `pki`'s
    /// server certificate.
    pub fn to_moto_tls(pki: &Pki) -> Relay {
        Self::start(moto().addr, Some(pki))
    }

    pub fn start(upstream: SocketAddr, pki: Option<&Pki>) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tls = pki.map(server_tls_config);
        let relay = Relay {
            addr,
            log: log.clone(),
            stop: stop.clone(),
            tls: tls.is_some(),
        };
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let log = log.clone();
                let tls = tls.clone();
                std::thread::spawn(move || match tls {
                    None => relay_connection(client, upstream, &log),
                    Some(cfg) => {
                        let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                            return;
                        };
                        relay_connection(rustls::StreamOwned::new(conn, client), upstream, &log)
                    }
                });
            }
        });
        relay
    }

    /// The relay's URL: a tool's `upstream` or `sts_endpoint`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Every exchange so far, in the order the requests were complete.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.log.lock().unwrap().clone()
    }

    /// The AssumeRole exchanges.
    pub fn assume_roles(&self) -> Vec<Exchange> {
        self.exchanges()
            .into_iter()
            .filter(|e| e.is_assume_role())
            .collect()
    }

    /// Every exchange but AssumeRole: the calls forwarded to the tool.
    pub fn tool_calls(&self) -> Vec<Exchange> {
        self.exchanges()
            .into_iter()
            .filter(|e| !e.is_assume_role())
            .collect()
    }

    /// The session credentials moto issued through this relay.
    pub fn sessions(&self) -> Vec<SessionCredentials> {
        self.exchanges()
            .iter()
            .filter_map(Exchange::session_credentials)
            .collect()
    }

    /// How many forwarded requests were `action` (e.g. `iam:CreateUser`).
    pub fn count(&self, action: &str) -> usize {
        self.exchanges()
            .iter()
            .filter(|e| e.action() == action)
            .count()
    }

    /// Every byte the relay saw, both ways.
    pub fn all_bytes(&self) -> Vec<u8> {
        let mut out = vec![];
        for e in self.exchanges() {
            out.extend_from_slice(&e.request.raw);
            out.extend_from_slice(&e.response_raw);
        }
        out
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn server_tls_config(pki: &Pki) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&pki.server_cert_path)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&pki.server_key_path).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// A stream with the bytes read from it but not yet consumed.
struct Buffered<S> {
    s: S,
    buf: Vec<u8>,
}

impl<S: Read> Buffered<S> {
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.s.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Waits until `n` bytes are buffered.
    fn need(&mut self, n: usize) -> bool {
        while self.buf.len() < n {
            if !self.fill() {
                return false;
            }
        }
        true
    }

    /// The end of the line starting at `from` (index of its CR).
    fn line_end(&mut self, from: usize) -> Option<usize> {
        loop {
            if let Some(i) = find(&self.buf[from.min(self.buf.len())..], b"\r\n") {
                return Some(from + i);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Reads a head (through the empty line); returns its length.
    fn head(&mut self) -> Option<usize> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                return Some(i + 4);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Reads the body after a head of `head_len` bytes: chunked, Content-Length, none, or
    /// (responses only) until the connection closes. Returns (body de-chunked, bytes).
    fn body(&mut self, head_len: usize, head: &str, to_eof: bool) -> Option<(Vec<u8>, usize)> {
        let chunked = header_of(head, "transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let mut body = vec![];
        if chunked {
            let mut pos = head_len;
            loop {
                let end = self.line_end(pos)?;
                let size_text = String::from_utf8_lossy(&self.buf[pos..end]).to_string();
                let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
                pos = end + 2;
                if size == 0 {
                    // Trailer fields, then the empty line.
                    loop {
                        let end = self.line_end(pos)?;
                        let empty = end == pos;
                        pos = end + 2;
                        if empty {
                            return Some((body, pos));
                        }
                    }
                }
                if !self.need(pos + size + 2) {
                    return None;
                }
                body.extend_from_slice(&self.buf[pos..pos + size]);
                pos += size + 2;
            }
        }
        if let Some(len) = header_of(head, "content-length") {
            let len: usize = len.trim().parse().ok()?;
            if !self.need(head_len + len) {
                return None;
            }
            body.extend_from_slice(&self.buf[head_len..head_len + len]);
            return Some((body, head_len + len));
        }
        if to_eof {
            while self.fill() {}
            body.extend_from_slice(&self.buf[head_len..]);
            return Some((body, self.buf.len()));
        }
        Some((body, head_len))
    }

    /// Removes and returns the first `n` buffered bytes.
    fn take(&mut self, n: usize) -> Vec<u8> {
        self.buf.drain(..n).collect()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Relays one client connection: each request is read whole, recorded, forwarded; each
/// final response read whole and forwarded back.
fn relay_connection<S: Read + Write>(
    client: S,
    upstream: SocketAddr,
    log: &Arc<Mutex<Vec<Exchange>>>,
) {
    let mut client = Buffered {
        s: client,
        buf: vec![],
    };
    let mut up: Option<Buffered<TcpStream>> = None;
    loop {
        let Some(head_len) = client.head() else {
            return;
        };
        let head = String::from_utf8_lossy(&client.buf[..head_len]).into_owned();
        // A client waiting for `100 Continue` (botocore waits a second) gets it from the
        // relay at once; moto's own interim answer is then not forwarded.
        if header_of(&head, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
            && (client
                .s
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .is_err()
                || client.s.flush().is_err())
        {
            return;
        }
        let Some((body, len)) = client.body(head_len, &head, false) else {
            return;
        };
        let raw = client.take(len);
        let method = head.split(' ').next().unwrap_or("").to_string();
        if up.is_none() {
            let Ok(s) = TcpStream::connect(upstream) else {
                return;
            };
            up = Some(Buffered { s, buf: vec![] });
        }
        let Some(u) = up.as_mut() else { return };
        if u.s.write_all(&raw).is_err() {
            return;
        }
        let mut response_raw = vec![];
        let (status, response_head, response_body, close) = loop {
            let Some(rhead_len) = u.head() else { return };
            let rhead = String::from_utf8_lossy(&u.buf[..rhead_len]).into_owned();
            let status: u16 = rhead
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if (100..200).contains(&status) {
                // Interim: recorded, not forwarded (see above).
                response_raw.extend_from_slice(&u.take(rhead_len));
                continue;
            }
            let no_body = method == "HEAD" || status == 204 || status == 304;
            let (rbody, rlen) = if no_body {
                (vec![], rhead_len)
            } else {
                let Some(b) = u.body(rhead_len, &rhead, true) else {
                    return;
                };
                b
            };
            let close = header_of(&rhead, "connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                || (!no_body
                    && header_of(&rhead, "content-length").is_none()
                    && header_of(&rhead, "transfer-encoding").is_none());
            let bytes = u.take(rlen);
            if client.s.write_all(&bytes).is_err() || client.s.flush().is_err() {
                return;
            }
            response_raw.extend_from_slice(&bytes);
            break (status, rhead, rbody, close);
        };
        log.lock().unwrap().push(Exchange {
            request: Received { head, body, raw },
            status,
            response_head,
            response_body,
            response_raw,
        });
        if close {
            return;
        }
    }
}

// ---------------------------------------------------------------- clients

/// What an AWS client process is given: endpoint, keys and (optionally) a JWT to send as
/// `Proxy-Authorization` and a CA to trust.
#[derive(Clone, Debug, Default)]
pub struct AwsEnv {
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub jwt: Option<String>,
    /// A task the calls name (`Keygate-Task`).
    pub task: Option<String>,
    pub ca: Option<PathBuf>,
}

/// An AWS error as boto3 raised it (botocore ClientError).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsError {
    pub code: String,
    pub message: String,
    pub status: u16,
}

impl AwsEnv {
    pub fn new(endpoint: impl Into<String>, key_id: &str, secret: &str) -> AwsEnv {
        AwsEnv {
            endpoint: endpoint.into(),
            access_key_id: key_id.into(),
            secret_access_key: secret.into(),
            ..AwsEnv::default()
        }
    }

    fn apply(&self, cmd: &mut Command, home: &Path) {
        clean_env(cmd, home);
        cmd.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", &self.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_access_key);
        if let Some(t) = &self.session_token {
            cmd.env("AWS_SESSION_TOKEN", t);
        }
        if let Some(j) = &self.jwt {
            cmd.env("KEYGATE_JWT", j);
        }
        if let Some(t) = &self.task {
            cmd.env("KEYGATE_TASK", t);
        }
        if let Some(ca) = &self.ca {
            for var in [
                "AWS_CA_BUNDLE",
                "REQUESTS_CA_BUNDLE",
                "SSL_CERT_FILE",
                "CURL_CA_BUNDLE",
            ] {
                cmd.env(var, ca);
            }
        }
    }

    /// Runs `tests/aws/driver.py ARGS` (boto3): `Ok(result)` or the AWS error it raised.
    pub async fn boto(&self, args: &[&str]) -> Result<Value, AwsError> {
        let v = self.boto_json(args).await;
        if let Some(e) = v.get("error") {
            return Err(AwsError {
                code: e["code"].as_str().unwrap_or("").into(),
                message: e["message"].as_str().unwrap_or("").into(),
                status: e["status"].as_u64().unwrap_or(0) as u16,
            });
        }
        Ok(v["ok"].clone())
    }

    /// Runs `tests/aws/driver.py ARGS` (boto3): the line it printed, `{"ok": …}` or
    /// `{"error": …}`, whole.
    pub async fn boto_json(&self, args: &[&str]) -> Value {
        let mut all = vec![driver_py().display().to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        let out = self.run(venv_bin("python"), all).await;
        assert!(
            out.status == 0,
            "driver.py {args:?} failed ({}):\n{}\n{}",
            out.status,
            out.stdout,
            out.stderr
        );
        let line = out.stdout.lines().last().unwrap_or("");
        serde_json::from_str(line)
            .unwrap_or_else(|_| panic!("driver.py {args:?} printed {:?}", out.stdout))
    }

    /// Runs the AWS CLI (`aws --endpoint-url <endpoint> ARGS --output json`).
    pub async fn cli(&self, args: &[&str]) -> ProcessOutput {
        let mut all = vec!["--endpoint-url".to_string(), self.endpoint.clone()];
        all.extend(args.iter().map(|s| s.to_string()));
        all.extend(["--output".into(), "json".into()]);
        self.run(venv_bin("aws"), all).await
    }

    async fn run(&self, program: PathBuf, args: Vec<String>) -> ProcessOutput {
        let env = self.clone();
        tokio::task::spawn_blocking(move || {
            let home = tempfile::tempdir().unwrap();
            let mut cmd = Command::new(&program);
            cmd.args(&args);
            env.apply(&mut cmd, home.path());
            let out = cmd
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
            ProcessOutput {
                status: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        })
        .await
        .unwrap()
    }
}

pub struct ProcessOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A child's environment with nothing of this machine's: PATH (the venv first), HOME (a
/// fresh directory), no AWS config or credentials files, no instance metadata, one try
/// per call (no SDK retries that would blur what reached moto).
fn clean_env(cmd: &mut Command, home: &Path) {
    let path = format!(
        "{}:/usr/local/bin:/usr/bin:/bin",
        root().join("target/aws-venv/bin").display()
    );
    cmd.env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        .env("AWS_CONFIG_FILE", home.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            home.join("no-aws-credentials"),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("AWS_RETRY_MODE", "standard")
        .env("AWS_PAGER", "");
}

/// boto3 acting directly on moto, around keygate: a session of the agents' role, assumed
/// with keygate's base key.
pub async fn role_session_at_moto() -> AwsEnv {
    let m = moto();
    let url = format!("http://{}", m.addr);
    let base = AwsEnv::new(&url, &m.base_access_key_id, &m.base_secret_access_key);
    let s = base.boto(&["assume-role", ROLE_ARN]).await.unwrap();
    let mut env = AwsEnv::new(
        &url,
        s["access_key_id"].as_str().unwrap(),
        s["secret_access_key"].as_str().unwrap(),
    );
    env.session_token = Some(s["session_token"].as_str().unwrap().to_string());
    env
}

/// The approval id in an `approval_required` message: `... (approval_id: <id>)`.
pub fn approval_id_in(message: &str) -> String {
    let at = message
        .find("approval_id: ")
        .unwrap_or_else(|| panic!("no approval id in {message:?}"))
        + "approval_id: ".len();
    message[at..]
        .split(|c: char| c == ')' || c.is_whitespace())
        .next()
        .unwrap()
        .to_string()
}

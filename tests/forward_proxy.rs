//! The forward proxy: unmodified clients (curl, Python requests and httpx, boto3, Debian's
//! `gh`) reach their tools through keygate with nothing but `HTTPS_PROXY` and a CA
//! variable set, each run with a clean environment (this machine pre-sets CA variables to
//! the system bundle). The upstreams are real servers on loopback: a recording HTTP
//! server for the GitHub tool, moto (through a recording relay) for AWS, a TLS server of
//! its own for a blind tunnel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod aws_support;
mod common;
mod mcp_support;
use aws_support::{moto, Relay, ROLE_ARN};
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const AGENT: &str = "px-agent";
const OWNER: &str = "owner@example.com";
/// What keygate injects for the GitHub tool; the upstream must see it, and only it.
const TOOL_SECRET: &str = "tool-secret-from-keygate-0123456789";
/// The agent's own GitHub token, which its client sends and keygate must strip.
const AGENT_GH_TOKEN: &str = "ghp_AgentOwnLongLivedToken0123456789abcd";

struct Px {
    gw: TestGateway,
    iss: TestIssuer,
    upstream: RawUpstream,
    /// The blind-tunnel host (`localhost:port`), a TLS server with its own certificate.
    blind: String,
    /// The CA the blind host's certificate chains to (not keygate's).
    blind_ca: PathBuf,
    pki: Pki,
    ca: PathBuf,
}

/// The GitHub tool's upstream: a created deploy key gets an id; anything else `ok`.
fn github_upstream() -> Responder {
    Arc::new(|r: &Received| {
        if r.head.starts_with("POST ") && r.target().ends_with("/keys") {
            let body = json!({"id": 4242, "title": "agent key", "key": "ssh-ed25519 AAAAC3Nza", "read_only": true});
            (
                201,
                vec![("content-type".into(), "application/json".into())],
                body.to_string().into_bytes(),
            )
        } else {
            (
                200,
                vec![("content-type".into(), "application/json".into())],
                br#"{"ok":true}"#.to_vec(),
            )
        }
    })
}

async fn start(policy: Option<&str>) -> Px {
    start_with(policy, |_| String::new(), &agent(AGENT, OWNER)).await
}

/// [`start`], with `[proxy]` settings added (given the test PKI) and `agents` instead of
/// the one agent.
async fn start_with(policy: Option<&str>, proxy: impl Fn(&Pki) -> String, agents: &str) -> Px {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "px-iss", "keygate");
    let upstream = RawUpstream::with_responder(github_upstream()).await;
    let pki = Pki::new(dir.path());
    let blind = blind_tls_server(&pki).await;
    if let Some(p) = policy {
        std::fs::create_dir_all(dir.path().join("policies")).unwrap();
        std::fs::write(dir.path().join("policies/extra.cedar"), p).unwrap();
    }
    let secret = secret_file(dir.path(), "gh", TOOL_SECRET);
    let cfg = format!(
        "{}{agents}[proxy]\nlisten = \"127.0.0.1:0\"\n{}\
         [[tools]]\nname = \"github\"\nkind = \"github\"\nupstream = {:?}\n\
         hosts = [\"api.github.com\"]\ntunnel_hosts = [\"localhost:{}\"]\n\
         [tools.credential]\nprovider = \"static\"\n{secret}",
        iss.toml(),
        proxy(&pki),
        upstream.url(),
        blind.port(),
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    let ca = gw.dir.path().join("data/proxy-ca.crt");
    Px {
        blind: format!("localhost:{}", blind.port()),
        blind_ca: pki.ca_path.clone(),
        pki,
        gw,
        iss,
        upstream,
        ca,
    }
}

impl Px {
    fn proxy(&self) -> SocketAddr {
        self.gw.proxy_addr.expect("the proxy listener")
    }

    /// `HTTPS_PROXY` with the agent token as the password, as every client reads it.
    fn proxy_url(&self, token: &str) -> String {
        format!("http://{AGENT}:{token}@{}", self.proxy())
    }

    fn token(&self) -> String {
        self.iss.token(AGENT)
    }

    /// `CONNECT target` with the agent's token as Bearer: the tunnel's stream.
    async fn connect(&self, target: &str) -> TcpStream {
        connect(
            self.proxy(),
            target,
            Some(&format!("Bearer {}", self.token())),
        )
        .await
        .unwrap()
    }

    /// Suspends the agent through the admin API.
    async fn suspend(&self) {
        let (st, b) = self
            .gw
            .admin(
                "POST",
                &format!("/agents/{AGENT}/suspend"),
                Some(json!({"reason": "test"})),
            )
            .await;
        assert!(st == 200 || st == 204, "{st} {b}");
    }

    /// The audit records of requests that reached the GitHub tool's upstream path.
    async fn audit_of(&self, method: &str) -> Vec<Value> {
        self.gw
            .audit()
            .await
            .into_iter()
            .filter(|r| r["method"] == method)
            .collect()
    }
}

/// A TLS server on localhost (its certificate from `pki`, not keygate's CA) answering
/// every request `blind-ok`, closing after one.
async fn blind_tls_server(pki: &Pki) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(&pki.server_cert_path)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&pki.server_key_path).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nblind-ok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

// ---------------------------------------------------------------- clients

struct Output {
    status: i32,
    stdout: String,
    stderr: String,
}

/// Runs `program` with a clean environment: PATH, HOME, the proxy variables and every CA
/// variable the common clients read set to `ca` (none when `None`), and `extra`.
async fn run_client(
    program: &str,
    args: &[&str],
    proxy: &str,
    ca: Option<&Path>,
    extra: &[(&str, &str)],
) -> Output {
    let program = program.to_string();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let proxy = proxy.to_string();
    let ca = ca.map(Path::to_path_buf);
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let home = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(&program);
        cmd.args(&args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", home.path())
            .env("LANG", "C.UTF-8")
            .env("HTTPS_PROXY", &proxy)
            .env("https_proxy", &proxy)
            .env("HTTP_PROXY", &proxy)
            .env("http_proxy", &proxy);
        if let Some(ca) = &ca {
            for var in [
                "SSL_CERT_FILE",
                "CURL_CA_BUNDLE",
                "REQUESTS_CA_BUNDLE",
                "AWS_CA_BUNDLE",
                "NODE_EXTRA_CA_CERTS",
            ] {
                cmd.env(var, ca);
            }
        }
        for (k, v) in &extra {
            cmd.env(k, v);
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        Output {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

fn venv_python(venv: &str) -> String {
    let p = aws_support::root().join(format!("target/{venv}/bin/python"));
    assert!(
        p.exists(),
        "{} is missing: run scripts/test, which installs the forward-proxy test clients",
        p.display()
    );
    p.display().to_string()
}

/// Python `requests` or `httpx` (tests/proxy/clients.py): every URL through one client.
async fn python_client(
    client: &str,
    method: &str,
    urls: &[&str],
    proxy: &str,
    ca: &Path,
) -> Vec<Value> {
    let script = aws_support::root().join("tests/proxy/clients.py");
    let mut args = vec![
        script.display().to_string(),
        client.to_string(),
        method.to_string(),
    ];
    args.extend(urls.iter().map(|u| u.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_client(&venv_python("proxy-venv"), &refs, proxy, Some(ca), &[]).await;
    assert_eq!(
        out.status, 0,
        "clients.py {client}: {}\n{}",
        out.stdout, out.stderr
    );
    let v: Value =
        serde_json::from_str(out.stdout.trim()).unwrap_or_else(|_| panic!("{}", out.stdout));
    v["results"].as_array().unwrap().clone()
}

/// `gh ARGS` as an agent runs it: its own GitHub token in GH_TOKEN, nothing else of
/// GitHub's configured.
async fn gh(args: &[&str], proxy: &str, ca: Option<&Path>) -> Output {
    let config = tempfile::tempdir().unwrap();
    let config_dir = config.path().display().to_string();
    run_client(
        "gh",
        args,
        proxy,
        ca,
        &[
            ("GH_TOKEN", AGENT_GH_TOKEN),
            ("GH_CONFIG_DIR", &config_dir),
            ("GH_NO_UPDATE_NOTIFIER", "1"),
            ("GH_PROMPT_DISABLED", "1"),
            ("NO_COLOR", "1"),
        ],
    )
    .await
}

/// The upstream saw keygate's credential on every request, never the agent's.
fn assert_only_keygates_credential(upstream: &RawUpstream) {
    let reqs = upstream.requests();
    assert!(!reqs.is_empty(), "nothing reached the upstream");
    for r in &reqs {
        assert_eq!(
            r.header("authorization").as_deref(),
            Some(format!("Bearer {TOOL_SECRET}").as_str()),
            "{}",
            r.head
        );
        let raw = String::from_utf8_lossy(&r.raw);
        assert!(
            !raw.contains(AGENT_GH_TOKEN),
            "the agent's token was forwarded:\n{raw}"
        );
        assert!(
            !raw.contains("eyJ"),
            "the agent's JWT was forwarded:\n{raw}"
        );
        assert!(r.header("proxy-authorization").is_none());
    }
}

// ---------------------------------------------------------------- raw tunnels

/// Sends `CONNECT target` (with `Proxy-Authorization: auth` when given); the stream once
/// the proxy answered 200, or the proxy's answer.
async fn connect(proxy: SocketAddr, target: &str, auth: Option<&str>) -> Result<TcpStream, String> {
    let auth: Vec<(&str, &str)> = auth
        .map(|a| ("Proxy-Authorization", a))
        .into_iter()
        .collect();
    connect_with(proxy, target, &auth).await
}

/// [`connect`] with these headers on the CONNECT.
async fn connect_with(
    proxy: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if head.starts_with("HTTP/1.1 200") {
        Ok(s)
    } else {
        // The refusal's body, too.
        let mut rest = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut rest))
            .await
            .map(|r| r.unwrap_or(0))
            .unwrap_or(0);
        Err(format!("{head}{}", String::from_utf8_lossy(&rest[..n])))
    }
}

/// HTTP/1.1 over TLS to `name` inside a tunnel, trusting only `ca`.
async fn h1_over_tls(
    s: TcpStream,
    ca: &Path,
    name: &str,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from(name.to_string()).unwrap(),
            s,
        )
        .await
        .unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn get(
    send: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: &str,
    path: &str,
) -> (u16, Value) {
    send.ready().await.unwrap();
    let req = http::Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

// ---------------------------------------------------------------- tests

/// curl (HTTP/1.1 and HTTP/2 inside the tunnel), Python requests and httpx, and `gh` reach
/// the GitHub tool with only HTTPS_PROXY and a CA variable; the tool sees keygate's
/// credential, never the agent's token or JWT, and every request is audited as the
/// agent's.
#[tokio::test]
async fn unmodified_clients_reach_their_tool_with_keygates_credential() {
    let px = start(None).await;
    let proxy = px.proxy_url(&px.token());
    let url = "https://api.github.com/repos/acme/app/issues";

    for http in ["--http1.1", "--http2"] {
        let out = run_client(
            "curl",
            &[
                "-sS",
                http,
                "-w",
                "\n%{http_version}",
                "-H",
                &format!("Authorization: token {AGENT_GH_TOKEN}"),
                url,
            ],
            &proxy,
            Some(&px.ca),
            &[],
        )
        .await;
        assert_eq!(out.status, 0, "curl {http}: {}", out.stderr);
        let (body, version) = out.stdout.rsplit_once('\n').unwrap();
        assert_eq!(body, r#"{"ok":true}"#);
        assert_eq!(version, if http == "--http2" { "2" } else { "1.1" });
    }
    for client in ["requests", "httpx"] {
        let results = python_client(client, "GET", &[url], &proxy, &px.ca).await;
        assert_eq!(results[0]["status"], 200, "{client}: {results:?}");
        assert_eq!(results[0]["body"], r#"{"ok":true}"#);
    }
    let out = gh(&["api", "repos/acme/app/issues"], &proxy, Some(&px.ca)).await;
    assert_eq!(out.status, 0, "gh: {}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(r#""ok":true"#), "{}", out.stdout);

    assert_eq!(px.upstream.count(), 5);
    assert_only_keygates_credential(&px.upstream);
    for r in px.upstream.requests() {
        assert_eq!(r.target(), "/repos/acme/app/issues");
        assert_eq!(
            r.header("x-forwarded-host").as_deref(),
            Some("api.github.com")
        );
    }
    // Counted as every other call to the tool (metrics need no token).
    let metrics = Client::http1()
        .get(&format!("http://{}/metrics", px.gw.admin_addr), &[])
        .await
        .text();
    assert!(
        metrics.contains(
            "keygate_requests_total{tool=\"github\",decision=\"allow\",status=\"200\"} 5\n"
        ),
        "{metrics}"
    );
    let records = px.audit_of("GET").await;
    assert_eq!(records.len(), 5, "{records:?}");
    for r in &records {
        assert_eq!(r["agent_id"], AGENT, "{r}");
        assert_eq!(r["tool"], "github", "{r}");
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(r["decision"], "allow", "{r}");
    }
}

/// `keygate ca` prints the CA the proxy issues host certificates from (generated on first
/// start, its key owner-only).
#[tokio::test]
async fn keygate_ca_prints_the_generated_ca() {
    let px = start(None).await;
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["ca", "--config"])
        .arg(px.gw.dir.path().join("keygate.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed.starts_with("-----BEGIN CERTIFICATE-----"),
        "{printed}"
    );
    assert_eq!(printed, std::fs::read_to_string(&px.ca).unwrap());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = px.gw.dir.path().join("data/proxy-ca.key");
        let mode = std::fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

/// `gh` adding a deploy key through the proxy is held for a human's approval; once
/// approved the same call goes through once, and the key is in the inventory with its
/// agent, approver and owner.
#[tokio::test]
async fn gh_adding_a_deploy_key_waits_for_approval() {
    let px = start(None).await;
    let proxy = px.proxy_url(&px.token());
    let args = [
        "api",
        "-X",
        "POST",
        "repos/acme/app/keys",
        "-f",
        "title=agent key",
        "-f",
        "key=ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBq2Xv6B0y7Tt0xqHcW3lE1n8ZpDkcv6yOeJv1F1h3kN",
        "-F",
        "read_only=true",
    ];
    let out = gh(&args, &proxy, Some(&px.ca)).await;
    assert_ne!(
        out.status, 0,
        "the deploy key went through unapproved: {}",
        out.stdout
    );
    assert!(out.stderr.contains("HTTP 403"), "{}", out.stderr);
    let at = out
        .stderr
        .find("approvals approve ")
        .unwrap_or_else(|| panic!("no approval id in {:?}", out.stderr))
        + "approvals approve ".len();
    let id: String = out.stderr[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert_eq!(px.upstream.count(), 0, "reached the tool unapproved");
    approve_as_bob(&px.gw, &id, "CHG-7").await;

    let out = gh(&args, &proxy, Some(&px.ca)).await;
    assert_eq!(out.status, 0, "approved: {}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("4242"), "{}", out.stdout);
    assert_eq!(px.upstream.count(), 1);
    assert_only_keygates_credential(&px.upstream);
    // The approval was for that one request.
    let out = gh(&args, &proxy, Some(&px.ca)).await;
    assert!(out.stderr.contains("HTTP 403"), "{}", out.stderr);
    assert_eq!(px.upstream.count(), 1);

    let (s, inv) = px.gw.admin("GET", "/inventory", None).await;
    assert_eq!(s, 200, "{inv}");
    let entries = inv["identities"].as_array().cloned().unwrap_or_default();
    let e = entries
        .iter()
        .find(|e| e.to_string().contains("4242"))
        .unwrap_or_else(|| panic!("no inventory entry for deploy key 4242: {inv}"));
    assert_eq!(e["agent_id"], AGENT, "{e}");
    assert_eq!(e["approver"], "bob@example.com", "{e}");
    assert_eq!(e["owner"], "carol@example.com", "{e}");
}

/// A host no tool names is refused on the CONNECT and audited; a host the tool tunnels
/// blind passes through untouched: the client verifies the real server's certificate
/// (not keygate's), and the tunnel is audited once closed, with its bytes.
#[tokio::test]
async fn unnamed_hosts_are_refused_and_blind_tunnels_pass_untouched() {
    let px = start(None).await;
    let proxy = px.proxy_url(&px.token());

    let out = run_client(
        "curl",
        &["-sS", "https://example.com/"],
        &proxy,
        Some(&px.ca),
        &[],
    )
    .await;
    assert_eq!(out.status, 56, "{}", out.stderr);
    assert!(out.stderr.contains("403"), "{}", out.stderr);

    let blind_url = format!("https://{}/anything", px.blind);
    let out = run_client(
        "curl",
        &["-sS", &blind_url],
        &proxy,
        Some(&px.blind_ca),
        &[],
    )
    .await;
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "blind-ok");
    // keygate's CA cannot answer for it: nothing there is intercepted.
    let out = run_client("curl", &["-sS", &blind_url], &proxy, Some(&px.ca), &[]).await;
    assert_eq!(out.status, 60, "{}", out.stderr);
    assert_eq!(px.upstream.count(), 0);

    let connects = px.audit_of("CONNECT").await;
    let refused = connects
        .iter()
        .find(|r| r["path"] == "example.com:443")
        .unwrap_or_else(|| panic!("{connects:?}"));
    assert_eq!(refused["status"], 403, "{refused}");
    assert_eq!(refused["error"], "host_not_allowed", "{refused}");
    assert_eq!(refused["agent_id"], AGENT, "{refused}");
    let tunnels: Vec<_> = connects
        .iter()
        .filter(|r| r["path"] == px.blind.as_str())
        .collect();
    assert_eq!(tunnels.len(), 2, "{connects:?}");
    for t in tunnels {
        assert_eq!(t["operation"], "tunnel", "{t}");
        assert_eq!(t["tool"], "github", "{t}");
        assert_eq!(t["agent_id"], AGENT, "{t}");
        assert_eq!(t["decision"], "allow", "{t}");
        assert!(t["bytes_in"].as_u64().unwrap() > 100, "{t}");
        assert!(t["bytes_out"].as_u64().unwrap() > 100, "{t}");
        assert!(t["duration_ms"].as_f64().is_some(), "{t}");
    }
}

/// A blind tunnel opened in a task: the policies see the task (`context.task`), the task
/// must include the tunnel, the record names it, and the tunnel closes when it ends.
#[tokio::test]
async fn a_blind_tunnel_is_decided_within_its_task_and_closes_when_it_ends() {
    let px = start(Some(
        "@id(\"blind-tunnels-in-tasks\")\nforbid (principal, action == Action::\"tunnel\", resource)\n\
         unless { context has task && context.task.ticket == \"OPS-11\" };\n",
    ))
    .await;
    let open = |body: Value| {
        let gw = &px.gw;
        async move {
            let (s, t) = gw.admin("POST", "/tasks", Some(body)).await;
            assert_eq!(s, 201, "{t}");
            t["id"].as_str().unwrap().to_string()
        }
    };
    let auth = format!("Bearer {}", px.token());
    let tunnel = |task: Option<String>| {
        let (proxy, target, auth) = (px.proxy(), px.blind.clone(), auth.clone());
        async move {
            let mut h = vec![("Proxy-Authorization", auth.as_str())];
            if let Some(t) = &task {
                h.push(("Keygate-Task", t.as_str()));
            }
            connect_with(proxy, &target, &h).await
        }
    };
    // Outside a task, and in a task with another ticket, the policy forbids it.
    let e = tunnel(None).await.unwrap_err();
    assert!(e.starts_with("HTTP/1.1 403"), "{e}");
    let other = open(json!({"agent": AGENT, "purpose": "p", "ticket": "OPS-12"})).await;
    let e = tunnel(Some(other)).await.unwrap_err();
    assert!(e.contains("forbidden"), "{e}");
    // A task that does not include the tunnel operation.
    let reads =
        open(json!({"agent": AGENT, "purpose": "p", "ticket": "OPS-11", "operations": ["read"]}))
            .await;
    let e = tunnel(Some(reads)).await.unwrap_err();
    assert!(e.contains("task_out_of_scope"), "{e}");

    let id = open(json!({"agent": AGENT, "purpose": "p", "ticket": "OPS-11"})).await;
    let mut s = tunnel(Some(id.clone()))
        .await
        .expect("the tunnel in its task");
    let (st, _) = px
        .gw
        .admin("POST", &format!("/tasks/{id}/end"), Some(json!({})))
        .await;
    assert_eq!(st, 200);
    // The next recheck (every 5 s) closes it.
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
        .await
        .expect("the tunnel stayed open after its task ended")
        .unwrap_or(0);
    assert_eq!(n, 0, "the tunnel carried bytes after its task ended");
    let mut rec = None;
    for _ in 0..100 {
        rec = px
            .audit_of("CONNECT")
            .await
            .into_iter()
            .find(|r| r["task"] == id.as_str());
        if rec.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rec = rec.expect("the tunnel's audit record");
    assert_eq!(rec["error"], "task_ended", "{rec}");
    assert_eq!(rec["operation"], "tunnel", "{rec}");
}

/// A policy on the `tunnel` operation decides blind tunnels too.
#[tokio::test]
async fn policy_decides_blind_tunnels() {
    let px = start(Some(
        "@id(\"no-blind-tunnels\")\nforbid (principal, action == Action::\"tunnel\", resource);\n",
    ))
    .await;
    let proxy = px.proxy_url(&px.token());
    let out = run_client(
        "curl",
        &["-sS", &format!("https://{}/", px.blind)],
        &proxy,
        Some(&px.blind_ca),
        &[],
    )
    .await;
    assert_eq!(out.status, 56, "{}", out.stderr);
    let connects = px.audit_of("CONNECT").await;
    assert_eq!(connects.len(), 1, "{connects:?}");
    assert_eq!(connects[0]["error"], "forbidden", "{}", connects[0]);
    assert_eq!(
        connects[0]["policies"],
        json!(["no-blind-tunnels"]),
        "{}",
        connects[0]
    );
}

/// A client that does not trust keygate's CA fails its handshake; nothing is passed
/// through to the tool.
#[tokio::test]
async fn a_client_that_does_not_trust_keygates_ca_fails_its_handshake() {
    let px = start(None).await;
    let proxy = px.proxy_url(&px.token());
    // The system's roots only (what the machine pre-sets).
    let system = Path::new("/etc/ssl/certs/ca-certificates.crt");
    let out = run_client(
        "curl",
        &["-sS", "https://api.github.com/repos/acme/app"],
        &proxy,
        Some(system),
        &[],
    )
    .await;
    assert_eq!(out.status, 60, "{}", out.stderr);
    let results = python_client(
        "requests",
        "GET",
        &["https://api.github.com/repos/acme/app"],
        &proxy,
        system,
    )
    .await;
    assert!(
        results[0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("CERTIFICATE_VERIFY_FAILED"),
        "{results:?}"
    );
    let out = gh(&["api", "repos/acme/app"], &proxy, Some(system)).await;
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("certificate"), "{}", out.stderr);
    assert_eq!(px.upstream.count(), 0);
    // Each failed tunnel is audited as the agent's refused CONNECT.
    let connects = px.audit_of("CONNECT").await;
    assert_eq!(connects.len(), 3, "{connects:?}");
    for r in &connects {
        assert_eq!(r["error"], "tls_handshake_failed", "{r}");
        assert_eq!(r["agent_id"], AGENT, "{r}");
        assert_eq!(r["path"], "api.github.com:443", "{r}");
    }
}

/// No credential on the CONNECT: 407 with Proxy-Authenticate; a bad one: 407; both
/// audited with no agent. Bearer works as well as Basic.
#[tokio::test]
async fn connect_without_a_valid_agent_credential_gets_407() {
    let px = start(None).await;
    let e = connect(px.proxy(), "api.github.com:443", None)
        .await
        .unwrap_err();
    assert!(e.starts_with("HTTP/1.1 407"), "{e}");
    assert!(
        e.to_ascii_lowercase()
            .contains("proxy-authenticate: basic realm=\"keygate\""),
        "{e}"
    );
    assert!(e.contains("proxy_authentication_required"), "{e}");
    let forged = px.iss.token(AGENT).replace('.', "x.");
    let e = connect(
        px.proxy(),
        "api.github.com:443",
        Some(&format!("Bearer {forged}")),
    )
    .await
    .unwrap_err();
    assert!(e.starts_with("HTTP/1.1 407"), "{e}");
    let other = TestIssuer::new(px.gw.dir.path(), "someone-else", "keygate").token(AGENT);
    let out = run_client(
        "curl",
        &["-sS", "https://api.github.com/x"],
        &px.proxy_url(&other),
        Some(&px.ca),
        &[],
    )
    .await;
    assert_eq!(out.status, 56, "{}", out.stderr);
    assert!(out.stderr.contains("407"), "{}", out.stderr);
    // The user name of the proxy URL names another agent than the token.
    let out = run_client(
        "curl",
        &["-sS", "https://api.github.com/x"],
        &format!("http://another-agent:{}@{}", px.token(), px.proxy()),
        Some(&px.ca),
        &[],
    )
    .await;
    assert_eq!(out.status, 56, "{}", out.stderr);
    let unknown = px.iss.token("nobody-we-know");
    let e = connect(
        px.proxy(),
        "api.github.com:443",
        Some(&format!("Bearer {unknown}")),
    )
    .await
    .unwrap_err();
    assert!(e.starts_with("HTTP/1.1 407"), "{e}");
    assert_eq!(px.upstream.count(), 0);

    // Bearer on the CONNECT works as well.
    let s = px.connect("api.github.com:443").await;
    let mut send = h1_over_tls(s, &px.ca, "api.github.com").await;
    let (status, body) = get(&mut send, "api.github.com", "/repos/acme/app").await;
    assert_eq!(status, 200, "{body}");

    let records = px.gw.audit().await;
    let refused: Vec<_> = records.iter().filter(|r| r["status"] == 407).collect();
    assert_eq!(refused.len(), 5, "{records:?}");
    for r in refused {
        assert_eq!(r["method"], "CONNECT", "{r}");
        assert!(r["agent_id"].is_null(), "{r}");
        assert_eq!(r["error"], "proxy_authentication_required", "{r}");
    }
    assert_eq!(records.iter().filter(|r| r["agent_id"] == AGENT).count(), 1);
}

/// Many requests through one keep-alive tunnel, one of which a policy forbids: only that
/// one is refused, each is audited as the agent's, all from the one tunnel.
#[tokio::test]
async fn a_long_lived_tunnel_refuses_only_what_policy_refuses() {
    let px = start(Some(
        "@id(\"no-secrets-repo\")\nforbid (principal, action, resource) when { context.path like \"/repos/acme/secrets*\" };\n",
    ))
    .await;
    let proxy = px.proxy_url(&px.token());
    let mut urls: Vec<String> = (0..20)
        .map(|i| format!("https://api.github.com/repos/acme/app/issues/{i}"))
        .collect();
    urls[7] = "https://api.github.com/repos/acme/secrets/contents/key".into();
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let results = python_client("requests", "GET", &refs, &proxy, &px.ca).await;
    for (i, r) in results.iter().enumerate() {
        let want = if i == 7 { 403 } else { 200 };
        assert_eq!(r["status"], want, "request {i}: {r}");
    }
    assert!(
        results[7]["body"]
            .as_str()
            .unwrap()
            .contains("no-secrets-repo"),
        "{}",
        results[7]
    );
    assert_eq!(px.upstream.count(), 19);
    let records = px.audit_of("GET").await;
    assert_eq!(records.len(), 20);
    let client = records[0]["client"].clone();
    for r in &records {
        assert_eq!(r["agent_id"], AGENT, "{r}");
        assert_eq!(r["client"], client, "one tunnel: {r}");
    }
    assert_eq!(
        records.iter().filter(|r| r["decision"] == "deny").count(),
        1
    );
}

/// A token that expires while its tunnel is open stops the tunnel's next request; a
/// request in the tunnel addressed to another host is refused.
#[tokio::test]
async fn a_tunnel_is_bound_to_its_agents_token_and_its_host() {
    let px = start(None).await;
    let short = px.iss.sign(json!({
        "iss": "px-iss", "aud": "keygate", "sub": AGENT, "iat": now(), "exp": now() + 120,
    }));
    let s = connect(
        px.proxy(),
        "api.github.com:443",
        Some(&format!("Bearer {short}")),
    )
    .await
    .unwrap();
    let mut send = h1_over_tls(s, &px.ca, "api.github.com").await;
    let (status, body) = get(&mut send, "api.github.com", "/repos/acme/app").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(&mut send, "mcp.internal", "/repos/acme/app").await;
    assert_eq!(status, 421, "{body}");
    assert_eq!(body["error"], "misdirected_request", "{body}");
    // A Host whose user info hides another host.
    let (status, body) = get(&mut send, "api.github.com:@evil.example", "/repos/acme/app").await;
    assert_eq!(status, 421, "{body}");
    // The tunnel's host in an absolute-form target, another in Host: refused too.
    let (status, body) = get(
        &mut send,
        "evil.example",
        "https://api.github.com/repos/acme/app",
    )
    .await;
    assert_eq!(status, 421, "{body}");
    px.gw.advance_clock(Duration::from_secs(300));
    let (status, body) = get(&mut send, "api.github.com", "/repos/acme/app").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "unauthenticated", "{body}");
    assert_eq!(px.upstream.count(), 1);
}

/// A suspended agent's open tunnel stops serving it at once.
#[tokio::test]
async fn suspending_an_agent_stops_its_open_tunnel() {
    let px = start(None).await;
    let s = px.connect("api.github.com:443").await;
    let mut send = h1_over_tls(s, &px.ca, "api.github.com").await;
    assert_eq!(get(&mut send, "api.github.com", "/a").await.0, 200);
    px.suspend().await;
    let (status, body) = get(&mut send, "api.github.com", "/a").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "agent_suspended", "{body}");
    assert_eq!(px.upstream.count(), 1);
}

/// Plain `http://` through the proxy (absolute-form requests) takes the same pipeline.
#[tokio::test]
async fn absolute_form_http_requests_take_the_same_pipeline() {
    let px = start(None).await;
    let proxy = px.proxy_url(&px.token());
    let out = run_client(
        "curl",
        &[
            "-sS",
            "-H",
            &format!("Authorization: token {AGENT_GH_TOKEN}"),
            "http://api.github.com/repos/acme/app",
        ],
        &proxy,
        None,
        &[],
    )
    .await;
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(out.stdout, r#"{"ok":true}"#);
    assert_only_keygates_credential(&px.upstream);
    let out = run_client(
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://example.com/",
        ],
        &proxy,
        None,
        &[],
    )
    .await;
    assert_eq!(out.stdout, "403");
    let out = run_client(
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://api.github.com/x",
        ],
        &format!("http://{}", px.proxy()),
        None,
        &[],
    )
    .await;
    assert_eq!(out.stdout, "407");
    assert_eq!(px.upstream.count(), 1);
    let records = px.gw.audit().await;
    assert_eq!(records.len(), 3, "{records:?}");
    assert_eq!(records[0]["agent_id"], AGENT);
    assert_eq!(records[0]["tool"], "github");
}

/// boto3 with no endpoint configured (AWS's own hosts) goes through the proxy: keygate
/// signs each call with a session for this agent and call, and CreateAccessKey waits for
/// approval, then goes through once.
#[tokio::test]
async fn boto3_through_the_proxy_is_signed_by_keygate_and_waits_for_approval() {
    logs();
    let m = moto();
    let relay = Relay::to_moto();
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "px-iss", "keygate");
    let base = secret_file(dir.path(), "aws-base.json", &m.base_credential_json());
    let cfg = format!(
        "{}{}[proxy]\nlisten = \"127.0.0.1:0\"\n\
         [[tools]]\nname = \"aws\"\nkind = \"aws\"\nupstream = {:?}\n\
         hosts = [\"iam.amazonaws.com\", \"sts.amazonaws.com\", \"sts.us-east-1.amazonaws.com\"]\n\
         [tools.credential]\nprovider = \"aws\"\nrole_arn = {ROLE_ARN:?}\nsts_endpoint = {:?}\nregion = \"us-east-1\"\n{base}",
        iss.toml(),
        agent(AGENT, OWNER),
        relay.url(),
        relay.url(),
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    let ca = gw.dir.path().join("data/proxy-ca.crt");
    let proxy = format!(
        "http://{AGENT}:{}@{}",
        iss.token(AGENT),
        gw.proxy_addr.unwrap()
    );
    let driver = aws_support::driver_py().display().to_string();
    let python = aws_support::venv_bin("python").display().to_string();
    // The agent's SDK signs with a key of its own, which keygate strips.
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIAAGENTOWNKEY00000"),
        (
            "AWS_SECRET_ACCESS_KEY",
            "agent-own-secret-agent-own-secret-000000",
        ),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_MAX_ATTEMPTS", "1"),
    ];
    let boto = |args: Vec<&'static str>| {
        let mut all = vec![driver.as_str()];
        all.extend(args);
        let all: Vec<String> = all.iter().map(|s| s.to_string()).collect();
        let (python, proxy, ca) = (python.clone(), proxy.clone(), ca.clone());
        async move {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            let out = run_client(&python, &refs, &proxy, Some(&ca), &env).await;
            assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
            serde_json::from_str::<Value>(out.stdout.lines().last().unwrap()).unwrap()
        }
    };
    let who = boto(vec!["whoami"]).await;
    assert!(
        who["ok"]
            .as_str()
            .unwrap_or("")
            .contains("assumed-role/keygate-agents"),
        "{who}"
    );
    let users = boto(vec!["list-users"]).await;
    assert!(users["ok"].is_array(), "{users}");
    let made = boto(vec!["create-user", "px-user"]).await;
    assert_eq!(made["error"]["code"], "approval_required", "{made}");
    let msg = made["error"]["message"].as_str().unwrap().to_string();
    let at = msg.find("approval_id: ").unwrap() + "approval_id: ".len();
    let id: String = msg[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert_eq!(relay.count("iam:CreateUser"), 0);
    approve_as_bob(&gw, &id, "CHG-9").await;
    let made = boto(vec!["create-user", "px-user"]).await;
    assert_eq!(made["ok"], "px-user", "{made}");
    assert_eq!(relay.count("iam:CreateUser"), 1);
    let key = boto(vec!["create-access-key", "px-user"]).await;
    assert_eq!(key["error"]["code"], "approval_required", "{key}");
    assert_eq!(relay.count("iam:CreateAccessKey"), 0);

    // Every call moto saw was signed by a keygate session, never by the agent's key.
    for x in relay.tool_calls() {
        let id = x.access_key_id().unwrap_or_default();
        assert_ne!(id, "AKIAAGENTOWNKEY00000");
        assert_ne!(id, m.base_access_key_id);
    }
    assert!(!relay
        .all_bytes()
        .windows(20)
        .any(|w| w == b"AKIAAGENTOWNKEY00000"));
    // Every call is the agent's (the approval is the administrator's own record).
    let records = gw.audit().await;
    assert!(
        records
            .iter()
            .filter(|r| r.get("admin").is_none())
            .all(|r| r["agent_id"] == AGENT),
        "{records:?}"
    );
    assert_eq!(
        records.iter().filter(|r| r.get("admin").is_some()).count(),
        1
    );
}

/// An `https://` proxy URL with a client certificate: the agent is the one its SPIFFE ID
/// maps to, with no token; without a certificate the proxy's handshake fails.
#[tokio::test]
async fn a_client_certificate_to_the_proxy_identifies_the_agent() {
    const SPIFFE: &str = "spiffe://example.org/px-agent";
    let px = start_with(
        None,
        |pki| {
            format!(
                "[proxy.tls]\ncert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\nclient_auth = \"required\"\n",
                pki.server_cert_path.display().to_string(),
                pki.server_key_path.display().to_string(),
                pki.ca_path.display().to_string()
            )
        },
        &format!("[[agents]]\nid = {AGENT:?}\nowner = {OWNER:?}\nspiffe_id = {SPIFFE:?}\n"),
    )
    .await;
    let client = px.pki.client_cert(SPIFFE);
    let dir = px.gw.dir.path();
    std::fs::write(dir.join("client.pem"), &client.cert_pem).unwrap();
    std::fs::write(dir.join("client-key.pem"), &client.key_pem).unwrap();
    let proxy = format!("https://127.0.0.1:{}", px.proxy().port());
    let proxy_ca = px.pki.ca_path.display().to_string();
    let cert = dir.join("client.pem").display().to_string();
    let key = dir.join("client-key.pem").display().to_string();
    let url = "https://api.github.com/repos/acme/app";
    let out = run_client(
        "curl",
        &[
            "-sS",
            "--proxy-cacert",
            &proxy_ca,
            "--proxy-cert",
            &cert,
            "--proxy-key",
            &key,
            url,
        ],
        &proxy,
        Some(&px.ca),
        &[],
    )
    .await;
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(out.stdout, r#"{"ok":true}"#);
    let out = run_client(
        "curl",
        &["-sS", "--proxy-cacert", &proxy_ca, url],
        &proxy,
        Some(&px.ca),
        &[],
    )
    .await;
    assert_ne!(out.status, 0, "no client certificate, yet: {}", out.stdout);
    assert_eq!(px.upstream.count(), 1);
    assert_only_keygates_credential(&px.upstream);
    let records = px.audit_of("GET").await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["agent_id"], AGENT);
    assert_eq!(records[0]["identity"], "mtls");
    assert_eq!(records[0]["spiffe_id"], SPIFFE);
}

/// An MCP client (the official Python SDK) through the proxy to an MCP server a tool
/// names by host: each message is decided as through the reverse proxy, and an
/// identity-creating MCP tool waits for approval.
#[tokio::test]
async fn an_mcp_client_through_the_proxy_is_decided_message_by_message() {
    logs();
    let server = mcp_support::Peer::test_server().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "px-iss", "keygate");
    let secret = secret_file(dir.path(), "mcp", TOOL_SECRET);
    let cfg = format!(
        "{}{}[proxy]\nlisten = \"127.0.0.1:0\"\n\
         [[tools]]\nname = \"mcp\"\nprotocol = \"mcp\"\nupstream = {:?}\nhosts = [\"mcp.example.test\"]\n\
         [tools.credential]\nprovider = \"static\"\n{secret}",
        iss.toml(),
        agent(AGENT, OWNER),
        server.url(),
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    let ca = gw.dir.path().join("data/proxy-ca.crt");
    let proxy = format!(
        "http://{AGENT}:{}@{}",
        iss.token(AGENT),
        gw.proxy_addr.unwrap()
    );
    let script = json!({
        "url": "https://mcp.example.test/mcp",
        "headers": {},
        "timeout": 30,
        "steps": [
            mcp_support::initialize(),
            mcp_support::call("whoami", json!({})),
            mcp_support::call("create_api_token", json!({"name": "ci"})),
        ],
    });
    let client = aws_support::root()
        .join("tests/mcp/client.py")
        .display()
        .to_string();
    let python = mcp_support::python().display().to_string();
    let arg = script.to_string();
    let out = run_client(&python, &[&client, &arg], &proxy, Some(&ca), &[]).await;
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    let report: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let seen: Value =
        serde_json::from_str(mcp_support::step(&report, 1)["text"].as_str().unwrap()).unwrap();
    // keygate's credential reached the server; respond took its value out of the answer
    // (same length, redacted), so the agent never reads it.
    let seen_auth = seen["authorization"].as_str().unwrap_or("");
    assert!(
        seen_auth.starts_with("Bearer keygate-redacted")
            && seen_auth.len() == TOOL_SECRET.len() + 7,
        "the MCP server saw: {seen}"
    );
    assert!(!out.stdout.contains(TOOL_SECRET));
    let created = mcp_support::step(&report, 2);
    assert_eq!(created["ok"], false, "created without approval: {created}");
    assert_eq!(
        created["error"]["data"]["error"], "approval_required",
        "{created}"
    );
    let records: Vec<Value> = gw
        .audit()
        .await
        .into_iter()
        .filter(|r| r["method"] == "POST")
        .collect();
    assert!(records.len() >= 3, "{records:?}");
    assert!(
        records
            .iter()
            .all(|r| r["agent_id"] == AGENT && r["tool"] == "mcp"),
        "{records:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["mcp"].to_string().contains("create_api_token")),
        "{records:?}"
    );
}

/// Two tools share a host by path prefix: each request in one tunnel goes to the tool its
/// path selects (the longest prefix, case ignored), with that tool's credential.
#[tokio::test]
async fn tools_sharing_a_host_are_chosen_by_path() {
    let other = RawUpstream::start().await;
    let other_url = other.url();
    let px = start_with(
        None,
        move |pki| {
            let secret = secret_file(&pki.dir, "gh2", "second-tool-secret-0123456789");
            format!(
                "[[tools]]\nname = \"acme-secure\"\nkind = \"github\"\nupstream = {other_url:?}\n\
                 hosts = [\"api.github.com:443/repos/acme-secure\"]\n\
                 [tools.credential]\nprovider = \"static\"\n{secret}"
            )
        },
        &agent(AGENT, OWNER),
    )
    .await;
    let proxy = px.proxy_url(&px.token());
    let urls = [
        "https://api.github.com/repos/acme/app",
        "https://api.github.com/repos/acme-secure/app",
        "https://api.github.com/REPOS/Acme-Secure/app",
        "https://api.github.com/repos/acme-secure-not/app",
        // Servers that drop `;` parameters read these as under the prefix: so does keygate.
        "https://api.github.com/repos/acme-secure;v=1/app",
        "https://api.github.com/repos;/acme-secure/app",
    ];
    let results = python_client("requests", "GET", &urls, &proxy, &px.ca).await;
    for r in &results {
        assert_eq!(r["status"], 200, "{r}");
    }
    assert_eq!(
        px.upstream.count(),
        2,
        "github got /repos/acme/app and /repos/acme-secure-not/app"
    );
    assert_eq!(other.count(), 4);
    for r in other.requests() {
        assert_eq!(
            r.header("authorization").as_deref(),
            Some("Bearer second-tool-secret-0123456789")
        );
    }
    let tools: Vec<_> = px
        .audit_of("GET")
        .await
        .iter()
        .map(|r| r["tool"].clone())
        .collect();
    assert_eq!(
        tools,
        [
            json!("github"),
            json!("acme-secure"),
            json!("acme-secure"),
            json!("github"),
            json!("acme-secure"),
            json!("acme-secure")
        ]
    );
}

/// A TCP echo server on localhost: what a blind tunnel reaches in the tests below.
async fn echo_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// An open blind tunnel is checked again while it lasts: suspending its agent closes it,
/// and its record says why.
#[tokio::test]
async fn suspending_an_agent_closes_its_open_blind_tunnel() {
    let echo = echo_server().await;
    let host = format!("localhost:{}", echo.port());
    // A second tool tunnels the echo server.
    let echo_host = host.clone();
    let px = start_with(
        None,
        move |pki| {
            let secret = secret_file(&pki.dir, "echo", "x-secret-0123456789");
            format!(
                "[[tools]]\nname = \"raw\"\nupstream = \"http://127.0.0.1:9\"\ntunnel_hosts = [{echo_host:?}]\n\
                 [tools.credential]\nprovider = \"static\"\n{secret}"
            )
        },
        &agent(AGENT, OWNER),
    )
    .await;
    let mut s = px.connect(&host).await;
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    px.suspend().await;
    // Closed at the next recheck (every 5 s).
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "the tunnel stayed open after its agent was suspended"
    );
    let records = px.audit_of("CONNECT").await;
    let t = records
        .iter()
        .find(|r| r["path"] == host.as_str())
        .unwrap_or_else(|| panic!("{records:?}"));
    assert_eq!(t["operation"], "tunnel", "{t}");
    assert_eq!(t["error"], "agent_suspended", "{t}");
    assert_eq!(t["bytes_in"], 4, "{t}");
    assert_eq!(t["bytes_out"], 4, "{t}");
}

/// While the audit log cannot be written under `audit.fail_closed`, no tunnel opens.
#[tokio::test]
async fn no_tunnel_opens_while_the_audit_log_cannot_be_written() {
    let px = start_with(
        None,
        |_| "[audit]\npath = \"/dev/full\"\nfail_closed = true\n".to_string(),
        &agent(AGENT, OWNER),
    )
    .await;
    // The first record fails to be written; from then on the writer reports it.
    let s = px.connect("api.github.com:443").await;
    let mut send = h1_over_tls(s, &px.ca, "api.github.com").await;
    let _ = get(&mut send, "api.github.com", "/a").await;
    for _ in 0..100 {
        if !px.gw.runtime.shared.audit.is_writing() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!px.gw.runtime.shared.audit.is_writing());
    for target in ["api.github.com:443", px.blind.as_str()] {
        let e = connect(px.proxy(), target, Some(&format!("Bearer {}", px.token())))
            .await
            .unwrap_err();
        assert!(e.starts_with("HTTP/1.1 503"), "{target}: {e}");
        assert!(e.contains("audit_unavailable"), "{e}");
    }
}

/// A tunnel that completes its handshake and carries no request is still recorded: its
/// CONNECT, with its agent and host.
#[tokio::test]
async fn a_tunnel_that_carries_no_request_is_recorded() {
    let px = start(None).await;
    let s = px.connect("api.github.com:443").await;
    let send = h1_over_tls(s, &px.ca, "api.github.com").await;
    drop(send);
    let mut records = Vec::new();
    for _ in 0..100 {
        records = px.audit_of("CONNECT").await;
        if !records.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["path"], "api.github.com:443");
    assert_eq!(records[0]["agent_id"], AGENT);
    assert_eq!(records[0]["decision"], "allow");
    assert_eq!(px.upstream.count(), 0);
}

/// On the main listener too, a Host is a tool's host only when it is plainly that host:
/// one whose user info names another (`api.github.com:@evil.example`) selects no tool.
#[tokio::test]
async fn a_host_with_user_info_selects_no_tool_on_the_main_listener() {
    let px = start(None).await;
    let auth = bearer(&px.token());
    let client = Client::http1();
    let ok = client
        .get(
            &px.gw.url("/repos/acme/app"),
            &[("authorization", &auth), ("host", "api.github.com")],
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let r = client
        .get(
            &px.gw.url("/repos/acme/app"),
            &[
                ("authorization", &auth),
                ("host", "api.github.com:@evil.example"),
            ],
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"], "unknown_tool");
    assert_eq!(px.upstream.count(), 1);
}

/// A blind tunnel with no byte either way for `tunnel_idle_timeout` is closed, and
/// recorded with what it carried.
#[tokio::test]
async fn an_idle_blind_tunnel_is_closed() {
    let echo = echo_server().await;
    let host = format!("localhost:{}", echo.port());
    let echo_host = host.clone();
    let px = start_with(
        None,
        move |pki| {
            let secret = secret_file(&pki.dir, "echo", "x-secret-0123456789");
            format!(
                "tunnel_idle_timeout = \"1s\"\n\
                 [[tools]]\nname = \"raw\"\nupstream = \"http://127.0.0.1:9\"\ntunnel_hosts = [{echo_host:?}]\n\
                 [tools.credential]\nprovider = \"static\"\n{secret}"
            )
        },
        &agent(AGENT, OWNER),
    )
    .await;
    let mut s = px.connect(&host).await;
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the idle tunnel stayed open");
    let records = px.audit_of("CONNECT").await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["operation"], "tunnel");
    assert!(records[0]["error"].is_null(), "{}", records[0]);
    assert_eq!(records[0]["bytes_in"], 4);
}

/// The hosts an agent reaches through the proxy are part of its baseline; with no
/// learning period, its first call to a host is an anomaly (issue 21).
#[tokio::test]
async fn a_first_call_to_a_host_is_in_the_agents_baseline_and_an_anomaly() {
    let px = start_with(
        None,
        |_| {
            "[anomalies]\nlearning_period = \"0s\"\n[anomalies.new_host]\naction = \"record\"\n"
                .into()
        },
        &agent(AGENT, OWNER),
    )
    .await;
    let s = px.connect("api.github.com:443").await;
    let mut send = h1_over_tls(s, &px.ca, "api.github.com").await;
    assert_eq!(get(&mut send, "api.github.com", "/a").await.0, 200);
    assert_eq!(get(&mut send, "api.github.com", "/b").await.0, 200);
    let (st, b) = px.gw.admin("GET", &format!("/agents/{AGENT}"), None).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["baseline"]["hosts"], json!(["api.github.com"]), "{b}");
    let audit = px.gw.audit().await;
    let found: Vec<&Value> = audit.iter().filter(|r| !r["anomaly"].is_null()).collect();
    assert_eq!(found.len(), 1, "once: {found:#?}");
    assert_eq!(found[0]["anomaly"]["detector"], "new_host");
    assert_eq!(
        found[0]["anomaly"]["observed"],
        "first call to host api.github.com through the forward proxy"
    );
}

/// An unmodified client names its task on the CONNECT (`curl --proxy-header`): the
/// tunnel's calls are made in it (audited with it, the header never reaching the tool),
/// and refused once it ended.
#[tokio::test]
async fn a_task_named_on_the_connect_holds_for_the_tunnels_calls() {
    let px = start(None).await;
    let (s, task) = px
        .gw
        .admin(
            "POST",
            "/tasks",
            Some(json!({"agent": AGENT, "purpose": "triage", "ticket": "OPS-9"})),
        )
        .await;
    assert_eq!(s, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_string();
    let proxy = px.proxy_url(&px.token());
    let curl = |id: String| {
        let (proxy, ca) = (proxy.clone(), px.ca.clone());
        async move {
            run_client(
                "curl",
                &[
                    "-sS",
                    "--proxy-header",
                    &format!("Keygate-Task: {id}"),
                    "https://api.github.com/repos/acme/app/issues",
                ],
                &proxy,
                Some(&ca),
                &[],
            )
            .await
        }
    };
    let out = curl(id.clone()).await;
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(out.stdout, r#"{"ok":true}"#);
    let r = px.upstream.requests().pop().unwrap();
    assert!(r.header("keygate-task").is_none(), "{}", r.head);
    let records = px.audit_of("GET").await;
    assert_eq!(records.last().unwrap()["task"], id.as_str(), "{records:?}");

    let (s, _) = px
        .gw
        .admin("POST", &format!("/tasks/{id}/end"), Some(json!({})))
        .await;
    assert_eq!(s, 200);
    // The CONNECT itself is refused: no tunnel for a task that ended.
    let out = curl(id.clone()).await;
    assert_ne!(out.status, 0, "{}", out.stdout);
    assert!(out.stderr.contains("403"), "{}", out.stderr);
    assert_eq!(px.upstream.count(), 1);
    let connects = px.audit_of("CONNECT").await;
    assert_eq!(
        connects.last().unwrap()["error"],
        "task_ended",
        "{connects:?}"
    );
    // Nor for another agent's task, or one that does not exist.
    let out = curl("task_doesnotexist".into()).await;
    assert!(out.stderr.contains("403"), "{}", out.stderr);
}

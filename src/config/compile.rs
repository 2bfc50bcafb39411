//! Validation of the external configuration into the compiled [`Snapshot`].
//!
//! Validation collects every problem before failing, each naming the file and the key,
//! so a user fixes a config in one pass (`keygate check`).

use super::check::Checker;
pub use super::check::{ConfigError, ConfigErrors, SecretSource};
use super::file::{self, ClientAuth, ConfigFile, OnSecret};
use crate::catalog::Kind;
pub use crate::routes::Operations;
use crate::routes::{Operation, RouteTable, IDENTITY_CREATION, TUNNEL};
use http::header::HeaderName;
use http::uri::{Authority, Scheme};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The longest lifetime keygate gives a JWT it mints.
pub const MAX_MINTED_TTL: Duration = Duration::from_secs(300);
/// The largest clock skew accepted when checking agent tokens.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// The validated configuration the gateway runs on. Immutable; a reload builds a new one.
#[derive(Debug)]
pub struct Snapshot {
    /// The file it was read from.
    pub source: PathBuf,
    pub server: ServerSettings,
    pub audit: AuditTarget,
    pub identity: IdentitySettings,
    pub signing: SigningSettings,
    pub agents: Agents,
    pub tools: Tools,
    /// Every operation a request can be classified as, by name: the default `read` and
    /// `write`, the catalog's, and the tools' routes'. The policy schema declares them all.
    pub operations: Operations,
    pub policies_dir: PathBuf,
    pub admin: AdminSettings,
    pub approvals: ApprovalSettings,
    /// The approvals console, when configured.
    pub console: Option<ConsoleSettings>,
    /// `audit.fail_closed`: refuse requests while the audit log cannot be written.
    pub audit_fail_closed: bool,
    pub store: crate::store::StoreSettings,
    pub telemetry: TelemetrySettings,
    /// The forward-proxy listener, when configured.
    pub proxy: Option<ProxySettings>,
    /// The keys that seal captured secrets.
    pub capture: CaptureSettings,
    /// `[[rate_limits]]`, in the order written.
    pub rate_limits: Vec<super::guard::RateLimitRule>,
    /// `[anomalies]`: baselines and detectors.
    pub anomalies: super::guard::AnomalySettings,
    /// Tasks: who may open them, and their time limits.
    pub tasks: TaskSettings,
}

/// Tasks: who may open them, and their time limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSettings {
    pub agents_may_open: bool,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
}

/// Where a key that seals captured secrets comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A file holding 32 bytes hex-encoded (generated, owner-only, when missing and it is
    /// the current key).
    File(std::path::PathBuf),
    /// An environment variable holding 32 bytes hex-encoded.
    Env(String),
}

/// The keys that seal captured secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureSettings {
    pub key: KeySource,
    pub previous: Vec<KeySource>,
}

/// The forward-proxy listener and the CA it issues host certificates from.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub listen: String,
    pub ca_cert_file: PathBuf,
    pub ca_key_file: PathBuf,
    /// The CA is keygate's own, generated into these files on first start.
    pub ca_generated: bool,
    pub leaf_ttl: Duration,
    pub tunnel_idle_timeout: Duration,
    pub tls: Option<TlsSettings>,
}

/// Longest `proxy.leaf_ttl`: host certificates are short-lived.
pub const MAX_LEAF_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// OpenTelemetry export, as configured (environment variables fill what is unset).
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: Option<String>,
    pub service_name: Option<String>,
    pub queue_size: usize,
}

#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub listen: String,
    pub token_env: Option<String>,
    pub token_file: PathBuf,
    pub tls: Option<TlsSettings>,
}

#[derive(Debug, Clone)]
pub struct ApprovalSettings {
    pub pending_ttl: Duration,
    pub approval_ttl: Duration,
    pub review_after: Duration,
    pub webhook_url: Option<http::Uri>,
    pub decide_at: Option<String>,
    /// Pending approvals one agent may have at once (at least 1).
    pub max_pending_per_agent: u32,
    /// Webhook notifications sent at most per minute (at least 1).
    pub webhook_max_per_minute: std::num::NonZeroU32,
    /// The owner of the agent that asked cannot approve its request.
    pub separation_of_duties: bool,
    /// Decisions from Slack's buttons, when configured.
    pub slack: Option<SlackSettings>,
}

/// A role in the console, weakest first: each can do what the ones before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConsoleRole {
    Auditor,
    Approver,
    Admin,
}

impl ConsoleRole {
    pub fn name(self) -> &'static str {
        match self {
            ConsoleRole::Auditor => "auditor",
            ConsoleRole::Approver => "approver",
            ConsoleRole::Admin => "admin",
        }
    }
}

/// The approvals console: the OpenID Connect client approvers sign in with, and who has
/// which role.
#[derive(Clone)]
pub struct ConsoleSettings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<std::sync::Arc<str>>,
    /// Origin and path prefix browsers use, without a trailing slash.
    pub public_url: String,
    pub redirect_uri: String,
    /// Cookies are `Secure` (the console is reached over https).
    pub secure: bool,
    pub ca_file: Option<PathBuf>,
    /// Space-separated, `openid` first.
    pub scopes: String,
    pub groups_claim: String,
    /// Trust an `email` without `email_verified` (never one marked unverified).
    pub trust_unverified_email: bool,
    pub session_ttl: Duration,
    /// Signs session cookies; `None`: the process's random key.
    pub session_key: Option<std::sync::Arc<[u8]>>,
    /// Emails (lowercase) and groups, each with the strongest role it is given.
    pub emails: std::collections::BTreeMap<String, ConsoleRole>,
    pub groups: std::collections::BTreeMap<String, ConsoleRole>,
}

impl ConsoleSettings {
    /// The strongest role a signed-in user has: by email, or by any of their groups.
    pub fn role_of(&self, email: Option<&str>, groups: &[String]) -> Option<ConsoleRole> {
        let by_email = email.and_then(|e| self.emails.get(&e.trim().to_ascii_lowercase()));
        let by_group = groups.iter().filter_map(|g| self.groups.get(g));
        by_email.into_iter().chain(by_group).max().copied()
    }
}

impl std::fmt::Debug for ConsoleSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSettings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("public_url", &self.public_url)
            .field("scopes", &self.scopes)
            .field("groups_claim", &self.groups_claim)
            .field("session_ttl", &self.session_ttl)
            .field(
                "session_key",
                &self.session_key.as_ref().map(|_| "<redacted>"),
            )
            .field("emails", &self.emails)
            .field("groups", &self.groups)
            .finish()
    }
}

/// Slack's interactive approvals: the signing secret that proves a callback came from
/// Slack, and who each Slack user is as an approver.
#[derive(Clone)]
pub struct SlackSettings {
    pub signing_secret: std::sync::Arc<[u8]>,
    /// Slack user id → approver (email).
    pub users: std::collections::BTreeMap<String, String>,
    pub response_url_prefix: String,
}

impl std::fmt::Debug for SlackSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackSettings")
            .field("signing_secret", &"<redacted>")
            .field("users", &self.users)
            .field("response_url_prefix", &self.response_url_prefix)
            .finish()
    }
}

/// How a tool is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    /// MCP over Streamable HTTP.
    Mcp,
}

/// What a request that needs approval gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalMode {
    /// 403 `approval_required` at once; the agent retries once a human decided.
    Respond,
    /// The request is held open until decided, or until the tool's `hold_timeout`.
    Hold,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: String,
    pub data_dir: PathBuf,
    pub tls: Option<TlsSettings>,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub shutdown_grace: Duration,
    pub tls_handshake_timeout: Duration,
    /// This replica's name in every audit record.
    pub replica_id: String,
}

#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    Stdout,
    File(AuditFile),
}

/// An audit log file and when it is rotated (renamed aside, the chain continuing in a new
/// file); no rotation when both are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFile {
    pub path: PathBuf,
    /// Rotate before the file would grow past this many bytes (at least 1024).
    pub rotate_bytes: Option<u64>,
    /// Rotate once the file's first record is this old (at least 1s).
    pub rotate_every: Option<Duration>,
}

/// Smallest `audit.rotate_bytes` accepted.
pub const MIN_AUDIT_ROTATE_BYTES: u64 = 1024;

#[derive(Debug, Clone)]
pub struct IdentitySettings {
    pub clock_skew: Duration,
    pub token_cache_capacity: u64,
    pub issuers: Vec<IssuerSettings>,
}

#[derive(Debug, Clone)]
pub enum JwksSource {
    File(PathBuf),
    Url {
        url: http::Uri,
        ca_file: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub struct IssuerSettings {
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
    pub jwks_refresh: Duration,
    pub agent_claim: String,
    pub agents_from_claims: bool,
    pub owner_claim: String,
    pub dev_signing_key: Option<PathBuf>,
    /// Tokens whose `exp` is further than this from their `iat` (or from now) are refused.
    pub max_token_lifetime: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    EdDsa,
    Es256,
}

#[derive(Debug, Clone)]
pub struct SigningSettings {
    pub issuer: String,
    pub algorithm: SigningAlgorithm,
    /// Where the signing key is read from, or generated into when `generated` is true.
    pub key_file: PathBuf,
    pub generated: bool,
}

/// An agent keygate knows: who it is, and who answers for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub id: Arc<str>,
    pub owner: Arc<str>,
    pub spiffe_id: Option<String>,
    /// Names of the issuers whose tokens may assert this agent (an agent taken from a
    /// token's claims: the issuer that vouched for it).
    pub issuers: Vec<Arc<str>>,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
pub struct Agents {
    pub by_id: HashMap<Arc<str>, Arc<Agent>>,
    pub by_spiffe_id: HashMap<String, Arc<Agent>>,
}

/// A tool: where its requests come from, where they go, and what credential they carry.
#[derive(Debug)]
pub struct Tool {
    pub name: Arc<str>,
    pub kind: Kind,
    pub protocol: Protocol,
    /// MCP tools (by name) that create identities, beyond the name patterns.
    pub mcp_identity_tools: Vec<String>,
    /// The tool's own operations by method and path template (relative to the tool).
    pub routes: RouteTable,
    pub approval: ApprovalMode,
    pub hold_timeout: Duration,
    pub upstream: Upstream,
    pub hosts: Vec<String>,
    /// Hosts the forward proxy tunnels blind for this tool, as `host:port` (lowercase;
    /// port 443 when the entry named none).
    pub tunnel_hosts: Vec<String>,
    pub path_prefix: bool,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_body_bytes: u64,
    pub ca_file: Option<PathBuf>,
    /// Headers removed before forwarding, beyond the ones always removed.
    pub strip_headers: Vec<HeaderName>,
    /// Query parameters removed before forwarding.
    pub strip_query: Vec<String>,
    pub on_secret: OnSecret,
    /// What the response phase does with secret formats in the tool's responses.
    /// `None`: `response_secrets = "off"`, responses are not scanned at all.
    pub response_scan: Option<crate::pipeline::scan::Settings>,
    /// Whether the secret an identity-creation call returns is captured (handed to the
    /// agent as a handle).
    pub capture: bool,
    pub credential: CredentialSpec,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Path prefix of the base URL, without a trailing slash ("" for the root).
    pub base_path: String,
    /// The `Host` header keygate sends: the host, and the port unless it is the scheme's
    /// default (as HTTP clients write it).
    pub host_header: http::HeaderValue,
}

/// `Host` for an upstream: the host, with the port only when it is not the default.
fn host_header(scheme: &Scheme, authority: &Authority) -> http::HeaderValue {
    let default = if *scheme == Scheme::HTTPS { 443 } else { 80 };
    let text = match authority.port_u16() {
        Some(p) if p != default => format!("{}:{p}", authority.host()),
        _ => authority.host().to_string(),
    };
    http::HeaderValue::from_str(&text).unwrap_or_else(|_| http::HeaderValue::from_static("invalid"))
}

#[derive(Debug, Clone)]
pub struct CredentialSpec {
    pub provider: ProviderSpec,
    pub inject: Injection,
}

#[derive(Debug, Clone)]
pub enum ProviderSpec {
    Static {
        source: SecretSource,
        credential_id: Option<String>,
    },
    Jwt {
        scope: Option<String>,
        audience: String,
        ttl: Duration,
        /// How long a minted token is reused for the same agent; zero: a new one per call.
        reuse: Duration,
    },
    Aws(Arc<AwsSpec>),
    OAuth2(Arc<super::token_providers::OAuth2Spec>),
    GithubApp(Arc<super::token_providers::GithubAppSpec>),
}

/// An AWS tool's credentials: where keygate's base key is, and the role whose sessions
/// sign each call (none: the base key signs).
#[derive(Debug, Clone)]
pub struct AwsSpec {
    /// The base key: a `credential_process`-style JSON file (`AccessKeyId`,
    /// `SecretAccessKey`, optionally `SessionToken`), re-read when it changes, or the
    /// environment variables `<PREFIX>_ACCESS_KEY_ID`, `<PREFIX>_SECRET_ACCESS_KEY` and
    /// `<PREFIX>_SESSION_TOKEN` (`from_env = "AWS"`: the standard ones).
    pub base: SecretSource,
    pub role_arn: Option<String>,
    pub action_roles: std::collections::BTreeMap<String, String>,
    pub sts_endpoint: http::Uri,
    pub sts_region: String,
    pub region: String,
    pub session_duration: Duration,
    pub external_id: Option<String>,
    /// How often the inventory is reconciled with IAM unasked (none: only when asked).
    pub reconcile_every: Option<Duration>,
    /// A record younger than this is never taken for gone (IAM is eventually consistent).
    pub reconcile_grace: Duration,
    /// How often access keys are retired at their review date unasked (none: only when
    /// asked, `keygate inventory retire`).
    pub retire_every: Option<Duration>,
    /// How long before its review date a key's owner is notified.
    pub retire_notice: Duration,
    /// How long a deactivated key is kept before it is deleted.
    pub retire_grace: Duration,
    /// The scheduled passes only report what they would do.
    pub retire_dry_run: bool,
}

// The reconcile and retirement defaults, shared with the github_app provider.
pub use super::token_providers::{
    AWS_MIN_RECONCILE_EVERY, AWS_RECONCILE_GRACE, AWS_RETIRE_EVERY, AWS_RETIRE_GRACE,
    AWS_RETIRE_NOTICE,
};
/// The shortest (and default) session STS grants.
pub const AWS_MIN_SESSION: Duration = Duration::from_secs(900);
/// The longest session keygate asks for (STS allows up to the role's maximum, 12 hours).
pub const AWS_MAX_SESSION: Duration = Duration::from_secs(12 * 3600);

impl ProviderSpec {
    pub fn name(&self) -> &'static str {
        match self {
            ProviderSpec::Static { .. } => "static",
            ProviderSpec::Jwt { .. } => "jwt",
            ProviderSpec::Aws(_) => "aws",
            ProviderSpec::OAuth2(_) => "oauth2",
            ProviderSpec::GithubApp(_) => "github_app",
        }
    }
}

/// Where an injected credential goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Injection {
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// `Authorization: Basic base64(<secret>)`; the secret is `user:password`.
    Basic,
    /// `<name>: <secret>`.
    Header(HeaderName),
    /// `?<name>=<secret>`.
    Query(String),
}

#[derive(Debug, Default)]
pub struct Tools {
    pub by_name: HashMap<Arc<str>, Arc<Tool>>,
    pub by_host: HashMap<String, Arc<Tool>>,
    /// Blind-tunnel hosts (`host:port`) and the tool that declared each.
    pub by_tunnel_host: HashMap<String, Arc<Tool>>,
}

/// Reads and validates the configuration file.
pub fn load(path: &Path) -> Result<Snapshot, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        }])
    })?;
    parse(path, &text)
}

/// Validates configuration text as if read from `path` (relative paths in it are taken
/// from `path`'s folder).
pub fn parse(path: &Path, text: &str) -> Result<Snapshot, ConfigErrors> {
    let file: ConfigFile = toml::from_str(text).map_err(|e| {
        let message = e.message().to_string();
        let key = match e.span() {
            Some(span) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}")
            }
            None => String::new(),
        };
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            key,
            message,
        }])
    })?;
    compile(path, file)
}

fn compile_audit(c: &mut Checker, a: file::AuditSection) -> AuditTarget {
    let rotates = a.rotate_bytes.is_some() || a.rotate_every.is_some();
    if let Some(n) = a.rotate_bytes {
        if n < MIN_AUDIT_ROTATE_BYTES {
            c.error(
                "audit.rotate_bytes",
                format!("must be at least {MIN_AUDIT_ROTATE_BYTES}"),
            );
        }
    }
    if let Some(d) = a.rotate_every {
        if d < Duration::from_secs(1) {
            c.error("audit.rotate_every", "must be at least 1s");
        }
    }
    match a.path.as_str() {
        "" => {
            c.error("audit.path", "must name a file or \"stdout\"");
            AuditTarget::Stdout
        }
        "stdout" | "-" => {
            if rotates {
                c.error(
                    "audit.rotate_bytes",
                    "rotate_bytes and rotate_every apply to a file, not to stdout",
                );
            }
            AuditTarget::Stdout
        }
        p => AuditTarget::File(AuditFile {
            path: c.path(Path::new(p)),
            rotate_bytes: a.rotate_bytes,
            rotate_every: a.rotate_every,
        }),
    }
}

fn compile(path: &Path, f: ConfigFile) -> Result<Snapshot, ConfigErrors> {
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut c = Checker {
        file: path,
        base,
        errors: Vec::new(),
    };

    let server = compile_server(&mut c, f.server);
    let proxy = compile_proxy(&mut c, f.proxy, &server.data_dir);
    let capture = compile_capture(&mut c, f.capture, &server.data_dir);
    if f.tasks.max_ttl.is_zero() || f.tasks.default_ttl.is_zero() {
        c.error("tasks", "default_ttl and max_ttl must be longer than zero");
    }
    if f.tasks.default_ttl > f.tasks.max_ttl {
        c.error("tasks.default_ttl", "is longer than tasks.max_ttl");
    }
    // Just-in-time access: a task is hours or days, not an open-ended grant.
    if f.tasks.max_ttl > Duration::from_secs(30 * 86_400) {
        c.error("tasks.max_ttl", "is longer than 30 days");
    }
    let tasks = TaskSettings {
        agents_may_open: f.tasks.agents_may_open,
        default_ttl: f.tasks.default_ttl,
        max_ttl: f.tasks.max_ttl,
    };
    let audit_fail_closed = f.audit.fail_closed;
    let audit = compile_audit(&mut c, f.audit);
    let identity = compile_identity(&mut c, f.identity);
    let signing = compile_signing(&mut c, f.signing, &server.data_dir);
    let agents = compile_agents(&mut c, f.agents, &identity);
    let mut operations = builtin_operations();
    let tools = compile_tools(&mut c, f.tools, &mut operations);
    let policies_dir = c.path(&f.policies.dir);
    let admin = AdminSettings {
        listen: f.admin.listen,
        token_env: f.admin.token_env,
        token_file: c.path(&f.admin.token_file),
        tls: f.admin.tls.map(|t| compile_tls(&mut c, "admin.tls", t)),
    };
    if admin.listen.parse::<std::net::SocketAddr>().is_err() {
        c.error(
            "admin.listen",
            format!(
                "{:?} is not an address such as 127.0.0.1:8081",
                admin.listen
            ),
        );
    }
    let approvals = compile_approvals(&mut c, f.approvals);
    let console = f.console.map(|s| compile_console(&mut c, s));
    let store = compile_store(&mut c, f.store);
    // An agent taken from a token's claims may be named before it first calls.
    let agents_from_claims = identity.issuers.iter().any(|i| i.agents_from_claims);
    let rate_limits = super::guard::compile_rate_limits(
        &mut c,
        f.rate_limits,
        &|a| agents_from_claims || agents.by_id.contains_key(a),
        &|t| tools.by_name.contains_key(t),
        &operations,
        matches!(store.backend, crate::store::Backend::Postgres(_)),
    );
    let anomalies = super::guard::compile_anomalies(&mut c, f.anomalies);
    let telemetry = TelemetrySettings {
        otlp_endpoint: f.telemetry.otlp_endpoint,
        otlp_protocol: f.telemetry.otlp_protocol,
        service_name: f.telemetry.service_name,
        queue_size: f.telemetry.queue_size,
    };
    if let Some(p) = &telemetry.otlp_protocol {
        if p != "grpc" && p != "http/protobuf" {
            c.error(
                "telemetry.otlp_protocol",
                format!("{p:?} is not \"grpc\" or \"http/protobuf\""),
            );
        }
    }
    if let Some(e) = &telemetry.otlp_endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            c.error(
                "telemetry.otlp_endpoint",
                format!("{e:?} is not an http(s) URL"),
            );
        }
    }
    if telemetry.queue_size < 16 {
        c.error("telemetry.queue_size", "must be at least 16");
    }

    // Policies are validated against a schema that declares every operation, so they
    // are compiled (policy::load) only when the rest is sound.
    if !c.errors.is_empty() {
        return Err(ConfigErrors(c.errors));
    }
    Ok(Snapshot {
        source: path.to_path_buf(),
        server,
        audit,
        identity,
        signing,
        agents,
        tools,
        operations,
        policies_dir,
        admin,
        approvals,
        console,
        audit_fail_closed,
        store,
        telemetry,
        proxy,
        capture,
        rate_limits,
        anomalies,
        tasks,
    })
}

/// `read`, `write`, `tunnel`, and every operation of the identity-creation catalog.
fn builtin_operations() -> Operations {
    let read = Arc::new(Operation::new("read", &["read"], None));
    let write = Arc::new(Operation::new("write", &["write"], None));
    let tunnel = Arc::new(Operation::new(TUNNEL, &[TUNNEL], None));
    let mut by_name = BTreeMap::new();
    by_name.insert(read.name.clone(), read.clone());
    by_name.insert(write.name.clone(), write.clone());
    by_name.insert(tunnel.name.clone(), tunnel.clone());
    for kind in Kind::ALL {
        for op in crate::catalog::operations(*kind) {
            let mut o = Operation::new(op.name, op.tags, op.identity_kind);
            o.catalog = Some(op);
            by_name.insert(o.name.clone(), Arc::new(o));
        }
    }
    Operations {
        by_name,
        mcp_identity_tools: Default::default(),
        read,
        write,
        tunnel,
    }
}

fn compile_approvals(c: &mut Checker, a: file::ApprovalsSection) -> ApprovalSettings {
    for (key, d) in [
        ("approvals.pending_ttl", a.pending_ttl),
        ("approvals.approval_ttl", a.approval_ttl),
        ("approvals.review_after", a.review_after),
    ] {
        if d.is_zero() {
            c.error(key, "must be longer than zero");
        }
    }
    if a.max_pending_per_agent == 0 {
        c.error("approvals.max_pending_per_agent", "must be at least 1");
    }
    let webhook_max_per_minute = std::num::NonZeroU32::new(a.webhook_max_per_minute)
        .unwrap_or_else(|| {
            c.error("approvals.webhook_max_per_minute", "must be at least 1");
            std::num::NonZeroU32::MIN
        });
    let webhook_url = a.webhook_url.and_then(|u| match u.parse::<http::Uri>() {
        Ok(uri) if uri.scheme().is_some() && uri.host().is_some() => Some(uri),
        _ => {
            c.error(
                "approvals.webhook_url",
                format!("{u:?} is not an http(s) URL"),
            );
            None
        }
    });
    ApprovalSettings {
        pending_ttl: a.pending_ttl,
        approval_ttl: a.approval_ttl,
        review_after: a.review_after,
        webhook_url,
        decide_at: a.decide_at,
        max_pending_per_agent: a.max_pending_per_agent,
        webhook_max_per_minute,
        separation_of_duties: a.separation_of_duties,
        slack: a.slack.map(|s| compile_slack(c, s)),
    }
}

/// A secret read from a file (one line, trimmed) or an environment variable; exactly one
/// of them must be set.
fn read_secret(
    c: &Checker,
    file: Option<&std::path::Path>,
    env: Option<&str>,
    what: &str,
) -> Result<String, String> {
    match (file, env) {
        (Some(f), None) => {
            let path = c.path(f);
            std::fs::read_to_string(&path)
                .map(|t| t.trim().to_string())
                .map_err(|e| format!("cannot read {} ({what}): {e}", path.display()))
        }
        (None, Some(v)) => std::env::var(v)
            .map(|t| t.trim().to_string())
            .map_err(|_| format!("environment variable {v} ({what}) is not set")),
        _ => Err(format!(
            "{what}: set the _file or the _env setting, not both"
        )),
    }
}

fn compile_console(c: &mut Checker, s: file::ConsoleSection) -> ConsoleSettings {
    let issuer = s.issuer.trim().to_string();
    match issuer.parse::<http::Uri>() {
        Ok(u) if u.host().is_some() && matches!(u.scheme_str(), Some("https" | "http")) => {
            if u.scheme_str() == Some("http") && !is_loopback_host(u.host().unwrap_or("")) {
                c.error("console.issuer", "must be https (http only on loopback)");
            }
        }
        _ => c.error(
            "console.issuer",
            format!("{issuer:?} is not an http(s) URL"),
        ),
    }
    if s.client_id.trim().is_empty() {
        c.error("console.client_id", "must not be empty");
    }
    let client_secret = match (&s.client_secret_file, &s.client_secret_env) {
        (None, None) => None,
        (f, e) => match read_secret(c, f.as_deref(), e.as_deref(), "the console's client secret") {
            Ok(t) if !t.is_empty() => Some(std::sync::Arc::from(t)),
            Ok(_) => {
                c.error("console", "the client secret is empty");
                None
            }
            Err(e) => {
                c.error("console", e);
                None
            }
        },
    };
    let public_url = s.public_url.trim().trim_end_matches('/').to_string();
    let secure = public_url.starts_with("https://");
    match public_url.parse::<http::Uri>() {
        Ok(u) if u.host().is_some() && (secure || public_url.starts_with("http://")) => {
            if !secure && !is_loopback_host(u.host().unwrap_or("")) {
                c.error(
                    "console.public_url",
                    "must be https (session cookies travel on it; http only on loopback)",
                );
            }
        }
        _ => c.error(
            "console.public_url",
            format!("{public_url:?} is not an http(s) URL"),
        ),
    }
    let session_key = match (&s.session_key_file, &s.session_key_env) {
        (None, None) => None,
        (f, e) => match read_secret(c, f.as_deref(), e.as_deref(), "the console's session key") {
            Ok(k) if k.len() >= 32 => Some(std::sync::Arc::from(k.into_bytes())),
            Ok(_) => {
                c.error("console", "the session key is shorter than 32 bytes");
                None
            }
            Err(e) => {
                c.error("console", e);
                None
            }
        },
    };
    if s.session_ttl < Duration::from_secs(60) || s.session_ttl > Duration::from_secs(7 * 86400) {
        c.error("console.session_ttl", "must be between 1m and 7d");
    }
    if !s.scopes.iter().any(|x| x == "email") {
        c.error(
            "console.scopes",
            "must include \"email\": approvers are recorded, given roles and kept from \
             approving their own agents by their verified email",
        );
    }
    let mut scopes = vec!["openid".to_string()];
    for sc in s.scopes {
        if sc.is_empty() || sc.contains(|ch: char| ch.is_whitespace()) {
            c.error("console.scopes", format!("{sc:?} is not a scope"));
        } else if !scopes.contains(&sc) {
            scopes.push(sc);
        }
    }
    let mut emails = std::collections::BTreeMap::new();
    let mut groups = std::collections::BTreeMap::new();
    for (role, members) in [
        (ConsoleRole::Auditor, s.roles.auditor),
        (ConsoleRole::Approver, s.roles.approver),
        (ConsoleRole::Admin, s.roles.admin),
    ] {
        for m in members {
            let m = m.trim();
            let (map, key) = match m.strip_prefix("group:") {
                Some(g) => (&mut groups, g.to_string()),
                None => (&mut emails, m.to_ascii_lowercase()),
            };
            if key.is_empty() {
                c.error(
                    format!("console.roles.{}", role.name()),
                    "an entry is empty: write an email or group:NAME",
                );
                continue;
            }
            let held = map.entry(key).or_insert(role);
            *held = (*held).max(role);
        }
    }
    if emails.is_empty() && groups.is_empty() {
        c.error(
            "console.roles",
            "give at least one email or group a role (admin, approver, auditor)",
        );
    }
    ConsoleSettings {
        redirect_uri: format!("{public_url}/console/callback"),
        issuer,
        client_id: s.client_id,
        client_secret,
        public_url,
        secure,
        ca_file: s.ca_file.map(|f| c.path(&f)),
        scopes: scopes.join(" "),
        groups_claim: s.groups_claim,
        trust_unverified_email: s.trust_unverified_email,
        session_ttl: s.session_ttl,
        session_key,
        emails,
        groups,
    }
}

fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn compile_slack(c: &mut Checker, s: file::SlackSection) -> SlackSettings {
    let secret = read_secret(
        c,
        s.signing_secret_file.as_deref(),
        s.signing_secret_env.as_deref(),
        "the Slack signing secret",
    );
    let secret = match secret {
        Ok(t) if t.len() >= 16 => t,
        Ok(_) => {
            c.error(
                "approvals.slack",
                "the signing secret is shorter than 16 characters",
            );
            String::new()
        }
        Err(e) => {
            c.error("approvals.slack", e);
            String::new()
        }
    };
    for (user, approver) in &s.users {
        if user.is_empty() || approver.trim().is_empty() {
            c.error(
                "approvals.slack.users",
                "a Slack user id and its approver must not be empty",
            );
        }
    }
    let prefix = s
        .response_url_prefix
        .unwrap_or_else(|| "https://hooks.slack.com/".to_string());
    if !(prefix.starts_with("https://") || prefix.starts_with("http://")) || !prefix.ends_with('/')
    {
        c.error(
            "approvals.slack.response_url_prefix",
            "must be an http(s) URL ending with '/'",
        );
    }
    SlackSettings {
        signing_secret: std::sync::Arc::from(secret.into_bytes()),
        users: s.users,
        response_url_prefix: prefix,
    }
}

fn compile_server(c: &mut Checker, s: file::ServerSection) -> ServerSettings {
    if s.listen.parse::<std::net::SocketAddr>().is_err() {
        c.error(
            "server.listen",
            format!("{:?} is not an address such as 127.0.0.1:8080", s.listen),
        );
    }
    if s.max_header_bytes < 1024 {
        c.error("server.max_header_bytes", "must be at least 1024");
    }
    if s.max_headers == 0 {
        c.error("server.max_headers", "must be at least 1");
    }
    for (key, d) in [
        ("server.header_read_timeout", s.header_read_timeout),
        ("server.body_read_timeout", s.body_read_timeout),
        ("server.tls_handshake_timeout", s.tls_handshake_timeout),
    ] {
        if d.is_zero() {
            c.error(key, "must be longer than zero");
        }
    }
    let tls = s.tls.map(|t| compile_tls(c, "server.tls", t));
    ServerSettings {
        listen: s.listen,
        data_dir: c.path(&s.data_dir),
        tls,
        max_header_bytes: s.max_header_bytes,
        max_headers: s.max_headers,
        header_read_timeout: s.header_read_timeout,
        body_read_timeout: s.body_read_timeout,
        shutdown_grace: s.shutdown_grace,
        tls_handshake_timeout: s.tls_handshake_timeout,
        replica_id: replica_id(c, s.replica_id),
    }
}

/// `server.replica_id`, else `KEYGATE_REPLICA_ID`, else the host name.
fn replica_id(c: &mut Checker, configured: Option<String>) -> String {
    if configured.as_deref().is_some_and(str::is_empty) {
        c.error("server.replica_id", "must not be empty");
    }
    let id = configured
        .or_else(|| std::env::var("KEYGATE_REPLICA_ID").ok())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "keygate".to_string());
    let valid = id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !valid {
        c.error(
            "server.replica_id",
            "must be 1 to 128 letters, digits, '-', '_' or '.'",
        );
    }
    id
}

/// The PostgreSQL URL with the TLS it must use: `sslmode=verify-full` when it names none
/// (the database's certificate and host name verified); `verify-ca` as written; no TLS
/// (`disable`) only to a loopback address or a Unix socket; the modes that do not verify
/// the certificate (`allow`, `prefer`, `require`) refused: with them anyone on the path
/// reads the password and every approval. `ca_file` needs a mode that verifies.
fn pg_tls(url: &str, has_ca_file: bool) -> Result<String, String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mode = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "sslmode")
        .map(|(_, v)| v.into_owned());
    let authority = base.split_once("://").map(|(_, r)| r).unwrap_or(base);
    let authority = authority.split('/').next().unwrap_or("");
    let host = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    let socket =
        form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == "host" && v.starts_with('/'));
    let local = socket
        || host.starts_with('%')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback());
    match mode.as_deref() {
        None => {
            let sep = if query.is_empty() { "?" } else { "&" };
            let base = url.trim_end_matches('?');
            Ok(format!("{base}{sep}sslmode=verify-full"))
        }
        Some("verify-full" | "verify-ca") => Ok(url.to_string()),
        Some("disable") if local && !has_ca_file => Ok(url.to_string()),
        Some("disable") if has_ca_file => Err("ca_file needs sslmode=verify-full".into()),
        Some("disable") => Err(format!(
            "sslmode=disable sends the password and every approval in clear: allowed only to \
             a loopback address, not {host:?}; use sslmode=verify-full"
        )),
        Some(m @ ("allow" | "prefer" | "require")) => Err(format!(
            "sslmode={m} does not verify the database's certificate: use sslmode=verify-full \
             (with ca_file for a private CA)"
        )),
        Some(m) => Err(format!("sslmode={m:?} is not a PostgreSQL TLS mode")),
    }
}

fn compile_store(c: &mut Checker, s: file::StoreSection) -> crate::store::StoreSettings {
    use crate::store::{Backend, OnUnavailable, PgTarget};
    let url = match (s.url, s.url_env) {
        (Some(_), Some(_)) => {
            c.error("store", "set url or url_env, not both");
            None
        }
        (Some(u), None) => Some(u),
        (None, Some(var)) => match std::env::var(&var) {
            Ok(u) if !u.is_empty() => Some(u),
            _ => {
                c.error(
                    "store.url_env",
                    format!("environment variable {var} (the PostgreSQL URL) is not set"),
                );
                None
            }
        },
        (None, None) => None,
    };
    let backend = match url {
        Some(url) => {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                c.error(
                    "store.url",
                    "must be a PostgreSQL URL (postgres://user@host:5432/db)",
                );
            }
            let url = match pg_tls(&url, s.ca_file.is_some()) {
                Ok(url) => url,
                Err(message) => {
                    c.error("store.url", message);
                    url
                }
            };
            if s.max_connections == 0 {
                c.error("store.max_connections", "must be at least 1");
            }
            Backend::Postgres(PgTarget {
                url,
                ca_file: s
                    .ca_file
                    .as_ref()
                    .map(|p| c.existing_file("store.ca_file".into(), p)),
                max_connections: s.max_connections,
            })
        }
        None => {
            if s.ca_file.is_some() {
                c.error("store.ca_file", "applies to a PostgreSQL store (url) only");
            }
            Backend::Sqlite(c.path(&s.path))
        }
    };
    if s.sync_interval < Duration::from_millis(100) {
        c.error("store.sync_interval", "must be at least 100ms");
    }
    if s.share_interval < Duration::from_millis(100) {
        c.error("store.share_interval", "must be at least 100ms");
    }
    if s.max_staleness <= s.sync_interval {
        c.error(
            "store.max_staleness",
            "must be longer than store.sync_interval",
        );
    }
    let on_unavailable = match s.on_unavailable.as_str() {
        "cached" => OnUnavailable::Cached,
        "refuse" => OnUnavailable::Refuse,
        other => {
            c.error(
                "store.on_unavailable",
                format!("{other:?} is not \"cached\" or \"refuse\""),
            );
            OnUnavailable::Refuse
        }
    };
    crate::store::StoreSettings {
        backend,
        sync_interval: s.sync_interval,
        share_interval: s.share_interval,
        max_staleness: s.max_staleness,
        on_unavailable,
    }
}

fn compile_tls(c: &mut Checker, key: &str, t: file::TlsSection) -> TlsSettings {
    let cert_file = c.existing_file(format!("{key}.cert_file"), &t.cert_file);
    let key_file = c.existing_file(format!("{key}.key_file"), &t.key_file);
    let client_ca_file = t
        .client_ca_file
        .as_ref()
        .map(|p| c.existing_file(format!("{key}.client_ca_file"), p));
    if t.client_auth != ClientAuth::Off && client_ca_file.is_none() {
        c.error(
            format!("{key}.client_ca_file"),
            "is required when client_auth is \"optional\" or \"required\"",
        );
    }
    TlsSettings {
        cert_file,
        key_file,
        client_ca_file,
        client_auth: t.client_auth,
    }
}

fn compile_capture(c: &mut Checker, p: file::CaptureSection, data_dir: &Path) -> CaptureSettings {
    let default_file = || KeySource::File(data_dir.join("capture.key"));
    let key = match (p.key_file, p.key_env) {
        (Some(_), Some(_)) => {
            c.error("capture", "set key_file or key_env, not both");
            default_file()
        }
        (Some(f), None) => KeySource::File(c.path(&f)),
        (None, Some(v)) => KeySource::Env(v),
        (None, None) => default_file(),
    };
    let previous = p
        .previous_key_files
        .iter()
        .map(|f| KeySource::File(c.path(f)))
        .chain(p.previous_key_envs.into_iter().map(KeySource::Env))
        .collect();
    CaptureSettings { key, previous }
}

fn compile_proxy(c: &mut Checker, p: file::ProxySection, data_dir: &Path) -> Option<ProxySettings> {
    let listen = p.listen?;
    if listen.parse::<std::net::SocketAddr>().is_err() {
        c.error(
            "proxy.listen",
            format!("{listen:?} is not an address such as 127.0.0.1:8082"),
        );
    }
    if p.leaf_ttl < Duration::from_secs(60) || p.leaf_ttl > MAX_LEAF_TTL {
        c.error("proxy.leaf_ttl", "must be between 1m and 7d");
    }
    if p.tunnel_idle_timeout.is_zero() {
        c.error("proxy.tunnel_idle_timeout", "must be longer than zero");
    }
    let (ca_cert_file, ca_key_file, ca_generated) = match (&p.ca_cert_file, &p.ca_key_file) {
        (None, None) => (
            data_dir.join("proxy-ca.crt"),
            data_dir.join("proxy-ca.key"),
            true,
        ),
        (Some(cert), Some(key)) => (
            c.existing_file("proxy.ca_cert_file".into(), cert),
            c.existing_file("proxy.ca_key_file".into(), key),
            false,
        ),
        _ => {
            c.error(
                "proxy.ca_cert_file",
                "ca_cert_file and ca_key_file go together (or neither, for keygate's own CA)",
            );
            (PathBuf::new(), PathBuf::new(), false)
        }
    };
    let tls = p.tls.map(|t| compile_tls(c, "proxy.tls", t));
    Some(ProxySettings {
        listen,
        ca_cert_file,
        ca_key_file,
        ca_generated,
        leaf_ttl: p.leaf_ttl,
        tunnel_idle_timeout: p.tunnel_idle_timeout,
        tls,
    })
}

/// A `hosts` entry: a host (with a port or not), or a host and a path prefix of plain
/// segments (`api.example.com/billing`), which selects the tool for that prefix only.
fn is_host_entry(entry: &str) -> bool {
    let (host, prefix) = match entry.find('/') {
        Some(i) => (&entry[..i], Some(&entry[i..])),
        None => (entry, None),
    };
    let host_ok = !host.is_empty() && host.parse::<Authority>().is_ok() && !host.contains('@');
    let prefix_ok = prefix.is_none_or(|p| {
        p.len() > 1
            && p[1..].split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
            })
    });
    host_ok && prefix_ok
}

/// A `hosts` entry as requests are matched against it: lowercase, and without a port
/// (lookups drop the port a request names, so an entry's port could never match).
fn host_key(entry: &str) -> String {
    let entry = entry.to_ascii_lowercase();
    let (host, prefix) = match entry.find('/') {
        Some(i) => entry.split_at(i),
        None => (entry.as_str(), ""),
    };
    match host.parse::<Authority>() {
        Ok(a) if a.port().is_some() && !host.contains('@') => format!("{}{prefix}", a.host()),
        _ => entry.clone(),
    }
}

/// A blind-tunnel host as the CONNECT target names it: `host:port`, lowercase, port 443
/// when the entry has none.
fn tunnel_host(entry: &str) -> Option<String> {
    let a: Authority = entry.parse().ok()?;
    if a.as_str().contains('@') || a.host().is_empty() {
        return None;
    }
    Some(format!(
        "{}:{}",
        a.host().to_ascii_lowercase(),
        a.port_u16().unwrap_or(443)
    ))
}

fn compile_identity(c: &mut Checker, s: file::IdentitySection) -> IdentitySettings {
    if s.clock_skew > MAX_CLOCK_SKEW {
        c.error("identity.clock_skew", "must be at most 5m");
    }
    if s.token_cache_capacity == 0 {
        c.error("identity.token_cache_capacity", "must be at least 1");
    }
    let mut names = std::collections::HashSet::new();
    let mut issuers = Vec::new();
    let mut from_claims = Vec::new();
    for (i, e) in s.issuers.into_iter().enumerate() {
        let key = format!("identity.issuers[{i}]");
        if e.name.is_empty() {
            c.error(format!("{key}.name"), "must not be empty");
        } else if !names.insert(e.name.clone()) {
            c.error(
                format!("{key}.name"),
                format!("{:?} is declared twice", e.name),
            );
        }
        if e.issuer.is_empty() {
            c.error(format!("{key}.issuer"), "must not be empty");
        }
        if e.audiences.is_empty() || e.audiences.iter().any(String::is_empty) {
            c.error(
                format!("{key}.audiences"),
                "must list at least one non-empty audience",
            );
        }
        if e.jwks_refresh < Duration::from_secs(1) {
            c.error(format!("{key}.jwks_refresh"), "must be at least 1s");
        }
        let jwks = match (&e.jwks_file, &e.jwks_url) {
            (Some(p), None) => {
                let full = c.path(p);
                // A dev issuer's JWKS is written at start; any other must exist.
                if e.dev_signing_key.is_none() && !full.is_file() {
                    c.error(
                        format!("{key}.jwks_file"),
                        format!("no such file: {}", full.display()),
                    );
                }
                JwksSource::File(full)
            }
            (None, Some(u)) => {
                let url = match u.parse::<http::Uri>() {
                    Ok(url) if url.scheme() == Some(&Scheme::HTTPS) && url.host().is_some() => url,
                    _ => {
                        c.error(
                            format!("{key}.jwks_url"),
                            format!("{u:?} is not an https URL"),
                        );
                        http::Uri::default()
                    }
                };
                let ca_file = e
                    .jwks_ca_file
                    .as_ref()
                    .map(|p| c.existing_file(format!("{key}.jwks_ca_file"), p));
                JwksSource::Url { url, ca_file }
            }
            _ => {
                c.error(key.clone(), "needs exactly one of jwks_file and jwks_url");
                JwksSource::File(PathBuf::new())
            }
        };
        if e.max_token_lifetime < Duration::from_secs(1) {
            c.error(format!("{key}.max_token_lifetime"), "must be at least 1s");
        }
        if e.agents_from_claims {
            from_claims.push(e.name.clone());
        }
        if e.dev_signing_key.is_some() && e.jwks_file.is_none() {
            c.error(
                format!("{key}.dev_signing_key"),
                "needs jwks_file, where keygate writes the dev issuer's public key",
            );
        }
        issuers.push(IssuerSettings {
            name: e.name,
            issuer: e.issuer,
            audiences: e.audiences,
            jwks,
            jwks_refresh: e.jwks_refresh,
            agent_claim: e.agent_claim,
            agents_from_claims: e.agents_from_claims,
            owner_claim: e.owner_claim,
            dev_signing_key: e.dev_signing_key.map(|p| c.path(&p)),
            max_token_lifetime: e.max_token_lifetime,
        });
    }
    // An agent taken from claims is known by its id alone (policies, approvals,
    // suspensions): two issuers minting ids in one namespace could assert each other's.
    if from_claims.len() > 1 {
        c.error(
            "identity.issuers",
            format!(
                "agents_from_claims is set on several issuers ({}): an agent id vouched for by one could be claimed through another; keep it on one and declare the other issuers' agents in [[agents]]",
                from_claims.join(", ")
            ),
        );
    }
    IdentitySettings {
        clock_skew: s.clock_skew,
        token_cache_capacity: s.token_cache_capacity,
        issuers,
    }
}

fn compile_signing(c: &mut Checker, s: file::SigningSection, data_dir: &Path) -> SigningSettings {
    if s.issuer.is_empty() {
        c.error("signing.issuer", "must not be empty");
    }
    let algorithm = match s.algorithm.as_str() {
        "EdDSA" | "Ed25519" => SigningAlgorithm::EdDsa,
        "ES256" => SigningAlgorithm::Es256,
        other => {
            c.error(
                "signing.algorithm",
                format!("{other:?} is not supported; use \"EdDSA\" or \"ES256\""),
            );
            SigningAlgorithm::EdDsa
        }
    };
    let (key_file, generated) = match &s.key_file {
        Some(p) => (c.existing_file("signing.key_file".into(), p), false),
        None => {
            let name = match algorithm {
                SigningAlgorithm::EdDsa => "signing-ed25519.pem",
                SigningAlgorithm::Es256 => "signing-es256.pem",
            };
            (data_dir.join(name), true)
        }
    };
    SigningSettings {
        issuer: s.issuer,
        algorithm,
        key_file,
        generated,
    }
}

fn compile_agents(
    c: &mut Checker,
    entries: Vec<file::AgentEntry>,
    identity: &IdentitySettings,
) -> Agents {
    let mut agents = Agents::default();
    for (i, e) in entries.into_iter().enumerate() {
        let key = format!("agents[{i}]");
        let issuers = agent_issuers(c, &key, &e, identity);
        if e.id.is_empty() {
            c.error(format!("{key}.id"), "must not be empty");
        }
        if e.owner.is_empty() {
            c.error(
                format!("{key}.owner"),
                "must name the human or team accountable for the agent",
            );
        }
        if let Some(s) = &e.spiffe_id {
            if !is_spiffe_id(s) {
                c.error(
                    format!("{key}.spiffe_id"),
                    format!("{s:?} is not a SPIFFE ID such as spiffe://example.org/agent"),
                );
            }
        }
        let agent = Arc::new(Agent {
            id: e.id.as_str().into(),
            owner: e.owner.as_str().into(),
            spiffe_id: e.spiffe_id.clone(),
            issuers,
            attributes: e.attributes,
        });
        if agents
            .by_id
            .insert(agent.id.clone(), agent.clone())
            .is_some()
        {
            c.error(format!("{key}.id"), format!("{:?} is declared twice", e.id));
        }
        if let Some(s) = e.spiffe_id {
            if agents.by_spiffe_id.insert(s.clone(), agent).is_some() {
                c.error(
                    format!("{key}.spiffe_id"),
                    format!("{s:?} is mapped to two agents"),
                );
            }
        }
    }
    agents
}

/// The issuers whose tokens may assert an agent. Fails closed: an entry without
/// `issuers` is bound to the only configured issuer, and refused when there are several
/// (binding it to all of them would let any issuer assert it, which is what `issuers`
/// prevents).
fn agent_issuers(
    c: &mut Checker,
    key: &str,
    e: &file::AgentEntry,
    identity: &IdentitySettings,
) -> Vec<Arc<str>> {
    let configured: Vec<&str> = identity.issuers.iter().map(|i| i.name.as_str()).collect();
    let Some(names) = &e.issuers else {
        return match configured.as_slice() {
            [] => Vec::new(),
            [one] => vec![Arc::from(*one)],
            several => {
                c.error(
                    format!("{key}.issuers"),
                    format!(
                        "agent {:?} must name the issuers whose tokens may assert it, such as issuers = [{:?}]: several issuers are configured ({})",
                        e.id,
                        several[0],
                        several.join(", ")
                    ),
                );
                Vec::new()
            }
        };
    };
    for n in names {
        if !configured.contains(&n.as_str()) {
            c.error(
                format!("{key}.issuers"),
                format!(
                    "{n:?} is not the name of a configured issuer ({})",
                    if configured.is_empty() {
                        "none is configured".to_string()
                    } else {
                        configured.join(", ")
                    }
                ),
            );
        }
    }
    if names.is_empty() && e.spiffe_id.is_none() {
        c.error(
            format!("{key}.issuers"),
            format!(
                "agent {:?} names no issuer and has no spiffe_id: nothing could identify it",
                e.id
            ),
        );
    }
    names.iter().map(|n| Arc::from(n.as_str())).collect()
}

/// `spiffe://<trust domain>/<path>`, as the SPIFFE ID standard spells it.
pub fn is_spiffe_id(s: &str) -> bool {
    match s.strip_prefix("spiffe://") {
        Some(rest) => {
            let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
            !domain.is_empty()
                && domain
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
                && !path.ends_with('/')
                && !rest.contains("//")
                && !s.contains(['?', '#'])
        }
        None => false,
    }
}

fn tool_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn compile_tools(
    c: &mut Checker,
    entries: Vec<file::ToolEntry>,
    operations: &mut Operations,
) -> Tools {
    let mut tools = Tools::default();
    for (i, e) in entries.into_iter().enumerate() {
        let key = if tool_name_ok(&e.name) {
            format!("tools.{}", e.name)
        } else {
            c.error(
                format!("tools[{i}].name"),
                format!(
                    "{:?} is not a tool name (letters, digits, '-', '_', '.')",
                    e.name
                ),
            );
            format!("tools[{i}]")
        };
        let upstream = compile_upstream(c, &key, &e.upstream);
        if !e.path_prefix && e.hosts.is_empty() {
            c.error(
                format!("{key}.hosts"),
                "a tool with path_prefix = false needs at least one host",
            );
        }
        if e.connect_timeout.is_zero() {
            c.error(format!("{key}.connect_timeout"), "must be longer than zero");
        }
        if e.request_timeout.is_zero() {
            c.error(format!("{key}.request_timeout"), "must be longer than zero");
        }
        let ca_file = e
            .ca_file
            .as_ref()
            .map(|p| c.existing_file(format!("{key}.ca_file"), p));
        let mut strip_headers = Vec::new();
        for h in &e.strip_headers {
            match HeaderName::from_bytes(h.as_bytes()) {
                Ok(n) => strip_headers.push(n),
                Err(_) => c.error(
                    format!("{key}.strip_headers"),
                    format!("{h:?} is not a header name"),
                ),
            }
        }
        let credential = compile_credential(c, &key, &e.name, &e.upstream, e.credential);
        let kind = Kind::parse(&e.kind).unwrap_or_else(|| {
            c.error(
                format!("{key}.kind"),
                format!("{:?} is not a tool kind (generic, aws, gcp, msgraph, github, gitlab, kubernetes, vault, okta, stripe)", e.kind),
            );
            Kind::Generic
        });
        if matches!(credential.provider, ProviderSpec::Aws(_)) && kind != Kind::Aws {
            c.error(
                format!("{key}.credential.provider"),
                "the aws provider signs for AWS: it goes with kind = \"aws\"",
            );
        }
        let routes = compile_routes(c, &key, e.routes, operations);
        let protocol = match e.protocol.as_str() {
            "http" => Protocol::Http,
            "mcp" => Protocol::Mcp,
            other => {
                c.error(
                    format!("{key}.protocol"),
                    format!("{other:?} is not \"http\" or \"mcp\""),
                );
                Protocol::Http
            }
        };
        if protocol != Protocol::Mcp && !e.mcp_identity_tools.is_empty() {
            c.error(
                format!("{key}.mcp_identity_tools"),
                "applies to protocol = \"mcp\" tools only",
            );
        }
        for n in &e.mcp_identity_tools {
            if n.is_empty() || n.contains('"') {
                c.error(
                    format!("{key}.mcp_identity_tools"),
                    format!("{n:?} is not an MCP tool name"),
                );
            }
            operations.mcp_identity_tools.insert(n.clone());
        }
        let approval = match e.approval.as_str() {
            "respond" => ApprovalMode::Respond,
            "hold" => ApprovalMode::Hold,
            other => {
                c.error(
                    format!("{key}.approval"),
                    format!("{other:?} is not \"respond\" or \"hold\""),
                );
                ApprovalMode::Respond
            }
        };
        if e.hold_timeout.is_zero() || e.hold_timeout > Duration::from_secs(3600) {
            c.error(format!("{key}.hold_timeout"), "must be between 1s and 1h");
        }
        let mut tunnel_hosts = Vec::new();
        for h in &e.tunnel_hosts {
            match tunnel_host(h) {
                Some(t) => tunnel_hosts.push(t),
                None => c.error(
                    format!("{key}.tunnel_hosts"),
                    format!("{h:?} is not a host or host:port"),
                ),
            }
        }
        let tool = Arc::new(Tool {
            name: e.name.as_str().into(),
            kind,
            protocol,
            mcp_identity_tools: e.mcp_identity_tools,
            routes,
            approval,
            hold_timeout: e.hold_timeout,
            upstream,
            hosts: e.hosts.iter().map(|h| host_key(h)).collect(),
            tunnel_hosts,
            path_prefix: e.path_prefix,
            connect_timeout: e.connect_timeout,
            request_timeout: e.request_timeout,
            max_body_bytes: e.max_body_bytes,
            ca_file,
            strip_headers,
            strip_query: e.strip_query,
            on_secret: e.on_secret,
            response_scan: Some(crate::pipeline::scan::Settings {
                mode: match e.response_secrets {
                    file::ResponseSecrets::Redact => crate::pipeline::scan::Mode::Redact,
                    file::ResponseSecrets::Block => crate::pipeline::scan::Mode::Block,
                    file::ResponseSecrets::Pass | file::ResponseSecrets::Off => {
                        crate::pipeline::scan::Mode::Pass
                    }
                },
                compressed: match e.compressed_responses {
                    file::CompressedResponses::Decompress => {
                        crate::pipeline::scan::Compressed::Decompress
                    }
                    file::CompressedResponses::Refuse => crate::pipeline::scan::Compressed::Refuse,
                },
                max_decompressed: e.max_decompressed_bytes,
                max_buffered: e.max_decompressed_bytes,
            })
            .filter(|_| e.response_secrets != file::ResponseSecrets::Off),
            capture: e.created_secrets == file::CreatedSecrets::Capture,
            credential,
        });
        for h in &tool.hosts {
            if !is_host_entry(h) {
                c.error(
                    format!("{key}.hosts"),
                    format!("{h:?} is not a host, or a host and a path prefix (api.example.com/billing)"),
                );
            }
            if tools.by_host.insert(h.clone(), tool.clone()).is_some() {
                c.error(format!("{key}.hosts"), format!("{h:?} selects two tools"));
            }
        }
        for h in &tool.tunnel_hosts {
            if tools
                .by_tunnel_host
                .insert(h.clone(), tool.clone())
                .is_some()
            {
                c.error(
                    format!("{key}.tunnel_hosts"),
                    format!("{h:?} is tunnelled for two tools"),
                );
            }
        }
        if tools.by_name.insert(tool.name.clone(), tool).is_some() {
            c.error(
                format!("{key}.name"),
                format!("{:?} is declared twice", e.name),
            );
        }
    }
    // A host is intercepted or tunnelled blind, never both.
    for (h, t) in &tools.by_tunnel_host {
        let host = h.rsplit_once(':').map_or(h.as_str(), |(host, _)| host);
        if tools
            .by_host
            .keys()
            .any(|k| k.split('/').next() == Some(host))
        {
            c.error(
                format!("tools.{}.tunnel_hosts", t.name),
                format!("{host:?} is also a tool's host, which keygate intercepts"),
            );
        }
    }
    tools
}

fn compile_routes(
    c: &mut Checker,
    tool_key: &str,
    entries: Vec<file::RouteEntry>,
    operations: &mut Operations,
) -> RouteTable {
    let mut table = RouteTable::default();
    for (i, r) in entries.into_iter().enumerate() {
        let key = format!("{tool_key}.routes[{i}]");
        let method = match r.method.as_str() {
            "*" => None,
            m => match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) => Some(m),
                Err(_) => {
                    c.error(
                        format!("{key}.method"),
                        format!("{m:?} is not an HTTP method"),
                    );
                    continue;
                }
            },
        };
        let name_ok = !r.operation.is_empty()
            && r.operation
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:/".contains(&b));
        if !name_ok {
            c.error(
                format!("{key}.operation"),
                format!(
                    "{:?} is not an operation name (letters, digits, '_', '-', '.', ':', '/')",
                    r.operation
                ),
            );
            continue;
        }
        let mut tags: Vec<&str> = r.tags.iter().map(String::as_str).collect();
        if tags.iter().any(|t| t.is_empty() || t.contains('"')) {
            c.error(
                format!("{key}.tags"),
                "tags must be non-empty and without quotes",
            );
            continue;
        }
        if r.identity_kind.is_some() && !tags.contains(&IDENTITY_CREATION) {
            tags.push(IDENTITY_CREATION);
        }
        if tags.contains(&IDENTITY_CREATION) && r.identity_kind.is_none() {
            c.error(
                format!("{key}.identity_kind"),
                "an identity_creation operation must say what kind of identity it creates",
            );
            continue;
        }
        let op = Arc::new(Operation::new(
            &r.operation,
            &tags,
            r.identity_kind.as_deref(),
        ));
        let op = match operations.by_name.get(&op.name) {
            Some(existing)
                if existing.tags == op.tags
                    && existing.identity_kind == op.identity_kind
                    && existing.catalog.is_none() =>
            {
                existing.clone()
            }
            Some(_) => {
                c.error(
                    format!("{key}.operation"),
                    format!(
                        "{:?} is already an operation with other tags (or a built-in one)",
                        r.operation
                    ),
                );
                continue;
            }
            None => {
                operations.by_name.insert(op.name.clone(), op.clone());
                op
            }
        };
        if let Err(e) = table.insert(method, &r.path, op) {
            c.error(format!("{key}.path"), e);
        }
    }
    table
}

fn compile_upstream(c: &mut Checker, key: &str, url: &str) -> Upstream {
    let fallback = Upstream {
        scheme: Scheme::HTTP,
        authority: Authority::from_static("invalid"),
        base_path: String::new(),
        host_header: http::HeaderValue::from_static("invalid"),
    };
    let Ok(uri) = url.parse::<http::Uri>() else {
        c.error(format!("{key}.upstream"), format!("{url:?} is not a URL"));
        return fallback;
    };
    let scheme = match uri.scheme() {
        Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => s.clone(),
        _ => {
            c.error(
                format!("{key}.upstream"),
                format!("{url:?} must be an http or https URL"),
            );
            return fallback;
        }
    };
    let Some(authority) = uri.authority().cloned() else {
        c.error(format!("{key}.upstream"), format!("{url:?} has no host"));
        return fallback;
    };
    if authority.as_str().contains('@') {
        c.error(
            format!("{key}.upstream"),
            "must not carry credentials; configure a credential provider instead",
        );
    }
    if uri.query().is_some() {
        c.error(format!("{key}.upstream"), "must not have a query");
    }
    Upstream {
        host_header: host_header(&scheme, &authority),
        scheme,
        authority,
        base_path: uri.path().trim_end_matches('/').to_string(),
    }
}

fn compile_credential(
    c: &mut Checker,
    tool_key: &str,
    tool_name: &str,
    upstream: &str,
    e: file::CredentialEntry,
) -> CredentialSpec {
    let key = format!("{tool_key}.credential");
    check_fields_apply(c, &key, &e);
    let provider = match e.provider.as_str() {
        "static" => {
            let source = match (e.from_env, e.from_file) {
                (Some(v), None) => {
                    if v.is_empty() {
                        c.error(format!("{key}.from_env"), "must not be empty");
                    }
                    SecretSource::Env(v)
                }
                (None, Some(p)) => SecretSource::File(c.path(&p)),
                _ => {
                    c.error(
                        key.clone(),
                        "a static credential needs exactly one of from_env and from_file",
                    );
                    SecretSource::Env(String::new())
                }
            };
            ProviderSpec::Static {
                source,
                credential_id: e.credential_id.clone(),
            }
        }
        "jwt" => {
            let ttl = e.ttl.unwrap_or(MAX_MINTED_TTL);
            if ttl > MAX_MINTED_TTL || ttl < Duration::from_secs(1) {
                c.error(format!("{key}.ttl"), "must be between 1s and 5m");
            }
            let reuse = if e.unique_per_call {
                if e.reuse_window.is_some() {
                    c.error(
                        format!("{key}.reuse_window"),
                        "does not apply with unique_per_call = true",
                    );
                }
                Duration::ZERO
            } else {
                let w = e.reuse_window.unwrap_or(ttl / 2);
                // A reused token must still have a useful life left when it is sent.
                if w >= ttl || w > ttl.mul_f64(0.9) {
                    c.error(
                        format!("{key}.reuse_window"),
                        "must be shorter than 90% of the ttl",
                    );
                }
                w
            };
            ProviderSpec::Jwt {
                scope: e.scope.clone(),
                audience: e.audience.clone().unwrap_or_else(|| tool_name.to_string()),
                ttl,
                reuse,
            }
        }
        "aws" => ProviderSpec::Aws(Arc::new(compile_aws(c, &key, &e))),
        "oauth2" => ProviderSpec::OAuth2(Arc::new(super::token_providers::compile_oauth2(
            c, &key, &e,
        ))),
        "github_app" => ProviderSpec::GithubApp(Arc::new(
            super::token_providers::compile_github_app(c, &key, &e, upstream),
        )),
        other => {
            c.error(
                format!("{key}.provider"),
                format!(
                    "{other:?} is not a credential provider; use \"static\", \"jwt\", \"aws\", \"oauth2\" or \"github_app\""
                ),
            );
            ProviderSpec::Jwt {
                scope: None,
                audience: String::new(),
                ttl: MAX_MINTED_TTL,
                reuse: Duration::ZERO,
            }
        }
    };
    let inject = match e.inject.as_str() {
        "bearer" => Injection::Bearer,
        "basic" => Injection::Basic,
        "header" => match e
            .header
            .as_deref()
            .map(|h| HeaderName::from_bytes(h.as_bytes()))
        {
            Some(Ok(h)) => Injection::Header(h),
            Some(Err(_)) => {
                c.error(format!("{key}.header"), "is not a header name");
                Injection::Bearer
            }
            None => {
                c.error(
                    format!("{key}.header"),
                    "is required with inject = \"header\"",
                );
                Injection::Bearer
            }
        },
        "query" => match e.query {
            Some(q) if !q.is_empty() => Injection::Query(q),
            _ => {
                c.error(
                    format!("{key}.query"),
                    "is required with inject = \"query\"",
                );
                Injection::Bearer
            }
        },
        other => {
            c.error(
                format!("{key}.inject"),
                format!("{other:?} is not one of \"bearer\", \"basic\", \"header\", \"query\""),
            );
            Injection::Bearer
        }
    };
    if matches!(provider, ProviderSpec::Jwt { .. }) && inject == Injection::Basic {
        c.error(
            format!("{key}.inject"),
            "a minted JWT cannot be sent as basic auth",
        );
    }
    CredentialSpec { provider, inject }
}

/// An AWS tool's credential section.
fn compile_aws(c: &mut Checker, key: &str, e: &file::CredentialEntry) -> AwsSpec {
    let base = match (&e.from_env, &e.from_file) {
        (Some(v), None) if !v.is_empty() => SecretSource::Env(v.clone()),
        (None, Some(p)) => SecretSource::File(c.path(p)),
        _ => {
            c.error(
                key.to_string(),
                "the aws provider needs exactly one of from_env (a variable prefix: \"AWS\" reads AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) and from_file (credential_process JSON)",
            );
            SecretSource::Env(String::new())
        }
    };
    if e.inject != default_inject_name() {
        c.error(
            format!("{key}.inject"),
            "does not apply to the aws provider: it signs each call (SigV4)",
        );
    }
    let role = |c: &mut Checker, k: String, arn: &str| {
        if !(arn.starts_with("arn:") && arn.contains(":role/")) {
            c.error(
                k,
                format!("{arn:?} is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)"),
            );
        }
    };
    if let Some(arn) = &e.role_arn {
        role(c, format!("{key}.role_arn"), arn);
    }
    for (action, arn) in &e.action_roles {
        role(c, format!("{key}.action_roles.{action}"), arn);
        if !action.contains(':') {
            c.error(
                format!("{key}.action_roles.{action}"),
                "names an IAM action, such as \"iam:CreateUser\"",
            );
        }
    }
    if e.role_arn.is_none() && !e.action_roles.is_empty() {
        c.error(
            format!("{key}.action_roles"),
            "needs role_arn: without a role every call is signed by the base key",
        );
    }
    let sts_endpoint = e
        .sts_endpoint
        .as_deref()
        .unwrap_or("https://sts.amazonaws.com");
    let sts_endpoint = match sts_endpoint.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => u,
        _ => {
            c.error(
                format!("{key}.sts_endpoint"),
                format!("{sts_endpoint:?} is not an http(s) URL"),
            );
            http::Uri::from_static("https://sts.amazonaws.com")
        }
    };
    let region = e.region.clone().unwrap_or_else(|| "us-east-1".into());
    let session_duration = e.session_duration.unwrap_or(AWS_MIN_SESSION);
    if !(AWS_MIN_SESSION..=AWS_MAX_SESSION).contains(&session_duration) {
        c.error(
            format!("{key}.session_duration"),
            "must be between 15m (the least STS grants) and 12h",
        );
    }
    super::token_providers::check_lifecycle(c, key, e);
    AwsSpec {
        base,
        role_arn: e.role_arn.clone(),
        action_roles: e.action_roles.clone(),
        sts_endpoint,
        sts_region: e.sts_region.clone().unwrap_or_else(|| region.clone()),
        region,
        session_duration,
        external_id: e.external_id.clone(),
        reconcile_every: e.reconcile_every,
        reconcile_grace: e.reconcile_grace.unwrap_or(AWS_RECONCILE_GRACE),
        retire_every: e
            .retire_overdue
            .then(|| e.retire_every.unwrap_or(AWS_RETIRE_EVERY)),
        retire_notice: e.retire_notice.unwrap_or(AWS_RETIRE_NOTICE),
        retire_grace: e.retire_grace.unwrap_or(AWS_RETIRE_GRACE),
        retire_dry_run: e.retire_dry_run,
    }
}

/// Refuses a field set for a provider it does not apply to: every field of a credential
/// section, and the providers that read it.
fn check_fields_apply(c: &mut Checker, key: &str, e: &file::CredentialEntry) {
    const STATIC: &[&str] = &["static"];
    const JWT: &[&str] = &["jwt"];
    const AWS: &[&str] = &["aws"];
    const OAUTH2: &[&str] = &["oauth2"];
    const GITHUB: &[&str] = &["github_app"];
    // Reconciled and retired: AWS access keys, GitHub deploy keys.
    const LIFECYCLE: &[&str] = &["aws", "github_app"];
    let fields: [(&str, bool, &[&str]); 39] = [
        (
            "from_env",
            e.from_env.is_some(),
            &["static", "aws", "oauth2"],
        ),
        (
            "from_file",
            e.from_file.is_some(),
            &["static", "aws", "oauth2"],
        ),
        ("credential_id", e.credential_id.is_some(), STATIC),
        ("scope", e.scope.is_some(), &["jwt", "oauth2"]),
        ("audience", e.audience.is_some(), &["jwt", "oauth2"]),
        ("ttl", e.ttl.is_some(), JWT),
        ("unique_per_call", e.unique_per_call, JWT),
        ("reuse_window", e.reuse_window.is_some(), JWT),
        (
            "header",
            e.header.is_some(),
            &["static", "jwt", "oauth2", "github_app"],
        ),
        (
            "query",
            e.query.is_some(),
            &["static", "jwt", "oauth2", "github_app"],
        ),
        ("role_arn", e.role_arn.is_some(), AWS),
        ("action_roles", !e.action_roles.is_empty(), AWS),
        ("sts_endpoint", e.sts_endpoint.is_some(), AWS),
        ("sts_region", e.sts_region.is_some(), AWS),
        ("region", e.region.is_some(), AWS),
        ("session_duration", e.session_duration.is_some(), AWS),
        ("external_id", e.external_id.is_some(), AWS),
        ("reconcile_every", e.reconcile_every.is_some(), LIFECYCLE),
        ("reconcile_grace", e.reconcile_grace.is_some(), LIFECYCLE),
        (
            "reconcile_repositories",
            !e.reconcile_repositories.is_empty(),
            GITHUB,
        ),
        ("retire_overdue", e.retire_overdue, LIFECYCLE),
        ("retire_every", e.retire_every.is_some(), LIFECYCLE),
        ("retire_notice", e.retire_notice.is_some(), LIFECYCLE),
        // A deploy key has no inactive state to wait in: it is deleted at once.
        ("retire_grace", e.retire_grace.is_some(), AWS),
        ("retire_dry_run", e.retire_dry_run, LIFECYCLE),
        ("token_endpoint", e.token_endpoint.is_some(), OAUTH2),
        (
            "revocation_endpoint",
            e.revocation_endpoint.is_some(),
            OAUTH2,
        ),
        ("client_id", e.client_id.is_some(), OAUTH2),
        ("client_auth", e.client_auth.is_some(), OAUTH2),
        ("client_key_file", e.client_key_file.is_some(), OAUTH2),
        ("client_key_id", e.client_key_id.is_some(), OAUTH2),
        ("grant", e.grant.is_some(), OAUTH2),
        ("resource", e.resource.is_some(), OAUTH2),
        ("app_id", e.app_id.is_some(), GITHUB),
        ("private_key_file", e.private_key_file.is_some(), GITHUB),
        ("installation_id", e.installation_id.is_some(), GITHUB),
        ("api_url", e.api_url.is_some(), GITHUB),
        ("owners", !e.owners.is_empty(), GITHUB),
        (
            "default_permissions",
            e.default_permissions.is_some(),
            GITHUB,
        ),
    ];
    let name = e.provider.as_str();
    if !["static", "jwt", "aws", "oauth2", "github_app"].contains(&name) {
        return; // reported as an unknown provider
    }
    let operations = (
        "operations",
        !e.operations.is_empty(),
        &["oauth2", "github_app"][..],
    );
    for (field, set, applies) in fields.into_iter().chain([operations]) {
        if set && !applies.contains(&name) {
            let to = match applies {
                [one] => format!("the {one} provider only"),
                many => format!("the {} providers only", many.join(", ")),
            };
            c.error(format!("{key}.{field}"), format!("applies to {to}"));
        }
    }
}

fn default_inject_name() -> &'static str {
    "bearer"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_reached_over_verified_tls_unless_it_is_local() {
        let ok = |u: &str, ca: bool| pg_tls(u, ca).unwrap();
        assert_eq!(
            ok("postgres://k@db.internal:5432/kg", false),
            "postgres://k@db.internal:5432/kg?sslmode=verify-full"
        );
        assert_eq!(
            ok("postgres://k@db:5432/kg?application_name=x", true),
            "postgres://k@db:5432/kg?application_name=x&sslmode=verify-full"
        );
        for u in [
            "postgres://k@db/kg?sslmode=verify-full",
            "postgres://k@db/kg?sslmode=verify-ca",
            "postgres://k:pw@127.0.0.1:5432/kg?sslmode=disable",
            "postgres://k@[::1]:5432/kg?sslmode=disable",
            "postgres://k@localhost/kg?sslmode=disable",
            "postgres://k@/kg?host=/run/postgresql&sslmode=disable",
        ] {
            assert_eq!(ok(u, false), u);
        }
        for (u, ca) in [
            ("postgres://k:pw@db.internal/kg?sslmode=disable", false),
            ("postgres://k@db/kg?sslmode=require", false),
            ("postgres://k@db/kg?sslmode=prefer", false),
            ("postgres://k@db/kg?sslmode=allow", false),
            ("postgres://k@db/kg?sslmode=whatever", false),
            ("postgres://k@127.0.0.1/kg?sslmode=disable", true),
            (
                "postgres://k@127.0.0.1.evil.example/kg?sslmode=disable",
                false,
            ),
        ] {
            let e = pg_tls(u, ca).unwrap_err();
            assert!(!e.contains("pw"), "{e}");
        }
    }

    #[test]
    fn host_entries_and_tunnel_hosts() {
        for ok in [
            "api.github.com",
            "localhost:8080",
            "api.example.com/billing",
            "h/a/b-c_d.e~f",
        ] {
            assert!(is_host_entry(ok), "{ok}");
        }
        for bad in [
            "", "/x", "h/", "h//x", "h/./x", "h/../x", "h/x/", "h/a%2Fb", "u@h", "h/a b",
        ] {
            assert!(!is_host_entry(bad), "{bad}");
        }
        assert_eq!(
            tunnel_host("Pinned.Example.com").as_deref(),
            Some("pinned.example.com:443")
        );
        assert_eq!(
            tunnel_host("localhost:8443").as_deref(),
            Some("localhost:8443")
        );
        assert_eq!(tunnel_host("u@h:1"), None);
        assert_eq!(tunnel_host("h/x"), None);
    }

    #[test]
    fn every_error_is_reported_at_once_with_its_key() {
        let text = r#"
            [server]
            listen = "nowhere"
            [[tools]]
            name = "a"
            upstream = "ftp://x"
            [tools.credential]
            provider = "magic"
            [[tools]]
            name = "b"
            upstream = "http://b.example"
            [tools.credential]
            provider = "jwt"
            ttl = "1h"
            inject = "query"
        "#;
        let errs = parse(Path::new("k.toml"), text)
            .err()
            .map(|e| e.0)
            .unwrap_or_default();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert!(keys.contains(&"server.listen"), "{keys:?}");
        assert!(keys.contains(&"tools.a.upstream"), "{keys:?}");
        assert!(keys.contains(&"tools.a.credential.provider"), "{keys:?}");
        assert!(keys.contains(&"tools.b.credential.ttl"), "{keys:?}");
        assert!(keys.contains(&"tools.b.credential.query"), "{keys:?}");
        assert!(errs.iter().all(|e| e.file == Path::new("k.toml")));
    }

    #[test]
    fn a_task_is_at_most_thirty_days() {
        let errs = |max: &str| {
            let text = format!(
                "[tasks]\nmax_ttl = {max:?}\n[[tools]]\nname = \"a\"\nupstream = \"http://a.example\"\n\
                 [tools.credential]\nprovider = \"jwt\"\n"
            );
            parse(Path::new("k.toml"), &text)
                .err()
                .map(|e| e.0)
                .unwrap_or_default()
                .into_iter()
                .map(|e| e.key)
                .collect::<Vec<_>>()
        };
        assert_eq!(errs("30d"), Vec::<String>::new());
        assert_eq!(errs("31d"), ["tasks.max_ttl"]);
    }

    #[test]
    fn proxy_settings_and_tunnel_hosts_are_checked() {
        let text = r#"
            [proxy]
            listen = "anywhere"
            leaf_ttl = "30d"
            ca_cert_file = "ca.pem"
            [[tools]]
            name = "a"
            upstream = "http://a.example"
            hosts = ["api.example.com", "api.example.com/x/", "u@h"]
            [tools.credential]
            provider = "jwt"
            [[tools]]
            name = "b"
            upstream = "http://b.example"
            tunnel_hosts = ["api.example.com:443", "bad host"]
            [tools.credential]
            provider = "jwt"
        "#;
        let errs = parse(Path::new("k.toml"), text)
            .err()
            .map(|e| e.0)
            .unwrap_or_default();
        let has = |key: &str, part: &str| {
            errs.iter()
                .any(|e| e.key == key && e.message.contains(part))
        };
        let all: Vec<String> = errs
            .iter()
            .map(|e| format!("{}: {}", e.key, e.message))
            .collect();
        assert!(has("proxy.listen", "not an address"), "{all:?}");
        assert!(has("proxy.leaf_ttl", "between 1m and 7d"), "{all:?}");
        assert!(has("proxy.ca_cert_file", "go together"), "{all:?}");
        assert!(has("tools.a.hosts", "\"api.example.com/x/\""), "{all:?}");
        assert!(has("tools.a.hosts", "\"u@h\""), "{all:?}");
        assert!(has("tools.b.tunnel_hosts", "\"bad host\""), "{all:?}");
        assert!(has("tools.b.tunnel_hosts", "also a tool's host"), "{all:?}");
        // No [proxy]: no listener, and nothing to check.
        let snap = parse(
            Path::new("k.toml"),
            "[[tools]]\nname = \"a\"\nupstream = \"http://a.example\"\n[tools.credential]\nprovider = \"jwt\"\n",
        );
        assert!(snap.is_ok_and(|s| s.proxy.is_none()));
    }

    /// `[[identity.issuers]]` blocks (dev issuers: their JWKS file need not exist yet).
    fn issuers_toml(names: &[&str], extra: &str) -> String {
        names
            .iter()
            .map(|n| {
                format!(
                    "[[identity.issuers]]\nname = {n:?}\nissuer = {n:?}\naudiences = [\"k\"]\njwks_file = \"{n}.json\"\ndev_signing_key = \"{n}.pem\"\n{extra}"
                )
            })
            .collect()
    }

    #[test]
    fn agents_are_bound_to_the_issuers_that_may_assert_them() {
        // (issuers, issuer extra, agent extra, the errors expected: key and message part)
        type Case<'a> = (&'a [&'a str], &'a str, &'a str, &'a [(&'a str, &'a str)]);
        let cases: [Case; 9] = [
            (&["a"], "", "", &[]),
            (&["a"], "", "issuers = [\"a\"]\n", &[]),
            (&[], "", "spiffe_id = \"spiffe://x/y\"\n", &[]),
            (&["a", "b"], "", "issuers = [\"b\"]\n", &[]),
            (
                &["a", "b"],
                "",
                "",
                &[("agents[0].issuers", "agent \"ag\" must name the issuers")],
            ),
            (
                &["a"],
                "",
                "issuers = [\"https://a\"]\n",
                &[("agents[0].issuers", "\"https://a\" is not the name of")],
            ),
            (
                &["a"],
                "",
                "issuers = []\n",
                &[("agents[0].issuers", "nothing could identify it")],
            ),
            (
                &["a"],
                "max_token_lifetime = \"0s\"\n",
                "",
                &[("identity.issuers[0].max_token_lifetime", "at least 1s")],
            ),
            (
                &["a", "b"],
                "agents_from_claims = true\n",
                "issuers = [\"a\"]\n",
                &[("identity.issuers", "agents_from_claims is set on several")],
            ),
        ];
        for (names, issuer_extra, agent_extra, expected) in cases {
            let text = format!(
                "{}[[agents]]\nid = \"ag\"\nowner = \"o\"\n{agent_extra}",
                issuers_toml(names, issuer_extra)
            );
            let errs = parse(Path::new("/nonexistent/k.toml"), &text)
                .err()
                .map(|e| e.0)
                .unwrap_or_default();
            // Only the policy folder (absent here) may fail beyond the expected errors.
            let config_errs: Vec<&ConfigError> =
                errs.iter().filter(|e| !e.key.is_empty()).collect();
            assert_eq!(config_errs.len(), expected.len(), "{text}\n{errs:?}");
            for (key, part) in expected {
                assert!(
                    config_errs
                        .iter()
                        .any(|e| e.key == *key && e.message.contains(part)),
                    "{key}: {part}\n{text}\n{errs:?}"
                );
            }
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = parse(Path::new("k.toml"), "[server]\nlisten_on = \"x\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("unknown field"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn spiffe_ids() {
        for ok in [
            "spiffe://example.org/agent",
            "spiffe://prod.acme-1/ns/a/sa/b",
        ] {
            assert!(is_spiffe_id(ok), "{ok}");
        }
        for bad in [
            "https://example.org/a",
            "spiffe://",
            "spiffe://Example.org/a",
            "spiffe://example.org/a/",
            "spiffe://example.org//a",
            "spiffe://example.org/a?x",
        ] {
            assert!(!is_spiffe_id(bad), "{bad}");
        }
    }

    #[test]
    fn host_header_omits_only_the_default_port() {
        let h = |scheme: Scheme, a: &'static str| {
            super::host_header(&scheme, &Authority::from_static(a))
                .to_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(h(Scheme::HTTP, "127.0.0.1:9100"), "127.0.0.1:9100");
        assert_eq!(h(Scheme::HTTP, "tool.internal:80"), "tool.internal");
        assert_eq!(h(Scheme::HTTPS, "api.github.com:443"), "api.github.com");
        assert_eq!(h(Scheme::HTTPS, "api.github.com"), "api.github.com");
        assert_eq!(
            h(Scheme::HTTPS, "api.github.com:8443"),
            "api.github.com:8443"
        );
        assert_eq!(h(Scheme::HTTP, "[::1]:8080"), "[::1]:8080");
    }
}

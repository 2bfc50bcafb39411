//! The configuration file as users write it (TOML). These types are the stable external
//! form; nothing outside `config` reads them: [`super::compile`] turns them into the
//! running snapshot. Every struct denies unknown fields, so a misspelt key is an error
//! rather than a silently ignored setting.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub audit: AuditSection,
    #[serde(default)]
    pub identity: IdentitySection,
    #[serde(default)]
    pub signing: SigningSection,
    #[serde(default)]
    pub telemetry: TelemetrySection,
    #[serde(default)]
    pub policies: PoliciesSection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub approvals: ApprovalsSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub proxy: ProxySection,
    #[serde(default)]
    pub capture: CaptureSection,
    #[serde(default)]
    pub tasks: TasksSection,
    /// The approvals console on the admin listener, with OpenID Connect sign-in.
    pub console: Option<ConsoleSection>,
    #[serde(default)]
    pub agents: Vec<AgentEntry>,
    #[serde(default)]
    pub tools: Vec<ToolEntry>,
    /// Per-agent rate limits: over one, the agent gets 429 `rate_limited` with
    /// `Retry-After`.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitEntry>,
    /// What each agent normally does, and the detectors that act when it does otherwise.
    #[serde(default)]
    pub anomalies: AnomaliesSection,
}

/// One rate limit: which calls it counts (every selector given must match) and how many
/// it allows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitEntry {
    /// Only this agent's calls (absent: every agent's).
    pub agent: Option<String>,
    /// Only calls to this tool (absent: any tool).
    pub tool: Option<String>,
    /// Only operations with this tag, such as `identity_creation` (absent: any).
    pub tag: Option<String>,
    /// Whose calls share one allowance: `"agent"` (each agent its own, the default),
    /// `"agent_and_tool"` (each agent on each tool its own) or `"tool"` (every agent on a
    /// tool together).
    #[serde(default)]
    pub per: Option<String>,
    /// The sustained rate: exactly one of these.
    pub per_second: Option<u32>,
    pub per_minute: Option<u32>,
    pub per_hour: Option<u32>,
    /// How many calls may come at once (default: the rate's count).
    pub burst: Option<u32>,
    /// Counted across every replica sharing the PostgreSQL store (approximately; see
    /// `store.share_interval`), not per replica.
    #[serde(default)]
    pub shared: bool,
}

/// `[anomalies]`: baselines per agent, and the detectors (each absent: off).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomaliesSection {
    /// How long after an agent's first call its baseline only learns: detectors of what is
    /// new, and of rates, stay quiet until then.
    #[serde(with = "humantime_serde")]
    pub learning_period: Duration,
    /// How often baselines are written to the store (off the request path).
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// How long `action = "require_approval"` holds: the agent's write calls need a
    /// human's approval until then (or until the agent is resumed).
    #[serde(with = "humantime_serde")]
    pub require_approval_for: Duration,
    pub new_tool: Option<DetectorSection>,
    pub new_operation: Option<DetectorSection>,
    pub new_host: Option<DetectorSection>,
    pub rate_spike: Option<RateSpikeSection>,
    pub refusal_burst: Option<RefusalBurstSection>,
    pub off_hours_identity_creation: Option<OffHoursSection>,
}

impl Default for AnomaliesSection {
    fn default() -> Self {
        AnomaliesSection {
            learning_period: Duration::from_secs(7 * 86400),
            flush_interval: Duration::from_secs(30),
            require_approval_for: Duration::from_secs(3600),
            new_tool: None,
            new_operation: None,
            new_host: None,
            rate_spike: None,
            refusal_burst: None,
            off_hours_identity_creation: None,
        }
    }
}

/// A detector that has nothing to set but what it does.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSection {
    /// `"record"`, `"notify"`, `"require_approval"` or `"suspend"`.
    pub action: String,
}

/// A call rate far above the agent's baseline for a tool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSpikeSection {
    pub action: String,
    /// How many deviations above its mean a minute's calls must be.
    #[serde(default = "default_sigmas")]
    pub sigmas: f64,
    /// And at least this many calls in the minute (a quiet agent's few calls are no spike).
    #[serde(default = "default_min_per_minute")]
    pub min_per_minute: u32,
}

fn default_sigmas() -> f64 {
    4.0
}

fn default_min_per_minute() -> u32 {
    30
}

/// A burst of refusals: policy denials, secrets in requests, denied approvals.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefusalBurstSection {
    pub action: String,
    /// This many refusals …
    pub count: u32,
    /// … within this long.
    #[serde(with = "humantime_serde", default = "default_burst_window")]
    pub window: Duration,
}

fn default_burst_window() -> Duration {
    Duration::from_secs(60)
}

/// Identity creation outside business hours, as the agent's owner defines them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffHoursSection {
    pub action: String,
    /// The default business hours (see [`BusinessHoursSection`]).
    pub days: Option<Vec<String>>,
    pub hours: Option<String>,
    pub utc_offset: Option<String>,
    /// Owners with other hours than the default above.
    #[serde(default)]
    pub owners: BTreeMap<String, BusinessHoursSection>,
}

/// Business hours: days of the week and a time range, in one UTC offset.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct BusinessHoursSection {
    /// Such as `["mon", "tue", "wed", "thu", "fri"]` (the default).
    pub days: Option<Vec<String>>,
    /// Such as `"08:00-18:00"` (the default).
    pub hours: Option<String>,
    /// Such as `"+01:00"` (default `"+00:00"`).
    pub utc_offset: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// OTLP endpoint of a collector or tracing backend, such as http://127.0.0.1:4317
    /// (gRPC) or http://127.0.0.1:4318 (HTTP); OTEL_EXPORTER_OTLP_ENDPOINT otherwise.
    pub otlp_endpoint: Option<String>,
    /// "grpc" or "http/protobuf"; OTEL_EXPORTER_OTLP_PROTOCOL otherwise (default grpc).
    pub otlp_protocol: Option<String>,
    /// `service.name` of keygate's spans; OTEL_SERVICE_NAME otherwise ("keygate").
    pub service_name: Option<String>,
    /// Finished spans waiting for export; beyond this they are dropped (and counted).
    pub queue_size: usize,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        TelemetrySection {
            otlp_endpoint: None,
            otlp_protocol: None,
            service_name: None,
            queue_size: 4096,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoliciesSection {
    /// Folder of Cedar policies (`*.cedar`) and the schema (`*.cedarschema`).
    pub dir: PathBuf,
}

impl Default for PoliciesSection {
    fn default() -> Self {
        PoliciesSection {
            dir: PathBuf::from("../policies"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Address of the admin API (approvals, inventory, suspensions, reload).
    pub listen: String,
    /// Environment variable holding the admin token.
    pub token_env: Option<String>,
    /// File holding the admin token; generated on first start when absent.
    pub token_file: PathBuf,
    /// Serve the admin listener (API, console) over TLS; with `client_ca_file`, callers
    /// may be asked for a client certificate too.
    pub tls: Option<TlsSection>,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: "127.0.0.1:8081".into(),
            token_env: None,
            token_file: PathBuf::from("../data/admin.token"),
            tls: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsSection {
    /// How long a request waits for a decision before its approval expires.
    #[serde(with = "humantime_serde")]
    pub pending_ttl: Duration,
    /// How long an approval may be used (once) after it is granted, unless the approver says.
    #[serde(with = "humantime_serde")]
    pub approval_ttl: Duration,
    /// When an identity created through keygate is due for review, unless the approver says.
    #[serde(with = "humantime_serde")]
    pub review_after: Duration,
    /// Slack-compatible incoming webhook told of every new pending approval.
    pub webhook_url: Option<String>,
    /// Where approvers decide, quoted to agents and in notifications.
    pub decide_at: Option<String>,
    /// Pending approvals one agent may have at once; past it a new request that needs an
    /// approval is refused (429 `too_many_pending_approvals`) and nothing is stored.
    pub max_pending_per_agent: u32,
    /// Webhook notifications sent at most per minute (bursts up to this many); past it
    /// they are dropped and counted (`keygate_webhook_notifications_dropped_total`).
    pub webhook_max_per_minute: u32,
    /// The owner of the agent that asked cannot approve its request.
    pub separation_of_duties: bool,
    /// Approve and Deny buttons in the Slack message, whose clicks keygate verifies.
    pub slack: Option<SlackSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSection {
    /// The OpenID Connect issuer approvers sign in with (discovery at
    /// `{issuer}/.well-known/openid-configuration`).
    pub issuer: String,
    pub client_id: String,
    /// The client's secret, in a file (one line) or an environment variable; neither for a
    /// public client (PKCE alone).
    pub client_secret_file: Option<PathBuf>,
    pub client_secret_env: Option<String>,
    /// Where browsers reach the admin listener, e.g. https://keygate-admin.example.com;
    /// the redirect URI is `{public_url}/console/callback`.
    pub public_url: String,
    /// CA bundle for the identity provider (system roots otherwise).
    pub ca_file: Option<PathBuf>,
    /// Scopes asked for; `openid` is always asked.
    #[serde(default = "default_console_scopes")]
    pub scopes: Vec<String>,
    /// Trust the `email` of an ID token that does not say whether it is verified (for a
    /// provider that never sends `email_verified` and lets no user set their own email).
    #[serde(default)]
    pub trust_unverified_email: bool,
    /// The ID token claim that lists the user's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// How long a sign-in lasts.
    #[serde(default = "default_session_ttl", with = "humantime_serde")]
    pub session_ttl: Duration,
    /// The key that signs session cookies (at least 32 bytes), in a file or an environment
    /// variable: replicas behind one address share it. Neither: a random key per process
    /// (a restart signs everyone out).
    pub session_key_file: Option<PathBuf>,
    pub session_key_env: Option<String>,
    /// Who has which role: emails, and `group:NAME` for a group claim's member.
    #[serde(default)]
    pub roles: ConsoleRoles,
}

fn default_console_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}

fn default_groups_claim() -> String {
    "groups".into()
}

fn default_session_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConsoleRoles {
    /// Everything an approver may, and suspending and resuming agents.
    #[serde(default)]
    pub admin: Vec<String>,
    /// Reads everything; approves and denies.
    #[serde(default)]
    pub approver: Vec<String>,
    /// Reads everything; decides nothing.
    #[serde(default)]
    pub auditor: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SlackSection {
    /// The Slack app's signing secret, in a file (one line) or an environment variable.
    pub signing_secret_file: Option<PathBuf>,
    pub signing_secret_env: Option<String>,
    /// Slack user id → the approver it is (their email, as recorded on decisions). A
    /// click by anyone else decides nothing.
    #[serde(default)]
    pub users: BTreeMap<String, String>,
    /// Where a callback's `response_url` may point (keygate updates the message there).
    pub response_url_prefix: Option<String>,
}

impl Default for ApprovalsSection {
    fn default() -> Self {
        ApprovalsSection {
            pending_ttl: Duration::from_secs(24 * 3600),
            approval_ttl: Duration::from_secs(3600),
            review_after: Duration::from_secs(90 * 24 * 3600),
            webhook_url: None,
            decide_at: None,
            max_pending_per_agent: 20,
            webhook_max_per_minute: 30,
            separation_of_duties: true,
            slack: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// SQLite database file for approvals, inventory and suspensions (the default store).
    pub path: PathBuf,
    /// PostgreSQL instead of SQLite, for several replicas sharing state:
    /// `postgres://user@host:5432/db?sslmode=verify-full`. Better without its password:
    /// see `url_env`.
    pub url: Option<String>,
    /// An environment variable holding the PostgreSQL URL (with its password).
    pub url_env: Option<String>,
    /// CA certificates (PEM) that verify the database's TLS certificate; the Mozilla roots
    /// otherwise. TLS itself is chosen by the URL's `sslmode`.
    pub ca_file: Option<PathBuf>,
    /// Most connections to PostgreSQL per replica (plus one that listens for changes).
    pub max_connections: u32,
    /// How often each replica re-reads suspensions, keys and captured secrets (changes are
    /// also pushed at once with PostgreSQL).
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
    /// How often each replica writes its counts of `shared` rate limits to PostgreSQL and
    /// reads the other replicas' (off the request path).
    #[serde(with = "humantime_serde")]
    pub share_interval: Duration,
    /// How old this replica's view of suspensions may grow, while the store cannot be
    /// read, before every call is refused (503 `store_unavailable`).
    #[serde(with = "humantime_serde")]
    pub max_staleness: Duration,
    /// While the store cannot be read: "cached" serves calls that need no store (no
    /// approval) on the last view of suspensions, for `max_staleness`; "refuse" refuses
    /// every call at once.
    pub on_unavailable: String,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            path: PathBuf::from("../data/keygate.db"),
            url: None,
            url_env: None,
            ca_file: None,
            max_connections: 8,
            sync_interval: Duration::from_secs(1),
            share_interval: Duration::from_secs(1),
            max_staleness: Duration::from_secs(5),
            on_unavailable: "cached".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address of the agent-facing listener.
    pub listen: String,
    /// This replica's name in every audit record; `KEYGATE_REPLICA_ID`, else the host
    /// name, when not set.
    pub replica_id: Option<String>,
    /// Where keygate keeps generated keys and state; relative to the config file's folder.
    pub data_dir: PathBuf,
    pub tls: Option<TlsSection>,
    /// Largest request head (request line plus headers) in bytes.
    pub max_header_bytes: usize,
    /// Most request headers.
    pub max_headers: usize,
    /// Time a client has to send the whole request head.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time a client has to send the whole body of a request that keygate reads before forwarding.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Time in-flight requests get to finish after SIGTERM/SIGINT.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Time a TLS client has to finish its handshake.
    #[serde(with = "humantime_serde")]
    pub tls_handshake_timeout: Duration,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:8080".into(),
            replica_id: None,
            data_dir: PathBuf::from("../data"),
            tls: None,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// The forward-proxy listener: clients that honour `HTTPS_PROXY` reach their tools
/// through it, unmodified.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
    /// Address of the forward-proxy listener; no listener when unset.
    pub listen: Option<String>,
    /// keygate's CA (PEM certificate and key) that issues the certificates of the hosts
    /// tools name; generated on first start in the data directory when both are unset.
    pub ca_cert_file: Option<PathBuf>,
    pub ca_key_file: Option<PathBuf>,
    /// Life of a host certificate keygate issues (at most 7 days).
    #[serde(with = "humantime_serde")]
    pub leaf_ttl: Duration,
    /// A blind tunnel with no byte either way for this long is closed.
    #[serde(with = "humantime_serde")]
    pub tunnel_idle_timeout: Duration,
    /// TLS to the proxy listener itself (`https://` proxy URLs), with client
    /// certificates (mTLS) as agent identity.
    pub tls: Option<TlsSection>,
}

/// Tasks: agents' just-in-time access.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TasksSection {
    /// Whether an agent may open (and end) tasks for itself at `POST /.keygate/tasks`;
    /// otherwise only the admin API opens them. Default true.
    pub agents_may_open: bool,
    /// The time limit of a task opened without one. Default 1h.
    #[serde(with = "humantime_serde")]
    pub default_ttl: Duration,
    /// The longest time limit a task may have. Default 8h.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
}

impl Default for TasksSection {
    fn default() -> Self {
        TasksSection {
            agents_may_open: true,
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(8 * 3600),
        }
    }
}

/// Where the key that seals captured secrets comes from (never the database).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureSection {
    /// File holding the key (32 bytes, hex); generated owner-only on first start.
    /// Default: `capture.key` in the data directory.
    pub key_file: Option<PathBuf>,
    /// Environment variable holding the key (32 bytes, hex), instead of a file.
    pub key_env: Option<String>,
    /// Earlier keys (files, or environment variables), kept to open what they sealed until
    /// `keygate capture rekey` has sealed everything again under the current key.
    pub previous_key_files: Vec<PathBuf>,
    pub previous_key_envs: Vec<String>,
}

impl Default for ProxySection {
    fn default() -> Self {
        ProxySection {
            listen: None,
            ca_cert_file: None,
            ca_key_file: None,
            leaf_ttl: Duration::from_secs(24 * 3600),
            tunnel_idle_timeout: Duration::from_secs(300),
            tls: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// CA bundle that client certificates must chain to; required unless `client_auth = "off"`.
    pub client_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_auth: ClientAuth,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    Off,
    /// A client certificate is verified when sent; agents may still identify with a token.
    Optional,
    /// Every connection must present a verified client certificate.
    Required,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// File the audit log is appended to, or "stdout".
    pub path: String,
    /// Rotate the file before it would grow past this many bytes (file targets only).
    pub rotate_bytes: Option<u64>,
    /// Rotate the file once its first record is this old, such as "24h" (file targets
    /// only).
    #[serde(with = "humantime_serde")]
    pub rotate_every: Option<Duration>,
    /// Refuse new requests (503 `audit_unavailable`) while the audit log cannot be
    /// written, rather than serve them unaudited.
    pub fail_closed: bool,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            path: "../data/audit.jsonl".into(),
            rotate_bytes: None,
            rotate_every: None,
            fail_closed: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySection {
    /// Allowed clock difference when checking `exp` and `nbf`; at most 5 minutes.
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
    /// How many verified tokens are kept, so a token's signature is checked once.
    pub token_cache_capacity: u64,
    pub issuers: Vec<IssuerEntry>,
}

impl Default for IdentitySection {
    fn default() -> Self {
        IdentitySection {
            clock_skew: Duration::from_secs(30),
            token_cache_capacity: 100_000,
            issuers: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerEntry {
    /// Name used in logs.
    pub name: String,
    /// Required `iss` claim.
    pub issuer: String,
    /// Accepted `aud` values; a token must carry one of them.
    pub audiences: Vec<String>,
    /// JWKS file, re-read when it changes.
    pub jwks_file: Option<PathBuf>,
    /// JWKS HTTPS URL, fetched at start and refreshed.
    pub jwks_url: Option<String>,
    /// CA bundle for `jwks_url` instead of the system roots.
    pub jwks_ca_file: Option<PathBuf>,
    /// How often the JWKS is refreshed.
    #[serde(default = "default_jwks_refresh", with = "humantime_serde")]
    pub jwks_refresh: Duration,
    /// Claim naming the agent.
    #[serde(default = "default_agent_claim")]
    pub agent_claim: String,
    /// Accept agents this issuer vouches for without a `[[agents]]` entry, their owner
    /// taken from `owner_claim`.
    #[serde(default)]
    pub agents_from_claims: bool,
    #[serde(default = "default_owner_claim")]
    pub owner_claim: String,
    /// Longest lifetime of a token this issuer may sign: a token whose `exp` is further
    /// than this from its `iat`, or from now, is refused. 24 hours by default.
    #[serde(default = "default_max_token_lifetime", with = "humantime_serde")]
    pub max_token_lifetime: Duration,
    /// Development only: keygate creates this issuer's Ed25519 key pair here on first
    /// start, writes its public key to `jwks_file`, and `keygate dev-token` signs with it.
    pub dev_signing_key: Option<PathBuf>,
}

fn default_jwks_refresh() -> Duration {
    Duration::from_secs(300)
}
fn default_agent_claim() -> String {
    "sub".into()
}
fn default_owner_claim() -> String {
    "owner".into()
}
fn default_max_token_lifetime() -> Duration {
    Duration::from_secs(24 * 3600)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningSection {
    /// `iss` of every JWT keygate mints.
    pub issuer: String,
    /// "EdDSA" (Ed25519) or "ES256".
    pub algorithm: String,
    /// PKCS#8 PEM private key; when absent keygate generates one into the data directory.
    pub key_file: Option<PathBuf>,
}

impl Default for SigningSection {
    fn default() -> Self {
        SigningSection {
            issuer: "keygate".into(),
            algorithm: "EdDSA".into(),
            key_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEntry {
    /// The agent's id: the token's agent claim, and the name in audit records.
    pub id: String,
    /// The human or team accountable for the agent.
    pub owner: String,
    /// SPIFFE ID (URI SAN of its client certificate) that identifies this agent over mTLS.
    pub spiffe_id: Option<String>,
    /// The issuers (their `name`) whose tokens may assert this agent; `[]` for none (an
    /// agent identified by its certificate only). May be left out when exactly one issuer
    /// is configured: the agent is then bound to it.
    pub issuers: Option<Vec<String>>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolEntry {
    pub name: String,
    /// Which part of the identity-creation catalog applies: "generic" (none), "aws",
    /// "gcp", "msgraph", "github", "gitlab", "kubernetes", "vault", "okta", "stripe".
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Operations of this tool, by method and path template.
    #[serde(default)]
    pub routes: Vec<RouteEntry>,
    /// What a request needing approval gets: "respond" (403 approval_required at once) or
    /// "hold" (kept open until decided or `hold_timeout`).
    #[serde(default = "default_approval_mode")]
    pub approval: String,
    #[serde(default = "default_hold_timeout", with = "humantime_serde")]
    pub hold_timeout: Duration,
    /// "http" (default) or "mcp": an MCP server over the Streamable HTTP transport, whose
    /// JSON-RPC messages keygate classifies and authorizes one by one.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// MCP tools that create identities, beyond those whose names say so
    /// (create_…key…, …token…, …credential…, …service_account…).
    #[serde(default)]
    pub mcp_identity_tools: Vec<String>,
    /// Base URL requests are forwarded to; `/tools/<name>/rest` goes to `<upstream>/rest`.
    pub upstream: String,
    /// Host header values that select this tool (the whole path is forwarded).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Hosts (`host` or `host:port`) the forward proxy tunnels blind for this tool: no
    /// interception (for clients that pin certificates), policy decided on the host, the
    /// tunnel audited as one `tunnel` operation with its bytes and duration.
    #[serde(default)]
    pub tunnel_hosts: Vec<String>,
    /// Whether `/tools/<name>/…` selects this tool.
    #[serde(default = "yes")]
    pub path_prefix: bool,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time the tool has to answer with response headers.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest request body forwarded; text bodies up to this size are scanned for secrets.
    #[serde(default = "default_body_limit")]
    pub max_body_bytes: u64,
    /// CA bundle for an https upstream instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// More headers to remove before forwarding.
    #[serde(default)]
    pub strip_headers: Vec<String>,
    /// Query parameters to remove before forwarding.
    #[serde(default)]
    pub strip_query: Vec<String>,
    /// What to do with a known secret format left in the request: "reject" or "redact".
    #[serde(default)]
    pub on_secret: OnSecret,
    /// What to do with a known secret format in the tool's response: "redact" (default:
    /// overwritten in place), "block" (502 secret_in_response), "pass" (counted and
    /// audited, unchanged) or "off" (not scanned at all).
    #[serde(default)]
    pub response_secrets: ResponseSecrets,
    /// A compressed response (which must be scanned): "decompress" (gzip and deflate,
    /// default) or "refuse".
    #[serde(default)]
    pub compressed_responses: CompressedResponses,
    /// Largest response body decompressed for scanning.
    #[serde(default = "default_decompressed_limit")]
    pub max_decompressed_bytes: u64,
    /// The secret an identity-creation call returns: "capture" (default: sealed by
    /// keygate, the agent gets a handle) or "pass" (the agent gets it).
    #[serde(default)]
    pub created_secrets: CreatedSecrets,
    pub credential: CredentialEntry,
}

fn default_protocol() -> String {
    "http".into()
}
fn default_kind() -> String {
    "generic".into()
}
fn default_approval_mode() -> String {
    "respond".into()
}
fn default_hold_timeout() -> Duration {
    Duration::from_secs(120)
}

/// One operation of a tool: `method` and `path` (a template such as
/// `/repos/{owner}/{repo}/keys`, relative to the tool) name it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteEntry {
    /// An HTTP method, or "*" for any.
    pub method: String,
    pub path: String,
    /// The operation's name: the Cedar action.
    pub operation: String,
    /// Tags (Cedar action groups), such as "read", "write", "identity_creation".
    #[serde(default)]
    pub tags: Vec<String>,
    /// For identity_creation: what kind of identity is created.
    pub identity_kind: Option<String>,
}

fn yes() -> bool {
    true
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_body_limit() -> u64 {
    1024 * 1024
}

fn default_decompressed_limit() -> u64 {
    16 * 1024 * 1024
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ResponseSecrets {
    #[default]
    Redact,
    Block,
    Pass,
    Off,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CompressedResponses {
    #[default]
    Decompress,
    Refuse,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CreatedSecrets {
    #[default]
    Capture,
    Pass,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnSecret {
    #[default]
    Reject,
    Redact,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialEntry {
    /// "static", "jwt", "aws", "oauth2" or "github_app".
    pub provider: String,
    /// static: environment variable holding the secret (oauth2: the client secret; aws:
    /// the prefix of the base key's variables).
    pub from_env: Option<String>,
    /// static: file holding the secret, re-read when it changes, for rotation (oauth2: the
    /// client secret; aws: the base key as credential_process JSON).
    pub from_file: Option<PathBuf>,
    /// static: id recorded in the audit log instead of the secret's fingerprint.
    pub credential_id: Option<String>,
    /// jwt: `scope` claim. oauth2: the scope requested for every operation without its
    /// own (`""`: none asked for; absent: such an operation is refused).
    pub scope: Option<String>,
    /// jwt: `aud` claim; the tool's name when absent. oauth2: the audience requested.
    pub audience: Option<String>,
    /// jwt: lifetime, at most 5 minutes.
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<Duration>,
    /// jwt: mint a new token for every call (for tools that need single-use tokens).
    /// Otherwise a token minted for the same agent is reused while most of its lifetime
    /// is left (`reuse_window`).
    #[serde(default)]
    pub unique_per_call: bool,
    /// jwt: how long a minted token is reused; half the ttl by default.
    #[serde(default, with = "humantime_serde")]
    pub reuse_window: Option<Duration>,
    /// How the credential is sent: "bearer", "basic", "header" or "query".
    #[serde(default = "default_inject")]
    pub inject: String,
    /// Header name for `inject = "header"`.
    pub header: Option<String>,
    /// Query parameter name for `inject = "query"`.
    pub query: Option<String>,
    /// aws: the role whose session credentials sign each call (STS `AssumeRole`). Absent:
    /// the key in `from_file`/`from_env` signs every call itself (a long-lived key).
    pub role_arn: Option<String>,
    /// aws: another role for some actions (`"iam:CreateUser" = "arn:aws:iam::…:role/…"`).
    #[serde(default)]
    pub action_roles: std::collections::BTreeMap<String, String>,
    /// aws: STS's endpoint; `https://sts.amazonaws.com` by default.
    pub sts_endpoint: Option<String>,
    /// aws: the region STS calls are signed for; `region` by default.
    pub sts_region: Option<String>,
    /// aws: the region a call is signed for when the agent's own signature names none.
    pub region: Option<String>,
    /// aws: how long a session lasts: 15 minutes (the least STS grants) by default.
    #[serde(default, with = "humantime_serde")]
    pub session_duration: Option<Duration>,
    /// aws: the `ExternalId` the role's trust policy asks for.
    pub external_id: Option<String>,
    /// aws, github_app: how often keygate reconciles the tool's inventory with IAM (the
    /// deploy keys of `reconcile_repositories`) by itself; absent: only when asked
    /// (`keygate inventory reconcile`).
    #[serde(default, with = "humantime_serde")]
    pub reconcile_every: Option<Duration>,
    /// aws, github_app: a record created this recently is never taken for gone by a
    /// reconcile (IAM's listings are eventually consistent); default 10m.
    #[serde(default, with = "humantime_serde")]
    pub reconcile_grace: Option<Duration>,
    /// github_app: the repositories (`owner/name`) whose deploy keys a reconcile lists,
    /// and where retirement looks for a deploy key whose repository it cannot tell.
    #[serde(default)]
    pub reconcile_repositories: Vec<String>,
    /// aws, github_app: keygate retires the tool's access keys (deploy keys) at their
    /// review date by itself: the owner notified `retire_notice` ahead, the key
    /// deactivated once overdue and deleted `retire_grace` later (a deploy key: deleted
    /// once overdue).
    #[serde(default)]
    pub retire_overdue: bool,
    /// aws, github_app: how often the retirement pass runs (with `retire_overdue`);
    /// default 1h.
    #[serde(default, with = "humantime_serde")]
    pub retire_every: Option<Duration>,
    /// aws, github_app: how long before its review date the owner is notified; default 7d.
    #[serde(default, with = "humantime_serde")]
    pub retire_notice: Option<Duration>,
    /// aws: how long a deactivated key is kept before it is deleted; default 7d.
    #[serde(default, with = "humantime_serde")]
    pub retire_grace: Option<Duration>,
    /// aws, github_app: the scheduled retirement passes only report what they would do.
    #[serde(default)]
    pub retire_dry_run: bool,
    /// oauth2: the authorization server's token endpoint.
    pub token_endpoint: Option<String>,
    /// oauth2: the authorization server's RFC 7009 revocation endpoint: the tokens issued
    /// for a task are revoked there when it ends.
    pub revocation_endpoint: Option<String>,
    /// oauth2: keygate's client id at the authorization server.
    pub client_id: Option<String>,
    /// oauth2: how keygate authenticates as the client: "client_secret_basic" (default),
    /// "client_secret_post" (the secret from `from_file`/`from_env`) or "private_key_jwt"
    /// (RFC 7523, signed with `client_key_file`).
    pub client_auth: Option<String>,
    /// oauth2 with private_key_jwt: the client's private key (PKCS#8 PEM, RSA or P-256).
    pub client_key_file: Option<PathBuf>,
    /// oauth2 with private_key_jwt: the `kid` of the client's key, if the server needs it.
    pub client_key_id: Option<String>,
    /// oauth2: "client_credentials" (default) or "token_exchange" (RFC 8693).
    pub grant: Option<String>,
    /// oauth2: the RFC 8707 resource requested (every operation without its own).
    pub resource: Option<String>,
    /// github_app: the App's id.
    pub app_id: Option<u64>,
    /// github_app: the App's private key (PEM); readable by its owner only.
    pub private_key_file: Option<PathBuf>,
    /// github_app: the installation whose tokens keygate asks for; absent: looked up from
    /// the owner the path names.
    pub installation_id: Option<u64>,
    /// github_app without installation_id: the accounts whose installations keygate may
    /// use, looked up from the owner the path names (any other owner is refused).
    #[serde(default)]
    pub owners: Vec<String>,
    /// github_app: where the App's own calls go (GitHub Enterprise Server:
    /// `https://HOST/api/v3`); the tool's upstream by default.
    pub api_url: Option<String>,
    /// github_app: the permissions of a call keygate cannot map to any (absent: such a
    /// call is refused).
    pub default_permissions: Option<std::collections::BTreeMap<String, String>>,
    /// oauth2 and github_app: what each operation (by name) is issued: its `scope`,
    /// `audience` and `resource` (oauth2) or its `permissions` (github_app).
    #[serde(default)]
    pub operations: std::collections::BTreeMap<String, OperationCredentialEntry>,
}

/// What the credential of one operation is scoped to.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct OperationCredentialEntry {
    /// oauth2: the scope requested (space-separated).
    pub scope: Option<String>,
    /// oauth2: the audience requested.
    pub audience: Option<String>,
    /// oauth2: the RFC 8707 resource requested.
    pub resource: Option<String>,
    /// github_app: the permissions (`{ issues = "read" }`).
    pub permissions: Option<std::collections::BTreeMap<String, String>>,
}

fn default_inject() -> String {
    "bearer".into()
}

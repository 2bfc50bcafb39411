//! The one error type of the request pipeline and its one mapping to the wire.
//!
//! Every phase that refuses a request returns an [`Error`]; [`Error::to_response`] is the
//! only place that turns one into a status and a body. A client sees a stable code and a
//! human sentence, never an internal detail: the `detail` of an error goes to the log and
//! the audit line only, and never holds a secret value.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};

/// Any error a body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type the gateway moves both ways: streamed from agent or tool, or built here.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// What went wrong, as the client is told it. Each kind has a stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No valid identity: no token, a token that fails verification, or an unmapped certificate.
    Unauthenticated,
    /// The identity verified, but names no agent keygate knows.
    UnknownAgent,
    /// No tool matches the request's host and path.
    UnknownTool,
    /// The request still carries a known secret format after stripping.
    SecretInRequest,
    /// The request body is larger than the tool allows.
    BodyTooLarge,
    /// The client sent the body too slowly.
    BodyTimeout,
    /// The request is malformed (framing, path, headers).
    BadRequest,
    /// Content-Length together with Transfer-Encoding, or Content-Length given twice.
    AmbiguousFraming,
    /// A text body keygate cannot scan for secrets (compressed).
    UnscannableBody,
    /// The tool's credential provider could not produce a credential.
    CredentialUnavailable,
    /// The tool could not be reached, or broke the exchange.
    UpstreamUnavailable,
    /// The tool did not answer in time.
    UpstreamTimeout,
    /// The method is not served on this path.
    MethodNotAllowed,
    /// A path that different servers could read differently (encoded slash or dot, NUL,
    /// backslash).
    AmbiguousPath,
    /// The policies do not allow this request.
    Forbidden,
    /// The request needs a human's approval; the error carries the approval's id.
    ApprovalRequired,
    /// A human denied the request.
    ApprovalDenied,
    /// The agent is suspended.
    AgentSuspended,
    /// The approval store cannot be reached: requests that need it fail closed.
    StoreUnavailable,
    /// This replica's view of suspensions is older than `store.max_staleness` (the store
    /// cannot be read): no call goes through on it.
    StateStale,
    /// keygate itself failed (a bug): the request is refused, never forwarded unchecked.
    Internal,
    /// A JSON message that parsers could read two ways: a duplicate member, members that
    /// differ only in case, or a non-ASCII look-alike of an ASCII member name.
    AmbiguousJson,
    /// A JSON-RPC batch with more messages than keygate decides in one request.
    BatchTooLarge,
    /// A JSON-RPC method keygate does not know how to authorize (MCP).
    UnknownMcpMethod,
    /// The audit log cannot be written (`audit.fail_closed`): no request is served unaudited.
    AuditUnavailable,
    /// The agent already has `approvals.max_pending_per_agent` approvals pending.
    TooManyPendingApprovals,
    /// The forward proxy: no valid agent credential on the `CONNECT` (or absolute-form
    /// request); answered with `Proxy-Authenticate`.
    ProxyAuthRequired,
    /// The forward proxy: no tool names the host (or tunnels it blind).
    HostNotAllowed,
    /// A request inside a forward-proxy tunnel addressed another host than the tunnel's.
    MisdirectedRequest,
    /// The TLS handshake inside a forward-proxy tunnel failed (the client does not trust
    /// keygate's CA, or speaks no TLS); only ever in the audit record.
    TlsHandshakeFailed,
    /// The tool's response carried a known secret format and its tool is set to block
    /// such responses (`response_secrets = "block"`).
    SecretInResponse,
    /// A handle for a captured secret that keygate does not know, or that was revoked.
    UnknownHandle,
    /// A handle for a captured secret that this agent, or this tool, may not use.
    HandleNotAllowed,
    /// A captured secret could not be sealed, stored or opened: nothing is handed out or
    /// forwarded in its place.
    CaptureFailed,
    /// The agent called more often than a `[[rate_limits]]` entry allows; the error
    /// carries how long to wait (`Retry-After`).
    RateLimited,
    /// The task a call names (`Keygate-Task`) is not one of the agent's.
    TaskUnknown,
    /// The task a call names ended or expired.
    TaskEnded,
    /// The task a call names does not include its tool or operation.
    TaskOutOfScope,
    /// The agent already has `tasks::MAX_OPEN_PER_AGENT` open tasks.
    TooManyTasks,
}

impl ErrorKind {
    /// The stable code a client can match on.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::UnknownAgent => "unknown_agent",
            ErrorKind::UnknownTool => "unknown_tool",
            ErrorKind::SecretInRequest => "secret_in_request",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::BodyTimeout => "body_timeout",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::AmbiguousFraming => "ambiguous_framing",
            ErrorKind::UnscannableBody => "unscannable_body",
            ErrorKind::CredentialUnavailable => "credential_unavailable",
            ErrorKind::UpstreamUnavailable => "upstream_unavailable",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::AmbiguousPath => "ambiguous_path",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::ApprovalRequired => "approval_required",
            ErrorKind::ApprovalDenied => "approval_denied",
            ErrorKind::AgentSuspended => "agent_suspended",
            ErrorKind::StoreUnavailable => "approvals_unavailable",
            ErrorKind::StateStale => "store_unavailable",
            ErrorKind::Internal => "internal_error",
            ErrorKind::AmbiguousJson => "ambiguous_json",
            ErrorKind::BatchTooLarge => "batch_too_large",
            ErrorKind::UnknownMcpMethod => "unknown_mcp_method",
            ErrorKind::AuditUnavailable => "audit_unavailable",
            ErrorKind::TooManyPendingApprovals => "too_many_pending_approvals",
            ErrorKind::ProxyAuthRequired => "proxy_authentication_required",
            ErrorKind::HostNotAllowed => "host_not_allowed",
            ErrorKind::MisdirectedRequest => "misdirected_request",
            ErrorKind::TlsHandshakeFailed => "tls_handshake_failed",
            ErrorKind::SecretInResponse => "secret_in_response",
            ErrorKind::UnknownHandle => "unknown_handle",
            ErrorKind::HandleNotAllowed => "handle_not_allowed",
            ErrorKind::CaptureFailed => "capture_failed",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::TaskUnknown => "task_unknown",
            ErrorKind::TaskEnded => "task_ended",
            ErrorKind::TaskOutOfScope => "task_out_of_scope",
            ErrorKind::TooManyTasks => "too_many_tasks",
        }
    }

    /// The HTTP status for this kind.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::UnknownAgent => StatusCode::FORBIDDEN,
            ErrorKind::UnknownTool => StatusCode::NOT_FOUND,
            ErrorKind::SecretInRequest
            | ErrorKind::BadRequest
            | ErrorKind::AmbiguousFraming
            | ErrorKind::AmbiguousPath
            | ErrorKind::AmbiguousJson
            | ErrorKind::UnknownMcpMethod => StatusCode::BAD_REQUEST,
            ErrorKind::BatchTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Forbidden
            | ErrorKind::ApprovalRequired
            | ErrorKind::ApprovalDenied
            | ErrorKind::AgentSuspended => StatusCode::FORBIDDEN,
            ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::UnscannableBody => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::CredentialUnavailable | ErrorKind::UpstreamUnavailable => {
                StatusCode::BAD_GATEWAY
            }
            ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::StoreUnavailable | ErrorKind::StateStale => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::TooManyPendingApprovals => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::ProxyAuthRequired => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            ErrorKind::HostNotAllowed => StatusCode::FORBIDDEN,
            ErrorKind::MisdirectedRequest => StatusCode::MISDIRECTED_REQUEST,
            ErrorKind::TlsHandshakeFailed => StatusCode::BAD_REQUEST,
            ErrorKind::SecretInResponse | ErrorKind::CaptureFailed => StatusCode::BAD_GATEWAY,
            ErrorKind::UnknownHandle => StatusCode::UNAUTHORIZED,
            ErrorKind::RateLimited | ErrorKind::TooManyTasks => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::HandleNotAllowed
            | ErrorKind::TaskUnknown
            | ErrorKind::TaskEnded
            | ErrorKind::TaskOutOfScope => StatusCode::FORBIDDEN,
        }
    }
}

/// A refused or failed request: a kind (code and status), a sentence for the client, and
/// an optional detail for operators (log and audit only).
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    /// Shown to the client. Lowercase, no final period, no secret, no internal type names.
    pub message: String,
    /// For the log and the audit line; never sent to the client; never a secret value.
    pub detail: Option<String>,
    /// The pending approval a human decides (with `approval_required`, `approval_denied`).
    pub approval_id: Option<String>,
    /// For MCP: the JSON-RPC error code, when not keygate's refusal code.
    pub jsonrpc_code: Option<i64>,
    /// For AWS: the code AWS itself uses for this refusal (`SignatureDoesNotMatch`), which
    /// the SDK shows; the refusal is then in AWS's dialect, whatever the tool.
    pub aws_code: Option<&'static str>,
    /// Seconds the client should wait before it tries again (`Retry-After`, in every
    /// dialect).
    pub retry_after: Option<u32>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            detail: None,
            approval_id: None,
            jsonrpc_code: None,
            aws_code: None,
            retry_after: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unauthenticated, message)
    }

    pub fn with_jsonrpc(mut self, code: i64) -> Self {
        self.jsonrpc_code = Some(code);
        self
    }

    /// A refusal an AWS SDK reads with AWS's own code (the status stays keygate's).
    pub fn with_aws_code(mut self, code: &'static str) -> Self {
        self.aws_code = Some(code);
        self
    }

    /// A refusal the client may retry after `secs` seconds (`Retry-After`).
    pub fn with_retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// Adds `Retry-After` to a response built from this error, when it has one.
    pub fn add_retry_after<B>(&self, resp: &mut Response<B>) {
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
    }

    pub fn with_approval(mut self, id: impl Into<String>) -> Self {
        self.approval_id = Some(id.into());
        self
    }

    /// The response in the dialect the agent's client library reads: AWS Query tools get
    /// an AWS `ErrorResponse` (boto3 cannot parse a JSON error from a Query API), others
    /// JSON. The code, message and approval id are the same in both.
    pub fn to_response_in(&self, dialect: Dialect, request_id: &str) -> Response<ProxyBody> {
        match dialect {
            Dialect::Json => self.to_response(request_id),
            Dialect::AwsXml => {
                let mut message = self.message.clone();
                if let Some(id) = &self.approval_id {
                    message.push_str(&format!(" (approval_id: {id})"));
                }
                let fault = if self.kind.status().is_server_error() {
                    "Receiver"
                } else {
                    "Sender"
                };
                let body = format!(
                    "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error><Type>{fault}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
                    self.aws_code.unwrap_or(self.kind.code()),
                    xml_escape(&message),
                    xml_escape(request_id)
                );
                let mut resp = Response::new(full_body(body));
                // AWS answers a key or signature it does not accept with 403, as SDKs expect.
                *resp.status_mut() = match (self.aws_code, self.kind) {
                    (Some(_), ErrorKind::Unauthenticated) => StatusCode::FORBIDDEN,
                    _ => self.kind.status(),
                };
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
                resp.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                self.add_retry_after(&mut resp);
                resp
            }
        }
    }

    /// The response a client gets: status, `{"error": code, "message": …, "request_id": …}`
    /// and, for approvals, `"approval_id"`.
    pub fn to_response(&self, request_id: &str) -> Response<ProxyBody> {
        let mut body = serde_json::json!({
            "error": self.kind.code(),
            "message": self.message,
            "request_id": request_id,
        });
        if let (Some(id), Some(m)) = (&self.approval_id, body.as_object_mut()) {
            m.insert("approval_id".into(), id.clone().into());
        }
        let mut resp = json_response(self.kind.status(), body.to_string());
        if self.kind == ErrorKind::Unauthenticated {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"keygate\""),
            );
        }
        self.add_retry_after(&mut resp);
        resp
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)
    }
}

impl std::error::Error for Error {}

/// How refusals are written for a tool's clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Json,
    AwsXml,
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON response with a body built by keygate.
pub fn json_response(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut resp = Response::new(full_body(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A body built in memory, boxed as the gateway's body type.
pub fn full_body(data: impl Into<Bytes>) -> ProxyBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

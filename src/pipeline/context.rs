//! The per-request context: the only state shared between the phases of one request.
//! Each phase reads what earlier phases put here and adds its own findings; `audit` turns
//! it into the one audit record of the request.

use super::identify::Identity;
use crate::error::Error;
use crate::gateway::ToolRuntime;
use crate::server::ConnInfo;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// What keygate decided for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Forwarded to the tool.
    Allow,
    /// Refused by keygate before anything reached the tool.
    Deny,
    /// Allowed, but the tool could not be reached or a credential could not be issued.
    Error,
    /// Served by keygate itself (its JWKS).
    Local,
    /// Held back until a human approves it.
    NeedsApproval,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Error => "error",
            Decision::Local => "local",
            Decision::NeedsApproval => "needs_approval",
        }
    }
}

pub struct RequestCtx {
    pub request_id: Arc<str>,
    pub started: Instant,
    pub start_time: SystemTime,
    pub conn: Arc<ConnInfo>,
    pub method: http::Method,
    /// The request path as recorded in the audit log (never the query, which may carry
    /// secrets; a path that carries a secret is recorded redacted).
    pub path: String,
    pub identity: Option<Identity>,
    pub tool: Option<Arc<ToolRuntime>>,
    /// Path to forward to, relative to the tool's upstream host (base path included).
    pub forward_path: String,
    /// Query to forward, after strip (and inject) changed it.
    pub forward_query: Option<String>,
    /// What strip removed or redacted, by name only ("header:cookie", "query:api_key",
    /// "body:aws_access_key_id").
    pub stripped: Vec<Cow<'static, str>>,
    pub credential_provider: Option<&'static str>,
    pub credential_id: Option<Arc<str>>,
    /// The credential values inject set, for respond to remove from the response (taken
    /// by respond, dropped with the response; never printed).
    pub injected: Option<Arc<super::respond::Injected>>,
    /// What the request does (classify).
    pub operation: Option<Arc<crate::routes::Operation>>,
    /// The policies that decided (authorize).
    pub policies: Vec<String>,
    /// The policies whose evaluation failed (authorize).
    pub policy_errors: Vec<String>,
    /// The approval involved, pending or used (approve).
    pub approval_id: Option<String>,
    /// The approval this request consumed.
    pub approval: Option<crate::store::Approval>,
    /// The identity recorded in the inventory (inventory).
    pub inventory_id: Option<String>,
    pub inventory_error: Option<String>,
    /// The MCP messages of the request (classify, for MCP tools).
    pub mcp: Option<super::mcp::McpAudit>,
    pub decision: Decision,
    pub error: Option<Error>,
    /// Request body bytes received from the agent.
    pub bytes_in: Arc<AtomicU64>,
    /// Set when the agent's connection went away before keygate had the tool's answer.
    pub client_gone: Arc<AtomicBool>,
    /// The request's spans, when they are exported and the trace is sampled.
    pub trace: Option<crate::telemetry::spans::RequestTrace>,
}

impl RequestCtx {
    pub fn new(
        request_id: Arc<str>,
        conn: Arc<ConnInfo>,
        method: http::Method,
        path: &str,
    ) -> Self {
        RequestCtx {
            request_id,
            started: Instant::now(),
            start_time: SystemTime::now(),
            conn,
            method,
            path: path.to_string(),
            identity: None,
            tool: None,
            forward_path: String::new(),
            forward_query: None,
            stripped: Vec::new(),
            credential_provider: None,
            credential_id: None,
            injected: None,
            operation: None,
            policies: Vec::new(),
            policy_errors: Vec::new(),
            approval_id: None,
            approval: None,
            inventory_id: None,
            inventory_error: None,
            mcp: None,
            decision: Decision::Deny,
            error: None,
            bytes_in: Arc::new(AtomicU64::new(0)),
            client_gone: Arc::default(),
            trace: None,
        }
    }
}

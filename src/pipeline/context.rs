//! The per-request context: what the phases of one request found, for its audit record.
//! Only the driver ([`super::run`]) writes it, each field from the output of one phase
//! (named on the field); `audit` turns it into the request's one audit record.

use super::authorize::Authorization;
use super::identify::Identity;
use super::inject::Credential;
use super::mcp::McpAudit;
use crate::conn::ConnInfo;
use crate::error::Error;
use crate::tools::ToolRuntime;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

pub use crate::telemetry::record::Decision;

pub struct RequestCtx {
    pub request_id: Arc<str>,
    pub started: Instant,
    pub start_time: SystemTime,
    pub conn: Arc<ConnInfo>,
    pub method: http::Method,
    /// The request path as recorded in the audit log: canonical (what keygate acted on)
    /// when it could be made so (never the query, which may carry secrets; a path that
    /// carries a secret is recorded redacted).
    pub path: String,
    /// identify.
    pub identity: Option<Identity>,
    /// classify: the tool.
    pub tool: Option<Arc<ToolRuntime>>,
    /// classify (the MCP phase for an MCP POST): what the request does.
    pub operation: Option<Arc<crate::routes::Operation>>,
    /// The MCP phase: the messages of the request.
    pub mcp: Option<McpAudit>,
    /// authorize (the MCP phase for an MCP POST): the policies that decided.
    pub authorization: Authorization,
    /// strip: what it removed or redacted, by name only ("header:cookie", "query:api_key",
    /// "body:aws_access_key_id:redacted").
    pub stripped: Vec<Cow<'static, str>>,
    /// inject: the provider, the credential's id and the values respond removes.
    pub credential: Credential,
    /// approve: the approval involved, pending, denied or used.
    pub approval_id: Option<String>,
    /// approve: the approval this request consumed.
    pub approval: Option<crate::store::Approval>,
    /// inventory: the entry recorded for an identity created, or why none was.
    pub inventory: Option<Result<String, String>>,
    /// inventory: how many secrets the answer carried that keygate captured.
    pub captured: usize,
    /// The handle step: the inventory record whose captured secret this call used.
    pub handle: Option<String>,
    /// The task step: the task the call is made in.
    pub task: Option<Arc<crate::store::Task>>,
    /// respond: the secret formats found in the tool's response (by format and where).
    pub response_secrets: Option<Arc<crate::pipeline::scan::Findings>>,
    /// The driver, when the request ends.
    pub decision: Decision,
    /// The driver, when the request ends: the refusal or failure.
    pub error: Option<Error>,
    /// Request body bytes received from the agent (counted as the body is read).
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
        path: String,
        client_gone: Arc<AtomicBool>,
        trace: Option<crate::telemetry::spans::RequestTrace>,
    ) -> Self {
        RequestCtx {
            request_id,
            started: Instant::now(),
            start_time: SystemTime::now(),
            conn,
            method,
            path,
            identity: None,
            tool: None,
            operation: None,
            mcp: None,
            authorization: Authorization::default(),
            stripped: Vec::new(),
            credential: Credential::default(),
            approval_id: None,
            approval: None,
            inventory: None,
            captured: 0,
            handle: None,
            task: None,
            response_secrets: None,
            decision: Decision::Deny,
            error: None,
            bytes_in: Arc::new(AtomicU64::new(0)),
            client_gone,
            trace,
        }
    }

    /// The policies behind the request: those that decided, and for a request that
    /// consumed an approval, the permits that allowed it once approved.
    pub fn policies(&self) -> Vec<String> {
        let mut p = self.authorization.policies.clone();
        self.add_allowed_by(&mut p);
        p
    }

    /// [`RequestCtx::policies`], taken (the audit record, once per request).
    pub fn take_policies(&mut self) -> Vec<String> {
        let mut p = std::mem::take(&mut self.authorization.policies);
        self.add_allowed_by(&mut p);
        p
    }

    fn add_allowed_by(&self, p: &mut Vec<String>) {
        if self.approval.is_some() {
            for a in self.authorization.allowed_by.iter().flatten() {
                if !p.contains(a) {
                    p.push(a.clone());
                }
            }
        }
    }
}

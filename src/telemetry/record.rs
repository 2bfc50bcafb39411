//! The audit record's own types: what a request's record says, owned here so the audit
//! log and metrics need nothing of the pipeline that fills them.

use serde::Serialize;
use serde_json::Value;

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

/// The MCP part of a request's audit record: the session, and per JSON-RPC message its
/// method, id, the tool named and a digest of the arguments (never their values).
#[derive(Debug, Clone, Serialize, Default)]
pub struct McpRecord {
    pub session_id: Option<String>,
    pub calls: Vec<McpCallRecord>,
}

/// One JSON-RPC call as the audit log records it.
#[derive(Debug, Clone, Serialize)]
pub struct McpCallRecord {
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// Tool, prompt or resource named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments_digest: Option<String>,
}

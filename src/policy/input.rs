//! What the policies decide on, and what they answer.

use crate::config::{Agent, Tool};
use crate::routes::Operation;

/// The action of MCP tools no policy names.
pub const MCP_OTHER_TOOL: &str = "mcp:other_tool";
/// The action of identity-creating MCP tools no policy names.
pub const MCP_OTHER_IDENTITY_TOOL: &str = "mcp:other_identity_tool";

/// An MCP message, as policies see it.
#[derive(Debug, Clone, Default)]
pub struct McpCall {
    /// "tools/call", "resources/read", "prompts/get", …
    pub method: String,
    /// The tool, prompt or resource URI named, if any.
    pub name: Option<String>,
    /// Top-level arguments, values as strings.
    pub arguments: Vec<(String, String)>,
}

/// The outcome of authorize, with the ids of the policies that decided it, and of those
/// whose evaluation failed (`policy_errors`: a failed forbid also decides a `Deny`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow {
        policies: Vec<String>,
        /// Allowed by an `@preapproved` permit in place of a human approval.
        preapproved: bool,
        /// Permits whose evaluation failed (they permitted nothing).
        policy_errors: Vec<String>,
    },
    /// Denied; no policy ids means no permit matched (default deny).
    Deny {
        policies: Vec<String>,
        policy_errors: Vec<String>,
    },
    /// Allowed once a human approves this exact request: `policies` are the `@approval`
    /// forbids in the way, `allowed_by` the permits that allow it once approved.
    NeedsApproval {
        policies: Vec<String>,
        allowed_by: Vec<String>,
        /// How many different humans must approve (1, or 2 when a gate says
        /// `@approvers("2")`).
        approvers: u8,
        policy_errors: Vec<String>,
    },
}

impl Verdict {
    /// The policies whose evaluation failed.
    pub fn policy_errors(&self) -> &[String] {
        match self {
            Verdict::Allow { policy_errors, .. }
            | Verdict::Deny { policy_errors, .. }
            | Verdict::NeedsApproval { policy_errors, .. } => policy_errors,
        }
    }
}

/// What authorize needs to know of a request.
pub struct Input<'a> {
    pub agent: &'a Agent,
    pub tool: &'a Tool,
    pub operation: &'a Operation,
    pub method: &'a str,
    pub path: &'a str,
    pub now_unix: i64,
    pub approved: bool,
    pub mcp: Option<&'a McpCall>,
    /// An AWS tool's call: the IAM actions it needs and their resources.
    pub aws: Option<&'a AwsScope>,
    /// The task the call is made in (`context.task`).
    pub task: Option<&'a crate::store::Task>,
}

/// An AWS call, as policies see it (`context.aws_actions`, `context.aws_resources`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsScope {
    pub actions: Vec<String>,
    pub resources: Vec<String>,
}

//! Policies: Cedar decides every request keygate serves.
//!
//! principal = the `Agent`, action = the operation (a member of the action groups its
//! tags name), resource = the `Tool`, context = method, path, time, approval state and the
//! kind of identity created. Default deny: only a matching `permit` with no matching
//! `forbid` allows.
//!
//! Approvals are written in Cedar as `forbid` policies annotated `@approval`, typically
//! `unless { context.approved }`. When the only policies denying a request are such
//! forbids, and the request would be allowed were it approved, the verdict is
//! [`Verdict::NeedsApproval`]: a human approval of that exact request lifts them once. A
//! `permit` annotated `@preapproved` that matches a request lifts them without a human
//! (an explicit, reviewable pre-approval). Every verdict names the policies behind it.
//!
//! A policy whose evaluation fails (an overflow, a tag the agent does not have) fails
//! closed: Cedar skips it, which for a `forbid` would let the request through, so here a
//! failed `forbid` counts as matching (the verdict is `Deny`, naming it), and a failed
//! `permit` permits nothing. Every failed policy is named in the verdict's
//! `policy_errors`, for the audit record and the span.
//!
//! - [`schema`]: loading; the schema and the policy files, validated and compiled;
//! - `slice`: which policies apply to an agent and a tool;
//! - `cache`: the decision cache;
//! - `engine`: evaluation.

mod cache;
mod engine;
pub mod schema;
mod slice;

use crate::config::{Agent, Tool};
use crate::routes::Operation;

pub use engine::PolicyEngine;
pub use schema::{schema_text, APPROVAL, PREAPPROVED};

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
}

/// Loads the policies a configuration names (its policy folder, against a schema that
/// declares its operations). Errors name the file, as configuration errors do.
pub fn load(
    snapshot: &crate::config::Snapshot,
) -> Result<std::sync::Arc<PolicyEngine>, crate::config::ConfigErrors> {
    PolicyEngine::load(&snapshot.policies_dir, &snapshot.operations)
        .map(std::sync::Arc::new)
        .map_err(|errors| {
            crate::config::ConfigErrors(
                errors
                    .into_iter()
                    .map(|(file, message)| crate::config::ConfigError {
                        file,
                        key: String::new(),
                        message,
                    })
                    .collect(),
            )
        })
}

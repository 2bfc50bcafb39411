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
//! - `input`: what is decided (a request's [`Input`]) and the [`Verdict`];
//! - [`schema`]: loading; the schema and the policy files, validated and compiled;
//! - `slice`: which policies apply to an agent and a tool;
//! - `cache`: the decision cache;
//! - `engine`: evaluation.

mod cache;
mod engine;
mod input;
pub mod schema;
mod slice;

pub use engine::PolicyEngine;
pub use input::{AwsScope, Input, McpCall, Verdict, MCP_OTHER_IDENTITY_TOOL, MCP_OTHER_TOOL};
pub use schema::{schema_text, APPROVAL, PREAPPROVED};

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

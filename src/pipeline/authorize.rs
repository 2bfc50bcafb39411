//! **authorize**: the policies ([`crate::policy`]) decide the request; a denial refuses it,
//! naming the policies behind it.

use crate::error::{Error, ErrorKind};
use crate::policy::{Input, PolicyEngine, Verdict};
use crate::telemetry::spans::RequestTrace;

/// What the policies decided for a request (or one MCP message of it).
#[derive(Debug, Clone, Default)]
pub struct Authorization {
    /// The policies that decided: the permits that allow it, the forbids that deny it, or
    /// the `@approval` forbids in the way of a request that needs approval.
    pub policies: Vec<String>,
    /// The policies whose evaluation failed.
    pub policy_errors: Vec<String>,
    /// Allowed once a human approves: the permits that allow it then.
    pub allowed_by: Option<Vec<String>>,
    /// How many different humans must approve (1 or 2), when it needs approval.
    pub approvers: u8,
}

/// Decides `input`: `Ok` with what allows it (now, or once approved), or the refusal.
/// A `keygate.authorize` span when the request is traced and the policies were evaluated
/// (a decision from the cache takes no time worth a span).
pub fn authorize(
    policies: &PolicyEngine,
    trace: Option<&mut RequestTrace>,
    input: &Input,
) -> (Authorization, Result<(), Error>) {
    let verdict = decide(policies, trace, input);
    let policy_errors = verdict.policy_errors().to_vec();
    match verdict {
        Verdict::Allow { policies, .. } => (
            Authorization {
                policies,
                policy_errors,
                allowed_by: None,
                approvers: 1,
            },
            Ok(()),
        ),
        Verdict::NeedsApproval {
            policies,
            allowed_by,
            approvers,
            ..
        } => (
            Authorization {
                policies,
                policy_errors,
                allowed_by: Some(allowed_by),
                approvers,
            },
            Ok(()),
        ),
        Verdict::Deny {
            policies,
            policy_errors,
        } => {
            let why = if policies.is_empty() {
                "no policy allows it".to_string()
            } else if policies.iter().any(|p| policy_errors.contains(p)) {
                format!(
                    "policy {} forbids it (a forbid that fails to evaluate forbids)",
                    policies.join(", ")
                )
            } else {
                format!("policy {} forbids it", policies.join(", "))
            };
            let e = Error::new(
                ErrorKind::Forbidden,
                format!(
                    "agent {:?} may not run {:?} on tool {:?}: {why}",
                    &*input.agent.id, &*input.operation.name, &*input.tool.name
                ),
            );
            (
                Authorization {
                    policies,
                    policy_errors,
                    allowed_by: None,
                    approvers: 1,
                },
                Err(e),
            )
        }
    }
}

fn decide(policies: &PolicyEngine, trace: Option<&mut RequestTrace>, input: &Input) -> Verdict {
    let Some(trace) = trace else {
        return policies.authorize(input);
    };
    let phase = RequestTrace::begin("keygate.authorize");
    let (verdict, evaluated) = policies.decide(input);
    if evaluated {
        let errors = verdict.policy_errors();
        let attributes = if errors.is_empty() {
            Vec::new()
        } else {
            vec![opentelemetry::KeyValue::new(
                "keygate.policy_errors",
                errors.join(","),
            )]
        };
        trace.end_phase(phase, attributes, !errors.is_empty());
    }
    verdict
}

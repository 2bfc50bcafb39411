//! Evaluation: Cedar decides a request with the policies that apply, approvals and
//! pre-approvals resolved, failed policies failing closed.

use super::cache::{decision_key, DecisionKey};
use super::input::{Input, Verdict, MCP_OTHER_IDENTITY_TOOL, MCP_OTHER_TOOL};
use super::slice::{Slice, Slices};
use cedar_policy::{
    AuthorizationError, Authorizer, Context, Decision, Effect, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, PolicyId, PolicySet, Request, RestrictedExpression, Schema,
};
use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;

/// One evaluation of a policy set: Cedar's decision, the policies behind it, and the
/// policies whose evaluation failed, split by effect.
struct Evaluation {
    decision: Decision,
    reasons: Vec<PolicyId>,
    failed_forbids: Vec<PolicyId>,
    failed_permits: Vec<PolicyId>,
}

/// (agent id, agent owner, tool name).
type EntitiesKey = (Arc<str>, Arc<str>, Arc<str>);

/// Compiled policies and schema.
pub struct PolicyEngine {
    pub(super) schema: Schema,
    /// Entities (the agent, the tool, and the actions from the schema) by agent, owner and
    /// tool: they depend on nothing else, and building and validating them is most of the
    /// cost of a decision. Dropped with the engine on reload.
    pub(super) entities: moka::sync::Cache<EntitiesKey, Arc<Entities>, crate::FastHash>,
    /// Policies sliced per (agent, tool): Cedar evaluates every policy it is given, and
    /// most policies name one agent or one tool. Exact: a dropped policy's scope cannot
    /// match that agent and tool.
    pub(super) slices: Slices,
    /// Decisions, for slices whose policies read nothing of the request beyond the
    /// [`DecisionKey`] (no path, no time, no MCP arguments); bounded by
    /// [`DECISION_CACHE_BYTES`]. Dropped with the engine on reload, so a policy change is
    /// never answered from a cache.
    pub(super) decisions: moka::sync::Cache<DecisionKey, Verdict, crate::FastHash>,
    pub(super) policies: PolicySet,
    pub(super) preapprovals: PolicySet,
    pub(super) approval_gates: HashSet<PolicyId>,
    /// Gates annotated `@approvers("2")`: two different humans approve.
    pub(super) two_approvers: HashSet<PolicyId>,
    pub(super) authorizer: Authorizer,
    /// MCP tool names that have their own action (named by a policy or configured).
    pub(super) mcp_tools: HashSet<String>,
    pub schema_text: String,
    pub policy_count: usize,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("policies", &self.policy_count)
            .finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// Decides a request: from the decision cache when the applicable policies read
    /// nothing of the request beyond agent, tool, operation and the cached context
    /// attributes; otherwise by evaluating them.
    pub fn authorize(&self, input: &Input) -> Verdict {
        self.decide(input).0
    }

    /// As [`PolicyEngine::authorize`], and whether the policies were evaluated for this
    /// request (`false`: the decision came from the cache).
    pub fn decide(&self, input: &Input) -> (Verdict, bool) {
        // A hit needs no slice: only decisions of slices that read nothing beyond the key
        // are ever stored, and an agent and a tool always have the same slice.
        let key = decision_key(input);
        if let Some(v) = key.as_ref().and_then(|k| self.decisions.get(k)) {
            return (v, false);
        }
        let slice = self.slices.get(&self.policies, &self.preapprovals, input);
        let v = self.evaluate(input, &slice);
        // Not stored: a decision that depends on the very request (path, time, MCP
        // arguments), or one reached through a failed policy (rare; evaluating it again
        // keeps its warning and its `policy_errors` tied to each request).
        if slice.refs.per_request || !v.policy_errors().is_empty() {
            return (v, true);
        }
        if let Some(key) = key {
            self.decisions.insert(key, v.clone());
        }
        (v, true)
    }

    /// Evaluates the policies for `input`, bypassing the decision cache: what a decision
    /// costs the first time (benchmarks, diagnostics).
    pub fn evaluate_uncached(&self, input: &Input) -> Verdict {
        self.evaluate(
            input,
            &self.slices.get(&self.policies, &self.preapprovals, input),
        )
    }

    fn evaluate(&self, input: &Input, slice: &Slice) -> Verdict {
        let deny = |policies: Vec<String>, policy_errors: Vec<String>| Verdict::Deny {
            policies,
            policy_errors,
        };
        let Some((entities, [principal, resource, action, arguments])) = self.entities(input)
        else {
            return deny(vec![], vec![]);
        };
        let eval = |set: &PolicySet, approved: bool| {
            let context = self.context(input, approved, &arguments)?;
            let request = Request::new(
                principal.clone(),
                action.clone(),
                resource.clone(),
                context,
                None,
            )
            .ok()?;
            let resp = self.authorizer.is_authorized(&request, set, &entities);
            let mut failed_forbids = Vec::new();
            let mut failed_permits = Vec::new();
            for e in resp.diagnostics().errors() {
                let AuthorizationError::PolicyEvaluationError(failed) = e;
                let id = failed.policy_id().clone();
                tracing::warn!(policy = %id, "policy evaluation error: {e}");
                // A policy not found in the set is taken for a forbid: fail closed.
                match set.policy(&id).map(|p| p.effect()) {
                    Some(Effect::Permit) => failed_permits.push(id),
                    _ => failed_forbids.push(id),
                }
            }
            Some(Evaluation {
                decision: resp.decision(),
                reasons: resp.diagnostics().reason().cloned().collect(),
                failed_forbids,
                failed_permits,
            })
        };
        let names = |ids: &[PolicyId]| ids.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        let mut errors: Vec<String> = Vec::new();
        let mut note = |e: &Evaluation| {
            for id in e.failed_forbids.iter().chain(&e.failed_permits) {
                let id = id.to_string();
                if !errors.contains(&id) {
                    errors.push(id);
                }
            }
        };
        // A failed forbid counts as matching: the request is denied by it (and by any
        // forbid that did match; the permits of an `Allow` are no reason to deny).
        let failed_forbid_denies = |e: &Evaluation| {
            if e.failed_forbids.is_empty() {
                return None;
            }
            let mut p = names(&e.failed_forbids);
            if e.decision == Decision::Deny {
                p.extend(names(&e.reasons));
            }
            Some(p)
        };
        let Some(first) = eval(&slice.policies, input.approved) else {
            return deny(vec![], vec![]);
        };
        note(&first);
        if let Some(p) = failed_forbid_denies(&first) {
            return deny(p, errors);
        }
        if first.decision == Decision::Allow {
            return Verdict::Allow {
                policies: names(&first.reasons),
                preapproved: false,
                policy_errors: errors,
            };
        }
        let ids = &first.reasons;
        let only_gates = !ids.is_empty() && ids.iter().all(|id| self.approval_gates.contains(id));
        if !only_gates || input.approved {
            return deny(names(ids), errors);
        }
        // Only approval gates deny: would the request be allowed once approved?
        let Some(approved) = eval(&slice.policies, true) else {
            return deny(vec![], errors);
        };
        note(&approved);
        if let Some(p) = failed_forbid_denies(&approved) {
            return deny(p, errors);
        }
        if approved.decision != Decision::Allow {
            return deny(names(&approved.reasons), errors);
        }
        let allowed_by = names(&approved.reasons);
        if let Some(pre) = eval(&slice.preapprovals, false) {
            // Preapprovals are permits: a failed one preapproves nothing.
            note(&pre);
            if pre.decision == Decision::Allow {
                let mut p = allowed_by;
                for n in names(&pre.reasons) {
                    if !p.contains(&n) {
                        p.push(n);
                    }
                }
                return Verdict::Allow {
                    policies: p,
                    preapproved: true,
                    policy_errors: errors,
                };
            }
        }
        let approvers = if ids.iter().any(|id| self.two_approvers.contains(id)) {
            2
        } else {
            1
        };
        Verdict::NeedsApproval {
            policies: names(ids),
            allowed_by,
            approvers,
            policy_errors: errors,
        }
    }

    fn context(&self, input: &Input, approved: bool, arguments: &EntityUid) -> Option<Context> {
        // `context.task`, only for a call made in a task (policies test `context has task`).
        let task = match input.task {
            Some(t) => {
                let s = |v: &str| RestrictedExpression::new_string(v.to_string());
                let record = RestrictedExpression::new_record([
                    ("id".to_string(), s(&t.id)),
                    ("purpose".to_string(), s(&t.purpose)),
                    ("ticket".to_string(), s(t.ticket.as_deref().unwrap_or(""))),
                    ("opened_by".to_string(), s(&t.opened_by)),
                ])
                .ok()?;
                Some(("task".to_string(), record))
            }
            None => None,
        };
        let pairs = [
            (
                "method".to_string(),
                // Upper-cased: `delete` must not slip past `context.method == "DELETE"`.
                RestrictedExpression::new_string(input.method.to_ascii_uppercase()),
            ),
            (
                "path".to_string(),
                RestrictedExpression::new_string(input.path.to_string()),
            ),
            (
                "time".to_string(),
                RestrictedExpression::new_long(input.now_unix),
            ),
            (
                "approved".to_string(),
                RestrictedExpression::new_bool(approved),
            ),
            (
                "identity_kind".to_string(),
                RestrictedExpression::new_string(
                    input
                        .operation
                        .identity_kind
                        .as_deref()
                        .unwrap_or("")
                        .to_string(),
                ),
            ),
            (
                "mcp_method".to_string(),
                RestrictedExpression::new_string(
                    input.mcp.map(|m| m.method.clone()).unwrap_or_default(),
                ),
            ),
            (
                "mcp_tool".to_string(),
                RestrictedExpression::new_string(
                    input.mcp.and_then(|m| m.name.clone()).unwrap_or_default(),
                ),
            ),
            (
                "mcp_arguments".to_string(),
                RestrictedExpression::new_entity_uid(arguments.clone()),
            ),
            (
                "aws_actions".to_string(),
                RestrictedExpression::new_set(
                    input
                        .aws
                        .iter()
                        .flat_map(|a| &a.actions)
                        .map(|s| RestrictedExpression::new_string(s.clone())),
                ),
            ),
            (
                "aws_resources".to_string(),
                RestrictedExpression::new_set(
                    input
                        .aws
                        .iter()
                        .flat_map(|a| &a.resources)
                        .map(|s| RestrictedExpression::new_string(s.clone())),
                ),
            ),
        ];
        Context::from_pairs(pairs.into_iter().chain(task)).ok()
    }

    /// The action an MCP tool's call is decided by: its own, if a policy names it.
    pub fn mcp_action(&self, tool: &str, creates_identity: bool) -> String {
        if self.mcp_tools.contains(tool) {
            format!("mcp:{tool}")
        } else if creates_identity {
            MCP_OTHER_IDENTITY_TOOL.to_string()
        } else {
            MCP_OTHER_TOOL.to_string()
        }
    }

    /// The entities of a request (agent, tool, the MCP arguments) and the uids of
    /// principal, resource, action and arguments.
    fn entities(&self, input: &Input) -> Option<(Arc<Entities>, [EntityUid; 4])> {
        let uid = |ty: &str, id: &str| {
            Some(EntityUid::from_type_name_and_id(
                EntityTypeName::from_str(ty).ok()?,
                EntityId::new(id),
            ))
        };
        let principal = uid("Agent", &input.agent.id)?;
        let resource = uid("Tool", &input.tool.name)?;
        let action = uid("Action", &input.operation.action)?;
        let call_args = input.mcp.map(|m| &m.arguments).filter(|a| !a.is_empty());
        // Requests without MCP arguments share one empty arguments entity, so their
        // entities depend on agent and tool only and are cached.
        let arguments = uid(
            "McpArguments",
            if call_args.is_some() { "call" } else { "none" },
        )?;
        let uids = [
            principal.clone(),
            resource.clone(),
            action,
            arguments.clone(),
        ];
        let key = (
            input.agent.id.clone(),
            input.agent.owner.clone(),
            input.tool.name.clone(),
        );
        if call_args.is_none() {
            if let Some(e) = self.entities.get(&key) {
                return Some((e, uids));
            }
        }
        let agent = Entity::new_with_tags(
            principal.clone(),
            [
                (
                    "id".to_string(),
                    RestrictedExpression::new_string(input.agent.id.to_string()),
                ),
                (
                    "owner".to_string(),
                    RestrictedExpression::new_string(input.agent.owner.to_string()),
                ),
            ],
            [],
            input
                .agent
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone()))),
        )
        .ok()?;
        let tool = Entity::new(
            resource.clone(),
            [
                (
                    "name".to_string(),
                    RestrictedExpression::new_string(input.tool.name.to_string()),
                ),
                (
                    "kind".to_string(),
                    RestrictedExpression::new_string(input.tool.kind.as_str().to_string()),
                ),
            ]
            .into_iter()
            .collect(),
            HashSet::new(),
        )
        .ok()?;
        let args = Entity::new_with_tags(
            arguments,
            [],
            [],
            call_args
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone()))),
        )
        .ok()?;
        let entities =
            Arc::new(Entities::from_entities([agent, tool, args], Some(&self.schema)).ok()?);
        if call_args.is_none() {
            self.entities.insert(key, entities.clone());
        }
        Some((entities, uids))
    }
}

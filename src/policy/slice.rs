//! Which policies apply: the policies that can match one agent and one tool (most name
//! one of each), computed once per pair and kept.

use super::cache::ContextRefs;
use super::{Input, PolicyEngine};
use crate::locks::{read, write};
use cedar_policy::{EntityId, EntityTypeName, EntityUid, PolicySet};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

/// Policy slices by (agent id, tool name).
pub(super) type Slices = HashMap<(Arc<str>, Arc<str>), Arc<Slice>, crate::FastHash>;

/// The policies that can apply to one agent and one tool.
pub(super) struct Slice {
    pub(super) policies: PolicySet,
    pub(super) preapprovals: PolicySet,
    /// What of the request context these policies read: decides whether, and by what, a
    /// decision may be cached.
    pub(super) refs: ContextRefs,
}

/// Bounds the slice cache (agent and tool pairs seen); emptied when full.
const MAX_SLICES: usize = 10_000;

/// Whether a policy's principal or resource scope can match this entity. keygate's agents
/// and tools have no parents, so `in E` matches only E itself.
fn scope_can_match(c: ScopeConstraint, uid: &EntityUid) -> bool {
    match c {
        ScopeConstraint::Any | ScopeConstraint::Is => true,
        ScopeConstraint::Eq(e) | ScopeConstraint::In(e) => &e == uid,
    }
}

enum ScopeConstraint {
    Any,
    Is,
    Eq(EntityUid),
    In(EntityUid),
}

fn principal_scope(p: &cedar_policy::Policy) -> ScopeConstraint {
    use cedar_policy::PrincipalConstraint as C;
    match p.principal_constraint() {
        C::Any => ScopeConstraint::Any,
        C::Is(_) => ScopeConstraint::Is,
        C::Eq(e) => ScopeConstraint::Eq(e),
        C::In(e) | C::IsIn(_, e) => ScopeConstraint::In(e),
    }
}

fn resource_scope(p: &cedar_policy::Policy) -> ScopeConstraint {
    use cedar_policy::ResourceConstraint as C;
    match p.resource_constraint() {
        C::Any => ScopeConstraint::Any,
        C::Is(_) => ScopeConstraint::Is,
        C::Eq(e) => ScopeConstraint::Eq(e),
        C::In(e) | C::IsIn(_, e) => ScopeConstraint::In(e),
    }
}

impl PolicyEngine {
    pub(super) fn slice(&self, input: &Input) -> Arc<Slice> {
        if let Some(s) = read(&self.slices).get(&(input.agent.id.clone(), input.tool.name.clone()))
        {
            return s.clone();
        }
        let key = (input.agent.id.clone(), input.tool.name.clone());
        let uid = |ty: &str, id: &str| {
            EntityTypeName::from_str(ty)
                .ok()
                .map(|t| EntityUid::from_type_name_and_id(t, EntityId::new(id)))
        };
        let (Some(principal), Some(resource)) =
            (uid("Agent", &input.agent.id), uid("Tool", &input.tool.name))
        else {
            // Not reached (the type names are constants); an empty slice denies.
            return Arc::new(Slice {
                policies: PolicySet::new(),
                preapprovals: PolicySet::new(),
                refs: ContextRefs::default(),
            });
        };
        let (principal, resource) = (&principal, &resource);
        let keep = |p: &&cedar_policy::Policy| {
            scope_can_match(principal_scope(p), principal)
                && scope_can_match(resource_scope(p), resource)
        };
        let mut policies = PolicySet::new();
        for p in self.policies.policies().filter(keep) {
            let _ = policies.add(p.clone());
        }
        let mut preapprovals = PolicySet::new();
        for p in self.preapprovals.policies().filter(keep) {
            let _ = preapprovals.add(p.clone());
        }
        let mut refs = ContextRefs::default();
        for p in policies.policies().chain(preapprovals.policies()) {
            ContextRefs::scan(&p.to_string(), &mut refs);
        }
        let slice = Arc::new(Slice {
            policies,
            preapprovals,
            refs,
        });
        let mut slices = write(&self.slices);
        if slices.len() >= MAX_SLICES {
            slices.clear();
        }
        slices.insert(key, slice.clone());
        slice
    }
}

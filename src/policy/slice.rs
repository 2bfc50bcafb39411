//! Which policies apply: the policies that can match one agent and one tool (most name
//! one of each), computed once per pair and kept.

use super::cache::ContextRefs;
use super::input::Input;
use cedar_policy::{EntityId, EntityTypeName, EntityUid, PolicySet};
use std::str::FromStr;
use std::sync::Arc;

/// (agent id, tool name).
type SliceKey = (Arc<str>, Arc<str>);

/// The slices of one policy set, by agent and tool: each computed on first use and kept,
/// at most [`SLICE_CACHE_BYTES`] of them (as [`slice_weight`] counts); the least useful
/// are evicted (TinyLFU), not all at once.
pub(super) struct Slices {
    cache: moka::sync::Cache<SliceKey, Arc<Slice>, crate::FastHash>,
}

/// The policies that can apply to one agent and one tool.
pub(super) struct Slice {
    pub(super) policies: PolicySet,
    pub(super) preapprovals: PolicySet,
    /// What of the request context these policies read: decides whether a
    /// decision may be cached.
    pub(super) refs: ContextRefs,
    /// The policies' text: what the slice weighs in the cache, roughly.
    text_bytes: usize,
}

/// Bounds the slice cache, in bytes: however many agents and tools are seen.
pub(super) const SLICE_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// What a cached slice weighs: its key and its policies' text, and moka's bookkeeping.
fn slice_weight(k: &SliceKey, v: &Arc<Slice>) -> u32 {
    let w = std::mem::size_of::<Slice>() + k.0.len() + k.1.len() + v.text_bytes + 64;
    u32::try_from(w).unwrap_or(u32::MAX)
}

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

impl Slices {
    /// An empty cache holding at most `bytes`.
    pub(super) fn new(bytes: u64) -> Slices {
        Slices {
            cache: moka::sync::Cache::builder()
                .max_capacity(bytes)
                .weigher(slice_weight)
                .build_with_hasher(crate::FastHash::default()),
        }
    }

    /// The policies of `policies` and `preapprovals` that can apply to the request's
    /// agent and tool.
    pub(super) fn get(
        &self,
        policies: &PolicySet,
        preapprovals: &PolicySet,
        input: &Input,
    ) -> Arc<Slice> {
        let key = (input.agent.id.clone(), input.tool.name.clone());
        if let Some(s) = self.cache.get(&key) {
            return s;
        }
        let slice = Arc::new(slice(policies, preapprovals, input));
        self.cache.insert(key, slice.clone());
        slice
    }
}

/// Computes the slice for the request's agent and tool.
fn slice(all: &PolicySet, all_preapprovals: &PolicySet, input: &Input) -> Slice {
    let uid = |ty: &str, id: &str| {
        EntityTypeName::from_str(ty)
            .ok()
            .map(|t| EntityUid::from_type_name_and_id(t, EntityId::new(id)))
    };
    let (Some(principal), Some(resource)) =
        (uid("Agent", &input.agent.id), uid("Tool", &input.tool.name))
    else {
        // Not reached (the type names are constants); an empty slice denies.
        return Slice {
            policies: PolicySet::new(),
            preapprovals: PolicySet::new(),
            refs: ContextRefs::default(),
            text_bytes: 0,
        };
    };
    let (principal, resource) = (&principal, &resource);
    let keep = |p: &&cedar_policy::Policy| {
        scope_can_match(principal_scope(p), principal)
            && scope_can_match(resource_scope(p), resource)
    };
    let mut policies = PolicySet::new();
    for p in all.policies().filter(keep) {
        let _ = policies.add(p.clone());
    }
    let mut preapprovals = PolicySet::new();
    for p in all_preapprovals.policies().filter(keep) {
        let _ = preapprovals.add(p.clone());
    }
    let mut refs = ContextRefs::default();
    let mut text_bytes = 0;
    for p in policies.policies().chain(preapprovals.policies()) {
        let text = p.to_string();
        text_bytes += text.len();
        ContextRefs::scan(&text, &mut refs);
    }
    Slice {
        policies,
        preapprovals,
        refs,
        text_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slice_cache_is_bounded_by_bytes() {
        let slices = Slices::new(64 * 1024);
        let key = |i: usize| -> SliceKey { (format!("agent-{i}").into(), "tool".into()) };
        let empty = || {
            Arc::new(Slice {
                policies: PolicySet::new(),
                preapprovals: PolicySet::new(),
                refs: ContextRefs::default(),
                text_bytes: 1000,
            })
        };
        for i in 0..10_000 {
            slices.cache.insert(key(i), empty());
        }
        slices.cache.run_pending_tasks();
        let held = slices.cache.weighted_size();
        assert!(held <= 64 * 1024, "{held}");
        assert!(
            slices.cache.entry_count() > 10,
            "{}",
            slices.cache.entry_count()
        );
    }
}

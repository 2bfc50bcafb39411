//! The decision cache: a decision is reused for requests that agree on everything the
//! applicable policies read (agent, tool, action, approval state, and the context
//! attributes the policies name); bounded by bytes.

use super::input::{Input, Verdict};
use std::sync::Arc;

/// Bounds the decision cache, in bytes (keys and verdicts, as [`decision_weight`] counts
/// them): however many agents, tools, methods or MCP tool names are seen, the cache holds
/// at most this much; the least useful entries are evicted (TinyLFU), not all at once.
pub(super) const DECISION_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// A decision cache holding at most `bytes` (as [`decision_weight`] counts them).
pub(super) fn decision_cache(
    bytes: u64,
) -> moka::sync::Cache<DecisionKey, Verdict, crate::FastHash> {
    moka::sync::Cache::builder()
        .max_capacity(bytes)
        .weigher(decision_weight)
        .build_with_hasher(crate::FastHash::default())
}

/// What a cached decision weighs: its key and verdict, with the text they hold.
fn decision_weight(k: &DecisionKey, v: &Verdict) -> u32 {
    let opt = |s: &Option<Box<str>>| s.as_ref().map_or(0, |s| s.len());
    let key = std::mem::size_of::<DecisionKey>()
        + k.agent.len()
        + k.owner.len()
        + k.tool.len()
        + k.action.len()
        + k.method.heap_len()
        + k.identity_kind.as_ref().map_or(0, |s| s.len())
        + opt(&k.mcp_method)
        + opt(&k.mcp_tool);
    let ids = |ids: &[String]| -> usize {
        ids.iter()
            .map(|p| std::mem::size_of::<String>() + p.len())
            .sum()
    };
    let verdict = std::mem::size_of::<Verdict>()
        + match v {
            Verdict::Allow {
                policies,
                policy_errors,
                ..
            }
            | Verdict::Deny {
                policies,
                policy_errors,
            } => ids(policies) + ids(policy_errors),
            Verdict::NeedsApproval {
                policies,
                allowed_by,
                policy_errors,
                ..
            } => ids(policies) + ids(allowed_by) + ids(policy_errors),
        };
    // moka's own bookkeeping per entry, roughly.
    u32::try_from(key + verdict + 64).unwrap_or(u32::MAX)
}

/// The `context` attributes a set of policies reads. Found by scanning the policy text for
/// the word `context`, so it over-approximates (a string literal mentioning `context`
/// counts): a policy is never wrongly treated as independent of the context.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct ContextRefs {
    method: bool,
    identity_kind: bool,
    mcp_method: bool,
    mcp_tool: bool,
    /// `path`, `time`, `mcp_arguments`, or the context used any other way: a decision
    /// depends on the very request and is not cached.
    pub(super) per_request: bool,
}

impl ContextRefs {
    pub(super) fn scan(text: &str, into: &mut ContextRefs) {
        let b = text.as_bytes();
        let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        let mut from = 0;
        while let Some(i) = text[from..].find("context").map(|i| i + from) {
            from = i + "context".len();
            let before = i.checked_sub(1).map(|j| b[j]);
            if before.is_some_and(|c| word(c) || c == b':') || b.get(from).is_some_and(|&c| word(c))
            {
                continue; // part of another word, or a namespaced name
            }
            let rest = text[from..].trim_start();
            let attr = rest.strip_prefix('.').map(|r| {
                let r = r.trim_start();
                let end = r.bytes().position(|c| !word(c)).unwrap_or(r.len());
                &r[..end]
            });
            match attr {
                Some("method") => into.method = true,
                Some("identity_kind") => into.identity_kind = true,
                Some("mcp_method") => into.mcp_method = true,
                Some("mcp_tool") => into.mcp_tool = true,
                Some("approved") => {} // always part of the key
                _ => into.per_request = true,
            }
        }
    }
}

/// What a cached decision was made from: the agent (its id and owner; its attributes
/// come with its id within one policy engine), the tool, the operation's action, the
/// approval state, and every context attribute a cacheable policy can read (method,
/// identity kind, MCP method and tool). Whether the policies that apply read more than
/// that (path, time, MCP arguments) is their slice's business: such a decision is never
/// stored, so the key can be built, and looked up, before the slice is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct DecisionKey {
    agent: Arc<str>,
    owner: Arc<str>,
    tool: Arc<str>,
    action: Arc<str>,
    approved: bool,
    method: MethodKey,
    identity_kind: Option<Arc<str>>,
    mcp_method: Option<Box<str>>,
    mcp_tool: Option<Box<str>>,
}

/// A request method as decisions are keyed by: upper-cased (as the policies see it),
/// inline when short (every standard method), so a key allocates nothing for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum MethodKey {
    Inline(u8, [u8; 15]),
    Long(Box<str>),
}

impl MethodKey {
    fn of(method: &str) -> MethodKey {
        let b = method.as_bytes();
        match u8::try_from(b.len()) {
            Ok(n) if b.len() <= 15 => {
                let mut inline = [0u8; 15];
                for (to, from) in inline.iter_mut().zip(b) {
                    *to = from.to_ascii_uppercase();
                }
                MethodKey::Inline(n, inline)
            }
            _ => MethodKey::Long(method.to_ascii_uppercase().into_boxed_str()),
        }
    }

    fn heap_len(&self) -> usize {
        match self {
            MethodKey::Inline(..) => 0,
            MethodKey::Long(s) => s.len(),
        }
    }
}

/// The cache key of a decision, or `None` when the request carries MCP arguments (which
/// policies may read, and which are not part of a key).
pub(super) fn decision_key(input: &Input) -> Option<DecisionKey> {
    if input.mcp.is_some_and(|m| !m.arguments.is_empty()) {
        return None;
    }
    Some(DecisionKey {
        agent: input.agent.id.clone(),
        owner: input.agent.owner.clone(),
        tool: input.tool.name.clone(),
        action: input.operation.action.clone(),
        approved: input.approved,
        method: MethodKey::of(input.method),
        identity_kind: input.operation.identity_kind.clone(),
        mcp_method: input.mcp.map(|m| m.method.as_str().into()),
        mcp_tool: input.mcp.and_then(|m| m.name.as_deref().map(Box::from)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decision_cache_is_bounded_by_bytes() {
        let cache = decision_cache(DECISION_CACHE_BYTES);
        // 64 decisions of 1 MiB keys (an MCP tool name per decision): 4 times the bound.
        for i in 0..64 {
            let key = DecisionKey {
                agent: "a".into(),
                owner: "o".into(),
                tool: "t".into(),
                action: "mcp:call".into(),
                approved: false,
                method: MethodKey::of("POST"),
                identity_kind: None,
                mcp_method: Some("tools/call".into()),
                mcp_tool: Some(format!("{i}{}", "x".repeat(1 << 20)).into()),
            };
            cache.insert(
                key,
                Verdict::Deny {
                    policies: vec!["p".into()],
                    policy_errors: Vec::new(),
                },
            );
        }
        cache.run_pending_tasks();
        assert!(
            cache.weighted_size() <= DECISION_CACHE_BYTES,
            "{} bytes cached",
            cache.weighted_size()
        );
        assert!(cache.entry_count() < 17, "{}", cache.entry_count());
        let small = decision_weight(
            &DecisionKey {
                agent: "a".into(),
                owner: "o".into(),
                tool: "t".into(),
                action: "read".into(),
                approved: false,
                method: MethodKey::of("POST"),
                identity_kind: None,
                mcp_method: None,
                mcp_tool: None,
            },
            &Verdict::Allow {
                policies: vec!["p".into()],
                preapproved: false,
                policy_errors: Vec::new(),
            },
        );
        assert!(small < 512, "{small}");
    }

    fn refs(text: &str) -> ContextRefs {
        let mut r = ContextRefs::default();
        ContextRefs::scan(text, &mut r);
        r
    }

    #[test]
    fn context_references_decide_whether_a_decision_is_cached() {
        assert_eq!(
            refs(r#"permit (principal, action, resource) when { principal.owner == "x" };"#),
            ContextRefs::default()
        );
        assert_eq!(
            refs(r#"forbid (principal, action, resource) unless { context.approved };"#),
            ContextRefs::default()
        );
        let r = refs(
            r#"forbid (principal, action, resource) when { context.method == "DELETE" && context . mcp_tool == "x" };"#,
        );
        assert!(
            r.method && r.mcp_tool && !r.mcp_method && !r.per_request,
            "{r:?}"
        );
        for per_request in [
            r#"permit (principal, action, resource) when { context.path like "/status*" };"#,
            r#"permit (principal, action, resource) when { context.time < 1800000000 };"#,
            r#"permit (principal, action, resource) when { context.mcp_arguments.hasTag("x") };"#,
            r#"permit (principal, action, resource) when { context["path"] == "/" };"#,
            r#"permit (principal, action, resource) when { context has path };"#,
            r#"permit (principal, action, resource) when { principal.owner == "context" };"#,
        ] {
            assert!(refs(per_request).per_request, "{per_request}");
        }
        // Other words that contain it are not the context.
        assert_eq!(
            refs(
                r#"permit (principal, action, resource) when { principal.owner == "mycontexts" };"#
            ),
            ContextRefs::default()
        );
    }
}

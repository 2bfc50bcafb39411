//! **authorize**: Cedar policies decide every request.
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

use crate::config::{Agent, Operations, Tool};
use crate::locks::{read, write};
use crate::routes::Operation;
use cedar_policy::{
    AuthorizationError, Authorizer, Context, Decision, Effect, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, PolicyId, PolicySet, Request, RestrictedExpression, Schema,
    ValidationMode, Validator,
};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

/// The annotation that marks a `forbid` a human approval lifts.
pub const APPROVAL: &str = "approval";
/// The annotation that marks a `permit` as a standing approval.
pub const PREAPPROVED: &str = "preapproved";
/// Action groups that always exist, so default policies can name them.
const BASE_GROUPS: [&str; 5] = [
    "read",
    "write",
    "identity_creation",
    "privilege_escalation",
    "mcp_tool",
];
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

/// One evaluation of a policy set: Cedar's decision, the policies behind it, and the
/// policies whose evaluation failed, split by effect.
struct Evaluation {
    decision: Decision,
    reasons: Vec<PolicyId>,
    failed_forbids: Vec<PolicyId>,
    failed_permits: Vec<PolicyId>,
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

/// Policy slices by (agent id, tool name).
type Slices = HashMap<(Arc<str>, Arc<str>), Arc<Slice>, crate::FastHash>;

/// (agent id, agent owner, tool name).
type EntitiesKey = (Arc<str>, Arc<str>, Arc<str>);

/// The policies that can apply to one agent and one tool.
struct Slice {
    policies: PolicySet,
    preapprovals: PolicySet,
    /// What of the request context these policies read: decides whether, and by what, a
    /// decision may be cached.
    refs: ContextRefs,
}

/// Bounds the decision cache, in bytes (keys and verdicts, as [`decision_weight`] counts
/// them): however many agents, tools, methods or MCP tool names are seen, the cache holds
/// at most this much; the least useful entries are evicted (TinyLFU), not all at once.
const DECISION_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// A decision cache holding at most `bytes` (as [`decision_weight`] counts them).
fn decision_cache(bytes: u64) -> moka::sync::Cache<DecisionKey, Verdict, crate::FastHash> {
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
        + opt(&k.method)
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
            } => ids(policies) + ids(allowed_by) + ids(policy_errors),
        };
    // moka's own bookkeeping per entry, roughly.
    u32::try_from(key + verdict + 64).unwrap_or(u32::MAX)
}
/// Bounds the slice cache (agent and tool pairs seen); emptied when full.
const MAX_SLICES: usize = 10_000;

/// The `context` attributes a set of policies reads. Found by scanning the policy text for
/// the word `context`, so it over-approximates (a string literal mentioning `context`
/// counts): a policy is never wrongly treated as independent of the context.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct ContextRefs {
    method: bool,
    identity_kind: bool,
    mcp_method: bool,
    mcp_tool: bool,
    /// `path`, `time`, `mcp_arguments`, or the context used any other way: a decision
    /// depends on the very request and is not cached.
    per_request: bool,
}

impl ContextRefs {
    fn scan(text: &str, into: &mut ContextRefs) {
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
/// approval state, and the context attributes the applicable policies read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DecisionKey {
    agent: Arc<str>,
    owner: Arc<str>,
    tool: Arc<str>,
    action: Arc<str>,
    approved: bool,
    method: Option<Box<str>>,
    identity_kind: Option<Arc<str>>,
    mcp_method: Option<Box<str>>,
    mcp_tool: Option<Box<str>>,
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

/// Compiled policies and schema.
pub struct PolicyEngine {
    schema: Schema,
    /// Entities (the agent, the tool, and the actions from the schema) by agent, owner and
    /// tool: they depend on nothing else, and building and validating them is most of the
    /// cost of a decision. Dropped with the engine on reload.
    entities: moka::sync::Cache<EntitiesKey, Arc<Entities>, crate::FastHash>,
    /// Policies sliced per (agent, tool): Cedar evaluates every policy it is given, and
    /// most policies name one agent or one tool. Exact: a dropped policy's scope cannot
    /// match that agent and tool.
    slices: RwLock<Slices>,
    /// Decisions, for slices whose policies read nothing of the request beyond the
    /// [`DecisionKey`] (no path, no time, no MCP arguments); bounded by
    /// [`DECISION_CACHE_BYTES`]. Dropped with the engine on reload, so a policy change is
    /// never answered from a cache.
    decisions: moka::sync::Cache<DecisionKey, Verdict, crate::FastHash>,
    policies: PolicySet,
    preapprovals: PolicySet,
    approval_gates: HashSet<PolicyId>,
    authorizer: Authorizer,
    /// MCP tool names that have their own action (named by a policy or configured).
    mcp_tools: HashSet<String>,
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

fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The complete schema: the base file plus one action per operation and per MCP tool.
pub fn schema_text(base: &str, operations: &Operations, mcp_tools: &HashSet<String>) -> String {
    let mut groups: BTreeSet<&str> = BASE_GROUPS.into_iter().collect();
    for op in operations.by_name.values() {
        for t in &op.tags {
            groups.insert(t);
        }
    }
    let mut s = String::from(base);
    s.push_str("\n// Generated by keygate: action groups (tags) and operations.\n");
    for g in &groups {
        if !operations.by_name.contains_key(*g) {
            s.push_str(&format!("action {};\n", quote(g)));
        }
    }
    for op in operations.by_name.values() {
        let parents: Vec<String> = op
            .tags
            .iter()
            .filter(|t| **t != op.name)
            .map(|t| quote(t))
            .collect();
        s.push_str(&format!("action {}", quote(&op.name)));
        if !parents.is_empty() {
            s.push_str(&format!(" in [{}]", parents.join(", ")));
        }
        s.push_str(
            " appliesTo { principal: [Agent], resource: [Tool], context: RequestContext };\n",
        );
    }
    let mut mcp: Vec<(String, bool)> = mcp_tools
        .iter()
        .map(|n| {
            (
                format!("mcp:{n}"),
                mcp_creates_identity(n, &operations.mcp_identity_tools),
            )
        })
        .collect();
    mcp.push((MCP_OTHER_TOOL.to_string(), false));
    mcp.push((MCP_OTHER_IDENTITY_TOOL.to_string(), true));
    mcp.sort();
    for (action, identity) in mcp {
        let groups = if identity {
            "[\"mcp_tool\", \"identity_creation\", \"write\"]"
        } else {
            "[\"mcp_tool\"]"
        };
        s.push_str(&format!(
            "action {} in {groups} appliesTo {{ principal: [Agent], resource: [Tool], context: RequestContext }};\n",
            quote(&action)
        ));
    }
    s
}

/// Whether an MCP tool creates identities: configured so, or named so
/// (a verb such as create/generate/issue/mint/rotate with a noun such as
/// key/token/jwt/credential/creds/secret/password/certificate/service_account).
///
/// The name is split into words at `_`, `-`, `.`, other non-alphanumerics and camelCase
/// boundaries, acronyms included (`CreateAPIToken` is create + api + token,
/// `generateSSHKey` generate + ssh + key, `issueJWT` issue + jwt); a word run together
/// (`createapitoken`) counts when it starts with a verb and ends with a noun. Erring
/// towards identity creation is the safe side: such a call waits for a human, where a
/// miss would let an agent mint credentials unseen.
pub fn mcp_creates_identity(name: &str, configured: &std::collections::BTreeSet<String>) -> bool {
    if configured.contains(name) {
        return true;
    }
    let words = name_words(name);
    const VERBS: [&str; 13] = [
        "create",
        "generate",
        "regenerate",
        "new",
        "add",
        "issue",
        "mint",
        "rotate",
        "register",
        "make",
        "provision",
        "reset",
        "renew",
    ];
    const NOUNS: [&str; 33] = [
        "key",
        "keys",
        "apikey",
        "apikeys",
        "sshkey",
        "sshkeys",
        "gpgkey",
        "gpgkeys",
        "keypair",
        "keypairs",
        "accesskey",
        "accesskeys",
        "token",
        "tokens",
        "apitoken",
        "apitokens",
        "jwt",
        "jwts",
        "credential",
        "credentials",
        "cred",
        "creds",
        "secret",
        "secrets",
        "password",
        "passwords",
        "certificate",
        "certificates",
        "cert",
        "certs",
        "serviceaccount",
        "serviceaccounts",
        "identity",
    ];
    // Too short to be recognised at the end of a run-together word.
    const SHORT_NOUNS: [&str; 4] = ["sa", "sas", "pat", "pats"];
    let verb = words.iter().any(|w| VERBS.contains(&w.as_str()));
    let noun = words
        .iter()
        .any(|w| NOUNS.contains(&w.as_str()) || SHORT_NOUNS.contains(&w.as_str()))
        || words
            .windows(2)
            .any(|w| w[0] == "service" && (w[1] == "account" || w[1] == "accounts"));
    let run_together = words.iter().any(|w| {
        VERBS.iter().any(|v| {
            w.strip_prefix(v)
                .is_some_and(|rest| NOUNS.iter().any(|n| rest.ends_with(n)))
        })
    });
    (verb && noun) || run_together
}

/// The lowercase words of a name: split at non-alphanumerics and at camelCase
/// boundaries (`aB`, `1B`, and `ABc` before its `B`, so acronyms stand alone).
fn name_words(name: &str) -> Vec<String> {
    let chars: Vec<char> = name.chars().collect();
    let mut words: Vec<String> = Vec::new();
    let mut cur = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if c.is_ascii_uppercase() && !cur.is_empty() {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower)
            {
                words.push(std::mem::take(&mut cur));
            }
        }
        cur.push(c.to_ascii_lowercase());
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// The MCP tool names policies mention as `Action::"mcp:<name>"`.
fn mcp_names_in(src: &str, out: &mut HashSet<String>) {
    let marker = "Action::\"mcp:";
    let mut rest = src;
    while let Some(i) = rest.find(marker) {
        rest = &rest[i + marker.len()..];
        if let Some(end) = rest.find('"') {
            let name = &rest[..end];
            let action = format!("mcp:{name}");
            if !name.is_empty()
                && !name.contains('\\')
                && action != MCP_OTHER_TOOL
                && action != MCP_OTHER_IDENTITY_TOOL
            {
                out.insert(name.to_string());
            }
        }
    }
}

impl PolicyEngine {
    /// Loads `*.cedarschema` (exactly one) and every `*.cedar` file of `dir`, validates the
    /// policies against the schema, and compiles them. Errors name the file.
    pub fn load(
        dir: &Path,
        operations: &Operations,
    ) -> Result<PolicyEngine, Vec<(PathBuf, String)>> {
        let mut errors = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                return Err(vec![(
                    dir.to_path_buf(),
                    format!("cannot read the policy folder: {e}"),
                )])
            }
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        let schemas: Vec<&PathBuf> = files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "cedarschema"))
            .collect();
        let base = match schemas.as_slice() {
            [one] => match std::fs::read_to_string(one) {
                Ok(t) => t,
                Err(e) => return Err(vec![((*one).clone(), format!("cannot read: {e}"))]),
            },
            [] => {
                return Err(vec![(
                    dir.to_path_buf(),
                    "holds no .cedarschema file".into(),
                )])
            }
            _ => {
                return Err(vec![(
                    dir.to_path_buf(),
                    "holds more than one .cedarschema file".into(),
                )])
            }
        };
        let schema_file = schemas[0].clone();
        let cedar_files: Vec<&PathBuf> = files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "cedar"))
            .collect();
        let mut mcp_tools: HashSet<String> =
            operations.mcp_identity_tools.iter().cloned().collect();
        for f in &cedar_files {
            if let Ok(src) = std::fs::read_to_string(f) {
                mcp_names_in(&src, &mut mcp_tools);
            }
        }
        let text = schema_text(&base, operations, &mcp_tools);
        let schema = match Schema::from_cedarschema_str(&text) {
            Ok((s, _warnings)) => s,
            Err(e) => return Err(vec![(schema_file, format!("invalid schema: {e}"))]),
        };

        let mut policies = PolicySet::new();
        let mut preapprovals = PolicySet::new();
        let mut approval_gates = HashSet::new();
        let mut origin: Vec<(PolicyId, PathBuf)> = Vec::new();
        for file in files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "cedar"))
        {
            let src = match std::fs::read_to_string(file) {
                Ok(s) => s,
                Err(e) => {
                    errors.push((file.clone(), format!("cannot read: {e}")));
                    continue;
                }
            };
            let set = match PolicySet::from_str(&src) {
                Ok(s) => s,
                Err(e) => {
                    errors.push((file.clone(), e.to_string()));
                    continue;
                }
            };
            if set.templates().next().is_some() {
                errors.push((file.clone(), "policy templates are not supported".into()));
            }
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            for (i, p) in set.policies().enumerate() {
                let id = p
                    .annotation("id")
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{stem}:{i}"));
                let p = p.new_id(PolicyId::new(&id));
                let is_forbid = p.effect() == cedar_policy::Effect::Forbid;
                if p.annotation(APPROVAL).is_some() {
                    if is_forbid {
                        approval_gates.insert(p.id().clone());
                    } else {
                        errors.push((
                            file.clone(),
                            format!("policy {id:?}: @{APPROVAL} belongs on a forbid policy"),
                        ));
                    }
                }
                if p.annotation(PREAPPROVED).is_some() {
                    if is_forbid {
                        errors.push((
                            file.clone(),
                            format!("policy {id:?}: @{PREAPPROVED} belongs on a permit policy"),
                        ));
                    } else if let Err(e) = preapprovals.add(p.clone()) {
                        errors.push((file.clone(), e.to_string()));
                    }
                }
                origin.push((p.id().clone(), file.clone()));
                if let Err(e) = policies.add(p) {
                    errors.push((file.clone(), format!("policy {id:?}: {e}")));
                }
            }
        }
        let validation = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        for e in validation.validation_errors() {
            let id = e.policy_id();
            let file = origin
                .iter()
                .find(|(p, _)| p == id)
                .map(|(_, f)| f.clone())
                .unwrap_or_else(|| dir.to_path_buf());
            errors.push((file, format!("policy {:?}: {e}", id.to_string())));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let policy_count = policies.policies().count();
        Ok(PolicyEngine {
            mcp_tools,
            entities: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .build_with_hasher(crate::FastHash::default()),
            slices: RwLock::default(),
            decisions: decision_cache(DECISION_CACHE_BYTES),
            schema,
            policies,
            preapprovals,
            approval_gates,
            authorizer: Authorizer::new(),
            schema_text: text,
            policy_count,
        })
    }

    /// Decides a request: from the decision cache when the applicable policies read
    /// nothing of the request beyond agent, tool, operation and the cached context
    /// attributes; otherwise by evaluating them.
    pub fn authorize(&self, input: &Input) -> Verdict {
        self.decide(input).0
    }

    /// As [`PolicyEngine::authorize`], and whether the policies were evaluated for this
    /// request (`false`: the decision came from the cache).
    pub fn decide(&self, input: &Input) -> (Verdict, bool) {
        let slice = self.slice(input);
        let Some(key) = decision_key(input, slice.refs) else {
            return (self.evaluate(input, &slice), true);
        };
        if let Some(v) = self.decisions.get(&key) {
            return (v, false);
        }
        let v = self.evaluate(input, &slice);
        // A verdict reached through a failed policy is not cached: rare, and evaluating it
        // again keeps its warning and its `policy_errors` tied to each request.
        if !v.policy_errors().is_empty() {
            return (v, true);
        }
        self.decisions.insert(key, v.clone());
        (v, true)
    }

    /// Evaluates the policies for `input`, bypassing the decision cache: what a decision
    /// costs the first time (benchmarks, diagnostics).
    pub fn evaluate_uncached(&self, input: &Input) -> Verdict {
        self.evaluate(input, &self.slice(input))
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
        Verdict::NeedsApproval {
            policies: names(ids),
            allowed_by,
            policy_errors: errors,
        }
    }

    fn context(&self, input: &Input, approved: bool, arguments: &EntityUid) -> Option<Context> {
        Context::from_pairs([
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
        ])
        .ok()
    }

    fn slice(&self, input: &Input) -> Arc<Slice> {
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

/// The cache key of a decision, or `None` when the policies read the very request.
fn decision_key(input: &Input, refs: ContextRefs) -> Option<DecisionKey> {
    if refs.per_request || input.mcp.is_some_and(|m| !m.arguments.is_empty()) {
        return None;
    }
    Some(DecisionKey {
        agent: input.agent.id.clone(),
        owner: input.agent.owner.clone(),
        tool: input.tool.name.clone(),
        action: input.operation.action.clone(),
        approved: input.approved,
        method: refs
            .method
            .then(|| input.method.to_ascii_uppercase().into_boxed_str()),
        identity_kind: refs
            .identity_kind
            .then(|| input.operation.identity_kind.clone())
            .flatten(),
        mcp_method: refs
            .mcp_method
            .then(|| input.mcp.map(|m| m.method.as_str().into()))
            .flatten(),
        mcp_tool: refs
            .mcp_tool
            .then(|| input.mcp.and_then(|m| m.name.as_deref().map(Box::from)))
            .flatten(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (tool name, creates an identity by its name).
    const MCP_IDENTITY_NAMES: &[(&str, bool)] = &[
        ("create_api_token", true),
        ("createApiKey", true),
        ("generate-ssh-key", true),
        ("issue_credentials", true),
        ("create_service_account", true),
        ("createServiceAccounts", true),
        ("rotateSecret", true),
        ("mint_token", true),
        // Acronyms and abbreviations.
        ("CreateAPIToken", true),
        ("generateSSHKey", true),
        ("addSSHKey", true),
        ("createGPGKey", true),
        ("issueJWT", true),
        ("rotate_creds", true),
        ("create_pat", true),
        ("newPAT", true),
        ("create.sa", true),
        ("regenerate_access_key", true),
        ("reset_password", true),
        ("provisionCert", true),
        ("CREATE_API_KEY", true),
        ("createS3AccessKey", true),
        // Run together.
        ("createapitoken", true),
        ("generatesshkey", true),
        ("mintjwt", true),
        // Ordinary tools.
        ("echo", false),
        ("get-sum", false),
        ("list_keys", false),
        ("listSSHKeys", false),
        ("get_token_info", false),
        ("getTokenInfo", false),
        ("search_issues", false),
        ("list_tokens", false),
        ("delete_key", false),
        ("revoke_token", false),
        ("keyword_search", false),
        ("create_issue", false),
        ("createIssue", false),
        ("add_comment", false),
        ("address_lookup", false),
        ("newsletter_signup", false),
        ("make_pr", false),
        ("", false),
    ];

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
                method: None,
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
                method: None,
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

    #[test]
    fn mcp_identity_tool_names() {
        let none = Default::default();
        for (name, creates) in MCP_IDENTITY_NAMES {
            assert_eq!(mcp_creates_identity(name, &none), *creates, "{name}");
        }
        let configured = ["echo".to_string()].into_iter().collect();
        assert!(mcp_creates_identity("echo", &configured));
        assert_eq!(name_words("CreateAPIToken"), ["create", "api", "token"]);
        assert_eq!(name_words("issueJWT"), ["issue", "jwt"]);
        assert_eq!(
            name_words("get_S3Bucket2Key"),
            ["get", "s3", "bucket2", "key"]
        );
    }

    #[test]
    fn mcp_names_are_found_in_policies() {
        let mut out = HashSet::new();
        mcp_names_in(
            r#"permit(principal, action == Action::"mcp:echo", resource);
               permit(principal, action in [Action::"mcp:get-sum", Action::"read"], resource);
               forbid(principal, action == Action::"mcp:other_tool", resource);"#,
            &mut out,
        );
        let mut v: Vec<_> = out.into_iter().collect();
        v.sort();
        assert_eq!(v, vec!["echo", "get-sum"]);
    }

    fn refs(text: &str) -> ContextRefs {
        let mut r = ContextRefs::default();
        ContextRefs::scan(text, &mut r);
        r
    }

    #[test]
    fn context_references_decide_what_a_cached_decision_is_keyed_by() {
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

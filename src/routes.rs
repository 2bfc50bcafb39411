//! Operations and the route table that names them.
//!
//! An operation is what a request does, in policy terms: a name (the Cedar action) and
//! tags (the action groups it belongs to, such as `read`, `write`, `identity_creation`).
//! A tool's `[[tools.routes]]` map method + path template to operations; they are compiled
//! once into a segment trie, so a lookup costs one walk down the path, whatever the number
//! of templates.

use http::Method;
use std::collections::HashMap;
use std::sync::Arc;

/// The operation (and its tag) of a blind tunnel through the forward proxy.
pub const TUNNEL: &str = "tunnel";

/// The tag every identity-creating operation carries.
pub const IDENTITY_CREATION: &str = "identity_creation";

/// What a request does, as policies see it.
#[derive(Debug)]
pub struct Operation {
    pub name: Arc<str>,
    /// The Cedar action that decides it: the name itself, except for MCP tools no
    /// policy names, which share a fallback action (`mcp:other_tool`).
    pub action: Arc<str>,
    pub tags: Vec<Arc<str>>,
    /// For identity creation: the kind of identity created ("access_key", "deploy_key", …).
    pub identity_kind: Option<Arc<str>>,
    /// The catalog entry this operation came from, if any (it knows how to find the
    /// created identity's identifier in the response).
    pub catalog: Option<&'static crate::catalog::CatalogOp>,
}

impl Operation {
    pub fn new(name: &str, tags: &[&str], identity_kind: Option<&str>) -> Operation {
        let name: Arc<str> = name.into();
        Operation {
            action: name.clone(),
            name,
            tags: tags.iter().map(|t| Arc::from(*t)).collect(),
            identity_kind: identity_kind.map(Arc::from),
            catalog: None,
        }
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| &**t == tag)
    }

    pub fn is_identity_creation(&self) -> bool {
        self.has_tag(IDENTITY_CREATION)
    }
}

#[derive(Default, Debug)]
struct Node {
    /// Children by literal segment, lowercased: literal segments match case-insensitively,
    /// so `/Repos/o/r/KEYS` cannot slip past a `/repos/{o}/{r}/keys` route.
    literal: HashMap<Box<str>, Node>,
    param: Option<Box<Node>>,
    /// (method, or None for any) → operation, for templates ending here.
    ends: Vec<(Option<Method>, Arc<Operation>)>,
}

/// Method + path template → operation.
#[derive(Default, Debug)]
pub struct RouteTable {
    root: Node,
    len: usize,
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

impl RouteTable {
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a template such as `/repos/{owner}/{repo}/keys`. Fails on a duplicate.
    pub fn insert(
        &mut self,
        method: Option<Method>,
        template: &str,
        op: Arc<Operation>,
    ) -> Result<(), String> {
        if !template.starts_with('/') {
            return Err(format!("{template:?} must start with '/'"));
        }
        let mut node = &mut self.root;
        for seg in segments(template) {
            if seg.starts_with('{') && seg.ends_with('}') && seg.len() > 2 {
                node = node.param.get_or_insert_with(Box::default);
            } else if seg.contains(['{', '}']) {
                return Err(format!(
                    "segment {seg:?} of {template:?} mixes text and a parameter"
                ));
            } else {
                node = node
                    .literal
                    .entry(seg.to_ascii_lowercase().into())
                    .or_default();
            }
        }
        if node.ends.iter().any(|(m, _)| *m == method) {
            return Err(format!(
                "{} {template} is declared twice",
                method.as_ref().map_or("*", |m| m.as_str())
            ));
        }
        node.ends.push((method, op));
        self.len += 1;
        Ok(())
    }

    /// The operation for a method and a (canonical) path. Literal segments win over
    /// parameters; a route for the exact method wins over one for any method.
    pub fn lookup(&self, method: &Method, path: &str) -> Option<&Arc<Operation>> {
        let segs: Vec<&str> = segments(path).collect();
        find(&self.root, &segs, method)
    }
}

fn find<'a>(node: &'a Node, segs: &[&str], method: &Method) -> Option<&'a Arc<Operation>> {
    let Some((first, rest)) = segs.split_first() else {
        return node
            .ends
            .iter()
            // Case-insensitively, like the catalog: servers that upper-case methods (Django,
            // Flask) take `post` for POST, so it must not slip past a POST route.
            .find(|(m, _)| {
                m.as_ref()
                    .is_some_and(|m| m.as_str().eq_ignore_ascii_case(method.as_str()))
            })
            .or_else(|| node.ends.iter().find(|(m, _)| m.is_none()))
            .map(|(_, op)| op);
    };
    let lit = if first.bytes().any(|b| b.is_ascii_uppercase()) {
        node.literal.get(first.to_ascii_lowercase().as_str())
    } else {
        node.literal.get(*first)
    };
    lit.and_then(|n| find(n, rest, method))
        .or_else(|| node.param.as_deref().and_then(|n| find(n, rest, method)))
}

/// All operations by name.
#[derive(Debug)]
pub struct Operations {
    pub by_name: std::collections::BTreeMap<Arc<str>, Arc<Operation>>,
    /// MCP tool names configured as identity-creating (`mcp_identity_tools`).
    pub mcp_identity_tools: std::collections::BTreeSet<String>,
    pub read: Arc<Operation>,
    pub write: Arc<Operation>,
    /// A blind tunnel through the forward proxy (`CONNECT` to a host a tool tunnels).
    pub tunnel: Arc<Operation>,
}

impl Operations {
    /// The operation of a catalog entry.
    pub fn of_catalog(&self, op: &'static crate::catalog::CatalogOp) -> Option<&Arc<Operation>> {
        self.by_name.get(op.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(name: &str) -> Arc<Operation> {
        Arc::new(Operation::new(name, &["write"], None))
    }

    #[test]
    fn templates_match_by_segment() {
        let mut t = RouteTable::default();
        t.insert(
            Some(Method::POST),
            "/repos/{owner}/{repo}/keys",
            op("create_key"),
        )
        .unwrap();
        t.insert(
            Some(Method::GET),
            "/repos/{owner}/{repo}/keys",
            op("list_keys"),
        )
        .unwrap();
        t.insert(None, "/repos/{owner}/{repo}/hooks", op("hooks"))
            .unwrap();
        t.insert(Some(Method::GET), "/repos/acme/special/keys", op("special"))
            .unwrap();
        let name = |m: Method, p: &str| t.lookup(&m, p).map(|o| o.name.to_string());
        assert_eq!(
            name(Method::POST, "/repos/a/b/keys").as_deref(),
            Some("create_key")
        );
        assert_eq!(
            name(Method::POST, "/Repos/a/b/KEYS/").as_deref(),
            Some("create_key")
        );
        assert_eq!(
            name(Method::GET, "/repos/a/b/keys").as_deref(),
            Some("list_keys")
        );
        assert_eq!(
            name(Method::GET, "/repos/acme/special/keys").as_deref(),
            Some("special")
        );
        // The literal branch has no POST: the parameter branch still answers.
        assert_eq!(
            name(Method::POST, "/repos/acme/special/keys").as_deref(),
            Some("create_key")
        );
        assert_eq!(
            name(Method::DELETE, "/repos/a/b/hooks").as_deref(),
            Some("hooks")
        );
        assert_eq!(name(Method::POST, "/repos/a/keys"), None);
        assert_eq!(name(Method::POST, "/repos/a/b/keys/extra"), None);
        assert!(t
            .insert(Some(Method::POST), "/repos/{x}/{y}/keys", op("dup"))
            .is_err());
        assert!(t.insert(Some(Method::POST), "/a/x{y}", op("bad")).is_err());
    }
}

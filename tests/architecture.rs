//! The shape of the code: the modules of the library form no import cycle.
//!
//! Every file under `src/` is a module (`src/a/b.rs` and `src/a/b/mod.rs` are `a::b`);
//! a module depends on another when its code names it or anything in it (`use` items and
//! paths anywhere in its code, `crate::…`, `super::…`, `self::…` and child modules).
//! Test code (`#[cfg(test)]` items) is left out, and so is the crate root (`lib.rs`,
//! which declares every module and re-exports a few). A path is charged to the longest
//! module it names: `crate::pipeline::Decision` depends on `pipeline` (its `mod.rs`),
//! even though the item lives deeper.
//!
//! Run it alone with `cargo test --test architecture`; a cycle is printed module by
//! module.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use syn::visit::Visit;

/// Every module of the library, by path (`["pipeline", "strip"]`), with its file.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<Vec<String>, PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                let mut m = prefix.to_vec();
                m.push(name);
                walk(&p, &m, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let mut m = prefix.to_vec();
                if name != "mod" {
                    m.push(name);
                }
                out.insert(m, p);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, &[], &mut out);
    // The crate root and the binary are not modules of the library's graph.
    out.remove(&Vec::new());
    out.retain(|m, _| m != &["main".to_string()]);
    out
}

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

/// The paths a file names, each as its segments (a `use` tree flattened).
#[derive(Default)]
struct Paths(Vec<Vec<String>>);

impl Paths {
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut v = prefix.clone();
                if n.ident != "self" {
                    v.push(n.ident.to_string());
                }
                self.0.push(v);
            }
            syn::UseTree::Rename(r) => {
                let mut v = prefix.clone();
                v.push(r.ident.to_string());
                self.0.push(v);
            }
            syn::UseTree::Glob(_) => self.0.push(prefix.clone()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }
}

impl<'a> Visit<'a> for Paths {
    fn visit_item(&mut self, i: &'a syn::Item) {
        let attrs = match i {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(m) => &m.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Struct(s) => &s.attrs,
            syn::Item::Enum(e) => &e.attrs,
            syn::Item::Const(c) => &c.attrs,
            syn::Item::Static(s) => &s.attrs,
            _ => return syn::visit::visit_item(self, i),
        };
        if !is_test(attrs) {
            syn::visit::visit_item(self, i);
        }
    }

    fn visit_item_use(&mut self, u: &'a syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    // `pub(super)`, `pub(in crate::x)`: who may see an item, not what it uses.
    fn visit_visibility(&mut self, _: &'a syn::Visibility) {}

    fn visit_path(&mut self, p: &'a syn::Path) {
        self.0
            .push(p.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, p);
    }
}

/// The module a path names from module `from`, if it names one of the library's.
fn target(
    from: &[String],
    path: &[String],
    mods: &BTreeMap<Vec<String>, PathBuf>,
) -> Option<Vec<String>> {
    let (mut base, rest): (Vec<String>, &[String]) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("self") => (from.to_vec(), &path[1..]),
        Some("super") => {
            let mut base = from.to_vec();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            (base, rest)
        }
        // A child module of this one, named by its bare name.
        Some(first) => {
            let mut child = from.to_vec();
            child.push(first.to_string());
            if !mods.contains_key(&child) {
                return None;
            }
            (from.to_vec(), path)
        }
        None => return None,
    };
    let mut found = mods.contains_key(&base).then(|| base.clone());
    for seg in rest {
        base.push(seg.clone());
        if !mods.contains_key(&base) {
            break;
        }
        found = Some(base.clone());
    }
    found.filter(|m| !m.is_empty())
}

fn dependency_graph() -> (DiGraph<String, ()>, BTreeMap<Vec<String>, NodeIndex>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    let mut g = DiGraph::new();
    let nodes: BTreeMap<Vec<String>, NodeIndex> = mods
        .keys()
        .map(|m| (m.clone(), g.add_node(m.join("::"))))
        .collect();
    for (m, file) in &mods {
        let text = std::fs::read_to_string(file).unwrap();
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut paths = Paths::default();
        paths.visit_file(&ast);
        let deps: BTreeSet<Vec<String>> = paths
            .0
            .iter()
            .filter_map(|p| {
                let t = target(m, p, &mods)?;
                if std::env::var_os("KEYGATE_ARCH_PATHS").is_some() && &t != m {
                    println!("{}: {} => {}", m.join("::"), p.join("::"), t.join("::"));
                }
                Some(t)
            })
            .filter(|t| t != m)
            .collect();
        for d in deps {
            g.add_edge(nodes[m], nodes[&d], ());
        }
    }
    (g, nodes)
}

#[test]
fn the_modules_form_no_import_cycle() {
    let (g, _) = dependency_graph();
    let cycles: Vec<Vec<String>> = tarjan_scc(&g)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let mut names: Vec<String> = c.iter().map(|n| g[*n].clone()).collect();
            names.sort();
            names
        })
        .collect();
    if std::env::var_os("KEYGATE_ARCH_EDGES").is_some() {
        for e in g.edge_indices() {
            let (a, b) = g.edge_endpoints(e).unwrap();
            println!("{} -> {}", g[a], g[b]);
        }
    }
    assert!(
        cycles.is_empty(),
        "modules that depend on each other, in a cycle:\n{}",
        cycles
            .iter()
            .map(|c| format!("  {}", c.join(", ")))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The check itself finds a cycle: two modules that name each other.
#[test]
fn a_cycle_is_found() {
    let mods: BTreeMap<Vec<String>, PathBuf> = [
        (vec!["a".to_string()], PathBuf::new()),
        (vec!["b".to_string()], PathBuf::new()),
        (vec!["b".to_string(), "c".to_string()], PathBuf::new()),
    ]
    .into_iter()
    .collect();
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        target(&s(&["a"]), &s(&["crate", "b", "c", "X"]), &mods),
        Some(s(&["b", "c"]))
    );
    assert_eq!(
        target(&s(&["b", "c"]), &s(&["super", "f"]), &mods),
        Some(s(&["b"]))
    );
    assert_eq!(
        target(&s(&["b"]), &s(&["c", "g"]), &mods),
        Some(s(&["b", "c"]))
    );
    assert_eq!(target(&s(&["b"]), &s(&["std", "sync"]), &mods), None);
}

/// Phases are functions of what they need: none reaches for the whole gateway or the
/// request context, which only the driver (`pipeline`) and `audit` (which turns the
/// context into the record) touch.
#[test]
fn phases_take_their_inputs() {
    let (g, nodes) = dependency_graph();
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let gateway = nodes[&s(&["gateway"])];
    let context = nodes[&s(&["pipeline", "context"])];
    let mut wrong = Vec::new();
    for (m, n) in &nodes {
        if m.first().map(String::as_str) != Some("pipeline") || m.len() < 2 {
            continue;
        }
        for to in g.neighbors(*n) {
            let allowed_context = m == &s(&["pipeline", "audit"]);
            if to == gateway || (to == context && !allowed_context) {
                wrong.push(format!("{} uses {}", m.join("::"), g[to]));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

//! Structure the architecture doc promises, checked on the source: the node's modules form no
//! import cycle, and no handler reaches back into the router or the startup code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `module -> modules it names as crate::<module>`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut g = BTreeMap::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "main" || name == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Tests inside a module may use anything; comments name modules without using them.
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let code = code.as_str();
        let mut uses = BTreeSet::new();
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let m: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            // `crate::App` and other re-exports from lib.rs name no module.
            if !m.is_empty() && m != name && m.chars().next().unwrap().is_lowercase() {
                uses.insert(m);
            }
        }
        // `use crate::{a, b::c}` groups.
        let mut rest = code;
        while let Some(i) = rest.find("use crate::{") {
            rest = &rest[i + "use crate::{".len()..];
            let group = &rest[..rest.find("};").unwrap_or(0)];
            for part in group.split(',') {
                let m = part.trim().split("::").next().unwrap_or("").trim().to_owned();
                if !m.is_empty() && m != name && m.chars().next().unwrap().is_lowercase() {
                    uses.insert(m);
                }
            }
        }
        g.insert(name, uses);
    }
    g
}

#[test]
fn the_node_modules_have_no_import_cycle() {
    let g = graph();
    assert!(g.contains_key("router") && g.contains_key("kv"), "{g:?}");
    // Depth-first search; a back edge is a cycle.
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(i) = path.iter().position(|p| p == m) {
            panic!("import cycle: {} -> {m}", path[i..].join(" -> "));
        }
        path.push(m.to_owned());
        for n in g.get(m).into_iter().flatten() {
            visit(n, g, path, done);
        }
        path.pop();
        done.insert(m.to_owned());
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        visit(m, &g, &mut Vec::new(), &mut done);
    }
}

#[test]
fn handlers_never_reach_back_into_the_router_or_startup() {
    let g = graph();
    for handler in
        ["kv", "info", "admin", "join", "backup", "status", "raft_rpc", "auth", "error", "app"]
    {
        let uses = &g[handler];
        for forbidden in ["router", "node", "commands"] {
            assert!(!uses.contains(forbidden), "{handler}.rs uses crate::{forbidden}");
        }
    }
}

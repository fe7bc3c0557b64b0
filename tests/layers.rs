//! The crate's top-level modules depend on each other one way only: the
//! graph of their `crate::` references (outside test code) has no cycle.
//! docs/ARCHITECTURE.md lists the layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level module a source file belongs to (`None` for lib.rs/main.rs).
fn module_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// The top-level modules named in `source` by `crate::NAME` or
/// `use crate::{NAME, ...}`, ignoring comments and `#[cfg(test)]` modules.
fn references(source: &str) -> BTreeSet<String> {
    let code = source.split("#[cfg(test)]").next().unwrap_or("");
    let code: String = code
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let ident = |text: &str| -> String {
        text.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or("");
            for item in group.split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found
}

fn collect(dir: &Path, root: &Path, graph: &mut BTreeMap<String, BTreeSet<String>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, root, graph);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let Some(module) = module_of(path.strip_prefix(root).unwrap()) else {
                continue;
            };
            let mut refs = references(&std::fs::read_to_string(&path).unwrap());
            refs.remove(&module);
            graph.entry(module).or_default().extend(refs);
        }
    }
}

/// A cycle through `start`, if any, as the path of modules.
fn cycle_from(
    graph: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    at: &str,
    path: &mut Vec<String>,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    for next in graph.get(at).into_iter().flatten() {
        if next == start {
            let mut cycle = path.clone();
            cycle.push(start.to_string());
            return Some(cycle);
        }
        if seen.insert(next.clone()) {
            path.push(next.clone());
            if let Some(cycle) = cycle_from(graph, start, next, path, seen) {
                return Some(cycle);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn top_level_modules_have_no_dependency_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    collect(&root, &root, &mut graph);
    assert!(graph.contains_key("wire") && graph.contains_key("node"));
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|module| {
            let mut path = vec![module.clone()];
            cycle_from(&graph, module, module, &mut path, &mut BTreeSet::new())
        })
        .map(|cycle| cycle.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "dependency cycles: {cycles:#?}");
}

#[test]
fn wire_names_no_protocol_type() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let source = std::fs::read_to_string(root.join("wire.rs")).unwrap();
    let refs = references(&source);
    assert!(refs.is_empty(), "wire refers to {refs:?}");
}

#[test]
fn the_checker_sees_a_cycle() {
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), references("use crate::{b, c::X};"));
    graph.insert("b".to_string(), references("fn f() { crate::a::g() }"));
    let mut path = vec!["a".to_string()];
    let cycle = cycle_from(&graph, "a", "a", &mut path, &mut BTreeSet::new());
    assert_eq!(cycle.unwrap(), ["a", "b", "a"]);
}

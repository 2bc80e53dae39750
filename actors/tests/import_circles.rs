//! The layout's one rule, checked: the only import circle among the core's modules is the one
//! among the actors that message each other (session, pair, matchmaker, purge, and for a
//! cluster the cluster matchmaker and the remote ends of chats). Everything
//! else (the hub at the top; context, registry, protocol and the rest below) imports in one
//! direction only, so a module can be read, tested and replaced from below.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module of `src` and the top-level modules it imports (`crate::x`), test
/// code left out.
fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap();
            let module = relative
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let imports = graph.entry(module.clone()).or_default();
            for (at, _) in code.match_indices("crate::") {
                let name: String = code[at + 7..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    imports.insert(name);
                }
            }
        }
    }
    graph
}

/// Modules that can reach themselves through imports, grouped by circle.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(module) = todo.pop() {
            for next in graph.get(&module).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let mut found: Vec<BTreeSet<String>> = Vec::new();
    for module in graph.keys() {
        let from = reach(module);
        if !from.contains(module) {
            continue;
        }
        let circle: BTreeSet<String> = from
            .into_iter()
            .filter(|other| reach(other).contains(module))
            .collect();
        if !found.contains(&circle) {
            found.push(circle);
        }
    }
    found
}

#[test]
fn the_only_import_circle_is_among_the_actors_that_message_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = import_graph(&src);
    assert!(graph.contains_key("session") && graph.contains_key("hub"));
    let actors: BTreeSet<String> = [
        "session",
        "pair",
        "matchmaker",
        "purge",
        "cluster_matchmaker",
        "remote",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(circles(&graph), vec![actors], "import graph: {graph:#?}");
}

#[test]
fn the_server_crate_has_no_import_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../src");
    let graph = import_graph(&src);
    assert!(graph.contains_key("startup") && graph.contains_key("ws"));
    assert_eq!(
        circles(&graph),
        Vec::<BTreeSet<String>>::new(),
        "{graph:#?}"
    );
}

//! The layers of `src/lib.rs`'s `# Layers` list, checked against the code:
//! every `crate::…` path in a module names a module its arrow allows, every
//! module of the crate is in the list, and the arrows form no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The allowed arrows, read from the `# Layers` section of `src/lib.rs`.
fn allowed() -> BTreeMap<String, BTreeSet<String>> {
    let lib = std::fs::read_to_string("src/lib.rs").expect("src/lib.rs");
    let mut in_section = false;
    let mut arrows = BTreeMap::new();
    for line in lib.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            continue;
        };
        let doc = doc.trim();
        if doc.starts_with("# ") {
            in_section = doc == "# Layers";
            continue;
        }
        let Some(item) = doc.strip_prefix("- ").filter(|_| in_section) else {
            continue;
        };
        let (from, to) = item.split_once('→').expect("`from` → `to, …`");
        let names = |s: &str| -> BTreeSet<String> {
            s.split(',')
                .map(|n| n.trim().trim_matches('`').to_owned())
                .filter(|n| !n.is_empty() && !n.starts_with('('))
                .collect()
        };
        arrows.insert(from.trim().trim_matches('`').to_owned(), names(to));
    }
    assert!(!arrows.is_empty(), "no `# Layers` list in src/lib.rs");
    arrows
}

/// The top-level modules a source text names through `crate::`, including
/// grouped imports (`use crate::{a::X, b};`).
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            let mut items = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => items.push(std::mem::take(&mut item)),
                    _ => {}
                }
                if depth == 0 {
                    items.push(std::mem::take(&mut item));
                    break;
                }
                if c != ',' || depth > 1 {
                    item.push(c);
                }
            }
            for i in items {
                let name = ident(i.trim().trim_start_matches('{'));
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn imports_follow_the_layers_written_in_lib_rs() {
    let allowed = allowed();
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    let mut violations = Vec::new();
    for file in files {
        let rel = file.strip_prefix("src").expect("under src");
        let first = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .expect("name");
        let module = first.trim_end_matches(".rs");
        // The binary and the crate root assemble everything.
        if module == "main" || module == "lib" {
            continue;
        }
        let Some(may) = allowed.get(module) else {
            violations.push(format!(
                "module `{module}` is missing from the # Layers list"
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("source");
        for used in crate_paths(&text) {
            if used != module && !may.contains(&used) {
                violations.push(format!(
                    "{}: `{module}` imports `{used}`, which its arrow does not allow",
                    file.display()
                ));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_layers_form_no_cycle() {
    let allowed = allowed();
    // Depth-first search for a back edge.
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for next in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for m in allowed.keys() {
        if let Some(cycle) = visit(m, &allowed, &mut Vec::new(), &mut done) {
            panic!("the layers have a cycle: {}", cycle.join(" → "));
        }
    }
    for targets in allowed.values() {
        for t in targets {
            assert!(
                allowed.contains_key(t),
                "`{t}` is used in an arrow but has none itself"
            );
        }
    }
}

#[test]
fn the_import_reader_sees_grouped_and_nested_paths() {
    let text = "use crate::{config::X, store::{a, b}};\nfn f() { crate::net::describe(); }";
    let found: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(found, vec!["config", "net", "store"]);
}

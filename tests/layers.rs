//! The layers of `src/lib.rs`'s `# Layers` list, checked against the code:
//! every `crate::…` path in a module names a module its arrow allows, every
//! module of the crate is in the list, and the arrows form no cycle; inside
//! the modules, files import each other in one direction only (a file may
//! use its parent module's items: that is the folder's face, not a loop).

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
    if let Some(cycle) = find_cycle(&allowed) {
        panic!("the layers have a cycle: {}", cycle.join(" → "));
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

/// The module path of a source file: `src/store/queries.rs` is
/// `store::queries`, `src/store/mod.rs` is `store`.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix("src").expect("under src");
    let mut parts: Vec<String> = rel
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .map(|c| c.trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// Every path a source text names through `crate::`, `super::` or `self::`,
/// grouped imports expanded, resolved to a path from the crate root.
fn full_paths(text: &str, module: &[String]) -> Vec<Vec<String>> {
    fn tree(s: &str, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
        // Reads `a::b::{c, d::e}` from the start of `s`; returns what it read.
        let mut path = prefix.to_vec();
        let mut i = 0;
        let b = s.as_bytes();
        loop {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            if i > start {
                path.push(s[start..i].to_owned());
            }
            if s[i..].starts_with("::{") {
                i += 3;
                loop {
                    while i < b.len() && (b[i] as char).is_whitespace() {
                        i += 1;
                    }
                    if i >= b.len() || b[i] == b'}' {
                        return i + 1;
                    }
                    i += tree(&s[i..], &path, out);
                    while i < b.len() && b[i] != b',' && b[i] != b'}' {
                        i += 1;
                    }
                    if i < b.len() && b[i] == b',' {
                        i += 1;
                    }
                }
            } else if s[i..].starts_with("::") {
                i += 2;
            } else {
                out.push(path);
                return i;
            }
        }
    }
    let mut out = Vec::new();
    // `super` is the parent of the file's module (for `a/mod.rs`, of `a`).
    let base: Vec<String> = module.to_vec();
    let parent_of_file =
        |levels: usize| -> Vec<String> { base[..base.len().saturating_sub(levels)].to_vec() };
    let mut at = 0;
    while at < text.len() {
        let rest = &text[at..];
        let (prefix, skip) = if rest.starts_with("crate::") {
            (Vec::new(), "crate::".len())
        } else if rest.starts_with("self::") {
            (base.clone(), "self::".len())
        } else if rest.starts_with("super::") {
            let mut levels = 0;
            let mut k = 0;
            while rest[k..].starts_with("super::") {
                levels += 1;
                k += "super::".len();
            }
            (parent_of_file(levels), k)
        } else {
            at += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        };
        // Only at the start of a path, not inside a longer name (`my_crate::`).
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            at += skip;
            continue;
        }
        if let Some(inner) = rest[skip..].strip_prefix('{') {
            let mut i = 0;
            loop {
                let b = inner.as_bytes();
                while i < b.len() && (b[i] as char).is_whitespace() {
                    i += 1;
                }
                if i >= b.len() || b[i] == b'}' {
                    break;
                }
                i += tree(&inner[i..], &prefix, &mut out);
                while i < b.len() && b[i] != b',' && b[i] != b'}' {
                    i += 1;
                }
                if i < b.len() && b[i] == b',' {
                    i += 1;
                }
            }
        } else {
            tree(&rest[skip..], &prefix, &mut out);
        }
        at += skip;
    }
    out
}

#[test]
fn files_import_each_other_one_way() {
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(f)).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for file in &files {
        let from = module_of(file);
        // Comments name paths in links without importing them.
        let text: String = std::fs::read_to_string(file)
            .expect("source")
            .lines()
            .map(|l| l.split_once("//").map_or(l, |(code, _)| code))
            .collect::<Vec<_>>()
            .join("\n");
        for path in full_paths(&text, &from) {
            // The longest prefix that is a file of the crate.
            let Some(to) = (1..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| modules.contains(p))
            else {
                continue;
            };
            // A module and its own parts: a file uses its parent's items (the
            // folder's face) and a parent declares its parts.
            let related = to.starts_with(&from) || from.starts_with(&to);
            if !related {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        let names: Vec<String> = cycle.iter().map(|p| p.join("::")).collect();
        panic!("files import each other in a loop: {}", names.join(" → "));
    }
}

/// A loop in `g`, if it has one (depth-first search for a back edge).
fn find_cycle<T: Ord + Clone>(g: &BTreeMap<T, BTreeSet<T>>) -> Option<Vec<T>> {
    fn visit<T: Ord + Clone>(
        m: &T,
        g: &BTreeMap<T, BTreeSet<T>>,
        path: &mut Vec<T>,
        done: &mut BTreeSet<T>,
    ) -> Option<Vec<T>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m.clone());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.clone());
        for next in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.clone());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|m| visit(m, g, &mut Vec::new(), &mut done))
}

#[test]
fn the_file_reader_resolves_relative_and_grouped_paths() {
    let module = vec!["store".to_owned(), "queries".to_owned()];
    let text = "use super::{held::Held, batch::{self, Op}};\nuse crate::ids::PushKey;\nfn f() { super::super::net::x(); }";
    let found: Vec<String> = full_paths(text, &module)
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(
        found,
        [
            "store::held::Held",
            "store::batch::self",
            "store::batch::Op",
            "ids::PushKey",
            "net::x"
        ]
    );
}

#[test]
fn the_import_reader_sees_grouped_and_nested_paths() {
    let text = "use crate::{config::X, store::{a, b}};\nfn f() { crate::net::describe(); }";
    let found: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(found, vec!["config", "net", "store"]);
}

//! The module map in docs/design.md ("Module map") is the only statement of which module may
//! use which. This test reads it and every source file: an arrow (`crate::…` outside a file's
//! `#[cfg(test)]` tests) the map does not allow, a module the map does not list, a cycle in the
//! map, or an I/O client named in a module the map calls pure, fails it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// I/O clients a pure module must not name.
const IO_CLIENTS: [&str; 5] = ["rdkafka", "mongodb", "sqlx", "axum", "tokio::net"];

struct Row {
    may_use: BTreeSet<String>,
    pure: bool,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The table under "## Module map" in docs/design.md.
fn module_map() -> BTreeMap<String, Row> {
    let design = std::fs::read_to_string(root().join("docs/design.md")).unwrap_or_else(|e| panic!("docs/design.md: {e}"));
    let start = design.find("## Module map").unwrap_or_else(|| panic!("docs/design.md has no \"## Module map\" section"));
    let mut map = BTreeMap::new();
    let mut everything = false;
    for line in design[start..].lines().skip(1).take_while(|l| !l.starts_with("## ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `module` | job | may use | pure |
        if cells.len() < 6 || !cells[1].starts_with('`') {
            continue;
        }
        let name = cells[1].trim_matches('`').to_owned();
        let may_use: BTreeSet<String> = if cells[3] == "every module above" {
            everything = true;
            map.keys().cloned().collect()
        } else {
            cells[3].split(',').map(|c| c.trim().trim_matches('`').to_owned()).filter(|c| !c.is_empty()).collect()
        };
        let _ = map.insert(name, Row { may_use, pure: cells[4] == "pure" });
    }
    assert!(map.len() > 10 && everything, "the module map in docs/design.md did not parse: {} rows", map.len());
    map
}

/// The map's unit a path `a::b::…` (below `crate::`) belongs to: the longest listed prefix.
fn unit_of(path: &[&str], map: &BTreeMap<String, Row>) -> String {
    for n in (1..=path.len().min(2)).rev() {
        let candidate = path[..n].join("::");
        if map.contains_key(&candidate) {
            return candidate;
        }
    }
    path[0].to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::x::y` path in `code` (grouped `crate::{x, y}` imports included).
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        // `meshguard_crate::…` or `some_crate::…` are other names.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let segments: Vec<String> = item.trim().split("::").map(|s| s.trim().to_owned()).take_while(|s| is_ident(s)).collect();
                if !segments.is_empty() {
                    out.push(segments);
                }
            }
            continue;
        }
        // An identifier, then more only while `::` follows.
        let mut segments = Vec::new();
        let mut tail = rest;
        loop {
            let ident: String = tail.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !is_ident(&ident) {
                break;
            }
            tail = &tail[ident.len()..];
            segments.push(ident);
            match tail.strip_prefix("::") {
                Some(more) => tail = more,
                None => break,
            }
        }
        if !segments.is_empty() {
            out.push(segments);
        }
    }
    out
}

fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The code of a file without its `#[cfg(test)]` tests (by convention the last item) and
/// without comments.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

#[test]
fn every_arrow_is_allowed_by_the_module_map() {
    let map = module_map();
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut refused = Vec::new();
    let mut unlisted = BTreeSet::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap_or(file).with_extension("");
        let segments: Vec<&str> = rel.iter().filter_map(|s| s.to_str()).filter(|s| *s != "mod").collect();
        if matches!(segments.as_slice(), ["lib"] | ["main"]) {
            continue;
        }
        let unit = unit_of(&segments, &map);
        let Some(row) = map.get(&unit) else {
            let _ = unlisted.insert(unit);
            continue;
        };
        let code = code_of(file);
        for path in crate_paths(&code) {
            let refs: Vec<&str> = path.iter().map(String::as_str).collect();
            let target = unit_of(&refs, &map);
            if target != unit && !row.may_use.contains(&target) {
                refused.push(format!("{}: {unit} → crate::{}", file.display(), path.join("::")));
            }
        }
        if row.pure {
            for client in IO_CLIENTS {
                let named = code.lines().any(|l| l.contains(&format!("{client}::")) || l.trim() == format!("use {client};"));
                if named {
                    refused.push(format!("{}: {unit} is pure in the module map but names {client}", file.display()));
                }
            }
        }
    }
    assert!(unlisted.is_empty(), "modules missing from the module map in docs/design.md: {unlisted:?}");
    assert!(refused.is_empty(), "arrows the module map in docs/design.md does not allow:\n{}", refused.join("\n"));
}

#[test]
fn the_module_map_has_no_cycle() {
    let map = module_map();
    // Depth-first search; a module seen again on the current path is a cycle.
    fn visit<'m>(m: &'m str, map: &'m BTreeMap<String, Row>, path: &mut Vec<&'m str>, done: &mut BTreeSet<&'m str>) {
        if done.contains(m) {
            return;
        }
        if let Some(at) = path.iter().position(|p| *p == m) {
            panic!("cycle in the module map: {} → {m}", path[at..].join(" → "));
        }
        path.push(m);
        if let Some(row) = map.get(m) {
            for next in &row.may_use {
                visit(next, map, path, done);
            }
        }
        let _ = path.pop();
        let _ = done.insert(m);
    }
    let mut done = BTreeSet::new();
    for m in map.keys() {
        visit(m, &map, &mut Vec::new(), &mut done);
    }
    for (m, row) in &map {
        for used in &row.may_use {
            assert!(map.contains_key(used), "{m} may use {used}, which the module map does not list");
        }
    }
}

#[test]
fn the_reader_finds_arrows_in_every_form() {
    let code = "use crate::sink::Sinks;\nuse crate::{config::Settings, error};\nlet x = crate::reconcile::claim(a);\nmy_crate::nope();";
    let found: Vec<String> = crate_paths(code).iter().map(|p| p.join("::")).collect();
    assert_eq!(found, ["sink", "config", "error", "reconcile::claim"].map(String::from));
}

//! The crate's layers, as `src/lib.rs` draws them: a module may use only the modules of
//! earlier layers and those listed before it in its own. Any other `crate::` path in a
//! module's files (its tests included) fails here, naming the file and the path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Each module named in `lib.rs`'s `# Layers` list: (layer, position within the layer).
fn layers(lib: &str) -> HashMap<String, (usize, usize)> {
    let mut ranks = HashMap::new();
    let start = lib.find("//! # Layers").expect("lib.rs has a `# Layers` section");
    for line in lib[start..].lines().take_while(|l| l.starts_with("//!")) {
        let text = line.trim_start_matches("//!").trim();
        let Some((number, rest)) = text.split_once(". ") else { continue };
        let Ok(layer) = number.parse::<usize>() else { continue };
        // The modules are the [`name`] links before any parenthesis.
        let rest = rest.split('(').next().unwrap_or(rest);
        for (position, module) in rest.split("[`").skip(1).filter_map(|m| m.split_once("`]")).enumerate() {
            ranks.insert(module.0.to_owned(), (layer, position));
        }
    }
    ranks
}

/// Every `crate::module` a file's code names (comments left out).
fn used_modules(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut used = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            used.extend(group.split(',').filter_map(|p| p.trim().split("::").next()).map(str::to_owned));
        } else {
            used.push(rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect());
        }
    }
    used.retain(|m| !m.is_empty());
    used
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The upward uses in the crate at `src`: "file: module (layer) uses module (layer)".
fn violations(src: &Path) -> Vec<String> {
    let ranks = layers(&std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs"));
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut found = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("under src");
        let top = relative.components().next().expect("a component").as_os_str().to_string_lossy();
        let top = top.trim_end_matches(".rs");
        if top == "lib" || top == "bin" {
            continue;
        }
        let Some(&own) = ranks.get(top) else {
            found.push(format!("{}: module `{top}` is in no layer of lib.rs", relative.display()));
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read");
        for used in used_modules(&text) {
            if used == top {
                continue;
            }
            match ranks.get(&used) {
                Some(&other) if other < own => {}
                Some(other) => found.push(format!(
                    "{}: `{top}` (layer {}) uses `crate::{used}` (layer {})",
                    relative.display(),
                    own.0,
                    other.0
                )),
                None => {
                    found.push(format!("{}: `crate::{used}` is in no layer of lib.rs", relative.display()))
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn modules_use_only_earlier_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(found.is_empty(), "upward uses:\n{}", found.join("\n"));
}

#[test]
fn an_upward_use_is_caught() {
    let dir = std::env::temp_dir().join(format!("accel-layers-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("cache")).unwrap();
    std::fs::write(
        dir.join("lib.rs"),
        "//! # Layers\n//!\n//! 1. leaves: [`body`]\n//! 2. components: [`cache`], [`limit`]\n\
         //! 3. assembly: [`proxy`]\n",
    )
    .unwrap();
    std::fs::write(dir.join("body.rs"), "// crate::proxy in a comment is no use\n").unwrap();
    std::fs::write(dir.join("limit.rs"), "use crate::{body, cache::Cache};\n").unwrap();
    std::fs::write(dir.join("cache/mod.rs"), "use crate::body::Body;\nfn f(p: &crate::proxy::Proxy) {}\n")
        .unwrap();
    let found = violations(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(found, ["cache/mod.rs: `cache` (layer 2) uses `crate::proxy` (layer 3)"]);
}

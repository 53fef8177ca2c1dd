//! Every configuration in `deploy/` passes `accel check` where it runs, and none is missed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::{check, root};

/// Configurations whose rules sit next to them, checked where they are (as `.ci/run` does).
pub const STANDALONE: [&str; 4] = [
    "deploy/accel.toml",
    "deploy/cluster/accel.toml",
    "deploy/cluster/edge.toml",
    "deploy/docker/accel.toml",
];

#[test]
fn the_standalone_configs_pass_accel_check() {
    for config in STANDALONE {
        check(&root().join(config));
    }
}

/// Every `.toml` under `deploy/`: (sidecar configurations, rules files), told apart by the
/// `[[route]]` tables rules files have.
fn shipped_toml() -> (BTreeSet<PathBuf>, BTreeSet<PathBuf>) {
    let mut configs = BTreeSet::new();
    let mut rules = BTreeSet::new();
    let mut dirs = vec![root().join("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read deploy/") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).expect("read a toml file");
                let table: toml::Table =
                    text.parse().unwrap_or_else(|e| panic!("{}: not TOML: {e}", path.display()));
                let path = path.canonicalize().expect("canonical");
                if table.contains_key("route") {
                    rules.insert(path)
                } else {
                    configs.insert(path)
                };
            }
        }
    }
    (configs, rules)
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_config_and_rules_file_in_deploy_is_checked() {
    let (configs, rules) = shipped_toml();
    let mut checked_configs = BTreeSet::new();
    let mut checked_rules = BTreeSet::new();
    for config in STANDALONE {
        let path = root().join(config);
        let (_, loaded) = check(&path);
        checked_configs.insert(canonical(&path));
        checked_rules.extend(loaded.files.iter().map(|f| canonical(f)));
    }
    for sources in [crate::compose::checked_sources(), crate::k8s::checked_sources()] {
        for source in sources {
            if source.is_dir() {
                for entry in std::fs::read_dir(&source).expect("read a mounted directory") {
                    checked_rules.insert(canonical(&entry.expect("an entry").path()));
                }
            } else if configs.contains(&canonical(&source)) {
                checked_configs.insert(canonical(&source));
            } else {
                checked_rules.insert(canonical(&source));
            }
        }
    }
    let unchecked: Vec<_> = configs.difference(&checked_configs).collect();
    assert!(unchecked.is_empty(), "configs in deploy/ that no check loads: {unchecked:?}");
    let unused: Vec<_> = rules.difference(&checked_rules).collect();
    assert!(unused.is_empty(), "rules files in deploy/ that no checked config loads: {unused:?}");
}

#[test]
fn the_kubernetes_rules_are_the_cluster_rules() {
    assert_eq!(
        crate::read("deploy/k8s/rules/platform.toml"),
        crate::read("deploy/cluster/rules/platform.toml"),
        "deploy/k8s/rules/platform.toml is a copy of deploy/cluster/rules/platform.toml (kustomize \
         reads only files under its directory): copy it again"
    );
}

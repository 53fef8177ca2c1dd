//! What `deploy/` and `monitoring/` ship, checked without a container engine or a cluster:
//!
//! - [`configs`]: every configuration in `deploy/` passes `accel check` (the library call it
//!   makes), in the layout it runs in, and none is left unchecked;
//! - [`compose`]: `deploy/compose.yaml` parsed into typed services (a misspelt key fails),
//!   every mounted file exists, the configs as mounted pass `accel check`, ports agree;
//! - [`k8s`]: the kustomization's manifests deserialized into `k8s-openapi` objects and
//!   serialized back without losing a field, the ConfigMaps' configs pass `accel check`,
//!   probes, ports and the grace period agree with them;
//! - [`configmap`]: a ConfigMap update as the kubelet makes it (a symlink swap) reloads rules;
//! - [`systemd`]: `systemd-analyze verify` on the unit, when the tool exists;
//! - [`metrics`]: every metric name an alert, a dashboard panel or `docs/metrics.md` uses
//!   exists in a real `/metrics` scrape, and every one scraped is documented.

mod compose;
mod configmap;
mod configs;
mod k8s;
mod metrics;
mod systemd;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The repository root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A file of the repository, read whole; panics naming it when it cannot be read.
fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Loads a configuration and its rules as `accel check` does; panics with every problem.
fn check(config: &Path) -> (accel::config::Config, accel::config::RuleSet) {
    match accel::sidecar::load(Some(config)) {
        Ok((config_loaded, rules)) => {
            assert!(!rules.routes.is_empty(), "{}: accel check finds no routes", config.display());
            (config_loaded, rules)
        }
        Err(problems) => panic!("{}: accel check fails:\n{problems}", config.display()),
    }
}

/// The port of a listener or endpoint address (`host:port`).
fn port_of(addr: &str) -> u16 {
    let (_, port) = addr.rsplit_once(':').unwrap_or_else(|| panic!("{addr:?} has no port"));
    port.parse().unwrap_or_else(|_| panic!("{addr:?}: the port is not a number"))
}

/// A directory under the system's temp directory, removed on drop: the root of a container's
/// or pod's file system as far as its configuration goes.
#[derive(Debug)]
struct Layout(PathBuf);

impl Layout {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "accel-deploy-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temp dir");
        Self(path)
    }

    /// Where the absolute container path `target` is in this layout.
    fn at(&self, target: &str) -> PathBuf {
        self.0.join(target.trim_start_matches('/'))
    }

    /// Places the host file or directory `source` at the container path `target`.
    fn mount(&self, source: &Path, target: &str) {
        copy(source, &self.at(target));
    }

    /// Writes `contents` at the container path `target`.
    fn write(&self, target: &str, contents: &[u8]) {
        let path = self.at(target);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create the directory");
        std::fs::write(&path, contents).expect("write the file");
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy(source: &Path, target: &Path) {
    if source.is_dir() {
        std::fs::create_dir_all(target).expect("create the directory");
        for entry in std::fs::read_dir(source).expect("read the directory") {
            let entry = entry.expect("a directory entry");
            copy(&entry.path(), &target.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(target.parent().expect("a parent")).expect("create the directory");
        std::fs::copy(source, target).unwrap_or_else(|e| panic!("copying {}: {e}", source.display()));
    }
}

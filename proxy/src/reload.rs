//! Reload: on SIGHUP and whenever `accel.toml`, a rules file (or a file matching a rules
//! glob) or a TLS certificate or key changes, all are read again ([`Proxy::reload`]). A valid configuration is swapped in
//! atomically, its start-only settings named in a warning (they wait for a restart); an
//! invalid one is logged, counted as `accel_config_reloads_total{result="error"}`, and the
//! running configuration and rules keep serving.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_mini::{DebounceEventResult, new_debouncer, notify::RecursiveMode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::mpsc;

use crate::proxy::Proxy;

/// Reloads and logs the result.
pub fn reload_now(proxy: &Proxy, why: &str) {
    match proxy.reload() {
        Ok(reloaded) => {
            tracing::info!(routes = reloaded.routes, trigger = why, "configuration reloaded");
            if !reloaded.restart.is_empty() {
                let names: Vec<&str> = reloaded.restart.iter().map(|s| s.as_str()).collect();
                tracing::warn!(
                    trigger = why,
                    "restart needed for: {}; these keep their running values, the rest applied",
                    names.join(", ")
                );
            }
        }
        Err(problems) => {
            tracing::error!(
                trigger = why,
                "reload rejected; the running configuration and rules stay:\n{problems}"
            );
        }
    }
}

/// Watches for reload triggers until `shutdown` completes.
pub async fn run(proxy: Arc<Proxy>, shutdown: impl Future<Output = ()>) {
    Reloader::start(&proxy).run(proxy, shutdown).await;
}

/// The reload triggers (SIGHUP and the watcher of `accel.toml` and the rules files), already
/// listening.
///
/// Starting it is synchronous so that the sidecar can have it watching before it serves: a
/// change made once the proxy answers is never missed.
pub struct Reloader {
    rx: mpsc::Receiver<()>,
    /// `accel.toml` and the TLS files (their paths as globs, escaped) and the rules globs.
    watched: Vec<String>,
    /// The watched files as last seen: a file event reloads only when they differ (reading
    /// the files to reload them is itself an event that must not reload again).
    seen: Fingerprint,
    /// File events handled, by what they led to.
    events: FileEvents,
    watcher: Option<notify_debouncer_mini::Debouncer<notify::RecommendedWatcher>>,
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").field("watching", &self.watcher.is_some()).finish_non_exhaustive()
    }
}

impl Reloader {
    /// Starts watching `accel.toml`, the rules files and the TLS certificates and keys the
    /// listener started with, and listening for SIGHUP. Needs a Tokio runtime.
    pub fn start(proxy: &Proxy) -> Self {
        let (tx, rx) = mpsc::channel::<()>(1);
        let watched = watched(proxy);
        let watcher = watch_files(proxy.config_path(), proxy.rules_globs(), &tls_files(proxy), tx);
        let seen = Fingerprint::of(&watched);
        let events = FileEvents::register(&proxy.metrics);
        #[cfg(unix)]
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        Self {
            rx,
            watched,
            seen,
            events,
            watcher,
            #[cfg(unix)]
            hangup,
        }
    }

    /// Reloads `proxy` on every trigger until `shutdown` completes.
    pub async fn run(self, proxy: Arc<Proxy>, shutdown: impl Future<Output = ()>) {
        let Self {
            mut rx,
            watched,
            mut seen,
            events,
            watcher,
            #[cfg(unix)]
            mut hangup,
        } = self;
        tokio::pin!(shutdown);
        loop {
            #[cfg(unix)]
            let sighup = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let sighup = std::future::pending::<Option<()>>();
            tokio::select! {
                () = &mut shutdown => break,
                Some(()) = sighup => reload_now(&proxy, "sighup"),
                Some(()) = rx.recv() => {
                    let changed = seen.update(&watched);
                    if changed {
                        reload_now(&proxy, "file change");
                    }
                    // Counted once handled: a count that follows an event means it is done with.
                    events.count(changed);
                }
            }
        }
        drop(watcher);
    }
}

/// `accel_config_file_events_total`: batches of file events the watcher handled, by whether
/// the files had changed (`reload`) or not (`unchanged`: a file read, touched or rewritten the
/// same).
#[derive(Debug, Clone)]
struct FileEvents(Family<EventLabels, Counter>);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    result: &'static str,
}

impl FileEvents {
    /// Registers the family, both results shown from the start (at 0).
    fn register(metrics: &crate::metrics::Metrics) -> Self {
        let family = metrics.family(
            "config_file_events",
            "Batches of file events the configuration watcher handled, by result (reload, unchanged)",
            Family::default,
        );
        for result in ["reload", "unchanged"] {
            let _ = family.get_or_create(&EventLabels { result });
        }
        Self(family)
    }

    fn count(&self, changed: bool) {
        self.0.get_or_create(&EventLabels { result: if changed { "reload" } else { "unchanged" } }).inc();
    }
}

/// The globs the watcher follows: the paths of `accel.toml` and the TLS files (escaped, so
/// each matches only itself) and the rules globs.
fn watched(proxy: &Proxy) -> Vec<String> {
    let files = proxy.config_path().map(Path::to_path_buf).into_iter().chain(tls_files(proxy));
    let files = files.map(|path| glob::Pattern::escape(&path.to_string_lossy()));
    files.chain(proxy.rules_globs().iter().cloned()).collect()
}

/// The TLS certificates and keys the listener serves now (none without a TLS listener).
fn tls_files(proxy: &Proxy) -> Vec<PathBuf> {
    proxy.tls.as_ref().map(|live| live.current().files().to_vec()).unwrap_or_default()
}

/// What the watched files look like from outside: every file the globs match, with its
/// identity (its inode, on Unix), length and modification time. Taken with `stat` only, which
/// (unlike reading) raises no file event.
///
/// The identity tells a file replaced by another (renamed over it, as editors, configuration
/// managers and Kubernetes do) from the one before, also when both have the same length and
/// time: the kernel keeps file times at its clock tick, so two writes a few milliseconds
/// apart can carry the same one. (A file rewritten in place within one tick, to the same
/// length, still looks unchanged.)
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint(Vec<(PathBuf, u64, u64, Option<std::time::SystemTime>)>);

impl Fingerprint {
    fn of(globs: &[String]) -> Self {
        let mut files: Vec<_> = globs
            .iter()
            .filter_map(|g| glob::glob(g).ok())
            .flatten()
            .filter_map(Result::ok)
            .map(|path| {
                let meta = std::fs::metadata(&path).ok();
                let identity = meta.as_ref().map_or(0, identity);
                let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
                let modified = meta.and_then(|m| m.modified().ok());
                (path, identity, len, modified)
            })
            .collect();
        files.sort();
        Self(files)
    }

    /// Takes the fingerprint of `globs` again: true when it differs from this one (a file
    /// event that calls for a reload), which it then becomes.
    fn update(&mut self, globs: &[String]) -> bool {
        let now = Self::of(globs);
        let changed = now != *self;
        *self = now;
        changed
    }
}

/// A file's identity on its file system: its inode.
#[cfg(unix)]
fn identity(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

/// Elsewhere no identity: length and time alone.
#[cfg(not(unix))]
fn identity(_: &std::fs::Metadata) -> u64 {
    0
}

/// Watches the directory of `accel.toml` (`config`), those of the `rules` globs and those of
/// the `tls` files (editors replace files, so watching the files themselves would miss
/// changes). Events are debounced and filtered to matching paths, except that any event in a
/// TLS file's directory counts: Kubernetes replaces a mounted secret by swapping a `..data`
/// symlink, an event that names no certificate. (An event only leads to a reload when the
/// files' fingerprint changed.)
fn watch_files(
    config: Option<&Path>,
    rules: &[String],
    tls: &[PathBuf],
    tx: mpsc::Sender<()>,
) -> Option<notify_debouncer_mini::Debouncer<notify::RecommendedWatcher>> {
    // The watcher reports absolute paths: compare them with absolute globs, else rules given
    // relative to a relative `--config` path would never match.
    let absolute = |path: &Path| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let globs: Vec<String> =
        rules.iter().map(|g| absolute(Path::new(g)).to_string_lossy().into_owned()).collect();
    let config = config.map(absolute);
    let mut patterns: Vec<glob::Pattern> = globs.iter().filter_map(|g| glob::Pattern::new(g).ok()).collect();
    patterns.extend(
        config.iter().filter_map(|c| glob::Pattern::new(&glob::Pattern::escape(&c.to_string_lossy())).ok()),
    );
    let mut tls_dirs: Vec<PathBuf> =
        tls.iter().filter_map(|f| absolute(f).parent().map(Path::to_path_buf)).collect();
    tls_dirs.sort();
    tls_dirs.dedup();
    let in_tls_dir = tls_dirs.clone();
    let matches = move |path: &Path| {
        patterns.iter().any(|p| p.matches_path(path))
            || path.parent().is_some_and(|d| in_tls_dir.iter().any(|t| t == d))
    };
    let mut debouncer = new_debouncer(Duration::from_millis(200), move |result: DebounceEventResult| {
        if let Ok(events) = result
            && events.iter().any(|e| matches(&e.path))
        {
            let _ = tx.try_send(());
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "cannot watch the configuration files; reload with SIGHUP"))
    .ok()?;
    let mut dirs: Vec<PathBuf> = globs.iter().map(|g| glob_base(g)).collect();
    dirs.sort();
    dirs.dedup();
    // The directories of `accel.toml` and the TLS files, alone: they may hold much else (never
    // watched recursively).
    let mut alone: Vec<PathBuf> =
        config.as_deref().and_then(Path::parent).map(Path::to_path_buf).into_iter().collect();
    alone.extend(tls_dirs);
    alone.sort();
    alone.dedup();
    alone.retain(|dir| !dirs.iter().any(|rules| dir.starts_with(rules)));
    let modes = dirs.into_iter().map(|d| (d, RecursiveMode::Recursive));
    for (dir, mode) in modes.chain(alone.into_iter().map(|d| (d, RecursiveMode::NonRecursive))) {
        if let Err(e) = debouncer.watcher().watch(&dir, mode) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch a configuration directory; reload with SIGHUP");
        }
    }
    Some(debouncer)
}

/// The directory part of a glob before its first wildcard.
fn glob_base(pattern: &str) -> PathBuf {
    let mut base = PathBuf::new();
    for component in Path::new(pattern).components() {
        let text = component.as_os_str().to_string_lossy();
        if text.contains(['*', '?', '[']) {
            break;
        }
        base.push(component);
    }
    if base.as_os_str() == pattern {
        base = base.parent().map(Path::to_path_buf).unwrap_or_default();
    }
    if base.as_os_str().is_empty() { PathBuf::from(".") } else { base }
}

#[cfg(test)]
mod tests {
    use super::{Fingerprint, glob_base};
    use std::path::PathBuf;

    /// A file event reloads only when the files changed: reading them (as a reload does) is no
    /// change, so one edit is one reload.
    #[test]
    fn only_a_change_of_the_watched_files_is_a_reload() {
        let dir = std::env::temp_dir().join(format!("accel-reload-fingerprint-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("rules")).unwrap();
        let config = dir.join("accel.toml");
        std::fs::write(&config, "[log]\naccess = false\n").unwrap();
        std::fs::write(dir.join("rules/a.toml"), "").unwrap();
        let watched = vec![
            glob::Pattern::escape(&config.to_string_lossy()),
            dir.join("rules/*.toml").to_string_lossy().into_owned(),
        ];
        let mut seen = Fingerprint::of(&watched);
        assert_eq!(seen.0.len(), 2, "accel.toml and the rules file: {seen:?}");

        std::fs::read_to_string(&config).unwrap();
        std::fs::read_to_string(dir.join("rules/a.toml")).unwrap();
        assert!(!seen.update(&watched), "reading is no change");

        std::fs::write(&config, "[log]\naccess = true\n").unwrap();
        assert!(seen.update(&watched), "accel.toml changed");
        assert!(!seen.update(&watched), "the same change is one reload");

        std::fs::write(dir.join("rules/b.toml"), "").unwrap();
        assert!(seen.update(&watched), "a new rules file");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A rules file replaced by a rename (as editors and configuration managers write) with
    /// one of the same length and the same modification time (two writes within the kernel's
    /// clock tick) is a change.
    #[test]
    #[cfg(unix)]
    fn a_file_replaced_by_one_of_the_same_length_and_time_is_a_change() {
        let dir = std::env::temp_dir().join(format!("accel-reload-replaced-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rules = dir.join("rules.toml");
        std::fs::write(&rules, "old").unwrap();
        let watched = vec![dir.join("*.toml").to_string_lossy().into_owned()];
        let mut seen = Fingerprint::of(&watched);

        let staging = dir.join("rules.staging");
        std::fs::write(&staging, "new").unwrap();
        let modified = std::fs::metadata(&rules).unwrap().modified().unwrap();
        std::fs::File::options().write(true).open(&staging).unwrap().set_modified(modified).unwrap();
        std::fs::rename(&staging, &rules).unwrap();

        assert!(seen.update(&watched), "the file was replaced");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_base_of_a_glob_is_its_literal_directory() {
        assert_eq!(glob_base("rules/*.toml"), PathBuf::from("rules"));
        assert_eq!(glob_base("*.toml"), PathBuf::from("."));
    }
}

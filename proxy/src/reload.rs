//! Rules reload: on SIGHUP and whenever a rules file (or a file matching a rules glob) changes.
//! A valid set is swapped in atomically; an invalid one is logged, counted as
//! `accel_config_reloads_total{result="error"}`, and the running rules keep serving.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_mini::{DebounceEventResult, new_debouncer, notify::RecursiveMode};
use tokio::sync::mpsc;

use crate::proxy::Proxy;

/// Reloads and logs the result.
pub fn reload_now(proxy: &Proxy, why: &str) {
    match proxy.reload() {
        Ok(routes) => tracing::info!(routes, trigger = why, "rules reloaded"),
        Err(problems) => {
            tracing::error!(trigger = why, "rules reload rejected; the running rules stay:\n{problems}");
        }
    }
}

/// Watches for reload triggers until `shutdown` completes.
pub async fn run(proxy: Arc<Proxy>, shutdown: impl Future<Output = ()>) {
    Reloader::start(&proxy).run(proxy, shutdown).await;
}

/// The reload triggers (SIGHUP and the rules files watcher), already listening.
///
/// Starting it is synchronous so that the sidecar can have it watching before it serves: a
/// rules change made once the proxy answers is never missed.
pub struct Reloader {
    rx: mpsc::Receiver<()>,
    /// The rules files as last seen by the watcher: a file event reloads only when they differ
    /// (reading the files to reload them is itself an event that must not reload again).
    seen: Fingerprint,
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
    /// Starts watching the rules files and listening for SIGHUP. Needs a Tokio runtime.
    pub fn start(proxy: &Proxy) -> Self {
        let (tx, rx) = mpsc::channel::<()>(1);
        let watcher = watch_files(proxy, tx);
        let seen = Fingerprint::of(proxy.rules_globs());
        #[cfg(unix)]
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        Self {
            rx,
            seen,
            watcher,
            #[cfg(unix)]
            hangup,
        }
    }

    /// Reloads `proxy` on every trigger until `shutdown` completes.
    pub async fn run(self, proxy: Arc<Proxy>, shutdown: impl Future<Output = ()>) {
        let Self {
            mut rx,
            mut seen,
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
                    let now = Fingerprint::of(proxy.rules_globs());
                    if now != seen {
                        seen = now;
                        reload_now(&proxy, "file change");
                    }
                }
            }
        }
        drop(watcher);
    }
}

/// What the rules files look like from outside: every file the globs match, with its length
/// and modification time. Taken with `stat` only, which (unlike reading) raises no file event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint(Vec<(PathBuf, u64, Option<std::time::SystemTime>)>);

impl Fingerprint {
    fn of(globs: &[String]) -> Self {
        let mut files: Vec<_> = globs
            .iter()
            .filter_map(|g| glob::glob(g).ok())
            .flatten()
            .filter_map(Result::ok)
            .map(|path| {
                let meta = std::fs::metadata(&path).ok();
                let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
                let modified = meta.and_then(|m| m.modified().ok());
                (path, len, modified)
            })
            .collect();
        files.sort();
        Self(files)
    }
}

/// Watches the directories of the rules globs (editors replace files, so watching the files
/// themselves would miss changes). Events are debounced and filtered to matching paths.
fn watch_files(
    proxy: &Proxy,
    tx: mpsc::Sender<()>,
) -> Option<notify_debouncer_mini::Debouncer<notify::RecommendedWatcher>> {
    // The watcher reports absolute paths: compare them with absolute globs, else rules given
    // relative to a relative `--config` path would never match.
    let globs: Vec<String> = proxy
        .rules_globs()
        .iter()
        .map(|g| std::path::absolute(g).map_or_else(|_| g.clone(), |p| p.to_string_lossy().into_owned()))
        .collect();
    let patterns: Vec<glob::Pattern> = globs.iter().filter_map(|g| glob::Pattern::new(g).ok()).collect();
    let matches = {
        let patterns = patterns.clone();
        move |path: &Path| patterns.iter().any(|p| p.matches_path(path))
    };
    let mut debouncer = new_debouncer(Duration::from_millis(200), move |result: DebounceEventResult| {
        if let Ok(events) = result
            && events.iter().any(|e| matches(&e.path))
        {
            let _ = tx.try_send(());
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "cannot watch rules files; reload with SIGHUP"))
    .ok()?;
    let mut dirs: Vec<PathBuf> = globs.iter().map(|g| glob_base(g)).collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        if let Err(e) = debouncer.watcher().watch(&dir, RecursiveMode::Recursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch rules directory; reload with SIGHUP");
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
    use super::glob_base;
    use std::path::PathBuf;

    #[test]
    fn the_base_of_a_glob_is_its_literal_directory() {
        assert_eq!(glob_base("rules/*.toml"), PathBuf::from("rules"));
        assert_eq!(glob_base("*.toml"), PathBuf::from("."));
    }
}

//! A real browser for pages the proxy serves: Debian's headless `chromium`, run once per
//! question. Like the other services, an absent `chromium` skips the test (printing
//! `SKIPPED: …`) unless `ACCEL_REQUIRE_SERVICES=1`.

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

/// The flags every run takes: no sandbox (tests run as root), no GPU, no phoning home.
const FLAGS: [&str; 6] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
];

/// How long the page's scripts may run (virtual time: fetches and timers, not wall clock)
/// before the DOM is read or the picture taken.
const SCRIPT_BUDGET_MS: u32 = 5_000;

/// A headless Chromium.
#[derive(Debug, Clone)]
pub struct Chromium {
    program: String,
}

/// Finds `chromium` (or `$ACCEL_CHROMIUM`); `None` after printing why when it is absent.
pub fn require_chromium() -> Option<Chromium> {
    let program = std::env::var("ACCEL_CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
    match std::process::Command::new(&program).arg("--version").output() {
        Ok(out) if out.status.success() => Some(Chromium { program }),
        Ok(out) => crate::services::absent(&format!(
            "{program} --version failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => {
            crate::services::absent(&format!("{program} is not installed ({e}); apt-get install chromium"))
        }
    }
}

impl Chromium {
    /// The DOM of `url` once its scripts had their budget.
    pub async fn dom(&self, url: &str) -> String {
        let out = self.run(&["--dump-dom".to_owned(), url.to_owned()]).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// A PNG of `url` in a `width` × `height` window, written to `path`.
    pub async fn screenshot(&self, url: &str, path: &Path, width: u32, height: u32) {
        self.run(&[
            format!("--screenshot={}", path.display()),
            format!("--window-size={width},{height}"),
            url.to_owned(),
        ])
        .await;
        assert!(path.exists(), "chromium wrote no screenshot at {}", path.display());
    }

    async fn run(&self, args: &[String]) -> Vec<u8> {
        let profile =
            std::env::temp_dir().join(format!("accel-chromium-{}-{}", std::process::id(), run_number()));
        let mut command = Command::new(&self.program);
        command
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--virtual-time-budget={SCRIPT_BUDGET_MS}"))
            .args(args)
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .expect("chromium finishes within a minute")
            .expect("chromium runs");
        let _ = std::fs::remove_dir_all(&profile);
        assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }
}

/// A number that differs between runs of one process (profile directories must not clash).
fn run_number() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

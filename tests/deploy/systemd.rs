//! `deploy/systemd/accel.service`: `systemd-analyze verify` when it exists, and the settings
//! the unit promises.

use std::process::Command;

use crate::{Layout, root};

const UNIT: &str = "deploy/systemd/accel.service";

/// The unit's `Key=value` lines for `key`.
fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines().filter_map(|line| line.strip_prefix(key)?.strip_prefix('=')).map(str::trim).collect()
}

#[test]
fn the_unit_reloads_with_sighup_restarts_on_failure_and_is_sandboxed() {
    let unit = crate::read(UNIT);
    assert!(
        values(&unit, "ExecReload").iter().any(|v| v.contains("kill -HUP $MAINPID")),
        "ExecReload sends SIGHUP"
    );
    assert_eq!(values(&unit, "Restart"), ["on-failure"]);
    for (key, value) in [("DynamicUser", "yes"), ("ProtectSystem", "strict"), ("NoNewPrivileges", "yes")] {
        assert_eq!(values(&unit, key), [value], "{key}={value}");
    }
    // No capabilities: the configuration the unit's instructions install listens above 1024.
    assert_eq!(values(&unit, "CapabilityBoundingSet"), [""]);
    assert_eq!(values(&unit, "AmbientCapabilities"), [""]);
    let (config, _) = crate::check(&root().join("deploy/docker/accel.toml"));
    assert!(
        config.listen.port() >= 1024 && config.admin.addr.port() >= 1024,
        "ports below 1024 need CAP_NET_BIND_SERVICE"
    );
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        println!("SKIPPED: systemd-analyze is not installed");
        return;
    }
    // verify wants the binary the unit runs to exist: the one built here, else any executable.
    let built = root().join("target/debug/accel");
    let binary = if built.is_file() { built.canonicalize().expect("canonical") } else { "/bin/true".into() };
    let layout = Layout::new();
    let unit = crate::read(UNIT).replace("/usr/local/bin/accel", &binary.to_string_lossy());
    layout.write("accel.service", unit.as_bytes());
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(layout.at("accel.service"))
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stderr.trim().is_empty(), "systemd-analyze verify {UNIT}:\n{stderr}");
}

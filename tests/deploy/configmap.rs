//! A ConfigMap update as the kubelet makes it reloads the rules: the volume's files are
//! symlinks through `..data`, itself a symlink to a timestamped directory; an update writes a
//! new directory, swaps `..data` to it with a rename and removes the old one. No rules file is
//! written in place, so the reload must follow the swap.

use std::os::unix::fs::symlink;
use std::path::Path;

use accel_e2e::{FakeOrigin, TestProxy, eventually_async};

fn route(name: &str, path_prefix: &str) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\nmatch = {{ path_prefix = \"{path_prefix}\" }}\nupstream = \"api\"\n"
    )
}

/// Writes a ConfigMap version into the timestamped directory `version`.
fn write_version(volume: &Path, version: &str, rules: &str) {
    let dir = volume.join(version);
    std::fs::create_dir_all(&dir).expect("create the version directory");
    std::fs::write(dir.join("platform.toml"), rules).expect("write the rules");
}

#[tokio::test]
async fn a_config_map_symlink_swap_reloads_the_rules() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let layout = crate::Layout::new();
    let volume = layout.0.clone();
    write_version(&volume, "..2026_01_01_00_00_00.000000001", &route("old", "/old/"));
    symlink("..2026_01_01_00_00_00.000000001", volume.join("..data")).expect("..data");
    symlink("..data/platform.toml", volume.join("platform.toml")).expect("the key's symlink");

    let glob = format!("{}/*.toml", volume.display());
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(&route("old", "/old/"))
        .config(move |config| config.rules_files = vec![glob])
        .start()
        .await;
    assert_eq!(proxy.get("/old/x").await.status, 200);
    assert_eq!(proxy.get("/new/x").await.status, 404);

    // The kubelet's update: new directory, ..data_tmp → it, rename over ..data, old one gone.
    write_version(&volume, "..2026_01_01_00_01_00.000000002", &route("new", "/new/"));
    symlink("..2026_01_01_00_01_00.000000002", volume.join("..data_tmp")).expect("..data_tmp");
    std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).expect("swap ..data");
    std::fs::remove_dir_all(volume.join("..2026_01_01_00_00_00.000000001")).expect("remove the old version");

    eventually_async("the swapped rules serve", || async { proxy.get("/new/x").await.status == 200 }).await;
    assert_eq!(proxy.get("/old/x").await.status, 404, "the old rules are gone");
}

//! `accel-bench` as CI runs it: against the real sidecar (in this process) in front of
//! `fast-origin`, it writes the platform's report and exits 1 when a target is missed. The
//! targets here do not depend on the machine's speed: a cache hit rate, and a throughput no
//! machine reaches.

use std::path::PathBuf;
use std::process::Command;

use accel::sidecar::{self, Sidecar};
use accel_benches::fast_origin::{self, Answer};
use tokio::net::TcpListener;

const SCENARIO: &str = r#"
[[endpoint]]
name = "item"
path = "/items/1"

[[endpoint]]
name = "other"
path = "/items/2"

[[target]]
name = "cache_hit_rate"
measure = "cache_hit_rate"
above = 90
repeats = 20

[[target]]
name = "impossible_throughput"
measure = "requests_per_second"
above = 1e12
endpoints = ["item"]
concurrency = 2
duration = "300ms"
warmup = "0s"
"#;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("accel-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_has_the_platform_s_shape_and_a_missed_target_fails_the_run() {
    let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin_addr = origin.local_addr().unwrap();
    tokio::spawn(fast_origin::serve(origin, Answer::new(64, true)));
    let dir = temp_dir("report");
    std::fs::write(
        dir.join("accel.toml"),
        format!(
            "[upstreams.api]\nendpoints = [\"{origin_addr}\"]\n[rules]\nfiles = [\"{}/rules/*.toml\"]\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("rules/all.toml"),
        "[[route]]\nname = \"all\"\nupstream = \"api\"\ncache = { ttl = \"5m\" }\n",
    )
    .unwrap();
    let (config, rules) = sidecar::load(Some(&dir.join("accel.toml"))).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = Sidecar::with_listeners(config, rules, listener, admin);
    let base = format!("http://{}", proxy.local_addr().unwrap());
    tokio::spawn(proxy.run(std::future::pending()));
    std::fs::write(dir.join("scenario.toml"), SCENARIO).unwrap();
    let out = dir.join("performance_benchmark_report.json");

    let run = {
        let (scenario, out) = (dir.join("scenario.toml"), out.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_accel-bench"))
                .arg("--base")
                .arg(&base)
                .arg("--scenario")
                .arg(&scenario)
                .arg("--out")
                .arg(&out)
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };

    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(1), "{stdout}{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("1 of 2 targets met (50 %), grade D"), "{stdout}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(report["summary"]["total_tests"], 2);
    assert_eq!(report["summary"]["passed_tests"], 1);
    assert_eq!(report["summary"]["success_rate"], 50.0);
    assert_eq!(report["performance_grade"], "D");
    let hits = &report["results"][0];
    assert_eq!((hits["test_name"].as_str(), hits["unit"].as_str()), (Some("cache_hit_rate"), Some("%")));
    // Each URL's first request fills the cache; the other 19 are hits.
    assert_eq!((hits["actual_value"].as_f64(), hits["passed"].as_bool()), (Some(95.0), Some(true)));
    assert_eq!((hits["target_value"].as_f64(), hits["samples"].as_u64()), (Some(90.0), Some(40)));
    let throughput = &report["results"][1];
    assert_eq!(throughput["passed"], false);
    assert!(throughput["samples"].as_u64().unwrap() > 0);
    let advice = report["recommendations"].as_array().unwrap();
    assert_eq!(advice.len(), 1);
    assert!(advice[0].as_str().unwrap().starts_with("impossible_throughput: "), "{advice:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

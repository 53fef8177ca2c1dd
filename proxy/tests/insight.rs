//! `accel warm` and `accel advise` as an operator runs them, against `accel run`: warming
//! makes the first client request a hit, a route's `warm` list is fetched at start-up and
//! again after a purge, and `advise` prints the running proxy's health.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

const ACCEL: &str = env!("CARGO_BIN_EXE_accel");
const DEADLINE: Duration = Duration::from_secs(30);

type Hits = Arc<Mutex<HashMap<String, usize>>>;

/// An origin answering `ok` to every path, counting requests by path.
async fn origin() -> (SocketAddr, Hits) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits: Hits = Arc::default();
    let seen = hits.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            let service = service_fn(move |request: Request<Incoming>| {
                *seen.lock().unwrap().entry(request.uri().path().to_owned()).or_default() += 1;
                async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, hits)
}

fn hits(hits: &Hits, path: &str) -> usize {
    hits.lock().unwrap().get(path).copied().unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

const RULES: &str = r#"
[[route]]
name = "items"
match = { path_prefix = "/items/" }
upstream = "api"
cache = { ttl = "5m" }

[[route]]
name = "warmed"
match = { path_prefix = "/warm/" }
upstream = "api"
cache = { ttl = "5m" }
warm = ["/warm/1", "/warm/2"]

[[route]]
name = "plain"
upstream = "api"
"#;

/// `accel run` with `rules` in front of `origin`; killed on drop.
struct Daemon {
    child: Child,
    dir: PathBuf,
    listen: SocketAddr,
    admin: SocketAddr,
}

impl Daemon {
    async fn start(name: &str, origin: SocketAddr, rules: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("accel-insight-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rules")).unwrap();
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        std::fs::write(
            dir.join("accel.toml"),
            format!(
                "[listen]\nhttp = \"{listen}\"\n[admin]\naddr = \"{admin}\"\n[log]\naccess = false\n\
                 [cache]\npurge_token = \"t0ken\"\n\
                 [upstreams.api]\nendpoints = [\"{origin}\"]\n[rules]\nfiles = [\"rules/*.toml\"]\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.join("rules/all.toml"), rules).unwrap();
        let child = Command::new(ACCEL)
            .args(["run", "--config", "accel.toml"])
            .current_dir(&dir)
            .env_remove("ACCEL_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start accel");
        let daemon = Self { child, dir, listen, admin };
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while get(admin, "/healthz").await.is_none() {
            assert!(tokio::time::Instant::now() < deadline, "accel did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        daemon
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `GET http://addr/path`: status, `Cache-Status` and body, or `None` when nothing answers.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String, String)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client.get(format!("http://{addr}{path}").parse().unwrap()).await.ok()?;
    let status = response.status().as_u16();
    let cache = response.headers().get("cache-status").map_or("", |v| v.to_str().unwrap()).to_owned();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, cache, String::from_utf8_lossy(&body).into_owned()))
}

/// The `Cache-Status` of a GET of `path` once the proxy's own fetch of it is stored: the
/// origin counts that fetch before it answers, and a GET that comes before the answer is stored
/// joins the fetch in flight (`collapsed`, no origin request either); it is asked again then.
async fn once_stored(addr: SocketAddr, path: &str) -> String {
    for _ in 0..100 {
        let (_, cache_status, _) = get(addr, path).await.unwrap();
        if !cache_status.contains("collapsed") {
            return cache_status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{path}: the proxy's fetch still in flight after 2 s");
}

async fn purge_all(admin: SocketAddr) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::post(format!("http://{admin}/cache/purge"))
        .header("authorization", "Bearer t0ken")
        .body(Full::new(Bytes::from_static(b"{\"all\": true}")))
        .unwrap();
    assert_eq!(client.request(request).await.unwrap().status(), 200);
}

/// Runs `accel ARGS` with `stdin` as its standard input: exit code, stdout, stderr.
async fn accel(args: &[&str], stdin: &str) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(ACCEL)
            .args(&args)
            .env_remove("ACCEL_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run accel");
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let Output { status, stdout, stderr } = child.wait_with_output().unwrap();
        (
            status.code().expect("an exit code"),
            String::from_utf8_lossy(&stdout).into_owned(),
            String::from_utf8_lossy(&stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_accel_warm_the_first_request_of_every_warmed_url_is_a_hit() {
    let (origin, seen) = origin().await;
    let daemon = Daemon::start("warm", origin, RULES).await;
    let proxy = daemon.listen.to_string();
    let list = "# items\n/items/1\n/items/2\n\n/items/3\n/plain\n";

    let (code, stdout, stderr) = accel(&["warm", "--proxy", &proxy, "-"], list).await;

    assert_eq!(code, 1, "one target cannot be cached: {stdout}{stderr}");
    assert_eq!(
        stdout,
        "warmed 3, already fresh 0, failed 1\nfailed: /plain: not cached: the route does not cache\n"
    );
    for n in 1..=3 {
        let (status, cache_status, body) = get(daemon.listen, &format!("/items/{n}")).await.unwrap();
        assert_eq!((status, body.as_str()), (200, "ok"));
        assert!(cache_status.starts_with("accel; hit"), "/items/{n}: {cache_status}");
        assert_eq!(hits(&seen, &format!("/items/{n}")), 1, "warming was the only origin request");
    }

    let file = daemon.dir.join("list.txt");
    std::fs::write(&file, "/items/1\n/items/2\n/items/3\n").unwrap();
    let (code, stdout, _) =
        accel(&["warm", "--proxy", &proxy, file.to_str().unwrap(), "--concurrency", "2"], "").await;
    assert_eq!((code, stdout.as_str()), (0, "warmed 0, already fresh 3, failed 0\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_s_warm_list_is_fetched_at_start_up_and_after_a_purge() {
    let (origin, seen) = origin().await;
    let daemon = Daemon::start("warm-list", origin, RULES).await;

    eventually("the warm list fetched at start-up", || {
        hits(&seen, "/warm/1") == 1 && hits(&seen, "/warm/2") == 1
    })
    .await;
    let cache_status = once_stored(daemon.listen, "/warm/2").await;
    assert!(cache_status.starts_with("accel; hit"), "{cache_status}");
    assert_eq!(hits(&seen, "/warm/2"), 1);

    purge_all(daemon.admin).await;

    eventually("the warm list fetched again", || hits(&seen, "/warm/1") == 2 && hits(&seen, "/warm/2") == 2)
        .await;
    let cache_status = once_stored(daemon.listen, "/warm/1").await;
    assert!(cache_status.starts_with("accel; hit"), "{cache_status}");
    assert_eq!(hits(&seen, "/warm/1"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accel_advise_prints_the_running_proxy_s_health() {
    let (origin, _) = origin().await;
    let daemon =
        Daemon::start("advise", origin, &RULES.replace("warm = [\"/warm/1\", \"/warm/2\"]", "")).await;
    for _ in 0..5 {
        get(daemon.listen, "/items/1").await.unwrap();
    }
    let admin = daemon.admin.to_string();

    let (code, stdout, stderr) = accel(&["advise", "--admin", &admin], "").await;
    let (json_code, json, _) = accel(&["advise", "--admin", &admin, "--json"], "").await;

    assert_eq!(code, 0, "{stderr}");
    let first = stdout.lines().next().unwrap();
    assert!(first.contains("health score"), "{stdout}");
    assert!(first.contains("5 requests") && first.contains("hit rate 80.0 %"), "{stdout}");
    for factor in ["latency", "hit_rate", "errors", "upstreams", "redis"] {
        assert!(stdout.contains(&format!("\n  {factor} ")), "{factor} in:\n{stdout}");
    }
    assert_eq!(json_code, 0);
    let summary: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(summary["metrics_summary"]["requests"], 5);

    let (code, _, stderr) = accel(&["advise", "--admin", &format!("127.0.0.1:{}", free_port())], "").await;
    assert_eq!(code, 1);
    assert!(stderr.starts_with("advise failed: cannot reach http://127.0.0.1:"), "{stderr}");
}

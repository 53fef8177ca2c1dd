//! `accel run` as a process: it streams a 50 MiB upload and download with bounded memory,
//! reloads its rules on SIGHUP, and on SIGTERM stops accepting, finishes the request in
//! flight and exits 0.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;

const MIB: usize = 1024 * 1024;
const DEADLINE: Duration = Duration::from_secs(30);

type TestBody = BoxBody<Bytes, std::io::Error>;

/// An origin: `/upload` answers with the length of the body it read; `/download` sends
/// 50 MiB; `/slow` answers once `release` is notified.
async fn origin(release: Arc<Notify>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let release = release.clone();
            let service = service_fn(move |request: Request<Incoming>| {
                let release = release.clone();
                async move {
                    let body: TestBody = match request.uri().path() {
                        "/upload" => {
                            let mut body = request.into_body();
                            let mut length = 0;
                            while let Some(frame) = body.frame().await {
                                length += frame.unwrap().data_ref().map_or(0, Bytes::len);
                            }
                            full(length.to_string())
                        }
                        "/download" => {
                            let chunk = Bytes::from(vec![b'y'; 64 * 1024]);
                            let chunks = futures_util::stream::iter(
                                (0..800).map(move |_| Ok::<_, std::io::Error>(Frame::data(chunk.clone()))),
                            );
                            StreamBody::new(chunks).boxed()
                        }
                        "/slow" => {
                            release.notified().await;
                            full("finished")
                        }
                        _ => full("ok"),
                    };
                    Ok::<_, Infallible>(Response::new(body))
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn full(data: impl Into<Bytes>) -> TestBody {
    Full::new(data.into()).map_err(|never| match never {}).boxed()
}

fn empty() -> TestBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `accel run` process with its files; killed on drop.
struct Daemon {
    child: Child,
    dir: PathBuf,
    listen: SocketAddr,
    admin: SocketAddr,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, TestBody>,
}

impl Daemon {
    async fn start(name: &str, origin: SocketAddr) -> Self {
        Self::start_with(name, origin, "[log]\naccess = false\n").await
    }

    /// Starts with `log` as the `[log]` table; standard output goes to `stdout.log`.
    async fn start_with(name: &str, origin: SocketAddr, log: &str) -> Self {
        Self::start_in(name, origin, log, None).await
    }

    /// Starts in `dir` with `--config <config_dir>/accel.toml` given relative to it and the
    /// rules glob `../rules/*.toml` relative to the config, as `deploy/accel.toml` does.
    async fn start_in(name: &str, origin: SocketAddr, log: &str, config_dir: Option<&str>) -> Self {
        let dir = std::env::temp_dir().join(format!("accel-daemon-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rules")).unwrap();
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let (config, glob) = match config_dir {
            None => (dir.join("accel.toml"), "rules/*.toml"),
            Some(sub) => {
                std::fs::create_dir_all(dir.join(sub)).unwrap();
                (PathBuf::from(sub).join("accel.toml"), "../rules/*.toml")
            }
        };
        std::fs::write(
            dir.join(&config),
            format!(
                "[listen]\nhttp = \"{listen}\"\n[admin]\naddr = \"{admin}\"\n[runtime]\nworker_threads = 2\n\
                 {log}\n[limits]\ndrain_timeout = \"20s\"\n\
                 [upstreams.api]\nendpoints = [\"{origin}\"]\n[rules]\nfiles = [\"{glob}\"]\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.join("rules/all.toml"), "[[route]]\nname = \"all\"\nupstream = \"api\"\n")
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_accel"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .current_dir(&dir)
            .env_remove("ACCEL_CONFIG")
            .env_remove("RUST_LOG")
            .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("start accel");
        let daemon =
            Self { child, dir, listen, admin, client: Client::builder(TokioExecutor::new()).build_http() };
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while daemon.try_get(daemon.admin, "/healthz").await.is_none() {
            assert!(tokio::time::Instant::now() < deadline, "accel did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        daemon
    }

    async fn try_get(&self, addr: SocketAddr, path: &str) -> Option<(u16, String)> {
        let request = Request::get(format!("http://{addr}{path}")).body(empty()).unwrap();
        let response = self.client.request(request).await.ok()?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    }

    async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.try_get(self.admin, "/metrics").await.expect("metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The process's peak resident memory, from /proc.
    fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmHWM");
        kib * 1024
    }

    /// Waits until `series` reaches `at_least`; panics with `what` after the deadline.
    async fn wait_for_metric(&self, series: &str, at_least: f64, what: &str) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while self.metric(series).await < at_least {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the process with SIGTERM (which flushes its log writer), waits for it to exit,
    /// and returns its standard output.
    async fn stop_and_read_log(&mut self) -> String {
        self.signal("TERM");
        let deadline = std::time::Instant::now() + DEADLINE;
        while self.child.try_wait().unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "accel did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::fs::read_to_string(self.dir.join("stdout.log")).unwrap()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{name}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn fifty_mib_each_way_pass_with_bounded_memory() {
    let origin = origin(Arc::new(Notify::new())).await;
    let daemon = Daemon::start("memory", origin).await;
    let baseline = daemon.peak_rss_bytes();

    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let chunks = futures_util::stream::iter((0..800).map(move |_| Ok(Frame::data(chunk.clone()))));
    let upload = Request::put(format!("http://{}/upload", daemon.listen))
        .body(StreamBody::new(chunks).boxed())
        .unwrap();
    let response = tokio::time::timeout(DEADLINE, daemon.client.request(upload)).await.unwrap().unwrap();
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, (50 * MIB).to_string());

    let download = Request::get(format!("http://{}/download", daemon.listen)).body(empty()).unwrap();
    let response = tokio::time::timeout(DEADLINE, daemon.client.request(download)).await.unwrap().unwrap();
    let mut body = response.into_body();
    let mut received = 0;
    while let Some(frame) = tokio::time::timeout(DEADLINE, body.frame()).await.unwrap() {
        received += frame.unwrap().data_ref().map_or(0, Bytes::len);
    }
    assert_eq!(received, 50 * MIB);

    // 100 MiB went through; a proxy that buffered a body would have grown by 50 MiB.
    let peak = daemon.peak_rss_bytes();
    let grown = peak.saturating_sub(baseline);
    println!(
        "accel peak RSS {} KiB (baseline {} KiB, grew {} KiB)",
        peak / 1024,
        baseline / 1024,
        grown / 1024
    );
    assert!(grown < 16 * MIB as u64, "the proxy grew by {} KiB moving 50 MiB bodies", grown / 1024);
}

#[tokio::test]
async fn sighup_reloads_the_rules() {
    let origin = origin(Arc::new(Notify::new())).await;
    let daemon = Daemon::start("sighup", origin).await;
    let success = r#"accel_config_reloads_total{result="success"}"#;
    assert_eq!(daemon.metric(success).await, 0.0);

    // No file changed: only the signal can cause this reload.
    daemon.signal("HUP");

    daemon.wait_for_metric(success, 1.0, "SIGHUP did not reload").await;
    assert_eq!(daemon.try_get(daemon.listen, "/x").await, Some((200, "ok".into())), "still serving");
}

#[tokio::test]
async fn sighup_applies_accel_toml_and_names_what_needs_a_restart() {
    let origin = origin(Arc::new(Notify::new())).await;
    let daemon = Daemon::start("sighup-config", origin).await;
    let path = daemon.dir.join("accel.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let moved = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let text = text.replace(&format!("http = \"{}\"", daemon.listen), &format!("http = \"{moved}\""));
    std::fs::write(&path, text).unwrap();

    daemon.signal("HUP");

    let log = daemon.dir.join("stdout.log");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("restart needed for: listen.http;") {
        assert!(tokio::time::Instant::now() < deadline, "no restart warning after SIGHUP");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(daemon.metric("accel_config_restart_pending").await, 1.0);
    assert_eq!(
        daemon.try_get(daemon.listen, "/x").await,
        Some((200, "ok".into())),
        "the old listener serves"
    );
}

#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_and_exits_0() {
    let release = Arc::new(Notify::new());
    let origin = origin(release.clone()).await;
    let mut daemon = Daemon::start("sigterm", origin).await;
    let slow = Request::get(format!("http://{}/slow", daemon.listen)).body(empty()).unwrap();
    let held = tokio::spawn(daemon.client.request(slow));
    let in_flight = r#"accel_endpoint_in_flight{upstream="api",endpoint=""#;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while daemon.metric(&format!("{in_flight}{origin}\"}}")).await < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "the slow request did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    daemon.signal("TERM");

    // The listener closes: new connections are refused…
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while tokio::net::TcpStream::connect(daemon.listen).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the listener stayed open after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(daemon.child.try_wait().unwrap().is_none(), "accel waits for the request in flight");
    // …and the request in flight still completes.
    release.notify_one();
    let response = tokio::time::timeout(DEADLINE, held).await.unwrap().unwrap().expect("an answer");
    assert_eq!(response.status(), 200);
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "finished");
    let deadline = std::time::Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "accel did not exit after draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn each_request_gets_one_json_access_line() {
    let origin = origin(Arc::new(Notify::new())).await;
    let mut daemon =
        Daemon::start_with("access", origin, "[log]\nformat = \"json\"\nlevel = \"warn\"\naccess = true\n")
            .await;

    assert_eq!(daemon.try_get(daemon.listen, "/hello?q=1").await, Some((200, "ok".into())));
    assert_eq!(daemon.try_get(daemon.listen, "/again").await, Some((200, "ok".into())));
    // Stopping flushes the log writer.
    let log = daemon.stop_and_read_log().await;
    let access: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["target"] == "accel::access")
        .collect();
    assert_eq!(access.len(), 2, "{log}");
    let line = &access[0];
    assert_eq!(line["route"], "all", "{line}");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/hello");
    assert_eq!(line["status"], 200);
    assert_eq!(line["endpoint"], origin.to_string());
    assert!(line["micros"].is_u64(), "{line}");
    let id = line["request_id"].as_str().unwrap_or_default();
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");
    assert_ne!(access[1]["request_id"], line["request_id"], "each request has its own id");
}

#[tokio::test]
async fn a_slow_request_gets_a_warning_line_with_its_request_id() {
    let release = Arc::new(Notify::new());
    let origin = origin(release.clone()).await;
    let mut daemon =
        Daemon::start_with("slow", origin, "[log]\nformat = \"json\"\nlevel = \"warn\"\naccess = true\n")
            .await;
    let slow = Request::get(format!("http://{}/slow", daemon.listen)).body(empty()).unwrap();
    let held = tokio::spawn(daemon.client.request(slow));
    let in_flight = format!("accel_endpoint_in_flight{{upstream=\"api\",endpoint=\"{origin}\"}}");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while daemon.metric(&in_flight).await < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "the slow request did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The route has the default threshold, 1 s: the origin, which has the request, answers
    // only after it.
    tokio::time::sleep(Duration::from_millis(1050)).await;
    release.notify_one();
    let response = tokio::time::timeout(DEADLINE, held).await.unwrap().unwrap().expect("an answer");
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    response.into_body().collect().await.unwrap();
    assert_eq!(daemon.try_get(daemon.listen, "/fast").await, Some((200, "ok".into())));
    assert_eq!(daemon.metric(r#"accel_slow_requests_total{route="all"}"#).await, 1.0);
    let log = daemon.stop_and_read_log().await;
    let lines: Vec<serde_json::Value> =
        log.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).collect();
    let slow: Vec<&serde_json::Value> = lines.iter().filter(|l| l["target"] == "accel::slow").collect();
    assert_eq!(slow.len(), 1, "only the slow request: {log}");
    let line = slow[0];
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(
        (&line["route"], &line["method"], &line["path"]),
        (&"all".into(), &"GET".into(), &"/slow".into())
    );
    assert_eq!(line["status"], 200);
    assert_eq!(line["endpoint"], origin.to_string());
    assert_eq!(line["request_id"], id.as_str());
    assert_eq!(line["suppressed"], 0);
    assert!(line["millis"].as_f64().is_some_and(|ms| ms >= 1000.0), "{line}");
    let access = lines.iter().find(|l| l["target"] == "accel::access" && l["path"] == "/slow");
    assert_eq!(access.map(|l| &l["request_id"]), Some(&serde_json::Value::from(id.as_str())), "{log}");
}

#[tokio::test]
async fn rules_given_relative_to_a_relative_config_path_are_watched() {
    let origin = origin(Arc::new(Notify::new())).await;
    let daemon = Daemon::start_in("relative", origin, "[log]\naccess = false\n", Some("deploy")).await;
    assert_eq!(daemon.try_get(daemon.listen, "/x").await, Some((200, "ok".into())));

    let staging = daemon.dir.join("staging.toml");
    std::fs::write(
        &staging,
        "[[route]]\nname = \"only\"\nmatch = { path = \"/only\" }\nupstream = \"api\"\n",
    )
    .unwrap();
    std::fs::rename(&staging, daemon.dir.join("rules/all.toml")).unwrap();

    let success = r#"accel_config_reloads_total{result="success"}"#;
    daemon.wait_for_metric(success, 1.0, "the rules change was not picked up").await;
    assert_eq!(daemon.try_get(daemon.listen, "/x").await.map(|(status, _)| status), Some(404));
}

/// No log line, at any level (TRACE included, the dependencies' lines too), carries a
/// credential: not a client's `Authorization` or cookie value, not the purge token nor the
/// credential key, whether the request was answered, cached, refused or rate limited.
#[tokio::test]
async fn no_credential_reaches_the_log_at_trace_level() {
    const CLIENT_TOKEN: &str = "client-token-7f3a9c";
    const SESSION: &str = "session-value-51e2b8";
    const PURGE_TOKEN: &str = "purge-token-c04d1e";
    const WRONG_TOKEN: &str = "wrong-token-9b7a22";
    const CREDENTIAL_KEY: &str = "credential-key-3e8f0a6b2c9d4e1f7a5b";
    let origin = origin(Arc::new(Notify::new())).await;
    let log = format!(
        "[log]\nformat = \"json\"\nlevel = \"trace\"\naccess = true\n\
         [cache]\npurge_token = \"{PURGE_TOKEN}\"\ncredential_cookies = [\"session\"]\n\
         credential_key = \"{CREDENTIAL_KEY}\"\n"
    );
    let mut daemon = Daemon::start_with("secrets", origin, &log).await;
    // Rules that read the credentials: a cached route keyed per user, a route rate limited
    // by `Authorization`.
    std::fs::write(
        daemon.dir.join("rules/all.toml"),
        "[[route]]\nname = \"limited\"\nmatch = { path_prefix = \"/limited\" }\nupstream = \"api\"\n\
         rate_limit = { rate = \"1/m\", burst = 1, key = \"header:authorization\" }\n\
         [[route]]\nname = \"cached\"\nupstream = \"api\"\ncache = { ttl = \"1m\" }\n",
    )
    .unwrap();
    daemon.signal("HUP");
    daemon
        .wait_for_metric(r#"accel_config_reloads_total{result="success"}"#, 1.0, "SIGHUP did not reload")
        .await;

    let authorization = format!("Bearer {CLIENT_TOKEN}");
    let cookie = format!("session={SESSION}; theme=dark");
    let h2c = Client::builder(TokioExecutor::new()).http2_only(true).build_http::<TestBody>();
    let send = |client: &Client<_, TestBody>, method: &str, url: String, auth: &str, body: TestBody| {
        let request = Request::builder()
            .method(method)
            .uri(url)
            .header("authorization", auth)
            .header("cookie", &cookie)
            .body(body)
            .unwrap();
        let response = client.request(request);
        async move { response.await.expect("an answer").status().as_u16() }
    };
    let proxied = |path: &str| format!("http://{}{path}", daemon.listen);
    // Cached per user: a miss, then a hit; over HTTP/1.1 and h2c.
    for client in [&daemon.client, &h2c, &daemon.client] {
        assert_eq!(send(client, "GET", proxied("/cached"), &authorization, empty()).await, 200);
    }
    // Rate limited by the header's value.
    assert_eq!(send(&daemon.client, "GET", proxied("/limited"), &authorization, empty()).await, 200);
    assert_eq!(send(&daemon.client, "GET", proxied("/limited"), &authorization, empty()).await, 429);
    // The purge endpoint, with the right token and a wrong one.
    let purge = format!("http://{}/cache/purge", daemon.admin);
    let all = || full(r#"{"all": true}"#);
    assert_eq!(
        send(&daemon.client, "POST", purge.clone(), &format!("Bearer {PURGE_TOKEN}"), all()).await,
        200
    );
    assert_eq!(send(&daemon.client, "POST", purge, &format!("Bearer {WRONG_TOKEN}"), all()).await, 403);
    // A head refused on its framing, credentials and all.
    let mut raw = tokio::net::TcpStream::connect(daemon.listen).await.unwrap();
    let head = format!(
        "POST /cached HTTP/1.1\r\nhost: x\r\nauthorization: {authorization}\r\ncookie: {cookie}\r\n\
         content-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    tokio::io::AsyncWriteExt::write_all(&mut raw, head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut answer))
        .await
        .expect("the refusal closes the connection")
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&answer));

    let log = daemon.stop_and_read_log().await;
    let lines: Vec<serde_json::Value> =
        log.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).collect();
    // The log did run at TRACE, and saw the requests.
    assert!(lines.iter().any(|l| l["level"] == "TRACE"), "no TRACE line: {log}");
    let access = lines.iter().filter(|l| l["target"] == "accel::access").count();
    assert!(access >= 5, "{access} access lines: {log}");
    for secret in [CLIENT_TOKEN, SESSION, PURGE_TOKEN, WRONG_TOKEN, CREDENTIAL_KEY] {
        let leaks: Vec<&str> = log.lines().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret} logged in: {leaks:#?}");
    }
}

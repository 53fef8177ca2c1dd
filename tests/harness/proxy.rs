//! [`TestProxy`]: the real sidecar (the `accel` library, as the binary runs it) started from a
//! temporary `accel.toml` and rules file, listening on `127.0.0.1:0` (proxy and admin).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use accel::config::Config;
use accel::proxy::Proxy;
use accel::sidecar::Sidecar;
use http::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::client::{Collected, TestBody, body};

/// A client of the proxy (HTTP/1.1 or h2c with prior knowledge).
pub type TestClient = Client<HttpConnector, TestBody>;

/// An edit of the loaded configuration, applied before the sidecar starts.
type ConfigEdit = Box<dyn FnOnce(&mut Config)>;

/// Describes a proxy to start.
pub struct TestProxyBuilder {
    upstreams: Vec<(String, Vec<SocketAddr>, String)>,
    rules: String,
    extra_toml: String,
    /// The `tls` value of `[listen]` and the files it names.
    tls: Option<(String, Vec<(String, String)>)>,
    /// More files (name, text) written next to `accel.toml`.
    files: Vec<(String, String)>,
    edit: Option<ConfigEdit>,
}

impl std::fmt::Debug for TestProxyBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestProxyBuilder").field("rules", &self.rules).finish_non_exhaustive()
    }
}

impl TestProxyBuilder {
    /// Adds `[upstreams.NAME]` with these endpoints.
    pub fn upstream(self, name: &str, endpoints: &[SocketAddr]) -> Self {
        self.upstream_with(name, endpoints, "")
    }

    /// Adds `[upstreams.NAME]` with these endpoints and more keys of that table, e.g.
    /// `health = { path = "/health", interval = "50ms" }`.
    pub fn upstream_with(mut self, name: &str, endpoints: &[SocketAddr], keys: &str) -> Self {
        self.upstreams.push((name.to_owned(), endpoints.to_vec(), keys.to_owned()));
        self
    }

    /// The rules file's text (`[[route]]` tables).
    pub fn rules(mut self, toml: &str) -> Self {
        self.rules = toml.to_owned();
        self
    }

    /// More `accel.toml` tables, e.g. `[forwarded]\ntrusted_proxies = ["127.0.0.1"]`
    /// (not `[listen]`, `[admin]`, `[upstreams.*]` or `[rules]`, which the harness writes).
    pub fn sidecar_toml(mut self, toml: &str) -> Self {
        self.extra_toml.push('\n');
        self.extra_toml.push_str(toml);
        self.extra_toml.push('\n');
        self
    }

    /// Adds the TLS listener (`listen.https` on `127.0.0.1:0`) serving this PEM certificate
    /// chain and private key, written next to `accel.toml` as `cert.pem` and `key.pem`.
    pub fn tls(self, cert_pem: &str, key_pem: &str) -> Self {
        self.tls_with(
            r#"{ cert = "cert.pem", key = "key.pem" }"#,
            &[("cert.pem", cert_pem), ("key.pem", key_pem)],
        )
    }

    /// Adds the TLS listener with this `tls` value of `[listen]`, e.g. a list of certificates
    /// chosen by SNI, writing `files` (name, text) next to `accel.toml`.
    pub fn tls_with(mut self, tls_toml: &str, files: &[(&str, &str)]) -> Self {
        let files = files.iter().map(|(name, text)| ((*name).to_owned(), (*text).to_owned()));
        self.tls = Some((tls_toml.to_owned(), files.collect()));
        self
    }

    /// Writes `text` as `name` next to `accel.toml` (a CA file an upstream's `tls` names).
    pub fn file(mut self, name: &str, text: &str) -> Self {
        self.files.push((name.to_owned(), text.to_owned()));
        self
    }

    /// Edits the loaded, validated configuration before the sidecar starts. A reload reads
    /// `accel.toml` again: an edited live setting does not survive it (write it in the file
    /// with [`sidecar_toml`](Self::sidecar_toml) instead).
    pub fn config(mut self, edit: impl FnOnce(&mut Config) + 'static) -> Self {
        self.edit = Some(Box::new(edit));
        self
    }

    /// The `accel.toml` text this builder writes.
    fn sidecar_text(&self) -> String {
        let mut text = String::from("[listen]\nhttp = \"127.0.0.1:0\"\n");
        if let Some((tls, _)) = &self.tls {
            text.push_str(&format!("https = \"127.0.0.1:0\"\ntls = {tls}\n"));
        }
        text.push_str("\n[admin]\naddr = \"127.0.0.1:0\"\n\n[log]\naccess = false\n");
        for (name, endpoints, keys) in &self.upstreams {
            let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
            text.push_str(&format!("\n[upstreams.{name}]\nendpoints = [{}]\n{keys}\n", list.join(", ")));
        }
        text.push_str("\n[rules]\nfiles = [\"rules/*.toml\"]\n");
        text.push_str(&self.extra_toml);
        text
    }

    /// Writes the files, loads them as `accel run` does, binds `127.0.0.1:0` and serves.
    /// Panics with every configuration problem when the files are invalid.
    pub async fn start(self) -> TestProxy {
        let dir = TempDir::new();
        std::fs::create_dir_all(dir.path().join("rules")).expect("create the rules directory");
        let config_path = dir.path().join("accel.toml");
        std::fs::write(&config_path, self.sidecar_text()).expect("write accel.toml");
        let rules_path = dir.path().join("rules").join("test.toml");
        std::fs::write(&rules_path, &self.rules).expect("write the rules file");
        for (name, text) in self.tls.iter().flat_map(|(_, files)| files).chain(&self.files) {
            std::fs::write(dir.path().join(name), text).expect("write a file");
        }
        let (mut config, rules) = match accel::sidecar::load(Some(&config_path)) {
            Ok(loaded) => loaded,
            Err(problems) => panic!("the test configuration is invalid:\n{problems}"),
        };
        if let Some(edit) = self.edit {
            edit(&mut config);
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy listener");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind the admin listener");
        let tls_listener = match self.tls {
            Some(_) => Some(TcpListener::bind("127.0.0.1:0").await.expect("bind the TLS listener")),
            None => None,
        };
        let sidecar = Sidecar::with_listeners(config, rules, listener, admin).with_tls_listener(tls_listener);
        let addr = sidecar.local_addr().expect("the proxy's address");
        let tls_addr = sidecar.tls_addr();
        let admin_addr = sidecar.admin_addr().expect("the admin address");
        let proxy = sidecar.proxy().clone();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(sidecar.run(async move {
            let _ = stop_rx.await;
        }));
        let proxy = TestProxy {
            addr,
            tls_addr,
            admin_addr,
            proxy,
            dir,
            rules_path,
            stop: Some(stop_tx),
            task: Some(task),
            h1: Client::builder(TokioExecutor::new()).build_http(),
            h2c: Client::builder(TokioExecutor::new()).http2_only(true).build_http(),
        };
        // The admin listener answers once the sidecar runs: its rules watcher is watching.
        proxy.admin_get("/healthz").await;
        proxy
    }
}

/// A running sidecar. Dropping it stops it and removes its files.
pub struct TestProxy {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    admin_addr: SocketAddr,
    proxy: Arc<Proxy>,
    dir: TempDir,
    rules_path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    h1: TestClient,
    h2c: TestClient,
}

impl std::fmt::Debug for TestProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestProxy").field("addr", &self.addr).field("admin", &self.admin_addr).finish()
    }
}

impl TestProxy {
    /// Starts describing a proxy.
    pub fn builder() -> TestProxyBuilder {
        TestProxyBuilder {
            upstreams: Vec::new(),
            rules: String::new(),
            extra_toml: String::new(),
            tls: None,
            files: Vec::new(),
            edit: None,
        }
    }

    /// The client listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The TLS listener's address; panics unless the builder was given [`TestProxyBuilder::tls`].
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls_addr.expect("the proxy was started without `tls`")
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// `http://<proxy>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://<admin>/<path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// The shared proxy state (routes, upstreams, metrics).
    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// An HTTP/1.1 keep-alive client.
    pub fn client(&self) -> TestClient {
        self.h1.clone()
    }

    /// An HTTP/2 client with prior knowledge (h2c).
    pub fn h2c_client(&self) -> TestClient {
        self.h2c.clone()
    }

    /// A request to the proxy, to finish with a body and send with [`client`](Self::client).
    pub fn request(&self, method: Method, path: &str) -> http::request::Builder {
        Request::builder().method(method).uri(self.url(path))
    }

    /// `GET path` over HTTP/1.1, read to the end; panics when the exchange fails.
    pub async fn get(&self, path: &str) -> Collected {
        self.send(self.request(Method::GET, path).body(body::empty()).expect("a request")).await
    }

    /// Sends `request` over HTTP/1.1 and reads the answer to its end; panics when the
    /// exchange fails (use [`client`](Self::client) to observe failures).
    pub async fn send(&self, request: Request<TestBody>) -> Collected {
        let what = format!("{} {}", request.method(), request.uri());
        let response =
            crate::within(&what, self.h1.request(request)).await.unwrap_or_else(|e| panic!("{what}: {e:?}"));
        crate::within(&what, Collected::from(response)).await.unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// `GET` of an admin path, read to the end.
    pub async fn admin_get(&self, path: &str) -> Collected {
        let request = Request::get(self.admin_url(path)).body(body::empty()).expect("a request");
        let response =
            crate::within(path, self.h1.request(request)).await.expect("the admin listener answers");
        crate::within(path, Collected::from(response)).await.expect("the admin body")
    }

    /// The `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        self.admin_get("/metrics").await.text()
    }

    /// The value of one series, e.g. `accel_config_reloads_total{result="error"}` (labels
    /// as exposed, in order); 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics_text().await, series)
    }

    /// The `/status` JSON.
    pub async fn status_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.admin_get("/status").await.body).expect("/status is JSON")
    }

    /// The rules file's path (the proxy watches its directory).
    pub fn rules_path(&self) -> &Path {
        &self.rules_path
    }

    /// Replaces the rules file's text (the file watcher picks it up; or call
    /// [`reload`](Self::reload)).
    pub fn rewrite_rules(&self, toml: &str) {
        // Write then rename, as editors and config managers do, so the watcher never reads a
        // half-written file.
        let staging = self.dir.path().join("rules.staging");
        std::fs::write(&staging, toml).expect("write the new rules");
        std::fs::rename(&staging, &self.rules_path).expect("replace the rules file");
    }

    /// Reloads `accel.toml` and the rules now, as SIGHUP does; the number of routes, or every
    /// problem.
    pub fn reload(&self) -> Result<usize, accel::config::Problems> {
        self.proxy.reload().map(|reloaded| reloaded.routes)
    }

    /// As [`reload`](Self::reload), with what applied and what waits for a restart.
    pub fn reload_config(&self) -> Result<accel::proxy::Reloaded, accel::config::Problems> {
        self.proxy.reload()
    }

    /// `accel.toml`'s path (the proxy watches it).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("accel.toml")
    }

    /// `accel.toml`'s text as it is now.
    pub fn config_text(&self) -> String {
        std::fs::read_to_string(self.config_path()).expect("read accel.toml")
    }

    /// Replaces `accel.toml`'s text (the file watcher picks it up; or call
    /// [`reload`](Self::reload)).
    pub fn rewrite_config(&self, toml: &str) {
        // Write then rename, as for the rules: the watcher never reads a half-written file.
        let staging = self.dir.path().join("accel.staging");
        std::fs::write(&staging, toml).expect("write the new accel.toml");
        std::fs::rename(&staging, self.config_path()).expect("replace accel.toml");
    }

    /// Replaces a file next to `accel.toml`, such as a TLS certificate or key written by
    /// [`TestProxyBuilder::tls`] (the file watcher picks it up; or call
    /// [`reload`](Self::reload)).
    pub fn rewrite_file(&self, name: &str, text: &str) {
        // Write then rename, as for the rules: the watcher never reads a half-written file.
        let staging = self.dir.path().join(format!("{name}.staging"));
        std::fs::write(&staging, text).expect("write the new file");
        std::fs::rename(&staging, self.dir.path().join(name)).expect("replace the file");
    }

    /// The path of a file next to `accel.toml` (see [`rewrite_file`](Self::rewrite_file)).
    pub fn file_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Stops accepting and drains in-flight requests (as on SIGTERM); returns when the
    /// sidecar has stopped.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            crate::within("the sidecar stops", task).await.expect("the sidecar task ends cleanly");
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The value of `series` in a Prometheus text exposition; 0 when absent.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let rest = line.strip_prefix(series)?;
            let value = rest.strip_prefix(' ')?;
            value.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0.0)
}

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "accel-e2e-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temp dir");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

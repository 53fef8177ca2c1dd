//! Cache warming: fetching URLs through the proxy, like a client would, so that their
//! answers are cached before the first real request asks for them.
//!
//! - `accel warm --proxy URL [FILE]` reads targets (one a line, `#` comments; a path, or an
//!   absolute URL whose host is sent as `Host`) from a file or standard input;
//! - a route's `warm = ["/path", ...]` is fetched at start-up, after every purge and after
//!   every reload ([`keep_warm`]).
//!
//! Requests go out with bounded concurrency; a `429` waits for its `Retry-After` (the route's
//! rate limit decides the pace) and tries again. Each target ends as *warmed* (the answer was
//! stored), *already fresh* (a cache hit) or *failed* (with why).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::proxy::Proxy;

/// Tries of one target that keeps being refused with `429`.
const RATE_LIMITED_TRIES: u32 = 5;
/// Longest wait for one `Retry-After`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// How often [`keep_warm`] looks for purges and reloads.
const WATCH_PERIOD: Duration = Duration::from_secs(1);

/// How one target ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Fetched and stored.
    Warmed,
    /// Already cached and fresh.
    Fresh,
    /// Not cached afterwards, and why.
    Failed(String),
}

/// What a warming run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub warmed: usize,
    pub fresh: usize,
    /// Target and reason, in the order they failed.
    pub failed: Vec<(String, String)>,
}

impl Summary {
    /// `warmed 3, already fresh 1, failed 0`.
    pub fn line(&self) -> String {
        format!("warmed {}, already fresh {}, failed {}", self.warmed, self.fresh, self.failed.len())
    }

    fn count(&mut self, target: &str, outcome: Outcome) {
        match outcome {
            Outcome::Warmed => self.warmed += 1,
            Outcome::Fresh => self.fresh += 1,
            Outcome::Failed(why) => self.failed.push((target.to_owned(), why)),
        }
    }

    fn done(&self) -> usize {
        self.warmed + self.fresh + self.failed.len()
    }
}

/// The targets of a warm list: one a line, blank lines and `#` comments skipped.
pub fn targets(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect()
}

/// Fetches every target through the proxy at `proxy` (`http://host:port`) with `headers`
/// (credentials, for answers cached per credential), `concurrency` at a time; `progress`
/// draws a bar as targets finish.
pub async fn warm(
    proxy: &Uri,
    targets: &[String],
    headers: &http::HeaderMap,
    concurrency: usize,
    mut progress: Option<&mut (dyn Write + Send)>,
) -> anyhow::Result<Summary> {
    let authority =
        proxy.authority().ok_or_else(|| anyhow::anyhow!("{proxy}: give http://host:port"))?.clone();
    let client: Client<HttpConnector, Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let fetches: Vec<_> = targets
        .iter()
        .map(|target| {
            let (client, authority, target) = (client.clone(), authority.clone(), target.clone());
            async move {
                let outcome = fetch(&client, &authority, &target, headers).await;
                (target, outcome)
            }
        })
        .collect();
    let mut results = futures_util::stream::iter(fetches).buffer_unordered(concurrency.max(1));
    let mut summary = Summary::default();
    while let Some((target, outcome)) = results.next().await {
        summary.count(&target, outcome);
        if let Some(out) = progress.as_deref_mut() {
            draw(out, &summary, targets.len());
        }
    }
    if let Some(out) = progress {
        let _ = writeln!(out);
    }
    Ok(summary)
}

/// One line of progress, redrawn in place.
fn draw(out: &mut dyn Write, summary: &Summary, total: usize) {
    const WIDTH: usize = 30;
    let done = summary.done();
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let _ = write!(
        out,
        "\r[{}{}] {done}/{total}  {}",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled),
        summary.line()
    );
    let _ = out.flush();
}

async fn fetch(
    client: &Client<HttpConnector, Empty<bytes::Bytes>>,
    proxy: &http::uri::Authority,
    target: &str,
    headers: &http::HeaderMap,
) -> Outcome {
    let (host, path) = match split(target) {
        Ok(parts) => parts,
        Err(why) => return Outcome::Failed(why),
    };
    for _ in 0..RATE_LIMITED_TRIES {
        let uri = match Uri::builder()
            .scheme("http")
            .authority(proxy.clone())
            .path_and_query(path.as_str())
            .build()
        {
            Ok(uri) => uri,
            Err(e) => return Outcome::Failed(format!("invalid path: {e}")),
        };
        let mut request = Request::get(uri);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some(host) = &host {
            request = request.header(header::HOST, host.as_str());
        }
        let Ok(request) = request.body(Empty::new()) else {
            return Outcome::Failed("invalid host".into());
        };
        let response = match client.request(request).await {
            Ok(response) => response,
            Err(e) => return Outcome::Failed(format!("cannot reach the proxy: {e}")),
        };
        let status = response.status();
        let cache_status = response.headers().get("cache-status").cloned();
        let retry_after = response.headers().get(header::RETRY_AFTER).and_then(seconds);
        // Reading the body to its end is what stores the entry.
        if let Err(e) = response.into_body().collect().await {
            return Outcome::Failed(format!("body: {e}"));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            tokio::time::sleep(retry_after.unwrap_or(Duration::from_secs(1)).min(MAX_RETRY_AFTER)).await;
            continue;
        }
        return classify(status, cache_status.as_ref());
    }
    Outcome::Failed(format!("rate limited {RATE_LIMITED_TRIES} times"))
}

/// A target as (Host header, path and query).
fn split(target: &str) -> Result<(Option<String>, String), String> {
    if target.starts_with('/') {
        return Ok((None, target.to_owned()));
    }
    let not_a_target = || format!("{target:?} is neither a path nor an http:// URL");
    let uri: Uri = target.parse().map_err(|_| not_a_target())?;
    if uri.scheme_str() != Some("http") && uri.scheme_str() != Some("https") {
        return Err(not_a_target());
    }
    let authority = uri.authority().ok_or_else(not_a_target)?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Ok((Some(authority.as_str().to_owned()), path.to_owned()))
}

fn seconds(value: &HeaderValue) -> Option<Duration> {
    value.to_str().ok()?.trim().parse().ok().map(Duration::from_secs)
}

/// How a fetch ended, from its status and `Cache-Status` (RFC 9211).
pub fn classify(status: StatusCode, cache_status: Option<&HeaderValue>) -> Outcome {
    let cache_status = cache_status.and_then(|v| v.to_str().ok()).unwrap_or("");
    let params: Vec<&str> = cache_status.split(';').skip(1).map(str::trim).collect();
    if params.first() == Some(&"hit") {
        return Outcome::Fresh;
    }
    if params.contains(&"stored") || params.iter().any(|p| p.starts_with("fwd=stale")) {
        return Outcome::Warmed;
    }
    if !status.is_success() {
        return Outcome::Failed(format!("status {}", status.as_u16()));
    }
    if cache_status.is_empty() {
        return Outcome::Failed("not cached: the route does not cache".into());
    }
    Outcome::Failed(format!("not stored ({cache_status})"))
}

/// The `warm` targets of the running rules: each route's paths, with the route's host when
/// it matches one exact host.
pub fn route_targets(proxy: &Proxy) -> Vec<String> {
    let running = proxy.pipeline.running.load();
    let table = &running.routes;
    table
        .routes()
        .iter()
        .flat_map(|route| {
            let host = match &route.rule.matcher.host {
                Some(crate::route::HostMatch::Exact(host)) => Some(host.clone()),
                _ => None,
            };
            route.rule.warm.iter().map(move |path| match &host {
                Some(host) => format!("http://{host}{path}"),
                None => path.clone(),
            })
        })
        .collect()
}

/// Warms the routes' `warm` paths through the proxy's own listener at `listen` when the
/// sidecar starts, and again after each purge and each reload, until `shutdown` completes.
pub async fn keep_warm(
    proxy: Arc<Proxy>,
    listen: SocketAddr,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let Ok(base) = format!("http://{}", loopback(listen)).parse::<Uri>() else { return };
    let mut purged = None;
    let mut routes: Option<Arc<crate::pipeline::Running>> = None;
    let mut ticks = tokio::time::interval(WATCH_PERIOD);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = ticks.tick() => {}
        }
        let now_purged = proxy.cache.metrics.purged_entries.get();
        let now_routes = proxy.pipeline.running.load_full();
        let reloaded = routes.as_ref().is_some_and(|r| !Arc::ptr_eq(r, &now_routes));
        if purged == Some(now_purged) && !reloaded {
            continue;
        }
        let why = if routes.is_none() {
            "start-up"
        } else if reloaded {
            "reload"
        } else {
            "purge"
        };
        purged = Some(now_purged);
        routes = Some(now_routes);
        let targets = route_targets(&proxy);
        if targets.is_empty() {
            continue;
        }
        let no_headers = http::HeaderMap::new();
        let result = tokio::select! {
            _ = &mut shutdown => return,
            result = warm(&base, &targets, &no_headers, 4, None) => result,
        };
        match result {
            Ok(summary) => {
                tracing::info!(
                    after = why,
                    warmed = summary.warmed,
                    fresh = summary.fresh,
                    failed = summary.failed.len(),
                    "warmed routes' warm paths"
                );
                for (target, reason) in &summary.failed {
                    tracing::warn!(target = %target, reason = %reason, "cannot warm");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot warm"),
        }
        // What warming stored counts as no purge; a purge during the run shows next tick.
    }
}

/// The listener's address as a client reaches it: an unspecified address is this host.
fn loopback(listen: SocketAddr) -> SocketAddr {
    match listen {
        SocketAddr::V4(a) if a.ip().is_unspecified() => SocketAddr::from(([127, 0, 0, 1], a.port())),
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    }
}

/// `accel warm` in a terminal: targets from `input`, the bar on standard error when it is
/// a terminal, the summary and failures on standard output.
/// `accel warm`: the targets in `input` through `proxy`, each request with `headers`.
pub async fn run_command(
    proxy: &str,
    input: &str,
    headers: &http::HeaderMap,
    concurrency: usize,
) -> anyhow::Result<Summary> {
    let base: Uri = crate::insight::client::admin_base(proxy).parse()?;
    let targets = targets(input);
    let mut stderr = std::io::stderr();
    let progress: Option<&mut (dyn Write + Send)> =
        if stderr.is_terminal() { Some(&mut stderr) } else { None };
    let summary = warm(&base, &targets, headers, concurrency, progress).await?;
    println!("{}", summary.line());
    for (target, reason) in &summary.failed {
        println!("failed: {target}: {reason}");
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(text: &str) -> Option<HeaderValue> {
        Some(HeaderValue::from_str(text).unwrap())
    }

    #[test]
    fn cache_status_tells_warmed_from_fresh_and_failed() {
        let ok = StatusCode::OK;
        assert_eq!(classify(ok, status("accel; fwd=miss; fwd-status=200; stored").as_ref()), Outcome::Warmed);
        assert_eq!(classify(ok, status("accel; hit; ttl=55").as_ref()), Outcome::Fresh);
        assert_eq!(classify(ok, None), Outcome::Failed("not cached: the route does not cache".into()));
        assert_eq!(
            classify(ok, status("accel; fwd=bypass; fwd-status=200").as_ref()),
            Outcome::Failed("not stored (accel; fwd=bypass; fwd-status=200)".into())
        );
        assert_eq!(
            classify(StatusCode::BAD_GATEWAY, status("accel; fwd=miss; fwd-status=502").as_ref()),
            Outcome::Failed("status 502".into())
        );
    }

    #[test]
    fn targets_are_lines_without_comments_and_keep_their_host() {
        assert_eq!(
            targets("/a\n\n # note\n http://api.example.com/b?x=1 \n"),
            ["/a", "http://api.example.com/b?x=1"]
        );
        assert_eq!(split("/a?b").unwrap(), (None, "/a?b".to_owned()));
        assert_eq!(
            split("http://h.example:8080/p").unwrap(),
            (Some("h.example:8080".to_owned()), "/p".to_owned())
        );
        assert!(split("nope").is_err());
    }

    #[test]
    fn the_bar_redraws_one_line() {
        let mut out = Vec::new();
        let summary = Summary { warmed: 2, fresh: 1, failed: vec![("/x".into(), "status 500".into())] };
        draw(&mut out, &summary, 8);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\r[###############...............] 4/8  warmed 2, already fresh 1, failed 1"
        );
    }
}

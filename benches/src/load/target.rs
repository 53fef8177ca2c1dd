//! The endpoint a load test connects to and the request URIs it cycles through.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail, ensure};
use http::{HeaderValue, Uri, uri::Authority};

/// Where requests go: one `host:port` and one or more origin-form URIs on it.
///
/// Every URL must be `http://` and name the same authority: a connection carries requests for
/// any of them, so they must all reach the same server.
#[derive(Debug)]
pub struct Target {
    /// `host:port` to connect to (port 80 when the URL has none).
    addr: String,
    /// The `Host` header value, as the URLs spell the authority.
    host: HeaderValue,
    /// Origin-form URIs (`/path?query`), sent in turn.
    paths: Vec<Uri>,
    /// The next index into `paths`, shared by all connections.
    next: AtomicUsize,
}

impl Target {
    /// Validates absolute `http://` URLs that share one authority.
    pub fn new(urls: &[Uri]) -> anyhow::Result<Self> {
        let Some(first) = urls.first() else { bail!("no URL given (use --url or --urls-file)") };
        let authority = authority_of(first)?.clone();
        let mut paths = Vec::with_capacity(urls.len());
        for url in urls {
            ensure!(
                authority_of(url)? == &authority,
                "{url}: every URL must name the same host and port as {first}"
            );
            let path = url.path_and_query().map_or("/", |p| p.as_str());
            paths.push(Uri::try_from(path).with_context(|| format!("{url}: bad path"))?);
        }
        let addr = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80));
        let host =
            HeaderValue::from_str(authority.as_str()).context("authority is not a valid Host header")?;
        Ok(Self { addr, host, paths, next: AtomicUsize::new(0) })
    }

    /// The `host:port` to connect to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The `Host` header to send.
    pub fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// How many distinct URIs the target cycles through.
    pub fn url_count(&self) -> usize {
        self.paths.len()
    }

    /// The next URI, round-robin over all connections.
    pub fn next_path(&self) -> Uri {
        let index = match self.paths.len() {
            1 => 0,
            n => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        self.paths[index].clone()
    }
}

fn authority_of(url: &Uri) -> anyhow::Result<&Authority> {
    ensure!(url.scheme_str() == Some("http"), "{url}: only absolute http:// URLs are supported");
    url.authority().with_context(|| format!("{url}: no host"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uris(urls: &[&str]) -> Vec<Uri> {
        urls.iter().map(|u| u.parse().unwrap()).collect()
    }

    #[test]
    fn cycles_through_paths_on_one_authority() {
        let target = Target::new(&uris(&["http://127.0.0.1:8080/a?x=1", "http://127.0.0.1:8080/b"])).unwrap();
        assert_eq!(target.addr(), "127.0.0.1:8080");
        assert_eq!(target.host(), "127.0.0.1:8080");
        let seen: Vec<_> = (0..3).map(|_| target.next_path().to_string()).collect();
        assert_eq!(seen, ["/a?x=1", "/b", "/a?x=1"]);
    }

    #[test]
    fn defaults_to_port_80_and_root_path() {
        let target = Target::new(&uris(&["http://localhost"])).unwrap();
        assert_eq!(target.addr(), "localhost:80");
        assert_eq!(target.next_path(), "/");
    }

    #[test]
    fn rejects_mixed_authorities_and_other_schemes() {
        assert!(Target::new(&uris(&["http://a:1/", "http://b:1/"])).is_err());
        assert!(Target::new(&uris(&["https://a/"])).is_err());
        assert!(Target::new(&uris(&["/relative"])).is_err());
        assert!(Target::new(&[]).is_err());
    }
}

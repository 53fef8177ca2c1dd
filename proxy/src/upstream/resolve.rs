//! An endpoint's addresses: an IP literal as it is, a name looked up once and refreshed.
//!
//! A name is looked up when the endpoint first connects, and its addresses are kept. Once
//! they are older than the upstream's `dns_refresh`, the next connect still uses them and
//! starts one lookup in the background (as Envoy's strict DNS refreshes on a period, without
//! a request ever waiting for it). A lookup that fails keeps the addresses that worked, so a
//! resolver outage does not take the endpoint down. Only the very first lookup of a name is
//! waited for, and only its failure is a connect error.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::EndpointAddr;

/// Looks up a `host:port` text.
pub type Lookup =
    Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>> + Send + Sync>;

/// The addresses of one endpoint.
pub struct Resolver {
    addr: EndpointAddr,
    /// Set for an IP literal, which is never looked up.
    literal: Option<SocketAddr>,
    refresh: Duration,
    lookup: Lookup,
    /// Shared with the background refresh.
    known: Arc<Mutex<Known>>,
}

#[derive(Debug, Default)]
struct Known {
    /// Empty until the first lookup succeeds.
    addrs: Arc<[SocketAddr]>,
    /// When `addrs` were looked up (or a refresh last failed).
    at: Option<Instant>,
    refreshing: bool,
}

impl Resolver {
    /// Looks names up with the system resolver (`getaddrinfo`, on the blocking pool).
    pub fn new(addr: EndpointAddr, refresh: Duration) -> Self {
        let lookup: Lookup = Arc::new(|host| {
            Box::pin(async move { tokio::net::lookup_host(host).await.map(Iterator::collect) })
        });
        Self::with_lookup(addr, refresh, lookup)
    }

    /// Looks names up with `lookup`.
    pub fn with_lookup(addr: EndpointAddr, refresh: Duration, lookup: Lookup) -> Self {
        let literal = addr.as_str().parse().ok();
        Self { addr, literal, refresh, lookup, known: Arc::default() }
    }

    /// The addresses to connect to, in the order to try them.
    pub async fn addrs(&self) -> io::Result<Arc<[SocketAddr]>> {
        if let Some(literal) = self.literal {
            return Ok(Arc::new([literal]));
        }
        {
            let mut known = lock(&self.known);
            if !known.addrs.is_empty() {
                let stale = known.at.is_none_or(|at| at.elapsed() >= self.refresh);
                if stale && !known.refreshing {
                    known.refreshing = true;
                    tokio::spawn(refresh(self.addr.clone(), self.lookup.clone(), self.known.clone()));
                }
                return Ok(known.addrs.clone());
            }
        }
        // Never looked up (or never successfully): this connect waits for it.
        let addrs = found(&self.addr, (self.lookup)(self.addr.as_str().to_owned()).await)?;
        let mut known = lock(&self.known);
        known.addrs = addrs.clone();
        known.at = Some(Instant::now());
        Ok(addrs)
    }
}

/// One background lookup; a failure keeps the addresses known.
async fn refresh(addr: EndpointAddr, lookup: Lookup, known: Arc<Mutex<Known>>) {
    let result = found(&addr, lookup(addr.as_str().to_owned()).await);
    let mut known = lock(&known);
    known.refreshing = false;
    known.at = Some(Instant::now());
    match result {
        Ok(addrs) => {
            if *addrs != *known.addrs {
                tracing::info!(endpoint = %addr, addrs = ?addrs, "endpoint addresses changed");
            }
            known.addrs = addrs;
        }
        Err(error) => {
            tracing::warn!(endpoint = %addr, %error, "lookup failed; keeping the last addresses");
        }
    }
}

/// A lookup's addresses; none found is an error too.
fn found(addr: &EndpointAddr, result: io::Result<Vec<SocketAddr>>) -> io::Result<Arc<[SocketAddr]>> {
    let addrs = result?;
    if addrs.is_empty() {
        let message = format!("{addr}: the name has no addresses");
        return Err(io::Error::new(io::ErrorKind::NotFound, message));
    }
    Ok(addrs.into())
}

fn lock(known: &Mutex<Known>) -> std::sync::MutexGuard<'_, Known> {
    known.lock().unwrap_or_else(|e| e.into_inner())
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("addr", &self.addr)
            .field("refresh", &self.refresh)
            .field("known", &lock(&self.known).addrs)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const REFRESH: Duration = Duration::from_secs(30);

    /// A lookup that answers from `answers` in turn (the last one for good) and counts calls.
    fn scripted(answers: Vec<io::Result<Vec<SocketAddr>>>) -> (Lookup, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let answers: Vec<_> = answers.into_iter().map(|a| a.map_err(|e| e.kind())).collect();
        let lookup: Lookup = Arc::new(move |_| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let answer = answers[n.min(answers.len() - 1)].clone().map_err(io::Error::from);
            Box::pin(async move { answer })
        });
        (lookup, calls)
    }

    fn at(ip: &str) -> SocketAddr {
        format!("{ip}:8080").parse().unwrap()
    }

    fn failed() -> io::Result<Vec<SocketAddr>> {
        Err(io::ErrorKind::NotFound.into())
    }

    /// Lets the background refresh run.
    async fn settle() {
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn an_ip_literal_is_never_looked_up() {
        let (lookup, calls) = scripted(vec![failed()]);
        let resolver = Resolver::with_lookup("10.0.0.7:8080".parse().unwrap(), REFRESH, lookup);
        assert_eq!(&*resolver.addrs().await.unwrap(), &[at("10.0.0.7")]);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_is_looked_up_once_per_refresh_period() {
        let (lookup, calls) = scripted(vec![Ok(vec![at("10.0.0.1")]), Ok(vec![at("10.0.0.2")])]);
        let resolver = Resolver::with_lookup("origin.internal:8080".parse().unwrap(), REFRESH, lookup);
        assert_eq!(&*resolver.addrs().await.unwrap(), &[at("10.0.0.1")]);
        assert_eq!(&*resolver.addrs().await.unwrap(), &[at("10.0.0.1")]);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "fresh addresses are not looked up again");

        tokio::time::advance(REFRESH).await;
        // Stale: this connect still uses what is known, and a refresh starts behind it.
        assert_eq!(&*resolver.addrs().await.unwrap(), &[at("10.0.0.1")]);
        assert_eq!(&*resolver.addrs().await.unwrap(), &[at("10.0.0.1")]);
        settle().await;
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one refresh, however many connects");
        assert_eq!(&*resolver.addrs().await.unwrap(), &[at("10.0.0.2")]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_keeps_the_last_addresses() {
        let (lookup, calls) = scripted(vec![Ok(vec![at("10.0.0.1")]), failed()]);
        let resolver = Resolver::with_lookup("origin.internal:8080".parse().unwrap(), REFRESH, lookup);
        resolver.addrs().await.unwrap();
        tokio::time::advance(REFRESH).await;
        resolver.addrs().await.unwrap();
        settle().await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(&*resolver.addrs().await.unwrap(), &[at("10.0.0.1")]);
        // The failure counts as a refresh: the next try waits for the next period.
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_first_lookup_that_fails_or_finds_nothing_is_an_error() {
        let (lookup, calls) = scripted(vec![failed(), Ok(vec![]), Ok(vec![at("10.0.0.3")])]);
        let resolver = Resolver::with_lookup("origin.internal:8080".parse().unwrap(), REFRESH, lookup);
        assert_eq!(resolver.addrs().await.unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(resolver.addrs().await.unwrap_err().kind(), io::ErrorKind::NotFound);
        // Nothing known yet: the next connect looks up again at once.
        assert_eq!(&*resolver.addrs().await.unwrap(), &[at("10.0.0.3")]);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn the_system_resolver_finds_localhost() {
        let resolver = Resolver::new("localhost:8080".parse().unwrap(), REFRESH);
        let addrs = resolver.addrs().await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 8080), "{addrs:?}");
    }
}

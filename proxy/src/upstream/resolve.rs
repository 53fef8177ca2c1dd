//! An endpoint's addresses: an IP literal as it is, a name looked up once and refreshed.
//!
//! A name is looked up when the endpoint first connects, and its addresses are kept. Once
//! they are older than the upstream's `dns_refresh`, the next connect still uses them and
//! starts one lookup in the background, so no request waits for a refresh. A lookup that
//! fails (or takes longer than [`LOOKUP_TIMEOUT`]) keeps the addresses that worked, so a
//! resolver outage does not take the endpoint down. Refreshes happen on connects: a pooled
//! keep-alive connection keeps the address it was made to until it closes (the upstream's
//! `idle_timeout` bounds that for idle ones).
//!
//! The first lookup of a name is waited for, by one connect at a time: it runs as its own
//! task, so a connect that gives up on it (its connect timeout) does not lose the answer for
//! the next. Only its failure is a connect error.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::EndpointAddr;
use super::metrics::{LookupOutcome, Lookups};

/// Looks up a `host:port`.
pub type Lookup = Arc<
    dyn Fn(&EndpointAddr) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>> + Send + Sync,
>;

/// Longest a lookup may take before it counts as failed.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The addresses of one endpoint.
pub struct Resolver {
    addr: EndpointAddr,
    /// Set for an IP literal, which is never looked up.
    literal: Option<SocketAddr>,
    refresh: Duration,
    lookup: Lookup,
    /// `accel_endpoint_lookups_total` of the endpoint.
    lookups: Lookups,
    /// Shared with the lookup tasks.
    known: Arc<Mutex<Known>>,
    /// Held by the connect that waits for the first lookup; the others wait their turn.
    first: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Known {
    /// Empty until a lookup succeeds.
    addrs: Arc<[SocketAddr]>,
    /// When `addrs` were looked up (or a refresh last failed).
    at: Option<Instant>,
    refreshing: bool,
    /// Background refreshes ended so far, and their signal: what tests wait for.
    #[cfg(test)]
    ended: (usize, Arc<tokio::sync::Notify>),
}

impl Resolver {
    /// Looks names up with the system resolver (`getaddrinfo`, on the blocking pool).
    pub fn new(addr: EndpointAddr, refresh: Duration) -> Self {
        let lookup: Lookup = Arc::new(|addr| {
            let host = addr.as_str().to_owned();
            Box::pin(async move { tokio::net::lookup_host(host).await.map(Iterator::collect) })
        });
        Self::with_lookup(addr, refresh, lookup)
    }

    /// Looks names up with `lookup`.
    pub fn with_lookup(addr: EndpointAddr, refresh: Duration, lookup: Lookup) -> Self {
        let literal = addr.as_str().parse().ok();
        let first = tokio::sync::Mutex::new(());
        Self { addr, literal, refresh, lookup, lookups: Lookups::default(), known: Arc::default(), first }
    }

    /// Counts each lookup in `lookups`.
    pub fn counted(self, lookups: Lookups) -> Self {
        Self { lookups, ..self }
    }

    /// The addresses to connect to, in the order to try them.
    pub async fn addrs(&self) -> io::Result<Arc<[SocketAddr]>> {
        if let Some(literal) = self.literal {
            return Ok(Arc::new([literal]));
        }
        if let Some(addrs) = self.known() {
            return Ok(addrs);
        }
        let _turn = self.first.lock().await;
        // The connect before this one may have found them meanwhile.
        if let Some(addrs) = self.known() {
            return Ok(addrs);
        }
        let lookup = tokio::spawn(look_up(self.task(), self.known.clone()));
        match lookup.await {
            Ok(result) => result,
            Err(panicked) => Err(io::Error::other(panicked)),
        }
    }

    /// The addresses known, if any; starts a background refresh when they are stale.
    fn known(&self) -> Option<Arc<[SocketAddr]>> {
        let mut known = lock(&self.known);
        if known.addrs.is_empty() {
            return None;
        }
        let stale = known.at.is_none_or(|at| at.elapsed() >= self.refresh);
        if stale && !known.refreshing {
            known.refreshing = true;
            let refreshing = Refreshing(self.known.clone());
            tokio::spawn(refresh(self.task(), refreshing));
        }
        Some(known.addrs.clone())
    }

    /// Resolves once `n` background refreshes have ended.
    #[cfg(test)]
    async fn refreshes_ended(&self, n: usize) {
        let signal = lock(&self.known).ended.1.clone();
        loop {
            // Registered before the check, so an end in between is not missed.
            let ended = signal.notified();
            if lock(&self.known).ended.0 >= n {
                return;
            }
            ended.await;
        }
    }

    /// What a lookup task needs.
    fn task(&self) -> LookupTask {
        LookupTask { addr: self.addr.clone(), lookup: self.lookup.clone(), lookups: self.lookups.clone() }
    }
}

/// The name to look up, how, and where to count it.
struct LookupTask {
    addr: EndpointAddr,
    lookup: Lookup,
    lookups: Lookups,
}

/// One lookup, bounded by [`LOOKUP_TIMEOUT`] and counted; what it finds is kept.
async fn look_up(task: LookupTask, known: Arc<Mutex<Known>>) -> io::Result<Arc<[SocketAddr]>> {
    let found = match tokio::time::timeout(LOOKUP_TIMEOUT, (task.lookup)(&task.addr)).await {
        Ok(Ok(addrs)) if addrs.is_empty() => {
            Err(io::Error::new(io::ErrorKind::NotFound, "the name has no addresses"))
        }
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "lookup timed out")),
    };
    let addrs: Arc<[SocketAddr]> = match found {
        Ok(addrs) => addrs.into(),
        Err(error) => {
            task.lookups.count(LookupOutcome::Failed);
            return Err(error);
        }
    };
    let mut known = lock(&known);
    if *addrs != *known.addrs && !known.addrs.is_empty() {
        tracing::info!(endpoint = %task.addr, addrs = ?addrs, "endpoint addresses changed");
        task.lookups.count(LookupOutcome::Changed);
    } else {
        task.lookups.count(LookupOutcome::Found);
    }
    known.addrs = addrs.clone();
    known.at = Some(Instant::now());
    Ok(addrs)
}

/// One background refresh; a failure keeps the addresses known until the next period.
async fn refresh(task: LookupTask, refreshing: Refreshing) {
    let addr = task.addr.clone();
    if let Err(error) = look_up(task, refreshing.0.clone()).await {
        lock(&refreshing.0).at = Some(Instant::now());
        tracing::warn!(endpoint = %addr, %error, "lookup failed; keeping the last addresses");
    }
}

/// A refresh under way; it ends (however the task ends) when this is dropped.
struct Refreshing(Arc<Mutex<Known>>);

impl Drop for Refreshing {
    fn drop(&mut self) {
        let mut known = lock(&self.0);
        known.refreshing = false;
        #[cfg(test)]
        {
            known.ended.0 += 1;
            known.ended.1.notify_waiters();
        }
    }
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

    /// A lookup that answers from `answers` in turn (the last one for good), each after its
    /// delay (`None`: never), and counts calls.
    fn scripted(answers: Vec<io::Result<Vec<SocketAddr>>>) -> (Lookup, Arc<Calls>) {
        delayed(answers.into_iter().map(|a| (Some(Duration::ZERO), a)).collect())
    }

    fn delayed(answers: Vec<(Option<Duration>, io::Result<Vec<SocketAddr>>)>) -> (Lookup, Arc<Calls>) {
        let calls = Arc::new(Calls::default());
        let counter = calls.clone();
        let answers: Vec<_> = answers.into_iter().map(|(d, a)| (d, a.map_err(|e| e.kind()))).collect();
        let lookup: Lookup = Arc::new(move |_: &EndpointAddr| {
            let n = counter.count.fetch_add(1, Ordering::SeqCst);
            counter.made.notify_waiters();
            let (delay, answer) = answers[n.min(answers.len() - 1)].clone();
            Box::pin(async move {
                match delay {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => std::future::pending().await,
                }
                answer.map_err(io::Error::from)
            })
        });
        (lookup, calls)
    }

    fn at(ip: &str) -> SocketAddr {
        format!("{ip}:8080").parse().unwrap()
    }

    fn failed() -> io::Result<Vec<SocketAddr>> {
        Err(io::ErrorKind::NotFound.into())
    }

    /// The lookups made, and a signal for each.
    #[derive(Default)]
    struct Calls {
        count: AtomicUsize,
        made: tokio::sync::Notify,
    }

    impl Calls {
        fn load(&self, order: Ordering) -> usize {
            self.count.load(order)
        }

        /// Resolves once `n` lookups have been made.
        async fn reached(&self, n: usize) {
            loop {
                let made = self.made.notified();
                if self.load(Ordering::SeqCst) >= n {
                    return;
                }
                made.await;
            }
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
        let lookups = Lookups::default();
        let resolver = Resolver::with_lookup("origin.internal:8080".parse().unwrap(), REFRESH, lookup)
            .counted(lookups.clone());
        assert_eq!(&*resolver.addrs().await.unwrap(), &[at("10.0.0.1")]);
        assert_eq!(&*resolver.addrs().await.unwrap(), &[at("10.0.0.1")]);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "fresh addresses are not looked up again");

        tokio::time::advance(REFRESH).await;
        // Stale: this connect still uses what is known, and a refresh starts behind it.
        assert_eq!(&*resolver.addrs().await.unwrap(), &[at("10.0.0.1")]);
        assert_eq!(&*resolver.addrs().await.unwrap(), &[at("10.0.0.1")]);
        resolver.refreshes_ended(1).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one refresh, however many connects");
        assert_eq!(&*resolver.addrs().await.unwrap(), &[at("10.0.0.2")]);
        assert_eq!(lookups.get(LookupOutcome::Found), 1);
        assert_eq!(lookups.get(LookupOutcome::Changed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_keeps_the_last_addresses() {
        let (lookup, calls) = scripted(vec![Ok(vec![at("10.0.0.1")]), failed()]);
        let resolver = Resolver::with_lookup("origin.internal:8080".parse().unwrap(), REFRESH, lookup);
        resolver.addrs().await.unwrap();
        tokio::time::advance(REFRESH).await;
        resolver.addrs().await.unwrap();
        resolver.refreshes_ended(1).await;
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

    #[tokio::test(start_paused = true)]
    async fn concurrent_first_connects_share_one_lookup() {
        let (lookup, calls) = delayed(vec![(Some(Duration::from_millis(50)), Ok(vec![at("10.0.0.1")]))]);
        let resolver = Resolver::with_lookup("origin.internal:8080".parse().unwrap(), REFRESH, lookup);
        let (a, b, c) = tokio::join!(resolver.addrs(), resolver.addrs(), resolver.addrs());
        for addrs in [a, b, c] {
            assert_eq!(&*addrs.unwrap(), &[at("10.0.0.1")]);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_lookup_outlives_the_connect_that_gave_up_on_it() {
        let (lookup, calls) = delayed(vec![(Some(Duration::from_secs(3)), Ok(vec![at("10.0.0.1")]))]);
        let resolver = Resolver::with_lookup("origin.internal:8080".parse().unwrap(), REFRESH, lookup);
        // The connect timeout runs out first.
        assert!(tokio::time::timeout(Duration::from_secs(1), resolver.addrs()).await.is_err());
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(&*resolver.addrs().await.unwrap(), &[at("10.0.0.1")]);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "the answer was kept, not looked up again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_that_hangs_times_out_and_the_next_period_refreshes_again() {
        let (lookup, calls) = delayed(vec![
            (Some(Duration::ZERO), Ok(vec![at("10.0.0.1")])),
            (None, Ok(vec![at("10.0.0.9")])),
            (Some(Duration::ZERO), Ok(vec![at("10.0.0.2")])),
        ]);
        let lookups = Lookups::default();
        let resolver = Resolver::with_lookup("origin.internal:8080".parse().unwrap(), REFRESH, lookup)
            .counted(lookups.clone());
        resolver.addrs().await.unwrap();
        tokio::time::advance(REFRESH).await;
        resolver.addrs().await.unwrap();
        // The refresh's lookup has started (its timeout runs from here) and hangs.
        calls.reached(2).await;
        tokio::time::advance(LOOKUP_TIMEOUT).await;
        resolver.refreshes_ended(1).await;
        assert_eq!(&*resolver.addrs().await.unwrap(), &[at("10.0.0.1")], "kept after the hung lookup");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(lookups.get(LookupOutcome::Failed), 1);
        tokio::time::advance(REFRESH).await;
        resolver.addrs().await.unwrap();
        resolver.refreshes_ended(2).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3, "the hung refresh did not block the next one");
        assert_eq!(&*resolver.addrs().await.unwrap(), &[at("10.0.0.2")]);
    }

    #[tokio::test]
    async fn the_system_resolver_finds_localhost() {
        let resolver = Resolver::new("localhost:8080".parse().unwrap(), REFRESH);
        let addrs = resolver.addrs().await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 8080), "{addrs:?}");
    }
}

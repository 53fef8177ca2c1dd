//! Least-connections picking among an upstream's available endpoints.

use std::sync::Arc;

use tokio::time::Instant;

use super::{Endpoint, Upstream};

/// Why no endpoint was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPick {
    /// Every endpoint has been tried.
    AllTried,
    /// The endpoints not tried yet are all at `max_connections_per_endpoint`.
    Full,
}

/// The endpoint chosen for one try.
#[derive(Debug, Clone)]
pub struct Pick {
    pub endpoint: Arc<Endpoint>,
    /// No endpoint was available, so this one was tried anyway (all unhealthy or ejected).
    pub panic: bool,
}

impl Upstream {
    /// Picks the endpoint with the fewest requests in flight among those available and not
    /// in `tried`; ties are broken at random so equal endpoints share the load. When none is
    /// available, picks among all untried endpoints the same way (never refuse while an
    /// endpoint might answer). Endpoints at `max_connections_per_endpoint` are skipped.
    pub fn pick(&self, tried: &[usize], now: Instant) -> Result<Pick, NoPick> {
        let cap = self.config.max_connections_per_endpoint;
        let untried = |e: &&Arc<Endpoint>| !tried.contains(&e.index);
        let open = |e: &&Arc<Endpoint>| untried(e) && cap.is_none_or(|cap| e.in_flight() < cap.get());
        least_loaded(self.endpoints.iter().filter(open).filter(|e| e.is_available(now)))
            .map(|endpoint| Pick { endpoint, panic: false })
            .or_else(|| {
                least_loaded(self.endpoints.iter().filter(open))
                    .map(|endpoint| Pick { endpoint, panic: true })
            })
            .ok_or_else(|| {
                if self.endpoints.iter().any(|e| untried(&e)) { NoPick::Full } else { NoPick::AllTried }
            })
    }
}

/// The least-loaded endpoint; among `n` tied ones each is chosen with probability `1/n`
/// (reservoir sampling, no allocation).
fn least_loaded<'a>(endpoints: impl Iterator<Item = &'a Arc<Endpoint>>) -> Option<Arc<Endpoint>> {
    let mut best: Option<&Arc<Endpoint>> = None;
    let mut best_load = usize::MAX;
    let mut ties = 0u32;
    for endpoint in endpoints {
        let load = endpoint.in_flight();
        if load < best_load {
            best = Some(endpoint);
            best_load = load;
            ties = 1;
        } else if load == best_load {
            ties += 1;
            if fastrand::u32(0..ties) == 0 {
                best = Some(endpoint);
            }
        }
    }
    best.cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::upstream::{Ejection, UpstreamConfig};
    use crate::upstream::{InFlight, UpstreamName};
    use std::time::Duration;

    fn upstream(n: usize) -> Upstream {
        capped(n, None)
    }

    fn capped(n: usize, cap: Option<usize>) -> Upstream {
        let config = UpstreamConfig {
            name: UpstreamName::try_from("api").unwrap(),
            endpoints: (0..n).map(|i| format!("127.0.0.1:{}", 8001 + i).parse().unwrap()).collect(),
            health: None,
            ejection: Ejection::default(),
            connect_timeout: Duration::from_secs(1),
            max_idle_per_endpoint: 8,
            idle_timeout: Duration::from_secs(90),
            read_timeout: Duration::from_secs(60),
            dns_refresh: Duration::from_secs(30),
            max_connections_per_endpoint: cap.and_then(std::num::NonZeroUsize::new),
            tls: None,
        };
        Upstream::new(config, &Metrics::new(&crate::metrics::DEFAULT_LATENCY_BUCKETS))
    }

    #[tokio::test]
    async fn picks_the_endpoint_with_fewest_in_flight() {
        let up = upstream(3);
        let now = Instant::now();
        let _a = InFlight::new(up.endpoints[0].clone());
        let _b = InFlight::new(up.endpoints[1].clone());
        let _c = InFlight::new(up.endpoints[1].clone());
        for _ in 0..20 {
            assert_eq!(up.pick(&[], now).unwrap().endpoint.index, 2);
        }
        assert_eq!(up.pick(&[2], now).unwrap().endpoint.index, 0);
    }

    #[tokio::test]
    async fn endpoints_at_their_cap_are_skipped() {
        let up = capped(2, Some(1));
        let now = Instant::now();
        let cap = up.config.max_connections_per_endpoint;
        let first = InFlight::try_new(up.endpoints[0].clone(), cap).expect("room on an idle endpoint");
        assert!(InFlight::try_new(up.endpoints[0].clone(), cap).is_none(), "the cap holds");
        for _ in 0..20 {
            assert_eq!(up.pick(&[], now).unwrap().endpoint.index, 1);
        }
        let _second = InFlight::try_new(up.endpoints[1].clone(), cap).unwrap();
        assert_eq!(up.pick(&[], now).unwrap_err(), NoPick::Full);
        assert_eq!(up.pick(&[0, 1], now).unwrap_err(), NoPick::AllTried);
        drop(first);
        assert_eq!(up.pick(&[], now).unwrap().endpoint.index, 0);
    }

    #[tokio::test]
    async fn ties_are_shared() {
        let up = upstream(3);
        let now = Instant::now();
        let mut seen = [0; 3];
        for _ in 0..300 {
            seen[up.pick(&[], now).unwrap().endpoint.index] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }

    #[tokio::test]
    async fn unavailable_endpoints_are_skipped_but_never_all() {
        let up = upstream(2);
        let now = Instant::now();
        up.endpoints[0].set_healthy(false);
        assert_eq!(up.pick(&[], now).unwrap().endpoint.index, 1);
        up.endpoints[1].set_healthy(false);
        let pick = up.pick(&[], now).unwrap();
        assert!(pick.panic);
        assert_eq!(up.pick(&[0, 1], now).unwrap_err(), NoPick::AllTried);
    }

    #[tokio::test]
    async fn the_last_available_endpoint_is_never_ejected() {
        let up = upstream(2);
        let now = Instant::now();
        let policy = Ejection {
            consecutive_failures: std::num::NonZeroU32::new(2).unwrap(),
            cooldown: Duration::from_secs(30),
        };
        up.endpoints[0].record_failure(&policy, true, now);
        up.endpoints[0].record_failure(&policy, true, now);
        assert!(!up.endpoints[0].is_available(now));
        assert!(up.endpoints[0].is_available(now + Duration::from_secs(31)));
        up.endpoints[1].record_failure(&policy, false, now);
        up.endpoints[1].record_failure(&policy, false, now);
        assert!(up.endpoints[1].is_available(now));
    }
}

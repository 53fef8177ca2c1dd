//! Active health checks: every `interval`, a GET of the configured path on each endpoint; a 2xx
//! within `timeout` is a success. `unhealthy_threshold` consecutive failures mark an endpoint
//! unhealthy (the picker skips it); `healthy_threshold` consecutive successes re-admit it.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::join_all;
use http::{Request, Uri};

use super::HealthCheck;
use super::{Endpoint, Upstream};
use crate::body::Body;

/// Runs the checks of `upstream` until `shutdown` completes. Returns at once when the upstream
/// has no health check configured.
pub async fn run(upstream: Arc<Upstream>, shutdown: impl Future<Output = ()>) {
    let Some(check) = upstream.config.health.clone() else { return };
    let mut streaks: Vec<Streak> = vec![Streak::default(); upstream.endpoints.len()];
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        let results = join_all(upstream.endpoints.iter().map(|e| probe(e, &check))).await;
        for ((endpoint, streak), ok) in upstream.endpoints.iter().zip(&mut streaks).zip(results) {
            streak.record(ok);
            if ok && streak.successes >= check.healthy_threshold.get() {
                endpoint.set_healthy(true);
            } else if !ok && streak.failures >= check.unhealthy_threshold.get() {
                endpoint.set_healthy(false);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Streak {
    successes: u32,
    failures: u32,
}

impl Streak {
    fn record(&mut self, ok: bool) {
        if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
        }
    }
}

/// One check of one endpoint: true on a 2xx answer within the timeout.
async fn probe(endpoint: &Endpoint, check: &HealthCheck) -> bool {
    let request = Request::get(Uri::from(check.path.clone()))
        .header(http::header::HOST, endpoint.addr.host_header())
        .header(http::header::USER_AGENT, "accel-health-check")
        .body(Body::empty());
    let Ok(request) = request else { return false };
    match tokio::time::timeout(check.timeout, endpoint.connections.send(request)).await {
        Ok(Ok(response)) => {
            let ok = response.status().is_success();
            // Read the (small) body to its end so the connection can be used again; one that
            // breaks off (no client sees it, nothing counts it) is left to the debug log.
            if let Err(e) = http_body_util::BodyExt::collect(response.into_body()).await {
                tracing::debug!(endpoint = %endpoint.addr, error = %e, "health check's body broke off");
            }
            ok
        }
        Ok(Err(e)) => {
            tracing::debug!(endpoint = %endpoint.addr, error = %e, "health check failed");
            false
        }
        Err(_) => {
            tracing::debug!(endpoint = %endpoint.addr, "health check timed out");
            false
        }
    }
}

//! Routes: the rules that say which requests go where and with what treatment.
//!
//! A [`RouteRule`] is one validated `[[route]]` from a rules file. The running [`RouteTable`]
//! holds them in match order, each resolved to its upstream and its metric handles, and is
//! swapped whole on reload. Matching is **first match in order**: files in sorted path order,
//! routes in file order — like Envoy's route tables, so an operator reads top to bottom, and a
//! catch-all route last acts as the default route. No match: 404 from the proxy.

mod matcher;
mod metrics;
pub mod path;
pub mod slo;
mod table;
pub mod timing;

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

pub use crate::params::PathParams;
pub use matcher::{HostMatch, Matcher, PathMatch, PathPattern};
pub use metrics::{RouteMetrics, UpgradeResult};
pub use table::{Route, RouteTable};

pub use crate::name::RouteName;
use crate::name::UpstreamName;

/// One validated route rule.
#[derive(Debug, Clone)]
pub struct RouteRule {
    pub name: RouteName,
    /// The rules file it came from.
    pub file: Arc<Path>,
    pub matcher: Matcher,
    pub upstream: UpstreamName,
    pub timeouts: Timeouts,
    pub retry: RetryPolicy,
    /// `compress = { ... }`: `None` when the route has no table (the `[compress]` defaults apply).
    pub compress: Option<crate::compress::CompressSettings>,
    /// Caching, invalidation and coalescing.
    pub cache: crate::cache::RouteCache,
    /// Rate limits, all of which a request must pass; empty: not rate limited.
    pub rate_limit: Vec<crate::limit::rule::LimitRule>,
    /// Targets for the health score and advice (`slo`); the platform's by default.
    pub slo: slo::Slo,
    /// Paths kept warm (`warm`): fetched at start-up and after purges.
    pub warm: Vec<String>,
    /// Timing headers on answers and the slow-request threshold (`timing`).
    pub timing: timing::RouteTiming,
    /// Most request body bytes (`max_body_size`); `None`: `limits.max_body_size`.
    pub max_body_size: Option<u64>,
    /// Protocol upgrades tunnelled (`upgrades`, `upgrade_idle_timeout`).
    pub upgrades: Upgrades,
}

/// Which `Upgrade` protocols a route tunnels, and how long a tunnel may stay quiet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrades {
    /// Protocol names, lowercase (`websocket`); empty: upgrade headers are stripped.
    pub protocols: Vec<String>,
    /// No byte either way for this long closes the tunnel.
    pub idle_timeout: Duration,
}

impl Upgrades {
    /// True when `protocol` (as the `Upgrade` header names it, version and all) may pass.
    pub fn allows(&self, protocol: &str) -> bool {
        let name = protocol.split('/').next().unwrap_or("").trim();
        self.protocols.iter().any(|p| p.eq_ignore_ascii_case(name))
    }
}

/// How long the upstream may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// One try, until the response headers arrive.
    pub response: Duration,
    /// All tries together.
    pub total: Duration,
}

/// When a failed try is repeated on another endpoint.
///
/// A connect failure is always retried (the request was not sent). An upstream status in
/// `statuses` is retried only for idempotent methods whose request body was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: NonZeroU32,
    pub statuses: Vec<StatusCode>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN), statuses: Vec::new() }
    }
}

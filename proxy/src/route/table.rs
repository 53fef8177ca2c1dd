//! The running route table: one immutable snapshot of the rules, swapped whole on reload.

use std::sync::Arc;

use http::Method;

use super::RouteMetrics;
use super::{PathParams, RouteRule};
use crate::cache::RouteCaching;
use crate::compress::RouteCompression;
use crate::limit::RouteLimits;
use crate::upstream::Upstream;

/// A route as the proxy runs it: the rule, its upstream and its metric handles, resolved when
/// the rules load so a request does no lookups by name.
#[derive(Debug)]
pub struct Route {
    pub rule: RouteRule,
    pub upstream: Arc<Upstream>,
    pub metrics: RouteMetrics,
    /// The route's compression; `None` when it does not compress.
    pub compress: Option<Arc<RouteCompression>>,
    /// The route's caching: its settings, lookup counters and compression.
    pub cache: Arc<RouteCaching>,
    /// The route's rate limiters, kept across reloads while their definition is unchanged.
    pub limits: RouteLimits,
}

/// Routes in match order.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// A table of `routes`, matched in the order given.
    pub fn new(routes: Vec<Arc<Route>>) -> Self {
        Self { routes }
    }

    /// The first route that matches, with its path parameters in `params`.
    pub fn find(
        &self,
        host: Option<&str>,
        method: &Method,
        path: &str,
        params: &mut PathParams,
    ) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.rule.matcher.matches(host, method, path, params))
    }

    /// All routes, in match order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}

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
    /// How many header fields the stages after the forward may add to an answer (see
    /// [`Route::added_fields`]): the room an upstream response's header map is made with.
    pub added_fields: usize,
}

impl Route {
    /// How many header fields the way back may add to an answer of `rule`: those every answer
    /// gets (`answer_fields`: the request id, `Via`), the cache's status fields
    /// (`cache_status_fields`, on a caching route), `Content-Encoding` and `Vary` when it
    /// `compresses`, the `RateLimit` pair when its `limits` send them, and the timing fields it
    /// asks for. An upstream answer's map made with this room is not regrown on its way to
    /// the client; and the client's connection keeps that map (hyper parses the next
    /// request's head into it), so the room is no larger than the route needs.
    pub fn added_fields(
        rule: &RouteRule,
        answer_fields: usize,
        cache_status_fields: usize,
        compresses: bool,
        limits: &RouteLimits,
    ) -> usize {
        let count = |on: bool, fields: usize| if on { fields } else { 0 };
        answer_fields
            + count(rule.cache.rule.is_some(), cache_status_fields)
            + count(compresses, 2)
            + count(limits.sends_headers(), 2)
            + count(rule.timing.server_timing, 1)
            + count(rule.timing.response_time, 1)
    }
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

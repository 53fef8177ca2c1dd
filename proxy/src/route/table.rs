//! The running route table: one immutable snapshot of the rules, swapped whole on reload.

use std::sync::Arc;

use http::Method;

use super::RouteMetrics;
use super::{PathParams, RouteRule};
use crate::cache::RouteCaching;
use crate::compress::RouteCompression;
use crate::forward::headers::ForwardedConfig;
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
    /// How many header fields the way back may add to an answer of `rule`: the request id and
    /// `Via` (`forwarded`), the cache's status fields (`cache_status_fields` on a caching
    /// route), `Content-Encoding` and `Vary` when it `compresses`, the `RateLimit` pair when
    /// its limits `send_headers`, and the timing fields it asks for. An upstream response's
    /// map made with this room is not regrown on its way to the client; and the client's
    /// connection keeps that map (hyper parses the next request into it), so the room is no
    /// larger than the route needs.
    pub fn added_fields(
        rule: &RouteRule,
        forwarded: &ForwardedConfig,
        cache_status_fields: usize,
        compresses: bool,
        limits: &RouteLimits,
    ) -> usize {
        let count = |on: bool, fields: usize| if on { fields } else { 0 };
        count(forwarded.request_id, 1)
            + count(forwarded.via.is_some(), 1)
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::Path;

    use http::HeaderValue;

    use super::*;
    use crate::config::Problems;
    use crate::forward::headers::Via;
    use crate::upstream::UpstreamName;

    fn rule(fields: &str) -> RouteRule {
        let upstreams: HashSet<UpstreamName> = [UpstreamName::try_from("api").unwrap()].into();
        let text = format!("[[route]]\nname = \"r\"\nupstream = \"api\"\n{fields}\n");
        let mut problems = Problems::default();
        let mut routes =
            crate::config::rules::parse(Path::new("rules.toml"), &text, &upstreams, &mut problems);
        assert!(problems.is_empty(), "{problems}");
        routes.remove(0)
    }

    #[test]
    fn the_way_back_counts_each_field_a_stage_of_the_route_adds() {
        let plain = rule("");
        let no_ids = ForwardedConfig { request_id: false, ..ForwardedConfig::default() };
        let none = RouteLimits::default();
        assert_eq!(Route::added_fields(&plain, &no_ids, 2, false, &none), 0);
        assert_eq!(Route::added_fields(&plain, &ForwardedConfig::default(), 2, false, &none), 1, "the id");
        let via = ForwardedConfig { via: Some(Via::new(&HeaderValue::from_static("accel"))), ..no_ids };
        assert_eq!(Route::added_fields(&plain, &via, 2, false, &none), 1, "Via");

        let cached = rule("cache = { ttl = \"1m\" }");
        assert_eq!(Route::added_fields(&cached, &ForwardedConfig::default(), 1, false, &none), 2);
        assert_eq!(Route::added_fields(&cached, &ForwardedConfig::default(), 2, true, &none), 5);
        let timed = rule("timing = { server_timing = true, response_time = true }");
        assert_eq!(Route::added_fields(&timed, &ForwardedConfig::default(), 2, false, &none), 3);
    }
}

//! `scope = "cluster"` limits: the check goes to the shared Redis tier
//! ([`crate::tier::gcra`]), so that all sidecars together let through what the limit says.
//! While Redis is unavailable the fail mode decides: `open` (default) checks the local limiter
//! instead, `closed` refuses with `503` and `Retry-After`.

use std::time::Duration;

use super::Refusal;
use super::key::KeyInput;
use super::limiter::{Decision, Limiter};
use super::rule::LimitRule;
use crate::name::RouteName;
use crate::tier::{ClusterCheck, ClusterLimit, GcraDecision, RedisTier};

/// Checks one request against a cluster-scoped limit; `Err` is the fail-closed refusal.
pub(super) async fn check(
    tier: &RedisTier,
    route: &RouteName,
    rule: &LimitRule,
    local: &Limiter,
    input: &KeyInput<'_>,
) -> Result<Decision, Refusal> {
    let limit = ClusterLimit {
        route: route.as_str().to_owned(),
        limit: rule.name.as_str().to_owned(),
        rate: rule.rate.count,
        period: rule.rate.per,
        burst: rule.burst,
    };
    let key = format!("{:016x}", rule.key.cluster_key(input));
    let interval = rule.rate.interval();
    match tier.check_limit(&limit, &key).await {
        ClusterCheck::Decided(GcraDecision::Allowed { remaining }) => Ok(Decision::Pass {
            remaining,
            wait: Duration::ZERO,
            reset: interval * rule.burst.get().saturating_sub(remaining),
        }),
        ClusterCheck::Decided(GcraDecision::Limited { retry_after }) => {
            Ok(Decision::Reject { retry_after, reset: retry_after + interval * (rule.burst.get() - 1) })
        }
        ClusterCheck::Fallback => Ok(local.check(rule.key.key(input))),
        ClusterCheck::Refuse => Err(Refusal::ClusterUnavailable),
    }
}

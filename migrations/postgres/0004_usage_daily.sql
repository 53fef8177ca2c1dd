-- The usage page reads a daily rollup of usage_analytics (per tenant, day and endpoint) instead
-- of aggregating up to a year of raw rows per request; refreshed with the other analytics
-- views, so an answer is at most one refresh interval behind the raw rows (the page is cached
-- for a minute anyway).
CREATE MATERIALIZED VIEW usage_daily AS
SELECT tenant_id,
       recorded_at / 86400                                               AS day,
       endpoint,
       count(*)                                                          AS requests,
       CAST(sum(CASE WHEN status >= 500 THEN 1 ELSE 0 END) AS BIGINT)    AS errors,
       CAST(sum(CASE WHEN duration_ms >= 1000 THEN 1 ELSE 0 END) AS BIGINT) AS slow,
       sum(duration_ms)                                                  AS total_ms,
       max(duration_ms)                                                  AS max_ms
FROM usage_analytics
GROUP BY 1, 2, 3;
CREATE UNIQUE INDEX usage_daily_idx ON usage_daily (tenant_id, day, endpoint);

CREATE OR REPLACE FUNCTION refresh_analytics_views() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    REFRESH MATERIALIZED VIEW CONCURRENTLY golden_lead_tier_distribution;
    REFRESH MATERIALIZED VIEW CONCURRENTLY pricing_hourly_performance;
    REFRESH MATERIALIZED VIEW CONCURRENTLY usage_daily;
END
$$;

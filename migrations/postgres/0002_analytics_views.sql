-- Materialized views for the analytics pages, refreshed by the origin on a schedule through
-- refresh_analytics_views(). The unique indexes allow REFRESH ... CONCURRENTLY, which keeps
-- the views readable while they refresh.

CREATE MATERIALIZED VIEW golden_lead_tier_distribution AS
SELECT tier,
       count(*)         AS leads,
       avg(probability) AS avg_probability,
       avg(score)       AS avg_score
FROM golden_leads
GROUP BY tier;
CREATE UNIQUE INDEX golden_lead_tier_distribution_idx ON golden_lead_tier_distribution (tier);

CREATE MATERIALIZED VIEW pricing_hourly_performance AS
SELECT (recorded_at / 3600) * 3600                                   AS hour,
       location,
       count(*)                                                      AS points,
       avg(price)                                                    AS avg_price,
       min(price)                                                    AS min_price,
       max(price)                                                    AS max_price,
       CAST(sum(CASE WHEN converted THEN 1 ELSE 0 END) AS BIGINT)    AS conversions
FROM pricing_history
GROUP BY 1, 2;
CREATE UNIQUE INDEX pricing_hourly_performance_idx ON pricing_hourly_performance (hour, location);

CREATE FUNCTION refresh_analytics_views() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    REFRESH MATERIALIZED VIEW CONCURRENTLY golden_lead_tier_distribution;
    REFRESH MATERIALIZED VIEW CONCURRENTLY pricing_hourly_performance;
END
$$;

-- The analytics views on SQLite: plain views (SQLite has no materialized views), computed on
-- read; same names and columns as the PostgreSQL materialized views.

CREATE VIEW golden_lead_tier_distribution AS
SELECT tier,
       count(*)         AS leads,
       avg(probability) AS avg_probability,
       avg(score)       AS avg_score
FROM golden_leads
GROUP BY tier;

CREATE VIEW pricing_hourly_performance AS
SELECT (recorded_at / 3600) * 3600                                   AS hour,
       location,
       count(*)                                                      AS points,
       avg(price)                                                    AS avg_price,
       min(price)                                                    AS min_price,
       max(price)                                                    AS max_price,
       CAST(sum(CASE WHEN converted THEN 1 ELSE 0 END) AS BIGINT)    AS conversions
FROM pricing_history
GROUP BY 1, 2;

-- The daily usage rollup on SQLite: a plain view (no materialized views), computed on read;
-- a filter on tenant and day is pushed into it and served by the covering index. Same name and
-- columns as the PostgreSQL materialized view.
CREATE VIEW usage_daily AS
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

-- One view refresher per cluster: every instance ticks, but a refresh runs only when the
-- views are due (the last one, by any instance, is at least an interval old) and nobody else
-- is refreshing (a transaction-scoped advisory lock, keyed by the schema so that deployments
-- sharing a database do not block each other). Three instances refresh once an interval, not
-- three times.

-- Nothing reads the tier distribution: dropped rather than refreshed every minute.
DROP MATERIALIZED VIEW golden_lead_tier_distribution;

CREATE OR REPLACE FUNCTION refresh_analytics_views() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    REFRESH MATERIALIZED VIEW CONCURRENTLY pricing_hourly_performance;
    REFRESH MATERIALIZED VIEW CONCURRENTLY usage_daily;
END
$$;

-- The last refresh, by whichever instance: one row.
CREATE TABLE analytics_refreshes (
    id           SMALLINT PRIMARY KEY CHECK (id = 1),
    refreshed_at DOUBLE PRECISION NOT NULL,
    refreshes    BIGINT NOT NULL
);
INSERT INTO analytics_refreshes (id, refreshed_at, refreshes) VALUES (1, 0, 0);

-- The advisory lock's key: a constant for "analytics views" and the current schema.
CREATE FUNCTION analytics_refresh_lock_key() RETURNS integer
LANGUAGE sql STABLE AS $$ SELECT hashtext(current_schema()) $$;

-- Refreshes the views when at least `min_interval_secs` have passed since the last refresh and
-- no other session is refreshing; whether it did. Times are the database server's clock, the
-- one clock every instance shares.
CREATE FUNCTION refresh_analytics_views_if_due(min_interval_secs DOUBLE PRECISION) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    started DOUBLE PRECISION := extract(epoch FROM clock_timestamp());
    last    DOUBLE PRECISION;
BEGIN
    IF NOT pg_try_advisory_xact_lock(4242001, analytics_refresh_lock_key()) THEN
        RETURN false;
    END IF;
    SELECT refreshed_at INTO last FROM analytics_refreshes WHERE id = 1;
    IF started - last < min_interval_secs THEN
        RETURN false;
    END IF;
    PERFORM refresh_analytics_views();
    UPDATE analytics_refreshes SET refreshed_at = started, refreshes = refreshes + 1 WHERE id = 1;
    RETURN true;
END
$$;

-- A refresh on demand (the revenue platform's name for it; the seed calls it): waits for a
-- refresh in progress elsewhere, then refreshes and records it.
CREATE FUNCTION refresh_performance_views() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(4242001, analytics_refresh_lock_key());
    PERFORM refresh_analytics_views();
    UPDATE analytics_refreshes
    SET refreshed_at = extract(epoch FROM clock_timestamp()), refreshes = refreshes + 1
    WHERE id = 1;
END
$$;

-- The revenue platform's performance functions, for operators (psql, dashboards). PostgreSQL
-- only: SQLite has no statistics views. Times are unix seconds, as everywhere in the schema.

-- Per table of the current schema, largest first: rows, scans, writes, size, maintenance.
CREATE FUNCTION get_table_performance_stats()
RETURNS TABLE (
    table_name   TEXT,
    live_rows    BIGINT,
    dead_rows    BIGINT,
    seq_scans    BIGINT,
    index_scans  BIGINT,
    inserts      BIGINT,
    updates      BIGINT,
    deletes      BIGINT,
    total_bytes  BIGINT,
    last_vacuum  BIGINT,
    last_analyze BIGINT
)
LANGUAGE sql STABLE AS $$
    SELECT relname::TEXT,
           n_live_tup,
           n_dead_tup,
           seq_scan,
           COALESCE(idx_scan, 0),
           n_tup_ins,
           n_tup_upd,
           n_tup_del,
           pg_total_relation_size(relid),
           CAST(extract(epoch FROM GREATEST(last_vacuum, last_autovacuum)) AS BIGINT),
           CAST(extract(epoch FROM GREATEST(last_analyze, last_autoanalyze)) AS BIGINT)
    FROM pg_stat_user_tables
    WHERE schemaname = current_schema()
    ORDER BY pg_total_relation_size(relid) DESC, relname
$$;

-- Statements slower than `threshold_ms`, slowest first, at most `max_rows` (1-1000): from
-- pg_stat_statements when the extension is installed (mean time over its calls), else the
-- statements running now in this database for at least the threshold (pg_stat_activity).
-- `source` says which.
CREATE FUNCTION get_recent_slow_queries(threshold_ms DOUBLE PRECISION, max_rows INTEGER)
RETURNS TABLE (
    query    TEXT,
    calls    BIGINT,
    mean_ms  DOUBLE PRECISION,
    max_ms   DOUBLE PRECISION,
    total_ms DOUBLE PRECISION,
    source   TEXT
)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF threshold_ms IS NULL OR threshold_ms < 0 THEN
        RAISE EXCEPTION 'threshold_ms must be a non-negative number of milliseconds';
    END IF;
    IF max_rows IS NULL OR max_rows < 1 OR max_rows > 1000 THEN
        RAISE EXCEPTION 'max_rows must be between 1 and 1000';
    END IF;
    IF to_regclass('pg_stat_statements') IS NOT NULL THEN
        RETURN QUERY EXECUTE
            'SELECT query, calls, mean_exec_time, max_exec_time, total_exec_time, ''pg_stat_statements''::TEXT '
            'FROM pg_stat_statements WHERE mean_exec_time >= $1 ORDER BY mean_exec_time DESC LIMIT $2'
            USING threshold_ms, max_rows;
        RETURN;
    END IF;
    RETURN QUERY
        SELECT a.query, CAST(1 AS BIGINT), a.ms, a.ms, a.ms, 'pg_stat_activity'::TEXT
        FROM (
            SELECT s.query, CAST(extract(epoch FROM clock_timestamp() - s.query_start) * 1000 AS DOUBLE PRECISION) AS ms
            FROM pg_stat_activity s
            WHERE s.state = 'active' AND s.datname = current_database() AND s.pid <> pg_backend_pid()
        ) a
        WHERE a.ms >= threshold_ms
        ORDER BY a.ms DESC
        LIMIT max_rows;
END
$$;

-- The usage page aggregates a tenant's rows over a time window: a covering index answers it
-- from the index alone (SQLite has no INCLUDE: the columns are trailing keys). It replaces the
-- plain (tenant, time) index.
CREATE INDEX usage_tenant_time_covering_idx ON usage_analytics (tenant_id, recorded_at, status, duration_ms, endpoint);
DROP INDEX usage_tenant_time_idx;

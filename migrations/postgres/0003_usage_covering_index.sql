-- The usage page aggregates a tenant's rows over a time window (counts, errors, slow requests,
-- durations, endpoints). A covering index answers it from the index alone (an index-only scan
-- once vacuum has marked the pages all-visible) instead of one heap page per row: the rows of a
-- tenant are spread over the whole table. It replaces the plain (tenant, time) index.
CREATE INDEX usage_tenant_time_covering_idx ON usage_analytics (tenant_id, recorded_at)
    INCLUDE (status, duration_ms, endpoint);
DROP INDEX usage_tenant_time_idx;

-- The platform schema on SQLite (the embedded default); mirrors ../postgres/0001_schema.sql.
-- Times are unix seconds (BIGINT) in both backends, so the queries the origin runs are the
-- same text on PostgreSQL and SQLite.

CREATE TABLE tenants (
    id   BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    plan TEXT NOT NULL
);

CREATE TABLE users (
    id        BIGINT PRIMARY KEY,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    name      TEXT NOT NULL,
    api_token TEXT NOT NULL UNIQUE
);

CREATE TABLE contacts (
    id        BIGINT PRIMARY KEY,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    name      TEXT NOT NULL,
    location  TEXT NOT NULL
);

CREATE TABLE golden_leads (
    id          BIGINT PRIMARY KEY,
    tenant_id   BIGINT NOT NULL REFERENCES tenants (id),
    contact_id  BIGINT NOT NULL REFERENCES contacts (id),
    company     TEXT NOT NULL,
    tier        TEXT NOT NULL CHECK (tier IN ('platinum', 'gold', 'silver', 'bronze')),
    probability DOUBLE PRECISION NOT NULL,
    score       DOUBLE PRECISION NOT NULL,
    signals     TEXT NOT NULL,
    analyzed_at BIGINT NOT NULL
);
-- Golden-lead filtering: tier, then probability and score in list order.
CREATE INDEX golden_leads_filter_idx ON golden_leads (tier, probability DESC, score DESC);
-- The unfiltered list (no tier) in the same order.
CREATE INDEX golden_leads_rank_idx ON golden_leads (probability DESC, score DESC);
-- Recent analyses.
CREATE INDEX golden_leads_analyzed_at_idx ON golden_leads (analyzed_at DESC);
-- (No GIN index: SQLite has none; signal queries scan.)
-- High-priority leads: the short list sales looks at first.
CREATE INDEX golden_leads_high_priority_idx ON golden_leads (score DESC)
    WHERE tier = 'platinum' AND probability >= 0.8;

CREATE TABLE pricing_history (
    id          INTEGER PRIMARY KEY,
    contact_id  BIGINT NOT NULL REFERENCES contacts (id),
    location    TEXT NOT NULL,
    price       DOUBLE PRECISION NOT NULL,
    demand      DOUBLE PRECISION NOT NULL,
    converted   BOOLEAN NOT NULL,
    recorded_at BIGINT NOT NULL
);
-- Price lookups by (contact, location), newest first.
CREATE INDEX pricing_contact_location_idx ON pricing_history (contact_id, location, recorded_at DESC);
-- Time-range analytics.
CREATE INDEX pricing_recorded_at_idx ON pricing_history (recorded_at);

CREATE TABLE predictions (
    id            INTEGER PRIMARY KEY,
    lead_id       BIGINT NOT NULL REFERENCES golden_leads (id),
    score         DOUBLE PRECISION NOT NULL,
    model_version TEXT NOT NULL,
    predicted_at  BIGINT NOT NULL
);
CREATE INDEX predictions_lead_idx ON predictions (lead_id, predicted_at DESC);

CREATE TABLE usage_analytics (
    id          INTEGER PRIMARY KEY,
    tenant_id   BIGINT NOT NULL REFERENCES tenants (id),
    endpoint    TEXT NOT NULL,
    status      BIGINT NOT NULL,
    duration_ms DOUBLE PRECISION NOT NULL,
    recorded_at BIGINT NOT NULL
);
-- Usage analytics by tenant over time.
CREATE INDEX usage_tenant_time_idx ON usage_analytics (tenant_id, recorded_at DESC);
-- Slow requests (one second or more) and failed requests, which the usage page counts.
CREATE INDEX usage_slow_idx ON usage_analytics (tenant_id, recorded_at) WHERE duration_ms >= 1000;
CREATE INDEX usage_failed_idx ON usage_analytics (tenant_id, recorded_at) WHERE status >= 500;

CREATE TABLE materials (
    id           INTEGER PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users (id),
    title        TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    chunk_count  BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX materials_user_idx ON materials (user_id, created_at DESC);

CREATE TABLE material_chunks (
    id          INTEGER PRIMARY KEY,
    material_id BIGINT NOT NULL REFERENCES materials (id) ON DELETE CASCADE,
    user_id     BIGINT NOT NULL,
    ordinal     BIGINT NOT NULL,
    content     TEXT NOT NULL,
    embedding   BLOB NOT NULL
);
CREATE INDEX material_chunks_user_idx ON material_chunks (user_id);
CREATE INDEX material_chunks_material_idx ON material_chunks (material_id);

CREATE TABLE learning_activity (
    id          INTEGER PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users (id),
    kind        TEXT NOT NULL,
    minutes     BIGINT NOT NULL,
    xp          BIGINT NOT NULL,
    occurred_at BIGINT NOT NULL
);
CREATE INDEX learning_activity_user_time_idx ON learning_activity (user_id, occurred_at);

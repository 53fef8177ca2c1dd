-- no-transaction
-- Mirrors ../postgres/0005_tenant_scoping_and_tokens.sql. SQLite cannot drop a UNIQUE column,
-- so `users` is rebuilt without `api_token` (SQLite's documented procedure: foreign keys off
-- around one transaction; materials and learning_activity keep referring to `users` by name).
PRAGMA foreign_keys = OFF;
BEGIN;

CREATE TABLE users_rebuilt (
    id        BIGINT PRIMARY KEY,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    name      TEXT NOT NULL
);
INSERT INTO users_rebuilt (id, tenant_id, name) SELECT id, tenant_id, name FROM users;
DROP TABLE users;
ALTER TABLE users_rebuilt RENAME TO users;

-- API tokens: the selector finds the row, the SHA-256 of the secret is compared in constant
-- time; the plain-text tokens are gone (every seeded database shared them).
CREATE TABLE api_tokens (
    id          INTEGER PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users (id),
    selector    TEXT NOT NULL UNIQUE,
    secret_hash BLOB NOT NULL,
    label       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id);

-- Every lead query is scoped to the caller's tenant.
DROP INDEX golden_leads_filter_idx;
DROP INDEX golden_leads_rank_idx;
CREATE INDEX golden_leads_filter_idx ON golden_leads (tenant_id, tier, probability DESC, score DESC);
CREATE INDEX golden_leads_rank_idx ON golden_leads (tenant_id, probability DESC, score DESC);
CREATE INDEX contacts_tenant_idx ON contacts (tenant_id, id);

-- Pricing analytics per tenant.
DROP VIEW pricing_hourly_performance;
CREATE VIEW pricing_hourly_performance AS
SELECT c.tenant_id                                                     AS tenant_id,
       (p.recorded_at / 3600) * 3600                                   AS hour,
       p.location                                                      AS location,
       count(*)                                                        AS points,
       avg(p.price)                                                    AS avg_price,
       min(p.price)                                                    AS min_price,
       max(p.price)                                                    AS max_price,
       CAST(sum(CASE WHEN p.converted THEN 1 ELSE 0 END) AS BIGINT)    AS conversions
FROM pricing_history p
JOIN contacts c ON c.id = p.contact_id
GROUP BY 1, 2, 3;

COMMIT;
PRAGMA foreign_keys = ON;

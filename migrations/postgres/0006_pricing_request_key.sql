-- `PUT /api/pricing/{contact_id}` retries safely: each write carries a request key (the
-- client's Idempotency-Key, or one derived from the body and the day), and a repeated key
-- finds the row it wrote instead of adding another. Seeded rows have none (NULLs are
-- distinct, so they never collide).
ALTER TABLE pricing_history ADD COLUMN request_key TEXT;
CREATE UNIQUE INDEX pricing_request_key_idx ON pricing_history (contact_id, request_key);

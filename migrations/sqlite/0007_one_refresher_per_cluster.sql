-- Mirrors ../postgres/0007_one_refresher_per_cluster.sql: nothing reads the tier distribution.
-- (SQLite's views are computed on read: there is nothing to refresh.)
DROP VIEW golden_lead_tier_distribution;

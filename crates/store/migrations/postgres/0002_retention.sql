-- As SQLite's migration 0004: an organization may keep its positions for less than the service's
-- retention (`ingest.retention_days`); NULL keeps them for exactly that long.
ALTER TABLE organizations ADD COLUMN positions_retention_days BIGINT;

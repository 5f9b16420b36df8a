-- The audit log's own retention (src/audit.rs). The purge removes the oldest entries, a prefix of
-- the log, and keeps the hash of the newest it removed as the anchor the first remaining entry
-- must follow (per organization too). Deleting is refused as before, except inside the purge's
-- transaction, which raises the horizon to its cutoff and lowers it again before it commits.
CREATE TABLE audit_anchors (
    -- '' for the whole log, else an organization id.
    scope   TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL,
    hash    BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE audit_horizon (
    one       INTEGER PRIMARY KEY CHECK (one = 1),
    before_ms INTEGER NOT NULL
);
INSERT INTO audit_horizon (one, before_ms) VALUES (1, 0);

DROP TRIGGER audit_log_no_delete;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN OLD.at_ms >= (SELECT before_ms FROM audit_horizon WHERE one = 1)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

-- The audit log becomes tamper-evident (src/audit.rs): each entry's hash, the hash of the entry
-- before it, and its link among its organization's entries. Entries made before this version are
-- sealed by trackgate at open, in id order (the hashes need the master key, which SQL has not).
ALTER TABLE audit_log ADD COLUMN prev_hash BLOB;
ALTER TABLE audit_log ADD COLUMN hash BLOB;
ALTER TABLE audit_log ADD COLUMN org_hash BLOB;

-- The one change allowed: personal fields replaced by their pseudonym (`hmac:...`), and the
-- sealing of an entry made before this version. Nothing else changes; nothing is deleted.
DROP TRIGGER audit_log_no_update;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
WHEN NOT (
    NEW.id IS OLD.id AND NEW.at_ms IS OLD.at_ms AND NEW.actor IS OLD.actor
    AND NEW.org_id IS OLD.org_id AND NEW.action IS OLD.action AND NEW.target IS OLD.target
    AND NEW.detail IS OLD.detail AND NEW.override IS OLD.override
    AND (NEW.actor_email IS OLD.actor_email OR NEW.actor_email LIKE 'hmac:%')
    AND (NEW.remote_addr IS OLD.remote_addr OR NEW.remote_addr LIKE 'hmac:%')
    AND (OLD.hash IS NULL OR (NEW.hash IS OLD.hash AND NEW.prev_hash IS OLD.prev_hash AND NEW.org_hash IS OLD.org_hash))
)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

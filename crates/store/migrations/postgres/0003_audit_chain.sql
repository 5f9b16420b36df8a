-- As SQLite's migration 0005: the audit log's hash chain (src/audit.rs), and the one change the
-- append-only guard allows: personal fields replaced by their pseudonym (`hmac:...`), and the
-- sealing of an entry made before this version.
ALTER TABLE audit_log ADD COLUMN prev_hash BYTEA;
ALTER TABLE audit_log ADD COLUMN hash BYTEA;
ALTER TABLE audit_log ADD COLUMN org_hash BYTEA;

CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND (NEW.id, NEW.at_ms, NEW.actor, NEW.org_id, NEW.action, NEW.target, NEW.detail, NEW.override)
           IS NOT DISTINCT FROM (OLD.id, OLD.at_ms, OLD.actor, OLD.org_id, OLD.action, OLD.target, OLD.detail, OLD.override)
       AND (NEW.actor_email IS NOT DISTINCT FROM OLD.actor_email OR NEW.actor_email LIKE 'hmac:%')
       AND (NEW.remote_addr IS NOT DISTINCT FROM OLD.remote_addr OR NEW.remote_addr LIKE 'hmac:%')
       AND (OLD.hash IS NULL OR (NEW.hash, NEW.prev_hash, NEW.org_hash)
            IS NOT DISTINCT FROM (OLD.hash, OLD.prev_hash, OLD.org_hash))
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;

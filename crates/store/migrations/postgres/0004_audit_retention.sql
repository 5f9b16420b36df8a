-- As SQLite's migration 0006: anchors of the removed prefix, and the horizon below which the
-- purge's own transaction may delete.
CREATE TABLE audit_anchors (
    scope   TEXT COLLATE "C" PRIMARY KEY,
    last_id BIGINT NOT NULL,
    hash    BYTEA NOT NULL
);

CREATE TABLE audit_horizon (
    one       INTEGER PRIMARY KEY CHECK (one = 1),
    before_ms BIGINT NOT NULL
);
INSERT INTO audit_horizon (one, before_ms) VALUES (1, 0);

CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND OLD.at_ms < (SELECT before_ms FROM audit_horizon WHERE one = 1) THEN
        RETURN OLD;
    END IF;
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

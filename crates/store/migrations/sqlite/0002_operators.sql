-- Operators: organizations own devices; user groups grant access to them; every administrative
-- change and every read of location data is written to the audit log.

CREATE TABLE organizations (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE order_groups (
    org_id     TEXT NOT NULL REFERENCES organizations (id),
    id         TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (org_id, id)
) WITHOUT ROWID;

-- A device belongs to at most one organization, attached to a shipment (a label and an optional
-- reference) and, optionally, to one of the organization's order groups.
CREATE TABLE device_assignments (
    device_id      TEXT PRIMARY KEY REFERENCES principals (id),
    org_id         TEXT NOT NULL REFERENCES organizations (id),
    order_group_id TEXT,
    shipment_label TEXT,
    shipment_ref   TEXT,
    assigned_ms    INTEGER NOT NULL,
    FOREIGN KEY (org_id, order_group_id) REFERENCES order_groups (org_id, id)
) WITHOUT ROWID;

CREATE INDEX device_assignments_org ON device_assignments (org_id, order_group_id);

-- A user group of an organization. `admin` manages the organization and sees all of it; `viewer`
-- sees all order groups (`all_order_groups`) or the ones in user_group_scopes.
CREATE TABLE user_groups (
    org_id           TEXT NOT NULL REFERENCES organizations (id),
    id               TEXT NOT NULL,
    name             TEXT NOT NULL,
    role             TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
    all_order_groups INTEGER NOT NULL DEFAULT 0,
    created_ms       INTEGER NOT NULL,
    PRIMARY KEY (org_id, id)
) WITHOUT ROWID;

CREATE TABLE user_group_scopes (
    org_id         TEXT NOT NULL,
    user_group_id  TEXT NOT NULL,
    order_group_id TEXT NOT NULL,
    PRIMARY KEY (org_id, user_group_id, order_group_id),
    FOREIGN KEY (org_id, user_group_id) REFERENCES user_groups (org_id, id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, order_group_id) REFERENCES order_groups (org_id, id)
) WITHOUT ROWID;

-- How a signed-in user becomes a member: by exact email, by email domain, by identity-provider
-- group id (`groups` claim) or by identity-provider tenant id (`tid` claim). Values are stored
-- lower-case for email and domain, as given for the others.
CREATE TABLE membership_rules (
    kind          TEXT NOT NULL CHECK (kind IN ('email', 'domain', 'idp_group', 'tenant')),
    value         TEXT NOT NULL,
    org_id        TEXT NOT NULL,
    user_group_id TEXT NOT NULL,
    created_ms    INTEGER NOT NULL,
    PRIMARY KEY (kind, value, org_id, user_group_id),
    FOREIGN KEY (org_id, user_group_id) REFERENCES user_groups (org_id, id) ON DELETE CASCADE
) WITHOUT ROWID;

-- Append-only: who did what, when, from where. Updates and deletes are refused by triggers.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms       INTEGER NOT NULL,
    -- `oidc:<issuer>#<subject>`, `cli:<unix user>`.
    actor       TEXT NOT NULL,
    actor_email TEXT,
    -- The organization acted on or read from, when there is one.
    org_id      TEXT,
    action      TEXT NOT NULL,
    target      TEXT,
    detail      TEXT,
    remote_addr TEXT,
    -- 1 when a platform administrator acted outside the grants of their own groups.
    override    INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX audit_log_org ON audit_log (org_id, id);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

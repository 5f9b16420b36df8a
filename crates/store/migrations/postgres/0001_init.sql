-- trackgate schema, PostgreSQL: the same tables as SQLite's migrations 0001-0003, in PostgreSQL's
-- types. Times are Unix epoch milliseconds (BIGINT). Ids compare byte by byte (COLLATE "C"), as
-- on SQLite, so listings sort the same on both backends. Every unique key that holds per-device
-- data starts with device_id, so positions can later be distributed by device (Citus).

CREATE TABLE meta (
    key   TEXT COLLATE "C" PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE principals (
    id          TEXT COLLATE "C" PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('supplier', 'device')),
    supplier_id TEXT COLLATE "C" REFERENCES principals (id),
    enabled     BOOLEAN NOT NULL DEFAULT TRUE,
    created_ms  BIGINT NOT NULL
);

CREATE INDEX principals_supplier ON principals (supplier_id) WHERE supplier_id IS NOT NULL;

-- Sealed as on SQLite: nonce (12 bytes) || AES-256-GCM ciphertext, bound to owner and kid.
CREATE TABLE keys (
    owner_id   TEXT COLLATE "C" NOT NULL REFERENCES principals (id),
    kid        TEXT COLLATE "C" NOT NULL,
    sealed     BYTEA NOT NULL,
    active     BOOLEAN NOT NULL DEFAULT TRUE,
    created_ms BIGINT NOT NULL,
    revoked_ms BIGINT,
    PRIMARY KEY (owner_id, kid)
);

-- Writers take turns on this table (LOCK ... IN EXCLUSIVE MODE until they commit), so `seq`
-- grows in commit order and a node following it by `seq` never skips a change.
CREATE TABLE principal_changes (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    principal_id TEXT COLLATE "C" NOT NULL,
    changed_ms   BIGINT NOT NULL
);

-- One row per record, partitioned by month of `ts` (partitions `positions_pYYYYMMDD`, named as
-- pg_partman names them, made by trackgate ahead of time and on demand; see src/postgres.rs).
-- PostgreSQL enforces a unique index only within a partition, so `(device_id, seq)` is unique in
-- each partition by index and across partitions by the write path: see device_marks.
CREATE TABLE positions (
    device_id   TEXT COLLATE "C" NOT NULL,
    seq         BIGINT NOT NULL,
    ts          BIGINT NOT NULL,
    lat         DOUBLE PRECISION,
    lon         DOUBLE PRECISION,
    alt         DOUBLE PRECISION,
    spd         DOUBLE PRECISION,
    hdg         DOUBLE PRECISION,
    acc         DOUBLE PRECISION,
    bat         DOUBLE PRECISION,
    tmp         DOUBLE PRECISION,
    ext         TEXT,
    record      TEXT NOT NULL,
    kid         TEXT NOT NULL,
    received_ms BIGINT NOT NULL
) PARTITION BY RANGE (ts);

-- The highest seq stored of each device. A batch locks its devices (advisory locks) and reads
-- their marks: a row above its device's mark cannot be stored in any partition and is inserted
-- without a lookup; a row at or below it is looked up across partitions by (device_id, seq).
CREATE TABLE device_marks (
    device_id TEXT COLLATE "C" PRIMARY KEY,
    max_seq   BIGINT NOT NULL
);

CREATE TABLE latest_positions (
    device_id   TEXT COLLATE "C" PRIMARY KEY,
    seq         BIGINT NOT NULL,
    ts          BIGINT NOT NULL,
    lat         DOUBLE PRECISION NOT NULL,
    lon         DOUBLE PRECISION NOT NULL,
    alt         DOUBLE PRECISION,
    spd         DOUBLE PRECISION,
    hdg         DOUBLE PRECISION,
    acc         DOUBLE PRECISION,
    bat         DOUBLE PRECISION,
    tmp         DOUBLE PRECISION,
    received_ms BIGINT NOT NULL
);

-- As on SQLite (migration 0003): per device and hour of ts, the seq range stored, so a time range
-- is read as seq ranges through each partition's (device_id, seq) index.
CREATE TABLE position_spans (
    device_id  TEXT COLLATE "C" NOT NULL,
    hour       BIGINT NOT NULL,
    min_seq    BIGINT NOT NULL,
    max_seq    BIGINT NOT NULL,
    newest_ts  BIGINT NOT NULL,
    newest_seq BIGINT NOT NULL,
    PRIMARY KEY (device_id, hour)
);

CREATE TABLE rejects (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_ms BIGINT NOT NULL,
    transport   TEXT NOT NULL,
    key_name    TEXT,
    device_id   TEXT COLLATE "C",
    idx         BIGINT NOT NULL,
    reason      TEXT NOT NULL,
    envelope    TEXT NOT NULL
);

CREATE TABLE organizations (
    id         TEXT COLLATE "C" PRIMARY KEY,
    name       TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE TABLE order_groups (
    org_id     TEXT COLLATE "C" NOT NULL REFERENCES organizations (id),
    id         TEXT COLLATE "C" NOT NULL,
    name       TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (org_id, id)
);

CREATE TABLE device_assignments (
    device_id      TEXT COLLATE "C" PRIMARY KEY REFERENCES principals (id),
    org_id         TEXT COLLATE "C" NOT NULL REFERENCES organizations (id),
    order_group_id TEXT COLLATE "C",
    shipment_label TEXT,
    shipment_ref   TEXT,
    assigned_ms    BIGINT NOT NULL,
    FOREIGN KEY (org_id, order_group_id) REFERENCES order_groups (org_id, id)
);

CREATE INDEX device_assignments_org ON device_assignments (org_id, order_group_id);

CREATE TABLE user_groups (
    org_id           TEXT COLLATE "C" NOT NULL REFERENCES organizations (id),
    id               TEXT COLLATE "C" NOT NULL,
    name             TEXT NOT NULL,
    role             TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
    all_order_groups BOOLEAN NOT NULL DEFAULT FALSE,
    created_ms       BIGINT NOT NULL,
    PRIMARY KEY (org_id, id)
);

CREATE TABLE user_group_scopes (
    org_id         TEXT COLLATE "C" NOT NULL,
    user_group_id  TEXT COLLATE "C" NOT NULL,
    order_group_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (org_id, user_group_id, order_group_id),
    FOREIGN KEY (org_id, user_group_id) REFERENCES user_groups (org_id, id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, order_group_id) REFERENCES order_groups (org_id, id)
);

CREATE TABLE membership_rules (
    kind          TEXT NOT NULL CHECK (kind IN ('email', 'domain', 'idp_group', 'tenant')),
    value         TEXT COLLATE "C" NOT NULL,
    org_id        TEXT COLLATE "C" NOT NULL,
    user_group_id TEXT COLLATE "C" NOT NULL,
    created_ms    BIGINT NOT NULL,
    PRIMARY KEY (kind, value, org_id, user_group_id),
    FOREIGN KEY (org_id, user_group_id) REFERENCES user_groups (org_id, id) ON DELETE CASCADE
);

CREATE TABLE audit_log (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms       BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    actor_email TEXT,
    org_id      TEXT COLLATE "C",
    action      TEXT NOT NULL,
    target      TEXT,
    detail      TEXT,
    remote_addr TEXT,
    override    BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE INDEX audit_log_org ON audit_log (org_id, id);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

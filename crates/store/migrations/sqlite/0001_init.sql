-- trackgate schema, SQLite. Times are Unix epoch milliseconds.

-- Settings that bind the database to its master key, among others.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;

-- Devices and suppliers share one namespace of ids, so one table holds both.
CREATE TABLE principals (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('supplier', 'device')),
    -- For a device: the supplier whose key may relay its records.
    supplier_id TEXT REFERENCES principals (id),
    enabled     INTEGER NOT NULL DEFAULT 1,
    created_ms  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX principals_supplier ON principals (supplier_id) WHERE supplier_id IS NOT NULL;

-- Key secrets are sealed with AES-256-GCM under the master key: nonce (12 bytes) || ciphertext,
-- with the owner and kid as associated data so a sealed secret cannot be moved to another key.
CREATE TABLE keys (
    owner_id   TEXT NOT NULL REFERENCES principals (id),
    kid        TEXT NOT NULL,
    sealed     BLOB NOT NULL,
    active     INTEGER NOT NULL DEFAULT 1,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER,
    PRIMARY KEY (owner_id, kid)
) WITHOUT ROWID;

-- Every change to a principal or its keys, so running nodes can drop their cached copy.
CREATE TABLE principal_changes (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    principal_id TEXT NOT NULL,
    changed_ms   INTEGER NOT NULL
);

-- One row per record: (device_id, seq) identifies it, so resends are absorbed. A rowid table
-- (rows appended in arrival order) with narrow indexes: a batch spread over many devices dirties
-- far fewer pages than a table clustered on (device_id, seq) (benches/RESULTS.md).
CREATE TABLE positions (
    device_id   TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    ts          INTEGER NOT NULL,
    lat         REAL,
    lon         REAL,
    alt         REAL,
    spd         REAL,
    hdg         REAL,
    acc         REAL,
    bat         REAL,
    tmp         REAL,
    ext         TEXT,
    -- The record exactly as signed, and the key that signed it: the evidence behind the row.
    record      TEXT NOT NULL,
    kid         TEXT NOT NULL,
    received_ms INTEGER NOT NULL
);

CREATE UNIQUE INDEX positions_device_seq ON positions (device_id, seq);
CREATE INDEX positions_device_ts ON positions (device_id, ts);

-- The newest positioned record of each device. Moves only forward in ts, so a backlog
-- uploaded late never drags the marker back.
CREATE TABLE latest_positions (
    device_id   TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL,
    ts          INTEGER NOT NULL,
    lat         REAL NOT NULL,
    lon         REAL NOT NULL,
    alt         REAL,
    spd         REAL,
    hdg         REAL,
    acc         REAL,
    bat         REAL,
    tmp         REAL,
    received_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- Recent rejected records, for supplier support. Bounded: the oldest rows are pruned.
CREATE TABLE rejects (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms INTEGER NOT NULL,
    transport   TEXT NOT NULL,
    key_name    TEXT,
    device_id   TEXT,
    idx         INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    envelope    TEXT NOT NULL
);

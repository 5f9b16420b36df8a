-- Events computed from stored records (`trackgate::events`), each stored once: a device's record
-- `(ts, seq)` gives at most one event of a kind about one subject (a geofence's id, or '').
-- `org_id` is the organization the device was assigned to when the event was computed; only it
-- sees the event.
CREATE TABLE device_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id     TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    ts         INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    -- The event as JSON: its kind and what it is about.
    detail     TEXT NOT NULL,
    lat        REAL,
    lon        REAL,
    created_ms INTEGER NOT NULL,
    UNIQUE (device_id, ts, seq, kind, subject)
);

CREATE INDEX device_events_org ON device_events (org_id, id);

-- How far the events of each device are computed: the last record taken, by (ts, seq), and what
-- the rules remember of the device (JSON). `stale` is set once the device's silence was reported.
CREATE TABLE event_cursors (
    device_id  TEXT PRIMARY KEY,
    ts         INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    state      TEXT NOT NULL,
    stale      INTEGER NOT NULL DEFAULT 0,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- Devices that already have records start after their newest one: events begin with this
-- version, not with the history before it.
INSERT INTO event_cursors (device_id, ts, seq, state, stale, updated_ms)
SELECT s.device_id, s.newest_ts, s.newest_seq, '{}', 0, 0 FROM position_spans s
WHERE s.hour = (SELECT MAX(hour) FROM position_spans x WHERE x.device_id = s.device_id);

-- The limits events are measured against, for a whole organization (`scope` 'org', `scope_id`
-- ''), one of its order groups ('order_group') or one device's shipment ('device'). The most
-- specific limit set wins. NULL: not set at this level.
CREATE TABLE event_limits (
    org_id         TEXT NOT NULL REFERENCES organizations (id),
    scope          TEXT NOT NULL CHECK (scope IN ('org', 'order_group', 'device')),
    scope_id       TEXT NOT NULL,
    stale_after_ms INTEGER,
    battery_low    REAL,
    tmp_min        REAL,
    tmp_max        REAL,
    updated_ms     INTEGER NOT NULL,
    PRIMARY KEY (org_id, scope, scope_id)
) WITHOUT ROWID;

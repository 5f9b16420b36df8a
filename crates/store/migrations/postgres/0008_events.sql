-- Events computed from stored records (`trackgate::events`), each stored once: a device's record
-- `(ts, seq)` gives at most one event of a kind about one subject (a geofence's id, or '').
-- `org_id` is the organization the device was assigned to when the event was computed; only it
-- sees the event.
CREATE TABLE device_events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id     TEXT COLLATE "C" NOT NULL,
    device_id  TEXT COLLATE "C" NOT NULL,
    ts         BIGINT NOT NULL,
    seq        BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    subject    TEXT COLLATE "C" NOT NULL,
    -- The event as JSON: its kind and what it is about.
    detail     TEXT NOT NULL,
    lat        DOUBLE PRECISION,
    lon        DOUBLE PRECISION,
    created_ms BIGINT NOT NULL,
    UNIQUE (device_id, ts, seq, kind, subject)
);

CREATE INDEX device_events_org ON device_events (org_id, id);

-- How far the events of each device are computed: the last record taken, by (ts, seq), and what
-- the rules remember of the device (JSON). `stale` is set once the device's silence was reported.
CREATE TABLE event_cursors (
    device_id  TEXT COLLATE "C" PRIMARY KEY,
    ts         BIGINT NOT NULL,
    seq        BIGINT NOT NULL,
    state      TEXT NOT NULL,
    stale      BOOLEAN NOT NULL DEFAULT FALSE,
    updated_ms BIGINT NOT NULL
);

-- Devices that already have records start after their newest one: events begin with this
-- version, not with the history before it.
INSERT INTO event_cursors (device_id, ts, seq, state, stale, updated_ms)
SELECT DISTINCT ON (device_id) device_id, newest_ts, newest_seq, '{}', FALSE, 0
FROM position_spans ORDER BY device_id, hour DESC;

-- The limits events are measured against, for a whole organization (`scope` 'org', `scope_id`
-- ''), one of its order groups ('order_group') or one device's shipment ('device'). The most
-- specific limit set wins. NULL: not set at this level.
CREATE TABLE event_limits (
    org_id         TEXT COLLATE "C" NOT NULL REFERENCES organizations (id),
    scope          TEXT NOT NULL CHECK (scope IN ('org', 'order_group', 'device')),
    scope_id       TEXT COLLATE "C" NOT NULL,
    stale_after_ms BIGINT,
    battery_low    DOUBLE PRECISION,
    tmp_min        DOUBLE PRECISION,
    tmp_max        DOUBLE PRECISION,
    updated_ms     BIGINT NOT NULL,
    PRIMARY KEY (org_id, scope, scope_id)
);

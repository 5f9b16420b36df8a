-- One index per position row. The (device_id, ts) index cost each insert a second b-tree write
-- (benches/RESULTS.md: 1.2-2.0x the insert rate without it). Time-range reads go through this
-- summary instead: for each device and hour of `ts`, the lowest and highest `seq` stored, which
-- turns a `ts` range into `seq` ranges read through positions_device_seq and filtered by `ts`.
-- A device whose clock jumps only widens the `seq` range of an hour; nothing is missed.
-- It also names each device's newest record by (ts, seq), for "last seen".
CREATE TABLE position_spans (
    device_id  TEXT NOT NULL,
    -- ts / 3600000: the hour since the epoch.
    hour       INTEGER NOT NULL,
    min_seq    INTEGER NOT NULL,
    max_seq    INTEGER NOT NULL,
    -- The newest record of the hour, by (ts, seq).
    newest_ts  INTEGER NOT NULL,
    newest_seq INTEGER NOT NULL,
    PRIMARY KEY (device_id, hour)
) WITHOUT ROWID;

-- What a database made before this version holds, in one pass.
INSERT INTO position_spans (device_id, hour, min_seq, max_seq, newest_ts, newest_seq)
SELECT device_id, hour, min_seq, max_seq, ts, seq FROM (
    SELECT device_id, ts / 3600000 AS hour, ts, seq,
           MIN(seq) OVER span AS min_seq,
           MAX(seq) OVER span AS max_seq,
           ROW_NUMBER() OVER (PARTITION BY device_id, ts / 3600000 ORDER BY ts DESC, seq DESC) AS newest
    FROM positions
    WINDOW span AS (PARTITION BY device_id, ts / 3600000)
)
WHERE newest = 1;

DROP INDEX positions_device_ts;

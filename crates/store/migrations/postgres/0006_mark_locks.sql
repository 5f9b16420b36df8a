-- A batch's first statement raises the marks of its devices (an upsert, which locks each mark's
-- row until the batch commits: the lock that used to be an advisory lock per device) and reads
-- back the mark each device had before it: `prev_seq`, NULL for a device seen for the first time.
ALTER TABLE device_marks ADD COLUMN prev_seq BIGINT;

-- Each span row also carries its newest record's battery and temperature, so the device list
-- shows a device's newest record from its newest span alone, without a lookup into positions
-- per device. Filled in for the rows already there.
ALTER TABLE position_spans ADD COLUMN newest_bat REAL;
ALTER TABLE position_spans ADD COLUMN newest_tmp REAL;

UPDATE position_spans SET
    newest_bat = (SELECT p.bat FROM positions p
                  WHERE p.device_id = position_spans.device_id AND p.seq = position_spans.newest_seq),
    newest_tmp = (SELECT p.tmp FROM positions p
                  WHERE p.device_id = position_spans.device_id AND p.seq = position_spans.newest_seq);

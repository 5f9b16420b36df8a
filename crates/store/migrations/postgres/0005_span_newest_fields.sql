-- Each span row also carries its newest record's battery and temperature, so the device list
-- shows a device's newest record from its newest span alone, without a lookup into positions
-- per device. Filled in for the rows already there.
ALTER TABLE position_spans ADD COLUMN newest_bat DOUBLE PRECISION;
ALTER TABLE position_spans ADD COLUMN newest_tmp DOUBLE PRECISION;

UPDATE position_spans s SET newest_bat = p.bat, newest_tmp = p.tmp
FROM positions p
WHERE p.device_id = s.device_id AND p.seq = s.newest_seq AND p.ts = s.newest_ts;

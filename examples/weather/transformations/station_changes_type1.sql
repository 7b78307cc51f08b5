-- Each station as it stands now (SCD Type 1), from the change feed of
-- station_changes.sql: one row per live station, the event with the highest `changed_at`
-- of each; a late event (older than one already applied) is ignored, and a deleted
-- station is absent until an event newer than its delete brings it back.
CREATE OR REFRESH STREAMING TABLE stations_current
COMMENT 'Each live station, as of its latest change (SCD Type 1)';

CREATE FLOW stations_scd1 AS AUTO CDC INTO stations_current
FROM STREAM(station_changes)
KEYS (station)
APPLY AS DELETE WHEN op = 'D'
SEQUENCE BY changed_at
COLUMNS * EXCEPT (op)
STORED AS SCD TYPE 1;

-- Changes to the weather stations, as a change feed (CDC) from the stations' registry:
-- one JSON object per event, `op` I (insert), U (update) or D (delete), ordered per
-- station by `changed_at`. Events can arrive late: a file may hold an event older than
-- one already read for its station. Two AUTO CDC flows keep tables from it:
-- stations_history (SCD Type 2, here) and stations_current (SCD Type 1,
-- station_changes_type1.sql).
CREATE OR REFRESH STREAMING TABLE station_changes (
  CONSTRAINT known_op EXPECT (op IN ('I', 'U', 'D')) ON VIOLATION DROP ROW
)
COMMENT 'Every change event of the stations, as it arrived'
AS SELECT station, name, country, elevation_m, operator, op, changed_at
FROM STREAM read_files(
  '${data_dir}/station_changes',
  format => 'json',
  schema => 'station STRING, name STRING, country STRING, elevation_m INT, operator STRING, op STRING, changed_at TIMESTAMP'
);

-- The history of each station: one row per version, from __START_AT to __END_AT (the
-- next version's start, the delete that closed it, or NULL while current). Who operates
-- a station is not history: a change of `operator` alone updates its version in place.
-- A late event is placed by its `changed_at`, and the versions around it are re-cut.
CREATE OR REFRESH STREAMING TABLE stations_history
COMMENT 'Each station over time (SCD Type 2)';

CREATE FLOW stations_scd2 AS AUTO CDC INTO stations_history
FROM STREAM(station_changes)
KEYS (station)
APPLY AS DELETE WHEN op = 'D'
SEQUENCE BY changed_at
COLUMNS * EXCEPT (op, changed_at)
STORED AS SCD TYPE 2
TRACK HISTORY ON * EXCEPT (operator);

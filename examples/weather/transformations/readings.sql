-- Readings arrive from two networks in two shapes, as JSON Lines. Two flows append them
-- to one streaming table, in one shape (Celsius).
CREATE STREAMING TABLE readings (
  station STRING NOT NULL,
  observed_at TIMESTAMP,
  temp_c DOUBLE,
  humidity DOUBLE,
  network STRING,
  -- A reading without a station cannot be used: dropped, and kept in the quarantine.
  CONSTRAINT known_station EXPECT (station IS NOT NULL AND station <> '') ON VIOLATION DROP ROW,
  -- Implausible temperatures are kept, and counted in the event log.
  CONSTRAINT plausible_temperature EXPECT (temp_c BETWEEN -90 AND 60)
)
COMMENT 'Every reading of both networks, in Celsius';

CREATE FLOW readings_eu AS INSERT INTO readings BY NAME
SELECT
  station,
  observed_at,
  temp_c,
  humidity,
  'eu' AS network
FROM STREAM read_files(
  '${data_dir}/readings/eu',
  format => 'json',
  schema => 'station STRING, observed_at TIMESTAMP, temp_c DOUBLE, humidity DOUBLE'
);

CREATE FLOW readings_us AS INSERT INTO readings BY NAME
SELECT
  id AS station,
  to_timestamp(time) AS observed_at,
  round((temp_f - 32) * 5 / 9, 2) AS temp_c,
  rh / 100.0 AS humidity,
  'us' AS network
FROM STREAM read_files(
  '${data_dir}/readings/us',
  format => 'json',
  schema => 'id STRING, time STRING, temp_f DOUBLE, rh DOUBLE'
);

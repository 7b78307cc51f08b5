-- Weather stations, a small CSV reference table, recomputed when the file changes.
CREATE MATERIALIZED VIEW stations
COMMENT 'One row per station'
AS SELECT
  station_id,
  name,
  country,
  CAST(elevation_m AS INT) AS elevation_m
FROM read_files('${data_dir}/stations', format => 'csv', header => true);

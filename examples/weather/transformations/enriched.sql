-- New readings joined with the stations as they stand (a stream-static join), through a
-- temporary view, which is not stored.
CREATE TEMPORARY VIEW readings_with_station AS
SELECT r.station, r.observed_at, r.temp_c, r.humidity, s.name AS station_name, s.country
FROM STREAM(readings) r
JOIN stations s ON r.station = s.station_id;

CREATE STREAMING TABLE readings_enriched
PARTITIONED BY (country)
AS SELECT * FROM readings_with_station;

-- Daily figures per country: an aggregate, so a materialized view.
CREATE MATERIALIZED VIEW daily_by_country AS
SELECT
  country,
  CAST(observed_at AS DATE) AS day,
  count(*) AS readings,
  round(avg(temp_c), 2) AS avg_temp_c,
  min(temp_c) AS min_temp_c,
  max(temp_c) AS max_temp_c
FROM readings_enriched
GROUP BY country, CAST(observed_at AS DATE);

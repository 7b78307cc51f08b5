-- silver.close_price_silver: the history of each index's close, as SCD Type 2.
--
-- Every valid bronze record (stocks_parsed, in stocks_silver.sql) is a change event of
-- its Index, ordered by Date and then by its arrival: its Kafka offset (ingest keys
-- the records by Index, so an index's records share one partition). A new Date, or a new Close or Adj_Close for a
-- Date already seen (a correction), starts a version; a late record is placed by its
-- Date and its neighbours re-cut. __START_AT and __END_AT are dates; `current`,
-- `effective_date` and `end_date` are medallion's processing-time columns (when a
-- version was written and closed), named by the TBLPROPERTIES below.
CREATE OR REFRESH STREAMING TABLE silver.close_price_silver
PARTITIONED BY (Index)
COMMENT 'The close of each index over time (SCD Type 2)'
TBLPROPERTIES (
  'medallion.scd.current' = 'current',
  'medallion.scd.writtenAt' = 'effective_date',
  'medallion.scd.closedAt' = 'end_date',
  -- A MERGE rewrites the last file of each index it touches: small files keep a new
  -- day cheap (2 MB is some 60k versions).
  'delta.targetFileSize' = '2097152'
);

CREATE FLOW close_price AS AUTO CDC INTO silver.close_price_silver
FROM STREAM(stocks_parsed)
KEYS (Index)
SEQUENCE BY Date
SYSTEM SEQUENCE BY "offset"
COLUMNS (Index, Date, Close, Adj_Close)
STORED AS SCD TYPE 2;

-- silver.stocks_silver: bronze records typed, checked and deduplicated, append-only.
--
-- Each bronze `value` is a JSON object of field texts (the landing file's columns, every
-- field as text, `null` for a missing value). The view below takes them apart; its
-- expectations drop what is not a valid daily record into quarantine.stocks_silver, with
-- the names of the rules it broke. The table keeps the first valid record of each
-- (Index, Date), in bronze order. close_price_silver.sql reads the same view.

CREATE TEMPORARY VIEW stocks_parsed (
  CONSTRAINT value_is_a_json_object EXPECT (is_object) ON VIOLATION DROP ROW,
  CONSTRAINT index_is_present EXPECT (Index IS NOT NULL) ON VIOLATION DROP ROW,
  -- close_price_silver is partitioned by Index: the value must fit a folder name
  -- (`Index=<value>`, escaped, at most 255 bytes).
  -- Any 83 bytes fit (6 + 3 * 83 = 255), so only a longer name has its escapes counted:
  -- the regular expression would otherwise run on every row.
  CONSTRAINT index_fits_a_folder_name EXPECT (
    CASE
      WHEN octet_length(Index) <= 83 THEN true
      ELSE 6 + octet_length(Index) + 2 * octet_length(regexp_replace(Index, '[A-Za-z0-9._ -]', '', 'g')) <= 255
    END
  ) ON VIOLATION DROP ROW,
  CONSTRAINT date_is_yyyy_mm_dd EXPECT (Date IS NOT NULL) ON VIOLATION DROP ROW,
  CONSTRAINT close_is_a_number EXPECT (Close IS NOT NULL) ON VIOLATION DROP ROW,
  CONSTRAINT prices_are_numbers EXPECT (
    (Open IS NOT NULL OR open_text IS NULL)
    AND (High IS NOT NULL OR high_text IS NULL)
    AND (Low IS NOT NULL OR low_text IS NULL)
    AND (Adj_Close IS NOT NULL OR adj_close_text IS NULL)
  ) ON VIOLATION DROP ROW,
  CONSTRAINT volume_is_a_plausible_whole_number EXPECT (
    Volume IS NOT NULL OR volume_text IS NULL
  ) ON VIOLATION DROP ROW
)
AS WITH records AS (
  SELECT
    "partition",
    "offset",
    value,
    -- One parse per record. `_corrupt_record` holds the value when it is not a JSON object.
    from_json(
      value,
      'Index STRING, Date STRING, Open STRING, High STRING, Low STRING, Close STRING,
       `Adj Close` STRING, Volume STRING, _corrupt_record STRING'
    ) AS r
  FROM STREAM(bronze.bronze)
),
fields AS (
  SELECT
    "partition",
    "offset",
    value,
    -- (Not `r IS NOT NULL`: the optimizer would parse the value a second time for it.)
    value IS NOT NULL AND trim(value) <> '' AND r['_corrupt_record'] IS NULL AS is_object,
    -- A missing member, JSON null, an empty text and the text `null` are all no value.
    nullif(nullif(trim(r['Index']), ''), 'null') AS index_text,
    nullif(nullif(trim(r['Date']), ''), 'null') AS date_text,
    nullif(nullif(trim(r['Open']), ''), 'null') AS open_text,
    nullif(nullif(trim(r['High']), ''), 'null') AS high_text,
    nullif(nullif(trim(r['Low']), ''), 'null') AS low_text,
    nullif(nullif(trim(r['Close']), ''), 'null') AS close_text,
    nullif(nullif(trim(r['Adj Close']), ''), 'null') AS adj_close_text,
    nullif(nullif(trim(r['Volume']), ''), 'null') AS volume_text
  FROM records
),
numbers AS (
  SELECT
    *,
    -- Finite numbers only: NaN and infinities are not prices.
    CASE WHEN abs(TRY_CAST(open_text AS DOUBLE)) <= 1.7976931348623157e308 THEN TRY_CAST(open_text AS DOUBLE) END AS Open,
    CASE WHEN abs(TRY_CAST(high_text AS DOUBLE)) <= 1.7976931348623157e308 THEN TRY_CAST(high_text AS DOUBLE) END AS High,
    CASE WHEN abs(TRY_CAST(low_text AS DOUBLE)) <= 1.7976931348623157e308 THEN TRY_CAST(low_text AS DOUBLE) END AS Low,
    CASE WHEN abs(TRY_CAST(close_text AS DOUBLE)) <= 1.7976931348623157e308 THEN TRY_CAST(close_text AS DOUBLE) END AS Close,
    CASE WHEN abs(TRY_CAST(adj_close_text AS DOUBLE)) <= 1.7976931348623157e308 THEN TRY_CAST(adj_close_text AS DOUBLE) END AS Adj_Close,
    -- A whole number (`12` or `12.0`), neither negative nor above 10^13.
    CASE
      WHEN TRY_CAST(volume_text AS BIGINT) BETWEEN 0 AND 10000000000000
        THEN TRY_CAST(volume_text AS BIGINT)
      WHEN TRY_CAST(volume_text AS DOUBLE) BETWEEN 0 AND 10000000000000
        AND TRY_CAST(volume_text AS DOUBLE) = floor(TRY_CAST(volume_text AS DOUBLE))
        THEN CAST(TRY_CAST(volume_text AS DOUBLE) AS BIGINT)
    END AS Volume
  FROM fields
)
SELECT
  "partition",
  "offset",
  -- The record as it came, so that a quarantined row shows it.
  value,
  is_object,
  index_text AS Index,
  CASE WHEN length(date_text) = 10 THEN TRY_CAST(date_text AS DATE) END AS Date,
  Open, High, Low, Close, Adj_Close, Volume,
  open_text, high_text, low_text, adj_close_text, volume_text
FROM numbers;

CREATE OR REFRESH STREAMING TABLE silver.stocks_silver (
  Index STRING NOT NULL,
  Date DATE NOT NULL,
  Open DOUBLE,
  High DOUBLE,
  Low DOUBLE,
  Close DOUBLE NOT NULL,
  Adj_Close DOUBLE,
  Volume BIGINT,
  -- A medallion extension: the first row of each key is kept, later ones are counted as
  -- duplicates (a correction of a day's close goes to close_price_silver only).
  CONSTRAINT one_record_per_index_and_day PRIMARY KEY (Index, Date)
)
COMMENT 'Daily stock-index records, typed, first record per (Index, Date)'
TBLPROPERTIES ('quarantine' = 'quarantine.stocks_silver')
AS SELECT Index, Date, Open, High, Low, Close, Adj_Close, Volume
FROM stocks_parsed
ORDER BY "partition", "offset";

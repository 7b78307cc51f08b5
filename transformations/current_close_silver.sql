-- silver.current_close_silver: the current version of each index's close, from the SCD
-- Type 2 history (close_price_silver.sql), recomputed when the history changes.
CREATE OR REFRESH MATERIALIZED VIEW silver.current_close_silver (
  Index STRING NOT NULL,
  Date DATE NOT NULL,
  Close DOUBLE NOT NULL,
  Adj_Close DOUBLE
)
COMMENT 'The latest close of each index'
AS SELECT Index, Date, Close, Adj_Close
FROM silver.close_price_silver
WHERE current AND __END_AT IS NULL
ORDER BY Index;

-- gold.updated_stocks_gold: every joined row with the gap to the latest close,
-- recomputed when stocks_close_silver changes.
CREATE OR REFRESH MATERIALIZED VIEW gold.updated_stocks_gold (
  Index STRING NOT NULL,
  Date DATE NOT NULL,
  Close DOUBLE NOT NULL,
  Adj_Close DOUBLE,
  Latest_Close DOUBLE NOT NULL,
  Latest_Adj_Close DOUBLE,
  Close_Diff DOUBLE NOT NULL
)
AS SELECT
  Index, Date, Close, Adj_Close, Latest_Close, Latest_Adj_Close,
  Latest_Close - Close AS Close_Diff
FROM silver.stocks_close_silver
ORDER BY Index, Date;

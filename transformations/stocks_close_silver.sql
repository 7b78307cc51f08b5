-- silver.stocks_close_silver: new stocks joined with the current close as it stands when
-- the batch runs (a stream-static join): rows written earlier keep the values they had.
CREATE OR REFRESH STREAMING TABLE silver.stocks_close_silver (
  Index STRING NOT NULL,
  Date DATE NOT NULL,
  Close DOUBLE NOT NULL,
  Adj_Close DOUBLE,
  Latest_Close DOUBLE NOT NULL,
  Latest_Adj_Close DOUBLE
)
AS SELECT
  s.Index,
  s.Date,
  s.Close,
  s.Adj_Close,
  c.Close AS Latest_Close,
  c.Adj_Close AS Latest_Adj_Close
FROM STREAM(silver.stocks_silver) s
JOIN silver.current_close_silver c ON s.Index = c.Index;

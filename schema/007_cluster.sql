-- A cluster node's database is its cache of one cluster's shared log (server/store_cluster.c): the
-- batches table holds the log's rows with seq = their position. The row below names the log, so a node
-- is never pointed at another cluster's PostgreSQL with this cache, nor at a database focald wrote alone.
CREATE TABLE cluster (
  one INTEGER PRIMARY KEY CHECK (one = 1),
  log_id TEXT NOT NULL,
  applied_pos INTEGER NOT NULL DEFAULT 0  -- the last position of the log this database holds
);

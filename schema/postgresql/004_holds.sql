-- What each node still needs of the log (server/store_cluster.c): a running node, or one beginning from a
-- snapshot, holds the position it has applied until a time, renewed while it runs, and a prune of the log
-- (--log-retention) deletes no row after a hold that has not expired. A prune and a hold take the advisory
-- lock 0x66636c68 ("fclh") for their transactions, so a prune sees every hold made before it.
CREATE TABLE focald_hold (
  node text PRIMARY KEY,
  pos bigint NOT NULL,
  until timestamptz NOT NULL
);

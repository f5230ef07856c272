-- Snapshots of a node's state at a position of the log (server/store_cluster.c): a copy of that node's
-- SQLite database, which holds everything up to the position, in parts. A new node starts from the newest
-- and applies the log after it; the log below it may then be pruned (--log-retention). One node at a time
-- writes them, the holder of the lease named 'snapshot'.
CREATE TABLE focald_snapshot (
  pos bigint PRIMARY KEY,
  node text NOT NULL,
  parts integer NOT NULL,
  bytes bigint NOT NULL,
  made_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE focald_snapshot_part (
  pos bigint NOT NULL REFERENCES focald_snapshot (pos) ON DELETE CASCADE,
  part integer NOT NULL,
  data bytea NOT NULL,
  PRIMARY KEY (pos, part)
);

CREATE TABLE focald_lease (
  name text PRIMARY KEY,
  holder text NOT NULL,
  until timestamptz NOT NULL
);

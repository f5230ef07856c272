-- The cluster's shared log (server/pglog.c): every change any node accepts is one row, at a position
-- 1, 2, 3, ... that has no gaps and whose order is the order in which the rows became visible.
-- focald_log_head holds the last position; an appender locks it (SELECT ... FOR UPDATE), appends the rows
-- after it and moves it in the same transaction, so appends are serialised and commit in position order.
CREATE TABLE focald_log (
  pos bigint PRIMARY KEY,
  kind smallint NOT NULL,
  dataset text NOT NULL,
  body bytea NOT NULL,
  node text NOT NULL,
  appended_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE focald_log_head (
  one boolean PRIMARY KEY DEFAULT true CHECK (one),
  pos bigint NOT NULL CHECK (pos >= 0)
);
INSERT INTO focald_log_head (one, pos) VALUES (true, 0);

-- The log's identity: a node's local cache records it and refuses another log's.
CREATE TABLE focald_log_id (
  one boolean PRIMARY KEY DEFAULT true CHECK (one),
  id text NOT NULL
);
INSERT INTO focald_log_id (one, id) VALUES (true, gen_random_uuid()::text);

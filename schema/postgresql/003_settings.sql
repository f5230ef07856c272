-- The settings that shape what a node computes from the log (server/store_cluster.c): the first node to
-- start records its own, and a node whose settings differ refuses to start, since it would apply the same
-- rows to a different state and answer differently from the others.
CREATE TABLE focald_setting (
  name text PRIMARY KEY,
  value text NOT NULL
);

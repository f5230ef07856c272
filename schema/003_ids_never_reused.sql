-- focald schema 3: ids that are never used twice.
--
-- With INTEGER PRIMARY KEY alone, SQLite gives a new row the largest id in
-- the table plus one: after the rows with the largest ids are deleted (a
-- dataset and everything recorded for it), their ids come back. A batch seq
-- that comes back can fall below snapshot.applied_seq and be skipped by the
-- next replay; a dataset id that comes back lets rows written for the old
-- dataset be read as the new one's. AUTOINCREMENT keeps the largest id ever
-- used (in sqlite_sequence), so every table here is rebuilt with it, keeping
-- every row and id it has.

CREATE TABLE datasets_v3 (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  name       TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL                 -- unix seconds
);
INSERT INTO datasets_v3 (id, name, created_at) SELECT id, name, created_at FROM datasets;
DROP TABLE datasets;
ALTER TABLE datasets_v3 RENAME TO datasets;

CREATE TABLE runs_v3 (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  dataset_id INTEGER NOT NULL,
  name       TEXT NOT NULL,
  classes    INTEGER NOT NULL,               -- every batch of a run has this many classes
  created_at INTEGER NOT NULL,
  cls_seq    INTEGER NOT NULL DEFAULT 0,     -- the last batch in class_stats
  UNIQUE (dataset_id, name)
);
INSERT INTO runs_v3 (id, dataset_id, name, classes, created_at, cls_seq)
  SELECT id, dataset_id, name, classes, created_at, cls_seq FROM runs;
DROP TABLE runs;
ALTER TABLE runs_v3 RENAME TO runs;

CREATE TABLE batches_v3 (
  seq         INTEGER PRIMARY KEY AUTOINCREMENT, -- the order batches were committed in
  dataset_id  INTEGER NOT NULL,
  run_id      INTEGER NOT NULL,
  batch_id    TEXT,                          -- the client's, for deduplication
  epoch       INTEGER,
  step        INTEGER,
  n           INTEGER NOT NULL,              -- samples
  loss_config TEXT NOT NULL,                 -- JSON: type, profile, gamma, alpha, reduction
  received_at INTEGER NOT NULL,              -- unix milliseconds
  meta        TEXT,                          -- JSON object: sample id -> the meta the batch gave it
  payload     BLOB NOT NULL                  -- per-sample results, server/codec.c
);
INSERT INTO batches_v3 (seq, dataset_id, run_id, batch_id, epoch, step, n, loss_config, received_at, meta, payload)
  SELECT seq, dataset_id, run_id, batch_id, epoch, step, n, loss_config, received_at, meta, payload FROM batches;
DROP TABLE batches;
ALTER TABLE batches_v3 RENAME TO batches;
CREATE UNIQUE INDEX batches_batch_id ON batches (run_id, batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX batches_dataset ON batches (dataset_id, seq);

CREATE TABLE review_log_v3 (
  seq          INTEGER PRIMARY KEY AUTOINCREMENT,
  dataset_id   INTEGER NOT NULL,
  key          INTEGER NOT NULL,
  at           INTEGER NOT NULL,                 -- unix milliseconds
  reviewer     TEXT,
  from_status  INTEGER NOT NULL,
  to_status    INTEGER NOT NULL,
  label_before TEXT,                             -- JSON
  label_after  TEXT,                             -- JSON: the correction (relabelled), else NULL
  note         TEXT,
  batch_seq    INTEGER NOT NULL DEFAULT 0        -- the newest batch logged before the change
);
INSERT INTO review_log_v3 SELECT seq, dataset_id, key, at, reviewer, from_status, to_status, label_before, label_after, note,
  batch_seq FROM review_log;
DROP TABLE review_log;
ALTER TABLE review_log_v3 RENAME TO review_log;
CREATE INDEX review_log_sample ON review_log (dataset_id, key, seq);

CREATE TABLE queues_v3 (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  dataset_id INTEGER NOT NULL,
  name       TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  params     TEXT NOT NULL,                      -- JSON: how it was built
  UNIQUE (dataset_id, name)
);
INSERT INTO queues_v3 (id, dataset_id, name, created_at, params) SELECT id, dataset_id, name, created_at, params FROM queues;
DROP TABLE queues;
ALTER TABLE queues_v3 RENAME TO queues;

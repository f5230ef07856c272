-- focald schema 1: datasets, runs, the batch log, and the history snapshot.
--
-- The batch log (batches) is the durable record: a batch is acknowledged once
-- its row is committed. samples, history and class_stats are a snapshot of the
-- state the log implies, written in the background in key order; at start-up
-- focald loads the snapshot and replays the batches after snapshot.applied_seq.
-- history.seq and class_stats' runs.cls_seq say which batches a row already
-- holds, so replay applies each batch to each row exactly once.

CREATE TABLE datasets (
  id         INTEGER PRIMARY KEY,
  name       TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL                 -- unix seconds
);

CREATE TABLE runs (
  id         INTEGER PRIMARY KEY,
  dataset_id INTEGER NOT NULL REFERENCES datasets(id),
  name       TEXT NOT NULL,
  classes    INTEGER NOT NULL,               -- every batch of a run has this many classes
  created_at INTEGER NOT NULL,
  cls_seq    INTEGER NOT NULL DEFAULT 0,     -- the last batch in class_stats
  UNIQUE (dataset_id, name)
);

CREATE TABLE batches (
  seq         INTEGER PRIMARY KEY,           -- the order batches were committed in
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
CREATE UNIQUE INDEX batches_batch_id ON batches (run_id, batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX batches_dataset ON batches (dataset_id, seq);

CREATE TABLE samples (
  dataset_id INTEGER NOT NULL,
  key        INTEGER NOT NULL,               -- dense, in order of first sight
  id         TEXT NOT NULL,
  meta       TEXT,                           -- JSON object
  status     INTEGER NOT NULL DEFAULT 0,     -- review state, server/state.h st_status
  PRIMARY KEY (dataset_id, key)
) WITHOUT ROWID;

CREATE TABLE history (
  run_id      INTEGER NOT NULL,
  key         INTEGER NOT NULL,
  seq         INTEGER NOT NULL,              -- the last batch applied to this row
  seen        INTEGER NOT NULL,
  scored      INTEGER NOT NULL,
  correct     INTEGER NOT NULL,
  forgetting  INTEGER NOT NULL,
  last_loss   REAL NOT NULL,
  mean_loss   REAL NOT NULL,
  max_loss    REAL NOT NULL,
  ema_loss    REAL NOT NULL,
  confidence  REAL NOT NULL,                 -- mean p_t
  conf_m2     REAL NOT NULL,                 -- sum of squared deviations of p_t (variability = sqrt(conf_m2 / scored))
  aum         REAL NOT NULL,
  label       INTEGER,
  last_correct INTEGER NOT NULL,
  label_issue INTEGER NOT NULL,
  first_step  INTEGER,
  last_step   INTEGER,
  recent      BLOB,                          -- latest observations, server/history.h hist_recent
  PRIMARY KEY (run_id, key)
) WITHOUT ROWID;

CREATE TABLE class_stats (
  run_id INTEGER NOT NULL,
  class  INTEGER NOT NULL,
  sum    REAL NOT NULL,                      -- of p_t over observations labelled class
  count  INTEGER NOT NULL,
  PRIMARY KEY (run_id, class)
) WITHOUT ROWID;

CREATE TABLE snapshot (
  id          INTEGER PRIMARY KEY CHECK (id = 1),
  applied_seq INTEGER NOT NULL,              -- every batch up to here is in the snapshot tables
  written_at  INTEGER NOT NULL
);
INSERT INTO snapshot (id, applied_seq, written_at) VALUES (1, 0, 0);

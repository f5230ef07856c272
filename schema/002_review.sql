-- focald schema 2: review states, their audit trail, review queues.
--
-- A sample's review state lives on its samples row, written when it changes
-- (not derived from the batch log). review_log keeps every change, in order:
-- it is the audit trail and, for relabels, the change feed training pipelines
-- pull corrected labels from.

ALTER TABLE samples ADD COLUMN corrected_label TEXT;       -- JSON, set while relabelled
ALTER TABLE samples ADD COLUMN confirm_score REAL;         -- ema_loss (max over runs) when confirmed
ALTER TABLE samples ADD COLUMN meta_seq INTEGER NOT NULL DEFAULT 0;  -- the last batch whose meta the row holds

ALTER TABLE history ADD COLUMN stale_labels INTEGER NOT NULL DEFAULT 0;  -- observations sending a label a relabel replaced

CREATE TABLE review_log (
  seq          INTEGER PRIMARY KEY,
  dataset_id   INTEGER NOT NULL,
  key          INTEGER NOT NULL,
  at           INTEGER NOT NULL,                 -- unix milliseconds
  reviewer     TEXT,
  from_status  INTEGER NOT NULL,
  to_status    INTEGER NOT NULL,
  label_before TEXT,                             -- JSON
  label_after  TEXT,                             -- JSON: the correction (relabelled), else NULL
  note         TEXT,
  batch_seq    INTEGER NOT NULL DEFAULT 0        -- the newest batch logged before the change: a replayed batch
                                                 -- older than it is judged by the state before it
);
CREATE INDEX review_log_sample ON review_log (dataset_id, key, seq);

CREATE TABLE queues (
  id         INTEGER PRIMARY KEY,
  dataset_id INTEGER NOT NULL,
  name       TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  params     TEXT NOT NULL,                      -- JSON: how it was built
  UNIQUE (dataset_id, name)
);

CREATE TABLE queue_items (
  queue_id INTEGER NOT NULL,
  position INTEGER NOT NULL,                     -- 1-based, fixed when the queue is built
  key      INTEGER NOT NULL,
  score    REAL NOT NULL,                        -- the ranking score when built
  PRIMARY KEY (queue_id, position)
) WITHOUT ROWID;

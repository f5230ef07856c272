-- The Idempotency-Key of the review loop's writes (server/store_idem.c): with each change made under a
-- key, in the change's own transaction, the request's fingerprint and the answer it got, so that a retry
-- of it is answered the same and changes nothing, even after a crash. Keys are a dataset's (deleting it
-- deletes them) and are kept --idempotency-ttl seconds (24 hours); the writer removes older ones a few at a time.
CREATE TABLE idempotency_keys (
  dataset_id INTEGER NOT NULL,
  key TEXT NOT NULL,
  request TEXT NOT NULL,      -- the fingerprint: method, target and canonical body (server/idem.c)
  status INTEGER NOT NULL,    -- the answer's HTTP status
  response TEXT NOT NULL,     -- the answer's body
  created_at INTEGER NOT NULL, -- unix milliseconds
  PRIMARY KEY (dataset_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

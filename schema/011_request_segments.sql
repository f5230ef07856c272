-- focald schema 11: a batch_id stands for its whole request.
--
-- A request with segments is stored as one batch per segment, at consecutive
-- seqs, and its batch_id goes with the first. segments, on that row: how many
-- batches the request was stored as (this one and the ones after it), so that
-- a retry is compared with every segment it sent. NULL on the other rows, and
-- on rows with a batch_id written before this schema, whose retries are
-- compared by their first segment only.
ALTER TABLE batches ADD COLUMN segments INTEGER;

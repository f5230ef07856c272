-- focald schema 5: grand, kept like el2n.
--
-- grand, grand_n: the mean norm of the gradient of the loss with respect to
-- the logits (GraNd's gradient, taken at the logits) over the sample's first
-- grand_n scored observations, at most --early-observations of them.
-- Batches logged before this schema carry no gradient norm and do not count.
ALTER TABLE history ADD COLUMN grand REAL NOT NULL DEFAULT 0;
ALTER TABLE history ADD COLUMN grand_n INTEGER NOT NULL DEFAULT 0;

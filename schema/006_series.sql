-- focald schema 6: each (run, sample)'s down-sampled series of loss and p_t.
--
-- series: NULL, or the points the snapshot's row held (server/history.h,
-- hist_series_pack: log2 of the stride, the observations counted, then each
-- point's step, loss and p_t, little-endian). Rows written before this schema,
-- or while --series-points was 0, have none: their series begins with their
-- next observation.
ALTER TABLE history ADD COLUMN series BLOB;

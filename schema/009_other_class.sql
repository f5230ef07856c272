-- focald schema 9: the class a sample's label issue points at.
--
-- other_class: the class the latest of the sample's observations counted in
-- other_n named (its predicted class); -1 when none has. label_issue sorts
-- the samples it flags into cells by label and this class, and leaves out
-- the echoes of a systematic confusion (server/history.h, hist_li_echo).
-- Rows written before this schema do not know it: they count in no cell
-- until an observation names a class again.
ALTER TABLE history ADD COLUMN other_class INTEGER NOT NULL DEFAULT -1;

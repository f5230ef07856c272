-- focald schema 10: label_issue over a sample's first observations.
--
-- early_n: how many of the sample's first scored observations were counted
-- (at most --early-observations, as for el2n); early_other_n: how many of
-- them named another class confidently (counted in other_n as well). A run
-- whose model has fitted its labels decides label_issue on their ratio
-- (server/history.h, HIST_LI_FITTED). Rows written before this schema did not
-- count them: early_n is -1, their early score is label_issue_score, and a
-- run holding any keeps the whole history's rule.
ALTER TABLE history ADD COLUMN early_n INTEGER NOT NULL DEFAULT -1;
ALTER TABLE history ADD COLUMN early_other_n INTEGER NOT NULL DEFAULT 0;

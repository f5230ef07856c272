-- focald schema 4: what label_issue and el2n are computed from.
--
-- other_n: the scored observations in which the model confidently predicted
-- another class than the label (its probability at least that class's
-- running mean of p_t). label_issue is now derived from other_n / scored
-- when it is asked for (server/history.h), and the column is written as 0.
-- Of the observations before this schema only the last one's flag is known
-- (label_issue said whether it was such an observation): it is counted.
-- el2n, el2n_n: the mean EL2N score (the L2 norm of the probabilities minus
-- the one-hot label) over the sample's first el2n_n observations, at most
-- --early-observations of them. Batches logged before this schema carry no
-- EL2N and do not count.
ALTER TABLE history ADD COLUMN other_n INTEGER NOT NULL DEFAULT 0;
ALTER TABLE history ADD COLUMN el2n REAL NOT NULL DEFAULT 0;
ALTER TABLE history ADD COLUMN el2n_n INTEGER NOT NULL DEFAULT 0;
UPDATE history SET other_n = label_issue;
UPDATE history SET label_issue = 0;

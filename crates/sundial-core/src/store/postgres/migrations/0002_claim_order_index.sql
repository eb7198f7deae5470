-- Claims walk pending runs in claim order and stop at LIMIT, instead of reading and sorting
-- every pending run (the handler filter is applied while walking).
DROP INDEX IF EXISTS runs_claim;
CREATE INDEX runs_ready ON runs (priority DESC, scheduled_for, id) WHERE state = 'pending' AND NOT held AND NOT blocked;

-- Claims start at a cursor in the ready order instead of its head (store/cursor.rs), so the
-- index entries of runs claimed since vacuum last ran are not walked again by every claim. A
-- row comparison `(-priority, turn, scheduled_for, id) >= (...)` seeks to the cursor only when
-- every column of the index runs in one direction, hence priority (highest first) negated.
CREATE INDEX runs_ready_order ON runs ((-priority), turn, scheduled_for, id)
    WHERE state = 'pending' AND NOT held AND NOT blocked;
DROP INDEX IF EXISTS runs_ready;

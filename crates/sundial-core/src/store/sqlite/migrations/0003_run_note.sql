-- The lasting part of a run's reason (a misfire or catch-up note): claims show it alone and
-- settlements put their own note after it, so it outlives every attempt.
ALTER TABLE runs ADD COLUMN note TEXT;
UPDATE runs SET note = reason WHERE state = 'pending' AND attempt = 0 AND reason IS NOT NULL;

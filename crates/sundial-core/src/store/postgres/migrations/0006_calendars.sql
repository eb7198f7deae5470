-- Calendars (API.md "Calendars"): named, global sets of excluded times that triggers name in
-- their spec (`"calendars": [...]`). `exclude` is the JSON array as sent (echoed back).
-- Writers that name a calendar lock its row FOR SHARE, a delete locks it FOR UPDATE before it
-- looks for triggers naming it: the two cannot pass each other.
CREATE TABLE calendars (
    name        TEXT COLLATE "C" PRIMARY KEY,
    timezone    TEXT NOT NULL,
    exclude     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

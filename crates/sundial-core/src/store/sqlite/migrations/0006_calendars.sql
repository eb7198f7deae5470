-- Calendars (API.md "Calendars"): named, global sets of excluded times that triggers name in
-- their spec (`"calendars": [...]`). `exclude` is the JSON array as sent (echoed back).
CREATE TABLE calendars (
    name        TEXT PRIMARY KEY,
    timezone    TEXT NOT NULL,
    exclude     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- A worker's namespaces (API.md "Access": those of the token that registered it), as a JSON
-- array; NULL = every namespace. Its claims lease only runs of these namespaces.
ALTER TABLE workers ADD COLUMN namespaces TEXT;

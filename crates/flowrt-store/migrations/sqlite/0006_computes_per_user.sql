-- Compute instance names are each user's own: one user's `box` does not stop another's, and
-- creating one no longer tells whether someone else has a compute of that name.
CREATE TABLE computes_per_user (
    name    TEXT NOT NULL,
    kind    TEXT NOT NULL CHECK (kind IN ('instance', 'serverless')),
    size    TEXT NOT NULL,
    owner   TEXT NOT NULL REFERENCES users (id),
    status  TEXT NOT NULL CHECK (status IN ('Running', 'Stopped')),
    created INTEGER NOT NULL,
    PRIMARY KEY (owner, name)
);
INSERT INTO computes_per_user (name, kind, size, owner, status, created)
    SELECT name, kind, size, owner, status, created FROM computes;
DROP TABLE computes;
ALTER TABLE computes_per_user RENAME TO computes;

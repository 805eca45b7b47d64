-- Users can be disabled, and some are service principals (a CI pipeline's identity).
ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN service INTEGER NOT NULL DEFAULT 0;

-- API tokens: several per user, each revocable and optionally expiring. Only their sha256 is
-- kept. (users.token_sha256 still holds the first token's hash, which is also a row here.)
CREATE TABLE api_tokens (
    id        TEXT PRIMARY KEY NOT NULL,
    user_id   TEXT NOT NULL REFERENCES users (id),
    sha256    TEXT NOT NULL UNIQUE,
    created   INTEGER NOT NULL,
    -- Unix ms after which it is refused; NULL: never.
    expires   INTEGER,
    -- Unix ms when it was revoked; NULL: live.
    revoked   INTEGER
);
INSERT INTO api_tokens (id, user_id, sha256, created)
    SELECT 't-' || lower(hex(randomblob(6))), id, token_sha256, created FROM users;

-- Roles held besides a user's own (users.role): e.g. access-admin, which grants roles without
-- owning the workspace.
CREATE TABLE role_assignments (
    user_id TEXT NOT NULL REFERENCES users (id),
    role    TEXT NOT NULL,
    PRIMARY KEY (user_id, role)
);

-- Every state-changing request: who, what, when, and how it ended.
CREATE TABLE audit (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    user_id TEXT,
    user    TEXT,
    method  TEXT NOT NULL,
    path    TEXT NOT NULL,
    status  INTEGER NOT NULL
);

-- The control plane's state: users, computes, sessions, custom environments, identities, runs.
-- Times are Unix milliseconds. Enums are stored as their serde names (e.g. 'Running', 'small').

CREATE TABLE users (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'user', 'viewer')),
    token_sha256 TEXT NOT NULL UNIQUE,
    created      INTEGER NOT NULL
);

CREATE TABLE computes (
    name    TEXT PRIMARY KEY NOT NULL,
    kind    TEXT NOT NULL CHECK (kind IN ('instance', 'serverless')),
    size    TEXT NOT NULL,
    owner   TEXT NOT NULL REFERENCES users (id),
    status  TEXT NOT NULL CHECK (status IN ('Running', 'Stopped')),
    created INTEGER NOT NULL
);

CREATE TABLE sessions (
    id             TEXT PRIMARY KEY NOT NULL,
    owner          TEXT NOT NULL REFERENCES users (id),
    flow_dir       TEXT NOT NULL,
    env_ref        TEXT NOT NULL,
    env_key        TEXT,
    base_version   TEXT NOT NULL,
    size           TEXT NOT NULL,
    idle_timeout_s INTEGER NOT NULL,
    identity       TEXT,
    compute        TEXT,
    status         TEXT NOT NULL,
    phase          TEXT,
    reason         TEXT,
    log_tail       TEXT,
    agent_pid      INTEGER,
    agent_addr     TEXT,
    created        INTEGER NOT NULL,
    last_activity  INTEGER NOT NULL,
    updated        INTEGER NOT NULL
);
CREATE INDEX sessions_by_owner ON sessions (owner);

CREATE TABLE environments (
    name         TEXT NOT NULL,
    version      INTEGER NOT NULL,
    base_version TEXT NOT NULL,
    requirements TEXT NOT NULL,
    created      INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE identities (
    name              TEXT PRIMARY KEY NOT NULL,
    owner             TEXT NOT NULL REFERENCES users (id),
    -- base64(nonce || ciphertext || tag), sealed with <FLOWRT_HOME>/secret.key
    feed_token_sealed TEXT,
    created           INTEGER NOT NULL
);

CREATE TABLE runs (
    id         TEXT PRIMARY KEY NOT NULL,
    session_id TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('test', 'batch')),
    status     TEXT NOT NULL,
    request    TEXT NOT NULL,
    result     TEXT,
    created    INTEGER NOT NULL,
    finished   INTEGER
);
CREATE INDEX runs_by_session ON runs (session_id);
CREATE INDEX runs_unfinished ON runs (status) WHERE finished IS NULL;

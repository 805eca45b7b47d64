-- The control plane's state on PostgreSQL: the same tables as SQLite's migrations build, in
-- their current form (this backend has no older databases to bring forward). Times are Unix
-- milliseconds; enums are stored as their serde names (e.g. 'Running', 'small').

CREATE TABLE users (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'user', 'viewer')),
    -- The first token's hash (also a row of api_tokens).
    token_sha256 TEXT NOT NULL UNIQUE,
    created      BIGINT NOT NULL,
    disabled     BOOLEAN NOT NULL DEFAULT FALSE,
    service      BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE api_tokens (
    id      TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    sha256  TEXT NOT NULL UNIQUE,
    created BIGINT NOT NULL,
    expires BIGINT,
    revoked BIGINT
);

CREATE TABLE role_assignments (
    user_id TEXT NOT NULL REFERENCES users (id),
    role    TEXT NOT NULL,
    PRIMARY KEY (user_id, role)
);

CREATE TABLE audit (
    seq     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      BIGINT NOT NULL,
    user_id TEXT,
    "user"  TEXT,
    method  TEXT NOT NULL,
    path    TEXT NOT NULL,
    status  BIGINT NOT NULL
);

CREATE TABLE computes (
    name    TEXT NOT NULL,
    kind    TEXT NOT NULL CHECK (kind IN ('instance', 'serverless')),
    size    TEXT NOT NULL,
    owner   TEXT NOT NULL REFERENCES users (id),
    status  TEXT NOT NULL CHECK (status IN ('Running', 'Stopped')),
    created BIGINT NOT NULL,
    PRIMARY KEY (owner, name)
);

CREATE TABLE sessions (
    id             TEXT PRIMARY KEY NOT NULL,
    owner          TEXT NOT NULL REFERENCES users (id),
    flow_dir       TEXT NOT NULL,
    flow_ref       TEXT,
    env_ref        TEXT NOT NULL,
    env_key        TEXT,
    base_version   TEXT NOT NULL,
    size           TEXT NOT NULL,
    idle_timeout_s BIGINT NOT NULL,
    identity       TEXT,
    compute        TEXT,
    shared         BOOLEAN NOT NULL DEFAULT FALSE,
    status         TEXT NOT NULL,
    phase          TEXT,
    reason         TEXT,
    log_tail       TEXT,
    agent_pid      BIGINT,
    agent_addr     TEXT,
    created        BIGINT NOT NULL,
    last_activity  BIGINT NOT NULL,
    updated        BIGINT NOT NULL
);
CREATE INDEX sessions_by_owner ON sessions (owner);

CREATE TABLE environments (
    name         TEXT NOT NULL,
    version      BIGINT NOT NULL,
    base_version TEXT NOT NULL,
    requirements TEXT NOT NULL,
    created      BIGINT NOT NULL,
    owner        TEXT,
    PRIMARY KEY (name, version)
);

CREATE TABLE identities (
    name              TEXT PRIMARY KEY NOT NULL,
    owner             TEXT NOT NULL REFERENCES users (id),
    -- base64(nonce || ciphertext || tag), sealed with <FLOWRT_HOME>/secret.key
    feed_token_sealed TEXT,
    created           BIGINT NOT NULL,
    feed_hosts        TEXT
);

CREATE TABLE identity_grants (
    identity TEXT NOT NULL REFERENCES identities (name) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES users (id),
    PRIMARY KEY (identity, user_id)
);

CREATE TABLE runs (
    id         TEXT PRIMARY KEY NOT NULL,
    session_id TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('test', 'batch')),
    status     TEXT NOT NULL,
    request    TEXT NOT NULL,
    result     TEXT,
    created    BIGINT NOT NULL,
    finished   BIGINT
);
CREATE INDEX runs_by_session ON runs (session_id);
CREATE INDEX runs_unfinished ON runs (status) WHERE finished IS NULL;

CREATE TABLE flows (
    name    TEXT NOT NULL,
    version BIGINT NOT NULL,
    hash    TEXT NOT NULL,
    entry   TEXT,
    owner   TEXT NOT NULL REFERENCES users (id),
    files   BIGINT NOT NULL,
    bytes   BIGINT NOT NULL,
    created BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE connections (
    owner   TEXT NOT NULL REFERENCES users (id),
    name    TEXT NOT NULL,
    kind    TEXT NOT NULL,
    shared  BOOLEAN NOT NULL DEFAULT FALSE,
    created BIGINT NOT NULL,
    PRIMARY KEY (owner, name)
);

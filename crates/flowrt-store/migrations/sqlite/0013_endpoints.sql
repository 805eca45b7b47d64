-- Endpoints: a named, authenticated scoring URL owned by the workspace. Its two keys are kept
-- as sha256 only (shown once when made). `traffic` is JSON {deployment: percent}.
CREATE TABLE endpoints (
    name                 TEXT PRIMARY KEY NOT NULL,
    owner                TEXT NOT NULL,
    primary_key_sha256   TEXT NOT NULL,
    secondary_key_sha256 TEXT NOT NULL,
    traffic              TEXT NOT NULL,
    retention_days       INTEGER NOT NULL,
    created              INTEGER NOT NULL,
    updated              INTEGER NOT NULL
);
-- A flow version served behind an endpoint. `revision` grows each time the deployment moves to
-- another flow version: instances of the new revision start before the old ones drain.
CREATE TABLE deployments (
    endpoint           TEXT NOT NULL REFERENCES endpoints (name) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    owner              TEXT NOT NULL,
    flow_ref           TEXT NOT NULL,
    flow_dir           TEXT NOT NULL,
    revision           INTEGER NOT NULL,
    instances          INTEGER NOT NULL,
    min_instances      INTEGER NOT NULL,
    max_instances      INTEGER NOT NULL,
    target_concurrency INTEGER NOT NULL,
    size               TEXT NOT NULL,
    sample_rate        REAL NOT NULL,
    redact_payloads    INTEGER NOT NULL,
    created            INTEGER NOT NULL,
    updated            INTEGER NOT NULL,
    PRIMARY KEY (endpoint, name)
);
-- The sessions serving a deployment: one row per (revision, slot), so servers sharing the
-- database never start two instances for one slot.
CREATE TABLE deployment_instances (
    endpoint   TEXT NOT NULL,
    deployment TEXT NOT NULL,
    revision   INTEGER NOT NULL,
    slot       INTEGER NOT NULL,
    session_id TEXT NOT NULL UNIQUE,
    created    INTEGER NOT NULL,
    PRIMARY KEY (endpoint, deployment, revision, slot)
);
-- Every scoring request: what the dashboard counts; `detail` (JSON: inputs, outputs, nodes,
-- spans) only for sampled requests, without payloads when the deployment redacts them.
CREATE TABLE endpoint_requests (
    id                TEXT PRIMARY KEY NOT NULL,
    endpoint          TEXT NOT NULL,
    deployment        TEXT NOT NULL,
    session_id        TEXT NOT NULL,
    started           INTEGER NOT NULL,
    latency_ms        REAL NOT NULL,
    status            INTEGER NOT NULL,
    error             TEXT,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    total_tokens      INTEGER NOT NULL,
    streamed          INTEGER NOT NULL,
    detail            TEXT
);
CREATE INDEX endpoint_requests_by_time ON endpoint_requests (endpoint, started);
-- When a connection last changed: deployments resolve their connections again after it.
ALTER TABLE connections ADD COLUMN updated INTEGER NOT NULL DEFAULT 0;

-- Endpoints: a named, authenticated scoring URL owned by the workspace. Its two keys are kept
-- as sha256 only (shown once when made). `traffic` is JSON {deployment: percent}.
CREATE TABLE endpoints (
    name                 TEXT PRIMARY KEY NOT NULL,
    owner                TEXT NOT NULL,
    primary_key_sha256   TEXT NOT NULL,
    secondary_key_sha256 TEXT NOT NULL,
    traffic              TEXT NOT NULL,
    retention_days       BIGINT NOT NULL,
    created              BIGINT NOT NULL,
    updated              BIGINT NOT NULL
);
-- A flow version served behind an endpoint. `revision` grows each time the deployment moves to
-- another flow version: instances of the new revision start before the old ones drain.
CREATE TABLE deployments (
    endpoint           TEXT NOT NULL REFERENCES endpoints (name) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    owner              TEXT NOT NULL,
    flow_ref           TEXT NOT NULL,
    flow_dir           TEXT NOT NULL,
    revision           BIGINT NOT NULL,
    instances          BIGINT NOT NULL,
    min_instances      BIGINT NOT NULL,
    max_instances      BIGINT NOT NULL,
    target_concurrency BIGINT NOT NULL,
    size               TEXT NOT NULL,
    sample_rate        DOUBLE PRECISION NOT NULL,
    redact_payloads    BOOLEAN NOT NULL,
    created            BIGINT NOT NULL,
    updated            BIGINT NOT NULL,
    PRIMARY KEY (endpoint, name)
);
-- The sessions serving a deployment: one row per (revision, slot), so servers sharing the
-- database never start two instances for one slot.
CREATE TABLE deployment_instances (
    endpoint   TEXT NOT NULL,
    deployment TEXT NOT NULL,
    revision   BIGINT NOT NULL,
    slot       BIGINT NOT NULL,
    session_id TEXT NOT NULL UNIQUE,
    created    BIGINT NOT NULL,
    PRIMARY KEY (endpoint, deployment, revision, slot)
);
-- Every scoring request: what the dashboard counts; `detail` (JSON: inputs, outputs, nodes,
-- spans) only for sampled requests, without payloads when the deployment redacts them.
CREATE TABLE endpoint_requests (
    id                TEXT PRIMARY KEY NOT NULL,
    endpoint          TEXT NOT NULL,
    deployment        TEXT NOT NULL,
    session_id        TEXT NOT NULL,
    started           BIGINT NOT NULL,
    latency_ms        DOUBLE PRECISION NOT NULL,
    status            BIGINT NOT NULL,
    error             TEXT,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    total_tokens      BIGINT NOT NULL,
    streamed          BOOLEAN NOT NULL,
    detail            TEXT
);
CREATE INDEX endpoint_requests_by_time ON endpoint_requests (endpoint, started);
-- When a connection last changed: deployments resolve their connections again after it.
ALTER TABLE connections ADD COLUMN updated BIGINT NOT NULL DEFAULT 0;

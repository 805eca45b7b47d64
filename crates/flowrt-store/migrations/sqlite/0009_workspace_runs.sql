-- Batch and evaluation runs are workspace records: one name in the workspace, owned by their
-- creator, kept when the session that executed them is stopped, reset or deleted. The record
-- (what clients see of it, as JSON) lives here; line records, node events, logs and outputs
-- live in the server's blob folder, written only by the server from what agents stream back.
CREATE TABLE workspace_runs (
    name       TEXT PRIMARY KEY NOT NULL,
    owner      TEXT NOT NULL,
    -- The session that executes it (gone, perhaps: the run stays).
    session_id TEXT NOT NULL,
    status     TEXT NOT NULL,
    -- The run's record as clients see it (flowrt_api::responses::RunView), JSON.
    record     TEXT NOT NULL,
    created    INTEGER NOT NULL,
    -- Archived runs are left out of the list unless asked for, as promptflow's `run archive`.
    archived   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX workspace_runs_by_owner ON workspace_runs (owner);
CREATE INDEX workspace_runs_unfinished ON workspace_runs (status) WHERE status = 'Running';

-- Which server manages a session (runs its lifecycle, watches its agent), and until when its
-- lease holds: a server renews the leases of its sessions; another takes over one whose lease
-- ran out (its server died).
ALTER TABLE sessions ADD COLUMN manager TEXT;
ALTER TABLE sessions ADD COLUMN manager_lease INTEGER;

-- A run spread over several sessions: its lines are cut into chunks, which the servers
-- managing those sessions claim (with a lease) and run; the last step gathers them.
CREATE TABLE spread_runs (
    -- The session whose folder holds the run's record (the first one named).
    session_id TEXT NOT NULL,
    name       TEXT NOT NULL,
    owner      TEXT NOT NULL,
    -- JSON list of the session ids that run its chunks.
    sessions   TEXT NOT NULL,
    -- The batch request each chunk runs (JSON), paths relative to a session's folder.
    request    TEXT NOT NULL,
    total      INTEGER NOT NULL,
    status     TEXT NOT NULL,
    error      TEXT,
    created    INTEGER NOT NULL,
    PRIMARY KEY (session_id, name)
);

CREATE TABLE run_chunks (
    id          INTEGER PRIMARY KEY,
    session_id  TEXT NOT NULL,
    name        TEXT NOT NULL,
    -- 0, 1, ... for the line chunks; -1 for the gathering step, claimable once every chunk is done.
    seq         INTEGER NOT NULL,
    first_line  INTEGER NOT NULL,
    end_line    INTEGER NOT NULL,
    -- todo | claimed | done
    state       TEXT NOT NULL,
    -- The server holding the lease, the session running it, and until when.
    holder      TEXT,
    executor    TEXT,
    lease_until INTEGER,
    -- Counts claims: a completion must name the claim it finishes (a fencing token).
    attempt     INTEGER NOT NULL DEFAULT 0,
    -- The chunk's line records (JSONL), once done.
    result      TEXT,
    FOREIGN KEY (session_id, name) REFERENCES spread_runs (session_id, name) ON DELETE CASCADE
);
CREATE UNIQUE INDEX run_chunks_by_run ON run_chunks (session_id, name, seq);

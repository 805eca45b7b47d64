-- Flows in the workspace: uploaded snapshots, content-addressed (the files live under
-- <FLOWRT_HOME>/snapshots/<hash>/), versioned by name. Sessions name the version they run.

CREATE TABLE flows (
    name    TEXT NOT NULL,
    version INTEGER NOT NULL,
    hash    TEXT NOT NULL,
    -- The flow file inside the snapshot when it is not the folder itself (a .prompty file).
    entry   TEXT,
    owner   TEXT NOT NULL REFERENCES users (id),
    files   INTEGER NOT NULL,
    bytes   INTEGER NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);

ALTER TABLE sessions ADD COLUMN flow_ref TEXT;

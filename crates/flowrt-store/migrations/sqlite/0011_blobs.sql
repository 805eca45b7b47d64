-- The workspace's files, when servers share them through the database (`--blobs database`):
-- each file is chunks at their byte offsets (`whole`: 1 when written whole, 0 when it grows by
-- appends). See flowrt-store's `blobs` module.
CREATE TABLE blobs (
    key TEXT NOT NULL,
    at INTEGER NOT NULL,
    data BLOB NOT NULL,
    whole INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key, at)
);

-- Facts every server on this database must agree on: where the workspace's files are, and the
-- fingerprint of the key secrets are sealed with.
CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Connections created in the workspace through the API. Their configs and sealed secrets live in
-- <FLOWRT_HOME>/workspace/connections/<owner>/<name>.json; this table says whose they are and
-- whether they are shared with the workspace.
CREATE TABLE connections (
    owner   TEXT NOT NULL REFERENCES users (id),
    name    TEXT NOT NULL,
    kind    TEXT NOT NULL,
    shared  INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL,
    PRIMARY KEY (owner, name)
);

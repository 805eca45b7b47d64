-- The bearer token each session's agent requires, sealed with the server's key: the server keeps
-- it itself rather than reading it back from the session's folder, which the session's own code
-- can write (a link there could hand it another file's content).
ALTER TABLE sessions ADD COLUMN agent_token_sealed TEXT;

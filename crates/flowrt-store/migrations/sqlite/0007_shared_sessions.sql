-- A serverless session its owner shares with the workspace: every data scientist may see it and
-- run flows on it (how a pipeline's service principal gets a session); only its owner and admins
-- change or stop it.
ALTER TABLE sessions ADD COLUMN shared INTEGER NOT NULL DEFAULT 0;

-- A flow version saved in the browser says why, as a commit does (pushes may too).
ALTER TABLE flows ADD COLUMN message TEXT;

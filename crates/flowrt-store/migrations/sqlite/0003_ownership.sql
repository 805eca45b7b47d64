-- Who may publish further versions of a custom environment (NULL: published on this machine by
-- its owner, before environments had owners; only admins publish over those).
ALTER TABLE environments ADD COLUMN owner TEXT;

-- The hosts an identity's feed token may be sent to, as a JSON list (NULL: none).
ALTER TABLE identities ADD COLUMN feed_hosts TEXT;

-- The users, besides its creator, who may start sessions acting as an identity.
CREATE TABLE identity_grants (
    identity TEXT NOT NULL REFERENCES identities (name) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES users (id),
    PRIMARY KEY (identity, user_id)
);

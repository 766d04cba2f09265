-- Herald schema, version 5: the user registry (ZIM's server API registers
-- users). Times are Unix milliseconds.

-- One row per registered user. Registration is optional (the server's
-- require-registration decides whether logins need a row), so nothing else
-- refers to this table: a user's messages, conversations, memberships and
-- push devices are keyed by the user ID and outlive the row. Unregistering
-- deletes it; registering the ID again starts a new row.
CREATE TABLE users (
    id            TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    avatar        TEXT    NOT NULL,
    extended      TEXT    NOT NULL,
    registered_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

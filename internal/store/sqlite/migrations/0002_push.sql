-- Herald schema, version 2: offline push. Times are Unix milliseconds.

-- Registered push tokens. A token is unique per provider and app; a bound
-- device (user_id not empty) has one record per device, app and provider.
-- user_id is '' once the device is unbound (logout).
CREATE TABLE push_devices (
    push_id       TEXT    PRIMARY KEY,
    provider      TEXT    NOT NULL,
    token         TEXT    NOT NULL,
    app           TEXT    NOT NULL,
    env           TEXT    NOT NULL,
    user_id       TEXT    NOT NULL,
    device        TEXT    NOT NULL,
    registered_at INTEGER NOT NULL,
    badge         INTEGER NOT NULL DEFAULT 0,
    UNIQUE (provider, app, token)
) STRICT, WITHOUT ROWID;

-- Also serves UnbindPushDevices (user_id, device); a query must say
-- user_id <> '' to use it.
CREATE UNIQUE INDEX push_devices_binding ON push_devices (user_id, device, provider, app)
    WHERE user_id <> '';

-- The outbox: one row per message to push to one device, written in the
-- transaction that stores the message. Clustered on (msg_id, push_id), not
-- (push_id, msg_id): message IDs grow, so inserts go to the end of the
-- table instead of a random page per row; the lookups are by both columns
-- anyway. due is the dispatcher's order; it is near now, so that index
-- grows at its end too.
CREATE TABLE push_outbox (
    msg_id   INTEGER NOT NULL,
    push_id  TEXT    NOT NULL,
    due      INTEGER NOT NULL,
    user_id  TEXT    NOT NULL,
    conv_key TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    expires  INTEGER NOT NULL,
    attempt  INTEGER NOT NULL,
    data     BLOB,             -- NULL when empty
    PRIMARY KEY (msg_id, push_id)
) STRICT, WITHOUT ROWID;

CREATE INDEX push_outbox_due ON push_outbox (due, push_id, msg_id);

-- The delivery log. id (the rowid) is insertion order: the newest row has
-- the highest, even after pruning. latency is in nanoseconds.
CREATE TABLE push_log (
    id       INTEGER PRIMARY KEY,
    at       INTEGER NOT NULL,
    push_id  TEXT    NOT NULL,
    user_id  TEXT    NOT NULL,
    msg_id   INTEGER NOT NULL,
    conv_key TEXT    NOT NULL,
    provider TEXT    NOT NULL,
    app      TEXT    NOT NULL,
    env      TEXT    NOT NULL,
    attempt  INTEGER NOT NULL,
    outcome  TEXT    NOT NULL,
    status   INTEGER NOT NULL,
    reason   TEXT    NOT NULL,
    body     TEXT    NOT NULL,
    notif_id TEXT    NOT NULL,
    latency  INTEGER NOT NULL
) STRICT;

-- Each index ends with the rowid, so "ORDER BY at DESC, id DESC" reads
-- them backwards without sorting.
CREATE INDEX push_log_user ON push_log (user_id, at);
CREATE INDEX push_log_push ON push_log (push_id, at);
CREATE INDEX push_log_msg ON push_log (msg_id, at);
CREATE INDEX push_log_at ON push_log (at); -- PrunePushLog

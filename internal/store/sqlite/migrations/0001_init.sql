-- Herald schema, version 1. Times are Unix milliseconds.

-- One row per conversation; the integer id keeps the message indexes small.
CREATE TABLE conversations (
    id       INTEGER PRIMARY KEY,
    conv_key TEXT    NOT NULL UNIQUE, -- herald.PeerConversationKey
    type     INTEGER NOT NULL         -- herald.ConversationType
) STRICT;

-- A user's conversation list: one row per participant, written the first
-- time a conversation gets a message.
CREATE TABLE members (
    user_id  TEXT    NOT NULL,
    conv_id  INTEGER NOT NULL REFERENCES conversations (id),
    read_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, conv_id)
) STRICT, WITHOUT ROWID;

-- Messages. id and seq are assigned by the store's single writer; ids grow,
-- so rows are appended to the end of the table. Each index costs about one
-- random page per message written, the bulk of a commit: keep them few.
-- (A table clustered on (conv_id, seq) was measured and wrote ~1.8x more
-- pages per message.) conv_id has no foreign key: checking it would cost a
-- lookup per insert, and the writer only uses ids it has just read or
-- created.
CREATE TABLE messages (
    id          INTEGER PRIMARY KEY,
    conv_id     INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    sender      TEXT    NOT NULL,
    receiver    TEXT    NOT NULL,
    local_id    TEXT    NOT NULL,
    type        INTEGER NOT NULL,
    sub_type    INTEGER NOT NULL,
    text        TEXT,             -- NULL when empty
    data        BLOB,             -- NULL when empty
    extended    TEXT,             -- NULL when empty
    created_at  INTEGER NOT NULL,
    -- The largest created_at of this conversation up to and including this
    -- seq. It never decreases along seq, so a binary search over seq finds
    -- the first message that can match a "since" filter, even when clocks
    -- stepped back.
    created_max INTEGER NOT NULL,
    UNIQUE (conv_id, seq)
) STRICT;

-- Retries are recognised by the sender's own ID for a message.
CREATE UNIQUE INDEX messages_sender_local_id ON messages (sender, local_id);

-- How far each device has acknowledged each conversation.
CREATE TABLE cursors (
    user_id  TEXT    NOT NULL,
    device   TEXT    NOT NULL,
    conv_key TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (user_id, device, conv_key)
) STRICT, WITHOUT ROWID;

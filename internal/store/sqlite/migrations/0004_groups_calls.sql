-- Herald schema, version 4: groups, mentions, calls. Times are Unix
-- milliseconds.

-- One row per group ever created. A dismissed group keeps its row, with
-- dismissed_at set, so its ID is never given to a new group (whose members
-- could otherwise read the old group's messages, which stay stored).
-- conv_id is the group conversation's conversations row ("g:" + id),
-- created with the group (or found, when messages were stored for the key
-- before: the store leaves who may send to the caller). The table is not
-- named "groups": GROUPS is an SQL keyword.
CREATE TABLE chat_groups (
    id           TEXT    PRIMARY KEY,
    conv_id      INTEGER NOT NULL REFERENCES conversations (id),
    name         TEXT    NOT NULL,
    join_mode    TEXT    NOT NULL,
    invite_mode  TEXT    NOT NULL,
    extended     TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    dismissed_at INTEGER            -- NULL while the group lives
) STRICT, WITHOUT ROWID;

-- Group memberships live in members, beside the peer conversations' list
-- entries: a user's conversation list (LastSeqs, Conversations, SetReadSeq)
-- stays one primary-key range of members, groups included. A peer row has
-- role 0; a group row has the member's herald.GroupRole (1 owner, 2 admin,
-- 3 member), join_seq (the group's last seq when the user joined: the
-- conversation list shows no message at or below it, and read_seq starts
-- there) and joined_at. A group message writes no members row: the rows are
-- written by CreateGroup and AddGroupMembers only, and removed by
-- RemoveGroupMembers and DismissGroup.
ALTER TABLE members ADD COLUMN role      INTEGER NOT NULL DEFAULT 0;
ALTER TABLE members ADD COLUMN join_seq  INTEGER NOT NULL DEFAULT 0;
ALTER TABLE members ADD COLUMN joined_at INTEGER NOT NULL DEFAULT 0;

-- A group's members in user ID order (GroupMembers, DismissGroup). Partial:
-- peer rows (role 0) are not in it, so a peer conversation's first message
-- pays nothing for it. A query must say role <> 0 to use it.
CREATE INDEX members_group ON members (conv_id, user_id) WHERE role <> 0;

-- The users a group message @-mentions: a JSON array of user IDs, NULL when
-- none (every peer message). Existing rows read as NULL.
ALTER TABLE messages ADD COLUMN mentions TEXT;

-- Calls. data is the call's shared stored form (store.EncodeCall, JSON);
-- the other columns copy what the queries need. ended_at is NULL while the
-- call rings: calls_open holds exactly the open calls, in OpenCalls' order.
CREATE TABLE calls (
    id         TEXT    PRIMARY KEY,
    created_at INTEGER NOT NULL,
    deadline   INTEGER NOT NULL,
    ended_at   INTEGER,
    data       BLOB    NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX calls_open ON calls (deadline, id) WHERE ended_at IS NULL;

-- Who took part in which call (caller and invitees), for UserCalls: newest
-- first is this key read backwards. created_at is the call's; SaveCall
-- keeps the rows in step with the call's participants.
CREATE TABLE call_users (
    user_id    TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    call_id    TEXT    NOT NULL,
    PRIMARY KEY (user_id, created_at, call_id)
) STRICT, WITHOUT ROWID;

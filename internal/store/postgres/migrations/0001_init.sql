-- Herald's PostgreSQL schema, version 1: everything SQLite's migrations
-- 0001 to 0006 hold, in one step. Times are Unix milliseconds (bigint), as
-- in the SQLite store, so both read back the same values. Keys and every
-- column that is ordered or compared use COLLATE "C": the store's order
-- (conversation pages, push IDs, group members) is Go's byte order, not
-- the database's locale.

-- One row per conversation. last_seq is the seq counter: a writer takes
-- the next seqs by raising it while it holds this row locked (FOR UPDATE),
-- in the transaction that inserts the messages, so seqs never go back and
-- never leave a gap, whatever node writes. last_id is the ID of the
-- message at last_seq (0 when none): Conversations orders by it.
CREATE TABLE conversations (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conv_key text COLLATE "C" NOT NULL UNIQUE,
    type     smallint NOT NULL,
    last_seq bigint   NOT NULL DEFAULT 0,
    last_id  bigint   NOT NULL DEFAULT 0
);

-- A user's conversation list: peer rows (role 0, written with a peer
-- conversation's first message) and group memberships (role 1 owner,
-- 2 admin, 3 member; join_seq is the group's last seq when the user
-- joined, and read_seq starts there).
CREATE TABLE members (
    user_id   text COLLATE "C" NOT NULL,
    conv_id   bigint   NOT NULL REFERENCES conversations (id),
    read_seq  bigint   NOT NULL DEFAULT 0,
    role      smallint NOT NULL DEFAULT 0,
    join_seq  bigint   NOT NULL DEFAULT 0,
    joined_at bigint   NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, conv_id)
);

-- A group's members in user order; peer rows stay out of it.
CREATE INDEX members_group ON members (conv_id, user_id) WHERE role <> 0;

-- Message IDs: taken by the writer after it has locked the conversations
-- of its transaction, so within a conversation IDs grow with seqs.
CREATE SEQUENCE messages_id_seq AS bigint;

-- Messages. text, data and extended are bytea: a client's text may hold a
-- NUL byte, which PostgreSQL's text type refuses. mentions is a JSON array
-- of user IDs, NULL when none. conv_id has no foreign key: the writer only
-- uses ids it has just locked, and checking would cost a lookup per row.
-- id has no index: nothing looks a message up by it (a conversation's last
-- message is found by (conv_id, last_seq)), messages_id_seq keeps it
-- unique, and each index costs every insert (the writer's backend is the
-- bottleneck).
CREATE TABLE messages (
    id            bigint   NOT NULL,
    conv_id       bigint   NOT NULL,
    seq           bigint   NOT NULL,
    sender        text COLLATE "C" NOT NULL,
    receiver      text COLLATE "C" NOT NULL,
    local_id      text COLLATE "C" NOT NULL,
    type          smallint NOT NULL,
    sub_type      integer  NOT NULL,
    text          bytea,
    data          bytea,
    extended      bytea,
    created_at    bigint   NOT NULL,
    mentions      text,
    sender_device text     NOT NULL DEFAULT '',
    UNIQUE (conv_id, seq)
);

-- Retries are recognised by the sender's own ID for a message, on every
-- node: a unique index, not a check in Go.
CREATE UNIQUE INDEX messages_sender_local_id ON messages (sender, local_id);

-- How far each device has acknowledged each conversation.
CREATE TABLE cursors (
    user_id  text COLLATE "C" NOT NULL,
    device   text COLLATE "C" NOT NULL,
    conv_key text COLLATE "C" NOT NULL,
    seq      bigint NOT NULL,
    PRIMARY KEY (user_id, device, conv_key)
);

-- Registered push tokens; user_id is '' once the device is unbound.
CREATE TABLE push_devices (
    push_id       text COLLATE "C" PRIMARY KEY,
    provider      text COLLATE "C" NOT NULL,
    token         text COLLATE "C" NOT NULL,
    app           text COLLATE "C" NOT NULL,
    env           text   NOT NULL,
    user_id       text COLLATE "C" NOT NULL,
    device        text COLLATE "C" NOT NULL,
    registered_at bigint NOT NULL,
    badge         integer NOT NULL DEFAULT 0,
    UNIQUE (provider, app, token)
);

CREATE UNIQUE INDEX push_devices_binding ON push_devices (user_id, device, provider, app)
    WHERE user_id <> '';

-- The outbox: one row per message to push to one device, written in the
-- transaction that stores the message. (The lease columns several
-- dispatchers need come with the interface that claims jobs: README.md.)
CREATE TABLE push_outbox (
    msg_id   bigint NOT NULL,
    push_id  text COLLATE "C" NOT NULL,
    due      bigint NOT NULL,
    user_id  text COLLATE "C" NOT NULL,
    conv_key text COLLATE "C" NOT NULL,
    seq      bigint NOT NULL,
    expires  bigint NOT NULL,
    attempt  integer NOT NULL,
    data     bytea,
    PRIMARY KEY (msg_id, push_id)
);

CREATE INDEX push_outbox_due ON push_outbox (due, push_id, msg_id);

-- The delivery log. id is insertion order. body is bytea: it holds a
-- provider's bytes as received, which need not be UTF-8. latency is in
-- nanoseconds.
CREATE TABLE push_log (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       bigint NOT NULL,
    push_id  text COLLATE "C" NOT NULL,
    user_id  text COLLATE "C" NOT NULL,
    msg_id   bigint NOT NULL,
    conv_key text NOT NULL,
    provider text NOT NULL,
    app      text NOT NULL,
    env      text NOT NULL,
    attempt  integer NOT NULL,
    outcome  text NOT NULL,
    status   integer NOT NULL,
    reason   bytea NOT NULL,
    body     bytea NOT NULL,
    notif_id text NOT NULL,
    latency  bigint NOT NULL
);

CREATE INDEX push_log_user ON push_log (user_id, at, id);
CREATE INDEX push_log_push ON push_log (push_id, at, id);
CREATE INDEX push_log_msg ON push_log (msg_id, at, id);
CREATE INDEX push_log_at ON push_log (at);

-- Muted conversations, by key: a conversation may be muted before its
-- first message.
CREATE TABLE mutes (
    user_id  text COLLATE "C" NOT NULL,
    conv_key text COLLATE "C" NOT NULL,
    PRIMARY KEY (user_id, conv_key)
);

-- One row per group ever created; a dismissed group keeps its row, so its
-- ID is never given to a new group.
CREATE TABLE chat_groups (
    id           text COLLATE "C" PRIMARY KEY,
    conv_id      bigint NOT NULL REFERENCES conversations (id),
    name         text   NOT NULL,
    join_mode    text   NOT NULL,
    invite_mode  text   NOT NULL,
    extended     text   NOT NULL,
    created_at   bigint NOT NULL,
    dismissed_at bigint
);

-- Calls in the shared stored form (store.EncodeCall); ended_at is NULL
-- while the call rings.
CREATE TABLE calls (
    id         text COLLATE "C" PRIMARY KEY,
    created_at bigint NOT NULL,
    deadline   bigint NOT NULL,
    ended_at   bigint,
    data       bytea  NOT NULL
);

CREATE INDEX calls_open ON calls (deadline, id) WHERE ended_at IS NULL;

CREATE TABLE call_users (
    user_id    text COLLATE "C" NOT NULL,
    created_at bigint NOT NULL,
    call_id    text COLLATE "C" NOT NULL,
    PRIMARY KEY (user_id, created_at, call_id)
);

-- Registered users; nothing refers to this table.
CREATE TABLE users (
    id            text COLLATE "C" PRIMARY KEY,
    name          text   NOT NULL,
    avatar        text   NOT NULL,
    extended      text   NOT NULL,
    registered_at bigint NOT NULL
);

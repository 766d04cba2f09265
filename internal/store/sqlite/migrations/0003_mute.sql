-- Herald schema, version 3: per-user conversation mute (ZIM's
-- setConversationNotificationStatus).

-- One row per (user, conversation) the user muted; unmuting deletes it.
-- conv_key is the conversation's key, not conversations.id: a user may mute
-- a conversation that has no message yet, so no conversations row. The
-- primary key serves the one lookup (Conversations, per listed
-- conversation); MutedConversations reads the whole table at start.
CREATE TABLE mutes (
    user_id  TEXT NOT NULL,
    conv_key TEXT NOT NULL,
    PRIMARY KEY (user_id, conv_key)
) STRICT, WITHOUT ROWID;

-- Herald's PostgreSQL schema, version 4: per-user offline push rules
-- (ZIM's ZIMUserOfflinePushRule, with a do-not-disturb window). One row
-- per user who set a rule; clearing it deletes the row. rule is the
-- herald.PushRule as JSON, validated before it is written and read whole
-- by the push service (PushRules).
CREATE TABLE push_rules (
    user_id text COLLATE "C" PRIMARY KEY,
    rule    text NOT NULL
);

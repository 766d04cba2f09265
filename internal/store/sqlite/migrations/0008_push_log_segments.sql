-- Herald schema, version 8: the delivery log's user and device indexes
-- by segment.
--
-- push_log_user and push_log_push led with the user and the push ID: every
-- entry went to a random page of each (push IDs are random, users many),
-- so a batch of outcomes dirtied about one page of each index per entry,
-- written to the WAL and again at the checkpoint: half the CPU of storing
-- a push's outcome. They now lead with the entry's segment, its rowid
-- divided by 1024 (id >> 10): a batch's entries land in the last segment's
-- few pages. A query by user or device reads the segments newest first
-- (PushLog); push_log_segments keeps each segment's latest at, so that it
-- stops as soon as no older segment can hold a newer entry (an entry's at
-- is its attempt's time, not its write's: a slow attempt is written after
-- faster, later ones). The trigger keeps it up to date for every insert;
-- PrunePushLog deletes the segments it emptied.
DROP INDEX push_log_user;
DROP INDEX push_log_push;
CREATE INDEX push_log_user ON push_log (id >> 10, user_id, at);
CREATE INDEX push_log_push ON push_log (id >> 10, push_id, at);

CREATE TABLE push_log_segments (
    seg    INTEGER PRIMARY KEY, -- push_log.id >> 10
    max_at INTEGER NOT NULL     -- the latest at of its entries (or of deleted ones)
) STRICT;

INSERT INTO push_log_segments (seg, max_at) SELECT id >> 10, max(at) FROM push_log GROUP BY id >> 10;

CREATE TRIGGER push_log_segment AFTER INSERT ON push_log BEGIN
    INSERT INTO push_log_segments (seg, max_at) VALUES (NEW.id >> 10, NEW.at)
        ON CONFLICT (seg) DO UPDATE SET max_at = max(max_at, excluded.max_at);
END;

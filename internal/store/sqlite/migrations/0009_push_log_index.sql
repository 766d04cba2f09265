-- Herald schema, version 9: the delivery log's indexes by user and by push
-- ID become tables written in bulk.
--
-- push_log_user and push_log_push put each log row in a page of its own
-- (one per user, one per device): two random pages written per push, about
-- half the CPU of storing a successful push's outcome. The writer now
-- appends log rows without them and, once the rows past push_log_indexed.upto
-- are many (Options.LogIndexEvery), enters them into these two tables in
-- one sorted INSERT, so a page takes every entry a batch has for it. A
-- query reads the tables for the rows up to upto and scans the few rows
-- after it (push.go, pushLogQuery).
DROP INDEX push_log_user;
DROP INDEX push_log_push;

CREATE TABLE push_log_by_user (
    user_id TEXT    NOT NULL,
    at      INTEGER NOT NULL,
    id      INTEGER NOT NULL,
    PRIMARY KEY (user_id, at, id)
) STRICT, WITHOUT ROWID;

CREATE TABLE push_log_by_push (
    push_id TEXT    NOT NULL,
    at      INTEGER NOT NULL,
    id      INTEGER NOT NULL,
    PRIMARY KEY (push_id, at, id)
) STRICT, WITHOUT ROWID;

-- One row: the highest push_log id whose entries are in both tables.
CREATE TABLE push_log_indexed (
    upto INTEGER NOT NULL
) STRICT;

INSERT INTO push_log_by_user (user_id, at, id) SELECT user_id, at, id FROM push_log ORDER BY user_id, at, id;
INSERT INTO push_log_by_push (push_id, at, id) SELECT push_id, at, id FROM push_log ORDER BY push_id, at, id;
INSERT INTO push_log_indexed (upto) SELECT coalesce(max(id), 0) FROM push_log;

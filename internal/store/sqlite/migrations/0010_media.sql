-- Herald schema, version 10: media uploads (herald.MediaFile). body is the
-- whole record (store.EncodeMediaFile); the columns beside it are what the
-- queries select on. referenced is 1 once a message refers to the upload:
-- the lifecycle deletes the others after a grace period
-- (media_unreferenced), and the daily quota sums an owner's sizes
-- (media_owner).
CREATE TABLE media (
    id         TEXT    PRIMARY KEY,
    owner      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    size       INTEGER NOT NULL,
    received   INTEGER NOT NULL,
    referenced INTEGER NOT NULL,
    body       BLOB    NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX media_owner ON media (owner, created_at);
CREATE INDEX media_unreferenced ON media (created_at) WHERE referenced = 0;

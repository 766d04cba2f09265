-- Herald's PostgreSQL schema, version 5: media uploads (herald.MediaFile).
-- body is the whole record (store.EncodeMediaFile); the columns beside it
-- are what the queries select on. referenced is true once a message
-- refers to the upload: the lifecycle deletes the others after a grace
-- period (media_unreferenced), and the daily quota sums an owner's sizes
-- (media_owner). UpdateMedia's compare-and-swap on received is one UPDATE
-- ... WHERE received = $from, whose row lock orders nodes.
CREATE TABLE media (
    id         text COLLATE "C" PRIMARY KEY,
    owner      text COLLATE "C" NOT NULL,
    created_at bigint  NOT NULL,
    size       bigint  NOT NULL,
    received   bigint  NOT NULL,
    referenced boolean NOT NULL,
    body       bytea   NOT NULL
);
CREATE INDEX media_owner ON media (owner, created_at);
CREATE INDEX media_unreferenced ON media (created_at) WHERE NOT referenced;

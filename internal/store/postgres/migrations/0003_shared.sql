-- Herald's PostgreSQL schema, version 2: the shared table (store.SharedEntry),
-- what the nodes on this database must agree on beside the chat data: the
-- server API's accepted nonces, console sessions, the APNs provider token.
-- expires is Unix milliseconds; a row at or past it is as good as absent
-- and PruneShared deletes it (through shared_expires). version is the
-- compare-and-swap counter: 1 at the first insert, one more at each
-- replacement, so a writer that read version v replaces only v.
CREATE TABLE shared (
    ns      text COLLATE "C" NOT NULL,
    name    bytea  NOT NULL, -- a key may hold any byte (the API's hold NUL)
    value   bytea  NOT NULL,
    expires bigint NOT NULL,
    version bigint NOT NULL,
    PRIMARY KEY (ns, name)
);
CREATE INDEX shared_expires ON shared (expires);

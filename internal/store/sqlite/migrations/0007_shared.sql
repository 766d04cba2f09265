-- Herald schema, version 7: the shared table (store.SharedEntry), what
-- nodes on one store agree on: on SQLite there is one process, so it holds
-- what PostgreSQL's holds for the API's nonces, console sessions and the
-- APNs provider token when those are routed through the store. expires is
-- Unix milliseconds; a row at or past it is as good as absent, and
-- PruneShared deletes it (through shared_expires). version is the
-- compare-and-swap counter.
CREATE TABLE shared (
    ns      TEXT NOT NULL,
    name    TEXT NOT NULL,
    value   BLOB NOT NULL,
    expires INTEGER NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (ns, name)
) STRICT, WITHOUT ROWID;
CREATE INDEX shared_expires ON shared (expires);

-- Leases on outbox jobs, so that several nodes share one outbox and no job
-- is sent by two of them (README.md, "The outbox with several
-- dispatchers"). lease_owner is the node (HERALD_NODE_ID) that holds the
-- job, lease_until (Unix ms) when its hold ends; a job whose lease ran out
-- is taken by another node's ClaimPush. Jobs written before this step are
-- nobody's: any node may take them once due. No index: a claim walks
-- push_outbox_due over the due jobs only, and an index on lease_until
-- would cost every insert of the hot path a third b-tree.
ALTER TABLE push_outbox
    ADD COLUMN lease_owner text COLLATE "C" NOT NULL DEFAULT '',
    ADD COLUMN lease_until bigint NOT NULL DEFAULT 0;

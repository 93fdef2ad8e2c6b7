-- The delivery log's retention purge found its rows by scanning the whole
-- table every sweep, in every worker. Settled rows by their time, in a
-- partial index: the purge reads only what it deletes. (A delivered row
-- is settled when it is written, so each delivery adds one entry here.)
CREATE INDEX webhook_deliveries_settled_idx ON webhook_deliveries (created_at)
    WHERE status IN ('delivered', 'failed');

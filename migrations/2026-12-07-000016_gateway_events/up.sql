-- The payment gateway's events, stored once by their id. A row is both
-- the event and the work it owes: `pending` rows are what processing
-- takes (a partial index of them), so receiving one is a single insert
-- and a duplicate writes nothing.
CREATE TABLE gateway_events (
    id           TEXT PRIMARY KEY,
    type         TEXT NOT NULL,
    object_id    TEXT,
    order_id     UUID,
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'processed', 'unmatched', 'ignored', 'failed')),
    payload      JSONB NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    processed_at TIMESTAMPTZ,
    attempts     INTEGER NOT NULL DEFAULT 0,
    error        TEXT
);
CREATE INDEX gateway_events_pending_idx ON gateway_events (received_at) WHERE status = 'pending';
CREATE INDEX gateway_events_received_idx ON gateway_events (received_at DESC);

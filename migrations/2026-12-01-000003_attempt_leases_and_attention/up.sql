-- One chain per owed item. A job claims an attempt of its owed row: it may
-- start when `next_attempt_at` has come, or when it is the task that holds
-- the current attempt (apalis re-running the same task after a crash). The
-- claim moves `next_attempt_at` past the attempt's lease; a retry sets it
-- to the retry time. The sweeper only pushes rows whose next attempt is
-- overdue, so it never starts a second chain beside a live one.
ALTER TABLE owed_work ADD COLUMN next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now();
ALTER TABLE owed_work ADD COLUMN attempt_task TEXT;
ALTER TABLE owed_work ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0);
UPDATE owed_work SET next_attempt_at = owed_since;
CREATE INDEX owed_work_next_attempt_idx ON owed_work (next_attempt_at);

-- A delivery attempt whose answer never came (timeout, 5xx, broken
-- connection): the shipment may exist, so the order is not cancellable
-- until an attempt learns the outcome (the partner is idempotent by
-- reference).
ALTER TABLE orders ADD COLUMN delivery_outcome_unknown BOOLEAN NOT NULL DEFAULT false;

-- Work the jobs gave up on after their attempt budget: ops must look.
ALTER TABLE orders ADD COLUMN attention TEXT
    CHECK (attention IN ('payment_unsettled', 'refund_unsettled'));
ALTER TABLE orders ADD COLUMN attention_since TIMESTAMPTZ;
CREATE INDEX orders_attention_idx ON orders (attention_since) WHERE attention IS NOT NULL;

-- Webhook delivery by cursor: an endpoint's pending deliveries are the
-- webhook log's entries past its cursor, not a row each. A delivery row is
-- written once, when its first attempt has an answer (delivered, or
-- retrying with its attempt logged), so a delivery costs one insert
-- instead of an insert and an update (about half its WAL, measured in
-- BENCHMARKS). Resends and retries keep their rows, as before.
--
-- The log is in commit order by (xact, position): `xact` is the writing
-- transaction's id, and a reader only takes entries whose transaction is
-- older than its snapshot's xmin, so every transaction that could still
-- add an entry before the reader's cursor has ended. `position` orders
-- the entries of one transaction and is unique.
CREATE TABLE webhook_log (
    xact       BIGINT NOT NULL,
    position   BIGSERIAL NOT NULL,
    event_id   UUID NOT NULL,
    type       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (xact, position)
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000);

-- Events still awaiting fan-out move to the log, ahead of every entry.
INSERT INTO webhook_log (xact, event_id, type, created_at)
SELECT 0, f.event_id, e.type, f.created_at
FROM webhook_fanout f JOIN order_events e ON e.id = f.event_id
ORDER BY f.created_at;
DROP TABLE webhook_fanout;

-- Every entry up to (cursor_xact, cursor_position) is settled for the
-- endpoint: delivered, or on a delivery row of its own.
ALTER TABLE webhook_endpoints
    ADD COLUMN cursor_xact BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN cursor_position BIGINT NOT NULL DEFAULT 0;

-- The log's head for a new or re-enabled endpoint: past every entry of a
-- transaction that has ended.
CREATE FUNCTION webhook_log_horizon() RETURNS BIGINT
LANGUAGE sql STABLE AS $$
    SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint
$$;
ALTER TABLE webhook_endpoints
    ALTER COLUMN cursor_xact SET DEFAULT webhook_log_horizon() - 1,
    ALTER COLUMN cursor_position SET DEFAULT 9223372036854775807;

CREATE OR REPLACE FUNCTION order_events_record() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    kinds TEXT[];
    first INTEGER;
BEGIN
    IF TG_OP = 'INSERT' THEN
        kinds := order_event_types(NULL, NEW);
        NEW.event_seq := 0;
        NEW.status_since := NEW.created_at;
    ELSE
        kinds := order_event_types(OLD, NEW);
        NEW.event_seq := OLD.event_seq;
        IF NEW.status <> OLD.status THEN
            NEW.status_since := now();
        END IF;
    END IF;
    IF cardinality(kinds) = 0 THEN
        RETURN NEW;
    END IF;
    first := NEW.event_seq + 1;
    NEW.event_seq := NEW.event_seq + cardinality(kinds);
    WITH made AS (
        INSERT INTO order_events (order_id, sequence, type, order_row)
        SELECT NEW.id, first + i - 1, kinds[i], to_jsonb(NEW)
        FROM generate_subscripts(kinds, 1) AS i
        RETURNING id, type)
    INSERT INTO webhook_log (xact, event_id, type)
    SELECT pg_current_xact_id()::text::bigint, made.id, made.type FROM made
    WHERE EXISTS (SELECT 1 FROM webhook_endpoints e
                  WHERE e.enabled AND (made.type = ANY (e.events) OR '*' = ANY (e.events)));
    RETURN NEW;
END $$;

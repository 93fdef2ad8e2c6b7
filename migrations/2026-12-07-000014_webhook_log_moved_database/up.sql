-- The webhook log orders entries by the writing transaction's id, and
-- the endpoints' cursors hold such ids. Ids belong to a cluster: after a
-- dump and restore, a logical replica or a blue/green switch, the new
-- cluster's ids can sort below every stored one, so new entries would fall
-- behind the cursors (never sent, then trimmed) and old unsent ones would
-- wait past the horizon until the new ids caught up.
--
-- In one cluster neither can happen: a cursor is at most the horizon (the
-- oldest running id) minus one when it is set, and the horizon never goes
-- back; an entry a snapshot sees is this transaction's own or committed,
-- so its id is this one's or below the snapshot's xmax (one past the
-- newest that ended). Either seen means the database moved.
CREATE FUNCTION webhook_log_moved() RETURNS BOOLEAN
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM webhook_endpoints
                   WHERE cursor_xact >= webhook_log_horizon())
        OR coalesce((SELECT max(xact) FROM webhook_log), 0)
           >= greatest(pg_snapshot_xmax(pg_current_snapshot())::text::bigint,
                       coalesce(pg_current_xact_id_if_assigned()::text::bigint + 1, 0))
$$;

-- Shifts every entry and cursor by one amount, so that the highest lands
-- just below the horizon: their order is kept, every entry of an ended
-- transaction is takeable, and every new entry sorts after them. Every
-- drain lease ends, so no drainer goes on from a cursor it held in memory
-- (its renewal and its records need the lease). Writers wait on the table
-- locks for the few milliseconds it takes. Returns the shift (0: none).
CREATE FUNCTION webhook_log_rebase() RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    high BIGINT;
    shift BIGINT;
BEGIN
    IF NOT webhook_log_moved() THEN
        RETURN 0;
    END IF;
    LOCK TABLE webhook_endpoints, webhook_log IN EXCLUSIVE MODE;
    -- Another writer may have shifted it while this one waited.
    IF NOT webhook_log_moved() THEN
        RETURN 0;
    END IF;
    high := greatest(coalesce((SELECT max(xact) FROM webhook_log), 0),
                     coalesce((SELECT max(cursor_xact) FROM webhook_endpoints), 0));
    shift := webhook_log_horizon() - 1 - high;
    UPDATE webhook_log SET xact = xact + shift;
    UPDATE webhook_endpoints SET cursor_xact = cursor_xact + shift,
        drain_task = NULL, drain_until = NULL;
    RAISE WARNING 'webhook log: the database moved to a cluster with younger transaction ids; log and cursors shifted by %', shift;
    RETURN shift;
END $$;

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
    -- Moved to a cluster whose ids are younger than the log's: shift the
    -- log below this transaction before adding to it.
    IF webhook_log_moved() THEN
        PERFORM webhook_log_rebase();
    END IF;
    first := NEW.event_seq + 1;
    NEW.event_seq := NEW.event_seq + cardinality(kinds);
    WITH made AS (
        INSERT INTO order_events (order_id, sequence, type, order_row, created_at)
        SELECT NEW.id, first + i - 1, kinds[i], to_jsonb(NEW), clock_timestamp()
        FROM generate_subscripts(kinds, 1) AS i
        RETURNING id, type)
    INSERT INTO webhook_log (xact, event_id, type)
    SELECT pg_current_xact_id()::text::bigint, made.id, made.type FROM made
    WHERE EXISTS (SELECT 1 FROM webhook_endpoints e
                  WHERE (made.type = ANY (e.events) OR '*' = ANY (e.events)));
    RETURN NEW;
END $$;


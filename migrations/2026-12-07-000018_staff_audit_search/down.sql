DROP INDEX orders_tracking_idx;
DROP INDEX orders_email_idx;
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
ALTER TABLE order_events DROP COLUMN actor;
DROP TABLE audit_entries;
DROP TABLE staff_epoch;
DROP TABLE staff_sessions;
DROP TABLE staff;

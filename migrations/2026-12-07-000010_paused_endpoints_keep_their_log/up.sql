-- Disabling an endpoint pauses it: the log takes the events it subscribes
-- to while it is disabled too (the trim keeps them for 7 days behind its
-- cursor), so enabled again it delivers what it missed. Before, a
-- disabled endpoint's events were never logged and enabling moved its
-- cursor to the head.
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
                  WHERE (made.type = ANY (e.events) OR '*' = ANY (e.events)));
    RETURN NEW;
END $$;

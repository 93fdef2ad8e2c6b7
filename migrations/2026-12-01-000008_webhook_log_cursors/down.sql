CREATE TABLE webhook_fanout (
    event_id   UUID PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000);

-- Entries past an enabled endpoint's cursor become pending deliveries.
INSERT INTO webhook_deliveries (endpoint_id, event_id, created_at)
SELECT w.id, l.event_id, l.created_at
FROM webhook_log l JOIN webhook_endpoints w
  ON w.enabled AND (l.xact, l.position) > (w.cursor_xact, w.cursor_position)
 AND (l.type = ANY (w.events) OR '*' = ANY (w.events));

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
    INSERT INTO webhook_fanout (event_id)
    SELECT made.id FROM made
    WHERE EXISTS (SELECT 1 FROM webhook_endpoints e
                  WHERE e.enabled AND (made.type = ANY (e.events) OR '*' = ANY (e.events)));
    RETURN NEW;
END $$;

ALTER TABLE webhook_endpoints DROP COLUMN cursor_xact, DROP COLUMN cursor_position;
DROP FUNCTION webhook_log_horizon();
DROP TABLE webhook_log;

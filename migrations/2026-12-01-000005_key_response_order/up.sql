-- A completed keyed purchase stores its order as the statement that
-- settled it returned the row (JSON), in that same statement; a replay
-- renders the answer from it, as the first answer was. Records completed
-- before keep their rendered response.
ALTER TABLE idempotency_keys ADD COLUMN response_order JSONB;
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_check;
ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_check CHECK (
    state = 'in_progress'
    OR response_order IS NOT NULL
    OR (response_status IS NOT NULL AND response_body IS NOT NULL)
);

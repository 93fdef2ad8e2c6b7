-- Such records cannot be replayed by the older code: a retry takes the key
-- over and answers from the order, as after a crash (never a second order).
UPDATE idempotency_keys SET state = 'in_progress', locked_at = now() - interval '1 day'
  WHERE response_order IS NOT NULL AND response_body IS NULL;
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_check;
ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_check CHECK (
    state = 'in_progress' OR (response_status IS NOT NULL AND response_body IS NOT NULL)
);
ALTER TABLE idempotency_keys DROP COLUMN response_order;

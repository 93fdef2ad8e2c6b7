ALTER INDEX outbox_next_attempt_idx RENAME TO owed_work_next_attempt_idx;
ALTER INDEX outbox_created_at_idx RENAME TO owed_work_owed_since_idx;
ALTER TABLE outbox RENAME CONSTRAINT outbox_attempts_check TO owed_work_attempts_check;
ALTER TABLE outbox RENAME CONSTRAINT outbox_order_id_fkey TO owed_work_order_id_fkey;
ALTER TABLE outbox RENAME CONSTRAINT outbox_kind_check TO owed_work_kind_check;
ALTER TABLE outbox RENAME CONSTRAINT outbox_pkey TO owed_work_pkey;
ALTER TABLE outbox RENAME COLUMN created_at TO owed_since;
ALTER TABLE outbox RENAME TO owed_work;

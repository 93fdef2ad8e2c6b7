-- One name per concept: the table of work a state change owes (a delivery,
-- a reconciliation, a refund) is the outbox, as the API and metrics call it.
ALTER TABLE owed_work RENAME TO outbox;
ALTER TABLE outbox RENAME COLUMN owed_since TO created_at;
ALTER TABLE outbox RENAME CONSTRAINT owed_work_pkey TO outbox_pkey;
ALTER TABLE outbox RENAME CONSTRAINT owed_work_kind_check TO outbox_kind_check;
ALTER TABLE outbox RENAME CONSTRAINT owed_work_order_id_fkey TO outbox_order_id_fkey;
ALTER TABLE outbox RENAME CONSTRAINT owed_work_attempts_check TO outbox_attempts_check;
ALTER INDEX owed_work_owed_since_idx RENAME TO outbox_created_at_idx;
ALTER INDEX owed_work_next_attempt_idx RENAME TO outbox_next_attempt_idx;

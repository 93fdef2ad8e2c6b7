DROP INDEX orders_attention_idx;
ALTER TABLE orders DROP COLUMN attention_since;
ALTER TABLE orders DROP COLUMN attention;
ALTER TABLE orders DROP COLUMN delivery_outcome_unknown;
DROP INDEX owed_work_next_attempt_idx;
ALTER TABLE owed_work DROP COLUMN attempts;
ALTER TABLE owed_work DROP COLUMN attempt_task;
ALTER TABLE owed_work DROP COLUMN next_attempt_at;

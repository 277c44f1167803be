DROP INDEX sync_outbox_message_id_idx;
ALTER TABLE sync_outbox DROP COLUMN message_id;

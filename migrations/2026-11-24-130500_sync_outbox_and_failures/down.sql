DROP TABLE sync_outbox;
ALTER TABLE messages DROP COLUMN failure_reason;

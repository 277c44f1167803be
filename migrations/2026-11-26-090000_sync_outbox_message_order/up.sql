-- conversation-sync: the outbound.status steps of one message must reach the platform in the
-- order they were committed. A step left in the outbox (publish failed, or the process died
-- between commit and publish) would otherwise be published by the relay after a later step of
-- the same message that another batch published straight away. The batcher holds a step back
-- while an older row of its message is still in the outbox; this column and index find those.
ALTER TABLE sync_outbox ADD COLUMN message_id bigint;
CREATE INDEX sync_outbox_message_id_idx ON sync_outbox (message_id, id) WHERE message_id IS NOT NULL;

-- conversation-sync: why an outbound job failed (the sender's stable reason word, for the
-- "API errors by reason" metric) and the transactional outbox of events to publish.

ALTER TABLE messages ADD COLUMN failure_reason text;

-- Events (outbound.status, agent.notification) written in the same transaction as the rows
-- that caused them and published after the commit; a row is deleted once the broker confirmed
-- it, so a crash between commit and publish only delays it. The payload can quote a message
-- (notification preview), so it is encrypted like message bodies. Erasing a contact cascades
-- to its unpublished events.
CREATE TABLE sync_outbox (
    id                 bigserial   PRIMARY KEY,
    tenant_id          text        NOT NULL,
    contact_id         bigint      REFERENCES contacts (id) ON DELETE CASCADE,
    routing_key        text        NOT NULL,
    payload_ciphertext bytea       NOT NULL,
    payload_nonce      bytea       NOT NULL,
    key_id             text        NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX sync_outbox_contact_id_idx ON sync_outbox (contact_id);

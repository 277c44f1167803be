-- Conversation-sync: contacts (known jamaah and unknown senders), one
-- conversation per contact, the messages in it (bodies encrypted at rest),
-- the append-only status history and inbound media downloads.
--
-- Deleting a contact (jamaah erasure) cascades to its conversation, messages
-- and media. Partial unique indexes are matched by upserts with
-- `ON CONFLICT (cols) WHERE col IS NOT NULL` (diesel: `.on_conflict(..).filter_target(..)`).

CREATE TABLE contacts (
    id              bigserial   PRIMARY KEY,
    tenant_id       text        NOT NULL,
    jamaah_id       text,
    -- WhatsApp id of the sender (E.164 digits without '+').
    wa_id           text,
    -- Meta's business-scoped user id, for senders that hide their number.
    user_id         text,
    phone_e164      text,
    name            text,
    -- The name the sender set in WhatsApp.
    profile_name    text,
    status          text,
    package_id      text,
    package_name    text,
    agent_id        text,
    agent_name      text,
    agent_phone     text,
    -- false for senders not (yet) matched to a jamaah.
    is_known        boolean     NOT NULL DEFAULT false,
    last_inbound_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT contacts_has_an_identity
        CHECK (jamaah_id IS NOT NULL OR wa_id IS NOT NULL OR user_id IS NOT NULL)
);

CREATE UNIQUE INDEX contacts_tenant_jamaah_id_key
    ON contacts (tenant_id, jamaah_id) WHERE jamaah_id IS NOT NULL;
CREATE UNIQUE INDEX contacts_tenant_wa_id_key
    ON contacts (tenant_id, wa_id) WHERE wa_id IS NOT NULL;
-- Lookups only: Meta documents user ids as stable, but we do not want a
-- constraint to reject an inbound message if that ever changes.
CREATE INDEX contacts_tenant_user_id_idx
    ON contacts (tenant_id, user_id) WHERE user_id IS NOT NULL;
-- Matching a new sender to a jamaah by phone number.
CREATE INDEX contacts_tenant_phone_e164_idx
    ON contacts (tenant_id, phone_e164) WHERE phone_e164 IS NOT NULL;

CREATE TRIGGER contacts_set_updated_at BEFORE UPDATE ON contacts
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE conversations (
    id               bigserial   PRIMARY KEY,
    tenant_id        text        NOT NULL,
    contact_id       bigint      NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    last_message_at  timestamptz,
    last_inbound_at  timestamptz,
    last_outbound_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- One conversation per contact. Written as (contact_id, tenant_id) so the
    -- same index also serves the ON DELETE CASCADE lookup by contact_id;
    -- `ON CONFLICT (tenant_id, contact_id)` still infers it (column order is irrelevant there).
    CONSTRAINT conversations_tenant_contact_key UNIQUE (contact_id, tenant_id)
);

CREATE TABLE messages (
    id               bigserial   PRIMARY KEY,
    tenant_id        text        NOT NULL,
    conversation_id  bigint      NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    contact_id       bigint      NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    direction        text        NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    -- Meta's message id (wamid.*); NULL for an outbound message not accepted yet.
    wa_message_id    text,
    -- The send-job that produced an outbound message.
    job_id           text,
    reference_kind   text,
    reference_id     text,
    message_type     text        NOT NULL,
    -- Body or caption, AES-256-GCM encrypted; body_key_id names the key so keys can rotate.
    body_ciphertext  bytea,
    body_nonce       bytea,
    body_key_id      text,
    -- The raw Graph payload, encrypted with the same key as the body.
    raw_ciphertext   bytea,
    raw_nonce        bytea,
    current_status   text        CHECK (current_status IN ('sent', 'delivered', 'read', 'failed')),
    status_at        timestamptz,
    error_code       bigint,
    error_detail     text,
    pricing_category text,
    pricing_type     text,
    billable         boolean,
    -- Meta's timestamp for inbound messages, our send time for outbound ones.
    sent_at          timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT messages_inbound_has_wamid
        CHECK (direction <> 'inbound' OR wa_message_id IS NOT NULL),
    CONSTRAINT messages_body_ciphertext_has_nonce
        CHECK ((body_ciphertext IS NULL) = (body_nonce IS NULL)),
    CONSTRAINT messages_raw_ciphertext_has_nonce
        CHECK ((raw_ciphertext IS NULL) = (raw_nonce IS NULL)),
    CONSTRAINT messages_ciphertext_has_key_id
        CHECK ((body_ciphertext IS NULL AND raw_ciphertext IS NULL) OR body_key_id IS NOT NULL),
    CONSTRAINT messages_status_has_time
        CHECK ((current_status IS NULL) = (status_at IS NULL))
);

CREATE UNIQUE INDEX messages_tenant_wa_message_id_key
    ON messages (tenant_id, wa_message_id) WHERE wa_message_id IS NOT NULL;
CREATE UNIQUE INDEX messages_tenant_job_id_key
    ON messages (tenant_id, job_id) WHERE job_id IS NOT NULL;
-- Cursor paging of a contact's messages, newest first: (sent_at, id) < (cursor).
CREATE INDEX messages_tenant_contact_sent_at_idx
    ON messages (tenant_id, contact_id, sent_at DESC, id DESC);
-- Metrics over a date range and retention deletes.
CREATE INDEX messages_tenant_sent_at_idx ON messages (tenant_id, sent_at);
-- The foreign keys' ON DELETE CASCADE looks rows up by these columns alone.
CREATE INDEX messages_conversation_id_idx ON messages (conversation_id);
CREATE INDEX messages_contact_id_idx ON messages (contact_id);

-- Append-only history of status webhooks. A status can arrive before the
-- message row that it belongs to (the sender's accepted event races the
-- webhook); such rows stay applied = false until the wamid is known.
CREATE TABLE message_statuses (
    id               bigserial   PRIMARY KEY,
    tenant_id        text        NOT NULL,
    wa_message_id    text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('sent', 'delivered', 'read', 'failed')),
    occurred_at      timestamptz NOT NULL,
    meta_code        bigint,
    error_detail     text,
    pricing_category text,
    pricing_type     text,
    pricing_model    text,
    billable         boolean,
    applied          boolean     NOT NULL DEFAULT false,
    received_at      timestamptz NOT NULL DEFAULT now(),
    -- Also serves lookups by (tenant_id, wa_message_id) as its prefix, so no
    -- separate index on those two columns.
    CONSTRAINT message_statuses_tenant_wamid_status_key UNIQUE (tenant_id, wa_message_id, status)
);

-- A sweeper retries statuses still waiting for their message.
CREATE INDEX message_statuses_unapplied_received_at_idx
    ON message_statuses (received_at) WHERE NOT applied;

CREATE TABLE media (
    id              bigserial   PRIMARY KEY,
    tenant_id       text        NOT NULL,
    message_id      bigint      NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    -- Meta's media id, valid for download for a limited time.
    media_id        text        NOT NULL,
    mime_type       text,
    sha256          text,
    filename        text,
    state           text        NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'stored', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When the downloader may try next; new rows are due at once.
    next_attempt_at timestamptz DEFAULT now(),
    -- Where the (encrypted) file lives in object storage, and the key that encrypted it.
    storage_key     text,
    key_id          text,
    size_bytes      bigint      CHECK (size_bytes >= 0),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- Replayed inbound messages must not queue the same download twice; also
    -- the index behind the foreign key.
    CONSTRAINT media_message_media_key UNIQUE (message_id, media_id),
    CONSTRAINT media_pending_has_next_attempt
        CHECK (state <> 'pending' OR next_attempt_at IS NOT NULL),
    CONSTRAINT media_stored_has_storage_key
        CHECK (state <> 'stored' OR storage_key IS NOT NULL)
);

-- The downloader claims due pending rows.
CREATE INDEX media_state_next_attempt_at_idx ON media (state, next_attempt_at);

CREATE TRIGGER media_set_updated_at BEFORE UPDATE ON media
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

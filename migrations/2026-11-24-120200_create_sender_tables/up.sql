-- Sender: one row per send-job (keyed by the producer's job_id within a tenant),
-- one row per Graph API call, the 24-hour customer-service window and an
-- optional shared GCRA rate limiter.
--
-- No foreign key to `tenants`: tenants are loaded from configuration by each
-- service, and a job for a tenant that is not loaded yet must fail as a job
-- (with a reason), not as a constraint violation.

CREATE TABLE send_jobs (
    tenant_id          text        NOT NULL,
    job_id             text        NOT NULL CHECK (job_id <> ''),
    -- received: stored, not yet sent; sending: Graph call in flight;
    -- accepted: Meta returned a wamid; failed: final failure;
    -- unknown: the call may or may not have reached Meta (crash mid-call).
    state              text        NOT NULL DEFAULT 'received'
        CHECK (state IN ('received', 'sending', 'accepted', 'failed', 'unknown')),
    -- NULL when the job's `to` could not be parsed (it then fails as invalid_recipient).
    to_e164            text,
    priority           text        NOT NULL DEFAULT 'transactional'
        CHECK (priority IN ('interactive', 'transactional', 'bulk')),
    message_type       text        NOT NULL,
    reference_kind     text,
    reference_id       text,
    wa_message_id      text,
    attempts           integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_meta_code     bigint,
    failure_reason     text,
    failure_detail     text,
    expires_at         timestamptz,
    first_seen_at      timestamptz NOT NULL DEFAULT now(),
    sending_started_at timestamptz,
    accepted_at        timestamptz,
    failed_at          timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, job_id),
    CONSTRAINT send_jobs_sending_has_started
        CHECK (state <> 'sending' OR sending_started_at IS NOT NULL),
    CONSTRAINT send_jobs_accepted_has_wamid
        CHECK (state <> 'accepted' OR (wa_message_id IS NOT NULL AND accepted_at IS NOT NULL)),
    CONSTRAINT send_jobs_failed_has_reason
        CHECK (state <> 'failed' OR (failure_reason IS NOT NULL AND failed_at IS NOT NULL))
);

-- Status webhooks carry only the wamid; map it back to the job.
CREATE UNIQUE INDEX send_jobs_tenant_wa_message_id_key
    ON send_jobs (tenant_id, wa_message_id) WHERE wa_message_id IS NOT NULL;
-- The settler finds jobs stuck in 'sending'/'unknown' since before a cut-off.
CREATE INDEX send_jobs_state_sending_started_at_idx ON send_jobs (state, sending_started_at);

CREATE TRIGGER send_jobs_set_updated_at BEFORE UPDATE ON send_jobs
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE send_attempts (
    id           bigserial   PRIMARY KEY,
    tenant_id    text        NOT NULL,
    job_id       text        NOT NULL,
    attempt      integer     NOT NULL CHECK (attempt >= 1),
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    http_status  integer,
    meta_code    bigint,
    -- Free-form word chosen by the sender (e.g. accepted, retryable, failed, timeout);
    -- NULL while the call is in flight.
    outcome      text,
    detail       text,
    fbtrace_id   text,
    FOREIGN KEY (tenant_id, job_id) REFERENCES send_jobs (tenant_id, job_id) ON DELETE CASCADE,
    -- Also the index behind the foreign key.
    UNIQUE (tenant_id, job_id, attempt),
    CONSTRAINT send_attempts_outcome_needs_finished_at
        CHECK (outcome IS NULL OR finished_at IS NOT NULL)
);

-- The 24-hour customer-service window: free-form messages are allowed only
-- within 24 h of the customer's last inbound message.
CREATE TABLE customer_windows (
    tenant_id       text        NOT NULL,
    wa_id           text        NOT NULL,
    last_inbound_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, wa_id)
);

-- Optional GCRA limiter shared by all sender replicas: `tat` is the
-- theoretical arrival time for the key (e.g. one key per phone_number_id).
CREATE TABLE rate_limits (
    key text        PRIMARY KEY,
    tat timestamptz NOT NULL
);

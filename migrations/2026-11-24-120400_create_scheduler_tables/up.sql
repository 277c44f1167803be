-- Reminder scheduler: a local copy of the platform data it needs (jamaah,
-- packages, payment schedules, payments; filled from `platform.events`), the
-- reminders it plans and sends, WhatsApp templates and keyword auto-replies.
--
-- The copied tables have no foreign keys to each other on purpose: platform
-- events arrive at least once and in no particular order (a payment schedule
-- may arrive before its jamaah), and every row is an upsert keyed on the
-- platform's id.

CREATE TABLE jamaah (
    tenant_id   text        NOT NULL,
    jamaah_id   text        NOT NULL,
    name        text        NOT NULL,
    -- NULL when the platform's phone number could not be normalised.
    phone_e164  text,
    -- The platform's word (registered, ready, departed, cancelled, ...).
    status      text        NOT NULL,
    package_id  text,
    agent_id    text,
    agent_name  text,
    agent_phone text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, jamaah_id)
);

CREATE TRIGGER jamaah_set_updated_at BEFORE UPDATE ON jamaah
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE packages (
    tenant_id      text        NOT NULL,
    package_id     text        NOT NULL,
    name           text,
    departure_date date,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, package_id)
);

CREATE TRIGGER packages_set_updated_at BEFORE UPDATE ON packages
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE payment_schedules (
    tenant_id   text        NOT NULL,
    schedule_id text        NOT NULL,
    jamaah_id   text        NOT NULL,
    package_id  text,
    due_date    date        NOT NULL,
    -- Whole rupiah.
    amount      bigint      NOT NULL CHECK (amount > 0),
    status      text        NOT NULL CHECK (status IN ('unpaid', 'paid', 'cancelled')),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, schedule_id)
);

-- The planner scans unpaid schedules by due date.
CREATE INDEX payment_schedules_status_due_date_idx ON payment_schedules (status, due_date);
-- Erasure and per-jamaah lookups.
CREATE INDEX payment_schedules_tenant_jamaah_idx ON payment_schedules (tenant_id, jamaah_id);

CREATE TRIGGER payment_schedules_set_updated_at BEFORE UPDATE ON payment_schedules
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE payments (
    tenant_id         text        NOT NULL,
    payment_id        text        NOT NULL,
    jamaah_id         text        NOT NULL,
    package_id        text,
    -- Whole rupiah.
    amount            bigint      NOT NULL CHECK (amount > 0),
    remaining_balance bigint      NOT NULL CHECK (remaining_balance >= 0),
    -- The platform's label, shown to the jamaah as is (e.g. "Lunas", "Cicilan 2").
    status_label      text,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, payment_id)
);

CREATE INDEX payments_tenant_jamaah_idx ON payments (tenant_id, jamaah_id);

CREATE TABLE reminders (
    id             bigserial   PRIMARY KEY,
    tenant_id      text        NOT NULL,
    kind           text        NOT NULL CHECK (kind IN (
        'payment_reminder', 'payment_confirmation', 'departure_reminder', 'auto_reply')),
    -- What makes this reminder unique within its kind, e.g. "<schedule_id>:-3".
    dedupe_key     text        NOT NULL CHECK (dedupe_key <> ''),
    -- The send-job id published to whatsapp.commands; fixed when the row is
    -- planned so a republish after a crash reuses it.
    job_id         text        NOT NULL CHECK (job_id <> ''),
    jamaah_id      text,
    schedule_id    text,
    payment_id     text,
    package_id     text,
    offset_days    integer,
    due_at         timestamptz NOT NULL,
    -- Not sent after this instant (end of the send window / obsolete).
    not_after      timestamptz,
    -- pending: planned; waiting_template: the template is not APPROVED yet;
    -- queued: published; sent/delivered/read/failed: follow the message status;
    -- cancelled: no longer relevant (schedule paid, jamaah cancelled, ...).
    status         text        NOT NULL DEFAULT 'pending' CHECK (status IN (
        'pending', 'waiting_template', 'queued', 'sent', 'delivered', 'read', 'failed', 'cancelled')),
    template_name  text,
    parameters     jsonb,
    wa_message_id  text,
    failure_reason text,
    attempts       integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    enqueued_at    timestamptz,
    CONSTRAINT reminders_tenant_kind_dedupe_key UNIQUE (tenant_id, kind, dedupe_key),
    CONSTRAINT reminders_tenant_job_id_key UNIQUE (tenant_id, job_id),
    CONSTRAINT reminders_not_after_after_due_at
        CHECK (not_after IS NULL OR not_after >= due_at),
    CONSTRAINT reminders_payment_reminder_has_schedule
        CHECK (kind <> 'payment_reminder' OR schedule_id IS NOT NULL),
    CONSTRAINT reminders_payment_confirmation_has_payment
        CHECK (kind <> 'payment_confirmation' OR payment_id IS NOT NULL),
    CONSTRAINT reminders_departure_reminder_has_package
        CHECK (kind <> 'departure_reminder' OR package_id IS NOT NULL)
);

-- The scheduler tick claims due rows with FOR UPDATE SKIP LOCKED.
CREATE INDEX reminders_due_at_open_idx
    ON reminders (due_at) WHERE status IN ('pending', 'waiting_template');

CREATE TRIGGER reminders_set_updated_at BEFORE UPDATE ON reminders
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE templates (
    tenant_id        text        NOT NULL,
    name             text        NOT NULL,
    language         text        NOT NULL,
    category         text        NOT NULL CHECK (category IN ('UTILITY', 'MARKETING', 'AUTHENTICATION')),
    body_text        text        NOT NULL,
    example_values   jsonb,
    parameter_count  integer     NOT NULL DEFAULT 0 CHECK (parameter_count >= 0),
    -- Meta's word (APPROVED, PENDING, REJECTED, PAUSED, DISABLED, ...); not
    -- constrained because Meta adds new ones.
    status           text        NOT NULL DEFAULT 'PENDING',
    rejection_reason text,
    meta_template_id bigint,
    submitted_at     timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name, language)
);

CREATE TRIGGER templates_set_updated_at BEFORE UPDATE ON templates
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE auto_replies (
    tenant_id  text        NOT NULL,
    -- Stored lower-case; the matcher lower-cases the inbound word.
    keyword    text        NOT NULL CHECK (keyword <> '' AND keyword = lower(keyword)),
    -- A small template with placeholders, e.g. "Halo {name}, ...".
    reply      text        NOT NULL,
    enabled    boolean     NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, keyword)
);

CREATE TRIGGER auto_replies_set_updated_at BEFORE UPDATE ON auto_replies
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

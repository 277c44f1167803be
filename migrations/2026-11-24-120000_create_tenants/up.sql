-- Tenants: one row per WhatsApp business phone number we serve.
-- Access tokens are secrets and live in the environment / secret store, never here.

-- Keeps `updated_at` honest without every query having to remember it: on an
-- UPDATE that changes the row but not `updated_at` itself, stamp now().
-- (Same contract as diesel's `diesel_set_updated_at`; an UPDATE that changes
-- nothing, e.g. a replayed upsert, leaves `updated_at` alone.)
CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW IS DISTINCT FROM OLD AND NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$;

CREATE TABLE tenants (
    tenant_id       text        PRIMARY KEY CHECK (tenant_id <> ''),
    -- Meta's id of the business phone number; webhooks are routed to a tenant by it.
    phone_number_id text        NOT NULL UNIQUE CHECK (phone_number_id <> ''),
    waba_id         text        NOT NULL CHECK (waba_id <> ''),
    display_name    text,
    -- IANA zone used for reminder send windows and dates shown to jamaah.
    time_zone       text        NOT NULL DEFAULT 'Asia/Jakarta' CHECK (time_zone <> ''),
    -- Set when sending for this tenant is paused (e.g. Meta flagged the number).
    paused_at       timestamptz,
    pause_reason    text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenants_pause_reason_needs_paused_at
        CHECK (pause_reason IS NULL OR paused_at IS NOT NULL)
);

CREATE TRIGGER tenants_set_updated_at BEFORE UPDATE ON tenants
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

DROP FUNCTION reserve_send_slots(text, integer, bigint, bigint, bigint, bigint, integer, integer, bigint);
COMMENT ON COLUMN rate_limits.recent IS NULL;
COMMENT ON COLUMN rate_limits.tat IS NULL;
-- restore previous function
CREATE FUNCTION reserve_send_slots(
    p_key text,
    p_cap integer,
    p_window_us bigint,
    p_spacing_us bigint,
    p_count integer,
    p_lead_us bigint
) RETURNS double precision[]
LANGUAGE plpgsql AS $$
DECLARE
    slots bigint[];
    n integer;
    first integer := 1;
    now_us bigint;
    slot bigint;
    delays double precision[] := '{}';
BEGIN
    IF p_cap < 1 OR p_count < 0 OR p_window_us < 0 OR p_spacing_us < 0 OR p_lead_us < 0 THEN
        RAISE EXCEPTION 'reserve_send_slots: invalid arguments (cap %, count %, window %, spacing %, lead %)',
            p_cap, p_count, p_window_us, p_spacing_us, p_lead_us;
    END IF;
    INSERT INTO rate_limits (key, tat) VALUES (p_key, clock_timestamp()) ON CONFLICT (key) DO NOTHING;
    SELECT recent INTO slots FROM rate_limits WHERE key = p_key FOR UPDATE;
    -- After the lock: waiting for another replica's reservation must not put our slots in the past.
    now_us := (extract(epoch FROM clock_timestamp()) * 1e6)::bigint;
    n := coalesce(array_length(slots, 1), 0);
    -- Slots more than a window before the earliest new one can bind nothing: drop them, so the log
    -- holds at most a window's worth of slots even when the cap is far above the real rate.
    WHILE first <= n AND slots[first] < now_us + p_lead_us - p_window_us LOOP
        first := first + 1;
    END LOOP;
    IF first > 1 THEN
        slots := coalesce(slots[first:n], '{}');
        n := n - first + 1;
    END IF;
    FOR k IN 1..p_count LOOP
        slot := now_us + p_lead_us;
        IF n > 0 THEN
            slot := greatest(slot, slots[n] + p_spacing_us);
        END IF;
        IF n >= p_cap THEN
            slot := greatest(slot, slots[n - p_cap + 1] + p_window_us);
        END IF;
        slots := slots || slot;
        n := n + 1;
        delays := delays || ((slot - now_us)::double precision / 1e6);
    END LOOP;
    IF n > 0 THEN
        UPDATE rate_limits
        SET recent = slots[greatest(1, n - p_cap + 1):n],
            tat = to_timestamp((slots[n] + p_spacing_us)::double precision / 1e6)
        WHERE key = p_key;
    END IF;
    RETURN delays;
END
$$;

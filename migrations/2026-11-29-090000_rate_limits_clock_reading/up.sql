-- `reserve_send_slots` also answers the database clock reading its delays count from. A replica
-- used to place the slots on its own clock from the moment the answer reached it, so the commit,
-- the way back and its own wake-up made every slot of that batch look later than it is, by a
-- different amount on each replica: two replicas' sends a window apart could come closer than the
-- window. With the reading, a replica places them from its wall clock (the database's on one
-- host, NTP-close across hosts), bounded by the round trip (see `wa_sender::limiter`).
DROP FUNCTION reserve_send_slots(text, integer, bigint, bigint, bigint, bigint, integer, integer, bigint);

-- Reserves `p_count` send slots for `p_key` and returns each one's delay from now in seconds, and
-- the allowance (µs) every one of them has: its send may start at most that long after its slot,
-- and the database clock reading (µs since the epoch) the delays count from.
--
-- Slot k is the earliest instant that is
--   * at least `p_lead_us` from now (the caller prepares the send meanwhile),
--   * at least `p_spacing_us` after the previous slot (`tat`), and
--   * at least `p_window_us - p_tolerance_us` after the end of every slot `p_cap` or more places
--     before it (the ends are kept as a running maximum, so the one `p_cap` places before is
--     the latest of them),
-- so however late within their allowances the sends start, no `p_window_us - p_tolerance_us`
-- holds more than `p_cap` of them, whichever replica took them. The allowance is
-- `p_loose_allowance_us` when the slots still binding plus `p_demand` (what the caller expects to
-- ask for within a window) are at most a quarter of `p_cap`, else `p_tolerance_us`. The row lock
-- serialises replicas; instants come from the database clock, so replicas on different hosts
-- agree.
CREATE FUNCTION reserve_send_slots(
    p_key text,
    p_cap integer,
    p_window_us bigint,
    p_spacing_us bigint,
    p_tolerance_us bigint,
    p_loose_allowance_us bigint,
    p_count integer,
    p_demand integer,
    p_lead_us bigint,
    OUT delays double precision[],
    OUT allowance_us bigint,
    OUT clock_us bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    ends bigint[];
    n integer;
    first integer := 1;
    now_us bigint;
    floor_us bigint;
    gap bigint;
    slot bigint;
    slot_end bigint;
BEGIN
    IF p_cap < 1 OR p_count < 0 OR p_demand < 0 OR p_window_us < 0 OR p_spacing_us < 0
        OR p_lead_us < 0 OR p_tolerance_us < 0 OR p_tolerance_us > p_window_us
        OR p_loose_allowance_us < p_tolerance_us THEN
        RAISE EXCEPTION 'reserve_send_slots: invalid arguments (cap %, count %, demand %, window %, spacing %, tolerance %, loose allowance %, lead %)',
            p_cap, p_count, p_demand, p_window_us, p_spacing_us, p_tolerance_us, p_loose_allowance_us, p_lead_us;
    END IF;
    gap := p_window_us - p_tolerance_us;
    delays := '{}';
    INSERT INTO rate_limits (key, tat) VALUES (p_key, clock_timestamp()) ON CONFLICT (key) DO NOTHING;
    SELECT recent, (extract(epoch FROM tat) * 1e6)::bigint INTO ends, floor_us
    FROM rate_limits WHERE key = p_key FOR UPDATE;
    -- After the lock: waiting for another replica's reservation must not put our slots in the past.
    now_us := (extract(epoch FROM clock_timestamp()) * 1e6)::bigint;
    clock_us := now_us;
    n := coalesce(array_length(ends, 1), 0);
    -- Ends more than `gap` before the earliest new slot can bind nothing: drop them, so the log
    -- holds only what still binds even when the cap is far above the real rate.
    WHILE first <= n AND ends[first] + gap <= now_us + p_lead_us LOOP
        first := first + 1;
    END LOOP;
    IF first > 1 THEN
        ends := coalesce(ends[first:n], '{}');
        n := n - first + 1;
    END IF;
    allowance_us := CASE WHEN 4 * (n + greatest(p_count, p_demand))::bigint <= p_cap
                         THEN p_loose_allowance_us ELSE p_tolerance_us END;
    FOR k IN 1..p_count LOOP
        slot := greatest(now_us + p_lead_us, floor_us);
        IF n >= p_cap THEN
            slot := greatest(slot, ends[n - p_cap + 1] + gap);
        END IF;
        slot_end := slot + allowance_us;
        IF n > 0 THEN
            slot_end := greatest(slot_end, ends[n]);
        END IF;
        ends := ends || slot_end;
        n := n + 1;
        floor_us := slot + p_spacing_us;
        delays := delays || ((slot - now_us)::double precision / 1e6);
    END LOOP;
    IF p_count > 0 THEN
        UPDATE rate_limits
        SET recent = ends[greatest(1, n - p_cap + 1):n],
            tat = to_timestamp(floor_us::double precision / 1e6)
        WHERE key = p_key;
    END IF;
END
$$;

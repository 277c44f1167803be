DROP FUNCTION reserve_send_slots(text, integer, bigint, bigint, integer, bigint);
COMMENT ON TABLE rate_limits IS NULL;
ALTER TABLE rate_limits DROP COLUMN recent;

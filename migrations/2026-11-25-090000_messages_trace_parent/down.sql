ALTER TABLE messages DROP COLUMN trace_parent;

-- Idempotency records for at-least-once consumers: a consumer inserts
-- (consumer, event_key) in the same transaction as its side effects and skips
-- the work when the row already exists.
CREATE TABLE processed_events (
    consumer     text        NOT NULL CHECK (consumer <> ''),
    event_key    text        NOT NULL CHECK (event_key <> ''),
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_key)
);

-- Pruning deletes rows older than the broker's redelivery horizon.
CREATE INDEX processed_events_processed_at_idx ON processed_events (processed_at);

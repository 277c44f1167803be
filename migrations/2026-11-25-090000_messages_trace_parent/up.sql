-- conversation-sync: the W3C `traceparent` of the sender's span that sent an outbound message
-- (carried by its `outbound.accepted` event), so the spans that later process the message's
-- status webhooks can link to the send (the webhook itself starts a new trace: Meta sends no
-- trace context). Observability only: NULL when the send was not traced. Deleted with the row
-- (retention, erasure). Adding a nullable column without a default does not rewrite the table.

ALTER TABLE messages ADD COLUMN trace_parent text;

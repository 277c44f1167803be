//! Linking a message's status webhooks to its send.
//!
//! A send and its statuses are two traces: the send's starts at the platform's publish and runs
//! through the sender to the Graph call; each status starts at ingress, because Meta's webhook
//! carries no trace context. The sender publishes `outbound.accepted` inside the send's trace, so
//! its `traceparent` header names the sender's span (the consume span of the dispatch delivery
//! that made the Graph call). conversation-sync stores that `traceparent` on the outbound message
//! (`messages.trace_parent`, keyed by tenant and wamid), and when a batch holds status events it
//! reads the stored values back for their wamids and adds a span **link** from each status
//! event's consume span to the send. Links, not parents: the status trace keeps its own root
//! (the webhook request) and a trace viewer shows the jump to the send.
//!
//! Both statements run after the batch committed, on their own connection, and are best effort:
//! a failure is logged and counted (`wa_sync_trace_link_failures_total`), never retried, and never
//! affects the events. A status processed before its message's `outbound.accepted` (the message is
//! not stored yet) gets no link; its `outbound.status` is then published when the accepted event
//! applies it, inside the send's trace.

use std::collections::HashMap;

use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use wa_amqp::lapin::types::{AMQPValue, FieldTable, LongString};
use wa_amqp::trace_context::extract_from_headers;
use wa_db::PgPool;
use wa_db::models::message_trace::{self, SendTrace};

/// W3C `traceparent` of the producer's span named in `headers`, when there is a valid one.
pub fn traceparent_of(headers: &FieldTable) -> Option<String> {
    let cx = extract_from_headers(headers);
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The span context a stored `traceparent` names; `None` when it is not a valid W3C value.
pub fn span_context_of(traceparent: &str) -> Option<SpanContext> {
    let mut headers = FieldTable::default();
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(LongString::from(traceparent)),
    );
    let cx = extract_from_headers(&headers);
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.clone())
}

/// Stores the send traces of a committed batch's `outbound.accepted` events, then returns the
/// send of every `(tenant, wamid)` in `statuses` that has one.
pub async fn record_and_find(
    pool: &PgPool,
    accepted: &[SendTrace],
    statuses: &[(&str, &str)],
) -> anyhow::Result<HashMap<(String, String), SpanContext>> {
    if accepted.is_empty() && statuses.is_empty() {
        return Ok(HashMap::new());
    }
    let mut conn = pool.get().await?;
    message_trace::record_send_traces(&mut conn, accepted).await?;
    let found = message_trace::send_traces(&mut conn, statuses).await?;
    Ok(found
        .into_iter()
        .filter_map(|t| {
            let sc = span_context_of(&t.trace_parent)?;
            Some(((t.tenant_id, t.wa_message_id), sc))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_through_headers_and_storage() {
        let stored = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = span_context_of(stored).expect("valid");
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled());

        let mut headers = FieldTable::default();
        headers.insert(
            "traceparent".into(),
            AMQPValue::LongString(LongString::from(stored)),
        );
        assert_eq!(traceparent_of(&headers).as_deref(), Some(stored));
    }

    #[test]
    fn missing_or_invalid_trace_contexts_give_nothing() {
        assert_eq!(traceparent_of(&FieldTable::default()), None);
        assert!(
            span_context_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(span_context_of("not a traceparent").is_none());
    }
}

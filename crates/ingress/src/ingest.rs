//! The one service function behind `POST /webhook`: split a verified body into events, add a raw
//! quarantine copy when any part could not be read, and publish everything in one confirm window.
//! Returns only once the broker confirmed every message, so the caller may answer 200.

use std::time::Instant;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use wa_amqp::lapin::types::{AMQPValue, FieldTable, LongString};
use wa_amqp::{OutgoingMessage, PublishError, PublishOptions, Publisher};
use wa_common::topology::{
    HEADER_DEAD_LETTER_DETAIL, HEADER_DEAD_LETTER_REASON, exchange, routing,
};

use crate::instruments;
use crate::webhook::{Event, Problem, Unreadable, split_webhook};

/// Content type of a quarantined body whose request named none.
const OCTET_STREAM: &str = "application/octet-stream";
/// Room reserved for one serialised event: most are 0.5–1 KB, so this saves the buffer's
/// repeated doubling from 128 bytes.
const EVENT_BYTES_HINT: usize = 1024;
/// Longest `x-wa-dead-letter-detail` we write (headers are not the place for essays).
const MAX_DETAIL_CHARS: usize = 1_000;

/// What one webhook became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// Events published (confirmed).
    pub events: usize,
    /// Why the raw body was also quarantined, if it was (stable snake_case).
    pub quarantined: Option<&'static str>,
}

/// One verified webhook request.
#[derive(Debug, Clone, Copy)]
pub struct Webhook<'a> {
    /// The exact signed bytes.
    pub body: &'a [u8],
    /// The request's `Content-Type`, kept on a quarantined copy.
    pub content_type: Option<&'a str>,
    /// When we received it.
    pub received_at: DateTime<Utc>,
    /// Ties all events of this request together (AMQP `correlation_id`).
    pub request_id: &'a str,
}

/// The AMQP messages one webhook becomes, before publishing.
#[derive(Debug, Clone)]
pub struct Prepared<'a> {
    /// Events, then the quarantine copy if any: exactly what goes into one confirm window.
    pub messages: Vec<OutgoingMessage>,
    /// The events (for metrics); they borrow from the webhook's body.
    pub events: Vec<Event<'a>>,
    /// Why the body is also quarantined, if it is.
    pub quarantined: Option<&'static str>,
}

/// Publishes every event of `webhook` (and its quarantine copy, if needed) with confirms.
///
/// Any error means "not safely stored": the caller answers 503 and Meta redelivers the whole body
/// (consumers dedupe on `message_id`).
pub async fn publish_webhook(
    publisher: &Publisher,
    webhook: Webhook<'_>,
    trace_context: &opentelemetry::Context,
) -> Result<Ingested, PublishError> {
    let Prepared {
        messages,
        events,
        quarantined,
    } = prepare_messages(webhook, trace_context)?;

    let started = Instant::now();
    let published = publisher.publish_all(messages).await;
    instruments::record_confirm(started.elapsed(), published.is_ok());
    published?;

    instruments::record_events(&events);
    if let Some(reason) = quarantined {
        instruments::record_quarantine(reason);
    }
    Ok(Ingested {
        events: events.len(),
        quarantined,
    })
}

/// Splits `webhook` and builds its AMQP messages (no I/O); the benchmark publishes the same
/// batches directly to measure what HTTP, verification and parsing cost on top of the broker.
pub fn prepare_messages<'a>(
    webhook: Webhook<'a>,
    trace_context: &opentelemetry::Context,
) -> Result<Prepared<'a>, PublishError> {
    let options = |message_id: String| PublishOptions {
        message_id: Some(message_id),
        correlation_id: Some(webhook.request_id.to_owned()),
        trace_context: Some(trace_context.clone()),
        ..PublishOptions::default()
    };

    let (events, quarantine) = match split_webhook(webhook.body, webhook.received_at) {
        Ok(split) if split.events.is_empty() && split.problems.is_empty() => (
            split.events,
            Some(("no_events", "the webhook holds no items".to_owned())),
        ),
        Ok(split) if !split.problems.is_empty() => {
            let detail = problems_detail(&split.problems);
            (split.events, Some(("unreadable_items", detail)))
        }
        Ok(split) => (split.events, None),
        Err(unreadable) => (
            Vec::new(),
            Some((unreadable.code(), unreadable_detail(&unreadable))),
        ),
    };

    let mut messages = Vec::with_capacity(events.len() + 1);
    for event in &events {
        let Event {
            routing_key,
            dedupe_id,
            body,
        } = event;
        let mut json = Vec::with_capacity(EVENT_BYTES_HINT);
        serde_json::to_writer(&mut json, body)?;
        messages.push(OutgoingMessage {
            exchange: exchange::WHATSAPP_EVENTS.to_owned(),
            routing_key: routing_key.clone(),
            body: json,
            options: options(dedupe_id.clone()),
        });
    }
    if let Some((reason, detail)) = &quarantine {
        tracing::warn!(reason, detail = %detail, bytes = webhook.body.len(), "quarantining a signed webhook body");
        let mut headers = FieldTable::default();
        headers.insert(
            HEADER_DEAD_LETTER_REASON.into(),
            AMQPValue::LongString(LongString::from(*reason)),
        );
        headers.insert(
            HEADER_DEAD_LETTER_DETAIL.into(),
            AMQPValue::LongString(LongString::from(detail.as_str())),
        );
        messages.push(OutgoingMessage {
            exchange: exchange::WHATSAPP_EVENTS.to_owned(),
            routing_key: routing::QUARANTINE_WEBHOOK.to_owned(),
            body: webhook.body.to_vec(),
            options: PublishOptions {
                headers,
                content_type: Some(webhook.content_type.unwrap_or(OCTET_STREAM).to_owned()),
                ..options(body_id(webhook.body))
            },
        });
    }

    Ok(Prepared {
        messages,
        events,
        quarantined: quarantine.map(|(reason, _)| reason),
    })
}

fn problems_detail(problems: &[Problem]) -> String {
    let mut detail = format!("{} unreadable item(s): ", problems.len());
    for (i, problem) in problems.iter().enumerate() {
        if i > 0 {
            detail.push_str("; ");
        }
        detail.push_str(&problem.to_string());
        if detail.chars().count() > MAX_DETAIL_CHARS {
            break;
        }
    }
    truncate(detail)
}

fn unreadable_detail(unreadable: &Unreadable) -> String {
    truncate(unreadable.to_string())
}

fn truncate(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(MAX_DETAIL_CHARS) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// `message_id` of a quarantined body: the same body redelivered by Meta gets the same id.
fn body_id(body: &[u8]) -> String {
    format!("quarantine:{}", hex::encode(&Sha256::digest(body)[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_details_are_bounded() {
        let problems: Vec<Problem> = (0..500)
            .map(|i| Problem {
                path: format!("entry[{i}]"),
                reason: "id is missing or not a string".into(),
            })
            .collect();
        let detail = problems_detail(&problems);
        assert!(
            detail.starts_with("500 unreadable item(s): entry[0]: id is missing"),
            "{detail}"
        );
        assert!(detail.chars().count() <= MAX_DETAIL_CHARS + 1);
    }

    #[test]
    fn the_same_body_gets_the_same_quarantine_id() {
        assert_eq!(body_id(b"abc"), body_id(b"abc"));
        assert_ne!(body_id(b"abc"), body_id(b"abd"));
    }
}

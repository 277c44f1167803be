//! Dead letters: inspect, count by reason, replay to their queue, purge.
//!
//! Dead letters are read with `basic.get` without auto-ack, so inspecting is non-destructive:
//! whatever is not explicitly acked (replayed or purged) is given back to the queue when the
//! channel closes. A replay publishes with a broker confirm *before* acking the dead letter, so a
//! crash in between duplicates a message (consumers are idempotent) and never loses one.

use std::collections::BTreeMap;

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel};
use wa_amqp::{PublishOptions, Publisher};
use wa_common::topology::{
    self, DEAD_LETTER_SUFFIX, HEADER_DEAD_LETTER_DETAIL, HEADER_DEAD_LETTER_REASON,
    HEADER_TENANT_ID, QueueRole,
};

/// Header set on a replayed message, so its history stays visible.
pub const HEADER_REPLAYED_AT: &str = "x-wa-replayed-at";

/// One dead letter as shown to a person.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    /// The dead-letter queue it sits in.
    pub dead_letter_queue: String,
    /// The queue it came from (and is replayed to).
    pub source_queue: String,
    /// Stable reason word (ours, or the broker's `x-death` reason such as `delivery_limit`).
    pub reason: String,
    /// Human-readable detail, when the consumer gave one.
    pub detail: Option<String>,
    /// Tenant, when known.
    pub tenant_id: Option<String>,
    /// Routing key it was first published with.
    pub routing_key: String,
    /// AMQP message id.
    pub message_id: Option<String>,
    /// Body as text (lossy for binary quarantined bodies).
    pub body: String,
}

/// Which dead letters a command applies to.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this reason.
    pub reason: Option<String>,
    /// Only this tenant.
    pub tenant_id: Option<String>,
}

impl Filter {
    fn matches(&self, letter: &DeadLetter) -> bool {
        self.reason.as_deref().is_none_or(|r| r == letter.reason)
            && self
                .tenant_id
                .as_deref()
                .is_none_or(|t| letter.tenant_id.as_deref() == Some(t))
    }
}

/// Every queue of the topology, including the sender's per-tenant dispatch queues of the tenants
/// configured in the environment (`WHATSAPP_*`, `TENANTS_FILE`).
pub fn known_queues() -> Vec<topology::QueueSpec> {
    let tenants: Vec<String> = wa_service::tenants::TenantDirectory::from_env()
        .map(|directory| directory.iter().map(|t| t.tenant_id.clone()).collect())
        .unwrap_or_default();
    let dispatch = tenants
        .iter()
        .flat_map(|tenant| topology::sender_dispatch_topology(tenant).queues);
    topology::topology()
        .queues
        .into_iter()
        .chain(dispatch)
        .collect()
}

/// Every dead-letter queue of [`known_queues`].
pub fn dead_letter_queues() -> Vec<String> {
    known_queues()
        .into_iter()
        .filter(|q| q.role == QueueRole::DeadLetter)
        .map(|q| q.name)
        .collect()
}

fn header_text(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The broker's reason from the newest `x-death` entry (e.g. `delivery_limit`, `rejected`, `expired`).
fn x_death_reason(headers: &FieldTable) -> Option<String> {
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    header_text(first, "reason")
}

fn describe(dlq: &str, delivery: &lapin::message::Delivery) -> DeadLetter {
    let headers = delivery.properties.headers().clone().unwrap_or_default();
    let reason = header_text(&headers, HEADER_DEAD_LETTER_REASON)
        .or_else(|| x_death_reason(&headers))
        .unwrap_or_else(|| "unknown".to_owned());
    DeadLetter {
        dead_letter_queue: dlq.to_owned(),
        source_queue: dlq
            .strip_suffix(DEAD_LETTER_SUFFIX)
            .unwrap_or(dlq)
            .to_owned(),
        reason,
        detail: header_text(&headers, HEADER_DEAD_LETTER_DETAIL),
        tenant_id: header_text(&headers, HEADER_TENANT_ID),
        routing_key: header_text(&headers, topology::HEADER_ORIGINAL_ROUTING_KEY)
            .unwrap_or_else(|| delivery.routing_key.as_str().to_owned()),
        message_id: delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned()),
        body: String::from_utf8_lossy(&delivery.data).into_owned(),
    }
}

/// Reads up to `limit` dead letters of `dlq` without removing them.
pub async fn list(channel: &Channel, dlq: &str, limit: usize) -> anyhow::Result<Vec<DeadLetter>> {
    let mut letters = Vec::new();
    let mut held = Vec::new();
    while letters.len() < limit {
        let Some(message) = channel
            .basic_get(dlq.into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        letters.push(describe(dlq, &message.delivery));
        held.push(message.delivery);
    }
    give_back(held).await?;
    Ok(letters)
}

/// Counts the dead letters of `dlq` by reason (reads every message, removes none).
pub async fn count_by_reason(
    channel: &Channel,
    dlq: &str,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    for letter in list(channel, dlq, usize::MAX).await? {
        *counts.entry(letter.reason).or_insert(0) += 1;
    }
    Ok(counts)
}

async fn give_back(held: Vec<lapin::message::Delivery>) -> anyhow::Result<()> {
    for delivery in held {
        delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await?;
    }
    Ok(())
}

/// What a replay or purge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Messages replayed or purged.
    pub moved: u64,
    /// Messages left in the dead-letter queue (did not match the filter).
    pub kept: u64,
}

/// Headers of a replayed message: the original ones without the dead-letter bookkeeping.
fn replay_headers(original: &FieldTable) -> FieldTable {
    let mut headers = FieldTable::default();
    for (key, value) in original.inner() {
        let name = key.as_str();
        if name == "x-death"
            || name.starts_with("x-first-death")
            || name.starts_with("x-last-death")
            || name == HEADER_DEAD_LETTER_REASON
            || name == HEADER_DEAD_LETTER_DETAIL
            || name == topology::HEADER_ATTEMPT
            || name.starts_with("traceparent")
            || name.starts_with("tracestate")
        {
            continue;
        }
        headers.insert(key.clone(), value.clone());
    }
    headers.insert(
        ShortString::from(HEADER_REPLAYED_AT),
        AMQPValue::LongString(chrono::Utc::now().to_rfc3339().into()),
    );
    headers
}

/// Moves the dead letters of `dlq` that match `filter` back to their source queue (through the
/// default exchange, addressed by queue name), at most `limit`; `progress` is called per message.
pub async fn replay(
    channel: &Channel,
    publisher: &Publisher,
    dlq: &str,
    filter: &Filter,
    limit: usize,
    mut progress: impl FnMut(&DeadLetter),
) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    let mut held = Vec::new();
    while (summary.moved as usize) < limit {
        let Some(message) = channel
            .basic_get(dlq.into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let delivery = message.delivery;
        let letter = describe(dlq, &delivery);
        if !filter.matches(&letter) {
            summary.kept += 1;
            held.push(delivery);
            continue;
        }
        let properties: &BasicProperties = &delivery.properties;
        let options = PublishOptions {
            message_id: letter.message_id.clone(),
            correlation_id: properties
                .correlation_id()
                .as_ref()
                .map(|c| c.as_str().to_owned()),
            tenant_id: letter.tenant_id.clone(),
            headers: replay_headers(&properties.headers().clone().unwrap_or_default()),
            trace_context: None,
            content_type: properties
                .content_type()
                .as_ref()
                .map(|c| c.as_str().to_owned()),
        };
        // Confirmed publish first, ack second: a crash in between duplicates, never loses.
        publisher
            .publish_bytes("", &letter.source_queue, &delivery.data, options)
            .await?;
        delivery.acker.ack(BasicAckOptions::default()).await?;
        summary.moved += 1;
        progress(&letter);
    }
    give_back(held).await?;
    Ok(summary)
}

/// Deletes the dead letters of `dlq` that match `filter`.
pub async fn purge(channel: &Channel, dlq: &str, filter: &Filter) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    let mut held = Vec::new();
    while let Some(message) = channel
        .basic_get(dlq.into(), BasicGetOptions { no_ack: false })
        .await?
    {
        let letter = describe(dlq, &message.delivery);
        if filter.matches(&letter) {
            message
                .delivery
                .acker
                .ack(BasicAckOptions::default())
                .await?;
            summary.moved += 1;
        } else {
            summary.kept += 1;
            held.push(message.delivery);
        }
    }
    give_back(held).await?;
    Ok(summary)
}

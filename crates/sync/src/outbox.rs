//! Publishing what the batches caused: `outbound.status` steps and `agent.notification`s.
//!
//! Each event is written to `sync_outbox` (encrypted, since a notification quotes the message) in
//! the transaction that caused it. Right after the commit the batcher publishes the batch's events
//! from memory with publisher confirms ([`publish_pending`]) and deletes their rows. If that fails
//! (broker down, or the process dies in between), the rows stay and the periodic [`relay`]
//! publishes them, oldest first, once they are older than a grace period, so it never races the
//! batcher. A crash after the confirm and before the delete republishes an event with the same
//! AMQP `message_id` (`sync-outbox-<row id>`), on which consumers dedupe.
//!
//! The `outbound.status` steps of one message go out in commit order: the batcher holds a step
//! back while an older step of the same message is still in the outbox (left by a failed publish,
//! a crashed replica, or another replica's batch still publishing), and the relay, one at a time
//! across replicas, publishes in row order.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use diesel_async::AsyncConnection;
use wa_amqp::{OutgoingMessage, PublishOptions, Publisher};
use wa_common::topology::exchange;
use wa_db::PgPool;
use wa_db::models::conversation::OutboxEvent;

use crate::crypto::Cipher;
use crate::store::PendingEvent;

/// Rows published per transaction by the relay.
const RELAY_BATCH: i64 = 500;

/// The message of outbox row `id`; `trace` is the context of the delivery that caused it (the
/// current one, i.e. the publishing span's, when `None`).
fn outgoing(
    id: i64,
    tenant: &str,
    routing_key: &str,
    body: Vec<u8>,
    trace: Option<opentelemetry::Context>,
) -> OutgoingMessage {
    OutgoingMessage {
        exchange: exchange::WHATSAPP_EVENTS.to_owned(),
        routing_key: routing_key.to_owned(),
        body,
        options: PublishOptions {
            message_id: Some(format!("sync-outbox-{id}")),
            tenant_id: Some(tenant.to_owned()),
            trace_context: trace,
            ..PublishOptions::default()
        },
    }
}

fn count_published(routing_key: &str, tenant: &str) {
    metrics::counter!("wa_sync_published_total", "routing_key" => routing_key.to_owned(), "tenant" => tenant.to_owned())
        .increment(1);
}

/// Publishes a committed batch's events (in order, confirmed), each with the trace context of
/// the delivery that caused it when known, then deletes their outbox rows.
#[tracing::instrument(name = "sync.publish_pending", skip_all, fields(events = events.len()))]
pub async fn publish_pending(
    pool: &PgPool,
    publisher: &Publisher,
    events: Vec<(PendingEvent, Option<opentelemetry::Context>)>,
) -> anyhow::Result<()> {
    let events = {
        let mut conn = pool
            .get()
            .await
            .context("getting a connection for the outbox")?;
        without_held_back(&mut conn, events).await?
    };
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = events.iter().map(|(e, _)| e.id).collect();
    let labels: Vec<(&'static str, String)> = events
        .iter()
        .map(|(e, _)| (e.routing_key, e.tenant.clone()))
        .collect();
    let messages = events
        .into_iter()
        .map(|(e, trace)| outgoing(e.id, &e.tenant, e.routing_key, e.body, trace))
        .collect();
    publisher
        .publish_all(messages)
        .await
        .context("publishing the batch's events")?;
    for (routing_key, tenant) in &labels {
        count_published(routing_key, tenant);
    }
    // A connection of its own: none is held while the broker confirms.
    let mut conn = pool
        .get()
        .await
        .context("getting a connection to clear the outbox")?;
    OutboxEvent::delete(&mut conn, &ids)
        .await
        .context("deleting published outbox rows")?;
    Ok(())
}

/// The events to publish now: all but the steps of messages that still have an older step in
/// the outbox, which stay there for the relay.
async fn without_held_back(
    conn: &mut diesel_async::AsyncPgConnection,
    events: Vec<(PendingEvent, Option<opentelemetry::Context>)>,
) -> anyhow::Result<Vec<(PendingEvent, Option<opentelemetry::Context>)>> {
    let about: Vec<(i64, i64)> = events
        .iter()
        .filter_map(|(e, _)| Some((e.message_id?, e.id)))
        .collect();
    let held = OutboxEvent::held_back(conn, &about)
        .await
        .context("looking for older steps still in the outbox")?;
    if held.is_empty() {
        return Ok(events);
    }
    let (kept, waiting): (Vec<_>, Vec<_>) = events
        .into_iter()
        .partition(|(e, _)| e.message_id.is_none_or(|m| !held.contains(&m)));
    metrics::counter!("wa_sync_outbox_held_back_total").increment(waiting.len() as u64);
    tracing::debug!(
        held_back = waiting.len(),
        "status steps wait for an older step of their message still in the outbox"
    );
    Ok(kept)
}

/// Publishes every outbox row created before `created_before` (all rows when `None`); returns
/// how many events went out.
#[tracing::instrument(name = "sync.outbox_relay", skip_all)]
pub async fn relay(
    pool: &PgPool,
    cipher: &Cipher,
    publisher: &Publisher,
    created_before: Option<DateTime<Utc>>,
) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let mut conn = pool
            .get()
            .await
            .context("getting a database connection for the outbox")?;
        let (claimed, published) = conn
            .transaction::<(usize, usize), anyhow::Error, _>(async |conn| {
                let rows = OutboxEvent::claim(conn, RELAY_BATCH, created_before).await?;
                let mut messages = Vec::with_capacity(rows.len());
                let mut ids = Vec::with_capacity(rows.len());
                for row in &rows {
                    match cipher.open(&row.payload_ciphertext, &row.payload_nonce, &row.key_id) {
                        Ok(body) => {
                            messages.push(outgoing(row.id, &row.tenant_id, &row.routing_key, body, None));
                            ids.push(row.id);
                        }
                        Err(error) => {
                            // Left in place (and counted) until the key that sealed it is configured again.
                            metrics::counter!("wa_sync_outbox_undecryptable_total").increment(1);
                            tracing::error!(outbox_id = row.id, error = %error, "cannot decrypt an outbox event");
                        }
                    }
                }
                let count = messages.len();
                if count > 0 {
                    publisher.publish_all(messages).await.context("publishing outbox events")?;
                    OutboxEvent::delete(conn, &ids).await?;
                    for row in rows.iter().filter(|r| ids.contains(&r.id)) {
                        count_published(&row.routing_key, &row.tenant_id);
                    }
                }
                Ok((rows.len(), count))
            })
            .await?;
        total += published;
        // Stop when the outbox is drained, or when only undecryptable rows are left.
        if claimed < RELAY_BATCH as usize || published == 0 {
            return Ok(total);
        }
    }
}

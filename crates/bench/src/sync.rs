//! conversation-sync benchmark: events persisted per second by the batcher (many events per
//! transaction, per-event outcome after the commit and the outbox publish) against the same code
//! with one transaction per event (batch size 1), in the same run, on fresh databases; and the
//! event-to-row latency (submit → committed, published and answered) at a fixed 1,000 events/s.
//!
//! The events are status webhooks (`sent`, `delivered`, `read`) of messages accepted beforehand,
//! the highest-volume event kind: each one appends to the status history, moves the current
//! status forward and queues an `outbound.status` that is published with confirms. The handler
//! is driven directly (as the consume loop does, with as many events in flight as the prefetch),
//! so the figures are the persistence path alone, without broker delivery.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use wa_amqp::{Outcome, Publisher, declare_topology};
use wa_common::topology::{routing, topology};
use wa_service::tenants::{Tenant, TenantDirectory};
use wa_sync::config::BatchConfig;
use wa_sync::crypto::Cipher;
use wa_sync::ingest::{IngestDeps, SyncHandler};
use wa_sync::media::{FsMediaStore, MediaStore};
use wa_testkit::broker::TestBroker;
use wa_testkit::db::TestDb;

use crate::report::Figure;

const GROUP: &str = "sync";
const PHONE_NUMBER_ID: &str = "106540352242922";
/// Outbound messages whose statuses are replayed (three statuses each).
const MESSAGES: usize = 4_000;
/// Events in flight, as with a prefetch of twice the batch size.
const IN_FLIGHT: usize = 1_000;
/// Batch size of the batched run.
const BATCH: usize = 500;
/// The fixed rate of the latency run.
const FIXED_RATE: u32 = 1_000;
/// Length of the latency run.
const FIXED_DURATION: Duration = Duration::from_secs(5);

fn tenants() -> anyhow::Result<TenantDirectory> {
    let tenant: Tenant = serde_json::from_value(json!({
        "tenant_id": "default", "phone_number_id": PHONE_NUMBER_ID, "waba_id": "102290129340398",
        "access_token": "bench-token",
    }))?;
    TenantDirectory::new(vec![tenant]).map_err(anyhow::Error::msg)
}

fn accepted(i: usize) -> Value {
    json!({
        "job_id": format!("bench-job-{i}"), "tenant_id": "default", "to": format!("+62812{:07}", i % 500),
        "wa_message_id": format!("wamid.bench.{i}"), "accepted_at": Utc::now(), "attempts": 1,
        "reference": {"kind": "payment_reminder", "id": format!("sched-{i}")},
    })
}

fn status(i: usize, word: &str) -> Value {
    json!({
        "source": {"waba_id": "102290129340398", "phone_number_id": PHONE_NUMBER_ID, "display_phone_number": null},
        "wa_message_id": format!("wamid.bench.{i}"), "status": word, "timestamp": Utc::now(),
        "recipient_id": "6281234567890", "biz_opaque_callback_data": null,
        "pricing": {"billable": true, "pricing_model": "PMP", "type": "regular", "category": "utility"},
        "errors": [], "raw": {"id": format!("wamid.bench.{i}"), "status": word}, "received_at": Utc::now(),
    })
}

/// A handler with its own database, on the shared vhost.
struct Rig {
    _db: TestDb,
    handler: Arc<SyncHandler>,
    batcher: tokio::task::JoinHandle<()>,
}

async fn rig(broker: &TestBroker, batch: usize) -> anyhow::Result<Rig> {
    let db = TestDb::new().await.context("bench database")?;
    let pool = wa_db::build_pool(&db.url, 8)?;
    let publisher = Publisher::connect(&broker.amqp_url, "bench-sync").await?;
    let cipher = Cipher::from_base64(&STANDARD.encode([9u8; 32]), "")?;
    let media_store: Arc<dyn MediaStore> = Arc::new(FsMediaStore::new(
        std::env::temp_dir().join("wa-bench-media"),
    ));
    let deps = IngestDeps {
        pool,
        cipher,
        publisher,
        media_store,
    };
    let config = BatchConfig {
        max_events: batch,
        max_wait: Duration::from_millis(10),
    };
    let (handler, batcher) = SyncHandler::start(Arc::new(tenants()?), deps, config);
    let rig = Rig {
        _db: db,
        handler: Arc::new(handler),
        batcher,
    };
    // Seed the messages the statuses belong to (not timed).
    let seed: Vec<(String, Vec<u8>)> = (0..MESSAGES)
        .map(|i| {
            (
                routing::OUTBOUND_ACCEPTED.to_owned(),
                serde_json::to_vec(&accepted(i)).unwrap_or_default(),
            )
        })
        .collect();
    closed_loop(&rig.handler, seed).await?;
    Ok(rig)
}

/// Submits every event with `IN_FLIGHT` in flight; returns events/s.
async fn closed_loop(
    handler: &Arc<SyncHandler>,
    events: Vec<(String, Vec<u8>)>,
) -> anyhow::Result<f64> {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = JoinSet::new();
    let count = events.len();
    let started = Instant::now();
    for (key, body) in events {
        let permit = permits.clone().acquire_owned().await?;
        let handler = handler.clone();
        tasks.spawn(async move {
            let outcome = handler.handle_message(&key, &body, 1).await;
            drop(permit);
            outcome
        });
    }
    while let Some(outcome) = tasks.join_next().await {
        let outcome = outcome?;
        anyhow::ensure!(
            outcome == Outcome::Ack,
            "an event was not acked: {outcome:?}"
        );
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

fn status_events() -> Vec<(String, Vec<u8>)> {
    let mut events = Vec::with_capacity(MESSAGES * 3);
    for word in ["sent", "delivered", "read"] {
        for i in 0..MESSAGES {
            events.push((
                routing::INBOUND_STATUS.to_owned(),
                serde_json::to_vec(&status(i, word)).unwrap_or_default(),
            ));
        }
    }
    events
}

fn inbound_events() -> Vec<(String, Vec<u8>)> {
    (0..MESSAGES)
        .map(|i| {
            let body = json!({
                "source": {"waba_id": "102290129340398", "phone_number_id": PHONE_NUMBER_ID, "display_phone_number": null},
                "wa_message_id": format!("wamid.in.{i}"), "from": format!("62813{:07}", i % 500),
                "from_user_id": null, "profile_name": "Jamaah", "timestamp": Utc::now(), "message_type": "text",
                "raw": {"type": "text", "text": {"body": "Assalamu'alaikum, kapan jadwal manasik?"}},
                "received_at": Utc::now(),
            });
            (routing::INBOUND_MESSAGE.to_owned(), serde_json::to_vec(&body).unwrap_or_default())
        })
        .collect()
}

/// Inbound texts persisted/s (contact lookup, message, notification outbox and publish per event).
async fn inbound_throughput(broker: &TestBroker) -> anyhow::Result<f64> {
    let rig = rig(broker, BATCH).await?;
    let rate = closed_loop(&rig.handler, inbound_events()).await?;
    drop(rig.handler);
    rig.batcher.await?;
    Ok(rate)
}

async fn throughput(broker: &TestBroker, batch: usize) -> anyhow::Result<f64> {
    let rig = rig(broker, batch).await?;
    let rate = closed_loop(&rig.handler, status_events()).await?;
    drop(rig.handler);
    rig.batcher.await?;
    Ok(rate)
}

/// Submits events at `FIXED_RATE` for `FIXED_DURATION`; returns (p50, p99) latency in ms.
async fn latency(broker: &TestBroker) -> anyhow::Result<(f64, f64)> {
    let rig = rig(broker, BATCH).await?;
    let events = status_events();
    let total = (FIXED_RATE as usize * FIXED_DURATION.as_secs() as usize).min(events.len());
    let interval = Duration::from_secs_f64(1.0 / f64::from(FIXED_RATE));
    let started = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    for (n, (key, body)) in events.into_iter().take(total).enumerate() {
        let scheduled = started + interval * u32::try_from(n)?;
        tokio::time::sleep_until(scheduled).await;
        let handler = rig.handler.clone();
        tasks.spawn(async move {
            let outcome = handler.handle_message(&key, &body, 1).await;
            (outcome, scheduled.elapsed())
        });
    }
    let mut latencies = Vec::with_capacity(total);
    while let Some(done) = tasks.join_next().await {
        let (outcome, elapsed) = done?;
        anyhow::ensure!(
            outcome == Outcome::Ack,
            "an event was not acked: {outcome:?}"
        );
        latencies.push(elapsed.as_secs_f64() * 1000.0);
    }
    drop(rig.handler);
    rig.batcher.await?;
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Ok((pick(0.50), pick(0.99)))
}

/// Runs the sync benchmark and returns its figures.
pub async fn run() -> anyhow::Result<Vec<Figure>> {
    let broker = TestBroker::new().await.context("bench vhost")?;
    let conn = broker.connect("bench-sync-topology").await?;
    declare_topology(&conn.create_channel().await?, &topology()).await?;

    let baseline = throughput(&broker, 1).await?;
    let batched = throughput(&broker, BATCH).await?;
    let (p50, p99) = latency(&broker).await?;
    let inbound = inbound_throughput(&broker).await?;
    let _ = conn.close(200, "done".into()).await;

    Ok(vec![
        Figure {
            group: GROUP.into(),
            name: format!("status events persisted/s (batches of {BATCH}, {IN_FLIGHT} in flight)"),
            value: batched,
            unit: "events/s".into(),
            baseline_name: Some("one transaction per event, same code and load".into()),
            baseline_value: Some(baseline),
            target: ">= 10000 events/s".into(),
            met: batched >= 10_000.0,
        },
        Figure {
            group: GROUP.into(),
            name: format!(
                "inbound text messages persisted/s (batches of {BATCH}), with agent notifications"
            ),
            value: inbound,
            unit: "events/s".into(),
            baseline_name: Some("status events persisted/s, batched, same run".into()),
            baseline_value: Some(batched),
            target: "- (informative)".into(),
            met: true,
        },
        Figure {
            group: GROUP.into(),
            name: format!("event-to-row latency p50 at {FIXED_RATE} events/s"),
            value: p50,
            unit: "ms".into(),
            baseline_name: None,
            baseline_value: None,
            target: "-".into(),
            met: true,
        },
        Figure {
            group: GROUP.into(),
            name: format!("event-to-row latency p99 at {FIXED_RATE} events/s"),
            value: p99,
            unit: "ms".into(),
            baseline_name: None,
            baseline_value: None,
            target: "< 100 ms".into(),
            met: p99 < 100.0,
        },
    ])
}

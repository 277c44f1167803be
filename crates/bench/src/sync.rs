//! conversation-sync benchmark: events persisted per second by the batcher (many events per
//! transaction, each event answered after the commit and the outbox publish) against one
//! transaction per event, in the same run, on fresh databases; and the event-to-row latency
//! (submit → committed, published and answered) at a fixed 1,000 events/s.
//!
//! The load is the production mix of `sync.events`: for every outbound message its
//! `outbound.accepted` and three status webhooks (`sent` shortly after, `delivered` later, `read`
//! later still), one inbound text for every second outbound message (nine in ten from known
//! jamaah, one in ten from unknown senders), 2 % of `sent` statuses arriving before their
//! `outbound.accepted` (the webhook outran the sender) and 1 % of `delivered` statuses
//! redelivered by Meta. That is two thirds statuses, a fifth accepted and a tenth inbound. The
//! jamaah directory (`jamaah.upserted`) is loaded first and not timed.
//!
//! The handler is driven directly, as the consume loop does, with as many events in flight as the
//! service's consumer allows ([`BatchConfig::in_flight`]), so the figures are the persistence path
//! without broker delivery. The one-transaction-per-event baseline runs the same code with
//! batches of one, on as many writers as the database pool has connections (events routed by
//! contact, as a consistent-hash exchange would), so it is not handicapped by writing serially.

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
const TENANT: &str = "default";
const PHONE_NUMBER_ID: &str = "106540352242922";
const WABA_ID: &str = "102290129340398";
/// Jamaah in the directory; outbound messages go to them in turn.
const JAMAAH: usize = 2_000;
/// Outbound messages of the batched throughput run (about 4.5 events each).
const MESSAGES: usize = 8_000;
/// Outbound messages of the one-transaction-per-event run (same mix, smaller because it is slow).
const BASELINE_MESSAGES: usize = 500;
/// Batch size of the batched runs (the service's default `SYNC_BATCH_SIZE`).
const BATCH: usize = 1000;
/// The service's default `SYNC_BATCH_WAIT_MS`.
const BATCH_WAIT: Duration = Duration::from_millis(10);
/// Database connections (the service's default `SYNC_DB_POOL_SIZE`), and the baseline's writers.
const POOL_SIZE: usize = 10;
/// The fixed rate of the latency run.
const FIXED_RATE: u32 = 1_000;
/// Length of the latency run.
const FIXED_DURATION: Duration = Duration::from_secs(5);

/// One delivery of the stream: routing key, body, and the contact it is about (the baseline's
/// writers are chosen by it).
struct Event {
    routing_key: &'static str,
    body: Vec<u8>,
    contact: usize,
}

fn tenants() -> anyhow::Result<TenantDirectory> {
    let tenant: Tenant = serde_json::from_value(json!({
        "tenant_id": TENANT, "phone_number_id": PHONE_NUMBER_ID, "waba_id": WABA_ID,
        "access_token": "bench-token",
    }))?;
    TenantDirectory::new(vec![tenant]).map_err(anyhow::Error::msg)
}

/// Digits of jamaah `j`'s phone (`62812…`); unknown senders use `62899…`.
fn jamaah_digits(j: usize) -> String {
    format!("62812{:07}", j)
}

fn event(routing_key: &'static str, body: &Value, contact: usize) -> Event {
    Event {
        routing_key,
        body: serde_json::to_vec(body).unwrap_or_default(),
        contact,
    }
}

fn jamaah_upserted(j: usize) -> Event {
    let body = json!({
        "tenant_id": TENANT, "jamaah_id": format!("jamaah-{j}"), "name": format!("Jamaah {j}"),
        "phone": format!("+{}", jamaah_digits(j)), "status": "registered",
        "package": {"id": "pkg-umrah-des", "name": "Umrah Reguler Desember 2026"},
        "agent": {"id": format!("agent-{}", j % 40), "name": "Bu Rina", "phone": "+62 811-111-222"},
    });
    event(routing::JAMAAH_UPSERTED, &body, j)
}

fn accepted(i: usize) -> Event {
    let j = i % JAMAAH;
    let body = json!({
        "job_id": format!("bench-job-{i}"), "tenant_id": TENANT, "to": format!("+{}", jamaah_digits(j)),
        "wa_message_id": format!("wamid.bench.{i}"), "accepted_at": Utc::now(), "attempts": 1,
        "reference": {"kind": "payment_reminder", "id": format!("sched-{i}")},
        "message": {"type": "template", "template": {
            "name": "pengingat_cicilan", "language": {"code": "id"},
            "components": [{"type": "body", "parameters": [
                {"type": "text", "text": format!("Jamaah {j}")},
                {"type": "text", "text": "Rp 2.500.000"},
                {"type": "text", "text": "15 Desember 2026"},
            ]}],
        }},
    });
    event(routing::OUTBOUND_ACCEPTED, &body, j)
}

fn status(i: usize, word: &str) -> Event {
    let j = i % JAMAAH;
    let body = json!({
        "source": {"waba_id": WABA_ID, "phone_number_id": PHONE_NUMBER_ID, "display_phone_number": null},
        "wa_message_id": format!("wamid.bench.{i}"), "status": word, "timestamp": Utc::now(),
        "recipient_id": jamaah_digits(j), "biz_opaque_callback_data": null,
        "pricing": {"billable": true, "pricing_model": "PMP", "type": "regular", "category": "utility"},
        "errors": [], "raw": {"id": format!("wamid.bench.{i}"), "status": word}, "received_at": Utc::now(),
    });
    event(routing::INBOUND_STATUS, &body, j)
}

/// The `n`-th inbound text; every tenth comes from a number the directory does not know.
fn inbound(n: usize) -> Event {
    let (from, contact) = if n % 10 == 9 {
        (format!("62899{:07}", n), JAMAAH + n)
    } else {
        let j = (n * 7) % JAMAAH;
        (jamaah_digits(j), j)
    };
    let body = json!({
        "source": {"waba_id": WABA_ID, "phone_number_id": PHONE_NUMBER_ID, "display_phone_number": null},
        "wa_message_id": format!("wamid.in.{n}"), "from": from, "from_user_id": null,
        "profile_name": "Jamaah", "timestamp": Utc::now(), "message_type": "text",
        "raw": {"from": from, "id": format!("wamid.in.{n}"), "type": "text",
                "text": {"body": "Assalamu'alaikum, kapan jadwal manasik?"}},
        "received_at": Utc::now(),
    });
    event(routing::INBOUND_MESSAGE, &body, contact)
}

/// The production mix for `messages` outbound messages, in arrival order: message `i` is
/// accepted at slot `i`, `sent` arrives at `i + 20` (2 % at `i - 3`, before the accepted event),
/// `delivered` at `i + 150` (1 % twice), `read` at `i + 600`, and every second message gets an
/// inbound reply at `i + 300`.
fn production_mix(messages: usize) -> Vec<Event> {
    let mut slotted: Vec<(usize, Event)> = Vec::with_capacity(messages * 5);
    for i in 0..messages {
        let at = i + 3;
        slotted.push((at, accepted(i)));
        let sent_at = if i % 50 == 7 { at - 3 } else { at + 20 };
        slotted.push((sent_at, status(i, "sent")));
        slotted.push((at + 150, status(i, "delivered")));
        if i % 100 == 11 {
            slotted.push((at + 160, status(i, "delivered")));
        }
        slotted.push((at + 600, status(i, "read")));
        if i % 2 == 0 {
            slotted.push((at + 300, inbound(i / 2)));
        }
    }
    // Stable: events of one slot keep the order above.
    slotted.sort_by_key(|(slot, _)| *slot);
    slotted.into_iter().map(|(_, e)| e).collect()
}

/// One handler per writer, with its own database on the shared vhost.
struct Rig {
    _db: TestDb,
    handlers: Vec<Arc<SyncHandler>>,
    batchers: Vec<tokio::task::JoinHandle<()>>,
}

impl Rig {
    /// Drops the handlers and waits until every batcher has answered all it took.
    async fn stop(self) -> anyhow::Result<()> {
        drop(self.handlers);
        for batcher in self.batchers {
            batcher.await?;
        }
        Ok(())
    }
}

async fn rig(broker: &TestBroker, batch: usize, writers: usize) -> anyhow::Result<Rig> {
    let db = TestDb::new().await.context("bench database")?;
    let pool = wa_db::build_pool(&db.url, POOL_SIZE)?;
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
        max_wait: BATCH_WAIT,
    };
    let tenants = Arc::new(tenants()?);
    let mut handlers = Vec::with_capacity(writers);
    let mut batchers = Vec::with_capacity(writers);
    for _ in 0..writers {
        let (handler, batcher) = SyncHandler::start(tenants.clone(), deps.clone(), config.clone());
        handlers.push(Arc::new(handler));
        batchers.push(batcher);
    }
    let rig = Rig {
        _db: db,
        handlers,
        batchers,
    };
    // The jamaah directory (not timed).
    closed_loop(
        &rig,
        (0..JAMAAH).map(jamaah_upserted).collect(),
        in_flight(),
    )
    .await?;
    Ok(rig)
}

/// What the service's consumer holds at once with the benchmark's batch size.
fn in_flight() -> usize {
    BatchConfig {
        max_events: BATCH,
        max_wait: BATCH_WAIT,
    }
    .in_flight()
}

/// Submits every event in order with `in_flight` in flight, each to the writer of its contact;
/// fails unless every event is acked; returns events/s.
async fn closed_loop(rig: &Rig, events: Vec<Event>, in_flight: usize) -> anyhow::Result<f64> {
    let permits = Arc::new(Semaphore::new(in_flight));
    let mut tasks = JoinSet::new();
    let count = events.len();
    let started = Instant::now();
    for event in events {
        let permit = permits.clone().acquire_owned().await?;
        let handler = rig.handlers[event.contact % rig.handlers.len()].clone();
        tasks.spawn(async move {
            let outcome = handler
                .handle_message(event.routing_key, &event.body, 1)
                .await;
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

/// Events/s of `events` on a fresh database, batched (`writers` = 1) or one transaction per event.
async fn throughput(
    broker: &TestBroker,
    batch: usize,
    writers: usize,
    events: Vec<Event>,
) -> anyhow::Result<f64> {
    let rig = rig(broker, batch, writers).await?;
    let rate = closed_loop(&rig, events, in_flight()).await;
    rig.stop().await?;
    rate
}

/// Only the statuses of the mix, their messages accepted beforehand (not timed).
async fn status_throughput(broker: &TestBroker) -> anyhow::Result<f64> {
    let rig = rig(broker, BATCH, 1).await?;
    let (statuses, rest): (Vec<Event>, Vec<Event>) = production_mix(MESSAGES)
        .into_iter()
        .filter(|e| e.routing_key != routing::INBOUND_MESSAGE)
        .partition(|e| e.routing_key == routing::INBOUND_STATUS);
    closed_loop(&rig, rest, in_flight()).await?;
    let rate = closed_loop(&rig, statuses, in_flight()).await;
    rig.stop().await?;
    rate
}

/// Submits the mix at `FIXED_RATE` for `FIXED_DURATION`; returns (p50, p99) latency in ms.
async fn latency(broker: &TestBroker) -> anyhow::Result<(f64, f64)> {
    let rig = rig(broker, BATCH, 1).await?;
    let total = FIXED_RATE as usize * FIXED_DURATION.as_secs() as usize;
    // About 4.5 events per message: the first `total` events of this mix are past its warm-up.
    let events = production_mix(total / 3);
    let interval = Duration::from_secs_f64(1.0 / f64::from(FIXED_RATE));
    let started = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    for (n, event) in events.into_iter().take(total).enumerate() {
        let scheduled = started + interval * u32::try_from(n)?;
        tokio::time::sleep_until(scheduled).await;
        let handler = rig.handlers[0].clone();
        tasks.spawn(async move {
            let outcome = handler
                .handle_message(event.routing_key, &event.body, 1)
                .await;
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
    rig.stop().await?;
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Ok((pick(0.50), pick(0.99)))
}

/// Runs the sync benchmark and returns its figures.
pub async fn run() -> anyhow::Result<Vec<Figure>> {
    let broker = TestBroker::new().await.context("bench vhost")?;
    let conn = broker.connect("bench-sync-topology").await?;
    declare_topology(&conn.create_channel().await?, &topology()).await?;

    let mix = production_mix(MESSAGES);
    let events = mix.len();
    let baseline = throughput(&broker, 1, POOL_SIZE, production_mix(BASELINE_MESSAGES)).await?;
    let batched = throughput(&broker, BATCH, 1, mix).await?;
    let statuses = status_throughput(&broker).await?;
    let inbound = throughput(&broker, BATCH, 1, (0..MESSAGES).map(inbound).collect()).await?;
    let (p50, p99) = latency(&broker).await?;
    let _ = conn.close(200, "done").await;

    let in_flight = in_flight();
    Ok(vec![
        Figure {
            group: GROUP.into(),
            name: format!(
                "production mix persisted/s ({events} events: 2/3 statuses, 1/5 accepted, 1/10 inbound; batches of {BATCH}, {in_flight} in flight)"
            ),
            value: batched,
            unit: "events/s".into(),
            baseline_name: Some(format!(
                "one transaction per event, same code and mix, {POOL_SIZE} writers"
            )),
            baseline_value: Some(baseline),
            target: ">= 10000 events/s".into(),
            met: batched >= 10_000.0,
        },
        Figure {
            group: GROUP.into(),
            name: format!("status events alone persisted/s (batches of {BATCH})"),
            value: statuses,
            unit: "events/s".into(),
            baseline_name: Some("production mix, batched, same run".into()),
            baseline_value: Some(batched),
            target: "- (informative)".into(),
            met: true,
        },
        Figure {
            group: GROUP.into(),
            name: format!(
                "inbound texts alone persisted/s (batches of {BATCH}), with agent notifications"
            ),
            value: inbound,
            unit: "events/s".into(),
            baseline_name: Some("production mix, batched, same run".into()),
            baseline_value: Some(batched),
            target: "- (informative)".into(),
            met: true,
        },
        Figure {
            group: GROUP.into(),
            name: format!("event-to-row latency p50 at {FIXED_RATE} events/s (production mix)"),
            value: p50,
            unit: "ms".into(),
            baseline_name: None,
            baseline_value: None,
            target: "-".into(),
            met: true,
        },
        Figure {
            group: GROUP.into(),
            name: format!("event-to-row latency p99 at {FIXED_RATE} events/s (production mix)"),
            value: p99,
            unit: "ms".into(),
            baseline_name: None,
            baseline_value: None,
            target: "< 100 ms".into(),
            met: p99 < 100.0,
        },
    ])
}

//! Ingress benchmark: signed webhook POSTs with realistic bodies (a status batch, an Arabic inbound
//! text, an image) against an in-process ingress on a fresh vhost, over many keep-alive
//! connections; beside it, in the same run, the broker's raw confirmed-publish rate for exactly the
//! same AMQP batches through a `Publisher` with the same window (the load's concurrency).
//!
//! Figures: requests/s at full speed vs. the raw broker rate (target ≥ 0.60), p50/p99 latency at
//! full speed, and p50/p99 at a fixed 2,000 requests/s (target p99 < 10 ms; latency measured from
//! each request's scheduled start, so a stalled server cannot hide its queueing).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wa_amqp::{OutgoingMessage, Publisher};
use wa_ingress::ingest::{Webhook, prepare_messages};
use wa_ingress::signature::{escape_non_ascii, sign};
use wa_ingress::{App, Config};
use wa_testkit::broker::TestBroker;

use crate::report::Figure;

const GROUP: &str = "ingress";
const SECRET: &str = "bench-app-secret";
/// Concurrent connections of the full-speed load (and the baseline's confirm window).
const CONNECTIONS: usize = 64;
/// Requests of the full-speed run (and batches of the baseline), over all rounds.
const REQUESTS: usize = 12_000;
/// Alternating baseline/ingress rounds of the throughput comparison.
const ROUNDS: usize = 3;
/// The fixed rate of the latency run.
const FIXED_RATE: u32 = 2_000;
/// Length of the fixed-rate run.
const FIXED_DURATION: Duration = Duration::from_secs(5);
/// In-flight cap of the fixed-rate run (an open-loop generator still needs a bound).
const FIXED_MAX_IN_FLIGHT: usize = 512;

/// Runs the ingress benchmark and returns its figures.
pub async fn run() -> anyhow::Result<Vec<Figure>> {
    let broker = TestBroker::new().await.context("bench vhost")?;
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    let config = Config {
        addr: "127.0.0.1:0".into(),
        amqp_url: SecretString::from(broker.amqp_url.clone()),
        app_secrets: wa_ingress::config::parse_app_secrets(SECRET)?,
        verify_token: SecretString::from("bench-verify-token"),
        max_body_bytes: wa_ingress::config::DEFAULT_MAX_BODY_BYTES,
        confirm_timeout: Duration::from_secs(5),
        workers,
        shutdown_timeout: Duration::from_secs(5),
    };
    let app = App::build(config).await?;
    let url = format!(
        "http://{}{}",
        app.local_addr(),
        wa_ingress::routes::WEBHOOK_PATH
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until(shutdown.clone()));

    let bodies = Arc::new(signed_bodies());
    let publisher = Publisher::connect(&broker.amqp_url, "bench-baseline").await?;
    let batches = baseline_batches(&bodies)?;
    let messages_per_request =
        batches.iter().map(Vec::len).sum::<usize>() as f64 / batches.len() as f64;
    let client = HttpClient::new(url)?;
    // Warm-up: connections, the publisher's channel, queue leaders.
    client.closed_loop(&bodies, 500).await?;
    raw_publish(&publisher, &batches, 500, CONNECTIONS).await?;

    // Rounds alternate the baseline and ingress, so a change in the machine's load (it is shared)
    // hits both sides alike; each side reports its median round.
    let (mut baseline_rates, mut http_rates, mut latencies, mut errors) =
        (vec![], vec![], vec![], 0);
    for _ in 0..ROUNDS {
        baseline_rates
            .push(raw_publish(&publisher, &batches, REQUESTS / ROUNDS, CONNECTIONS).await?);
        let round = client.closed_loop(&bodies, REQUESTS / ROUNDS).await?;
        http_rates.push(round.rate);
        latencies.extend(round.latencies);
        errors += round.errors;
    }
    let baseline = median(&mut baseline_rates);
    let full = Measured {
        rate: median(&mut http_rates),
        ..measured(latencies, errors, Duration::from_secs(1))
    };
    let raw_fixed = raw_open_loop(&publisher, &batches, FIXED_RATE, FIXED_DURATION).await?;
    let fixed = client
        .open_loop(&bodies, FIXED_RATE, FIXED_DURATION)
        .await?;
    publisher.close().await;
    client.shutdown();

    shutdown.cancel();
    running.await??;
    drop(broker);

    let baseline_name = format!(
        "raw confirmed publish_all of the same batches/s (window {CONNECTIONS}, {messages_per_request:.2} msgs each, median of alternating rounds)"
    );
    let ratio = full.rate / baseline;
    Ok(vec![
        Figure {
            group: GROUP.into(),
            name: format!(
                "signed webhook requests/s ({CONNECTIONS} connections, {REQUESTS} requests in {ROUNDS} rounds, median)"
            ),
            value: full.rate,
            unit: "req/s".into(),
            baseline_name: Some(baseline_name),
            baseline_value: Some(baseline),
            target: ">= 0.60 of baseline".into(),
            met: ratio >= 0.60 && full.errors == 0,
        },
        latency("p50 latency at full speed", full.p50, None),
        latency("p99 latency at full speed", full.p99, None),
        Figure {
            group: GROUP.into(),
            name: format!("achieved rate of the fixed {FIXED_RATE} req/s run"),
            value: fixed.rate,
            unit: "req/s".into(),
            baseline_name: None,
            baseline_value: None,
            target: format!(">= 0.95 x {FIXED_RATE}, no errors"),
            met: fixed.rate >= 0.95 * f64::from(FIXED_RATE) && fixed.errors == 0,
        },
        with_baseline(
            latency(
                &format!("p50 latency at {FIXED_RATE} req/s"),
                fixed.p50,
                None,
            ),
            &format!("raw publish_all p50 at {FIXED_RATE} batches/s"),
            raw_fixed.p50,
        ),
        with_baseline(
            latency(
                &format!("p99 latency at {FIXED_RATE} req/s"),
                fixed.p99,
                Some(10.0),
            ),
            &format!("raw publish_all p99 at {FIXED_RATE} batches/s"),
            raw_fixed.p99,
        ),
    ])
}

fn latency(name: &str, value: Duration, max_ms: Option<f64>) -> Figure {
    let ms = value.as_secs_f64() * 1_000.0;
    Figure {
        group: GROUP.into(),
        name: name.into(),
        value: ms,
        unit: "ms".into(),
        baseline_name: None,
        baseline_value: None,
        target: max_ms.map_or_else(|| "(informative)".to_owned(), |max| format!("< {max} ms")),
        met: max_ms.is_none_or(|max| ms < max),
    }
}

fn with_baseline(figure: Figure, name: &str, value: Duration) -> Figure {
    Figure {
        baseline_name: Some(name.to_owned()),
        baseline_value: Some(value.as_secs_f64() * 1_000.0),
        ..figure
    }
}

/// One signed request body with its header value.
struct SignedBody {
    body: Vec<u8>,
    signature: String,
}

/// The realistic mix: per 4 requests, 2 status batches (3 statuses), 1 Arabic text, 1 image.
fn signed_bodies() -> Vec<SignedBody> {
    let metadata =
        json!({"display_phone_number": "6221555000111", "phone_number_id": "106540352242922"});
    let envelope = |value: Value| {
        json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398",
            "changes": [{"field": "messages", "value": value}]}]})
    };
    let statuses = |n: usize| {
        let statuses: Vec<Value> = ["sent", "delivered", "read"]
            .iter()
            .enumerate()
            .map(|(i, status)| {
                json!({"id": format!("wamid.HBgNNjI4MTIzNDU2Nzg5MBUCABEYEjc3QTFC{n:06}"), "status": status,
                    "timestamp": (1_767_226_000 + i).to_string(), "recipient_id": "6281234567890",
                    "biz_opaque_callback_data": "reminder:INV2026-0142:h-7",
                    "pricing": {"billable": true, "pricing_model": "PMP", "type": "regular", "category": "utility"}})
            })
            .collect();
        envelope(
            json!({"messaging_product": "whatsapp", "metadata": metadata, "statuses": statuses}),
        )
    };
    let arabic = envelope(
        json!({"messaging_product": "whatsapp", "metadata": metadata,
        "contacts": [{"profile": {"name": "مُحَمَّد Zoë"}, "wa_id": "6281234567890"}],
        "messages": [{"from": "6281234567890", "id": "wamid.HBgNNjI4MTIzNDU2Nzg5MBUCABIYFjNFQjBBQ0RFRjEyMzQ1Njc4OUFCQ0QA",
            "timestamp": "1767225600", "type": "text",
            "text": {"body": "السلام عليكم، متى موعد المناسك؟ 🕋🤲 Assalamualaikum, kapan jadwal manasik?"}}]}),
    );
    let image = envelope(
        json!({"messaging_product": "whatsapp", "metadata": metadata,
        "contacts": [{"profile": {"name": "Siti Aminah"}, "wa_id": "6281234567890"}],
        "messages": [{"from": "6281234567890", "id": "wamid.HBgNNjI4MTIzNDU2Nzg5MBUCABIYFjNFQjBBQ0RFRjEyMzQ1Njc4OUFCQ0UA",
            "timestamp": "1767225700", "type": "image",
            "image": {"caption": "Bukti transfer DP", "mime_type": "image/jpeg",
                "sha256": "3vKxC0v5m0cR8m4nq7v1M2nYb6oQe9Jw0yXkU1o7Vd8=", "id": "1479537139650973"}}]}),
    );
    [statuses(1), arabic, statuses(2), image]
        .iter()
        .map(|value| {
            // Meta's wire form: non-ASCII escaped.
            let body = escape_non_ascii(&value.to_string()).into_bytes();
            let signature = sign(SECRET, &body);
            SignedBody { body, signature }
        })
        .collect()
}

/// Exactly the AMQP batches ingress publishes for each body.
fn baseline_batches(bodies: &[SignedBody]) -> anyhow::Result<Vec<Vec<OutgoingMessage>>> {
    let cx = opentelemetry::Context::new();
    bodies
        .iter()
        .map(|b| {
            let webhook = Webhook {
                body: &b.body,
                content_type: Some("application/json"),
                received_at: chrono::Utc::now(),
                request_id: "bench",
            };
            Ok(prepare_messages(webhook, &cx)?.messages)
        })
        .collect()
}

/// `count` batches through `publisher`, `window` at a time; batches per second.
async fn raw_publish(
    publisher: &Publisher,
    batches: &[Vec<OutgoingMessage>],
    count: usize,
    window: usize,
) -> anyhow::Result<f64> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..window {
        let (publisher, next, batches) = (publisher.clone(), next.clone(), batches.to_vec());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return Ok::<(), anyhow::Error>(());
                }
                publisher
                    .publish_all(batches[i % batches.len()].clone())
                    .await?;
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Batches published on a fixed schedule of `rate` per second for `duration`, as the open-loop
/// HTTP run does; latency from each batch's scheduled start.
async fn raw_open_loop(
    publisher: &Publisher,
    batches: &[Vec<OutgoingMessage>],
    rate: u32,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let total = (f64::from(rate) * duration.as_secs_f64()) as usize;
    let interval = Duration::from_secs(1) / rate;
    let in_flight = Arc::new(Semaphore::new(FIXED_MAX_IN_FLIGHT));
    let started = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..total {
        let scheduled = started + interval * u32::try_from(i)?;
        tokio::time::sleep_until(scheduled).await;
        let permit = in_flight.clone().acquire_owned().await?;
        let (publisher, batch) = (publisher.clone(), batches[i % batches.len()].clone());
        tasks.spawn(async move {
            let ok = publisher.publish_all(batch).await.is_ok();
            drop(permit);
            ok.then(|| scheduled.elapsed())
        });
    }
    let (mut latencies, mut errors) = (Vec::with_capacity(total), 0);
    while let Some(result) = tasks.join_next().await {
        match result? {
            Some(latency) => latencies.push(latency),
            None => errors += 1,
        }
    }
    Ok(measured(latencies, errors, started.elapsed()))
}

/// What one load run measured.
struct Measured {
    rate: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
    /// Every successful request's latency, sorted.
    latencies: Vec<Duration>,
}

fn measured(mut latencies: Vec<Duration>, errors: usize, elapsed: Duration) -> Measured {
    latencies.sort_unstable();
    let at = |q: f64| {
        let index = ((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1);
        latencies.get(index).copied().unwrap_or_default()
    };
    Measured {
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        errors,
        latencies,
    }
}

/// The HTTP load generator, on a runtime of its own (own threads, own connection pool) as a
/// separate client would be: it must not share a scheduler with ingress's broker I/O.
struct HttpClient {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    url: String,
}

impl HttpClient {
    fn new(url: String) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-http-client")
            .enable_all()
            .build()?;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(FIXED_MAX_IN_FLIGHT)
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            runtime,
            client,
            url,
        })
    }

    async fn closed_loop(
        &self,
        bodies: &Arc<Vec<SignedBody>>,
        count: usize,
    ) -> anyhow::Result<Measured> {
        let (client, url, bodies) = (self.client.clone(), self.url.clone(), bodies.clone());
        self.runtime
            .spawn(async move { closed_loop(&client, &url, &bodies, count, CONNECTIONS).await })
            .await?
    }

    async fn open_loop(
        &self,
        bodies: &Arc<Vec<SignedBody>>,
        rate: u32,
        duration: Duration,
    ) -> anyhow::Result<Measured> {
        let (client, url, bodies) = (self.client.clone(), self.url.clone(), bodies.clone());
        self.runtime
            .spawn(async move { open_loop(&client, &url, &bodies, rate, duration).await })
            .await?
    }

    /// Stops the client runtime without blocking the caller's runtime.
    fn shutdown(self) {
        self.runtime.shutdown_background();
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or_default()
}

async fn post(client: &reqwest::Client, url: &str, body: &SignedBody) -> bool {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("X-Hub-Signature-256", &body.signature)
        .body(body.body.clone())
        .send()
        .await;
    match response {
        Ok(response) if response.status() == 200 => response.bytes().await.is_ok(),
        _ => false,
    }
}

/// `count` requests over `connections` keep-alive connections, each sending as fast as answered.
async fn closed_loop(
    client: &reqwest::Client,
    url: &str,
    bodies: &Arc<Vec<SignedBody>>,
    count: usize,
    connections: usize,
) -> anyhow::Result<Measured> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..connections {
        let (client, url, bodies, next) =
            (client.clone(), url.to_owned(), bodies.clone(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return (latencies, errors);
                }
                let sent = Instant::now();
                if post(&client, &url, &bodies[i % bodies.len()]).await {
                    latencies.push(sent.elapsed());
                } else {
                    errors += 1;
                }
            }
        });
    }
    let (mut latencies, mut errors) = (Vec::with_capacity(count), 0);
    while let Some(result) = tasks.join_next().await {
        let (l, e) = result?;
        latencies.extend(l);
        errors += e;
    }
    Ok(measured(latencies, errors, started.elapsed()))
}

/// Requests started on a fixed schedule of `rate` per second for `duration`; latency counts from
/// each request's scheduled start.
async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    bodies: &Arc<Vec<SignedBody>>,
    rate: u32,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let total = (f64::from(rate) * duration.as_secs_f64()) as usize;
    let interval = Duration::from_secs(1) / rate;
    let in_flight = Arc::new(Semaphore::new(FIXED_MAX_IN_FLIGHT));
    let started = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..total {
        let scheduled = started + interval * u32::try_from(i)?;
        tokio::time::sleep_until(scheduled).await;
        let permit = in_flight.clone().acquire_owned().await?;
        let (client, url, bodies) = (client.clone(), url.to_owned(), bodies.clone());
        tasks.spawn(async move {
            let ok = post(&client, &url, &bodies[i % bodies.len()]).await;
            drop(permit);
            ok.then(|| scheduled.elapsed())
        });
    }
    let (mut latencies, mut errors) = (Vec::with_capacity(total), 0);
    while let Some(result) = tasks.join_next().await {
        match result? {
            Some(latency) => latencies.push(latency),
            None => errors += 1,
        }
    }
    Ok(measured(latencies, errors, started.elapsed()))
}

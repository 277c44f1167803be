//! Ingress benchmark: signed webhook POSTs against an in-process ingress on a fresh vhost, beside
//! the broker's raw confirmed-publish rate for exactly the same AMQP messages, in the same run.
//!
//! Method, and why it is a fair comparison:
//! - **Bodies**: Meta's wire form (non-ASCII escaped as `\uXXXX`, signed with the app secret), in
//!   a realistic mix: per 4 requests, 2 status batches of 3 statuses (a broadcast's delivery
//!   reports, one failed with an error), 1 Arabic inbound text with its contact, 1 image with a
//!   caption: 2.0 events per request.
//! - **Ingress** runs as in production: `App::build` with the default worker count (one per core),
//!   its own AMQP connection, the real topology (quorum queues) on a fresh vhost.
//! - **Load**: [`CONNECTIONS`] keep-alive HTTP/1.1 connections, each sending as soon as the last
//!   answer came (closed loop). The generator writes pre-encoded requests (Meta's headers, the
//!   signature, `Content-Length`) and reads each answer's status line, headers and body; only a
//!   200 counts. It runs on its own runtime, and it is deliberately minimal: it shares this
//!   machine's two cores with ingress and the broker, while Meta's client never runs on ours.
//! - **Baseline**: the AMQP messages ingress publishes for each body, built by the same
//!   `prepare_messages` (same bodies, ids, headers including a W3C `traceparent`), published with
//!   `Publisher::publish_all` (confirms, `mandatory`) on a connection of its own to the same
//!   exchange and quorum queues, [`CONNECTIONS`] batches in flight: one batch per request.
//! - **Rounds** alternate baseline and ingress ([`ROUNDS`] each), so a change in the machine's load
//!   (it is shared) hits both sides alike; each side reports its median round.
//! - **CPU**: this process's CPU time per webhook and per raw batch, read from `/proc`, in total and
//!   split by thread group (ingress's HTTP workers, the AMQP I/O threads, the load generator): a
//!   figure that noise on a shared machine moves far less than a rate, and that shows where the
//!   time goes.
//! - **Latency at a fixed rate**: requests start on a fixed schedule of [`FIXED_RATE`] per second
//!   (open loop), and latency counts from each request's scheduled start, so a stalled server
//!   cannot hide its queueing; the raw baseline is measured the same way.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wa_amqp::{OutgoingMessage, Publisher};
use wa_ingress::ingest::{Webhook, prepare_messages};
use wa_ingress::signature::{SIGNATURE_HEADER, escape_non_ascii, sign};
use wa_ingress::{App, Config};
use wa_testkit::broker::TestBroker;

use crate::report::Figure;

const GROUP: &str = "ingress";
const SECRET: &str = "bench-app-secret";
/// Concurrent connections of the full-speed load (and the baseline's window of batches).
const CONNECTIONS: usize = 64;
/// Requests of the full-speed run (and batches of the baseline), over all rounds.
const REQUESTS: usize = 20_000;
/// Alternating baseline/ingress rounds of the throughput comparison.
const ROUNDS: usize = 5;
/// Requests (and raw batches) of the warm-up.
const WARM_UP: usize = 1_000;
/// The fixed rate of the latency run.
const FIXED_RATE: u32 = 2_000;
/// Length of the fixed-rate run.
const FIXED_DURATION: Duration = Duration::from_secs(5);
/// In-flight cap of the fixed-rate run (an open-loop generator still needs a bound).
const FIXED_MAX_IN_FLIGHT: usize = 512;
/// Longest answer head the load generator accepts.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

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
        confirm_timeout: wa_ingress::config::DEFAULT_CONFIRM_TIMEOUT,
        workers,
        shutdown_timeout: Duration::from_secs(5),
    };
    let app = App::build(config).await?;
    let addr = app.local_addr();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until(shutdown.clone()));

    let bodies = signed_bodies();
    let batches = baseline_batches(&bodies)?;
    let messages_per_request =
        batches.iter().map(Vec::len).sum::<usize>() as f64 / batches.len() as f64;
    let publisher = Publisher::connect(&broker.amqp_url, "bench-baseline").await?;
    let client = HttpClient::new(addr, &bodies)?;
    // Warm-up: connections, the publisher's channel, queue leaders, allocator pools.
    client.closed_loop(WARM_UP).await?;
    raw_publish(&publisher, &batches, WARM_UP, CONNECTIONS).await?;

    let per_round = REQUESTS / ROUNDS;
    let (mut baseline_rates, mut http_rates, mut latencies, mut errors) =
        (vec![], vec![], vec![], 0);
    let (mut raw_cpu, mut http_cpu) = (CpuTime::default(), CpuTime::default());
    for _ in 0..ROUNDS {
        let cpu = CpuTime::now();
        baseline_rates.push(raw_publish(&publisher, &batches, per_round, CONNECTIONS).await?);
        raw_cpu.add_since(&cpu);
        let cpu = CpuTime::now();
        let round = client.closed_loop(per_round).await?;
        http_cpu.add_since(&cpu);
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
    let fixed = client.open_loop(FIXED_RATE, FIXED_DURATION).await?;
    publisher.close().await;
    client.shutdown();

    shutdown.cancel();
    running.await??;
    drop(broker);

    let total = (per_round * ROUNDS) as f64;
    let micros_each = |cpu: Duration| cpu.as_secs_f64() * 1e6 / total;
    let ratio = full.rate / baseline;
    let mut figures = vec![
        Figure {
            group: GROUP.into(),
            name: format!(
                "signed webhook requests/s ({CONNECTIONS} connections, {REQUESTS} requests in {ROUNDS} rounds, median)"
            ),
            value: full.rate,
            unit: "req/s".into(),
            baseline_name: Some(format!(
                "raw confirmed publish_all of the same batches/s (window {CONNECTIONS}, {messages_per_request:.2} msgs each, median of alternating rounds)"
            )),
            baseline_value: Some(baseline),
            target: ">= 0.60 of baseline".into(),
            met: ratio >= 0.60 && full.errors == 0,
        },
        latency("p50 latency at full speed", full.p50, None),
        latency("p99 latency at full speed", full.p99, None),
    ];
    if http_cpu.measured {
        let cpu = |name: &str, value: Duration, baseline: Option<(&str, Duration)>| Figure {
            group: GROUP.into(),
            name: name.into(),
            value: micros_each(value),
            unit: "µs".into(),
            baseline_name: baseline.map(|(name, _)| name.to_owned()),
            baseline_value: baseline.map(|(_, value)| micros_each(value)),
            target: "(informative)".into(),
            met: true,
        };
        figures.extend([
            cpu(
                "CPU of this process per webhook request (all threads)",
                http_cpu.total,
                Some(("per raw publish_all batch", raw_cpu.total)),
            ),
            cpu(
                "  of which ingress's HTTP workers (verify, split, publish, answer)",
                http_cpu.http_workers,
                None,
            ),
            cpu(
                "  of which AMQP I/O threads",
                http_cpu.amqp_io,
                Some(("per raw batch", raw_cpu.amqp_io)),
            ),
            cpu(
                "  of which the load generator",
                http_cpu.load_generator,
                None,
            ),
        ]);
    }
    figures.extend([
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
    ]);
    Ok(figures)
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

/// CPU time of this process's threads, in total and for the groups the figures name; read from
/// `/proc/self/task/*/{comm,schedstat}` (nanoseconds, unlike the clock ticks of `/proc/self/stat`).
/// Our threads (runtimes, actix workers, AMQP I/O loops) live for the whole run, so no time is
/// lost with an exited thread. `measured` is false where `/proc` has no such files.
#[derive(Debug, Clone, Default)]
struct CpuTime {
    measured: bool,
    total: Duration,
    /// actix's workers: everything ingress does per request except the AMQP socket I/O.
    http_workers: Duration,
    /// lapin's I/O loops (ingress's and the baseline's connections).
    amqp_io: Duration,
    /// The load generator's runtime.
    load_generator: Duration,
}

impl CpuTime {
    fn now() -> Self {
        let mut cpu = Self::default();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return cpu;
        };
        for task in tasks.flatten() {
            // A thread that exited since the listing has no files any more: it is not counted.
            let (Ok(comm), Ok(stat)) = (
                std::fs::read_to_string(task.path().join("comm")),
                std::fs::read_to_string(task.path().join("schedstat")),
            ) else {
                continue;
            };
            let Some(nanos) = stat.split_whitespace().next().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let time = Duration::from_nanos(nanos);
            cpu.measured = true;
            cpu.total += time;
            // Thread names are cut to 15 bytes by the kernel.
            let comm = comm.trim_end();
            if comm.starts_with("actix-server wo") {
                cpu.http_workers += time;
            } else if comm.starts_with("lapin-io") {
                cpu.amqp_io += time;
            } else if comm.starts_with("bench-http") {
                cpu.load_generator += time;
            }
        }
        cpu
    }

    /// Adds what each group used since `start`.
    fn add_since(&mut self, start: &Self) {
        let now = Self::now();
        self.measured = start.measured && now.measured;
        self.total += now.total.saturating_sub(start.total);
        self.http_workers += now.http_workers.saturating_sub(start.http_workers);
        self.amqp_io += now.amqp_io.saturating_sub(start.amqp_io);
        self.load_generator += now.load_generator.saturating_sub(start.load_generator);
    }
}

/// One signed request body with its header value.
struct SignedBody {
    body: Vec<u8>,
    signature: String,
}

/// The realistic mix: per 4 requests, 2 status batches (3 statuses each), 1 Arabic text, 1 image.
fn signed_bodies() -> Vec<SignedBody> {
    let metadata =
        json!({"display_phone_number": "6221555000111", "phone_number_id": "106540352242922"});
    let envelope = |value: Value| {
        json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398",
            "changes": [{"field": "messages", "value": value}]}]})
    };
    let pricing =
        json!({"billable": true, "pricing_model": "PMP", "type": "regular", "category": "utility"});
    // A departure notice's delivery reports: three jamaah, one of whom has not written for a day.
    let statuses = |batch: usize| {
        let statuses: Vec<Value> = (0..3)
            .map(|i| {
                let mut status = json!({
                    "id": format!("wamid.HBgNNjI4MTIzNDU2Nzg5MBUCABEYEjc3QTFC{batch:02}{i:04}"),
                    "status": "delivered",
                    "timestamp": (1_767_226_000 + i).to_string(),
                    "recipient_id": format!("62812345678{i:02}"),
                    "conversation": {"id": format!("c0ffee{batch:02}{i:04}"), "origin": {"type": "utility"}},
                    "biz_opaque_callback_data": "departure:UMR-2026-03:notice",
                    "pricing": pricing,
                });
                if i == 2 {
                    status["status"] = json!("failed");
                    status["errors"] = json!([{"code": 131047, "title": "Re-engagement message",
                        "message": "Re-engagement message",
                        "error_data": {"details": "More than 24 hours have passed since the recipient last replied to the sender number."}}]);
                }
                status
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

/// Exactly the AMQP batches ingress publishes for each body, with a trace context as ingress
/// always has one (so the baseline carries the same `traceparent` header).
fn baseline_batches(bodies: &[SignedBody]) -> anyhow::Result<Vec<Vec<OutgoingMessage>>> {
    let span_context = SpanContext::new(
        TraceId::from_bytes([0x4b; 16]),
        SpanId::from_bytes([0x5a; 8]),
        TraceFlags::default(),
        false,
        TraceState::default(),
    );
    let cx = opentelemetry::Context::new().with_remote_span_context(span_context);
    let request_id = "019ab3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b";
    bodies
        .iter()
        .map(|b| {
            let webhook = Webhook {
                body: &b.body,
                content_type: Some("application/json"),
                received_at: chrono::Utc::now(),
                request_id,
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
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..window {
        let (publisher, next, batches) = (publisher.clone(), next.clone(), batches.to_vec());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
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

fn median(values: &mut [f64]) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// The HTTP load generator, on a runtime of its own (own threads, own connections) as a separate
/// client would be: it must not share a scheduler with ingress's broker I/O.
struct HttpClient {
    runtime: tokio::runtime::Runtime,
    target: Arc<Target>,
}

/// Where the load goes and what it sends; shared by every load task.
struct Target {
    addr: SocketAddr,
    /// One complete HTTP/1.1 request (head and body) per signed body.
    requests: Vec<Vec<u8>>,
    /// Idle keep-alive connections.
    idle: Mutex<Vec<HttpConnection>>,
}

impl HttpClient {
    fn new(addr: SocketAddr, bodies: &[SignedBody]) -> anyhow::Result<Self> {
        // One thread: the generator's tasks mostly wait on sockets, and a second worker would only
        // add cross-thread wake-ups, CPU taken from the two cores ingress and the broker share.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-http-load")
            .enable_all()
            .build()?;
        let requests = bodies
            .iter()
            .map(|b| encode_request(addr, &b.body, &b.signature))
            .collect();
        let target = Arc::new(Target {
            addr,
            requests,
            idle: Mutex::new(Vec::new()),
        });
        Ok(Self { runtime, target })
    }

    /// `count` requests over [`CONNECTIONS`] keep-alive connections, each sending as fast as
    /// answered.
    async fn closed_loop(&self, count: usize) -> anyhow::Result<Measured> {
        let target = self.target.clone();
        target.forget_idle();
        self.runtime
            .spawn(async move { closed_loop(target, count, CONNECTIONS).await })
            .await?
    }

    async fn open_loop(&self, rate: u32, duration: Duration) -> anyhow::Result<Measured> {
        let target = self.target.clone();
        target.forget_idle();
        self.runtime
            .spawn(async move { open_loop(target, rate, duration).await })
            .await?
    }

    /// Stops the client runtime without blocking the caller's runtime.
    fn shutdown(self) {
        self.runtime.shutdown_background();
    }
}

/// `POST` of `body` as Meta sends it: its user agent, JSON, the signature, a `Content-Length`.
fn encode_request(addr: SocketAddr, body: &[u8], signature: &str) -> Vec<u8> {
    let path = wa_ingress::routes::WEBHOOK_PATH;
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: facebookexternalua\r\nAccept: */*\r\n\
         Accept-Encoding: deflate, gzip\r\nContent-Type: application/json\r\n\
         {SIGNATURE_HEADER}: {signature}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

impl Target {
    /// An idle connection, or a new one.
    async fn connection(&self) -> anyhow::Result<HttpConnection> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        match idle {
            Some(connection) => Ok(connection),
            None => HttpConnection::open(self.addr).await,
        }
    }

    /// Drops every idle connection: between runs they sit idle for longer than the server's
    /// keep-alive, which closes them, so each run starts on fresh connections.
    fn forget_idle(&self) {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    fn release(&self, connection: HttpConnection) {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(connection);
    }

    /// Sends request `i` on `connection`; true for a 200. On anything else the connection is
    /// dropped (the server may have closed it), so the next request opens a fresh one.
    async fn post(&self, connection: &mut Option<HttpConnection>, i: usize) -> bool {
        let request = &self.requests[i % self.requests.len()];
        let mut conn = match connection.take() {
            Some(conn) => conn,
            None => match self.connection().await {
                Ok(conn) => conn,
                Err(_) => return false,
            },
        };
        match conn.exchange(request).await {
            Ok(200) => {
                *connection = Some(conn);
                true
            }
            Ok(_) | Err(_) => false,
        }
    }
}

/// One keep-alive HTTP/1.1 connection of the load generator.
struct HttpConnection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl HttpConnection {
    async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to ingress at {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buffer: Vec::with_capacity(1024),
        })
    }

    /// Writes one request and reads its whole answer; returns the status code.
    async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<u16> {
        self.stream.write_all(request).await?;
        self.buffer.clear();
        let head_end = loop {
            if let Some(at) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            ensure!(
                self.buffer.len() < MAX_RESPONSE_HEAD,
                "answer head over {MAX_RESPONSE_HEAD} bytes"
            );
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buffer[..head_end]).context("answer head")?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.strip_prefix("HTTP/1.1 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok())
            .context("answer has no HTTP/1.1 status line")?;
        let Some(length) = lines.find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        }) else {
            bail!("answer {status} has no Content-Length");
        };
        while self.buffer.len() < head_end + length {
            self.fill().await?;
        }
        ensure!(
            self.buffer.len() == head_end + length,
            "bytes after the answer"
        );
        Ok(status)
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        if self.stream.read_buf(&mut self.buffer).await? == 0 {
            bail!("ingress closed the connection");
        }
        Ok(())
    }
}

/// `count` requests over `connections` keep-alive connections, each sending as fast as answered.
async fn closed_loop(
    target: Arc<Target>,
    count: usize,
    connections: usize,
) -> anyhow::Result<Measured> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..connections {
        let (target, next) = (target.clone(), next.clone());
        tasks.spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0);
            let mut connection = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let sent = Instant::now();
                if target.post(&mut connection, i).await {
                    latencies.push(sent.elapsed());
                } else {
                    errors += 1;
                }
            }
            if let Some(connection) = connection {
                target.release(connection);
            }
            (latencies, errors)
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
async fn open_loop(target: Arc<Target>, rate: u32, duration: Duration) -> anyhow::Result<Measured> {
    let total = (f64::from(rate) * duration.as_secs_f64()) as usize;
    let interval = Duration::from_secs(1) / rate;
    let in_flight = Arc::new(Semaphore::new(FIXED_MAX_IN_FLIGHT));
    let started = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..total {
        let scheduled = started + interval * u32::try_from(i)?;
        tokio::time::sleep_until(scheduled).await;
        let permit = in_flight.clone().acquire_owned().await?;
        let target = target.clone();
        tasks.spawn(async move {
            let mut connection = None;
            let ok = target.post(&mut connection, i).await;
            if let Some(connection) = connection {
                target.release(connection);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_averages_two_events_per_request_and_every_body_is_signed() {
        let bodies = signed_bodies();
        let batches = baseline_batches(&bodies).expect("prepared");
        let events: usize = batches.iter().map(Vec::len).sum();
        assert_eq!(events, 8);
        assert!(
            bodies
                .iter()
                .all(|b| b.body.is_ascii() && b.signature.starts_with("sha256="))
        );
        assert!(batches.iter().flatten().all(|m| {
            m.options
                .trace_context
                .as_ref()
                .is_some_and(|cx| cx.span().span_context().is_valid())
        }));
    }

    #[test]
    fn an_encoded_request_carries_the_signature_and_the_exact_body() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().expect("address");
        let request = encode_request(addr, b"{\"a\":1}", "sha256=00");
        let text = String::from_utf8(request).expect("ascii");
        assert!(text.starts_with("POST /api/v1/whatsapp/webhook HTTP/1.1\r\n"));
        assert!(text.contains("\r\nX-Hub-Signature-256: sha256=00\r\n"));
        assert!(text.ends_with("Content-Length: 7\r\n\r\n{\"a\":1}"));
    }
}

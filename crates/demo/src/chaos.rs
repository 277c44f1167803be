//! `make chaos`: the whole system under a steady load while its parts are killed and restarted,
//! then a reconciliation that fails on any loss.
//!
//! The run owns a private RabbitMQ node and PostgreSQL cluster ([`wa_testkit::private`]), so restarting
//! them disturbs nothing else on the machine. While the platform's send-jobs and Meta's signed
//! inbound webhooks keep coming, it kills the sender and conversation-sync with SIGKILL twice each,
//! stops and starts the broker application, crash-restarts PostgreSQL, and makes graph-mock answer
//! bursts of 500s, 130429s and slow responses. Then it waits for the system to settle and checks,
//! from the platform's queues, graph-mock's request log, the database and the broker:
//! - every job has exactly one final outcome (accepted or failed), and the database agrees;
//! - every accepted job reached graph-mock, with the wamid the outcome names; a job Meta accepted
//!   twice is counted and must fall just before a sender kill (the only case the design allows);
//! - every inbound webhook Meta (here: this driver) got a 200 for is stored exactly once and
//!   notified to an agent;
//! - each message's `outbound.status` steps arrive in order (repeats allowed), and every accepted message
//!   ends `read` (graph-mock's script);
//! - services went unready while the broker or the database was down and recovered by themselves;
//! - nothing is left in any queue but documented dead letters.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Nullable, Text};
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wa_amqp::{Handler, IncomingMessage, Outcome, PublishOptions, Publisher};
use wa_common::contracts::status::DeliveryStatus;
use wa_common::topology::{exchange, queue, routing};

use crate::stack::{Endpoints, Program, Stack, StackConfig, demo_tenant};
use wa_testkit::private::{PrivateBroker, PrivatePostgres};

/// Scripted graph-mock recipient that is accepted but answered only after the slow delay, longer
/// than the sender's Graph timeout: the sender records an unknown outcome, never resends, and
/// settles it from the status webhooks.
const SLOW_RECIPIENT: &str = "+6281100000105";
/// Job id prefix of this run's send-jobs.
const JOB_PREFIX: &str = "chaos-job-";
/// Marker prefix in every inbound text (notifications carry it in their preview).
const INBOUND_MARKER: &str = "chaos-in-";

/// Parameters of one chaos run.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// Logs and broker data.
    pub work_dir: PathBuf,
    /// First of the five service ports.
    pub base_port: u16,
    /// AMQP port of the private broker (management on +10000, distribution on +20000).
    pub amqp_port: u16,
    /// Port of the private PostgreSQL.
    pub postgres_port: u16,
    /// How long the load runs; the faults are spread over it.
    pub load: Duration,
    /// Send-jobs published per second.
    pub jobs_per_second: u32,
    /// Inbound webhooks posted per second.
    pub inbound_per_second: u32,
    /// Longest wait for the system to settle after the load.
    pub settle: Duration,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        Self {
            work_dir: PathBuf::from(".chaos"),
            base_port: 18190,
            amqp_port: 5673,
            postgres_port: 5433,
            load: Duration::from_secs(100),
            jobs_per_second: 20,
            inbound_per_second: 8,
            settle: Duration::from_secs(180),
        }
    }
}

/// What the driver sent and what came back on the platform's queues.
#[derive(Default)]
struct Ledger {
    /// Job id → recipient, for every job whose publish the broker confirmed.
    jobs: BTreeMap<String, String>,
    /// Publishes that failed and were repeated (same job id).
    job_publish_retries: u64,
    /// Inbound wamid → sender wa_id, for every webhook answered 200.
    inbound: BTreeMap<String, String>,
    /// Inbound webhooks delivered a second time on purpose (Meta duplicates).
    inbound_duplicates_sent: u64,
    /// Non-200 answers (or transport errors) to inbound webhooks, by status.
    inbound_rejections: BTreeMap<String, u64>,
    /// Senders whose inbound was stored long enough ago to get a free-form reply.
    reply_candidates: Vec<(String, Instant)>,
    /// Job id → outcomes seen (`accepted` or `failed:<reason>`), in arrival order.
    outcomes: BTreeMap<String, Vec<String>>,
    /// Job id → wamid of its `outbound.accepted`.
    accepted_wamid: BTreeMap<String, String>,
    /// Job id → `outbound.status` steps, in arrival order.
    statuses: BTreeMap<String, Vec<String>>,
    /// Inbound marker → agent notifications seen.
    notifications: BTreeMap<String, u64>,
}

type SharedLedger = Arc<Mutex<Ledger>>;

fn lock(ledger: &SharedLedger) -> std::sync::MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The platform's consumer of outcomes and notifications.
struct Collector {
    ledger: SharedLedger,
}

impl Handler for Collector {
    async fn handle(&self, msg: IncomingMessage) -> Outcome {
        let Ok(body) = serde_json::from_slice::<Value>(&msg.body) else {
            return Outcome::dead_letter("invalid_json", "chaos collector could not parse it");
        };
        let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
        let mut ledger = lock(&self.ledger);
        match msg.routing_key.as_str() {
            routing::OUTBOUND_ACCEPTED => {
                if let (Some(job), Some(wamid)) = (text("job_id"), text("wa_message_id")) {
                    ledger
                        .outcomes
                        .entry(job.clone())
                        .or_default()
                        .push("accepted".into());
                    ledger.accepted_wamid.insert(job, wamid);
                }
            }
            routing::OUTBOUND_FAILED => {
                if let Some(job) = text("job_id") {
                    let reason = text("reason").unwrap_or_default();
                    ledger
                        .outcomes
                        .entry(job)
                        .or_default()
                        .push(format!("failed:{reason}"));
                }
            }
            routing::OUTBOUND_STATUS => {
                if let (Some(job), Some(status)) = (text("job_id"), text("status")) {
                    ledger.statuses.entry(job).or_default().push(status);
                }
            }
            routing::AGENT_NOTIFICATION => {
                let preview = text("message").unwrap_or_default();
                if let Some(start) = preview.find(INBOUND_MARKER) {
                    let marker: String =
                        preview[start..].chars().take_while(|c| *c != ']').collect();
                    *ledger.notifications.entry(marker).or_default() += 1;
                }
            }
            _ => {}
        }
        Outcome::Ack
    }
}

/// A fault that was injected, for the report.
struct FaultRecord {
    at: Duration,
    what: String,
}

/// How services behaved during an outage.
#[derive(Default)]
struct OutageObservation {
    /// Services seen unready (or not answering) while it was down.
    went_unready: BTreeSet<&'static str>,
    /// Seconds from the end of the outage until each service was ready again.
    recovered_after: BTreeMap<&'static str, f64>,
}

struct Timeline {
    started: Instant,
    faults: Vec<FaultRecord>,
    sender_kills: Vec<DateTime<Utc>>,
    broker: OutageObservation,
    database: OutageObservation,
}

impl Timeline {
    fn note(&mut self, what: impl Into<String>) {
        let what = what.into();
        let at = self.started.elapsed();
        eprintln!("[chaos {:>5.1}s] {what}", at.as_secs_f64());
        self.faults.push(FaultRecord { at, what });
    }
}

/// Runs the chaos scenario; `Ok(report)` with `report.passed()` false when something was lost.
pub async fn run(config: ChaosConfig) -> anyhow::Result<ChaosReport> {
    std::fs::create_dir_all(&config.work_dir)?;
    let work_dir = std::path::absolute(&config.work_dir)?;
    eprintln!(
        "starting a private RabbitMQ node (:{}) and PostgreSQL (:{}) ...",
        config.amqp_port, config.postgres_port
    );
    let broker = PrivateBroker::start("wa-chaos", config.amqp_port, &work_dir.join("rabbitmq"))
        .await
        .context("starting the private RabbitMQ node")?;
    let postgres = PrivatePostgres::start(
        config.postgres_port,
        &std::env::temp_dir().join(format!("wa-chaos-pg-{}", config.postgres_port)),
    )
    .await
    .context("starting the private PostgreSQL")?;

    let mut extra_env = BTreeMap::new();
    for (key, value) in [
        // Shorter than the slow recipient's answer: exercises the unknown-outcome path.
        ("SENDER_GRAPH_TIMEOUT_MS", "2000"),
        ("GRAPH_MOCK_SLOW_DELAY_MS", "3000"),
        // Meta retries webhooks for days; graph-mock's default gives up after 5 attempts.
        ("GRAPH_MOCK_WEBHOOK_MAX_ATTEMPTS", "40"),
        ("GRAPH_MOCK_STATUS_DELAY_MS", "300"),
        // A sender killed between claiming a job and recording Meta's answer leaves its outcome
        // unknown; it is never resent, and without a status webhook it fails after this timeout
        // (600 s in production), shortened so the run settles.
        ("SENDER_UNKNOWN_OUTCOME_TIMEOUT_SECS", "30"),
        ("SENDER_SETTLE_INTERVAL_MS", "3000"),
        ("RUST_LOG", "info"),
    ] {
        extra_env.insert(key.to_owned(), value.to_owned());
    }
    let stack_config = StackConfig {
        base_port: config.base_port,
        vhost: "whatsapp-chaos".into(),
        database: "whatsapp_chaos".into(),
        work_dir: work_dir.clone(),
        extra_env,
        endpoints: Endpoints {
            amqp_port: broker.amqp_port,
            postgres_port: postgres.port,
            management_api: broker.management_api(),
        },
    };
    eprintln!("starting graph-mock and the four services ...");
    let mut stack = Stack::start(stack_config, &Program::ALL).await?;

    let ledger: SharedLedger = Arc::default();
    let stop_collectors = CancellationToken::new();
    let collectors = start_collectors(&stack, &ledger, &stop_collectors).await?;
    let publisher = Publisher::connect(&stack.config.amqp_url(), "wa-chaos-platform").await?;

    let mut timeline = Timeline {
        started: Instant::now(),
        faults: Vec::new(),
        sender_kills: Vec::new(),
        broker: OutageObservation::default(),
        database: OutageObservation::default(),
    };
    let load_until = timeline.started + config.load;
    let stop_retrying = CancellationToken::new();
    let mut load = JoinSet::new();
    load.spawn(publish_jobs(
        publisher.clone(),
        ledger.clone(),
        config.jobs_per_second,
        load_until,
    ));
    load.spawn(post_inbound(
        stack.config.url(Program::Ingress),
        ledger.clone(),
        config.inbound_per_second,
        load_until,
        stop_retrying.clone(),
    ));

    inject_faults(&mut stack, &broker, &postgres, &mut timeline, config.load).await?;
    while let Some(result) = load.join_next().await {
        result??;
    }
    timeline.note("load finished; waiting for the system to settle");

    let settled = settle(&stack, &ledger, config.settle).await?;
    timeline.note(if settled {
        "settled"
    } else {
        "did not settle in time; reconciling what is there"
    });
    stop_retrying.cancel();
    let report = reconcile(&stack, &ledger, &timeline).await?;

    stop_collectors.cancel();
    for task in collectors {
        let _ = task.await;
    }
    publisher.close().await;
    stack.shutdown().await?;
    drop(postgres);
    drop(broker);
    Ok(report)
}

async fn start_collectors(
    stack: &Stack,
    ledger: &SharedLedger,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let connection =
        Arc::new(wa_amqp::connect(&stack.config.amqp_url(), "wa-chaos-collector").await?);
    let mut tasks = Vec::new();
    // One at a time on outcomes, so status steps are seen in the order they were published.
    for (name, concurrency) in [
        (queue::PLATFORM_OUTCOMES, 1),
        (queue::PLATFORM_NOTIFICATIONS, 4),
    ] {
        let handler = Arc::new(Collector {
            ledger: ledger.clone(),
        });
        let connection = connection.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(error) =
                wa_amqp::run_consumer(&connection, name, 200, concurrency, handler, stop).await
            {
                eprintln!("chaos collector on {name} stopped: {error}");
            }
        }));
    }
    Ok(tasks)
}

/// The platform: publishes send-jobs at a steady rate with publisher confirms, repeating a publish
/// (same job id) until the broker confirms it.
async fn publish_jobs(
    publisher: Publisher,
    ledger: SharedLedger,
    per_second: u32,
    until: Instant,
) -> anyhow::Result<()> {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(per_second)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut index: u64 = 0;
    while Instant::now() < until {
        ticker.tick().await;
        index += 1;
        let job_id = format!("{JOB_PREFIX}{index:06}");
        let reply_to = (index % 10 == 5)
            .then(|| take_reply_candidate(&ledger))
            .flatten();
        let (to, job) = if index.is_multiple_of(250) {
            let to = SLOW_RECIPIENT.to_owned();
            (to.clone(), template_job(&job_id, &to, "transactional"))
        } else if let Some(to) = reply_to {
            (to.clone(), text_job(&job_id, &to))
        } else {
            let to = format!("+62812{:08}", 10_000_000 + index);
            let priority = if index.is_multiple_of(4) {
                "bulk"
            } else {
                "transactional"
            };
            (to.clone(), template_job(&job_id, &to, priority))
        };
        let options = PublishOptions {
            message_id: Some(job_id.clone()),
            tenant_id: Some(demo_tenant::TENANT_ID.into()),
            ..Default::default()
        };
        loop {
            match publisher
                .publish_json(exchange::COMMANDS, routing::SEND, &job, options.clone())
                .await
            {
                Ok(_) => break,
                Err(_) => {
                    lock(&ledger).job_publish_retries += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        lock(&ledger).jobs.insert(job_id, to);
    }
    Ok(())
}

/// A sender whose inbound message was acknowledged at least 5 s ago (so the sender has learned
/// the open window), removed from the candidates.
fn take_reply_candidate(ledger: &SharedLedger) -> Option<String> {
    let mut ledger = lock(ledger);
    let ready = ledger
        .reply_candidates
        .iter()
        .position(|(_, at)| at.elapsed() >= Duration::from_secs(5))?;
    Some(format!("+{}", ledger.reply_candidates.remove(ready).0))
}

/// A valid send-job for the `payment_reminder` template (the demo tenant's, approved in graph-mock),
/// as the platform publishes it to `whatsapp.commands`/`send`.
pub fn template_job(job_id: &str, to: &str, priority: &str) -> Value {
    json!({
        "job_id": job_id,
        "tenant_id": demo_tenant::TENANT_ID,
        "to": to,
        "priority": priority,
        "reference": {"kind": "payment_reminder", "id": job_id},
        "message": {"type": "template", "template": {
            "name": "payment_reminder",
            "language": {"code": "id"},
            "components": [{"type": "body", "parameters": [
                {"type": "text", "text": "Siti Aminah"},
                {"type": "text", "text": "Umrah Reguler Desember 2026"},
                {"type": "text", "text": "05 Des 2026"},
                {"type": "text", "text": "1.500.000"},
                {"type": "text", "text": "Ustadz Ahmad"},
                {"type": "text", "text": "+62 811-2233-4455"}
            ]}]
        }}
    })
}

fn text_job(job_id: &str, to: &str) -> Value {
    json!({
        "job_id": job_id,
        "tenant_id": demo_tenant::TENANT_ID,
        "to": to,
        "priority": "interactive",
        "reference": {"kind": "agent_reply", "id": job_id},
        "message": {"type": "text", "text": {"body": "Wa'alaikumsalam, pembayaran cicilan sudah kami terima. Terima kasih 🙏"}}
    })
}

/// Meta's webhook for one inbound text message from `wa_id` to the demo tenant's number: the raw
/// body (escaped as Meta escapes it) and its `X-Hub-Signature-256` value.
pub fn signed_inbound_text(wa_id: &str, wamid: &str, name: &str, text: &str) -> (Vec<u8>, String) {
    let value = json!({
        "contacts": [{"profile": {"name": name}, "wa_id": wa_id}],
        "messages": [{
            "from": wa_id, "id": wamid, "timestamp": Utc::now().timestamp().to_string(),
            "type": "text", "text": {"body": text}
        }]
    });
    let envelope = wa_graph_mock::webhook::messages_envelope(
        demo_tenant::WABA_ID,
        demo_tenant::PHONE_NUMBER_ID,
        "15550001234",
        value,
    );
    let body = wa_graph_mock::webhook::to_meta_json(&envelope);
    let signature = wa_graph_mock::webhook::sign(demo_tenant::APP_SECRET, &body);
    (body, signature)
}

/// Meta: posts signed inbound-message webhooks at a steady rate, each retried until answered 200
/// (Meta retries for days); every fifth is delivered a second time after its 200.
async fn post_inbound(
    ingress: String,
    ledger: SharedLedger,
    per_second: u32,
    until: Instant,
    give_up: CancellationToken,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = format!("{ingress}/api/v1/whatsapp/webhook");
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(per_second)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut deliveries = JoinSet::new();
    let mut index: u64 = 0;
    while Instant::now() < until {
        ticker.tick().await;
        index += 1;
        let wa_id = format!("62813{:08}", 10_000_000 + index);
        let wamid = format!("wamid.CHAOS-IN-{index:06}");
        let marker = format!("{INBOUND_MARKER}{index:06}");
        let (body, signature) = signed_inbound_text(
            &wa_id,
            &wamid,
            &format!("Jamaah {index}"),
            &format!(
                "[{marker}] Assalamualaikum, cicilan ke-{} sudah saya transfer 🙏",
                index % 12 + 1
            ),
        );
        let (http, url, ledger, give_up) =
            (http.clone(), url.clone(), ledger.clone(), give_up.clone());
        let duplicate = index.is_multiple_of(5);
        deliveries.spawn(async move {
            let times = if duplicate { 2 } else { 1 };
            for delivery in 0..times {
                if !deliver(&http, &url, &body, &signature, &ledger, &give_up).await {
                    return;
                }
                let mut ledger = lock(&ledger);
                if delivery == 0 {
                    ledger.inbound.insert(wamid.clone(), wa_id.clone());
                    ledger
                        .reply_candidates
                        .push((wa_id.clone(), Instant::now()));
                } else {
                    ledger.inbound_duplicates_sent += 1;
                }
            }
        });
    }
    while deliveries.join_next().await.is_some() {}
    Ok(())
}

/// POSTs until a 200 (false when told to give up first).
async fn deliver(
    http: &reqwest::Client,
    url: &str,
    body: &[u8],
    signature: &str,
    ledger: &SharedLedger,
    give_up: &CancellationToken,
) -> bool {
    let mut backoff = Duration::from_millis(250);
    loop {
        let answer = http
            .post(url)
            .header("content-type", "application/json")
            .header(wa_graph_mock::webhook::SIGNATURE_HEADER, signature)
            .body(body.to_vec())
            .send()
            .await;
        let rejection = match answer {
            Ok(response) if response.status().as_u16() == 200 => return true,
            Ok(response) => response.status().as_u16().to_string(),
            Err(_) => "no answer".to_owned(),
        };
        *lock(ledger)
            .inbound_rejections
            .entry(rejection)
            .or_default() += 1;
        tokio::select! {
            () = give_up.cancelled() => return false,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(4));
    }
}

/// The fault schedule, spread over the load: kills, broker and database restarts, Graph bursts.
async fn inject_faults(
    stack: &mut Stack,
    broker: &PrivateBroker,
    postgres: &PrivatePostgres,
    timeline: &mut Timeline,
    load: Duration,
) -> anyhow::Result<()> {
    let started = timeline.started;
    let at = |fraction: f64| started + load.mul_f64(fraction);
    let http = reqwest::Client::new();
    let faults_url = format!("{}/_mock/faults", stack.config.url(Program::GraphMock));
    let graph_fault = |spec: Value| {
        let (http, url) = (http.clone(), faults_url.clone());
        async move {
            http.post(url)
                .json(&spec)
                .send()
                .await?
                .error_for_status()?;
            anyhow::Ok(())
        }
    };

    tokio::time::sleep_until(at(0.08)).await;
    kill_and_restart(stack, Program::Sender, timeline).await?;
    tokio::time::sleep_until(at(0.16)).await;
    kill_and_restart(stack, Program::ConversationSync, timeline).await?;

    tokio::time::sleep_until(at(0.24)).await;
    graph_fault(json!({"mode": "error", "code": 131000, "http_status": 500, "count": 60})).await?;
    timeline.note("graph-mock: the next 60 sends get HTTP 500 (131000)");

    tokio::time::sleep_until(at(0.32)).await;
    timeline.note("RabbitMQ: stop_app");
    broker.stop_app().await?;
    let watched = [Program::Ingress, Program::Sender, Program::ConversationSync];
    timeline.broker.went_unready = watch_unready(stack, &watched, Duration::from_secs(8)).await;
    broker.start_app().await?;
    timeline.note("RabbitMQ: start_app");
    timeline.broker.recovered_after = wait_recovered(stack, &watched).await;

    tokio::time::sleep_until(at(0.50)).await;
    graph_fault(json!({"mode": "throttle", "count": 60})).await?;
    timeline.note("graph-mock: the next 60 sends get 130429 (throughput limit)");

    tokio::time::sleep_until(at(0.58)).await;
    kill_and_restart(stack, Program::Sender, timeline).await?;
    tokio::time::sleep_until(at(0.66)).await;
    kill_and_restart(stack, Program::ConversationSync, timeline).await?;

    tokio::time::sleep_until(at(0.74)).await;
    timeline.note("PostgreSQL: immediate stop (crash), 4 s down, start");
    let watched = [Program::Sender, Program::ConversationSync];
    let (restarted, unready) = tokio::join!(
        postgres.crash_restart(Duration::from_secs(4)),
        watch_unready(stack, &watched, Duration::from_secs(4)),
    );
    restarted?;
    timeline.database.went_unready = unready;
    timeline.database.recovered_after = wait_recovered(stack, &watched).await;

    tokio::time::sleep_until(at(0.86)).await;
    graph_fault(json!({"mode": "slow", "delay_ms": 1500, "count": 60})).await?;
    timeline.note("graph-mock: the next 60 sends answer after 1.5 s");
    Ok(())
}

async fn kill_and_restart(
    stack: &mut Stack,
    program: Program,
    timeline: &mut Timeline,
) -> anyhow::Result<()> {
    if program == Program::Sender {
        timeline.sender_kills.push(Utc::now());
    }
    stack.kill(program).await?;
    timeline.note(format!("kill -9 {}", program.binary()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.spawn(program).await?;
    timeline.note(format!("{} restarted and ready", program.binary()));
    Ok(())
}

/// Polls `/readyz` for `window`; returns the services seen unready (or not answering) at least once.
async fn watch_unready(
    stack: &Stack,
    programs: &[Program],
    window: Duration,
) -> BTreeSet<&'static str> {
    let mut unready = BTreeSet::new();
    let until = Instant::now() + window;
    while Instant::now() < until {
        for program in programs {
            if stack.is_ready(*program).await != Some(true) {
                unready.insert(program.binary());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    unready
}

/// Seconds until each service answers `/readyz` 200 again (absent: not within 120 s).
async fn wait_recovered(stack: &Stack, programs: &[Program]) -> BTreeMap<&'static str, f64> {
    let started = Instant::now();
    let mut recovered = BTreeMap::new();
    while recovered.len() < programs.len() && started.elapsed() < Duration::from_secs(120) {
        for program in programs {
            if !recovered.contains_key(program.binary())
                && stack.is_ready(*program).await == Some(true)
            {
                recovered.insert(program.binary(), started.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    recovered
}

/// What the database holds about one send-job.
#[derive(QueryableByName)]
struct JobRow {
    #[diesel(sql_type = Text)]
    job_id: String,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Nullable<Text>)]
    wa_message_id: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    failure_reason: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    failure_detail: Option<String>,
}

#[derive(QueryableByName)]
struct InboundRow {
    #[diesel(sql_type = Text)]
    wa_message_id: String,
    #[diesel(sql_type = BigInt)]
    copies: i64,
}

#[derive(QueryableByName)]
struct OutboundRow {
    #[diesel(sql_type = Text)]
    job_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    current_status: Option<String>,
    /// Every status recorded for the message.
    #[diesel(sql_type = Array<Text>)]
    history: Vec<String>,
}

impl OutboundRow {
    /// The most advanced status of the history (what the current status must be).
    fn best_recorded(&self) -> Option<&str> {
        self.history
            .iter()
            .max_by_key(|status| rank(status))
            .map(String::as_str)
    }
}

/// What the database and the broker hold: read on every settle poll and for the checks.
struct Snapshot {
    jobs: BTreeMap<String, JobRow>,
    inbound_rows: BTreeMap<String, i64>,
    outbound: BTreeMap<String, OutboundRow>,
    /// Queue name → messages ready or unacked.
    queues: BTreeMap<String, u64>,
}

async fn snapshot(stack: &Stack) -> anyhow::Result<Snapshot> {
    let mut conn = wa_db::AsyncPgConnection::establish(&stack.config.database_url()).await?;
    let jobs: Vec<JobRow> = diesel::sql_query(
        "SELECT job_id, state, wa_message_id, attempts, failure_reason, failure_detail FROM send_jobs \
         WHERE job_id LIKE 'chaos-job-%'",
    )
    .load(&mut conn)
    .await?;
    let inbound: Vec<InboundRow> = diesel::sql_query(
        "SELECT wa_message_id, count(*) AS copies FROM messages \
         WHERE direction = 'inbound' AND wa_message_id LIKE 'wamid.CHAOS-IN-%' GROUP BY wa_message_id",
    )
    .load(&mut conn)
    .await?;
    let outbound: Vec<OutboundRow> = diesel::sql_query(
        "SELECT m.job_id, m.current_status, \
           coalesce(array_agg(s.status) FILTER (WHERE s.status IS NOT NULL), '{}') AS history \
         FROM messages m LEFT JOIN message_statuses s \
           ON s.tenant_id = m.tenant_id AND s.wa_message_id = m.wa_message_id \
         WHERE m.direction = 'outbound' AND m.job_id LIKE 'chaos-job-%' \
         GROUP BY m.id, m.job_id, m.current_status",
    )
    .load(&mut conn)
    .await?;

    let queues: Value = reqwest::Client::new()
        .get(format!(
            "{}/queues/{}?columns=name,messages",
            stack.config.endpoints.management_api, stack.config.vhost
        ))
        .basic_auth("guest", Some("guest"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let queues = queues
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|q| {
            Some((
                q.get("name")?.as_str()?.to_owned(),
                q.get("messages").and_then(Value::as_u64).unwrap_or(0),
            ))
        })
        .collect();

    Ok(Snapshot {
        jobs: jobs.into_iter().map(|r| (r.job_id.clone(), r)).collect(),
        inbound_rows: inbound
            .into_iter()
            .map(|r| (r.wa_message_id, r.copies))
            .collect(),
        outbound: outbound
            .into_iter()
            .map(|r| (r.job_id.clone(), r))
            .collect(),
        queues,
    })
}

/// What graph-mock's request log says about the sends (read once, for the checks).
struct GraphCalls {
    /// Job id → accepted Graph calls (wamids).
    accepted: BTreeMap<String, Vec<(DateTime<Utc>, String)>>,
    /// Graph calls answered with an error.
    errors: u64,
}

async fn graph_calls(stack: &Stack) -> anyhow::Result<GraphCalls> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let requests: Value = http
        .get(format!(
            "{}/_mock/requests?path_contains=/messages&method=POST",
            stack.config.url(Program::GraphMock)
        ))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut accepted: BTreeMap<String, Vec<(DateTime<Utc>, String)>> = BTreeMap::new();
    let mut errors = 0;
    for request in requests
        .get("requests")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(job) = request
            .pointer("/body/biz_opaque_callback_data")
            .and_then(Value::as_str)
            .and_then(|data| data.strip_prefix("wa-sender:"))
        else {
            continue;
        };
        let status = request.get("status").and_then(Value::as_u64).unwrap_or(0);
        match request.get("wamid").and_then(Value::as_str) {
            Some(wamid) if status == 200 => {
                let at = request
                    .get("received_at")
                    .and_then(Value::as_str)
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map_or_else(Utc::now, |t| t.with_timezone(&Utc));
                accepted
                    .entry(job.to_owned())
                    .or_default()
                    .push((at, wamid.to_owned()));
            }
            _ => errors += 1,
        }
    }

    Ok(GraphCalls { accepted, errors })
}

/// Queues that may hold messages at the end: dead letters (reported with their count) and the
/// audit holding queue of webhook fields no service consumes.
fn may_hold_messages(name: &str) -> bool {
    name.ends_with(wa_common::topology::DEAD_LETTER_SUFFIX) || name == queue::INBOUND_OTHER
}

/// Waits until every job has an outcome, every inbound webhook a row, every accepted message its
/// final status and every work queue is empty; false when `limit` passes first.
async fn settle(stack: &Stack, ledger: &SharedLedger, limit: Duration) -> anyhow::Result<bool> {
    let until = Instant::now() + limit;
    loop {
        let snap = snapshot(stack).await?;
        let pending = {
            let ledger = lock(ledger);
            let outcomes = ledger
                .jobs
                .keys()
                .filter(|job| !ledger.outcomes.contains_key(*job))
                .count();
            let inbound = ledger
                .inbound
                .keys()
                .filter(|wamid| !snap.inbound_rows.contains_key(*wamid))
                .count();
            let statuses = ledger
                .accepted_wamid
                .keys()
                .filter(|job| {
                    snap.outbound
                        .get(*job)
                        .and_then(|row| row.current_status.as_deref())
                        != Some("read")
                })
                .count();
            let queued: u64 = snap
                .queues
                .iter()
                .filter(|(name, _)| !may_hold_messages(name))
                .map(|(_, n)| n)
                .sum();
            [
                ("jobs without an outcome", outcomes as u64),
                ("inbound webhooks not stored", inbound as u64),
                ("accepted messages not yet read", statuses as u64),
                ("messages in work queues", queued),
            ]
        };
        if pending.iter().all(|(_, n)| *n == 0) {
            return Ok(true);
        }
        if Instant::now() > until {
            return Ok(false);
        }
        let waiting: Vec<String> = pending
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(what, n)| format!("{n} {what}"))
            .collect();
        eprintln!("[chaos] settling: {}", waiting.join(", "));
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

/// The reconciliation: counts and the violations among them.
pub struct ChaosReport {
    /// Human-readable counts, one per line.
    pub lines: Vec<String>,
    /// What was lost, duplicated or stuck; empty when the run passed.
    pub violations: Vec<String>,
}

impl ChaosReport {
    /// True when nothing was lost.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The report as text.
    pub fn render(&self) -> String {
        let mut out = String::from("\n=== chaos reconciliation ===\n");
        for line in &self.lines {
            let _ = writeln!(out, "  {line}");
        }
        if self.violations.is_empty() {
            out.push_str("\nPASSED: nothing lost, nothing sent twice, nothing stuck\n");
        } else {
            let _ = writeln!(out, "\nFAILED: {} violation(s)", self.violations.len());
            for violation in self.violations.iter().take(50) {
                let _ = writeln!(out, "  - {violation}");
            }
        }
        out
    }
}

/// The project's order of statuses ([`DeliveryStatus::rank`]); 0 for a word that is none.
fn rank(status: &str) -> u8 {
    DeliveryStatus::from_meta(status).map_or(0, DeliveryStatus::rank)
}

async fn reconcile(
    stack: &Stack,
    ledger: &SharedLedger,
    timeline: &Timeline,
) -> anyhow::Result<ChaosReport> {
    let snap = snapshot(stack).await?;
    let graph = graph_calls(stack).await?;
    let ledger = lock(ledger);
    let mut lines = Vec::new();
    let mut violations = Vec::new();

    lines.push("faults injected:".to_owned());
    for fault in &timeline.faults {
        lines.push(format!(
            "  {:>6.1}s  {}",
            fault.at.as_secs_f64(),
            fault.what
        ));
    }
    for (name, outage) in [
        ("RabbitMQ stop_app", &timeline.broker),
        ("PostgreSQL crash", &timeline.database),
    ] {
        let recovered: Vec<String> = outage
            .recovered_after
            .iter()
            .map(|(service, secs)| format!("{service} {secs:.1} s"))
            .collect();
        lines.push(format!(
            "{name}: unready while down: [{}]; ready again after: [{}]",
            outage
                .went_unready
                .iter()
                .copied()
                .collect::<Vec<_>>()
                .join(", "),
            recovered.join(", ")
        ));
    }
    let broker_watch = ["ingress", "sender", "conversation-sync"];
    let database_watch = ["sender", "conversation-sync"];
    for (name, outage, watched) in [
        ("broker", &timeline.broker, &broker_watch[..]),
        ("database", &timeline.database, &database_watch[..]),
    ] {
        for service in watched {
            if !outage.went_unready.contains(service) {
                violations.push(format!("{service} stayed ready while the {name} was down"));
            }
            if !outage.recovered_after.contains_key(service) {
                violations.push(format!(
                    "{service} did not become ready within 120 s after the {name} came back"
                ));
            }
        }
    }

    // Jobs: exactly one final outcome each, agreeing with the database and graph-mock.
    let mut by_outcome: BTreeMap<String, u64> = BTreeMap::new();
    let mut repeated_outcome_events = 0;
    let mut duplicates_explained = 0;
    for (job, to) in &ledger.jobs {
        let seen = ledger.outcomes.get(job).map(Vec::as_slice).unwrap_or(&[]);
        let distinct: BTreeSet<&String> = seen.iter().collect();
        repeated_outcome_events += seen.len().saturating_sub(distinct.len());
        match distinct.len() {
            0 => {
                let row = snap.jobs.get(job).map_or_else(
                    || "no row in send_jobs".to_owned(),
                    |r| {
                        format!(
                            "row state {} after {} attempt(s), failure {:?}",
                            r.state, r.attempts, r.failure_reason
                        )
                    },
                );
                let calls = graph.accepted.get(job).map_or(0, Vec::len);
                violations.push(format!(
                    "{job} (to {to}) has no outcome: {row}; accepted Graph calls: {calls}"
                ));
            }
            1 => {}
            _ => violations.push(format!("{job} has conflicting outcomes {seen:?}")),
        }
        if let Some(first) = seen.first() {
            let kind = first.split(':').next().unwrap_or(first);
            *by_outcome.entry(first.clone()).or_default() += 1;
            let row = snap.jobs.get(job);
            match row.map(|r| r.state.as_str()) {
                Some(state) if state == kind => {}
                other => violations.push(format!(
                    "{job}: outcome {first} but the sender's row is {other:?}"
                )),
            }
        }
        let calls = graph.accepted.get(job).map(Vec::as_slice).unwrap_or(&[]);
        if let Some(wamid) = ledger.accepted_wamid.get(job) {
            if !calls.iter().any(|(_, w)| w == wamid) {
                violations.push(format!(
                    "{job} was reported accepted as {wamid}, which graph-mock never handed out"
                ));
            }
            if snap.jobs.get(job).and_then(|r| r.wa_message_id.as_ref()) != Some(wamid) {
                violations.push(format!("{job}: the sender's row has another wamid"));
            }
        } else if !calls.is_empty() && seen.iter().any(|o| o.starts_with("failed")) {
            violations.push(format!(
                "{job} was accepted by graph-mock but reported failed"
            ));
        }
        if calls.len() > 1 {
            // Allowed only when a sender was killed between the Graph call and recording it.
            let first_call = calls[0].0;
            let near_kill = timeline.sender_kills.iter().any(|kill| {
                *kill >= first_call && (*kill - first_call) < chrono::Duration::seconds(30)
            });
            if near_kill {
                duplicates_explained += 1;
            } else {
                violations.push(format!(
                    "{job} was accepted by graph-mock {} times, not around a sender kill",
                    calls.len()
                ));
            }
        }
    }
    let stray_calls = graph
        .accepted
        .keys()
        .filter(|job| job.starts_with(JOB_PREFIX) && !ledger.jobs.contains_key(*job))
        .count();
    if stray_calls > 0 {
        violations.push(format!(
            "{stray_calls} jobs reached graph-mock that the platform never got a confirm for"
        ));
    }
    lines.push(format!(
        "send-jobs published (confirmed): {} (publishes repeated after a broker error: {})",
        ledger.jobs.len(),
        ledger.job_publish_retries
    ));
    lines.push(format!("final outcomes: {by_outcome:?}"));
    lines.push(format!(
        "outcome events delivered more than once (at-least-once, same outcome): {repeated_outcome_events}"
    ));
    let unknown_failed = snap
        .jobs
        .values()
        .filter(|row| {
            row.failure_detail
                .as_deref()
                .is_some_and(|d| d.starts_with("outcome unknown"))
        })
        .count();
    let slow_accepted = ledger
        .jobs
        .iter()
        .filter(|(job, to)| *to == SLOW_RECIPIENT && ledger.accepted_wamid.contains_key(*job))
        .count();
    lines.push(format!(
        "Graph answer lost (timeout) but accepted, settled from the status webhooks without resending: {slow_accepted}"
    ));
    lines.push(format!(
        "outcome unknown (sender killed mid-send, no status ever came), failed after the timeout, not resent: {unknown_failed}"
    ));
    lines.push(format!(
        "Graph calls answered with an error (retried or failed): {}",
        graph.errors
    ));
    lines.push(format!(
        "jobs accepted by graph-mock more than once: {duplicates_explained} (all just before a sender kill)"
    ));

    // Inbound: every acknowledged webhook stored exactly once and notified.
    let mut missing_notifications = 0;
    let mut repeated_notifications = 0;
    for (wamid, from) in &ledger.inbound {
        match snap.inbound_rows.get(wamid) {
            None => violations.push(format!(
                "inbound {wamid} from +{from} was answered 200 but is not stored"
            )),
            Some(1) => {}
            Some(n) => violations.push(format!("inbound {wamid} is stored {n} times")),
        }
        let marker = wamid.replace("wamid.CHAOS-IN-", INBOUND_MARKER);
        match ledger.notifications.get(&marker).copied().unwrap_or(0) {
            0 => missing_notifications += 1,
            1 => {}
            _ => repeated_notifications += 1,
        }
    }
    if missing_notifications > 0 {
        violations.push(format!(
            "{missing_notifications} stored inbound messages were never notified to an agent"
        ));
    }
    lines.push(format!(
        "inbound webhooks answered 200: {} (plus {} deliberate duplicate deliveries); rows stored: {}",
        ledger.inbound.len(),
        ledger.inbound_duplicates_sent,
        snap.inbound_rows.len()
    ));
    lines.push(format!(
        "inbound webhooks refused and retried by Meta: {:?}",
        ledger.inbound_rejections
    ));
    lines.push(format!(
        "agent notifications: {} distinct; delivered more than once: {repeated_notifications}",
        ledger.notifications.len()
    ));

    // Statuses: each message's steps arrive in order (a step published again after a crash, at
    // least once, is a repeat, not a step back), and each accepted message ends where
    // graph-mock's script ends.
    let mut steps = 0;
    let mut repeated_steps = 0;
    for (job, statuses) in &ledger.statuses {
        steps += statuses.len();
        let mut seen = BTreeSet::new();
        let mut best = 0;
        for status in statuses {
            if !seen.insert(status.as_str()) {
                repeated_steps += 1;
                continue;
            }
            if rank(status) < best {
                violations.push(format!(
                    "{job}: outbound.status arrived out of order: {statuses:?}"
                ));
            }
            best = best.max(rank(status));
        }
    }
    let mut not_read = 0;
    for job in ledger.accepted_wamid.keys() {
        match snap.outbound.get(job) {
            None => violations.push(format!("accepted {job} is missing from the history")),
            Some(row) => {
                if row.current_status.as_deref() != row.best_recorded() {
                    violations.push(format!(
                        "{job}: current status {:?} but the history's best is {:?}",
                        row.current_status,
                        row.best_recorded()
                    ));
                }
                if row.current_status.as_deref() != Some("read") {
                    not_read += 1;
                }
            }
        }
    }
    if not_read > 0 {
        violations.push(format!("{not_read} accepted messages never reached `read`"));
    }
    lines.push(format!(
        "outbound.status steps received: {steps} (repeats of a step already seen: {repeated_steps}); accepted messages ending `read`: {}",
        ledger.accepted_wamid.len() - not_read
    ));

    // Queues: nothing stuck but documented dead letters.
    let mut held = Vec::new();
    for (name, count) in &snap.queues {
        if *count == 0 {
            continue;
        }
        if may_hold_messages(name) {
            held.push(format!("{name}={count}"));
        } else {
            violations.push(format!("{count} messages stuck in {name}"));
        }
    }
    lines.push(format!(
        "queues holding messages at the end (dead letters / audit): [{}]",
        held.join(", ")
    ));

    Ok(ChaosReport { lines, violations })
}

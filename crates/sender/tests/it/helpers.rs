//! Test harness: a RabbitMQ vhost of its own, a fresh database, an in-process graph-mock, and
//! sender `App`s built against them (or real `sender` processes); typed helpers to publish jobs and
//! collect outcomes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lapin::options::BasicGetOptions;
use lapin::types::AMQPValue;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wa_amqp::{PublishOptions, Publisher};
use wa_common::topology::{exchange, routing};
use wa_graph_mock::{MockConfig, RecordedRequest, RequestFilter};
use wa_sender::config::{ConsumerConfig, GraphConfig, SendConfig};
use wa_sender::{App, Config};
use wa_service::tenants::{Tenant, TenantDirectory};
use wa_testkit::db::TestDb;

/// The tenant every test uses; its phone number id and token are graph-mock's defaults.
pub const TENANT: &str = "default";
/// Every priority of the contract: one dispatch queue each per tenant.
pub const PRIORITIES: [&str; 3] = ["interactive", "transactional", "bulk"];
const MGMT: &str = "http://127.0.0.1:15672/api";

/// A vhost of its own on the local broker, deleted on drop.
pub struct TestVhost {
    pub name: String,
    pub amqp_url: String,
}

impl TestVhost {
    pub async fn new() -> TestVhost {
        let name = format!("sender-test-{}", uuid::Uuid::new_v4().simple());
        let http = reqwest::Client::new();
        let put = http
            .put(format!("{MGMT}/vhosts/{name}"))
            .basic_auth("guest", Some("guest"))
            .json(&json!({"default_queue_type": "quorum"}))
            .send()
            .await
            .expect("management API reachable");
        assert!(put.status().is_success(), "create vhost: {}", put.status());
        let perm = http
            .put(format!("{MGMT}/permissions/{name}/guest"))
            .basic_auth("guest", Some("guest"))
            .json(&json!({"configure": ".*", "write": ".*", "read": ".*"}))
            .send()
            .await
            .expect("management API reachable");
        assert!(perm.status().is_success(), "permissions: {}", perm.status());
        let amqp_url = format!("amqp://guest:guest@127.0.0.1:5672/{name}");
        TestVhost { name, amqp_url }
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let _ = reqwest::Client::new()
                    .delete(format!("{MGMT}/vhosts/{name}"))
                    .basic_auth("guest", Some("guest"))
                    .send()
                    .await;
            });
        })
        .join();
    }
}

/// Everything one test needs.
pub struct Harness {
    pub vhost: TestVhost,
    pub db: TestDb,
    pub mock: wa_graph_mock::RunningMock,
    pub publisher: Publisher,
    pub channel: lapin::Channel,
    senders: Vec<(
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )>,
    pub http_addrs: Vec<std::net::SocketAddr>,
    collected: Vec<(String, Value)>,
}

/// The tenant every test uses (graph-mock's default number and token).
pub fn default_tenant() -> Tenant {
    Tenant {
        tenant_id: TENANT.to_owned(),
        phone_number_id: wa_graph_mock::config::DEFAULT_PHONE_NUMBER_ID.to_owned(),
        waba_id: wa_graph_mock::config::DEFAULT_WABA_ID.to_owned(),
        access_token: SecretString::from(wa_graph_mock::DEFAULT_TOKEN),
        time_zone: "Asia/Jakarta".to_owned(),
    }
}

/// Configuration of the senders of one test.
pub fn sender_config(h: &Harness) -> Config {
    let tenant = default_tenant();
    Config {
        amqp_url: h.vhost.amqp_url.clone(),
        database_url: h.db.url.clone(),
        http_addr: "127.0.0.1:0".to_owned(),
        tenants: TenantDirectory::new(vec![tenant]).expect("valid tenants"),
        graph: GraphConfig {
            base_url: h.mock.base_url().trim_end_matches('/').to_owned(),
            api_version: "v24.0".to_owned(),
            timeout: Duration::from_secs(5),
        },
        send: SendConfig {
            rate_margin_permille: 15,
            probe_interval: Duration::from_millis(300),
            ..SendConfig::default()
        },
        consumer: ConsumerConfig {
            prefetch: 500,
            concurrency: 400,
        },
        db_pool_size: 16,
    }
}

impl Harness {
    pub async fn new(mock: MockConfig) -> Harness {
        let vhost = TestVhost::new().await;
        let db = TestDb::new().await.expect("test database");
        let mock = wa_graph_mock::spawn(mock).await.expect("graph-mock starts");
        let publisher = Publisher::connect(&vhost.amqp_url, "sender-test")
            .await
            .expect("broker");
        let channel = publisher
            .connection()
            .create_channel()
            .await
            .expect("channel");
        wa_amqp::declare_topology(&channel, &wa_common::topology::topology())
            .await
            .expect("topology");
        Harness {
            vhost,
            db,
            mock,
            publisher,
            channel,
            senders: Vec::new(),
            http_addrs: Vec::new(),
            collected: Vec::new(),
        }
    }

    /// Builds and starts a sender replica.
    pub async fn start_sender(&mut self, config: Config) {
        let app = App::build(config).await.expect("sender builds");
        self.http_addrs.push(app.http_addr);
        let token = CancellationToken::new();
        let handle = tokio::spawn(app.run_until(token.clone()));
        self.senders.push((token, handle));
    }

    /// Stops every replica gracefully and checks they exited cleanly.
    pub async fn stop_senders(&mut self) {
        for (token, handle) in self.senders.drain(..) {
            token.cancel();
            let result = tokio::time::timeout(Duration::from_secs(40), handle)
                .await
                .expect("sender stops in time");
            result.expect("sender task").expect("sender exits cleanly");
        }
    }

    /// Consumers subscribed to the default tenant's dispatch queue of `priority`, waiting
    /// single-active consumers included.
    pub async fn dispatch_consumers(&self, priority: &str) -> usize {
        let name = wa_common::topology::sender_dispatch_queue(TENANT, priority).name;
        wa_testkit::broker::consumers_by_queue(&self.vhost.name)
            .await
            .expect("rabbitmqctl lists the consumers")
            .get(&name)
            .copied()
            .unwrap_or(0)
    }

    /// Publishes `count` template jobs `<id_prefix><i>` to `<to_prefix><i:05>`, their priorities
    /// taking turns (so each of the tenant's three dispatch queues has work); their ids.
    pub async fn publish_jobs_of_every_priority(
        &self,
        id_prefix: &str,
        count: usize,
        to_prefix: &str,
    ) -> Vec<String> {
        let mut ids = Vec::with_capacity(count);
        for i in 0..count {
            let id = format!("{id_prefix}{i}");
            let mut job = template_job(&id, &format!("{to_prefix}{i:05}"));
            job["priority"] = json!(PRIORITIES[i % PRIORITIES.len()]);
            self.publish_job(&job).await;
            ids.push(id);
        }
        ids
    }

    /// Publishes a send-job as the platform does.
    pub async fn publish_job(&self, job: &Value) {
        self.publisher
            .publish_json(
                exchange::COMMANDS,
                routing::SEND,
                job,
                PublishOptions::default(),
            )
            .await
            .expect("job published");
    }

    /// Publishes raw bytes as a send-job.
    pub async fn publish_raw(&self, body: &[u8]) {
        self.publisher
            .publish_bytes(
                exchange::COMMANDS,
                routing::SEND,
                body,
                PublishOptions::default(),
            )
            .await
            .expect("job published");
    }

    /// Publishes an event on `whatsapp.events` (as ingress does).
    pub async fn publish_event(&self, key: &str, event: &Value) {
        self.publisher
            .publish_json(
                exchange::WHATSAPP_EVENTS,
                key,
                event,
                PublishOptions::default(),
            )
            .await
            .expect("event published");
    }

    async fn drain_outcomes(&mut self) {
        while let Some(msg) = self
            .channel
            .basic_get("platform.outcomes".into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            let body: Value = serde_json::from_slice(&msg.delivery.data).expect("outcome is JSON");
            self.collected
                .push((msg.delivery.routing_key.to_string(), body));
        }
    }

    /// Waits until outcomes (accepted or failed) for `job_ids` all arrived; returns them by job id
    /// (the latest per job) as `(routing_key, body)`.
    pub async fn wait_outcomes(
        &mut self,
        job_ids: &[&str],
        within: Duration,
    ) -> HashMap<String, (String, Value)> {
        let deadline = Instant::now() + within;
        loop {
            self.drain_outcomes().await;
            let mut found = HashMap::new();
            for (key, body) in &self.collected {
                if let Some(id) = body["job_id"].as_str()
                    && job_ids.contains(&id)
                {
                    found.insert(id.to_owned(), (key.clone(), body.clone()));
                }
            }
            if found.len() == job_ids.len() {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {} outcomes within {within:?}: {found:?}",
                found.len(),
                job_ids.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every outcome event collected so far (for "exactly one" checks).
    pub async fn all_outcomes(&mut self) -> Vec<(String, Value)> {
        self.drain_outcomes().await;
        self.collected.clone()
    }

    /// Takes every dead letter of `queue` with its reason header.
    pub async fn dead_letters(&self, queue: &str) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        let dlq = format!("{queue}.dlq");
        while let Some(msg) = self
            .channel
            .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            let reason = msg
                .delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("x-wa-dead-letter-reason").cloned())
                .map(|v| match v {
                    AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            out.push((
                reason,
                serde_json::from_slice(&msg.delivery.data).unwrap_or(Value::Null),
            ));
        }
        out
    }

    /// Waits until `queue`'s dead-letter queue held `n` messages; returns their reasons.
    pub async fn wait_dead_letters(&self, queue: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut reasons = Vec::new();
        loop {
            reasons.extend(self.dead_letters(queue).await.into_iter().map(|(r, _)| r));
            if reasons.len() >= n {
                return reasons;
            }
            assert!(
                Instant::now() < deadline,
                "only {reasons:?} dead letters in {queue}.dlq"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `n` outcome events for `job_id` arrived.
    pub async fn wait_outcome_count(&mut self, job_id: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let count = self
                .all_outcomes()
                .await
                .iter()
                .filter(|(_, b)| b["job_id"] == job_id)
                .count();
            if count >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {count} outcomes for {job_id}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Send requests graph-mock recorded.
    pub fn sends(&self) -> Vec<RecordedRequest> {
        self.mock.requests(&RequestFilter {
            path_contains: Some("/messages".into()),
            method: Some("POST".into()),
            ..RequestFilter::default()
        })
    }

    /// Send requests to one recipient (E.164 with `+`).
    pub fn sends_to(&self, to: &str) -> Vec<RecordedRequest> {
        self.sends()
            .into_iter()
            .filter(|r| r.body["to"] == to)
            .collect()
    }

    /// Asserts graph-mock accepted `accepted` sends from the default number, never saw more than
    /// `cap` send attempts in one second, and never answered 130429.
    pub fn assert_accepted_within_cap(&self, accepted: u64, cap: u64) {
        let stats = self.mock.stats();
        let phone = &stats.phone_numbers[wa_graph_mock::config::DEFAULT_PHONE_NUMBER_ID];
        assert_eq!(phone.accepted, accepted);
        assert!(
            phone.max_attempts_in_any_second <= cap,
            "max sends in a second: {}",
            phone.max_attempts_in_any_second
        );
        assert_eq!(phone.rate_limited_130429, 0);
    }

    /// Opens the 24-hour window of `to` as an inbound message would.
    pub async fn open_window(&self, to_digits: &str) {
        let mut conn = self.db.conn().await;
        wa_db::models::sender::record_inbound(&mut conn, TENANT, to_digits, chrono::Utc::now())
            .await
            .expect("window recorded");
    }
}

/// A real `sender` process (the binary cargo built for these tests), killed when dropped.
pub struct SenderProcess {
    child: tokio::process::Child,
    /// Its `/healthz`, `/readyz`, `/metrics` address.
    pub http_addr: std::net::SocketAddr,
}

impl Harness {
    /// Starts the `sender` binary configured from the environment, as SREs run it, against this
    /// harness (the default tenant, graph-mock, the vhost and the database) plus `extra_env`, and
    /// waits until its `/readyz` answers 200.
    pub async fn spawn_sender_process(&self, extra_env: &[(&str, &str)]) -> SenderProcess {
        let http_addr: std::net::SocketAddr =
            format!("127.0.0.1:{}", wa_testkit::ports::free_port())
                .parse()
                .expect("address");
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sender"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AMQP_URL", &self.vhost.amqp_url)
            .env("DATABASE_URL", &self.db.url)
            .env("SENDER_HTTP_ADDR", http_addr.to_string())
            .env("DEFAULT_TENANT_ID", TENANT)
            .env(
                "WHATSAPP_PHONE_NUMBER_ID",
                wa_graph_mock::config::DEFAULT_PHONE_NUMBER_ID,
            )
            .env(
                "WHATSAPP_BUSINESS_ACCOUNT_ID",
                wa_graph_mock::config::DEFAULT_WABA_ID,
            )
            .env("WHATSAPP_ACCESS_TOKEN", wa_graph_mock::DEFAULT_TOKEN)
            .env("WHATSAPP_GRAPH_BASE_URL", self.mock.base_url())
            .env("WHATSAPP_API_VERSION", "v24.0")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(extra_env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        let child = command.spawn().expect("the sender binary starts");
        let process = SenderProcess { child, http_addr };
        let http = reqwest::Client::new();
        let url = format!("http://{http_addr}/readyz");
        eventually(
            Duration::from_secs(30),
            "the sender process is ready",
            || {
                let (http, url) = (&http, &url);
                async move {
                    http.get(url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                }
            },
        )
        .await;
        process
    }
}

/// Jobs each of `processes` got accepted so far, in their order.
pub async fn sends_by_process(processes: &[SenderProcess]) -> Vec<u64> {
    let mut sent = Vec::with_capacity(processes.len());
    for process in processes {
        sent.push(process.sent().await);
    }
    sent
}

impl SenderProcess {
    /// Jobs this process got accepted by Meta so far (`wa_sender_sent_total` on its `/metrics`).
    pub async fn sent(&self) -> u64 {
        let metrics = reqwest::get(format!("http://{}/metrics", self.http_addr))
            .await
            .expect("metrics reachable")
            .text()
            .await
            .expect("metrics body");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("wa_sender_sent_total{tenant=\"default\"} "))
            .map_or(0, |n| n.trim().parse().expect("a count"))
    }

    /// SIGTERM, then waits for a clean exit (it drains in-flight jobs first).
    pub async fn stop(mut self) {
        let pid = self.child.id().expect("still running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIGTERM delivered");
        let exit = tokio::time::timeout(Duration::from_secs(40), self.child.wait())
            .await
            .expect("the sender stops in time")
            .expect("exit status");
        assert!(exit.success(), "the sender exits cleanly: {exit}");
    }
}

/// A send-job with a text message.
pub fn text_job(job_id: &str, to: &str) -> Value {
    json!({"job_id": job_id, "tenant_id": TENANT, "to": to, "message": {"type": "text", "text": {"body": "Assalamu'alaikum"}}})
}

/// A `payment_reminder` template job (graph-mock knows it: 6 body parameters, `id`).
pub fn template_job(job_id: &str, to: &str) -> Value {
    let params: Vec<Value> = [
        "Siti",
        "Umroh Reguler",
        "05 Des 2026",
        "1.500.000",
        "Pak Ahmad",
        "+6281234567890",
    ]
    .iter()
    .map(|t| json!({"type": "text", "text": t}))
    .collect();
    json!({"job_id": job_id, "tenant_id": TENANT, "to": to, "message": {"type": "template", "template": {
        "name": "payment_reminder", "language": {"code": "id"},
        "components": [{"type": "body", "parameters": params}]}}})
}

/// Polls `check` every 50 ms until it is true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

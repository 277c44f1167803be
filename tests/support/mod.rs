//! The system under test, in this process: ingress, graph-mock (signing status webhooks to
//! ingress), sender, conversation-sync and reminder-scheduler on a RabbitMQ vhost and a
//! PostgreSQL database of their own; and the platform's side (publishing send-jobs, reading
//! `outbound.status`). Shared by the `tracing` and `metrics` test targets.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wa_amqp::Publisher;
use wa_amqp::lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use wa_amqp::lapin::types::{AMQPValue, FieldTable};
use wa_common::topology::{exchange, routing};
use wa_graph_mock::MockConfig;
use wa_service::tenants::{Tenant, TenantDirectory};
use wa_testkit::broker::TestBroker;
use wa_testkit::db::TestDb;

/// The only tenant, on graph-mock's default business number.
pub const TENANT: &str = "default";
/// App secret graph-mock signs with and ingress verifies.
pub const APP_SECRET: &str = "system-test-app-secret";
/// base64 of 32 bytes: a test key only.
const ENCRYPTION_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// Long enough for the sender's `outbound.accepted` to be stored before the first status arrives,
/// so each status is linked to the send (a status that overtakes it is applied, unlinked, with the
/// accepted event: by design, see `wa_sync::send_trace`).
const STATUS_DELAY: Duration = Duration::from_millis(800);
/// Longest wait for one event the system should produce.
pub const WAIT: Duration = Duration::from_secs(30);

/// Where each service serves `/metrics` (ingress beside its webhook).
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    /// ingress.
    pub ingress: SocketAddr,
    /// sender.
    pub sender: SocketAddr,
    /// conversation-sync.
    pub sync: SocketAddr,
    /// reminder-scheduler.
    pub scheduler: SocketAddr,
}

fn tenant(graph_token: &str) -> TenantDirectory {
    TenantDirectory::new(vec![Tenant {
        tenant_id: TENANT.to_owned(),
        phone_number_id: wa_graph_mock::config::DEFAULT_PHONE_NUMBER_ID.to_owned(),
        waba_id: wa_graph_mock::config::DEFAULT_WABA_ID.to_owned(),
        access_token: SecretString::from(graph_token.to_owned()),
        time_zone: "Asia/Jakarta".to_owned(),
    }])
    .expect("valid tenant")
}

/// The programs running in this process, and how to stop them.
pub struct System {
    _db: TestDb,
    /// The vhost.
    pub broker: TestBroker,
    _mock: wa_graph_mock::RunningMock,
    /// HTTP addresses.
    pub addresses: Addresses,
    shutdown: CancellationToken,
    running: Vec<(&'static str, tokio::task::JoinHandle<anyhow::Result<()>>)>,
}

impl System {
    /// Builds and starts every program; panics (failing the test) when one does not start.
    pub async fn start() -> System {
        let db = TestDb::new().await.expect("test database");
        let broker = TestBroker::new().await.expect("test vhost");
        let shutdown = CancellationToken::new();
        let mut running = Vec::new();

        let ingress = wa_ingress::App::build(wa_ingress::Config {
            addr: "127.0.0.1:0".into(),
            amqp_url: SecretString::from(broker.amqp_url.clone()),
            app_secrets: wa_ingress::config::parse_app_secrets(APP_SECRET).expect("secret"),
            verify_token: SecretString::from("system-test-verify-token"),
            max_body_bytes: 3 * 1024 * 1024,
            confirm_timeout: Duration::from_secs(3),
            workers: 2,
            shutdown_timeout: Duration::from_secs(5),
        })
        .await
        .expect("ingress builds");
        let ingress_addr: SocketAddr = ingress.local_addr();
        running.push(("ingress", tokio::spawn(ingress.run_until(shutdown.clone()))));

        let mock = wa_graph_mock::spawn(MockConfig {
            webhook_url: Some(format!("http://{ingress_addr}/api/v1/whatsapp/webhook")),
            app_secret: APP_SECRET.to_owned(),
            status_delay: STATUS_DELAY,
            ..MockConfig::for_tests()
        })
        .await
        .expect("graph-mock starts");
        let graph_base_url = mock.base_url().trim_end_matches('/').to_owned();

        let sender = wa_sender::App::build(wa_sender::Config {
            amqp_url: broker.amqp_url.clone(),
            database_url: db.url.clone(),
            http_addr: "127.0.0.1:0".to_owned(),
            tenants: tenant(wa_graph_mock::DEFAULT_TOKEN),
            graph: wa_sender::config::GraphConfig {
                base_url: graph_base_url.clone(),
                api_version: "v24.0".to_owned(),
                timeout: Duration::from_secs(5),
            },
            send: wa_sender::config::SendConfig {
                rate_margin_permille: 15,
                probe_interval: Duration::from_millis(300),
                ..wa_sender::config::SendConfig::default()
            },
            consumer: wa_sender::config::ConsumerConfig {
                prefetch: 50,
                concurrency: 16,
            },
            db_pool_size: 4,
        })
        .await
        .expect("sender builds");
        let sender_addr = sender.http_addr;
        running.push(("sender", tokio::spawn(sender.run_until(shutdown.clone()))));

        let media_dir = std::env::temp_dir().join(format!(
            "wa-system-test-media-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let sync = wa_sync::App::build(wa_sync::Config {
            amqp_url: broker.amqp_url.clone(),
            database_url: db.url.clone(),
            http_addr: "127.0.0.1:0".into(),
            api_token: SecretString::from("system-test-api-token"),
            cipher: wa_sync::crypto::Cipher::from_base64(ENCRYPTION_KEY, "").expect("key"),
            retention_days: 90,
            retention_interval: Duration::from_secs(3600),
            tenants: tenant(wa_graph_mock::DEFAULT_TOKEN),
            graph_base_url: graph_base_url.clone(),
            api_version: "v24.0".into(),
            batch: wa_sync::config::BatchConfig {
                max_events: 100,
                max_wait: Duration::from_millis(5),
            },
            media: wa_sync::config::MediaConfig {
                dir: media_dir,
                max_attempts: 3,
                retry_base: Duration::from_millis(10),
                poll_interval: Duration::from_secs(3600),
            },
            pricing_rates_usd: wa_sync::config::parse_rates(
                wa_sync::config::DEFAULT_PRICING_RATES_USD,
            )
            .expect("rates"),
            db_pool_size: 4,
        })
        .await
        .expect("conversation-sync builds");
        let sync_addr = sync.http_addr();
        running.push((
            "conversation-sync",
            tokio::spawn(sync.run_until(shutdown.clone())),
        ));

        let scheduler = wa_scheduler::App::build(wa_scheduler::Config {
            amqp_url: broker.amqp_url.clone(),
            database_url: db.url.clone(),
            db_pool_size: 4,
            http_addr: "127.0.0.1:0".into(),
            tenants: tenant(wa_graph_mock::DEFAULT_TOKEN),
            reminders: wa_scheduler::config::ReminderConfig {
                tick_interval: Duration::from_millis(500),
                ..wa_scheduler::config::ReminderConfig::default()
            },
            graph: wa_scheduler::config::GraphConfig {
                base_url: graph_base_url,
                api_version: "v24.0".into(),
            },
            sync_templates_on_start: false,
            template_sync_interval: Duration::from_secs(600),
        })
        .await
        .expect("reminder-scheduler builds");
        let scheduler_addr = scheduler.health_addr();
        // The scheduler seeded the template registry (not yet reviewed); graph-mock has them
        // approved, which is what a template sync would record. The sender checks the registry.
        let mut conn = db.conn().await;
        for template in [
            "payment_reminder",
            "payment_confirmation",
            "departure_reminder",
        ] {
            let approved = wa_db::models::scheduler::update_template_status(
                &mut conn, TENANT, template, "id", "APPROVED", None, None,
            )
            .await
            .expect("template registry");
            assert!(approved, "{template} is in the registry");
        }
        drop(conn);
        running.push((
            "reminder-scheduler",
            tokio::spawn(scheduler.run_until(shutdown.clone())),
        ));

        System {
            _db: db,
            broker,
            _mock: mock,
            addresses: Addresses {
                ingress: ingress_addr,
                sender: sender_addr,
                sync: sync_addr,
                scheduler: scheduler_addr,
            },
            shutdown,
            running,
        }
    }

    /// Stops every program gracefully; panics when one does not stop in time or fails.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for (name, task) in self.running {
            let stopped = tokio::time::timeout(Duration::from_secs(40), task)
                .await
                .unwrap_or_else(|_| panic!("{name} stops in time"));
            stopped
                .unwrap_or_else(|e| panic!("{name} task: {e}"))
                .unwrap_or_else(|e| panic!("{name} exits cleanly: {e:#}"));
        }
    }
}

/// The platform's side: publishes send-jobs and reads `outbound.status` events.
pub struct Platform {
    /// Publishes as the platform does (confirmed).
    pub publisher: Publisher,
    statuses: wa_amqp::lapin::Consumer,
    _channel: wa_amqp::lapin::Channel,
}

impl Platform {
    /// Connects and starts reading `outbound.status` (from now on).
    pub async fn connect(broker: &TestBroker) -> Platform {
        let publisher = Publisher::connect(&broker.amqp_url, "tracing-test-platform")
            .await
            .expect("platform publisher");
        let channel = publisher
            .connection()
            .create_channel()
            .await
            .expect("platform channel");
        let declared = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("a queue of the test's own");
        channel
            .queue_bind(
                declared.name().clone(),
                exchange::WHATSAPP_EVENTS.into(),
                routing::OUTBOUND_STATUS.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bound to outbound.status");
        let statuses = channel
            .basic_consume(
                declared.name().clone(),
                "tracing-test-statuses".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consuming outbound.status");
        Platform {
            publisher,
            statuses,
            _channel: channel,
        }
    }

    /// The next `outbound.status` of `job_id`: its body and `traceparent` header (absent when no
    /// span was recorded anywhere on the way).
    pub async fn next_status(&mut self, job_id: &str) -> (Value, Option<String>) {
        use futures_util::StreamExt as _;
        loop {
            let delivery = tokio::time::timeout(WAIT, self.statuses.next())
                .await
                .expect("an outbound.status in time")
                .expect("consumer open")
                .expect("delivery");
            let body: Value = serde_json::from_slice(&delivery.data).expect("JSON body");
            if body["job_id"] != job_id {
                continue;
            }
            let traceparent = match delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("traceparent"))
            {
                Some(AMQPValue::LongString(s)) => {
                    Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                }
                _ => None,
            };
            return (body, traceparent);
        }
    }
}

/// The documented example (`wa_common::catalogue`, validated against its schema there) of the
/// contract published with `routing_key`.
pub fn contract_example(routing_key: &str) -> Value {
    wa_common::catalogue::contracts()
        .into_iter()
        .find(|c| c.routing_keys.iter().any(|k| k == routing_key))
        .map(|c| c.example)
        .unwrap_or_else(|| panic!("no contract is published with {routing_key}"))
}

/// A valid send-job: the contract's example (the seeded `payment_reminder` template to an
/// ordinary recipient, so graph-mock reports it sent, delivered and read), under `job_id`.
pub fn send_job(job_id: &str) -> Value {
    let mut job = contract_example(routing::SEND);
    job["job_id"] = json!(job_id);
    // The example's deadline is a fixed date; these tests run on any day.
    if let Some(job) = job.as_object_mut() {
        job.remove("expires_at");
    }
    job
}

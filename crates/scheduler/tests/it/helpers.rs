//! `spawn_app()`: a scheduler on its own database and vhost with a hand-driven clock.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use secrecy::SecretString;
use serde_json::Value;
use wa_amqp::Connection;
use wa_amqp::Outcome;
use wa_amqp::lapin::Channel;
use wa_amqp::lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use wa_amqp::lapin::types::FieldTable;
use wa_common::contracts::send_job::SendJob;
use wa_common::topology::queue;
use wa_db::models::scheduler as db;
use wa_scheduler::config::{Config, GraphConfig, ReminderConfig};
use wa_scheduler::{App, Scheduler, TestClock, templates};
use wa_service::tenants::{Tenant, TenantDirectory};
use wa_testkit::broker::{TestBroker, queue_len};
use wa_testkit::db::TestDb;

/// The default tenant (Asia/Jakarta).
pub const TENANT: &str = "default";
/// Its business phone number id.
pub const PHONE_NUMBER_ID: &str = "106540352242922";
/// Its WABA (graph-mock's default).
pub const WABA_ID: &str = "102290129340398";
/// A second tenant in Asia/Jayapura (UTC+9).
pub const PAPUA: &str = "papua";

/// Parses an RFC 3339 instant.
pub fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("test instant")
}

/// What a test may change about the app.
pub struct Options {
    /// `REMINDER_OFFSETS_DAYS`.
    pub offsets: Vec<i32>,
    /// Graph API (graph-mock) for template tests.
    pub graph: GraphConfig,
    /// Approve every registry template at start.
    pub approve_templates: bool,
    /// Starting instant of the clock.
    pub now: DateTime<Utc>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            offsets: vec![-7, -3, -1, 0],
            graph: GraphConfig::default(),
            approve_templates: true,
            now: at("2026-11-20T03:00:00Z"),
        }
    }
}

/// A running-ready scheduler (not started: tests drive ticks and events directly).
pub struct TestApp {
    /// The test database (dropped with the app).
    pub db: TestDb,
    /// The test vhost (deleted with the app).
    pub broker: TestBroker,
    /// The clock every decision uses.
    pub clock: TestClock,
    /// The scheduler.
    pub scheduler: Arc<Scheduler>,
    /// The built app, for tests that run it.
    pub app: Option<App>,
    /// The configuration it was built with.
    pub config: Config,
    /// A channel on the vhost, to read queues.
    pub channel: Channel,
    _connection: Connection,
}

/// Tenants: `default` (Jakarta) and `papua` (Jayapura).
pub fn tenants() -> TenantDirectory {
    TenantDirectory::new(vec![
        Tenant {
            tenant_id: TENANT.into(),
            phone_number_id: PHONE_NUMBER_ID.into(),
            waba_id: WABA_ID.into(),
            access_token: SecretString::from(wa_graph_mock::DEFAULT_TOKEN),
            time_zone: "Asia/Jakarta".into(),
        },
        Tenant {
            tenant_id: PAPUA.into(),
            phone_number_id: "206540352242999".into(),
            waba_id: "302290129340399".into(),
            access_token: SecretString::from("papua-token"),
            time_zone: "Asia/Jayapura".into(),
        },
    ])
    .expect("valid tenants")
}

/// Builds the app on a fresh database and vhost.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

/// Builds the app with `options`.
pub async fn spawn_app_with(options: Options) -> TestApp {
    let db = TestDb::new().await.expect("test database");
    let broker = TestBroker::new().await.expect("test vhost");
    let clock = TestClock::at(options.now);
    let config = Config {
        amqp_url: broker.amqp_url.clone(),
        database_url: db.url.clone(),
        db_pool_size: 4,
        http_addr: "127.0.0.1:0".into(),
        tenants: tenants(),
        reminders: ReminderConfig {
            offsets_days: options.offsets,
            batch_size: 50,
            tick_interval: std::time::Duration::from_millis(200),
            ..ReminderConfig::default()
        },
        graph: options.graph,
        sync_templates_on_start: false,
        template_sync_interval: std::time::Duration::from_secs(600),
    };
    let app = App::build_with_clock(config.clone(), Arc::new(clock.clone()))
        .await
        .expect("app builds");
    let scheduler = app.scheduler();
    let connection = broker.connect("test-reader").await.expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let test = TestApp {
        db,
        broker,
        clock,
        scheduler,
        app: Some(app),
        config,
        channel,
        _connection: connection,
    };
    if options.approve_templates {
        for tenant in [TENANT, PAPUA] {
            for def in &templates::REGISTRY {
                test.set_template_status(tenant, def.name, "APPROVED").await;
            }
        }
    }
    test
}

impl TestApp {
    /// Hands one event to the scheduler as the consume loop would.
    pub async fn event(&self, routing_key: &str, body: Value) -> Outcome {
        let bytes = serde_json::to_vec(&body).expect("json");
        self.scheduler.handle_event(routing_key, &bytes).await
    }

    /// Like [`Self::event`] but insists the event was acked.
    pub async fn ok(&self, routing_key: &str, body: Value) {
        assert_eq!(
            self.event(routing_key, body).await,
            Outcome::Ack,
            "{routing_key} not acked"
        );
    }

    /// Runs one tick.
    pub async fn tick(&self) -> wa_scheduler::TickReport {
        self.scheduler.tick().await.expect("tick")
    }

    /// Takes every send-job waiting in `sender.send` (through a short-lived consumer: the queue is
    /// single-active-consumer, where `basic.get` is refused). The tick has already had every
    /// publish confirmed, so the queue's depth is the exact number to take.
    pub async fn take_send_jobs(&self) -> Vec<SendJob> {
        let waiting = queue_len(&self.channel, queue::SENDER_SEND)
            .await
            .expect("queue depth");
        if waiting == 0 {
            return Vec::new();
        }
        let channel = self._connection.create_channel().await.expect("channel");
        channel
            .basic_qos(
                u16::try_from(waiting).unwrap_or(u16::MAX),
                BasicQosOptions::default(),
            )
            .await
            .expect("qos");
        let mut consumer = channel
            .basic_consume(
                queue::SENDER_SEND.into(),
                "test-taker".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let mut jobs = Vec::new();
        while jobs.len() < waiting as usize {
            let delivery = tokio::time::timeout(std::time::Duration::from_secs(5), consumer.next())
                .await
                .expect("a delivery within 5 s")
                .expect("consumer open")
                .expect("delivery");
            jobs.push(wa_common::decode::<SendJob>(&delivery.data).expect("a valid send-job"));
            delivery.ack(BasicAckOptions::default()).await.expect("ack");
        }
        channel.close(200, "taken".into()).await.expect("close");
        jobs
    }

    /// Polls `sender.send` until at least one send-job is there, then takes them all.
    pub async fn wait_for_send_jobs(&self, timeout: std::time::Duration) -> Vec<SendJob> {
        let deadline = tokio::time::Instant::now() + timeout;
        while queue_len(&self.channel, queue::SENDER_SEND)
            .await
            .expect("queue depth")
            == 0
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no send-job within {timeout:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        self.take_send_jobs().await
    }

    /// Sets a template's registry status directly.
    pub async fn set_template_status(&self, tenant: &str, name: &str, status: &str) {
        let mut conn = self.db.conn().await;
        let matched = db::update_template_status(&mut conn, tenant, name, "id", status, None, None)
            .await
            .expect("update template");
        assert!(matched, "template {name} of {tenant} is in the registry");
    }

    /// Every reminder of `tenant`.
    pub async fn reminders(&self, tenant: &str) -> Vec<db::ReminderRow> {
        let mut conn = self.db.conn().await;
        db::list_reminders(&mut conn, tenant)
            .await
            .expect("list reminders")
    }

    /// The reminder behind `job_id`.
    pub async fn reminder(&self, job_id: &str) -> db::ReminderRow {
        let mut conn = self.db.conn().await;
        db::find_reminder_by_job(&mut conn, TENANT, job_id)
            .await
            .expect("query")
            .unwrap_or_else(|| panic!("no reminder {job_id}"))
    }
}

/// `jamaah.upserted` for the default tenant.
pub fn jamaah(id: &str, phone: &str, status: &str, package: &str) -> Value {
    jamaah_of(TENANT, id, phone, status, package)
}

/// `jamaah.upserted` for `tenant`.
pub fn jamaah_of(tenant: &str, id: &str, phone: &str, status: &str, package: &str) -> Value {
    serde_json::json!({
        "tenant_id": tenant, "jamaah_id": id, "name": format!("Siti {id}"), "phone": phone,
        "status": status,
        "package": {"id": package, "name": "Umrah Reguler 12 Hari"},
        "agent": {"id": "agent-1", "name": "Ahmad", "phone": "+62 812-3456-7890"}
    })
}

/// `payment_schedule.upserted` for the default tenant.
pub fn schedule(id: &str, jamaah: &str, due: &str, amount: i64, status: &str) -> Value {
    schedule_of(TENANT, id, jamaah, due, amount, status)
}

/// `payment_schedule.upserted` for `tenant`.
pub fn schedule_of(
    tenant: &str,
    id: &str,
    jamaah: &str,
    due: &str,
    amount: i64,
    status: &str,
) -> Value {
    serde_json::json!({
        "tenant_id": tenant, "schedule_id": id, "jamaah_id": jamaah, "package_id": "pkg-1",
        "due_date": due, "amount": amount, "status": status
    })
}

/// The text parameters of a template send-job.
pub fn params(job: &SendJob) -> Vec<String> {
    let value = serde_json::to_value(&job.message).expect("json");
    value["template"]["components"][0]["parameters"]
        .as_array()
        .expect("body parameters")
        .iter()
        .map(|p| p["text"].as_str().expect("text parameter").to_owned())
        .collect()
}

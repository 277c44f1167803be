//! Test harness: a vhost and a database of their own, an in-process graph-mock, a media directory,
//! and a running conversation-sync built against them; typed helpers to publish events, read
//! what the service published and query its tables.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use diesel_async::RunQueryDsl;
use lapin::Channel;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wa_amqp::{PublishOptions, Publisher};
use wa_common::topology::{exchange, queue};
use wa_graph_mock::{DEFAULT_TOKEN, MockConfig, RunningMock};
use wa_service::tenants::{Tenant, TenantDirectory};
use wa_sync::config::{BatchConfig, DEFAULT_PRICING_RATES_USD, MediaConfig, parse_rates};
use wa_sync::crypto::Cipher;
use wa_sync::media::{MediaStore, MediaWorker};
use wa_sync::{App, Config};
use wa_testkit::broker::{TestBroker, get_one};
use wa_testkit::db::TestDb;

/// The tenant of graph-mock's default number.
pub const TENANT: &str = "default";
/// A second tenant (its number is not in graph-mock; only used for isolation checks).
pub const OTHER_TENANT: &str = "other";
/// Phone number id of [`OTHER_TENANT`].
pub const OTHER_PHONE_NUMBER_ID: &str = "200000000000001";
/// Bearer token of the read API in tests.
pub const API_TOKEN: &str = "test-token-0123456789abcdef";
/// Key of the tests' cipher.
pub const KEY: [u8; 32] = [7u8; 32];

/// A running conversation-sync and everything around it.
pub struct TestApp {
    pub db: TestDb,
    /// Kept so the vhost lives as long as the test.
    _broker: TestBroker,
    pub mock: RunningMock,
    pub publisher: Publisher,
    pub channel: Channel,
    _conn: wa_amqp::Connection,
    pub base_url: String,
    pub http: reqwest::Client,
    pub cipher: Cipher,
    pub media: MediaWorker,
    pub media_store: Arc<dyn MediaStore>,
    pub media_dir: PathBuf,
    pub shutdown: CancellationToken,
    pub running: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

fn tenants(mock: &RunningMock) -> TenantDirectory {
    let _ = mock;
    tenant_directory()
}

/// [`TENANT`] on graph-mock's default number and [`OTHER_TENANT`].
pub fn tenant_directory() -> TenantDirectory {
    TenantDirectory::new(vec![
        tenant(
            TENANT,
            wa_graph_mock::config::DEFAULT_PHONE_NUMBER_ID,
            wa_graph_mock::config::DEFAULT_WABA_ID,
        ),
        tenant(OTHER_TENANT, OTHER_PHONE_NUMBER_ID, "300000000000001"),
    ])
    .expect("valid tenants")
}

fn tenant(id: &str, phone_number_id: &str, waba: &str) -> Tenant {
    serde_json::from_value(json!({
        "tenant_id": id,
        "phone_number_id": phone_number_id,
        "waba_id": waba,
        "access_token": DEFAULT_TOKEN,
    }))
    .expect("tenant")
}

/// Starts everything; `max_attempts` bounds media downloads.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(6).await
}

/// [`spawn_app`] with a media attempt budget.
pub async fn spawn_app_with(media_max_attempts: i32) -> TestApp {
    let db = TestDb::new().await.expect("test database");
    let broker = TestBroker::new().await.expect("test vhost");
    let mock = wa_graph_mock::spawn(MockConfig::for_tests())
        .await
        .expect("graph-mock");
    let media_dir =
        std::env::temp_dir().join(format!("wa-sync-media-{}", uuid::Uuid::new_v4().simple()));
    let key = STANDARD.encode(KEY);
    let cipher = Cipher::from_base64(&key, "").expect("cipher");
    let config = Config {
        amqp_url: broker.amqp_url.clone(),
        database_url: db.url.clone(),
        http_addr: "127.0.0.1:0".into(),
        api_token: SecretString::from(API_TOKEN),
        cipher: cipher.clone(),
        retention_days: 90,
        retention_interval: Duration::from_secs(3600),
        tenants: tenants(&mock),
        graph_base_url: mock.base_url().to_owned(),
        api_version: "v24.0".into(),
        batch: BatchConfig {
            max_events: 100,
            max_wait: Duration::from_millis(5),
        },
        media: MediaConfig {
            dir: media_dir.clone(),
            max_attempts: media_max_attempts,
            retry_base: Duration::from_millis(1),
            // Tests drive the downloader themselves.
            poll_interval: Duration::from_secs(3600),
        },
        pricing_rates_usd: parse_rates(DEFAULT_PRICING_RATES_USD).expect("rates"),
        db_pool_size: 4,
    };
    let app = App::build(config).await.expect("app builds");
    let base_url = format!("http://{}", app.http_addr());
    let media = app.media_worker();
    let media_store = app.media_store();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until(shutdown.clone()));
    let conn = broker.connect("sync-test").await.expect("test connection");
    let publisher = Publisher::new(
        broker
            .connect("sync-test-publisher")
            .await
            .expect("publisher connection"),
    )
    .await
    .expect("publisher");
    let channel = conn.create_channel().await.expect("channel");
    let test = TestApp {
        db,
        _broker: broker,
        mock,
        publisher,
        channel,
        _conn: conn,
        base_url,
        http: reqwest::Client::new(),
        cipher,
        media,
        media_store,
        media_dir,
        shutdown,
        running: Some(running),
    };
    test.wait_ready().await;
    test
}

/// Polls `check` until it returns `Some`, failing the test after 10 s.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestApp {
    async fn wait_ready(&self) {
        let url = format!("{}/readyz", self.base_url);
        let http = self.http.clone();
        eventually("readyz", || {
            let http = http.clone();
            let url = url.clone();
            async move {
                http.get(&url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status() == 200)
                    .map(|_| ())
            }
        })
        .await;
    }

    /// Publishes `body` on the exchange that carries `routing_key`.
    pub async fn publish(&self, routing_key: &str, body: &Value) {
        let exchange = if routing_key.starts_with("jamaah.") {
            exchange::PLATFORM_EVENTS
        } else {
            exchange::WHATSAPP_EVENTS
        };
        self.publisher
            .publish_json(exchange, routing_key, body, PublishOptions::default())
            .await
            .expect("publish");
    }

    /// A database connection.
    pub async fn conn(&self) -> diesel_async::AsyncPgConnection {
        self.db.conn().await
    }

    /// Runs `sql` returning one bigint (`SELECT count(*)::bigint AS n ...`).
    pub async fn count(&self, sql: &str) -> i64 {
        count_in(&mut self.conn().await, sql).await
    }

    /// Waits until `sql` (a count) equals `expected`.
    pub async fn wait_count(&self, sql: &str, expected: i64) {
        eventually(sql, || async {
            (self.count(sql).await == expected).then_some(())
        })
        .await;
    }

    /// Every message published to `queue` so far (drains it).
    pub async fn drain(&self, queue_name: &str) -> Vec<(Value, lapin::types::FieldTable)> {
        let mut out = Vec::new();
        while let Some((body, headers)) =
            get_one(&self.channel, queue_name).await.expect("basic.get")
        {
            out.push((serde_json::from_slice(&body).expect("json body"), headers));
        }
        out
    }

    /// Agent notifications published so far.
    pub async fn notifications(&self) -> Vec<Value> {
        self.drain(queue::PLATFORM_NOTIFICATIONS)
            .await
            .into_iter()
            .map(|(b, _)| b)
            .collect()
    }

    /// `outbound.status` events published so far (the outcomes queue also holds the test's own
    /// accepted/failed events; those have no `status`).
    pub async fn status_steps(&self) -> Vec<Value> {
        self.drain(queue::PLATFORM_OUTCOMES)
            .await
            .into_iter()
            .map(|(b, _)| b)
            .filter(|b| b.get("status").is_some() && b.get("accepted_at").is_none())
            .collect()
    }

    /// Writes an outbox row of [`TENANT`] as a batch would, as if its process died between the
    /// commit and the publish; returns its id.
    pub async fn leave_in_outbox(
        &self,
        routing_key: &str,
        body: &[u8],
        message_id: Option<i64>,
    ) -> i64 {
        let sealed = self.cipher.seal(body).expect("seal");
        let mut conn = self.conn().await;
        wa_db::models::conversation::OutboxEvent::insert(
            &mut conn,
            &wa_db::models::conversation::NewOutboxEvent {
                tenant_id: TENANT.into(),
                contact_id: None,
                routing_key: routing_key.into(),
                payload_ciphertext: sealed.ciphertext,
                payload_nonce: sealed.nonce,
                key_id: sealed.key_id,
                message_id,
            },
        )
        .await
        .expect("outbox insert")
    }

    /// Waits until the outbox is empty (everything committed has been published).
    pub async fn outbox_drained(&self) {
        self.wait_count("SELECT count(*)::bigint AS n FROM sync_outbox", 0)
            .await;
    }

    /// GET on the read API with the test token.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base_url))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("read API reachable")
    }

    /// Registers media in graph-mock; returns `(media_id, sha256 base64)`.
    pub async fn register_media(&self, bytes: &[u8], fail_first: u32) -> (String, String) {
        let reply: Value = self
            .http
            .post(format!("{}/_mock/media", self.mock.base_url()))
            .json(&json!({"mime_type": "image/png", "data_base64": STANDARD.encode(bytes), "fail_first": fail_first}))
            .send()
            .await
            .expect("mock reachable")
            .json()
            .await
            .expect("json");
        (
            reply["id"].as_str().expect("id").to_owned(),
            reply["sha256"].as_str().expect("sha256").to_owned(),
        )
    }

    /// Stops the service gracefully and checks it ended cleanly.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running.await.expect("join").expect("clean shutdown");
        }
        let _ = std::fs::remove_dir_all(&self.media_dir);
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.media_dir);
    }
}

/// Runs `sql` returning one bigint (`SELECT count(*)::bigint AS n ...`) on `conn`.
pub async fn count_in(conn: &mut diesel_async::AsyncPgConnection, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let row: N = diesel::sql_query(sql).get_result(conn).await.expect(sql);
    row.n
}

/// An `inbound.message` event as ingress publishes it.
pub fn inbound(wamid: &str, from: &str, kind: &str, object: Value, at: DateTime<Utc>) -> Value {
    inbound_to(
        wa_graph_mock::config::DEFAULT_PHONE_NUMBER_ID,
        wamid,
        from,
        kind,
        object,
        at,
    )
}

/// [`inbound`] to a given business number.
pub fn inbound_to(
    phone_number_id: &str,
    wamid: &str,
    from: &str,
    kind: &str,
    object: Value,
    at: DateTime<Utc>,
) -> Value {
    let mut raw =
        json!({"from": from, "id": wamid, "timestamp": at.timestamp().to_string(), "type": kind});
    raw[kind] = object;
    json!({
        "source": {"waba_id": wa_graph_mock::config::DEFAULT_WABA_ID, "phone_number_id": phone_number_id, "display_phone_number": "6221555000111"},
        "wa_message_id": wamid,
        "from": from,
        "from_user_id": null,
        "profile_name": "Pak Ahmad",
        "timestamp": at,
        "message_type": kind,
        "raw": raw,
        "received_at": Utc::now(),
    })
}

/// An `inbound.status` event.
pub fn status(wamid: &str, word: &str, at: DateTime<Utc>, pricing: Option<(&str, bool)>) -> Value {
    let mut event = json!({
        "source": {"waba_id": wa_graph_mock::config::DEFAULT_WABA_ID, "phone_number_id": wa_graph_mock::config::DEFAULT_PHONE_NUMBER_ID, "display_phone_number": null},
        "wa_message_id": wamid,
        "status": word,
        "timestamp": at,
        "recipient_id": "6281234567890",
        "biz_opaque_callback_data": null,
        "pricing": null,
        "errors": [],
        "raw": {"id": wamid, "status": word},
        "received_at": Utc::now(),
    });
    if let Some((category, billable)) = pricing {
        event["pricing"] = json!({"billable": billable, "pricing_model": "PMP", "type": "regular", "category": category});
    }
    if word == "failed" {
        event["errors"] = json!([{"code": 131026, "title": "Message undeliverable", "message": null, "details": "Message undeliverable"}]);
    }
    event
}

/// An `outbound.accepted` event.
pub fn accepted(job: &str, to: &str, wamid: &str, at: DateTime<Utc>) -> Value {
    json!({
        "job_id": job, "tenant_id": TENANT, "to": to, "wa_message_id": wamid,
        "accepted_at": at, "attempts": 1, "reference": {"kind": "payment_reminder", "id": format!("ref-{job}")},
    })
}

/// An `outbound.failed` event.
pub fn failed(job: &str, to: &str, reason: &str, at: DateTime<Utc>) -> Value {
    json!({
        "job_id": job, "tenant_id": TENANT, "to": to, "reason": reason, "meta_code": 131047,
        "detail": "Re-engagement message", "attempts": 1, "failed_at": at, "reference": null,
    })
}

/// A `jamaah.upserted` event.
pub fn jamaah(tenant: &str, id: &str, phone: &str) -> Value {
    json!({
        "tenant_id": tenant, "jamaah_id": id, "name": "Siti Aminah", "phone": phone, "status": "registered",
        "package": {"id": "pkg-1", "name": "Umrah Reguler Desember 2026"},
        "agent": {"id": "agent-7", "name": "Bu Rina", "phone": "+62 811-111-222"},
    })
}

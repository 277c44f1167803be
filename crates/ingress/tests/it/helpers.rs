//! `spawn_app`: a real ingress on a random port against its own vhost, plus a tap queue bound to
//! every key of `whatsapp.events` so a test sees exactly what one request published.

use std::net::SocketAddr;
use std::time::Duration;

use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use secrecy::SecretString;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wa_amqp::Connection;
use wa_common::topology::exchange;
use wa_ingress::config::{self, Config};
use wa_ingress::signature::sign;
use wa_ingress::{App, routes::WEBHOOK_PATH};
use wa_testkit::broker::TestBroker;
use wa_testkit::proxy::TcpProxy;

/// The secret Meta signs with in these tests.
pub const APP_SECRET: &str = "test-app-secret";
/// A second, rotated-in secret.
pub const NEW_APP_SECRET: &str = "test-app-secret-2027";
/// The GET handshake token.
pub const VERIFY_TOKEN: &str = "umrah-verify-token";
/// Body limit of test apps (small, so the oversize test stays cheap).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
const TAP_QUEUE: &str = "test.tap";

/// Options of [`spawn_app`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Spawn {
    /// Route ingress's broker connection through a [`TcpProxy`] the test can cut.
    pub through_proxy: bool,
}

/// One running ingress and what a test needs around it.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// HTTP client.
    pub http: reqwest::Client,
    /// Channel on a direct (never proxied) connection, to read queues.
    pub channel: Channel,
    /// Present with `through_proxy`.
    pub proxy: Option<TcpProxy>,
    /// Cancels the app.
    pub shutdown: CancellationToken,
    /// The app's `run_until`.
    pub running: Option<JoinHandle<anyhow::Result<()>>>,
    /// The bound address.
    pub addr: SocketAddr,
    _connection: Connection,
    _broker: TestBroker,
}

/// One message taken off a queue.
#[derive(Debug)]
pub struct Taken {
    /// Routing key it was published with.
    pub routing_key: String,
    /// Body bytes.
    pub body: Vec<u8>,
    /// AMQP properties.
    pub properties: BasicProperties,
}

impl Taken {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// A string header.
    pub fn header(&self, name: &str) -> Option<String> {
        match self.properties.headers().as_ref()?.inner().get(name)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            _ => None,
        }
    }
}

/// Starts ingress on a fresh vhost (through a cuttable proxy when asked).
pub async fn spawn_app(options: Spawn) -> TestApp {
    let broker = TestBroker::new().await.expect("test vhost");
    let proxy = if options.through_proxy {
        let target = amqp_authority(&broker.amqp_url);
        Some(TcpProxy::start(&target).await.expect("proxy"))
    } else {
        None
    };
    let amqp_url = proxy.as_ref().map_or_else(
        || broker.amqp_url.clone(),
        |p| p.rewrite_url(&broker.amqp_url),
    );
    let config = Config {
        addr: "127.0.0.1:0".into(),
        amqp_url: SecretString::from(amqp_url),
        app_secrets: config::parse_app_secrets(&format!("{APP_SECRET},{NEW_APP_SECRET}"))
            .expect("secrets"),
        verify_token: SecretString::from(VERIFY_TOKEN),
        max_body_bytes: MAX_BODY_BYTES,
        confirm_timeout: Duration::from_millis(1_500),
        workers: 2,
        shutdown_timeout: Duration::from_secs(5),
    };
    let app = App::build(config).await.expect("ingress builds");
    let addr = app.local_addr();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until(shutdown.clone()));

    // App::build declared the topology; the tap sees every event whatever its key.
    let connection = broker
        .connect("test-reader")
        .await
        .expect("reader connection");
    let channel = connection.create_channel().await.expect("reader channel");
    channel
        .queue_declare(
            TAP_QUEUE.into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("tap queue");
    channel
        .queue_bind(
            TAP_QUEUE.into(),
            exchange::WHATSAPP_EVENTS.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("tap binding");

    TestApp {
        base_url: format!("http://{addr}"),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client"),
        channel,
        proxy,
        shutdown,
        running: Some(running),
        addr,
        _connection: connection,
        _broker: broker,
    }
}

fn amqp_authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_owned()
}

impl TestApp {
    /// The webhook URL.
    pub fn webhook_url(&self) -> String {
        format!("{}{WEBHOOK_PATH}", self.base_url)
    }

    /// POSTs `body` signed with `secret` as Meta does.
    pub async fn post_signed(&self, body: &[u8], secret: &str) -> reqwest::Response {
        self.post_with_signature(body, Some(&sign(secret, body)))
            .await
    }

    /// POSTs `body` with the given signature header (or none).
    pub async fn post_with_signature(
        &self,
        body: &[u8],
        signature: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.webhook_url())
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("X-Hub-Signature-256", signature);
        }
        request.send().await.expect("POST webhook")
    }

    /// GETs the handshake with the given query pairs.
    pub async fn handshake(&self, query: &[(&str, &str)]) -> reqwest::Response {
        let url = reqwest::Url::parse_with_params(&self.webhook_url(), query).expect("URL");
        self.http.get(url).send().await.expect("GET webhook")
    }

    /// GETs a path of the app.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base_url))
            .send()
            .await
            .expect("GET")
    }

    /// Everything the tap saw (publishes are confirmed before ingress answers, so after a
    /// response this is complete).
    pub async fn published(&self) -> Vec<Taken> {
        drain(&self.channel, TAP_QUEUE).await
    }

    /// Everything in `queue` now.
    pub async fn drain(&self, queue: &str) -> Vec<Taken> {
        drain(&self.channel, queue).await
    }

    /// Stops the app and waits for `run_until` to return.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.running.take() {
            Some(running) => running.await?,
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn drain(channel: &Channel, queue: &str) -> Vec<Taken> {
    let mut taken = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
    {
        let delivery = message.delivery;
        taken.push(Taken {
            routing_key: delivery.routing_key.to_string(),
            body: delivery.data,
            properties: delivery.properties,
        });
    }
    taken
}

/// Polls `check` every 50 ms until it is true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

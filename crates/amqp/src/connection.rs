//! Broker connections that re-establish themselves.
//!
//! Use **two connections per process**: one for publishing ([`crate::Publisher`]) and one for
//! consuming ([`crate::run_consumer`]). RabbitMQ applies flow control per connection, so a publisher
//! being throttled must not be able to stall the acks of a consumer (RabbitMQ docs: connections,
//! production checklist). Channels are cheap; connections are not: never open one per message.
//!
//! lapin 4's own automatic recovery can stay in `Reconnecting` for good after a broker restart
//! (amqp-rs/lapin#450; seen here with `rabbitmqctl stop_app`/`start_app`), so it is off. Instead
//! every [`Connection`] has a small supervisor task that notices when the underlying lapin
//! connection is closed or errored and opens a new one with backoff, for as long as the process
//! runs. Channels and consumers of the old connection are gone: the publisher and the consume loop
//! open new ones on the new connection; unacked deliveries of the old one are redelivered by the
//! broker (handlers are idempotent).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Channel, ConnectionProperties, ConnectionStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::AmqpError;

/// Attempts of the initial connect for failures worth retrying (handshake refused while the broker
/// boots, for example). Bounded so a misconfigured service fails fast.
const INITIAL_CONNECT_ATTEMPTS: usize = 5;

/// How often the supervisor looks at the connection's state.
const SUPERVISE_EVERY: Duration = Duration::from_millis(200);

/// Backoff between reconnect attempts after the connection dropped; never gives up (a broker
/// outage of any length ends in a reconnect, not in a dead process).
fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

/// A broker connection that reconnects by itself (see the module docs). Clones share it.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

struct Shared {
    uri: AMQPUri,
    redacted: String,
    name: String,
    current: RwLock<Arc<lapin::Connection>>,
    /// Bumped on every reconnect.
    generation: AtomicU64,
    /// Set by [`Connection::close`]: no more reconnects.
    closed: AtomicBool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("url", &self.shared.redacted)
            .field("name", &self.shared.name)
            .field("connected", &self.is_connected())
            .field("generation", &self.generation())
            .finish()
    }
}

impl Connection {
    /// The lapin connection in use right now (replaced after a reconnect).
    pub fn current(&self) -> Arc<lapin::Connection> {
        self.shared
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// State of the current lapin connection.
    pub fn status(&self) -> ConnectionStatus {
        self.current().status().clone()
    }

    /// True while the current connection is open.
    pub fn is_connected(&self) -> bool {
        self.current().status().connected()
    }

    /// How many times this connection was re-established.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Relaxed)
    }

    /// True once [`Connection::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }

    /// Opens a channel on the current connection (fails while it is down; try again later).
    pub async fn create_channel(&self) -> Result<Channel, lapin::Error> {
        self.current().create_channel().await
    }

    /// Closes the connection for good (graceful shutdown): the supervisor stops reconnecting.
    pub async fn close(&self, reply_code: u16, reply_text: &str) -> Result<(), lapin::Error> {
        self.shared.closed.store(true, Ordering::Relaxed);
        let current = self.current();
        if current.status().connected() {
            current.close(reply_code, reply_text.into()).await?;
        }
        Ok(())
    }
}

/// Properties of every connection we open (lapin's own recovery stays off, see the module docs).
fn properties(connection_name: &str) -> ConnectionProperties {
    ConnectionProperties::default().with_connection_name(connection_name.into())
}

/// Connects to `url`, naming the connection `connection_name` in the management UI; retries the
/// initial connect a bounded number of times, logs the broker version, and starts the supervisor
/// that reconnects whenever the connection drops.
pub async fn connect(url: &str, connection_name: &str) -> Result<Connection, AmqpError> {
    let redacted = redact_url(url);
    let uri: AMQPUri = url.parse().map_err(|reason| AmqpError::InvalidUrl {
        url: redacted.clone(),
        reason,
    })?;
    let properties = properties(connection_name);
    let attempt = || lapin::Connection::connect_uri(uri.clone(), properties.clone());
    let connection = attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(500))
                .with_max_delay(Duration::from_secs(5))
                .with_jitter()
                .with_max_times(INITIAL_CONNECT_ATTEMPTS),
        )
        .when(is_worth_retrying)
        .notify(|err, after| {
            tracing::warn!(url = %redacted, error = %err, retry_in = ?after, "broker connect failed, retrying");
        })
        .await
        .map_err(|source| AmqpError::Connect {
            url: redacted.clone(),
            source,
        })?;

    log_broker_version(&uri, &redacted).await;
    tracing::info!(
        url = %redacted,
        connection_name,
        heartbeat_s = connection.configuration().heartbeat(),
        frame_max = connection.configuration().frame_max(),
        "connected to the broker"
    );
    let shared = Arc::new(Shared {
        uri,
        redacted,
        name: connection_name.to_owned(),
        current: RwLock::new(Arc::new(connection)),
        generation: AtomicU64::new(0),
        closed: AtomicBool::new(false),
    });
    tokio::spawn(supervise(Arc::downgrade(&shared)));
    Ok(Connection { shared })
}

/// Replaces the lapin connection whenever it is closed or errored, until the last [`Connection`]
/// clone is dropped or [`Connection::close`] is called.
async fn supervise(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(SUPERVISE_EVERY).await;
        let Some(strong) = shared.upgrade() else {
            return;
        };
        if strong.closed.load(Ordering::Relaxed) {
            return;
        }
        let current = strong
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let status = current.status();
        if !(status.errored() || status.closed()) {
            continue;
        }
        tracing::warn!(url = %strong.redacted, connection_name = %strong.name, "broker connection lost; reconnecting");
        let (uri, properties) = (strong.uri.clone(), properties(&strong.name));
        drop(strong);
        let mut backoff = reconnect_backoff();
        let fresh = loop {
            match lapin::Connection::connect_uri(uri.clone(), properties.clone()).await {
                Ok(fresh) => break fresh,
                Err(error) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                    match shared.upgrade() {
                        Some(s) if !s.closed.load(Ordering::Relaxed) => {
                            tracing::debug!(url = %s.redacted, error = %error, retry_in = ?delay, "reconnect failed");
                        }
                        _ => return,
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        };
        let Some(strong) = shared.upgrade() else {
            let _ = fresh.close(200, "shutdown".into()).await;
            return;
        };
        *strong
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(fresh);
        let generation = strong.generation.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(url = %strong.redacted, connection_name = %strong.name, generation, "reconnected to the broker");
    }
}

/// Authentication and protocol mismatches will not fix themselves; everything else might.
/// `request` (an ack, a cancel, a channel opening) if lapin answers it within `limit`, else a
/// timed-out error naming `what`. lapin never answers a request queued just as its connection's
/// internal loop stopped, and a caller waiting for it for good never reconnects.
pub(crate) async fn answered<T>(
    what: &'static str,
    limit: Duration,
    request: impl Future<Output = Result<T, lapin::Error>>,
) -> Result<T, lapin::Error> {
    tokio::time::timeout(limit, request)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{what} got no answer within {limit:?}"),
            )
            .into())
        })
}

fn is_worth_retrying(err: &lapin::Error) -> bool {
    !matches!(
        err.kind(),
        lapin::ErrorKind::AuthProviderError(_)
            | lapin::ErrorKind::InvalidProtocolVersion(_)
            | lapin::ErrorKind::NoDefaultRuntime
            | lapin::ErrorKind::RuntimeShutdownError(_)
    ) && !err.is_amqp_hard_error()
}

/// Returns `url` with the password replaced by `***`, so connection URLs can be logged.
///
/// Over-redacts rather than under-redacts when the URL is malformed.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        // Not a URL we understand; it could still hold a secret.
        return if url.contains('@') {
            "***".to_owned()
        } else {
            url.to_owned()
        };
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    let (userinfo, host_and_path) = rest.split_at(at);
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}{user}:***{host_and_path}"),
        None => url.to_owned(),
    }
}

/// What the broker says about itself in `connection.start` (`server-properties`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// `product`, e.g. `RabbitMQ`.
    pub product: String,
    /// `version`, e.g. `3.10.8`.
    pub version: String,
    /// `cluster_name`, when the broker sends it.
    pub cluster_name: Option<String>,
}

static BROKER_VERSION_LOGGED: AtomicBool = AtomicBool::new(false);

/// Logs the broker product and version once per process (local 3.10 and production 4.x differ
/// in defaults that matter to us, so the logs should say which one a service talked to).
async fn log_broker_version(uri: &AMQPUri, redacted: &str) {
    if BROKER_VERSION_LOGGED.swap(true, Ordering::Relaxed) {
        return;
    }
    match probe_broker_info(uri).await {
        Some(info) => tracing::info!(
            url = %redacted,
            broker_product = %info.product,
            broker_version = %info.version,
            cluster_name = info.cluster_name.as_deref().unwrap_or(""),
            "broker identified"
        ),
        None => tracing::info!(url = %redacted, "broker version not probed (TLS or probe failed)"),
    }
}

/// Reads the broker's `server-properties` by sending the AMQP protocol header on a short-lived TCP
/// connection and parsing the `connection.start` reply; `None` for `amqps://` or on any failure.
///
/// lapin 4 does not expose the server properties of its own handshake, hence this probe. The
/// broker logs the probe as a client that closed its TCP connection during the handshake (once
/// per process start).
pub async fn probe_broker_info(uri: &AMQPUri) -> Option<BrokerInfo> {
    if uri.scheme != AMQPScheme::AMQP {
        return None;
    }
    let address = (uri.authority.host.as_str(), uri.authority.port);
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        stream.write_all(b"AMQP\x00\x00\x09\x01").await.ok()?;
        // Frame: type (1) = method, channel (2), size (4), payload, frame-end 0xCE.
        let mut header = [0_u8; 7];
        stream.read_exact(&mut header).await.ok()?;
        if header[0] != 1 {
            return None;
        }
        let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
        if size > 1 << 20 {
            return None;
        }
        let mut payload = vec![0_u8; size];
        stream.read_exact(&mut payload).await.ok()?;
        parse_connection_start(&payload)
    };
    tokio::time::timeout(Duration::from_secs(2), probe)
        .await
        .ok()
        .flatten()
}

fn parse_connection_start(payload: &[u8]) -> Option<BrokerInfo> {
    use lapin::protocol::{AMQPClass, connection::AMQPMethod};
    let (_, class) = lapin::protocol::parse_class(payload).ok()?;
    let AMQPClass::Connection(AMQPMethod::Start(start)) = class else {
        return None;
    };
    let properties = &start.server_properties;
    Some(BrokerInfo {
        product: table_string(properties, "product").unwrap_or_default(),
        version: table_string(properties, "version").unwrap_or_default(),
        cluster_name: table_string(properties, "cluster_name"),
    })
}

fn table_string(table: &FieldTable, key: &str) -> Option<String> {
    match table.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_the_password_and_keeps_the_rest() {
        assert_eq!(
            redact_url("amqp://guest:s3cr3t@rabbit.internal:5672/%2f"),
            "amqp://guest:***@rabbit.internal:5672/%2f"
        );
        assert_eq!(
            redact_url("amqps://svc:p%40ss@host/vh?heartbeat=10"),
            "amqps://svc:***@host/vh?heartbeat=10"
        );
    }

    #[test]
    fn redact_url_leaves_urls_without_a_password_alone() {
        assert_eq!(redact_url("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
        assert_eq!(redact_url("amqp://guest@host/%2f"), "amqp://guest@host/%2f");
    }

    #[test]
    fn redact_url_over_redacts_a_password_with_a_raw_at_sign() {
        assert_eq!(
            redact_url("amqp://user:pa@ss@host/%2f"),
            "amqp://user:***@host/%2f"
        );
    }

    #[test]
    fn redact_url_hides_anything_with_credentials_that_is_not_a_url() {
        assert_eq!(redact_url("guest:secret@host"), "***");
    }

    #[test]
    fn connection_start_payload_yields_product_and_version() {
        // class 10 (connection), method 10 (start), 0-9, server-properties, mechanisms, locales.
        let mut table = Vec::new();
        for (key, value) in [("product", "RabbitMQ"), ("version", "3.10.8")] {
            table.push(key.len() as u8);
            table.extend_from_slice(key.as_bytes());
            table.push(b'S');
            table.extend_from_slice(&(value.len() as u32).to_be_bytes());
            table.extend_from_slice(value.as_bytes());
        }
        let mut payload = vec![0, 10, 0, 10, 0, 9];
        payload.extend_from_slice(&(table.len() as u32).to_be_bytes());
        payload.extend_from_slice(&table);
        for long_string in ["PLAIN AMQPLAIN", "en_US"] {
            payload.extend_from_slice(&(long_string.len() as u32).to_be_bytes());
            payload.extend_from_slice(long_string.as_bytes());
        }
        assert_eq!(
            parse_connection_start(&payload),
            Some(BrokerInfo {
                product: "RabbitMQ".into(),
                version: "3.10.8".into(),
                cluster_name: None
            })
        );
    }
}

//! Confirmed publishing: a message counts as sent only once the broker has confirmed it (for
//! quorum queues: a quorum of replicas has it). Unroutable messages are errors, not silent drops.
//!
//! One [`Publisher`] per process, on its own connection (see [`crate::connection`]); clone it
//! freely: clones share one channel in confirm mode, which lapin multiplexes and on which the
//! broker confirms each message separately.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, PublisherConfirm};
use serde::Serialize;
use tokio::time::Instant;
use wa_common::topology::HEADER_TENANT_ID;

use crate::connection::{Connection, answered, connect};
use crate::error::{AmqpError, PublishError};
use crate::trace_context::{current_context, inject_context};

/// How long a publish waits for the broker's confirm by default. Under load a quorum-queue confirm
/// takes a few hundred ms; well past that the broker is in trouble and the caller should fail
/// (ingress answers 5xx so Meta redelivers).
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// `delivery_mode` 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// How many times a publish is re-attempted after its channel failed before the message was sent.
const PUBLISH_ATTEMPTS: usize = 3;

/// Per-message options; `Default` gives a fresh UUIDv7 id, the current trace context and no extras.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// AMQP `message_id`; consumers dedupe on it. A UUIDv7 is generated when `None`.
    pub message_id: Option<String>,
    /// AMQP `correlation_id`, e.g. the webhook delivery this event came from.
    pub correlation_id: Option<String>,
    /// Sets [`HEADER_TENANT_ID`], so dead letters can be replayed per tenant.
    pub tenant_id: Option<String>,
    /// Extra headers, copied as they are (trace headers are added on top).
    pub headers: FieldTable,
    /// Trace context to propagate; the current one (see [`current_context`]) when `None`.
    pub trace_context: Option<opentelemetry::Context>,
    /// AMQP `content_type`; `application/json` when `None` (our contract for every body).
    pub content_type: Option<String>,
}

/// One message for [`Publisher::publish_all`].
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// Target exchange.
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// The body, already serialised.
    pub body: Vec<u8>,
    /// Per-message options.
    pub options: PublishOptions,
}

impl OutgoingMessage {
    /// Serialises `body` to JSON; fails only if `T`'s `Serialize` impl fails.
    pub fn json<T: Serialize + ?Sized>(
        exchange: &str,
        routing_key: &str,
        body: &T,
        options: PublishOptions,
    ) -> Result<Self, PublishError> {
        Ok(Self {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            body: serde_json::to_vec(body)?,
            options,
        })
    }
}

/// Publishes with publisher confirms and `mandatory`, surviving broker restarts.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
    confirm_timeout: Duration,
}

struct Inner {
    connection: Connection,
    channel: ConfirmChannel,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("ready", &self.is_ready())
            .field("confirm_timeout", &self.confirm_timeout)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Opens a dedicated publishing connection named `connection_name` and a confirm channel on it.
    pub async fn connect(url: &str, connection_name: &str) -> Result<Self, AmqpError> {
        Self::new(connect(url, connection_name).await?).await
    }

    /// Takes over `connection` (which should be used for nothing but publishing) and opens a
    /// confirm channel on it.
    pub async fn new(connection: Connection) -> Result<Self, AmqpError> {
        let channel = ConfirmChannel::open(&connection).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                connection,
                channel,
            }),
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
        })
    }

    /// Changes how long each publish waits for its confirm (the whole batch, for `publish_all`);
    /// applies to this value and to clones made from it afterwards.
    #[must_use]
    pub fn with_confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// The publishing connection, e.g. to declare the topology on it at start.
    pub fn connection(&self) -> &Connection {
        &self.inner.connection
    }

    /// True when the connection is up and the channel usable (or re-openable): what `/readyz` shows.
    pub fn is_ready(&self) -> bool {
        self.inner.connection.is_connected()
            && self
                .inner
                .channel
                .current()
                .is_none_or(|channel| !channel.status().reconnecting())
    }

    /// Serialises `body` to JSON and publishes it; returns once the broker confirmed it.
    pub async fn publish_json<T: Serialize + ?Sized>(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &T,
        options: PublishOptions,
    ) -> Result<(), PublishError> {
        let body = serde_json::to_vec(body)?;
        self.publish_bytes(exchange, routing_key, &body, options)
            .await
    }

    /// Publishes `body` as it is; returns once the broker confirmed it.
    ///
    /// Errors mean the message is not known to be stored: [`PublishError::Unroutable`] when no queue
    /// is bound, `Nacked`, `Timeout` (may still arrive: consumers dedupe), or `Channel`.
    #[tracing::instrument(
        name = "amqp.publish",
        skip_all,
        fields(otel.kind = "producer", messaging.system = "rabbitmq", exchange = %exchange, routing_key = %routing_key, bytes = body.len())
    )]
    pub async fn publish_bytes(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        options: PublishOptions,
    ) -> Result<(), PublishError> {
        let deadline = Instant::now() + self.confirm_timeout;
        let properties = message_properties(options);
        let confirm = self
            .send(exchange, routing_key, body, &properties, deadline)
            .await?;
        await_confirm(
            confirm,
            exchange,
            routing_key,
            deadline,
            self.confirm_timeout,
        )
        .await
    }

    /// Publishes every message, then awaits all confirms together (a window instead of one round
    /// trip per message). Returns the first failure after every confirm has been awaited; on error
    /// the caller should treat the whole batch as failed and republish it (consumers dedupe).
    #[tracing::instrument(
        name = "amqp.publish_all",
        skip_all,
        fields(otel.kind = "producer", messaging.system = "rabbitmq", messages = messages.len())
    )]
    pub async fn publish_all(&self, messages: Vec<OutgoingMessage>) -> Result<(), PublishError> {
        let deadline = Instant::now() + self.confirm_timeout;
        let mut pending = Vec::with_capacity(messages.len());
        for message in &messages {
            let properties = message_properties(message.options.clone());
            let confirm = self
                .send(
                    &message.exchange,
                    &message.routing_key,
                    &message.body,
                    &properties,
                    deadline,
                )
                .await?;
            pending.push(await_confirm(
                confirm,
                &message.exchange,
                &message.routing_key,
                deadline,
                self.confirm_timeout,
            ));
        }
        join_all(pending)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .map(|_| ())
    }

    /// Closes the channel and the connection (graceful shutdown, after the last publish).
    pub async fn close(&self) {
        self.inner.channel.close().await;
        if let Err(err) = self.inner.connection.close(200, "shutdown").await {
            tracing::debug!(error = %err, "closing the publish connection failed");
        }
    }

    /// Hands the message to the broker, waiting out a connection recovery or re-opening a channel
    /// the broker closed; never sends the same message twice.
    async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: &BasicProperties,
        deadline: Instant,
    ) -> Result<PublisherConfirm, PublishError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let channel = self.inner.channel.usable(&self.inner.connection).await?;
            let error =
                match publish_mandatory(&channel, exchange, routing_key, body, properties.clone())
                    .await
                {
                    Ok(confirm) => return Ok(confirm),
                    Err(error) => error,
                };
            if attempt >= PUBLISH_ATTEMPTS {
                return Err(PublishError::Channel(error));
            }
            tracing::warn!(error = %error, attempt, "publish failed before sending; waiting for the channel");
            match tokio::time::timeout_at(deadline, channel.wait_for_recovery(error)).await {
                Ok(Ok(())) => {}
                // Not recoverable by lapin (e.g. the broker closed this channel): re-open one.
                Ok(Err(error)) => {
                    tracing::debug!(error = %error, "channel not recoverable, re-opening");
                }
                Err(_) => {
                    return Err(PublishError::Timeout {
                        exchange: exchange.to_owned(),
                        routing_key: routing_key.to_owned(),
                        after: self.confirm_timeout,
                    });
                }
            }
        }
    }
}

/// AMQP properties of every message we publish: persistent JSON with an id, a timestamp, the
/// tenant header, the caller's headers and the trace context.
fn message_properties(options: PublishOptions) -> BasicProperties {
    let PublishOptions {
        message_id,
        correlation_id,
        tenant_id,
        mut headers,
        trace_context,
        content_type,
    } = options;
    if let Some(tenant_id) = tenant_id {
        headers.insert(
            HEADER_TENANT_ID.into(),
            AMQPValue::LongString(LongString::from(tenant_id)),
        );
    }
    let cx = trace_context.unwrap_or_else(current_context);
    inject_context(&cx, &mut headers);
    let message_id = message_id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let timestamp = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
    let mut properties = BasicProperties::default()
        .with_content_type(ShortString::from(
            content_type.unwrap_or_else(|| "application/json".to_owned()),
        ))
        .with_delivery_mode(PERSISTENT)
        .with_message_id(ShortString::from(message_id))
        .with_timestamp(timestamp)
        .with_headers(headers);
    if let Some(correlation_id) = correlation_id {
        properties = properties.with_correlation_id(ShortString::from(correlation_id));
    }
    properties
}

/// `basic.publish` with `mandatory`, so an unroutable message comes back instead of vanishing.
pub(crate) async fn publish_mandatory(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<PublisherConfirm, lapin::Error> {
    channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        )
        .await
}

/// Waits for the broker's verdict on one message and maps it to our error type.
pub(crate) async fn await_confirm(
    confirm: PublisherConfirm,
    exchange: &str,
    routing_key: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), PublishError> {
    let confirmation = tokio::time::timeout_at(deadline, confirm)
        .await
        .map_err(|_| PublishError::Timeout {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            after: timeout,
        })??;
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_returned)) => Err(PublishError::Unroutable {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
        }),
        Confirmation::Nack(_) => Err(PublishError::Nacked {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
        }),
        // Our channels are always in confirm mode; getting here means we cannot know.
        Confirmation::NotRequested => Err(PublishError::NotConfirmed),
    }
}

/// A channel in confirm mode that is re-opened when the broker closed it (a channel-level error,
/// such as publishing to a missing exchange, closes the channel; lapin only recovers channels as
/// part of a connection recovery).
#[derive(Default)]
pub(crate) struct ConfirmChannel {
    current: Mutex<Option<Channel>>,
    reopen: tokio::sync::Mutex<()>,
}

impl ConfirmChannel {
    /// Opens the first channel now, so a broken connection fails at start rather than at first use.
    pub(crate) async fn open(connection: &Connection) -> Result<Self, AmqpError> {
        let this = Self::default();
        this.usable(connection)
            .await
            .map_err(|source| AmqpError::Channel {
                operation: "confirm.select",
                source,
            })?;
        Ok(this)
    }

    pub(crate) fn current(&self) -> Option<Channel> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The current channel if it is open or being recovered by lapin, else a freshly opened one.
    pub(crate) async fn usable(&self, connection: &Connection) -> Result<Channel, lapin::Error> {
        if let Some(channel) = self.current().filter(is_alive) {
            return Ok(channel);
        }
        let _reopening = self.reopen.lock().await;
        if let Some(channel) = self.current().filter(is_alive) {
            return Ok(channel);
        }
        let fresh = open_confirm_channel(connection).await?;
        tracing::debug!(channel = fresh.id(), "opened a confirm channel");
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(fresh.clone());
        Ok(fresh)
    }

    /// Closes the current channel, if open.
    pub(crate) async fn close(&self) {
        if let Some(channel) = self.current().filter(|c| c.status().connected())
            && let Err(err) = channel.close(200, "shutdown".into()).await
        {
            tracing::debug!(error = %err, "closing a confirm channel failed");
        }
    }
}

fn is_alive(channel: &Channel) -> bool {
    channel.status().connected() || channel.status().reconnecting()
}

/// Longest the opening of a confirm channel may take (see [`answered`]): the consume loop opens
/// these between deliveries.
const OPEN_CHANNEL_TIMEOUT: Duration = Duration::from_secs(10);

async fn open_confirm_channel(connection: &Connection) -> Result<Channel, lapin::Error> {
    let open = async {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(channel)
    };
    answered("opening a confirm channel", OPEN_CHANNEL_TIMEOUT, open).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(properties: &BasicProperties, key: &str) -> Option<AMQPValue> {
        properties.headers().as_ref()?.inner().get(key).cloned()
    }

    #[test]
    fn message_properties_are_persistent_json_with_an_id_and_a_timestamp() {
        let properties = message_properties(PublishOptions::default());

        assert_eq!(*properties.delivery_mode(), Some(2));
        assert_eq!(
            properties.content_type().as_ref().map(ShortString::as_str),
            Some("application/json")
        );
        let id = properties.message_id().as_ref().map(|id| id.to_string());
        let parsed = id.as_deref().map(uuid::Uuid::parse_str);
        assert!(
            matches!(parsed, Some(Ok(uuid)) if uuid.get_version_num() == 7),
            "{id:?}"
        );
        assert!(properties.timestamp().is_some_and(|ts| ts > 1_700_000_000));
    }

    #[test]
    fn message_properties_keep_given_id_tenant_and_extra_headers() {
        let mut headers = FieldTable::default();
        headers.insert("x-extra".into(), AMQPValue::LongString("yes".into()));
        let properties = message_properties(PublishOptions {
            message_id: Some("job-42".into()),
            tenant_id: Some("default".into()),
            correlation_id: Some("webhook-1".into()),
            headers,
            ..PublishOptions::default()
        });

        assert_eq!(
            properties.message_id().as_ref().map(ShortString::as_str),
            Some("job-42")
        );
        assert_eq!(
            properties
                .correlation_id()
                .as_ref()
                .map(ShortString::as_str),
            Some("webhook-1")
        );
        assert_eq!(
            header(&properties, HEADER_TENANT_ID),
            Some(AMQPValue::LongString("default".into()))
        );
        assert_eq!(
            header(&properties, "x-extra"),
            Some(AMQPValue::LongString("yes".into()))
        );
    }
}

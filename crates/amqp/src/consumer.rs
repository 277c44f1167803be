//! The consume loop: takes deliveries from one queue with manual acks, runs a [`Handler`] on each
//! (up to `concurrency` at once) and settles every delivery according to the handler's
//! [`Outcome`]. No business logic lives here, and handlers never see lapin.
//!
//! Settling:
//! - [`Outcome::Ack`] → `basic.ack`, coalesced with other acks into `multiple` acks (see
//!   [`crate::acks`]).
//! - [`Outcome::Retry`] → a copy (same body and properties, [`HEADER_ATTEMPT`] + 1) goes to the retry
//!   tier exchange for the delay, keyed by this queue's name, **with a publisher confirm**, then the
//!   original is acked. A crash in between yields a duplicate, never a loss.
//! - [`Outcome::DeadLetter`] → a copy with reason/detail headers goes to `whatsapp.dlx` keyed by this
//!   queue's name (so into `<queue>.dlq`), confirmed, then the original is acked.
//! - [`Outcome::Requeue`] → `basic.reject(requeue)`, which counts toward the queue's delivery limit,
//!   so a message that keeps failing ends in the DLQ instead of looping forever. A panicking
//!   handler is treated the same way.
//! - If the retry or dead-letter copy cannot be confirmed, the original is nacked with requeue:
//!   nothing is lost.
//!
//! Failure and shutdown: when the connection drops, its supervisor (see [`crate::connection`])
//! opens a new one; the loop reports not-ready meanwhile and re-creates channel and consumer (with
//! backoff, never giving up) once it can. Deliveries from before the drop cannot be acked any
//! more; the broker redelivers them. Only a connection closed on purpose ends the loop with
//! [`AmqpError::ConnectionLost`]. On shutdown it cancels
//! the consumer, gives back prefetched deliveries not yet started, lets in-flight handlers finish
//! and settle (bounded by [`ConsumerOptions::drain_timeout`]), then closes its channels; nothing
//! unfinished is ever acked.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Consumer};
use opentelemetry::trace::TraceContextExt as _;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use wa_common::topology::{
    HEADER_ATTEMPT, HEADER_DEAD_LETTER_DETAIL, HEADER_DEAD_LETTER_REASON, HEADER_ORIGINAL_EXCHANGE,
    HEADER_ORIGINAL_ROUTING_KEY, HEADER_TENANT_ID, exchange, retry_exchange_for, retry_tier_for,
};

use crate::acks::{AckBatch, SETTLE_TIMEOUT};
use crate::connection::{Connection, answered};
use crate::error::{AmqpError, PublishError};
use crate::publisher::{ConfirmChannel, DEFAULT_CONFIRM_TIMEOUT, await_confirm, publish_mandatory};
use crate::queue_metrics::{self, HEADER_AVAILABLE_AT, Watch};
use crate::trace_context::extract_context;

/// Longest dead-letter detail kept in the header; headers must fit in one frame and people read them.
const MAX_DETAIL_BYTES: usize = 1024;
/// Pause before giving a delivery back when its retry/dead-letter copy could not be published,
/// so a broken target does not turn into a hot redelivery loop.
const REPUBLISH_FAILURE_PAUSE: Duration = Duration::from_secs(1);
/// How long shutdown waits for the broker to hand over deliveries it had already sent.
const PREFETCH_DRAIN_WAIT: Duration = Duration::from_millis(300);

/// Business logic for one queue: turns a message into an [`Outcome`]. Must be idempotent (delivery
/// is at-least-once) and must not ack anything itself.
pub trait Handler: Send + Sync + 'static {
    /// Handles one message; the consume loop settles it according to the returned outcome.
    fn handle(&self, msg: IncomingMessage) -> impl Future<Output = Outcome> + Send;
}

/// What the consume loop does with a message once its handler returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done (including "duplicate, already done"): acknowledge.
    Ack,
    /// Transient failure: bring it back after `delay` (rounded up to a retry tier, max 256 s).
    Retry {
        /// Wanted delay; the tiers are 1, 4, 16, 64 and 256 s.
        delay: Duration,
    },
    /// Permanent failure: park it in `<queue>.dlq` with a reason a person can act on.
    DeadLetter {
        /// Stable snake_case word (`invalid_payload`, `unknown_tenant`, …); dashboards group by it.
        reason: String,
        /// Human-readable detail (which field, what Meta said); truncated to 1 KiB.
        detail: String,
    },
    /// Failed, try again now; counts toward the delivery limit, after which the broker dead-letters it.
    Requeue,
}

impl Outcome {
    /// Shorthand for [`Outcome::DeadLetter`].
    pub fn dead_letter(reason: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::DeadLetter {
            reason: reason.into(),
            detail: detail.into(),
        }
    }

    /// Shorthand for [`Outcome::Retry`].
    pub fn retry_in(delay: Duration) -> Self {
        Self::Retry { delay }
    }

    fn label(&self) -> &'static str {
        match self {
            Self::Ack => "ack",
            Self::Retry { .. } => "retry",
            Self::DeadLetter { .. } => "dead_letter",
            Self::Requeue => "requeue",
        }
    }
}

/// A received message as handlers see it: owned data, no lapin handles.
#[derive(Clone)]
pub struct IncomingMessage {
    /// The raw body (JSON by contract).
    pub body: Vec<u8>,
    /// The routing key it was first published with (kept across retries via
    /// [`HEADER_ORIGINAL_ROUTING_KEY`]); dispatch on this.
    pub routing_key: String,
    /// The exchange it was first published to (kept across retries).
    pub exchange: String,
    /// The queue it was consumed from.
    pub queue: String,
    /// All AMQP headers, including `x-death` after a broker dead-letter round trip.
    pub headers: FieldTable,
    /// The broker's redelivered flag: a previous delivery of it may have been processed already.
    pub redelivered: bool,
    /// `x-delivery-count` (quorum queues): how often it was delivered and returned before.
    pub delivery_count: Option<i64>,
    /// How many delayed retries it has been through ([`HEADER_ATTEMPT`], 0 for the first try).
    pub attempt: u32,
    /// AMQP `message_id`, the producer's dedupe key.
    pub message_id: Option<String>,
    /// AMQP `correlation_id`.
    pub correlation_id: Option<String>,
    /// This delivery's trace context: the context of its `amqp.consume` span (whose parent is the
    /// `traceparent` of the headers) when an OpenTelemetry layer is installed, else the remote
    /// context from the headers (empty when absent). Parent handler spans on it and publish what
    /// the message causes with it, so a trace shows every hop as a parent/child chain.
    pub trace_context: opentelemetry::Context,
    /// Position of this delivery in its consume loop (0, 1, 2, … without gaps, never reset while
    /// `run_consumer` runs). Handler tasks may start in any order; a handler that must keep
    /// delivery order (e.g. per recipient) sequences on this.
    pub sequence: u64,
}

impl fmt::Debug for IncomingMessage {
    // The body holds personal data (phone numbers, message text): never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingMessage")
            .field("body_len", &self.body.len())
            .field("routing_key", &self.routing_key)
            .field("exchange", &self.exchange)
            .field("queue", &self.queue)
            .field("redelivered", &self.redelivered)
            .field("delivery_count", &self.delivery_count)
            .field("attempt", &self.attempt)
            .field("message_id", &self.message_id)
            .finish_non_exhaustive()
    }
}

impl IncomingMessage {
    /// A first-delivery message with only a routing key and a body, for handler unit tests.
    pub fn new(routing_key: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self {
            body: body.into(),
            routing_key: routing_key.into(),
            exchange: String::new(),
            queue: String::new(),
            headers: FieldTable::default(),
            redelivered: false,
            delivery_count: None,
            attempt: 0,
            message_id: None,
            correlation_id: None,
            trace_context: opentelemetry::Context::new(),
            sequence: 0,
        }
    }

    fn from_delivery(delivery: &Delivery, queue: &str) -> Self {
        let properties = &delivery.properties;
        let headers = properties.headers().clone().unwrap_or_default();
        let exchange = header_string(&headers, HEADER_ORIGINAL_EXCHANGE)
            .unwrap_or_else(|| delivery.exchange.to_string());
        let routing_key = header_string(&headers, HEADER_ORIGINAL_ROUTING_KEY)
            .unwrap_or_else(|| delivery.routing_key.to_string());
        Self {
            body: delivery.data.clone(),
            routing_key,
            exchange,
            queue: queue.to_owned(),
            redelivered: delivery.redelivered,
            delivery_count: header_i64(&headers, "x-delivery-count"),
            attempt: attempt_of(&headers),
            message_id: properties.message_id().as_ref().map(ToString::to_string),
            correlation_id: properties
                .correlation_id()
                .as_ref()
                .map(ToString::to_string),
            trace_context: extract_context(properties),
            headers,
            sequence: 0,
        }
    }

    /// Deserialises the body; a failure usually means [`Outcome::DeadLetter`] with `invalid_payload`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// A string header (long or short string), e.g. [`HEADER_TENANT_ID`].
    pub fn header_str(&self, name: &str) -> Option<String> {
        header_string(&self.headers, name)
    }

    /// An integer header of any AMQP integer width.
    pub fn header_i64(&self, name: &str) -> Option<i64> {
        header_i64(&self.headers, name)
    }

    /// The [`HEADER_TENANT_ID`] header, when the publisher set it.
    pub fn tenant_id(&self) -> Option<String> {
        self.header_str(HEADER_TENANT_ID)
    }
}

fn header_string(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn header_i64(headers: &FieldTable, name: &str) -> Option<i64> {
    match headers.inner().get(name)? {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        _ => None,
    }
}

fn attempt_of(headers: &FieldTable) -> u32 {
    header_i64(headers, HEADER_ATTEMPT)
        .and_then(|attempt| u32::try_from(attempt).ok())
        .unwrap_or(0)
}

/// Headers of a retry copy: the original headers, [`HEADER_ATTEMPT`] set to `attempt`, and the
/// first exchange/routing key recorded (only if not recorded yet), because the copy comes back
/// through the retry exchanges keyed by queue name.
pub fn retry_headers(
    original: &FieldTable,
    attempt: u32,
    original_exchange: &str,
    original_routing_key: &str,
) -> FieldTable {
    let mut headers = with_origin(original, original_exchange, original_routing_key);
    headers.insert(
        HEADER_ATTEMPT.into(),
        AMQPValue::LongLongInt(i64::from(attempt)),
    );
    headers
}

/// Headers of a dead-letter copy: the original headers plus reason, detail (truncated to 1 KiB)
/// and the first exchange/routing key, so the ops CLI can show why and replay it to where it went.
pub fn dead_letter_headers(
    original: &FieldTable,
    reason: &str,
    detail: &str,
    original_exchange: &str,
    original_routing_key: &str,
) -> FieldTable {
    let mut headers = with_origin(original, original_exchange, original_routing_key);
    headers.insert(HEADER_DEAD_LETTER_REASON.into(), long_string(reason));
    headers.insert(
        HEADER_DEAD_LETTER_DETAIL.into(),
        long_string(truncate(detail, MAX_DETAIL_BYTES)),
    );
    headers
}

fn with_origin(original: &FieldTable, exchange: &str, routing_key: &str) -> FieldTable {
    let mut headers = original.clone();
    if !headers.contains_key(HEADER_ORIGINAL_EXCHANGE) {
        headers.insert(HEADER_ORIGINAL_EXCHANGE.into(), long_string(exchange));
    }
    if !headers.contains_key(HEADER_ORIGINAL_ROUTING_KEY) {
        headers.insert(HEADER_ORIGINAL_ROUTING_KEY.into(), long_string(routing_key));
    }
    headers
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

fn truncate(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Readiness of one consume loop, for `/readyz`: true while a consumer is registered and its
/// connection is up (false during a broker restart, even while lapin recovers transparently).
/// Clone it into the HTTP state before starting the loop.
#[derive(Debug, Clone, Default)]
pub struct ConsumerHealth(Arc<HealthInner>);

#[derive(Debug, Default)]
struct HealthInner {
    consuming: AtomicBool,
    connection: std::sync::Mutex<Option<Connection>>,
}

impl ConsumerHealth {
    /// A not-yet-ready flag.
    pub fn new() -> Self {
        Self::default()
    }

    /// True while the loop has a live consumer on a connected connection.
    pub fn is_ready(&self) -> bool {
        self.0.consuming.load(Ordering::Relaxed)
            && self
                .0
                .connection
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .is_some_and(Connection::is_connected)
    }

    fn watch(&self, connection: &Connection) {
        *self
            .0
            .connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(connection.clone());
    }

    fn set(&self, ready: bool) {
        self.0.consuming.store(ready, Ordering::Relaxed);
    }
}

/// Tuning of one consume loop.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// `basic.qos` prefetch: deliveries the broker sends ahead (quorum queues cap it at 2000).
    pub prefetch: u16,
    /// Handlers running at once; the rest of the prefetch waits in the client buffer.
    pub concurrency: usize,
    /// How long shutdown waits for in-flight handlers; the unfinished are left unacked (redelivered).
    pub drain_timeout: Duration,
    /// How long a retry or dead-letter copy waits for its publisher confirm.
    pub confirm_timeout: Duration,
    /// Readiness flag this loop keeps up to date.
    pub health: ConsumerHealth,
}

impl ConsumerOptions {
    /// Options with the given prefetch and concurrency, a 30 s drain and a fresh health flag.
    pub fn new(prefetch: u16, concurrency: usize) -> Self {
        Self {
            prefetch,
            concurrency,
            drain_timeout: Duration::from_secs(30),
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
            health: ConsumerHealth::new(),
        }
    }
}

/// Consumes `queue` until `shutdown` is cancelled; see the module docs for the guarantees.
///
/// Returns `Ok(())` after a graceful shutdown and [`AmqpError::ConnectionLost`] when the connection
/// is gone for good. Use a connection dedicated to consuming.
pub async fn run_consumer<H: Handler>(
    conn: &Connection,
    queue: &str,
    prefetch: u16,
    concurrency: usize,
    handler: Arc<H>,
    shutdown: CancellationToken,
) -> Result<(), AmqpError> {
    run_consumer_with(
        conn,
        queue,
        ConsumerOptions::new(prefetch, concurrency),
        handler,
        shutdown,
    )
    .await
}

/// [`run_consumer`] with all options, including the [`ConsumerHealth`] to report readiness through.
#[tracing::instrument(name = "amqp.consumer", skip_all, fields(queue = %queue))]
pub async fn run_consumer_with<H: Handler>(
    conn: &Connection,
    queue: &str,
    options: ConsumerOptions,
    handler: Arc<H>,
    shutdown: CancellationToken,
) -> Result<(), AmqpError> {
    let health = options.health.clone();
    health.watch(conn);
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let republish = ConfirmChannel::default();
    let queue_name: Arc<str> = Arc::from(queue);
    let consumer_tag = format!("{queue}.{}", uuid::Uuid::new_v4().simple());
    let mut tasks = JoinSet::new();
    let mut backoff = resubscribe_backoff();
    let mut session_channel: Option<Channel> = None;
    let mut session_acks: Option<Arc<AckBatch>> = None;
    let mut next_sequence: u64 = 0;
    let watch = queue_metrics::watch(queue);

    let result = 'sessions: loop {
        if shutdown.is_cancelled() {
            break Ok(());
        }
        let opened = tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            opened = open_session(conn, queue, options.prefetch, &consumer_tag) => opened,
        };
        let (channel, mut consumer) = match opened {
            Ok(session) => session,
            Err(error) => {
                health.set(false);
                if connection_is_gone(conn) {
                    break Err(AmqpError::ConnectionLost);
                }
                let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!(error = %error, retry_in = ?delay, "could not start consuming");
                tokio::select! {
                    () = shutdown.cancelled() => break Ok(()),
                    () = tokio::time::sleep(delay) => continue 'sessions,
                }
            }
        };
        session_channel = Some(channel.clone());
        let mut acks = AckBatch::start();
        backoff = resubscribe_backoff();
        health.set(true);
        watch.forget_started();
        tracing::info!(consumer_tag = %consumer_tag, prefetch = options.prefetch, "consuming");

        let end = loop {
            while let Some(joined) = tasks.try_join_next() {
                log_task_end(joined);
            }
            // Every handler slot busy: deliveries may be waiting in the prefetch buffer (for the
            // oldest-message age).
            let saturated = (permits.available_permits() == 0).then(|| watch.saturate());
            let permit = tokio::select! {
                biased;
                () = shutdown.cancelled() => break SessionEnd::Shutdown,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_closed) => break SessionEnd::Shutdown,
                },
            };
            drop(saturated);
            let next = tokio::select! {
                biased;
                () = shutdown.cancelled() => break SessionEnd::Shutdown,
                next = consumer.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    // A broken channel here only means the task's copy fails and it nacks.
                    let republish_channel = match republish.usable(conn).await {
                        Ok(channel) => Some(channel),
                        Err(error) => {
                            tracing::warn!(error = %error, "no channel for retry/dead-letter copies");
                            None
                        }
                    };
                    let sequence = next_sequence;
                    next_sequence += 1;
                    acks.delivered(delivery.delivery_tag);
                    let job = process(
                        handler.clone(),
                        delivery,
                        sequence,
                        queue_name.clone(),
                        Session {
                            republish: republish_channel,
                            confirm_timeout: options.confirm_timeout,
                            acks: acks.clone(),
                        },
                        watch.clone(),
                    );
                    tasks.spawn(async move {
                        job.await;
                        drop(permit);
                    });
                }
                Some(Err(error)) => {
                    health.set(false);
                    tracing::warn!(error = %error, "consumer interrupted; waiting for recovery");
                    let recovered = tokio::select! {
                        () = shutdown.cancelled() => break SessionEnd::Shutdown,
                        recovered = channel.wait_for_recovery(error) => recovered,
                    };
                    match recovered {
                        Ok(()) => {
                            tracing::info!("consumer recovered");
                            // Delivery tags start again on the recovered channel: a new batch.
                            acks.finish().await;
                            acks = AckBatch::start();
                            health.set(true);
                        }
                        Err(error) => break SessionEnd::Lost(error.to_string()),
                    }
                }
                None => break SessionEnd::Lost("consumer cancelled or channel closed".to_owned()),
            }
        };

        match end {
            SessionEnd::Shutdown => {
                stop_consuming(&channel, &mut consumer).await;
                // Handlers still running ack after the drain; the flusher sends those last.
                session_acks = Some(acks);
                break Ok(());
            }
            SessionEnd::Lost(reason) => {
                // The channel is gone: its deliveries come again, nothing of it can be acked.
                acks.finish().await;
                health.set(false);
                if connection_is_gone(conn) {
                    break Err(AmqpError::ConnectionLost);
                }
                let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!(reason, retry_in = ?delay, "consumer ended; re-subscribing");
                tokio::select! {
                    () = shutdown.cancelled() => break 'sessions Ok(()),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    };

    health.set(false);
    drain(&mut tasks, options.drain_timeout).await;
    // The handlers have settled (or were aborted, unacked): send every ack they recorded.
    if let Some(acks) = session_acks {
        acks.finish().await;
    }
    republish.close().await;
    if let Some(channel) = session_channel.filter(|c| c.status().connected())
        && let Err(error) = channel.close(200, "shutdown".into()).await
    {
        tracing::debug!(error = %error, "closing the consume channel failed");
    }
    tracing::info!("consumer stopped");
    result
}

enum SessionEnd {
    Shutdown,
    Lost(String),
}

/// Backoff between attempts to (re)subscribe; never gives up on its own (shutdown or a lost
/// connection ends the loop).
fn resubscribe_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Only an explicit close ends the loop: a dropped connection is re-established by its supervisor.
fn connection_is_gone(conn: &Connection) -> bool {
    conn.is_closed()
}

async fn open_session(
    conn: &Connection,
    queue: &str,
    prefetch: u16,
    consumer_tag: &str,
) -> Result<(Channel, Consumer), lapin::Error> {
    let channel = conn.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            queue.into(),
            ShortString::from(consumer_tag),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((channel, consumer))
}

/// Stops deliveries and gives back the ones prefetched but not started, so another replica can
/// take them right away.
async fn stop_consuming(channel: &Channel, consumer: &mut Consumer) {
    let cancel = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default());
    if let Err(error) = answered("basic.cancel", SETTLE_TIMEOUT, cancel).await {
        tracing::warn!(error = %error, "basic.cancel failed; unstarted deliveries return when the channel closes");
        return;
    }
    let mut returned = 0_u32;
    while let Ok(Some(Ok(delivery))) =
        tokio::time::timeout(PREFETCH_DRAIN_WAIT, consumer.next()).await
    {
        let nack = delivery.nack(BasicNackOptions {
            multiple: false,
            requeue: true,
        });
        if answered("basic.nack", SETTLE_TIMEOUT, nack).await.is_ok() {
            returned += 1;
        }
    }
    tracing::info!(
        returned,
        "consumer cancelled; unstarted deliveries given back"
    );
}

/// Waits for in-flight handlers to finish and settle; past `timeout` they are aborted unsettled,
/// and the broker redelivers their messages when the channel closes.
async fn drain(tasks: &mut JoinSet<()>, timeout: Duration) {
    if tasks.is_empty() {
        return;
    }
    tracing::info!(in_flight = tasks.len(), "waiting for in-flight handlers");
    let deadline = Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(joined)) => log_task_end(joined),
            Ok(None) => return,
            Err(_) => {
                tracing::warn!(
                    unfinished = tasks.len(),
                    "drain timeout; leaving unfinished deliveries unacked for redelivery"
                );
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                return;
            }
        }
    }
}

fn log_task_end(joined: Result<(), tokio::task::JoinError>) {
    if let Err(error) = joined
        && !error.is_cancelled()
    {
        tracing::error!(error = %error, "delivery task failed");
    }
}

/// Runs the handler on one delivery and settles it.
async fn process<H: Handler>(
    handler: Arc<H>,
    delivery: Delivery,
    sequence: u64,
    queue: Arc<str>,
    session: Session,
    watch: Arc<Watch>,
) {
    watch.started(queue_metrics::enqueued_at_ms(&delivery.properties));
    let mut message = IncomingMessage::from_delivery(&delivery, &queue);
    message.sequence = sequence;
    let span = tracing::info_span!(
        "amqp.consume",
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.destination.name = %queue,
        messaging.rabbitmq.destination.routing_key = %message.routing_key,
        messaging.message.id = message.message_id.as_deref().unwrap_or(""),
        attempt = message.attempt,
        redelivered = message.redelivered,
        outcome = tracing::field::Empty,
    );
    // Fails only when no OpenTelemetry layer is installed; the span then stays a plain log span.
    let _ = span.set_parent(message.trace_context.clone());
    // From here on the delivery's context is its own span (set_parent must come first: reading
    // the context starts the span).
    let own = span.context();
    if own.span().span_context().is_valid() {
        message.trace_context = own;
    }
    let settle_with = SettleContext {
        exchange: message.exchange.clone(),
        routing_key: message.routing_key.clone(),
        attempt: message.attempt,
        queue: queue.clone(),
        session,
    };

    // The handler's future is created inside the span, so `#[instrument]`ed handlers (whose span
    // is made when the function is called) are children of it rather than roots of new traces.
    let outcome = match AssertUnwindSafe(span.in_scope(|| handler.handle(message)))
        .catch_unwind()
        .instrument(span.clone())
        .await
    {
        Ok(outcome) => outcome,
        Err(_panic) => {
            tracing::error!(parent: &span, "handler panicked; requeueing (counts toward the delivery limit)");
            Outcome::Requeue
        }
    };
    span.record("outcome", outcome.label());
    settle(&delivery, outcome, &settle_with)
        .instrument(span)
        .await;
}

/// What a delivery's task gets from its consume session.
struct Session {
    /// Channel for retry and dead-letter copies (none when it could not be opened).
    republish: Option<Channel>,
    confirm_timeout: Duration,
    acks: Arc<AckBatch>,
}

struct SettleContext {
    exchange: String,
    routing_key: String,
    attempt: u32,
    queue: Arc<str>,
    session: Session,
}

async fn settle(delivery: &Delivery, outcome: Outcome, cx: &SettleContext) {
    let original_headers = delivery.properties.headers().clone().unwrap_or_default();
    match outcome {
        Outcome::Ack => cx.session.acks.ack(delivery).await,
        Outcome::Requeue => cx.session.acks.reject_requeue(delivery).await,
        Outcome::Retry { delay } => {
            let attempt = cx.attempt.saturating_add(1);
            let target = retry_exchange_for(ceil_secs(delay));
            let mut headers =
                retry_headers(&original_headers, attempt, &cx.exchange, &cx.routing_key);
            // When the tier's TTL returns it to this queue: its enqueue time for the age metric.
            let tier_ms =
                i64::try_from(retry_tier_for(ceil_secs(delay)) * 1000).unwrap_or(i64::MAX);
            headers.insert(
                HEADER_AVAILABLE_AT.into(),
                AMQPValue::LongLongInt(queue_metrics::now_ms().saturating_add(tier_ms)),
            );
            match publish_copy(delivery, &target, headers, cx).await {
                Ok(()) => {
                    tracing::info!(attempt, retry_exchange = %target, "scheduled a delayed retry");
                    cx.session.acks.ack(delivery).await;
                }
                Err(error) => give_back_after_failed_copy(delivery, "retry", &error, cx).await,
            }
        }
        Outcome::DeadLetter { reason, detail } => {
            let headers = dead_letter_headers(
                &original_headers,
                &reason,
                &detail,
                &cx.exchange,
                &cx.routing_key,
            );
            match publish_copy(delivery, exchange::DEAD_LETTER, headers, cx).await {
                Ok(()) => {
                    tracing::warn!(reason = %reason, "dead-lettered");
                    cx.session.acks.ack(delivery).await;
                }
                Err(error) => {
                    give_back_after_failed_copy(delivery, "dead-letter", &error, cx).await;
                }
            }
        }
    }
}

/// Publishes a copy of `delivery` (same body and properties, new headers) keyed by the queue name,
/// and waits for the broker's confirm.
async fn publish_copy(
    delivery: &Delivery,
    target_exchange: &str,
    headers: FieldTable,
    cx: &SettleContext,
) -> Result<(), PublishError> {
    let Some(channel) = cx.session.republish.as_ref() else {
        return Err(PublishError::NotConfirmed);
    };
    let deadline = Instant::now() + cx.session.confirm_timeout;
    let properties = delivery.properties.clone().with_headers(headers);
    let confirm = publish_mandatory(
        channel,
        target_exchange,
        &cx.queue,
        &delivery.data,
        properties,
    )
    .await?;
    await_confirm(
        confirm,
        target_exchange,
        &cx.queue,
        deadline,
        cx.session.confirm_timeout,
    )
    .await
}

async fn give_back_after_failed_copy(
    delivery: &Delivery,
    what: &str,
    error: &PublishError,
    cx: &SettleContext,
) {
    tracing::error!(error = %error, what, "could not publish the copy; giving the message back");
    tokio::time::sleep(REPUBLISH_FAILURE_PAUSE).await;
    cx.session.acks.nack_requeue(delivery).await;
}

/// Logs a settle that did not reach the broker; the broker then redelivers the message.
pub(crate) fn report(operation: &'static str, result: Result<bool, lapin::Error>) {
    match result {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            operation,
            "delivery is from before a reconnect; the broker will redeliver it"
        ),
        Err(error) => tracing::warn!(
            operation,
            error = %error,
            "settling failed; the broker will redeliver the message"
        ),
    }
}

fn ceil_secs(delay: Duration) -> u64 {
    delay.as_secs() + u64::from(delay.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(headers: &FieldTable, key: &str) -> Option<String> {
        header_string(headers, key)
    }

    #[test]
    fn dead_letter_headers_add_reason_detail_and_origin_and_keep_the_rest() {
        let mut original = FieldTable::default();
        original.insert("traceparent".into(), long_string("00-abc-def-01"));

        let headers = dead_letter_headers(
            &original,
            "invalid_payload",
            "missing job_id",
            "whatsapp.commands",
            "send",
        );

        assert_eq!(
            string(&headers, HEADER_DEAD_LETTER_REASON).as_deref(),
            Some("invalid_payload")
        );
        assert_eq!(
            string(&headers, HEADER_DEAD_LETTER_DETAIL).as_deref(),
            Some("missing job_id")
        );
        assert_eq!(
            string(&headers, HEADER_ORIGINAL_EXCHANGE).as_deref(),
            Some("whatsapp.commands")
        );
        assert_eq!(
            string(&headers, HEADER_ORIGINAL_ROUTING_KEY).as_deref(),
            Some("send")
        );
        assert_eq!(
            string(&headers, "traceparent").as_deref(),
            Some("00-abc-def-01")
        );
    }

    #[test]
    fn retry_headers_increment_attempt_and_keep_the_first_origin() {
        let first = retry_headers(
            &FieldTable::default(),
            1,
            "whatsapp.events",
            "inbound.message",
        );
        let second = retry_headers(&first, 2, "whatsapp.retry.return", "sync.events");

        assert_eq!(attempt_of(&second), 2);
        assert_eq!(
            string(&second, HEADER_ORIGINAL_EXCHANGE).as_deref(),
            Some("whatsapp.events")
        );
        assert_eq!(
            string(&second, HEADER_ORIGINAL_ROUTING_KEY).as_deref(),
            Some("inbound.message")
        );
    }

    #[test]
    fn long_dead_letter_detail_is_truncated_on_a_char_boundary() {
        let detail = "é".repeat(MAX_DETAIL_BYTES);
        let headers = dead_letter_headers(&FieldTable::default(), "r", &detail, "e", "k");
        let kept = string(&headers, HEADER_DEAD_LETTER_DETAIL).unwrap_or_default();
        assert!(kept.len() <= MAX_DETAIL_BYTES);
        assert!(kept.chars().all(|c| c == 'é'));
    }

    #[test]
    fn delivery_count_and_attempt_are_read_from_any_integer_width() {
        let mut headers = FieldTable::default();
        headers.insert("x-delivery-count".into(), AMQPValue::LongInt(3));
        headers.insert(HEADER_ATTEMPT.into(), AMQPValue::ShortShortUInt(2));
        assert_eq!(header_i64(&headers, "x-delivery-count"), Some(3));
        assert_eq!(attempt_of(&headers), 2);
        assert_eq!(attempt_of(&FieldTable::default()), 0);
    }

    #[test]
    fn retry_delay_rounds_up_to_whole_seconds() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(4)), 4);
        assert_eq!(ceil_secs(Duration::from_millis(4001)), 5);
        assert_eq!(ceil_secs(Duration::ZERO), 0);
    }

    #[test]
    fn incoming_message_debug_never_shows_the_body() {
        let message = IncomingMessage::new("inbound.message", b"+6281234567890 secret".to_vec());
        let printed = format!("{message:?}");
        assert!(!printed.contains("6281234567890"), "{printed}");
        assert!(printed.contains("body_len"));
    }
}

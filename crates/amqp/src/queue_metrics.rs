//! Queue depth and oldest-message age for Prometheus: `wa_queue_depth{queue}` and
//! `wa_queue_oldest_message_age_seconds{queue}`, exported by every worker for the queues it
//! consumes (and their dead-letter queues, depth only).
//!
//! **Depth** is the number of *ready* messages (not counting those delivered and not yet acked),
//! read with a passive `queue.declare` every [`DEFAULT_SAMPLE_INTERVAL`] by a task with a
//! connection of its own ([`spawn_sampler`]): consumption never waits for it, and a missing queue
//! (the broker answers 404 and closes the channel) costs the sampler a new channel, never a
//! consumer.
//!
//! **Age** cannot be read from the broker: RabbitMQ 3.10 reports no `head_message_timestamp` for
//! quorum queues (checked against the management API), and peeking at the head with `basic.get`
//! and a requeue would count toward the queue's delivery limit. So it is measured where messages
//! leave the queue. Every consume loop records, for each delivery it hands to a handler, when that
//! message entered the queue: the AMQP `timestamp` our publisher sets (1-second resolution), or
//! [`HEADER_AVAILABLE_AT`] for a delayed retry, which re-enters its queue only when its tier's TTL
//! expires. A queue is FIFO, so every message still waiting entered after the last one started.
//! The sampler therefore reports
//!
//! - `0` when the queue has no ready message and the consume loop has a free handler slot (nothing
//!   is waiting, neither in the broker nor in the client's prefetch buffer);
//! - otherwise `now − enqueue time of the last message a handler of this process started`: exact
//!   while messages flow (up to the gap between two consecutive messages and the 1-second timestamp
//!   resolution), and growing one second per second while nothing is taken, which is what a stuck
//!   or paused consumer looks like. It errs high, never low;
//! - `0` while this process has taken no message from the queue since it (re)subscribed: a standby
//!   replica of a single-active-consumer queue, for example, so dashboards take `max by (queue)`
//!   over the replicas.
//!
//! A requeued message (crash, `Outcome::Requeue`) keeps its enqueue time, so it counts from its
//! first publish. The registry of consumed queues is process-wide and keyed by queue name (one
//! vhost per process; tests that run several vhosts in one process share the entries).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use tokio_util::sync::CancellationToken;

use crate::connection::Connection;
use crate::management::queue_depth;

/// Gauge: ready messages in `queue`.
pub const QUEUE_DEPTH: &str = "wa_queue_depth";
/// Gauge: seconds the oldest waiting message of `queue` has been waiting (see the module docs).
pub const OLDEST_MESSAGE_AGE: &str = "wa_queue_oldest_message_age_seconds";
/// Header of a delayed-retry copy: when it re-enters its queue (milliseconds since the Unix
/// epoch), i.e. when its retry tier's TTL expires.
pub const HEADER_AVAILABLE_AT: &str = "x-wa-available-at";
/// How often [`spawn_sampler`] reads the depths: often enough for alerts with `for: 5m` and for
/// KEDA-style scaling decisions, rare enough to cost the broker nothing.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// Sentinel of [`Watch::last_started_ms`]: no message started since the consumer (re)subscribed.
const NONE_STARTED: i64 = i64::MIN;

/// What the consume loops of one queue in this process report for the age estimate.
#[derive(Debug)]
pub(crate) struct Watch {
    /// Enqueue time (ms since the epoch) of the message a handler started last, or [`NONE_STARTED`].
    last_started_ms: AtomicI64,
    /// Consume loops of this queue currently waiting for a free handler slot.
    saturated: AtomicUsize,
}

impl Watch {
    fn new() -> Self {
        Self {
            last_started_ms: AtomicI64::new(NONE_STARTED),
            saturated: AtomicUsize::new(0),
        }
    }

    /// A handler starts on a message that entered the queue at `enqueued_ms`.
    pub(crate) fn started(&self, enqueued_ms: Option<i64>) {
        if let Some(enqueued_ms) = enqueued_ms {
            self.last_started_ms.store(enqueued_ms, Ordering::Relaxed);
        }
    }

    /// The consumer (re)subscribed: what it took before says nothing about the queue any more
    /// (another replica may be the active consumer now).
    pub(crate) fn forget_started(&self) {
        self.last_started_ms.store(NONE_STARTED, Ordering::Relaxed);
    }

    /// Marks the loop as waiting for a handler slot until the guard is dropped.
    pub(crate) fn saturate(self: &Arc<Self>) -> SaturatedGuard {
        self.saturated.fetch_add(1, Ordering::Relaxed);
        SaturatedGuard(self.clone())
    }

    fn snapshot(&self) -> (Option<i64>, bool) {
        let last = self.last_started_ms.load(Ordering::Relaxed);
        (
            (last != NONE_STARTED).then_some(last),
            self.saturated.load(Ordering::Relaxed) > 0,
        )
    }
}

/// Clears one "waiting for a handler slot" mark when dropped.
pub(crate) struct SaturatedGuard(Arc<Watch>);

impl Drop for SaturatedGuard {
    fn drop(&mut self) {
        self.0.saturated.fetch_sub(1, Ordering::Relaxed);
    }
}

fn registry() -> &'static Mutex<HashMap<String, Arc<Watch>>> {
    static WATCHES: OnceLock<Mutex<HashMap<String, Arc<Watch>>>> = OnceLock::new();
    WATCHES.get_or_init(Mutex::default)
}

/// The watch of `queue`, created on first use (by its consume loop).
pub(crate) fn watch(queue: &str) -> Arc<Watch> {
    registry()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(queue.to_owned())
        .or_insert_with(|| Arc::new(Watch::new()))
        .clone()
}

/// The watch of `queue` if this process consumes it.
fn existing_watch(queue: &str) -> Option<Arc<Watch>> {
    registry()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(queue)
        .cloned()
}

/// When a delivered message entered its queue, in ms since the epoch: [`HEADER_AVAILABLE_AT`] of
/// a delayed retry, else the AMQP `timestamp` (seconds); `None` when it has neither (a message
/// another producer published without a timestamp).
pub fn enqueued_at_ms(properties: &BasicProperties) -> Option<i64> {
    let available_at = properties
        .headers()
        .as_ref()
        .and_then(|headers| header_millis(headers, HEADER_AVAILABLE_AT));
    let published = properties
        .timestamp()
        .and_then(|secs| i64::try_from(secs).ok())
        .map(|secs| secs.saturating_mul(1000));
    // A replayed dead letter is published afresh but keeps the headers of its retries: the later
    // of the two is when it entered the queue this time.
    match (available_at, published) {
        (Some(a), Some(p)) => Some(a.max(p)),
        (a, p) => a.or(p),
    }
}

fn header_millis(headers: &FieldTable, name: &str) -> Option<i64> {
    match headers.inner().get(name)? {
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::Timestamp(secs) => i64::try_from(*secs).ok().map(|s| s.saturating_mul(1000)),
        _ => None,
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// The age estimate of the module docs, in seconds: `ready` messages in the broker, whether a
/// consume loop waits for a handler slot, and the enqueue time of the last message started.
pub fn oldest_message_age_seconds(
    ready: u32,
    saturated: bool,
    last_started_enqueued_ms: Option<i64>,
    now_ms: i64,
) -> f64 {
    if ready == 0 && !saturated {
        return 0.0;
    }
    match last_started_enqueued_ms {
        // Milliseconds to seconds: f64 holds them exactly for millions of years.
        Some(enqueued) => (now_ms.saturating_sub(enqueued).max(0) as f64) / 1000.0,
        None => 0.0,
    }
}

/// `queues` followed by the dead-letter queue of each (`<queue>.dlq`), for [`spawn_sampler`].
pub fn with_dead_letter_queues<I, S>(queues: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let queues: Vec<String> = queues.into_iter().map(Into::into).collect();
    let dead_letters: Vec<String> = queues
        .iter()
        .map(|q| wa_common::topology::queue::dead_letter_of(q))
        .collect();
    queues.into_iter().chain(dead_letters).collect()
}

/// Starts sampling `queues` every `interval` until `shutdown`, on a connection of its own named
/// `connection_name`. Never fails: an unreachable broker or a missing queue is logged and tried
/// again at the next sample, and the gauges keep their last values meanwhile.
pub fn spawn_sampler(
    amqp_url: String,
    connection_name: String,
    queues: Vec<String>,
    interval: Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    metrics::describe_gauge!(QUEUE_DEPTH, "Ready messages in the queue, sampled");
    metrics::describe_gauge!(
        OLDEST_MESSAGE_AGE,
        metrics::Unit::Seconds,
        "Seconds the oldest waiting message of the queue has waited (0 when none waits)"
    );
    tokio::spawn(async move {
        let mut sampler = Sampler {
            amqp_url,
            connection_name,
            connection: None,
            channel: None,
            failing: HashMap::new(),
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = sampler.sample(&queues) => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(interval) => {}
            }
        }
        sampler.close().await;
    })
}

struct Sampler {
    amqp_url: String,
    connection_name: String,
    connection: Option<Connection>,
    channel: Option<Channel>,
    /// Queues whose last sample failed (logged once per failure streak), with the reason.
    failing: HashMap<String, String>,
}

impl Sampler {
    async fn sample(&mut self, queues: &[String]) {
        for queue in queues {
            let Some(channel) = self.channel().await else {
                // No broker: every queue waits for the next round.
                return;
            };
            match queue_depth(&channel, queue).await {
                Ok(ready) => {
                    if self.failing.remove(queue).is_some() {
                        tracing::info!(queue, "queue depth readable again");
                    }
                    metrics::gauge!(QUEUE_DEPTH, "queue" => queue.clone()).set(f64::from(ready));
                    if let Some(watch) = existing_watch(queue) {
                        let (last, saturated) = watch.snapshot();
                        let age = oldest_message_age_seconds(ready, saturated, last, now_ms());
                        metrics::gauge!(OLDEST_MESSAGE_AGE, "queue" => queue.clone()).set(age);
                    }
                }
                Err(error) => {
                    // A 404 closes the channel; anything else may have too. Open a fresh one.
                    self.channel = None;
                    let reason = error.to_string();
                    if self.failing.insert(queue.clone(), reason.clone()).is_none() {
                        tracing::warn!(queue, error = %reason, "cannot read the queue depth; retrying every sample");
                    }
                }
            }
        }
    }

    async fn channel(&mut self) -> Option<Channel> {
        if let Some(channel) = self.channel.as_ref().filter(|c| c.status().connected()) {
            return Some(channel.clone());
        }
        self.channel = None;
        // Connected once, the connection re-establishes itself after a drop (crate::connection).
        if self.connection.is_none() {
            match crate::connect(&self.amqp_url, &self.connection_name).await {
                Ok(connection) => self.connection = Some(connection),
                Err(error) => {
                    tracing::warn!(error = %error, "queue metrics: no broker connection; retrying at the next sample");
                    return None;
                }
            }
        }
        let connection = self.connection.as_ref()?;
        match connection.create_channel().await {
            Ok(channel) => {
                self.channel = Some(channel.clone());
                Some(channel)
            }
            Err(error) => {
                // Reconnecting: try again at the next sample.
                tracing::debug!(error = %error, "queue metrics: cannot open a channel");
                None
            }
        }
    }

    async fn close(self) {
        if let Some(connection) = self.connection {
            let _ = connection.close(200, "shutdown").await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::LongString;

    #[test]
    fn nothing_waiting_means_age_zero_even_long_after_the_last_message() {
        assert_eq!(
            oldest_message_age_seconds(0, false, Some(1_000), 3_600_000),
            0.0
        );
    }

    #[test]
    fn waiting_messages_age_from_the_last_started_enqueue_time() {
        assert_eq!(
            oldest_message_age_seconds(12, false, Some(10_000), 25_500),
            15.5
        );
        // All handler slots busy: deliveries wait in the prefetch buffer even with 0 ready.
        assert_eq!(
            oldest_message_age_seconds(0, true, Some(10_000), 12_000),
            2.0
        );
    }

    #[test]
    fn a_consumer_that_took_nothing_yet_reports_zero_and_clocks_never_go_negative() {
        assert_eq!(oldest_message_age_seconds(40, false, None, 50_000), 0.0);
        assert_eq!(
            oldest_message_age_seconds(1, false, Some(60_000), 50_000),
            0.0
        );
    }

    #[test]
    fn enqueue_time_is_the_timestamp_or_the_later_retry_availability() {
        let published = BasicProperties::default().with_timestamp(1_700_000_000);
        assert_eq!(enqueued_at_ms(&published), Some(1_700_000_000_000));

        let mut headers = FieldTable::default();
        headers.insert(
            HEADER_AVAILABLE_AT.into(),
            AMQPValue::LongLongInt(1_700_000_016_000),
        );
        let retried = published.clone().with_headers(headers.clone());
        assert_eq!(enqueued_at_ms(&retried), Some(1_700_000_016_000));

        // Replayed from a DLQ an hour later: published afresh, old retry header still there.
        let replayed = BasicProperties::default()
            .with_timestamp(1_700_003_600)
            .with_headers(headers);
        assert_eq!(enqueued_at_ms(&replayed), Some(1_700_003_600_000));

        let mut foreign = FieldTable::default();
        foreign.insert(
            HEADER_AVAILABLE_AT.into(),
            AMQPValue::LongString(LongString::from("soon")),
        );
        let unreadable = BasicProperties::default().with_headers(foreign);
        assert_eq!(enqueued_at_ms(&unreadable), None);
    }

    #[test]
    fn watch_reports_the_last_start_until_the_consumer_resubscribes() {
        let watch = Arc::new(Watch::new());
        assert_eq!(watch.snapshot(), (None, false));
        watch.started(Some(5));
        watch.started(None);
        let guard = watch.saturate();
        assert_eq!(watch.snapshot(), (Some(5), true));
        drop(guard);
        watch.forget_started();
        assert_eq!(watch.snapshot(), (None, false));
    }

    #[test]
    fn dead_letter_queues_follow_the_work_queues() {
        assert_eq!(
            with_dead_letter_queues(["sync.events", "sender.send"]),
            [
                "sync.events",
                "sender.send",
                "sync.events.dlq",
                "sender.send.dlq"
            ]
        );
    }
}

//! Shared test plumbing: a handler built from a closure that also records what it saw, and a
//! consume loop running in the background.

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wa_amqp::Connection;
use wa_amqp::{AmqpError, ConsumerOptions, Handler, IncomingMessage, Outcome};

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info,wa_amqp=debug".into()),
            )
            .with_test_writer()
            .init();
    }
});

/// Logs to the test output when `TEST_LOG` is set.
pub fn init_tracing() {
    LazyLock::force(&TRACING);
}

/// A handler that reports every message it gets and answers with `decide(&message)`.
pub struct Recording<F> {
    seen: mpsc::UnboundedSender<IncomingMessage>,
    decide: F,
}

impl<F, Fut> Handler for Recording<F>
where
    F: Fn(IncomingMessage) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send,
{
    fn handle(&self, msg: IncomingMessage) -> impl Future<Output = Outcome> + Send {
        let _ = self.seen.send(msg.clone());
        (self.decide)(msg)
    }
}

/// A recording handler plus the receiving end of what it saw.
pub fn recording<F, Fut>(decide: F) -> (Arc<Recording<F>>, mpsc::UnboundedReceiver<IncomingMessage>)
where
    F: Fn(IncomingMessage) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send,
{
    let (seen, received) = mpsc::unbounded_channel();
    (Arc::new(Recording { seen, decide }), received)
}

/// A consume loop running in the background until `shutdown` is cancelled.
pub struct RunningConsumer {
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), AmqpError>>,
}

impl RunningConsumer {
    /// Cancels the loop and waits for its graceful end.
    pub async fn stop(self) -> Result<(), AmqpError> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("consumer did not stop within 15 s")
            .expect("consumer task panicked")
    }
}

/// Starts `run_consumer_with` on `queue` in the background.
pub fn spawn_consumer<H: Handler>(
    conn: Arc<Connection>,
    queue: &str,
    options: ConsumerOptions,
    handler: Arc<H>,
) -> RunningConsumer {
    let shutdown = CancellationToken::new();
    let queue = queue.to_owned();
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        wa_amqp::run_consumer_with(&conn, &queue, options, handler, token).await
    });
    RunningConsumer { shutdown, task }
}

/// The next message the handler saw, or a panic after `timeout`.
pub async fn next_seen(
    received: &mut mpsc::UnboundedReceiver<IncomingMessage>,
    timeout: Duration,
) -> IncomingMessage {
    tokio::time::timeout(timeout, received.recv())
        .await
        .expect("handler saw no message in time")
        .expect("handler channel closed")
}

/// A string header's value.
pub fn header_str(headers: &FieldTable, key: &str) -> Option<String> {
    match headers.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// A work queue of the real topology that `basic.get` can read (no single active consumer),
/// with one of its (exchange, routing key) bindings. Chosen from the data so the tests follow
/// topology changes; `sync.events` when it qualifies.
#[derive(Debug, Clone)]
pub struct Target {
    pub queue: String,
    pub exchange: String,
    pub routing_key: String,
}

impl Target {
    /// Its dead-letter queue.
    pub fn dlq(&self) -> String {
        wa_common::topology::queue::dead_letter_of(&self.queue)
    }

    /// The other queues the same (exchange, routing key) reaches.
    pub fn siblings(&self) -> Vec<String> {
        wa_common::topology::topology()
            .queues
            .into_iter()
            .filter(|q| q.name != self.queue)
            .filter(|q| {
                q.bindings
                    .iter()
                    .any(|(e, k)| *e == self.exchange && *k == self.routing_key)
            })
            .map(|q| q.name)
            .collect()
    }
}

pub fn plain_work_queue() -> Target {
    use wa_common::topology::{QueueRole, exchange, queue};
    let topology = wa_common::topology::topology();
    let mut candidates: Vec<_> = topology
        .queues
        .iter()
        .filter(|q| q.role == QueueRole::Work && !q.single_active_consumer)
        .filter_map(|q| {
            let (e, k) = q
                .bindings
                .iter()
                .find(|(e, k)| e != exchange::RETRY_RETURN && !k.contains(['*', '#']))?;
            Some(Target {
                queue: q.name.clone(),
                exchange: e.clone(),
                routing_key: k.clone(),
            })
        })
        .collect();
    candidates.sort_by_key(|t| t.queue != queue::SYNC_EVENTS);
    candidates
        .into_iter()
        .next()
        .expect("the topology has a work queue without single active consumer")
}

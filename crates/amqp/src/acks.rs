//! Consumer acks coalesced into `basic.ack(multiple)` frames.
//!
//! On a quorum queue every ack frame becomes a command in the queue's Raft log. Acking each
//! message with its own frame cost the broker about three times the CPU of the delivery itself
//! (RabbitMQ 3.10, 20,000 messages: 45 µs per message delivered and acked one by one, 12 µs with
//! one `multiple` ack per 64). So a handler's ack is only recorded; a flusher sends, every
//! [`FLUSH_EVERY`], one `multiple` ack for the longest run of acked deliveries below the oldest
//! unsettled one. A delivery acked while an older one is still being handled waits at most
//! [`HOLD`] and is then acked on its own, so one slow handler never holds back the others' acks.
//!
//! A `multiple` ack covers every unacked delivery tag up to its own on the channel. It is safe
//! because deliveries are taken from the consumer in tag order and each is registered as
//! unsettled before its handler starts: a covered tag is either acked by its handler or already
//! rejected/nacked (a reject is sent before its tag leaves the unsettled set). Deliveries still
//! in lapin's buffer have higher tags than any taken one. Nothing is acked before its handler
//! said so: an aborted or unfinished handler's tag stays unsettled and bounds every later
//! `multiple` ack.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::connection::answered;
use crate::consumer::report;

/// How long acks gather before a flush sends them.
pub const FLUSH_EVERY: Duration = Duration::from_millis(5);
/// Longest an ack waits behind an older delivery that is still being handled.
pub const HOLD: Duration = Duration::from_millis(25);
/// Longest we wait for lapin to take an ack, nack or reject (see [`answered`]): waiting for good
/// once kept a consumer from ever re-subscribing (a chaos run's scheduler, after a broker restart
/// under load). The broker redelivers what a dead channel held.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// The acks of one consume session (one channel: delivery tags restart with a new one).
pub(crate) struct AckBatch {
    state: Mutex<State<Acker>>,
    wake: Notify,
    stop: CancellationToken,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl AckBatch {
    /// A batch with its flusher task running.
    pub(crate) fn start() -> Arc<Self> {
        let batch = Arc::new(Self {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            stop: CancellationToken::new(),
            flusher: Mutex::new(None),
        });
        let flusher = tokio::spawn(batch.clone().run());
        *batch.flusher.lock().unwrap_or_else(PoisonError::into_inner) = Some(flusher);
        batch
    }

    /// Stops the flusher once it has sent every ack recorded (or given up after
    /// [`SETTLE_TIMEOUT`]); later acks go out directly.
    pub(crate) async fn finish(&self) {
        self.stop.cancel();
        let flusher = self
            .flusher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(mut flusher) = flusher else { return };
        // Each settle is bounded, but many of them on a dead connection would add up.
        match tokio::time::timeout(SETTLE_TIMEOUT, &mut flusher).await {
            Ok(Err(error)) if !error.is_cancelled() => {
                tracing::error!(error = %error, "ack flusher failed");
            }
            Ok(_) => {}
            Err(_) => {
                tracing::warn!(
                    "the last acks got no answer from the connection; the broker will redeliver what its channel held"
                );
                flusher.abort();
                // As the flusher would have: acks recorded from now go out directly.
                self.lock().stopped = true;
            }
        }
    }

    /// Registers a delivery taken from the consumer, before its handler starts.
    pub(crate) fn delivered(&self, tag: u64) {
        self.lock().unsettled.insert(tag);
    }

    /// Records that the handler's work on `delivery` is done and it may be acked.
    pub(crate) async fn ack(&self, delivery: &Delivery) {
        let was_empty = {
            let mut state = self.lock();
            if state.stopped {
                None
            } else {
                let was_empty = state.ready.is_empty();
                state.ack(
                    delivery.delivery_tag,
                    delivery.acker.clone(),
                    Instant::now(),
                );
                Some(was_empty)
            }
        };
        match was_empty {
            Some(true) => self.wake.notify_one(),
            Some(false) => {}
            // The session is over: ack directly (a delivery from before a reconnect is refused
            // by lapin, and the broker redelivers it).
            None => {
                settle("basic.ack", delivery.acker.ack(BasicAckOptions::default())).await;
            }
        }
    }

    /// Gives `delivery` back with `basic.reject(requeue)` (counts toward the delivery limit).
    pub(crate) async fn reject_requeue(&self, delivery: &Delivery) {
        settle(
            "basic.reject",
            delivery.reject(BasicRejectOptions { requeue: true }),
        )
        .await;
        self.given_back(delivery.delivery_tag);
    }

    /// Gives `delivery` back with `basic.nack(requeue)`.
    pub(crate) async fn nack_requeue(&self, delivery: &Delivery) {
        settle(
            "basic.nack",
            delivery.nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            }),
        )
        .await;
        self.given_back(delivery.delivery_tag);
    }

    /// Only once its reject or nack is sent may a tag stop bounding the `multiple` acks: sent
    /// later, the ack would reach over it first.
    fn given_back(&self, tag: u64) {
        self.lock().unsettled.remove(&tag);
    }

    async fn run(self: Arc<Self>) {
        'idle: loop {
            tokio::select! {
                () = self.stop.cancelled() => break 'idle,
                () = self.wake.notified() => {}
            }
            loop {
                tokio::select! {
                    () = self.stop.cancelled() => break 'idle,
                    () = tokio::time::sleep(FLUSH_EVERY) => {}
                }
                if !self.flush(false).await {
                    continue 'idle;
                }
            }
        }
        self.lock().stopped = true;
        self.flush(true).await;
    }

    /// Sends what may be sent now (everything acked, with `all`); true when acks are left.
    async fn flush(&self, all: bool) -> bool {
        let (multiple, single, left) = {
            let mut state = self.lock();
            let (multiple, single) = state.take(Instant::now(), HOLD, all);
            (multiple, single, !state.ready.is_empty())
        };
        if let Some(acker) = multiple {
            settle("basic.ack", acker.ack(BasicAckOptions { multiple: true })).await;
        }
        for acker in single {
            settle("basic.ack", acker.ack(BasicAckOptions::default())).await;
        }
        left
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<Acker>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Awaits an ack, nack or reject for at most [`SETTLE_TIMEOUT`] and logs how it went.
pub(crate) async fn settle(
    operation: &'static str,
    sent: impl Future<Output = Result<bool, lapin::Error>>,
) {
    report(operation, answered(operation, SETTLE_TIMEOUT, sent).await);
}

/// Delivery tags in flight and the acks waiting to be sent, with whatever sends an ack (`A`).
struct State<A> {
    /// Taken from the consumer, not yet acked, rejected or nacked.
    unsettled: BTreeSet<u64>,
    /// Acked by their handler, not yet sent: tag → (sender, when acked).
    ready: BTreeMap<u64, (A, Instant)>,
    /// The flusher has stopped: acks go out directly.
    stopped: bool,
}

impl<A> Default for State<A> {
    fn default() -> Self {
        Self {
            unsettled: BTreeSet::new(),
            ready: BTreeMap::new(),
            stopped: false,
        }
    }
}

impl<A> State<A> {
    fn ack(&mut self, tag: u64, sender: A, now: Instant) {
        self.unsettled.remove(&tag);
        self.ready.insert(tag, (sender, now));
    }

    /// Takes what to send now: the sender of the highest acked tag below every unsettled one
    /// (one `multiple` ack for all of them), and those acked at least `hold` ago (or all, with
    /// `all`) above an unsettled one, each on its own.
    fn take(&mut self, now: Instant, hold: Duration, all: bool) -> (Option<A>, Vec<A>) {
        let oldest_unsettled = self.unsettled.first().copied().unwrap_or(u64::MAX);
        let above = self.ready.split_off(&oldest_unsettled);
        let multiple = std::mem::take(&mut self.ready)
            .into_values()
            .next_back()
            .map(|(sender, _)| sender);
        let (due, waiting): (BTreeMap<_, _>, BTreeMap<_, _>) = above
            .into_iter()
            .partition(|(_, (_, at))| all || now.duration_since(*at) >= hold);
        self.ready = waiting;
        let single = due.into_values().map(|(sender, _)| sender).collect();
        (multiple, single)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(unsettled: &[u64]) -> State<u64> {
        State {
            unsettled: unsettled.iter().copied().collect(),
            ..State::default()
        }
    }

    #[test]
    fn acks_below_every_unsettled_delivery_go_as_one_multiple_ack_of_the_highest() {
        let now = Instant::now();
        let mut s = state(&[1, 2, 3, 4, 5]);
        for tag in [3, 1, 2] {
            s.ack(tag, tag, now);
        }

        assert_eq!(s.take(now, HOLD, false), (Some(3), vec![]));
        assert!(s.ready.is_empty());
        assert_eq!(s.unsettled.iter().copied().collect::<Vec<_>>(), vec![4, 5]);
    }

    #[test]
    fn an_ack_above_an_unsettled_delivery_waits_then_goes_alone() {
        let now = Instant::now();
        let mut s = state(&[1, 2, 3]);
        s.ack(2, 2, now);
        s.ack(3, 3, now + HOLD / 2);

        // Tag 1 is still being handled: nothing may cover it.
        assert_eq!(s.take(now + HOLD / 2, HOLD, false), (None, vec![]));
        assert_eq!(s.take(now + HOLD, HOLD, false), (None, vec![2]));
        assert_eq!(s.take(now + HOLD * 2, HOLD, false), (None, vec![3]));
        assert_eq!(s.unsettled.iter().copied().collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn a_rejected_delivery_no_longer_bounds_the_multiple_ack() {
        let now = Instant::now();
        let mut s = state(&[1, 2, 3]);
        s.ack(2, 2, now);
        s.ack(3, 3, now);
        s.unsettled.remove(&1);

        assert_eq!(s.take(now, HOLD, false), (Some(3), vec![]));
    }

    #[test]
    fn the_final_flush_sends_every_ack_but_never_an_unfinished_delivery() {
        let now = Instant::now();
        let mut s = state(&[1, 2, 3, 4]);
        s.ack(1, 1, now);
        s.ack(3, 3, now);
        s.ack(4, 4, now);

        // 2 never finished: 1 goes as a multiple ack (covering only itself), 3 and 4 one by one.
        assert_eq!(s.take(now, HOLD, true), (Some(1), vec![3, 4]));
        assert_eq!(s.unsettled.iter().copied().collect::<Vec<_>>(), vec![2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_settle_the_connection_never_answers_is_given_up_after_the_timeout() {
        let started = Instant::now();

        settle("basic.ack", std::future::pending()).await;

        assert_eq!(started.elapsed(), SETTLE_TIMEOUT);
    }

    #[test]
    fn nothing_acked_sends_nothing() {
        let mut s = state(&[1]);
        assert_eq!(s.take(Instant::now(), HOLD, true), (None, vec![]));
    }
}

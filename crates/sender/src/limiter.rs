//! The per-business-number throughput cap, correct across any number of replicas.
//!
//! Every send takes a slot from a GCRA schedule kept in PostgreSQL (`rate_limits`, one row per
//! phone number id): `tat` is the earliest free slot; a reservation of `n` slots moves it by
//! `n × interval` under the row lock, so slots of different replicas never overlap and the sum
//! over replicas stays at most `rate` in any one-second window. Slots are spaced
//! `1/rate × (1 + margin)` apart with no burst allowance, so even after an idle period or a failover
//! no second holds more than `rate` sends; the small margin absorbs network jitter between us and
//! Meta's own sliding window.
//!
//! Slots are reserved at least [`SLOT_LEAD`] in the future and handed out that early, so the job
//! is claimed in the database before its slot and the Graph call starts on time; a send that still
//! misses its slot by more than [`SLOT_TOLERANCE`] takes a new slot instead of bunching up.
//!
//! In the process, one pump per number reserves slots in small batches (≤ 250 ms worth, so one
//! round trip serves many sends at high rates) and hands each slot, when its time comes, to the
//! highest-priority waiter (`interactive` before `transactional` before `bulk`, then FIFO). A slot
//! with no waiter left is simply unused: the cap is never exceeded, only under-used.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wa_common::contracts::send_job::Priority;
use wa_db::PgPool;

/// At most how long before its slot a send is handed out (four slot intervals when shorter), to claim the job in the database first: the
/// Graph call then starts on time, not a database round trip late.
pub const SLOT_LEAD: Duration = Duration::from_millis(50);
/// A send that could not start within this much after its slot gives the slot up and takes a new
/// one: a late send could otherwise land in the next second together with that second's own sends.
pub const SLOT_TOLERANCE: Duration = Duration::from_millis(5);

/// Granularity of tokio's timer.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// The limiter of one business phone number.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    key: String,
    phone_number_id: String,
    interval: Duration,
    lead: Duration,
    batch_max: usize,
    pool: PgPool,
    waiters: Mutex<BinaryHeap<Waiter>>,
    wake: Notify,
    seq: AtomicU64,
}

struct Waiter {
    rank: u8,
    seq: u64,
    tx: oneshot::Sender<Instant>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.rank == other.rank && self.seq == other.seq
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    // BinaryHeap pops the greatest: lowest rank (most urgent), then lowest sequence.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other
            .rank
            .cmp(&self.rank)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

fn rank(priority: Priority) -> u8 {
    match priority {
        Priority::Interactive => 0,
        Priority::Transactional => 1,
        Priority::Bulk => 2,
    }
}

/// The limiter was shut down before a slot was granted.
#[derive(Debug, thiserror::Error)]
#[error("rate limiter stopped")]
pub struct LimiterStopped;

impl RateLimiter {
    /// A limiter for `phone_number_id` at `rate_per_second` (sum over all replicas); call
    /// [`RateLimiter::run`] once to start its pump.
    pub fn new(
        pool: PgPool,
        phone_number_id: &str,
        rate_per_second: u32,
        margin_permille: u32,
    ) -> Self {
        let rate = f64::from(rate_per_second.max(1));
        let interval =
            Duration::from_secs_f64(1.0 / rate * (1.0 + f64::from(margin_permille) / 1000.0));
        let batch_max = usize::try_from(rate_per_second / 4)
            .unwrap_or(1)
            .clamp(1, 5_000);
        Self {
            inner: Arc::new(Inner {
                key: format!("sender:{phone_number_id}"),
                phone_number_id: phone_number_id.to_owned(),
                interval,
                // Four slots ahead at most: enough for the claim, no latency at high rates.
                lead: (interval * 4).min(SLOT_LEAD),
                batch_max,
                pool,
                waiters: Mutex::new(BinaryHeap::new()),
                wake: Notify::new(),
                seq: AtomicU64::new(0),
            }),
        }
    }

    /// Waits for a send slot; more urgent priorities are served first. Returns the slot's instant,
    /// [`SLOT_LEAD`] ahead at most: prepare the send, then start it at (not before, and not more
    /// than [`SLOT_TOLERANCE`] after) that instant.
    pub async fn acquire(&self, priority: Priority) -> Result<Instant, LimiterStopped> {
        let (tx, rx) = oneshot::channel();
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        self.lock().push(Waiter {
            rank: rank(priority),
            seq,
            tx,
        });
        self.inner.wake.notify_one();
        rx.await.map_err(|_| LimiterStopped)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BinaryHeap<Waiter>> {
        self.inner
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The pump: reserves slots in PostgreSQL and hands them out until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let inner = &self.inner;
        let mut granted_in_second: std::collections::VecDeque<Instant> =
            std::collections::VecDeque::new();
        loop {
            let waiting = self.lock().len();
            if waiting == 0 {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = inner.wake.notified() => continue,
                }
            }
            let count = waiting.min(inner.batch_max);
            let first_delay = match self.reserve(count).await {
                Ok(delay) => delay,
                Err(error) => {
                    tracing::warn!(error = %error, phone_number_id = %inner.phone_number_id, "rate slot reservation failed; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    }
                }
            };
            let start = Instant::now() + first_delay;
            for i in 0..count {
                let slot = start + inner.interval * u32::try_from(i).unwrap_or(u32::MAX);
                let hand_out = slot.checked_sub(inner.lead).unwrap_or(slot);
                // Handing a slot out up to a timer tick early is harmless (its waiter still starts
                // at the slot); sleeping for every sub-millisecond slot would cap us near 1,000/s.
                if hand_out > Instant::now() + TIMER_TICK {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep_until(hand_out) => {}
                    }
                }
                // Hand the slot to the most urgent waiter still listening.
                loop {
                    let Some(waiter) = self.lock().pop() else {
                        break;
                    };
                    if waiter.tx.send(slot).is_ok() {
                        let now = Instant::now();
                        granted_in_second.push_back(now);
                        while granted_in_second
                            .front()
                            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
                        {
                            granted_in_second.pop_front();
                        }
                        metrics::gauge!("wa_sender_rate_per_second", "phone_number_id" => inner.phone_number_id.clone())
                            .set(granted_in_second.len() as f64);
                        break;
                    }
                }
            }
        }
        // Wake every waiter with an error (their sender is dropped).
        self.lock().clear();
    }

    async fn reserve(&self, count: usize) -> anyhow::Result<Duration> {
        let mut conn = self.inner.pool.get().await?;
        let interval_us = i64::try_from(self.inner.interval.as_micros()).unwrap_or(i64::MAX);
        let lead_us = i64::try_from(self.inner.lead.as_micros()).unwrap_or(0);
        let delay_secs = wa_db::models::sender::reserve_rate_slots(
            &mut conn,
            &self.inner.key,
            interval_us,
            i64::try_from(count).unwrap_or(1),
            lead_us,
        )
        .await?;
        Ok(Duration::from_secs_f64(delay_secs.max(0.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_pop_by_priority_then_arrival() {
        let mut heap = BinaryHeap::new();
        for (rank, seq) in [(2, 0), (1, 1), (0, 2), (1, 3), (0, 4)] {
            let (tx, _rx) = oneshot::channel();
            heap.push(Waiter { rank, seq, tx });
        }
        let order: Vec<(u8, u64)> =
            std::iter::from_fn(|| heap.pop().map(|w| (w.rank, w.seq))).collect();
        assert_eq!(order, vec![(0, 2), (0, 4), (1, 1), (1, 3), (2, 0)]);
    }
}

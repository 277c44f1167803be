//! The per-business-number throughput cap, correct across any number of replicas.
//!
//! Every send takes a slot from a sliding-window log kept in PostgreSQL (`rate_limits`, one row
//! per phone number id, function `reserve_send_slots`). Each slot comes with an allowance: how late
//! its send may start (the tolerance near the cap, [`LOOSE_ALLOWANCE`] far below it). A slot is
//! never less than `1 s × (1 + margin) - tolerance` after the latest start allowed to the slot
//! `rate` places before it, and never less than a spacing floor after the previous one. Reservations of all replicas go through the same row under its lock, so
//! the sum over replicas stays at most `rate` in any one-second window, even right after an idle
//! period or a failover; the small margin absorbs network jitter between us and Meta's own
//! sliding window. Unlike a fixed pace of one slot per `1/rate`, a quiet number sends a full
//! window's worth at once (spread over a quarter of the window by the spacing floor), so an agent's
//! reply or the start of a broadcast does not queue behind an empty schedule.
//!
//! Slots are reserved at least a lead in the future and handed out that early (see
//! [`SLOT_LEAD`]), so the job is claimed in the database before its slot and the Graph call starts
//! on time; a send that still misses its slot by more than its allowance ([`Slot::allowance`]) takes
//! a new slot instead of bunching up, as a *prepared* waiter (served first, [`PREPARED_LEAD`] ahead).
//!
//! The slots bound when sends *start*; Meta counts them when they *arrive*, and a request held up
//! on the way (a stalled host, a congested link, a receiver that reads late) can arrive together
//! with sends started a second after it. So each process also keeps the rule on answers: a send
//! starts only while fewer than `rate` of the number's sends from this process are unanswered or
//! were answered less than a second ago ([`RateLimiter::start_send`]). A request arrives before
//! its answer, and every later one after it starts, so however the network delays them, no second
//! at the receiver holds more than `rate` of this process's sends. With a fast Graph API the rule
//! never binds; with a slow one it costs a window its answer latency.
//!
//! In the process, one pump per number reserves slots in batches (a quarter of the cap at most, so
//! one round trip serves many sends at high rates), the next batch while the current one is being
//! handed out, and hands each slot, when its time comes, to the most urgent waiter (prepared, then
//! `interactive` before `transactional` before `bulk`, then publish order). A slot with no waiter
//! left is simply unused: the cap is never exceeded, only under-used.

use std::cmp::Ordering as CmpOrdering;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wa_common::contracts::send_job::Priority;
use wa_db::PgPool;
use wa_db::models::sender::SlotWindow;

/// How long before its slot a send is handed out, at low rates: four average slot intervals
/// (`window / rate`), within
/// [`MIN_LEAD`] and this. The send claims the job in the database meanwhile (one batched round
/// trip, a commit), so the Graph call starts on time, not a round trip late. When claims take
/// longer (a busy database, big batches at high rates) the lead grows to twice their recent
/// average, up to [`MAX_LEAD`]: a claim slower than the lead (plus the tolerance) wastes the
/// slot and makes the send wait for another.
pub const SLOT_LEAD: Duration = Duration::from_millis(50);
/// Shortest lead (high rates, where four intervals are a few milliseconds).
pub const MIN_LEAD: Duration = Duration::from_millis(20);
/// Longest lead the claim latency can push it to.
pub const MAX_LEAD: Duration = Duration::from_millis(250);
/// Lead of a send whose job is already claimed (it missed its first slot): a timer tick and a
/// wake-up.
pub const PREPARED_LEAD: Duration = Duration::from_millis(2);
/// A send that could not start within this much after its slot (or half the margin's jitter
/// budget, when that is more, up to [`MAX_SLOT_TOLERANCE`]; see [`slot_window`]) gives the slot up and takes a new
/// one: a late send could otherwise land in the next second together with that second's own sends.
pub const SLOT_TOLERANCE: Duration = Duration::from_millis(5);

/// The most of the margin our own lateness takes (see [`slot_window`]): enough for a timer tick
/// and a wake-up on a busy host; the rest of a wider margin is left to the network and Meta.
pub const MAX_SLOT_TOLERANCE: Duration = Duration::from_millis(10);

/// How late a send may start after its slot while its number runs far below the cap (the slots
/// still binding and the waiting sends under a quarter of it): on a busy host a claim or a
/// wake-up can take tens of milliseconds longer than planned, and with the window nowhere near
/// full a late start costs nothing. The database keeps the window rule on the slots' ends, so the
/// cap holds however late within the allowance they start; the price is paid only when a quiet
/// number suddenly fills its window: the first window's slots push the next one back by at most
/// this much, once.
pub const LOOSE_ALLOWANCE: Duration = Duration::from_millis(50);

/// Longest lead a reservation asks the database for (see [`Inner::reservation_lead`]).
pub const MAX_RESERVATION_LEAD: Duration = Duration::from_secs(1);

/// The next batch of slots is reserved this long (plus the lead) before the reserved ones run
/// out, so the reservation's round trip (on a dedicated connection) never leaves a gap.
pub const REFILL_AHEAD: Duration = Duration::from_millis(100);
/// Pause after a failed reservation.
const RESERVE_RETRY: Duration = Duration::from_millis(200);

/// Within a window, sends go at most this many times faster than `rate` spread evenly: a full
/// window's worth takes a quarter of it instead of firing at one instant, which keeps the burst
/// gentle on Meta and on our own CPU while still finishing a broadcast's first second early.
pub const PEAK_FACTOR: u32 = 4;

/// At most this many slots are out with sends still claiming their jobs. The claims of a batch
/// of slots are written in batches too; at high caps (or with no effective cap) a pump that handed
/// out every waiting send at once would queue thousands of claims behind each other, most of which
/// would come back after their slot and miss it. Bounding the hand-outs by the claims in flight
/// makes the pump follow what the database absorbs, and reservations follow the hand-outs. At
/// ordinary caps (80, 1,000/s) the bound never binds.
pub const CLAIMS_IN_FLIGHT: usize = 256;

/// How long after its answer a send still counts against the cap (see [`RateLimiter::start_send`]):
/// the receiver's window.
pub const ANSWER_WINDOW: Duration = Duration::from_secs(1);

/// The key of a business number in the database: its slot log's row, and its sending lease.
pub fn number_key(phone_number_id: &str) -> String {
    format!("sender:{phone_number_id}")
}

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
    shape: SlotWindow,
    /// The lead before any claim latency is known (see [`SLOT_LEAD`]).
    base_lead: Duration,
    /// Recent average time from a send getting its slot to its job being claimed, in µs.
    claim_us: AtomicU64,
    /// Recent average time a reservation takes, from asking for a connection to the answer, in µs.
    reserve_us: AtomicU64,
    /// Slots handed out whose send is still claiming its job (see [`CLAIMS_IN_FLIGHT`]).
    claiming: AtomicUsize,
    batch_max: usize,
    pool: PgPool,
    waiters: Mutex<Waiters>,
    wake: Notify,
    /// This process's sends still counting against the cap at the receiver.
    answers: Mutex<AnswerWindow>,
}

/// This process's sends that may still share a second with a new one at the receiver: the
/// unanswered ones, and the ones answered less than [`ANSWER_WINDOW`] ago.
#[derive(Default)]
struct AnswerWindow {
    unanswered: usize,
    /// When each answered send stops counting (its answer plus [`ANSWER_WINDOW`]), earliest first.
    counting_until: BinaryHeap<Reverse<Instant>>,
}

impl AnswerWindow {
    /// Starts a send at `now` if that is not past `deadline` and fewer than `cap` count; otherwise
    /// the instant the first of them stops counting (`None` when it is too late, or all are
    /// unanswered: none stops within the next second).
    fn try_start(
        &mut self,
        now: Instant,
        deadline: Instant,
        cap: usize,
    ) -> Result<(), Option<Instant>> {
        // A wait for room can wake late on a busy host; past the slot's allowance the send would
        // bunch with the next slots' sends.
        if now > deadline {
            return Err(None);
        }
        while self
            .counting_until
            .peek()
            .is_some_and(|Reverse(until)| *until <= now)
        {
            self.counting_until.pop();
        }
        if self.unanswered + self.counting_until.len() < cap {
            self.unanswered += 1;
            Ok(())
        } else {
            Err(self.counting_until.peek().map(|Reverse(until)| *until))
        }
    }

    /// A send started by [`AnswerWindow::try_start`] got its answer (or was abandoned) at `at`.
    fn answered(&mut self, at: Instant) {
        self.unanswered = self.unanswered.saturating_sub(1);
        self.counting_until.push(Reverse(at + ANSWER_WINDOW));
    }
}

/// Held from the start of a Graph call until its answer (see [`RateLimiter::start_send`]);
/// dropping it records the answer, so the send keeps counting for [`ANSWER_WINDOW`] after.
#[must_use = "drop it when the Graph call has answered"]
pub struct InFlight {
    inner: Arc<Inner>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = Instant::now();
        self.inner
            .answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .answered(now);
    }
}

struct Waiter {
    /// Its job is claimed already (it missed a slot): it needs no lead and goes first.
    prepared: bool,
    rank: u8,
    seq: u64,
    tx: oneshot::Sender<Slot>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    // BinaryHeap pops the greatest: prepared first, then the lowest rank (most urgent), then the
    // lowest sequence.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.prepared
            .cmp(&other.prepared)
            .then_with(|| other.rank.cmp(&self.rank))
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// The sends waiting for a slot, most urgent first, and how many of them are prepared (counted as
/// they come and go: the pump asks on every turn).
#[derive(Default)]
struct Waiters {
    heap: BinaryHeap<Waiter>,
    prepared: usize,
}

impl Waiters {
    fn push(&mut self, waiter: Waiter) {
        self.prepared += usize::from(waiter.prepared);
        self.heap.push(waiter);
    }

    fn pop(&mut self) -> Option<Waiter> {
        let waiter = self.heap.pop()?;
        self.prepared -= usize::from(waiter.prepared);
        Some(waiter)
    }

    fn peek(&self) -> Option<&Waiter> {
        self.heap.peek()
    }
}

fn rank(priority: Priority) -> u8 {
    match priority {
        Priority::Interactive => 0,
        Priority::Transactional => 1,
        Priority::Bulk => 2,
    }
}

/// The slot rule for `rate_per_second` with `margin_permille` of jitter margin: at most `rate` in
/// `1 s + margin`, at least `window / rate / PEAK_FACTOR` apart.
pub fn slot_window(rate_per_second: u32, margin_permille: u32) -> SlotWindow {
    let cap = rate_per_second.max(1);
    let margin = Duration::from_millis(u64::from(margin_permille));
    let window = Duration::from_secs(1) + margin;
    // Two sends a window apart may be delayed differently by up to the margin before a second
    // holds `rate + 1` of them; our own lateness takes at most half of that (at least
    // SLOT_TOLERANCE, at most MAX_SLOT_TOLERANCE), the network and Meta the rest.
    let tolerance = (margin / 2).clamp(SLOT_TOLERANCE, MAX_SLOT_TOLERANCE);
    SlotWindow {
        cap,
        window,
        spacing: window / cap / PEAK_FACTOR,
        tolerance,
        loose_allowance: LOOSE_ALLOWANCE.max(tolerance),
    }
}

/// A granted send slot.
pub struct Slot {
    /// When the send may start (not before, and not more than `allowance` after).
    pub at: Instant,
    /// How late after `at` the send may still start; later, it must give the slot up and take
    /// another (see [`LOOSE_ALLOWANCE`]).
    pub allowance: Duration,
    /// Held while the send claims its job (slots for unclaimed sends only); released by
    /// [`Slot::claimed`] or when the slot is dropped.
    claiming: Option<ClaimInFlight>,
}

impl Slot {
    /// The send's claim came back (successfully or not) after `took`: the slot no longer counts
    /// against [`CLAIMS_IN_FLIGHT`], and a successful claim's time feeds the lead.
    pub fn claimed(&mut self, took: Option<Duration>) {
        // Taking the count out of the slot releases it (see `ClaimInFlight::drop`).
        if let Some(claiming) = self.claiming.take()
            && let Some(took) = took
        {
            claiming.inner.observe_claim(took);
        }
    }
}

/// One slot counted in [`Inner::claiming`] until dropped.
struct ClaimInFlight {
    inner: Arc<Inner>,
}

impl Drop for ClaimInFlight {
    fn drop(&mut self) {
        self.inner.claiming.fetch_sub(1, Ordering::Relaxed);
        self.inner.wake.notify_one();
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
        let shape = slot_window(rate_per_second, margin_permille);
        let rate = shape.cap;
        let average_interval = shape.window / rate;
        let batch_max = usize::try_from(rate / 4).unwrap_or(1).clamp(1, 5_000);
        Self {
            inner: Arc::new(Inner {
                key: number_key(phone_number_id),
                phone_number_id: phone_number_id.to_owned(),
                shape,
                base_lead: (average_interval * 4).clamp(MIN_LEAD, SLOT_LEAD),
                claim_us: AtomicU64::new(0),
                reserve_us: AtomicU64::new(0),
                claiming: AtomicUsize::new(0),
                batch_max,
                pool,
                waiters: Mutex::new(Waiters::default()),
                wake: Notify::new(),
                answers: Mutex::new(AnswerWindow::default()),
            }),
        }
    }

    /// Waits for a send slot; more urgent priorities are served first, then the lowest `order`
    /// (the delivery's position in its queue, so a priority's jobs go out in publish order
    /// although their handlers reach the limiter in any order). Returns the slot, one lead ahead
    /// of its instant at most: claim the job (then call [`Slot::claimed`]), then start the send at
    /// (not before, and not more than [`Slot::allowance`] after) that instant.
    ///
    /// `prepared`: the job is claimed already (the send missed its slot and needs another). Such
    /// sends get slots first and only [`PREPARED_LEAD`] ahead, since nothing is left to do
    /// before the call.
    pub async fn acquire(
        &self,
        priority: Priority,
        order: u64,
        prepared: bool,
    ) -> Result<Slot, LimiterStopped> {
        let (tx, rx) = oneshot::channel();
        self.lock().push(Waiter {
            prepared,
            rank: rank(priority),
            seq: order,
            tx,
        });
        self.inner.wake.notify_one();
        rx.await.map_err(|_| LimiterStopped)
    }

    /// Starts a Graph call under the rule on answers: waits, at most until `deadline` (the slot's
    /// allowance), until fewer than `rate` of this process's sends to the number are unanswered or
    /// answered less than [`ANSWER_WINDOW`] ago. `None`: the deadline came first (the send must
    /// take a new slot). Hold the answer until the call returns.
    pub async fn start_send(&self, deadline: Instant) -> Option<InFlight> {
        let cap = usize::try_from(self.inner.shape.cap).unwrap_or(usize::MAX);
        loop {
            let now = Instant::now();
            let started = self
                .inner
                .answers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .try_start(now, deadline, cap);
            match started {
                Ok(()) => {
                    return Some(InFlight {
                        inner: self.inner.clone(),
                    });
                }
                // An unanswered send, answered now, would count for a second more.
                Err(Some(until)) if until <= deadline => tokio::time::sleep_until(until).await,
                Err(_) => return None,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.inner
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The pump: reserves slots in PostgreSQL and hands them out until `shutdown`.
    ///
    /// The next batch of slots is reserved while the current one is still being handed out (as
    /// soon as the reserved slots end less than [`REFILL_AHEAD`] plus the lead from now), so the
    /// database round trip never opens a gap in the schedule while sends are waiting.
    pub async fn run(self, shutdown: CancellationToken) {
        let inner = &self.inner;
        // Reserved slots and how late their sends may start, ascending.
        let mut reserved: VecDeque<(Instant, Duration)> = VecDeque::new();
        let mut reserving: Option<JoinHandle<anyhow::Result<Reserved>>> = None;
        let mut retry_at: Option<Instant> = None;
        // Our latest slots (at most `cap`), as read on our clock.
        let mut ours = LocalWindow::new(inner.shape);
        let mut granted_in_second: VecDeque<Instant> = VecDeque::new();
        let rate_gauge = metrics::gauge!("wa_sender_rate_per_second", "phone_number_id" => inner.phone_number_id.clone());
        let unused = metrics::counter!("wa_sender_unused_slots_total", "phone_number_id" => inner.phone_number_id.clone());
        loop {
            let now = Instant::now();
            // A slot whose latest start passed unused is gone: the cap is only ever under-used.
            // (One whose instant passed may still go to a claimed send, within its allowance.)
            while reserved
                .front()
                .is_some_and(|(slot, allowance)| *slot + *allowance < now)
            {
                reserved.pop_front();
                unused.increment(1);
            }
            // Hand out every slot whose hand-out time has come, most urgent waiter first. Handing a
            // slot out up to a timer tick early is harmless (its waiter still starts at the slot);
            // sleeping for every sub-millisecond slot would cap us near 1,000/s.
            while let Some(&(slot, allowance)) = reserved.front() {
                let Some((lead, prepared)) = self.next_lead() else {
                    break;
                };
                if slot.checked_sub(lead).unwrap_or(slot) > now + TIMER_TICK {
                    break;
                }
                if !prepared && slot < now + inner.claim_time().min(inner.lead() / 2) {
                    // Too close for a send that still has to claim its job (the pump woke late,
                    // or the slot was reserved for claimed sends): it would only miss it. Never
                    // more than half the lead: when claims take longer than the longest lead (a
                    // starved host), every slot would be too close, nobody would claim, and the
                    // claim time that decides it would never come down.
                    reserved.pop_front();
                    unused.increment(1);
                    continue;
                }
                if !self.hand_out(slot, allowance) {
                    break;
                }
                reserved.pop_front();
                granted_in_second.push_back(now);
                while granted_in_second
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
                {
                    granted_in_second.pop_front();
                }
                rate_gauge.set(granted_in_second.len() as f64);
            }
            // Reserve more when sends wait beyond the reserved slots and those run out soon.
            // No more slots than can be handed out: one per claimed send, plus what the claims in
            // flight leave room for; and not a trickle of tiny reservations while claims finish.
            let (prepared, unclaimed) = self.waiting_by_kind();
            let wanted = (prepared + unclaimed).saturating_sub(reserved.len());
            let room = CLAIMS_IN_FLIGHT
                .saturating_sub(inner.claiming.load(Ordering::Relaxed))
                .saturating_add(prepared)
                .saturating_sub(reserved.len());
            // Claimed sends first, on their own short lead: a slot that short is no use to a send
            // that still has to claim its job.
            let (count, lead) = if prepared > reserved.len() {
                (
                    (prepared - reserved.len()).min(inner.batch_max),
                    PREPARED_LEAD,
                )
            } else {
                let count = wanted.min(inner.batch_max).min(room);
                let enough = count >= wanted.min(inner.batch_max).min(CLAIMS_IN_FLIGHT / 4);
                (if enough { count } else { 0 }, inner.lead())
            };
            if count > 0
                && reserving.is_none()
                && retry_at.is_none_or(|at| at <= now)
                && reserved
                    .back()
                    .is_none_or(|(last, _)| *last < now + inner.lead() + REFILL_AHEAD)
            {
                retry_at = None;
                // What this replica expects to ask for: every waiting send, and what it holds.
                let demand = prepared + unclaimed + reserved.len();
                reserving = Some(tokio::spawn(reserve(
                    self.inner.clone(),
                    count,
                    demand,
                    inner.reservation_lead(lead),
                )));
            }
            // Sleep until the next thing to do: a hand-out (or, with nobody waiting, the front
            // slot's expiry), the reservation's answer, a retry, or a new waiter.
            let next_hand_out = reserved.front().map(|(slot, _)| match self.next_lead() {
                Some((lead, _)) => slot.checked_sub(lead).unwrap_or(*slot),
                None => *slot,
            });
            let next_retry = retry_at.filter(|_| wanted > 0);
            let wake_at = match (next_hand_out, next_retry) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = inner.wake.notified() => {}
                () = sleep_until_some(wake_at) => {}
                answer = join_some(&mut reserving) => {
                    reserving = None;
                    match answer {
                        Ok((slots, allowance)) => {
                            for slot in slots {
                                reserved.push_back((ours.admit(slot, allowance), allowance));
                            }
                        }
                        Err(error) => {
                            tracing::warn!(error = %error, phone_number_id = %inner.phone_number_id, "rate slot reservation failed; retrying");
                            retry_at = Some(Instant::now() + RESERVE_RETRY);
                        }
                    }
                }
            }
        }
        if let Some(task) = reserving {
            task.abort();
        }
        // Wake every waiter with an error (their sender is dropped).
        *self.lock() = Waiters::default();
    }

    /// How many waiters have their job claimed already, and how many have not.
    fn waiting_by_kind(&self) -> (usize, usize) {
        let waiters = self.lock();
        (waiters.prepared, waiters.heap.len() - waiters.prepared)
    }

    /// How long before a slot the next waiter must get it: [`PREPARED_LEAD`] for a claimed send,
    /// the lead otherwise; `None` when nobody waits, or the next one must wait for a claim in
    /// flight to finish.
    fn next_lead(&self) -> Option<(Duration, bool)> {
        let waiters = self.lock();
        let next = waiters.peek().filter(|next| self.inner.may_serve(next))?;
        Some(if next.prepared {
            (PREPARED_LEAD, true)
        } else {
            (self.inner.lead(), false)
        })
    }

    /// Gives `slot` to the most urgent waiter still listening; false when nobody waits, or when
    /// that waiter still has to claim its job and [`CLAIMS_IN_FLIGHT`] are already claiming.
    fn hand_out(&self, slot: Instant, allowance: Duration) -> bool {
        loop {
            let waiter = {
                let mut waiters = self.lock();
                if !waiters
                    .peek()
                    .is_some_and(|next| self.inner.may_serve(next))
                {
                    return false;
                }
                waiters.pop()
            };
            let Some(waiter) = waiter else {
                return false;
            };
            let claiming = (!waiter.prepared).then(|| {
                self.inner.claiming.fetch_add(1, Ordering::Relaxed);
                ClaimInFlight {
                    inner: self.inner.clone(),
                }
            });
            // A waiter gone meanwhile drops the slot, and with it its claim count.
            let slot = Slot {
                at: slot,
                allowance,
                claiming,
            };
            if waiter.tx.send(slot).is_ok() {
                return true;
            }
        }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The reservation's answer; pending forever when none is in flight.
async fn join_some(
    task: &mut Option<JoinHandle<anyhow::Result<Reserved>>>,
) -> anyhow::Result<Reserved> {
    match task {
        Some(task) => task.await?,
        None => std::future::pending().await,
    }
}

impl Inner {
    /// Records how long a send took from getting its slot to having its job claimed; the lead
    /// follows the recent average (see [`SLOT_LEAD`]).
    fn observe_claim(&self, took: Duration) {
        add_to_average(&self.claim_us, took);
    }

    /// Whether `waiter` may get a slot now: a claimed send always, one that still has to claim
    /// its job only while fewer than [`CLAIMS_IN_FLIGHT`] are claiming (a claim that finishes
    /// wakes the pump).
    fn may_serve(&self, waiter: &Waiter) -> bool {
        waiter.prepared || self.claiming.load(Ordering::Relaxed) < CLAIMS_IN_FLIGHT
    }

    /// Records how long a reservation took (see [`Inner::reservation_lead`]).
    fn observe_reservation(&self, took: Duration) {
        add_to_average(&self.reserve_us, took);
    }

    /// The lead a reservation for sends handed out `hand_out` ahead asks for: at least twice the
    /// recent reservation time (up to [`MAX_RESERVATION_LEAD`]). The database places the slots
    /// from the moment it read its clock, so a lead shorter than the way back would put them in
    /// the past by the time the answer is read: every one dropped, and the next reservation
    /// alike, for as long as the database is that slow.
    fn reservation_lead(&self, hand_out: Duration) -> Duration {
        let round_trips = Duration::from_micros(self.reserve_us.load(Ordering::Relaxed)) * 2;
        hand_out.max(round_trips.min(MAX_RESERVATION_LEAD))
    }

    /// The recent average claim time.
    fn claim_time(&self) -> Duration {
        Duration::from_micros(self.claim_us.load(Ordering::Relaxed))
    }

    /// The current lead: the base one, or twice the recent claim time when longer (bounded).
    fn lead(&self) -> Duration {
        let claims = self.claim_time() * 2;
        self.base_lead.max(claims).min(MAX_LEAD)
    }
}

/// Adds `took` to the running average `average_us` (µs): an exponential moving average over
/// roughly the last eight observations.
fn add_to_average(average_us: &AtomicU64, took: Duration) {
    let took = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    let _ = average_us.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |avg| {
        Some(avg - avg / 8 + took / 8)
    });
}

/// Slots reserved in one call, on our clock (ascending), and how late their sends may start.
type Reserved = (Vec<Instant>, Duration);

/// Reserves `count` slots; answers their instants on our clock, ascending, and how late their
/// sends may start.
async fn reserve(
    inner: Arc<Inner>,
    count: usize,
    demand: usize,
    lead: Duration,
) -> anyhow::Result<Reserved> {
    let asked = Instant::now();
    let mut conn = inner.pool.get().await?;
    let sent = Instant::now();
    let reservation = wa_db::models::sender::reserve_send_slots(
        &mut conn,
        &inner.key,
        inner.shape,
        u32::try_from(count).unwrap_or(u32::MAX),
        u32::try_from(demand).unwrap_or(u32::MAX),
        lead,
    )
    .await?;
    let answered = Instant::now();
    inner.observe_reservation(answered - asked);
    let wall_us = chrono::Utc::now().timestamp_micros();
    let clock = reading_instant(reservation.clock_us, sent, answered, wall_us);
    let slots = reservation
        .delays
        .into_iter()
        .map(|delay| clock + Duration::from_secs_f64(delay.max(0.0)))
        .collect();
    Ok((slots, reservation.allowance))
}

/// When, on our monotonic clock, the database read its clock as `clock_us`, for a call sent at
/// `sent` and answered at `answered` (when our wall clock read `wall_us`).
///
/// Our wall clock and the database's agree (one host, or NTP across hosts), so the reading is
/// placed by their difference, not at `answered`: the commit, the way back and our wake-up would
/// otherwise make every slot of the batch look later than it is, by a different amount on each
/// replica. The database certainly read its clock between `sent` and `answered`, which bounds the
/// result when the clocks disagree.
fn reading_instant(clock_us: i64, sent: Instant, answered: Instant, wall_us: i64) -> Instant {
    let ago = Duration::from_micros(u64::try_from(wall_us.saturating_sub(clock_us)).unwrap_or(0));
    answered
        .checked_sub(ago)
        .unwrap_or(sent)
        .clamp(sent, answered)
}

/// The database's rule applied again to our own slots on our clock: when our wall clock and the
/// database's disagree, each batch's placement is off by a different part of its round trip (see
/// [`reading_instant`]), which must not squeeze two of our slots closer than the spacing, or
/// `cap + 1` of their sends into one window.
struct LocalWindow {
    shape: SlotWindow,
    /// The latest slot.
    last: Option<Instant>,
    /// Ends (slot + allowance, as a running maximum) of our latest slots, oldest first.
    ends: VecDeque<Instant>,
}

impl LocalWindow {
    fn new(shape: SlotWindow) -> Self {
        Self {
            shape,
            last: None,
            ends: VecDeque::new(),
        }
    }

    /// Records `slot`, whose send may start up to `allowance` late, moved later when needed to
    /// keep the spacing and the window (between ends, as the database does).
    fn admit(&mut self, slot: Instant, allowance: Duration) -> Instant {
        let gap = self.shape.window.saturating_sub(self.shape.tolerance);
        let mut slot = slot;
        if let Some(last) = self.last {
            slot = slot.max(last + self.shape.spacing);
        }
        let cap = usize::try_from(self.shape.cap).unwrap_or(usize::MAX);
        if self.ends.len() >= cap
            && let Some(end) = self.ends.get(self.ends.len() - cap)
        {
            slot = slot.max(*end + gap);
        }
        let end = self
            .ends
            .back()
            .map_or(slot + allowance, |last| (*last).max(slot + allowance));
        self.ends.push_back(end);
        self.last = Some(slot);
        // Later slots come after this one: an end a gap before it can bind none of them.
        while self.ends.len() > cap || self.ends.front().is_some_and(|first| *first + gap <= slot) {
            self.ends.pop_front();
        }
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_slots_keep_the_spacing_and_never_put_more_than_the_cap_in_a_window() {
        let shape = SlotWindow {
            cap: 3,
            window: Duration::from_millis(1_000),
            spacing: Duration::from_millis(100),
            tolerance: Duration::from_millis(10),
            loose_allowance: Duration::from_millis(50),
        };
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let tight = shape.tolerance;
        // A batch read a little early overlaps the previous one: moved to the spacing, then to the
        // window after the third slot.
        let mut ours = LocalWindow::new(shape);
        let admitted: Vec<Instant> = [0, 100, 150, 190, 1_150, 5_000]
            .into_iter()
            .map(|at| ours.admit(ms(at), tight))
            .collect();
        assert_eq!(
            admitted,
            vec![ms(0), ms(100), ms(200), ms(1_000), ms(1_150), ms(5_000)]
        );
        // A slot that may start 50 ms late keeps the next window a gap after its latest start
        // (and so do the slots after it, whose ends are a running maximum).
        let mut ours = LocalWindow::new(shape);
        let admitted: Vec<Instant> = [(0, shape.loose_allowance), (0, tight), (0, tight)]
            .into_iter()
            .chain([(0, tight); 2])
            .map(|(at, allowance)| ours.admit(ms(at), allowance))
            .collect();
        assert_eq!(
            admitted,
            vec![ms(0), ms(100), ms(200), ms(1_040), ms(1_140)]
        );
    }

    #[test]
    fn a_send_starts_only_while_fewer_than_the_cap_are_unanswered_or_answered_within_a_second() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut answers = AnswerWindow::default();
        assert_eq!(answers.try_start(ms(0), ms(0), 2), Ok(()));
        assert_eq!(answers.try_start(ms(10), ms(10), 2), Ok(()));
        // Both unanswered: neither can stop counting within the next second.
        assert_eq!(answers.try_start(ms(20), ms(20), 2), Err(None));
        // Answered late (a stalled receiver): it counts for a second after its answer, not after
        // its start.
        answers.answered(ms(400));
        assert_eq!(
            answers.try_start(ms(1_010), ms(1_010), 2),
            Err(Some(ms(1_400)))
        );
        assert_eq!(answers.try_start(ms(1_400), ms(1_400), 2), Ok(()));
        answers.answered(ms(1_401));
        answers.answered(ms(1_402));
        assert_eq!(
            answers.try_start(ms(2_400), ms(2_400), 2),
            Err(Some(ms(2_401)))
        );
        assert_eq!(answers.try_start(ms(2_402), ms(2_402), 2), Ok(()));
        // Room, but past the slot's allowance (a wait that woke late): refused.
        assert_eq!(answers.try_start(ms(3_500), ms(3_490), 2), Err(None));
        assert_eq!(answers.try_start(ms(3_500), ms(3_510), 2), Ok(()));
    }

    #[test]
    fn the_database_reading_is_placed_by_the_wall_clock_within_the_round_trip() {
        let sent = Instant::now();
        let answered = sent + Duration::from_millis(40);
        let wall_us = 1_000_000_000_000;
        // Read 30 ms before the answer reached us (a slow commit or wake-up): placed there, not at
        // the answer.
        assert_eq!(
            reading_instant(wall_us - 30_000, sent, answered, wall_us),
            answered - Duration::from_millis(30)
        );
        // Clocks that disagree by more than the round trip: bounded by it.
        assert_eq!(
            reading_instant(wall_us - 90_000, sent, answered, wall_us),
            sent
        );
        assert_eq!(
            reading_instant(wall_us + 5_000, sent, answered, wall_us),
            answered
        );
    }

    #[test]
    fn waiters_pop_claimed_first_then_by_priority_then_arrival() {
        let mut heap = BinaryHeap::new();
        for (prepared, rank, seq) in [
            (false, 2, 0),
            (false, 1, 1),
            (false, 0, 2),
            (false, 1, 3),
            (false, 0, 4),
            (true, 2, 5),
        ] {
            let (tx, _rx) = oneshot::channel();
            heap.push(Waiter {
                prepared,
                rank,
                seq,
                tx,
            });
        }
        let order: Vec<(u8, u64)> =
            std::iter::from_fn(|| heap.pop().map(|w| (w.rank, w.seq))).collect();
        assert_eq!(order, vec![(2, 5), (0, 2), (0, 4), (1, 1), (1, 3), (2, 0)]);
    }
}

//! Per-recipient pacing inside one tenant: sends to one recipient are serialised and spaced at
//! least the pair interval apart; a 131056 pushes only that recipient's next send back (4^X s).
//! Other recipients are not affected, so a broadcast to many recipients runs at the full cap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

/// Pacing state of one recipient; held (locked) while a job to them is being sent.
#[derive(Debug, Default)]
pub struct Lane {
    /// Earliest instant the next send to this recipient may start.
    pub next_allowed: Option<Instant>,
    /// 131056 answers in a row (X of Meta's 4^X advice).
    pub pair_strikes: u32,
}

impl Lane {
    /// Waits until this recipient may be sent to again.
    pub async fn wait_turn(&self) {
        if let Some(at) = self.next_allowed {
            tokio::time::sleep_until(at).await;
        }
    }

    /// How long until the recipient may be sent to again.
    pub fn remaining(&self) -> Duration {
        self.next_allowed
            .map(|at| at.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }
}

/// The lanes of one tenant, created on demand and dropped when idle.
#[derive(Debug)]
pub struct Lanes {
    lanes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Lane>>>>,
    prune_at: std::sync::atomic::AtomicUsize,
}

impl Default for Lanes {
    fn default() -> Self {
        Self {
            lanes: Mutex::default(),
            prune_at: std::sync::atomic::AtomicUsize::new(PRUNE_ABOVE),
        }
    }
}

/// Above this many lanes, idle ones are pruned on the next acquire.
const PRUNE_ABOVE: usize = 10_000;

impl Lanes {
    /// Locks the recipient's lane (FIFO among waiters of the same recipient).
    pub async fn acquire(&self, recipient: &str) -> OwnedMutexGuard<Lane> {
        let lane = {
            let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
            if lanes.len() > self.prune_at.load(std::sync::atomic::Ordering::Relaxed) {
                let now = Instant::now();
                // Drop idle lanes (nobody holds them, no pacing pending); prune again only after
                // the map doubled, so pruning stays amortised O(1) per acquire.
                lanes.retain(|_, lane| {
                    Arc::strong_count(lane) > 1
                        || lane
                            .try_lock()
                            .map(|l| l.next_allowed.is_some_and(|at| at > now))
                            .unwrap_or(true)
                });
                self.prune_at.store(
                    (lanes.len() * 2).max(PRUNE_ABOVE),
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
            lanes.entry(recipient.to_owned()).or_default().clone()
        };
        lane.lock_owned().await
    }
}

//! A sliding one-second window: the throughput limiter and the "max in any second" statistics.
//!
//! The window keeps the instants of the events in the last second in a queue, so each check is amortised O(1). The
//! maximum queue length observed right after a push is exactly the maximum number of events in any one-second window,
//! because the busiest window can always be taken to end at one of its events.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Length of the window.
pub const WINDOW: Duration = Duration::from_secs(1);

/// Events in the last [`WINDOW`] plus the highest count ever observed.
#[derive(Debug, Default)]
pub struct SlidingWindow {
    events: VecDeque<Instant>,
    max_seen: usize,
}

impl SlidingWindow {
    fn evict(&mut self, now: Instant) {
        while let Some(&front) = self.events.front() {
            if now.duration_since(front) >= WINDOW {
                self.events.pop_front();
            } else {
                break;
            }
        }
    }

    /// Records an event if fewer than `cap` happened in the last second; `false` means the cap was hit.
    pub fn try_acquire(&mut self, now: Instant, cap: usize) -> bool {
        self.evict(now);
        if self.events.len() >= cap {
            return false;
        }
        self.push_evicted(now);
        true
    }

    /// Records an event unconditionally (attempt counting).
    pub fn record(&mut self, now: Instant) {
        self.evict(now);
        self.push_evicted(now);
    }

    fn push_evicted(&mut self, now: Instant) {
        self.events.push_back(now);
        self.max_seen = self.max_seen.max(self.events.len());
    }

    /// The largest number of events seen in any one-second window since the last reset.
    pub fn max_seen(&self) -> usize {
        self.max_seen
    }

    /// Forgets the maximum (the current window stays, so the limiter keeps protecting).
    pub fn reset_max(&mut self) {
        self.max_seen = self.events.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_events_within_one_second_and_frees_after() {
        let mut w = SlidingWindow::default();
        let t0 = Instant::now();
        assert!(w.try_acquire(t0, 2));
        assert!(w.try_acquire(t0 + Duration::from_millis(10), 2));
        assert!(!w.try_acquire(t0 + Duration::from_millis(999), 2));
        assert!(w.try_acquire(t0 + Duration::from_millis(1000), 2));
        assert_eq!(w.max_seen(), 2);
    }

    #[test]
    fn record_tracks_the_busiest_second() {
        let mut w = SlidingWindow::default();
        let t0 = Instant::now();
        for i in 0..5 {
            w.record(t0 + Duration::from_millis(i * 100));
        }
        for i in 0..3 {
            w.record(t0 + Duration::from_millis(3000 + i));
        }
        assert_eq!(w.max_seen(), 5);
    }
}

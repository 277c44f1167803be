//! Keeps delivery order per key (recipient) although the consume loop runs handlers as concurrent
//! tasks that may start in any order: each delivery carries its position in the consume loop
//! ([`wa_amqp::IncomingMessage::sequence`]); a handler enters with its key and waits until every
//! earlier delivery has entered (so no earlier delivery for the same key can still appear) and the
//! earlier deliveries for its key have finished. Deliveries for other keys are not held up.
//!
//! Every delivery must enter exactly once (with `None` when it has no key), or later deliveries
//! would wait for it; the [`Turn`] it gets is released on drop, also when the handler is cancelled.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// The ordering gate of one consume loop.
#[derive(Default)]
pub struct Sequencer {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Every sequence below this has entered.
    entered_below: u64,
    /// Entered sequences at or above `entered_below` (there is a gap before them).
    early: BTreeSet<u64>,
    /// Per key, the sequences holding or waiting for a turn, in order.
    queues: HashMap<String, VecDeque<u64>>,
    /// Wake-up of each waiting sequence.
    waiters: HashMap<u64, Arc<Notify>>,
}

/// A delivery's turn for its key; dropping it lets the next delivery for the key go.
pub struct Turn {
    sequencer: Arc<Sequencer>,
    key: Option<String>,
    sequence: u64,
}

impl Sequencer {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Enters delivery `sequence` with `key`; resolves when it is this delivery's turn.
    pub async fn enter(self: &Arc<Self>, sequence: u64, key: Option<String>) -> Turn {
        let notify = Arc::new(Notify::new());
        let wake = {
            let mut inner = self.lock();
            if let Some(key) = &key {
                let queue = inner.queues.entry(key.clone()).or_default();
                let at = queue
                    .iter()
                    .position(|s| *s > sequence)
                    .unwrap_or(queue.len());
                queue.insert(at, sequence);
                inner.waiters.insert(sequence, notify.clone());
            }
            let before = inner.entered_below;
            inner.early.insert(sequence);
            loop {
                let next = inner.entered_below;
                if !inner.early.remove(&next) {
                    break;
                }
                inner.entered_below += 1;
            }
            let after = inner.entered_below;
            (before..after)
                .filter_map(|s| inner.waiters.get(&s).cloned())
                .collect::<Vec<_>>()
        };
        for waiter in wake {
            waiter.notify_one();
        }
        // From here on, dropping the turn (also by cancellation) releases the ticket.
        let turn = Turn {
            sequencer: self.clone(),
            key,
            sequence,
        };
        let Some(key) = turn.key.clone() else {
            return turn;
        };
        loop {
            {
                let mut inner = self.lock();
                let front = inner.queues.get(&key).and_then(|q| q.front().copied());
                if inner.entered_below > sequence && front == Some(sequence) {
                    inner.waiters.remove(&sequence);
                    return turn;
                }
            }
            notify.notified().await;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(key) = &self.key else { return };
        let wake = {
            let mut inner = self.sequencer.lock();
            inner.waiters.remove(&self.sequence);
            let next = match inner.queues.get_mut(key) {
                Some(queue) => {
                    queue.retain(|s| *s != self.sequence);
                    queue.front().copied()
                }
                None => None,
            };
            match next {
                Some(next) => inner.waiters.get(&next).cloned(),
                None => {
                    inner.queues.remove(key);
                    None
                }
            }
        };
        if let Some(waiter) = wake {
            waiter.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn deliveries_for_one_key_run_in_sequence_order_whatever_order_they_start_in() {
        let sequencer = Arc::new(Sequencer::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Start them in reverse: 4 first, 0 last; 1 and 3 have another key.
        for sequence in (0..5u64).rev() {
            let sequencer = sequencer.clone();
            let order = order.clone();
            let key = if sequence % 2 == 0 { "a" } else { "b" };
            tasks.push(tokio::spawn(async move {
                let _turn = sequencer.enter(sequence, Some(key.to_owned())).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
                order.lock().unwrap().push(sequence);
            }));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for task in tasks {
            task.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        let a: Vec<u64> = order.iter().copied().filter(|s| s % 2 == 0).collect();
        let b: Vec<u64> = order.iter().copied().filter(|s| s % 2 == 1).collect();
        assert_eq!(a, [0, 2, 4]);
        assert_eq!(b, [1, 3]);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_does_not_block_the_key() {
        let sequencer = Arc::new(Sequencer::default());
        let first = sequencer.enter(0, Some("a".into())).await;
        let waiting = tokio::spawn({
            let sequencer = sequencer.clone();
            async move { sequencer.enter(1, Some("a".into())).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        waiting.abort();
        let _ = waiting.await;
        drop(first);
        let third =
            tokio::time::timeout(Duration::from_secs(1), sequencer.enter(2, Some("a".into())))
                .await;
        assert!(third.is_ok(), "the key is free again");
    }
}

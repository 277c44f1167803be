//! Sending leases: at most one sender process at a time sends for each business number.
//!
//! A tenant's three dispatch queues are single-active-consumer each, but their active consumers
//! could sit in different replicas, and then the per-process guarantees (the rule on answers, which
//! keeps the cap however requests are delayed on the way, and priorities between the queues) would
//! cover each replica's share only. So a replica consumes a number's dispatch queues only while it
//! holds the number's lease, and every send of the number comes from one process. The shared slot
//! log still binds every send, so a hand-off (a holder that stopped, crashed or lost the database)
//! stays under the cap too.
//!
//! A lease is a session-level advisory lock in PostgreSQL, taken on a connection of its own by
//! [`LeaseKeeper::run`]. Every [`LEASE_TICK`] the keeper runs one query on that session: it takes
//! the leases this process lacks and, by succeeding, proves the session (and so the leases it holds)
//! alive. A lease ends when its session ends: the holder stopped or crashed (at once), or it went
//! quiet (frozen, cut off) for [`LEASE_SESSION_TTL`], when PostgreSQL ends the idle session. The
//! holder's side of that bargain: it counts a lease as valid for [`LEASE_VALIDITY`] (less than the
//! TTL) after its last successful query was sent, and claims a job only for a send that will start
//! inside that ([`Lease::is_valid_until`]). A query that fails or takes longer than
//! [`LEASE_QUERY_TIMEOUT`] drops the session: every lease is lost at once and taken again on a new
//! session.

use std::time::Duration;

use diesel_async::AsyncConnection as _;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wa_db::AsyncPgConnection;

/// How often the keeper confirms its session and tries to take the leases it lacks: the longest a
/// number goes without a sender after its holder stopped.
pub const LEASE_TICK: Duration = Duration::from_millis(500);
/// A confirmation or take that has not answered by then drops the session (and its leases). As
/// long as the validity: a slow database makes the leases lapse for new sends by the validity alone,
/// and dropping the session earlier would only make every replica's consumers stop and start again.
pub const LEASE_QUERY_TIMEOUT: Duration = LEASE_VALIDITY;
/// PostgreSQL ends a lease session idle this long (`idle_session_timeout`), releasing its leases.
pub const LEASE_SESSION_TTL: Duration = Duration::from_secs(5);
/// How long after the last successful query was sent the holder still counts its leases valid:
/// well inside [`LEASE_SESSION_TTL`], which PostgreSQL starts counting only after that query.
pub const LEASE_VALIDITY: Duration = Duration::from_secs(3);

/// One number's lease as this process sees it: `Some(until)` while held and confirmed.
#[derive(Clone)]
pub struct Lease {
    state: watch::Receiver<Option<Instant>>,
}

impl Lease {
    /// True while this process holds the lease and confirmed it recently enough to start a send.
    pub fn is_valid(&self) -> bool {
        self.is_valid_until(Instant::now())
    }

    /// True when the lease is held and, unless lost before, still valid at `deadline`: a send
    /// that must start by `deadline` may be prepared (its job claimed) now.
    pub fn is_valid_until(&self, deadline: Instant) -> bool {
        self.state.borrow().is_some_and(|until| deadline < until)
    }

    /// Waits until the lease is valid (forever once the keeper has stopped).
    pub async fn acquired(&mut self) {
        let valid = |state: &Option<Instant>| state.is_some_and(|until| Instant::now() < until);
        if self.state.wait_for(valid).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Waits until this process no longer holds the lease (at once when the keeper has stopped).
    pub async fn lost(&mut self) {
        let _ = self.state.wait_for(Option::is_none).await;
    }
}

struct Entry {
    key: String,
    phone_number_id: String,
    state: watch::Sender<Option<Instant>>,
}

/// Takes and keeps the sending leases of this process's numbers (see the module docs).
pub struct LeaseKeeper {
    database_url: String,
    entries: Vec<Entry>,
}

impl LeaseKeeper {
    /// A keeper that will hold its leases on its own connection to `database_url`.
    pub fn new(database_url: &str) -> Self {
        Self {
            database_url: database_url.to_owned(),
            entries: Vec::new(),
        }
    }

    /// Registers a number and returns its lease, not held until [`LeaseKeeper::run`] takes it.
    pub fn lease(&mut self, phone_number_id: &str) -> Lease {
        let (state, receiver) = watch::channel(None);
        metrics::gauge!("wa_sender_lease_held", "phone_number_id" => phone_number_id.to_owned())
            .set(0.0);
        self.entries.push(Entry {
            key: crate::limiter::number_key(phone_number_id),
            phone_number_id: phone_number_id.to_owned(),
            state,
        });
        Lease { state: receiver }
    }

    /// Keeps the leases until `stop` is cancelled, then ends the session, which hands them on.
    /// Cancel `stop` only after this process has stopped sending.
    pub async fn run(self, stop: CancellationToken) {
        let mut session: Option<AsyncPgConnection> = None;
        let mut tick = tokio::time::interval(LEASE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let sent = Instant::now();
            let wanted: Vec<String> = self
                .entries
                .iter()
                .filter(|e| e.state.borrow().is_none())
                .map(|e| e.key.clone())
                .collect();
            let answer =
                tokio::time::timeout(LEASE_QUERY_TIMEOUT, self.confirm(&mut session, &wanted))
                    .await
                    .map_err(|_| anyhow::anyhow!("no answer within {LEASE_QUERY_TIMEOUT:?}"))
                    .and_then(|r| r);
            match answer {
                Ok(taken) => self.confirmed(sent, &taken),
                Err(error) => {
                    // The session may still be alive on the server: dropping it closes the
                    // connection, and PostgreSQL releases its leases when it sees that.
                    session = None;
                    self.lose_all(&error);
                }
            }
        }
        drop(session);
        self.lose_all(&"the sender is stopping");
    }

    /// One query on the lease session (opened first if needed): takes `wanted`.
    async fn confirm(
        &self,
        session: &mut Option<AsyncPgConnection>,
        wanted: &[String],
    ) -> anyhow::Result<Vec<String>> {
        let conn = match session {
            Some(conn) => conn,
            None => {
                let mut conn = AsyncPgConnection::establish(&self.database_url).await?;
                wa_db::models::sender::start_lease_session(&mut conn, LEASE_SESSION_TTL).await?;
                session.insert(conn)
            }
        };
        Ok(wa_db::models::sender::take_send_leases(conn, wanted).await?)
    }

    /// The session answered a query sent at `sent`: leases held and `taken` are valid from there.
    fn confirmed(&self, sent: Instant, taken: &[String]) {
        let until = sent + LEASE_VALIDITY;
        for entry in &self.entries {
            let held = entry.state.borrow().is_some();
            if held || taken.contains(&entry.key) {
                if !held {
                    tracing::info!(phone_number_id = %entry.phone_number_id, "took the number's sending lease: this replica sends for it");
                    metrics::gauge!("wa_sender_lease_held", "phone_number_id" => entry.phone_number_id.clone()).set(1.0);
                }
                entry.state.send_replace(Some(until));
            }
        }
    }

    fn lose_all(&self, why: &dyn std::fmt::Display) {
        for entry in &self.entries {
            if entry.state.send_replace(None).is_some() {
                tracing::warn!(phone_number_id = %entry.phone_number_id, reason = %why, "gave up the number's sending lease");
            }
            metrics::gauge!("wa_sender_lease_held", "phone_number_id" => entry.phone_number_id.clone()).set(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The instant `ago` before now.
    fn before(ago: Duration) -> Instant {
        Instant::now()
            .checked_sub(ago)
            .expect("a monotonic clock this old")
    }

    #[tokio::test]
    async fn a_lease_is_valid_only_while_held_and_confirmed_recently() {
        let mut keeper = LeaseKeeper::new("postgres://unused");
        let lease = keeper.lease("100");
        assert!(!lease.is_valid(), "not held before the keeper took it");
        keeper.confirmed(before(LEASE_VALIDITY / 2), &["sender:100".to_owned()]);
        assert!(lease.is_valid());
        assert!(lease.is_valid_until(Instant::now() + LEASE_VALIDITY / 4));
        assert!(
            !lease.is_valid_until(Instant::now() + LEASE_VALIDITY / 2),
            "a send due after the validity is not prepared"
        );
        keeper.confirmed(before(LEASE_VALIDITY + Duration::from_millis(1)), &[]);
        assert!(
            !lease.is_valid(),
            "held, but not confirmed within the validity: no send may start"
        );
        keeper.confirmed(Instant::now(), &[]);
        assert!(lease.is_valid(), "a later confirmation renews a held lease");
        keeper.lose_all(&"test");
        assert!(!lease.is_valid());
        keeper.confirmed(Instant::now(), &[]);
        assert!(
            !lease.is_valid(),
            "a confirmation renews held leases only, not lost ones"
        );
    }
}

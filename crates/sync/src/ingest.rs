//! The `sync.events` handler and the batcher behind it.
//!
//! Consumes `inbound.message`, `inbound.status`, `outbound.accepted`, `outbound.failed`,
//! `jamaah.upserted` and `jamaah.erasure_requested`. Each delivery is parsed (a bad one is
//! dead-lettered at once, naming the field), then handed to the batcher and the handler waits
//! for its outcome. The batcher writes up to `max_events` events (or what arrived within
//! `max_wait`) in ONE transaction, commits, publishes the outbox (confirmed) and only then
//! answers every waiting handler with `Ack`, so each delivery is acked after its commit. If the
//! batch transaction fails, it is written again in halves (each failing half halved again) down
//! to the poison event alone, which is dead-lettered (permanent database refusal) or retried
//! (connection trouble); the rest are acked.
//!
//! Tracing: each outbox event is published inside the trace of the delivery that caused it (its
//! consume span is the message's parent), and status events get a span link to the send of their
//! message ([`crate::send_trace`]). Events the periodic relay publishes (after a failed publish or
//! a crash) start a trace of their own.
//!
//! Shutdown: the batcher ends when the last handler (sender) is dropped, after answering every
//! event it took; an event whose transaction did not commit is never acked.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::AsyncConnection;
use opentelemetry::trace::TraceContextExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use wa_amqp::{Handler, IncomingMessage, Outcome, Publisher};
use wa_common::topology::routing;
use wa_db::PgPool;
use wa_db::models::message_trace::SendTrace;
use wa_service::tenants::TenantDirectory;

use crate::config::BatchConfig;
use crate::crypto::Cipher;
use crate::event::{SyncEvent, parse};
use crate::media::MediaStore;
use crate::outbox;
use crate::send_trace;
use crate::store::{self, Effects, StoreError};

/// Delay before a delivery whose transaction hit a transient database error comes back.
const TRANSIENT_RETRY: Duration = Duration::from_secs(4);
/// Attempts (through the retry tiers) after which a transient failure is dead-lettered instead.
const MAX_TRANSIENT_ATTEMPTS: u32 = 8;

/// What the batcher needs to persist events and publish what they caused.
#[derive(Clone)]
pub struct IngestDeps {
    /// The database.
    pub pool: PgPool,
    /// Encrypts bodies and outbox payloads.
    pub cipher: Cipher,
    /// Publishes the outbox after each commit.
    pub publisher: Publisher,
    /// Deletes erased media files after the commit.
    pub media_store: Arc<dyn MediaStore>,
}

/// One event waiting for its batch.
struct Job {
    event: SyncEvent,
    attempt: u32,
    received: Instant,
    /// The delivery's span (its parent is the trace context from the AMQP headers).
    span: tracing::Span,
    /// The delivery's trace context (see [`IncomingMessage::trace_context`]): what it causes is
    /// published inside it.
    trace: opentelemetry::Context,
    /// For `outbound.accepted`: the `traceparent` of the sender's span, stored with the message.
    send_trace: Option<String>,
    reply: oneshot::Sender<Outcome>,
}

/// The [`Handler`] of `sync.events`: parse, submit to the batcher, return its outcome.
pub struct SyncHandler {
    tenants: Arc<TenantDirectory>,
    jobs: mpsc::Sender<Job>,
}

impl SyncHandler {
    /// Starts the batcher task and returns the handler feeding it plus the task's handle; the
    /// task ends once the handler is dropped and every submitted event is answered.
    pub fn start(
        tenants: Arc<TenantDirectory>,
        deps: IngestDeps,
        config: BatchConfig,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (jobs, rx) = mpsc::channel(config.max_events.max(1) * 4);
        let task = tokio::spawn(run_batcher(rx, deps, config));
        (Self { tenants, jobs }, task)
    }

    /// Parses and persists one delivery (also used directly by tests and benchmarks).
    pub async fn handle_message(&self, routing_key: &str, body: &[u8], attempt: u32) -> Outcome {
        self.handle_traced(
            routing_key,
            body,
            attempt,
            opentelemetry::Context::new(),
            None,
        )
        .await
    }

    /// [`Self::handle_message`] with the delivery's trace context and, for an `outbound.accepted`,
    /// the `traceparent` of the send behind it.
    async fn handle_traced(
        &self,
        routing_key: &str,
        body: &[u8],
        attempt: u32,
        trace: opentelemetry::Context,
        send_trace: Option<String>,
    ) -> Outcome {
        let event = match parse(routing_key, body, &self.tenants) {
            Ok(event) => event,
            Err(rejection) => {
                metrics::counter!("wa_sync_events_rejected_total", "reason" => rejection.reason)
                    .increment(1);
                tracing::warn!(routing_key, reason = rejection.reason, detail = %rejection.detail, "dead-lettering an event");
                return Outcome::dead_letter(rejection.reason, rejection.detail);
            }
        };
        let (reply, outcome) = oneshot::channel();
        let job = Job {
            event,
            attempt,
            received: Instant::now(),
            span: tracing::Span::current(),
            trace,
            send_trace,
            reply,
        };
        if self.jobs.send(job).await.is_err() {
            // The batcher is gone (shutting down): give the delivery back untouched.
            return Outcome::Requeue;
        }
        outcome.await.unwrap_or(Outcome::Requeue)
    }
}

impl Handler for SyncHandler {
    async fn handle(&self, msg: IncomingMessage) -> Outcome {
        let send_trace = (msg.routing_key == routing::OUTBOUND_ACCEPTED)
            .then(|| send_trace::traceparent_of(&msg.headers))
            .flatten();
        self.handle_traced(
            &msg.routing_key,
            &msg.body,
            msg.attempt,
            msg.trace_context.clone(),
            send_trace,
        )
        .await
    }
}

async fn run_batcher(mut rx: mpsc::Receiver<Job>, deps: IngestDeps, config: BatchConfig) {
    // Publishing and answering a committed batch overlaps with the next batch's transaction;
    // one finisher keeps the publish order of the batches.
    let (done, finished) = mpsc::channel::<Committed>(2);
    let finisher = tokio::spawn(run_finisher(finished, deps.clone()));
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = Instant::now() + config.max_wait;
        while batch.len() < config.max_events {
            tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => batch.push(job),
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        let committed = process_batch(&deps, batch).await;
        if let Err(unsent) = done.send(committed).await {
            // The finisher is gone (it panicked): answer without publishing; the outbox keeps the events.
            for (job, outcome) in unsent.0.jobs {
                finish(job, outcome);
            }
        }
    }
    drop(done);
    if let Err(error) = finisher.await {
        tracing::error!(error = %error, "the finisher task failed");
    }
    tracing::debug!("batcher stopped: every submitted event answered");
}

/// A batch after its transaction(s): what to publish and what to answer.
struct Committed {
    effects: Effects,
    /// For each outbox event, the index in `jobs` of the event that caused it.
    causes: Vec<Option<usize>>,
    jobs: Vec<(Job, Outcome)>,
}

async fn run_finisher(mut committed: mpsc::Receiver<Committed>, deps: IngestDeps) {
    while let Some(Committed {
        effects,
        causes,
        jobs,
    }) = committed.recv().await
    {
        // Published inside the trace of the delivery that caused each event (a delivery without
        // one leaves the choice to the publisher: the current span's).
        let traces = causes
            .iter()
            .map(|cause| {
                let (job, _) = jobs.get((*cause)?)?;
                job.trace
                    .span()
                    .span_context()
                    .is_valid()
                    .then(|| job.trace.clone())
            })
            .collect();
        after_commit(&deps, effects, traces).await;
        for (job, outcome) in jobs {
            finish(job, outcome);
        }
    }
}

/// How a failed event is settled.
fn settle_failure(error: &StoreError, attempt: u32) -> Outcome {
    let permanent = match error {
        StoreError::Db(DieselError::DatabaseError(kind, _)) => matches!(
            kind,
            DatabaseErrorKind::UniqueViolation
                | DatabaseErrorKind::ForeignKeyViolation
                | DatabaseErrorKind::NotNullViolation
                | DatabaseErrorKind::CheckViolation
        ),
        StoreError::Db(DieselError::SerializationError(_) | DieselError::QueryBuilderError(_)) => {
            true
        }
        StoreError::Db(_) | StoreError::Pool(_) => false,
        StoreError::Crypto(_) | StoreError::Json(_) | StoreError::Contract(_) => true,
    };
    if permanent || attempt >= MAX_TRANSIENT_ATTEMPTS {
        // The error text names the constraint or the failing step, never message content.
        Outcome::dead_letter("store_rejected", error.to_string())
    } else {
        Outcome::retry_in(TRANSIENT_RETRY)
    }
}

/// What one transaction wrote: its effects, and for each outbox event the index (in the events
/// written) of the event that caused it.
#[derive(Default)]
struct Written {
    effects: Effects,
    causes: Vec<Option<usize>>,
}

async fn write(deps: &IngestDeps, events: &[&SyncEvent]) -> Result<Written, StoreError> {
    let mut conn = deps
        .pool
        .get()
        .await
        .map_err(|e| StoreError::Pool(e.to_string()))?;
    let cipher = deps.cipher.clone();
    conn.transaction::<Written, StoreError, _>(async |conn| {
        let mut effects = Effects::default();
        store::apply_batch(conn, &cipher, events, &mut effects).await?;
        let causes = effects.outbox.iter().map(|e| Some(e.cause)).collect();
        Ok(Written { effects, causes })
    })
    .await
}

/// Deletes erased files, publishes the batch's outbox events (confirmed) from memory, each with
/// the trace context of its cause, and deletes their rows. A failed publish leaves the rows for
/// the periodic relay; the events' deliveries are still acked, because what they caused is
/// committed.
async fn after_commit(
    deps: &IngestDeps,
    effects: Effects,
    traces: Vec<Option<opentelemetry::Context>>,
) {
    for key in &effects.files_to_delete {
        if let Err(error) = deps.media_store.delete(key).await {
            metrics::counter!("wa_sync_media_delete_failures_total").increment(1);
            tracing::error!(error = %error, "could not delete an erased or expired media file");
        }
    }
    if effects.outbox.is_empty() {
        return;
    }
    let events = effects.outbox.into_iter().zip(traces).collect();
    if let Err(error) = outbox::publish_pending(&deps.pool, &deps.publisher, events).await {
        tracing::warn!(error = %error, "publishing after the commit failed; the outbox relay retries");
    }
}

async fn process_batch(deps: &IngestDeps, batch: Vec<Job>) -> Committed {
    // One span per transaction, linked to every delivery's span (and so to its trace).
    let span = tracing::info_span!("sync.batch", size = batch.len());
    for job in &batch {
        span.follows_from(&job.span);
    }
    process_batch_in_span(deps, batch).instrument(span).await
}

async fn process_batch_in_span(deps: &IngestDeps, batch: Vec<Job>) -> Committed {
    let committed = write_batch(deps, batch).await;
    link_statuses_to_sends(deps, &committed.jobs).await;
    committed
}

/// After the commit: stores the send traces of the committed `outbound.accepted` events and links
/// each committed status event's span to its message's send (best effort, see [`send_trace`]).
async fn link_statuses_to_sends(deps: &IngestDeps, jobs: &[(Job, Outcome)]) {
    let committed = jobs
        .iter()
        .filter(|(_, outcome)| *outcome == Outcome::Ack)
        .map(|(job, _)| job);
    let mut accepted = Vec::new();
    let mut statuses = Vec::new();
    for job in committed {
        match &job.event {
            SyncEvent::Accepted(event) => {
                if let Some(trace_parent) = &job.send_trace {
                    accepted.push(SendTrace {
                        tenant_id: event.tenant_id.as_str().to_owned(),
                        wa_message_id: event.wa_message_id.clone(),
                        trace_parent: trace_parent.clone(),
                    });
                }
            }
            SyncEvent::Status { tenant, event, .. } => {
                statuses.push((job, tenant.as_str(), event.wa_message_id.as_str()));
            }
            _ => {}
        }
    }
    let keys: Vec<(&str, &str)> = statuses.iter().map(|(_, t, w)| (*t, *w)).collect();
    let sends: HashMap<(String, String), _> = match send_trace::record_and_find(
        &deps.pool, &accepted, &keys,
    )
    .await
    {
        Ok(sends) => sends,
        Err(error) => {
            metrics::counter!("wa_sync_trace_link_failures_total").increment(1);
            tracing::warn!(error = %error, "could not store or read send traces; statuses stay unlinked");
            return;
        }
    };
    for (job, tenant, wamid) in statuses {
        if let Some(send) = sends.get(&(tenant.to_owned(), wamid.to_owned())) {
            job.span.add_link(send.clone());
        }
    }
}

async fn write_batch(deps: &IngestDeps, batch: Vec<Job>) -> Committed {
    let started = Instant::now();
    let size = batch.len();
    let events: Vec<&SyncEvent> = batch.iter().map(|j| &j.event).collect();
    match write(deps, &events).await {
        Ok(Written { effects, causes }) => {
            metrics::histogram!("wa_sync_batch_size").record(size as f64);
            metrics::histogram!("wa_sync_batch_seconds").record(started.elapsed().as_secs_f64());
            Committed {
                effects,
                causes,
                jobs: batch.into_iter().map(|job| (job, Outcome::Ack)).collect(),
            }
        }
        Err(error) => {
            tracing::warn!(error = %error, size, "batch transaction failed; writing it again in halves");
            metrics::counter!("wa_sync_batch_failures_total").increment(1);
            let mut written = Committed {
                effects: Effects::default(),
                causes: Vec::new(),
                jobs: Vec::with_capacity(size),
            };
            // Halves, in order, each halved again when it fails, down to single events settled by
            // their own error: one poison event costs about 2·log2(size) transactions, not size,
            // and every other event commits (in its original order).
            let mut halves = VecDeque::new();
            let mut first = batch;
            halves.push_back(first.split_off(first.len() / 2));
            halves.push_front(first);
            while let Some(mut part) = halves.pop_front() {
                if part.is_empty() {
                    continue;
                }
                let events: Vec<&SyncEvent> = part.iter().map(|j| &j.event).collect();
                match write(deps, &events).await {
                    Ok(Written { effects, causes }) => {
                        let base = written.jobs.len();
                        written
                            .causes
                            .extend(causes.into_iter().map(|c| c.map(|i| base + i)));
                        written.effects.extend(effects);
                        written
                            .jobs
                            .extend(part.into_iter().map(|job| (job, Outcome::Ack)));
                    }
                    Err(error) if part.len() == 1 => {
                        for job in part {
                            tracing::warn!(error = %error, kind = job.event.kind(), tenant = job.event.tenant(), "event failed alone");
                            let outcome = settle_failure(&error, job.attempt);
                            written.jobs.push((job, outcome));
                        }
                    }
                    Err(_) => {
                        let second = part.split_off(part.len() / 2);
                        halves.push_front(second);
                        halves.push_front(part);
                    }
                }
            }
            written
        }
    }
}

fn finish(job: Job, outcome: Outcome) {
    let label = match &outcome {
        Outcome::Ack => "ack",
        Outcome::Retry { .. } => "retry",
        Outcome::DeadLetter { .. } => "dead_letter",
        Outcome::Requeue => "requeue",
    };
    metrics::counter!("wa_sync_events_total", "kind" => job.event.kind(), "tenant" => job.event.tenant().to_owned(), "outcome" => label)
        .increment(1);
    metrics::histogram!("wa_sync_event_to_commit_seconds")
        .record(job.received.elapsed().as_secs_f64());
    // The handler may have been cancelled (shutdown timeout); then the delivery is redelivered.
    let _ = job.reply.send(outcome);
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]
mod tests {
    use super::*;

    #[test]
    fn constraint_violations_are_dead_lettered_and_connection_errors_retried() {
        let unique = StoreError::Db(DieselError::DatabaseError(
            DatabaseErrorKind::CheckViolation,
            Box::new("check".to_owned()),
        ));
        assert!(matches!(
            settle_failure(&unique, 1),
            Outcome::DeadLetter { .. }
        ));
        let closed = StoreError::Db(DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection,
            Box::new("closed".to_owned()),
        ));
        assert!(matches!(settle_failure(&closed, 1), Outcome::Retry { .. }));
        assert!(matches!(
            settle_failure(&closed, MAX_TRANSIENT_ATTEMPTS),
            Outcome::DeadLetter { .. }
        ));
    }
}

//! Dispatch of one tenant's queues `sender.dispatch.<tenant>.<priority>` (single active consumer
//! each): expiry, 24-hour window and template checks, per-recipient pacing, a slot from the
//! number's shared limiter, the Graph call, and the outcome — recorded in PostgreSQL, published with
//! a confirm, and only then acked. Errors follow the table in [`crate::classify`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use wa_amqp::{Handler, IncomingMessage, Outcome};
use wa_common::contracts::outcome::FailureReason;
use wa_common::contracts::send_job::{MessageContent, SendJob};
use wa_common::decode;
use wa_common::meta::send_message_body;
use wa_common::phone::E164;
use wa_common::topology::HEADER_TO_E164;
use wa_db::models::sender::{self as q, AttemptResult, SendJobRow};

use crate::batch::{Accepted, JobRecord};
use crate::classify::{Class, classify};
use crate::clients::graph::SendResult;
use crate::deps::{Deps, JobRef, TenantCtx};
use crate::sequencer::Sequencer;

/// Delay before a job that hit an infrastructure error (DB, broker) is tried again.
const INFRA_RETRY: Duration = Duration::from_secs(1);
/// Prefix of the `biz_opaque_callback_data` we set when the job has none: settles unknown outcomes.
pub const CALLBACK_PREFIX: &str = "wa-sender:";
/// Longest pair-rate wait held in memory (keeping the recipient's order); longer ones use the
/// retry ladder.
const MAX_INPROCESS_PAIR_WAIT: Duration = Duration::from_secs(16);
/// Longest transient backoff of the delay-queue ladder.
const MAX_BACKOFF: Duration = Duration::from_secs(256);

/// The handler of one tenant's dispatch queues.
pub struct Dispatcher {
    deps: Arc<Deps>,
    ctx: Arc<TenantCtx>,
    order: Arc<Sequencer>,
}

impl Dispatcher {
    /// A handler for `ctx`'s queues.
    pub fn new(deps: Arc<Deps>, ctx: Arc<TenantCtx>) -> Self {
        Self {
            deps,
            ctx,
            order: Arc::new(Sequencer::default()),
        }
    }
}

/// Capped exponential backoff with full jitter for the `attempts`-th failed call (1-based).
pub fn backoff(attempts: u32) -> Duration {
    let exp = Duration::from_secs(1u64 << attempts.min(8).saturating_sub(1));
    let cap = exp.min(MAX_BACKOFF);
    let jitter = rand::rng().random_range(0.5..=1.0);
    cap.mul_f64(jitter).max(Duration::from_millis(500))
}

/// 4^X seconds for the X-th 131056 in a row (Meta's advice), capped.
pub fn pair_backoff(strikes: u32) -> Duration {
    Duration::from_secs(4u64.saturating_pow(strikes.clamp(1, 4))).min(MAX_BACKOFF)
}

enum Step {
    Done(Outcome),
}

/// Why a job fails before any Graph call.
struct Problem {
    reason: FailureReason,
    detail: String,
    /// Dead-letter the job (an operator can fix and replay it) rather than just ack it.
    dead_letter: bool,
}

impl Handler for Dispatcher {
    async fn handle(&self, msg: IncomingMessage) -> Outcome {
        let span = tracing::info_span!("sender.dispatch", tenant_id = %self.ctx.tenant.tenant_id, job_id = tracing::field::Empty, attempt = msg.attempt);
        let _ = span.set_parent(msg.trace_context.clone());
        let Step::Done(outcome) = self.dispatch(&msg).instrument(span).await;
        outcome
    }
}

impl Dispatcher {
    async fn dispatch(&self, msg: &IncomingMessage) -> Step {
        let deps = &self.deps;
        let ctx = &self.ctx;
        let tenant_id = ctx.tenant.tenant_id.as_str();
        let trace = Some(msg.trace_context.clone());
        let decoded = decode::<SendJob>(&msg.body);
        // Intake normalised `to` already (parsing a number is a good part of a job's CPU time).
        let to = decoded.as_ref().ok().and_then(|job| {
            msg.header_str(HEADER_TO_E164)
                .and_then(|to| E164::from_normalized(&to).ok())
                .or_else(|| E164::parse(&job.to).ok())
        });
        // Every delivery enters the sequencer before anything else: jobs to one recipient are
        // handled in delivery order (single active consumer: publish order); others concurrently.
        let key = to.as_ref().map(|to| to.as_str().to_owned());
        let _turn = self.order.enter(msg.sequence, key).await;
        let job = match decoded {
            Ok(job) => job,
            // Intake validated it; a bad body here was put here by hand.
            Err(error) => {
                return Step::Done(Outcome::dead_letter("invalid_job", error.to_string()));
            }
        };
        tracing::Span::current().record("job_id", job.job_id.as_str());
        let Some(to) = to else {
            return Step::Done(Outcome::dead_letter(
                "invalid_recipient",
                "`to` is not a phone number",
            ));
        };
        // The recipient's pacing state, shared by the tenant's priority queues.
        let mut lane = ctx.lanes.acquire(to.as_str()).await;
        let record = JobRecord {
            tenant_id: tenant_id.to_owned(),
            job_id: job.job_id.as_str().to_owned(),
            to_e164: Some(to.as_str().to_owned()),
            priority: job.priority.as_str(),
            message_type: job.message.content.type_name(),
            reference_kind: job.reference.as_ref().map(|r| r.kind.clone()),
            reference_id: job.reference.as_ref().map(|r| r.id.clone()),
            expires_at: job.expires_at.map(|at| at.to_utc()),
        };
        let job_ref = JobRef {
            job_id: record.job_id.clone(),
            tenant_id: record.tenant_id.clone(),
            to: to.as_str().to_owned(),
            reference: job.reference.clone(),
            message: Some(job.message.clone()),
        };

        // Final checks that need no Graph call (and, on the hot path, no database round trip: the
        // job's state is checked by the claim below). A failing check settles the job only if it
        // is still `received`: a redelivered job may already have an outcome, which stands.
        let problem = match self.precheck(&job, &to).await {
            Ok(problem) => problem,
            Err(step) => return step,
        };
        if let Some(Problem {
            reason,
            detail,
            dead_letter,
        }) = problem
        {
            let mut conn = match deps.pool.get().await {
                Ok(conn) => conn,
                Err(error) => return infra("database unavailable", &error),
            };
            let row = match self
                .unsettled(&mut conn, &record, &job, &msg.trace_context)
                .await
            {
                Ok(row) => row,
                Err(step) => return step,
            };
            return self
                .fail(
                    &mut conn,
                    &job_ref,
                    reason,
                    None,
                    &detail,
                    row.attempts,
                    trace,
                    dead_letter,
                )
                .await;
        }

        // Per-recipient pacing (lane held since the start), then a slot of the number's cap.
        let mut body = send_message_body(&to, &job.message);
        if job.message.biz_opaque_callback_data.is_none()
            && let Some(map) = body.as_object_mut()
        {
            map.insert(
                "biz_opaque_callback_data".into(),
                serde_json::Value::from(format!("{CALLBACK_PREFIX}{}", job.job_id)),
            );
        }
        let claim_key = (record.tenant_id.clone(), record.job_id.clone());
        loop {
            if lane.remaining() > MAX_INPROCESS_PAIR_WAIT {
                let delay = lane.remaining();
                return Step::Done(Outcome::retry_in(delay));
            }
            lane.wait_turn().await;
            if ctx.paused.load(Ordering::Relaxed) {
                // The supervisor stops this queue; hand the job back (it stays queued).
                return Step::Done(Outcome::retry_in(Duration::from_secs(4)));
            }
            // The claim is taken after the slot is handed out (a slot lead ahead of its instant),
            // so a crash while waiting for a slot leaves the job `received`, not `unknown`.
            let mut claimed = None;
            let mut recorded_here = false;
            let in_flight = loop {
                let Ok(mut slot) = ctx
                    .limiter
                    .acquire(job.priority, msg.sequence, claimed.is_some())
                    .await
                else {
                    if claimed.is_some() {
                        self.release(&record.job_id, None).await;
                    }
                    return Step::Done(Outcome::Requeue);
                };
                // Checked before the claim, for the latest start the slot allows, so a job is
                // never claimed for a send that must not happen (the lease ends no earlier).
                if !ctx.lease.is_valid_until(slot.at + slot.allowance) {
                    // Another replica may hold the number by then: hand the job back to it. (The
                    // keeper logs the lease's loss; this happens to every job still waiting.)
                    tracing::debug!(
                        "the number's sending lease is no longer certain: handing the job back"
                    );
                    metrics::counter!("wa_sender_missed_slots_total", "tenant" => tenant_id.to_owned(), "reason" => "lease")
                        .increment(1);
                    if claimed.is_some() {
                        self.release(&record.job_id, None).await;
                    }
                    return Step::Done(Outcome::Requeue);
                }
                if claimed.is_none() {
                    let granted = tokio::time::Instant::now();
                    let claim = deps.writes.claim.submit(claim_key.clone()).await;
                    slot.claimed(matches!(claim, Ok(Some(_))).then(|| granted.elapsed()));
                    match claim {
                        Ok(Some(claim)) => {
                            claimed = Some(claim);
                        }
                        Ok(None) => {
                            // Not `received`: settled, unknown, or never recorded (put on the
                            // dispatch queue some other way than intake).
                            let mut conn = match deps.pool.get().await {
                                Ok(conn) => conn,
                                Err(error) => return infra("database unavailable", &error),
                            };
                            match self
                                .unsettled(&mut conn, &record, &job, &msg.trace_context)
                                .await
                            {
                                // Recorded just now: claim it with the next slot (once).
                                Ok(_) if !recorded_here => {
                                    recorded_here = true;
                                    continue;
                                }
                                Ok(_) => {
                                    return infra(
                                        "the job is `received` but could not be claimed",
                                        &"claim found no row",
                                    );
                                }
                                Err(step) => return step,
                            }
                        }
                        Err(error) => return infra("could not claim the job", &error),
                    }
                }
                let allowance = slot.allowance;
                let slot = slot.at;
                let late = if tokio::time::Instant::now() <= slot + allowance {
                    tokio::time::sleep_until(slot).await;
                    // Checked again after the wake-up: on a starved host the task can wake late,
                    // and a late send bunches with the next slots' sends.
                    if tokio::time::Instant::now() <= slot + allowance {
                        match ctx.limiter.start_send(slot + allowance).await {
                            Some(in_flight) => break in_flight,
                            None => "answers",
                        }
                    } else {
                        "wake_up"
                    }
                } else {
                    "claim"
                };
                metrics::counter!("wa_sender_missed_slots_total", "tenant" => tenant_id.to_owned(), "reason" => late)
                    .increment(1);
            };
            let Some(claimed) = claimed else {
                return Step::Done(Outcome::Requeue);
            };
            let lag = (Utc::now() - claimed.first_seen_at)
                .to_std()
                .unwrap_or_default();
            metrics::histogram!("wa_sender_queue_lag_seconds", "tenant" => tenant_id.to_owned())
                .record(lag.as_secs_f64());
            let result = deps
                .graph
                .send_message(&ctx.tenant.phone_number_id, &ctx.tenant.access_token, &body)
                .await;
            // Answered (or given up on): from now the send counts for one more second.
            drop(in_flight);
            let attempts = claimed.attempts;
            let job_id = record.job_id.as_str();
            match result {
                SendResult::Accepted { wa_message_id } => {
                    lane.pair_strikes = 0;
                    lane.next_allowed = Some(tokio::time::Instant::now() + deps.send.pair_interval);
                    let now = Utc::now();
                    let stored = deps
                        .writes
                        .accept
                        .submit(Accepted {
                            tenant_id: record.tenant_id.clone(),
                            job_id: record.job_id.clone(),
                            attempt: attempts,
                            wa_message_id: wa_message_id.clone(),
                            accepted_at: now,
                        })
                        .await;
                    if let Err(error) = stored {
                        // Sent but not recorded: the row stays `sending`, so a redelivery marks it
                        // unknown and the status webhook settles it; never resend.
                        tracing::error!(error = %error, "accepted by Meta but not recorded");
                        return Step::Done(Outcome::Requeue);
                    }
                    if let Err(error) = deps
                        .publish_accepted(&job_ref, &wa_message_id, now, attempts, trace)
                        .await
                    {
                        // Recorded as accepted: a redelivery re-publishes the outcome without sending.
                        return infra("could not publish outbound.accepted", &error);
                    }
                    return Step::Done(Outcome::Ack);
                }
                SendResult::Unknown { detail } => {
                    let mut conn = match self.conn_after_call().await {
                        Ok(conn) => conn,
                        Err(step) => return step,
                    };
                    let _ = SendJobRow::mark_unknown(&mut conn, tenant_id, job_id).await;
                    let _ = SendJobRow::finish_attempt(
                        &mut conn,
                        tenant_id,
                        job_id,
                        attempts,
                        &AttemptResult {
                            http_status: None,
                            meta_code: None,
                            outcome: "unknown",
                            detail: Some(&detail),
                            fbtrace_id: None,
                        },
                    )
                    .await;
                    tracing::warn!(detail = %detail, "outcome unknown; not resending, waiting for a status or the timeout");
                    metrics::counter!("wa_sender_unknown_outcome_total", "tenant" => tenant_id.to_owned()).increment(1);
                    lane.next_allowed = Some(tokio::time::Instant::now() + deps.send.pair_interval);
                    return Step::Done(Outcome::Ack);
                }
                SendResult::NotSent { detail } => {
                    let mut conn = match self.conn_after_call().await {
                        Ok(conn) => conn,
                        Err(step) => return step,
                    };
                    let _ = SendJobRow::finish_attempt(
                        &mut conn,
                        tenant_id,
                        job_id,
                        attempts,
                        &AttemptResult {
                            http_status: None,
                            meta_code: None,
                            outcome: "transient",
                            detail: Some(&detail),
                            fbtrace_id: None,
                        },
                    )
                    .await;
                    return self
                        .transient(
                            &mut conn, &job_ref, &job, None, &detail, attempts, "connect", trace,
                        )
                        .await;
                }
                SendResult::Rejected {
                    http_status,
                    code,
                    detail,
                    fbtrace_id,
                } => {
                    let mut conn = match self.conn_after_call().await {
                        Ok(conn) => conn,
                        Err(step) => return step,
                    };
                    let class = classify(http_status, code);
                    let word = match class {
                        Class::Transient { .. } => "transient",
                        Class::Permanent(_) => "permanent",
                        Class::Auth => "auth",
                    };
                    let _ = SendJobRow::finish_attempt(
                        &mut conn,
                        tenant_id,
                        job_id,
                        attempts,
                        &AttemptResult {
                            http_status: Some(i32::from(http_status)),
                            meta_code: code,
                            outcome: word,
                            detail: Some(&detail),
                            fbtrace_id: fbtrace_id.as_deref(),
                        },
                    )
                    .await;
                    match class {
                        Class::Permanent(reason) => {
                            return self
                                .fail(
                                    &mut conn, &job_ref, reason, code, &detail, attempts, trace,
                                    true,
                                )
                                .await;
                        }
                        Class::Auth => {
                            if let Err(error) =
                                SendJobRow::mark_retryable(&mut conn, tenant_id, job_id, code).await
                            {
                                return infra("could not release the job", &error);
                            }
                            self.pause(&mut conn, code, &detail).await;
                            return Step::Done(Outcome::retry_in(Duration::from_secs(4)));
                        }
                        Class::Transient { pair_limited: true } => {
                            lane.pair_strikes += 1;
                            let wait = pair_backoff(lane.pair_strikes);
                            lane.next_allowed = Some(tokio::time::Instant::now() + wait);
                            metrics::counter!("wa_sender_retries_total", "tenant" => tenant_id.to_owned(), "reason" => "pair_rate").increment(1);
                            if attempts >= i32::try_from(deps.send.max_attempts).unwrap_or(i32::MAX)
                            {
                                return self
                                    .transient(
                                        &mut conn,
                                        &job_ref,
                                        &job,
                                        code,
                                        &detail,
                                        attempts,
                                        "pair_rate",
                                        trace,
                                    )
                                    .await;
                            }
                            if let Err(error) =
                                SendJobRow::mark_retryable(&mut conn, tenant_id, job_id, code).await
                            {
                                return infra("could not release the job", &error);
                            }
                            // Hold the lane (the recipient's later jobs wait behind this one).
                            continue;
                        }
                        Class::Transient {
                            pair_limited: false,
                        } => {
                            let reason = code
                                .map_or_else(|| format!("http_{http_status}"), |c| c.to_string());
                            return self
                                .transient(
                                    &mut conn, &job_ref, &job, code, &detail, attempts, &reason,
                                    trace,
                                )
                                .await;
                        }
                    }
                }
            }
        }
    }

    /// The checks a job must pass before any Graph call: expiry, the 24-hour window (free-form
    /// messages) and the template registry. `Ok(None)` when it may be sent; `Err` on an
    /// infrastructure error.
    async fn precheck(&self, job: &SendJob, to: &E164) -> Result<Option<Problem>, Step> {
        let deps = &self.deps;
        if let Some(expires_at) = job.expires_at
            && expires_at.to_utc() <= Utc::now()
        {
            return Ok(Some(Problem {
                reason: FailureReason::Expired,
                detail: "expires_at passed before sending".to_owned(),
                dead_letter: false,
            }));
        }
        if !job.message.content.is_template() {
            let open_since = Utc::now() - chrono::Duration::hours(24)
                + chrono::Duration::from_std(deps.send.window_margin).unwrap_or_default();
            match self
                .ctx
                .last_inbound(&deps.pool, to.digits(), open_since)
                .await
            {
                Ok(last) if last.is_none_or(|at| at < open_since) => {
                    let detail = match last {
                        None => "no inbound message from this recipient: free-form messages need an open 24-hour window; send a template".to_owned(),
                        Some(at) => format!("last inbound message at {at} is older than 24 h (with the safety margin); send a template"),
                    };
                    return Ok(Some(Problem {
                        reason: FailureReason::WindowClosed,
                        detail,
                        dead_letter: false,
                    }));
                }
                Ok(_) => {}
                Err(error) => return Err(infra("could not read the 24-hour window", &error)),
            }
        }
        if let MessageContent::Template { template } = &job.message.content {
            match self
                .ctx
                .template_status(&deps.pool, &template.name, &template.language.code)
                .await
            {
                Ok(Some((status, parameter_count))) => {
                    let problem = match status.as_str() {
                        "APPROVED" => None,
                        "PAUSED" | "DISABLED" => Some((
                            FailureReason::TemplatePaused,
                            format!("template {} is {status}", template.name),
                        )),
                        other => Some((
                            FailureReason::TemplateInvalid,
                            format!("template {} is {other}, not APPROVED", template.name),
                        )),
                    };
                    let problem = problem.or_else(|| {
                        let given = template.body_parameter_count();
                        (usize::try_from(parameter_count).ok() != Some(given)).then(|| {
                            (
                                FailureReason::TemplateInvalid,
                                format!("template {} takes {parameter_count} body parameters, the job gives {given}", template.name),
                            )
                        })
                    });
                    if let Some((reason, detail)) = problem {
                        return Ok(Some(Problem {
                            reason,
                            detail,
                            dead_letter: true,
                        }));
                    }
                }
                Ok(None) => {}
                Err(error) => return Err(infra("could not read the template registry", &error)),
            }
        }
        Ok(None)
    }

    /// The job's row when it is still `received` (recording it when intake did not, e.g. a job
    /// put on the dispatch queue by hand). Otherwise the job already has an outcome or may have
    /// one, and this settles the delivery without a Graph call: `accepted` re-publishes its
    /// outcome (the crash may have come before the publish); `sending` means a previous delivery
    /// crashed mid-call, so the outcome is marked unknown (never resent blindly); `failed` and
    /// `unknown` are acked.
    async fn unsettled(
        &self,
        conn: &mut wa_db::AsyncPgConnection,
        record: &JobRecord,
        job: &SendJob,
        trace: &opentelemetry::Context,
    ) -> Result<SendJobRow, Step> {
        let tenant_id = record.tenant_id.as_str();
        let job_id = record.job_id.as_str();
        let row = match SendJobRow::get(conn, tenant_id, job_id).await {
            Ok(row) => row,
            Err(diesel::result::Error::NotFound) => {
                match SendJobRow::insert_or_get(conn, &record.as_new()).await {
                    Ok(row) => row,
                    Err(error) => return Err(infra("could not record the job", &error)),
                }
            }
            Err(error) => return Err(infra("could not read the job", &error)),
        };
        match row.state.as_str() {
            "received" => Ok(row),
            "accepted" => {
                let mut job_ref = JobRef::from_row(&row);
                job_ref.message = Some(job.message.clone());
                if let (Some(wamid), Some(at)) = (&row.wa_message_id, row.accepted_at)
                    && let Err(error) = self
                        .deps
                        .publish_accepted(&job_ref, wamid, at, row.attempts, Some(trace.clone()))
                        .await
                {
                    return Err(infra("could not re-publish outbound.accepted", &error));
                }
                Err(Step::Done(Outcome::Ack))
            }
            "sending" => {
                // A previous delivery crashed mid-call: Meta may have it. Never resend blindly.
                if let Err(error) = SendJobRow::mark_unknown(conn, tenant_id, job_id).await {
                    return Err(infra("could not mark the outcome unknown", &error));
                }
                metrics::counter!("wa_sender_unknown_outcome_total", "tenant" => tenant_id.to_owned()).increment(1);
                Err(Step::Done(Outcome::Ack))
            }
            _ => Err(Step::Done(Outcome::Ack)),
        }
    }

    /// A connection to record how a failed call ended; without one the row stays `sending`, so
    /// a redelivery marks it unknown and a status webhook settles it (never resent blindly).
    async fn conn_after_call(&self) -> Result<wa_db::PooledConn, Step> {
        self.deps
            .pool
            .get()
            .await
            .map_err(|error| infra("database unavailable after the Graph call", &error))
    }

    /// Hands a claimed job back (`sending` → `received`) when it will not be sent now.
    async fn release(&self, job_id: &str, code: Option<i64>) {
        if let Ok(mut conn) = self.deps.pool.get().await {
            let _ = SendJobRow::mark_retryable(&mut conn, &self.ctx.tenant.tenant_id, job_id, code)
                .await;
        }
    }

    /// A transient failure: retry through the delay queues, or give up after the attempt budget
    /// or the job's expiry.
    #[expect(clippy::too_many_arguments, reason = "the failure's facts")]
    async fn transient(
        &self,
        conn: &mut wa_db::AsyncPgConnection,
        job_ref: &JobRef,
        job: &SendJob,
        code: Option<i64>,
        detail: &str,
        attempts: i32,
        reason: &str,
        trace: Option<opentelemetry::Context>,
    ) -> Step {
        let deps = &self.deps;
        let budget = i32::try_from(deps.send.max_attempts).unwrap_or(i32::MAX);
        let delay = backoff(u32::try_from(attempts).unwrap_or(1));
        let expired = job.expires_at.is_some_and(|at| {
            at.to_utc() <= Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default()
        });
        if attempts >= budget {
            let detail = format!("gave up after {attempts} attempts; last error: {detail}");
            return self
                .fail(
                    conn,
                    job_ref,
                    FailureReason::RetriesExhausted,
                    code,
                    &detail,
                    attempts,
                    trace,
                    true,
                )
                .await;
        }
        if expired {
            let detail = format!("expires_at passes before the next attempt; last error: {detail}");
            return self
                .fail(
                    conn,
                    job_ref,
                    FailureReason::Expired,
                    code,
                    &detail,
                    attempts,
                    trace,
                    false,
                )
                .await;
        }
        if let Err(error) =
            SendJobRow::mark_retryable(conn, &job_ref.tenant_id, &job_ref.job_id, code).await
        {
            return infra("could not release the job", &error);
        }
        metrics::counter!("wa_sender_retries_total", "tenant" => job_ref.tenant_id.clone(), "reason" => reason.to_owned()).increment(1);
        tracing::info!(attempts, retry_in = ?delay, reason, "transient failure; retrying");
        Step::Done(Outcome::retry_in(delay))
    }

    /// A final failure: record it, publish `outbound.failed` (confirmed), then dead-letter the job
    /// with the reason — except `expired` and `window_closed`, which are acked (nothing to replay).
    #[expect(clippy::too_many_arguments, reason = "the failure's facts")]
    async fn fail(
        &self,
        conn: &mut wa_db::AsyncPgConnection,
        job_ref: &JobRef,
        reason: FailureReason,
        meta_code: Option<i64>,
        detail: &str,
        attempts: i32,
        trace: Option<opentelemetry::Context>,
        dead_letter: bool,
    ) -> Step {
        match SendJobRow::mark_failed(
            conn,
            &job_ref.tenant_id,
            &job_ref.job_id,
            reason.as_str(),
            meta_code,
            detail,
        )
        .await
        {
            Ok(_) => {}
            Err(error) => return infra("could not record the failure", &error),
        }
        if let Err(error) = self
            .deps
            .publish_failed(job_ref, reason, meta_code, detail, attempts, trace, true)
            .await
        {
            return infra("could not publish outbound.failed", &error);
        }
        if dead_letter {
            Step::Done(Outcome::dead_letter(reason.as_str(), detail))
        } else {
            Step::Done(Outcome::Ack)
        }
    }

    /// Auth error: pause the tenant for every replica and wake the supervisor, which stops the
    /// tenant's consumers (jobs stay queued) and probes until the credentials work again.
    async fn pause(&self, conn: &mut wa_db::AsyncPgConnection, code: Option<i64>, detail: &str) {
        let tenant_id = &self.ctx.tenant.tenant_id;
        let reason = format!(
            "auth error {}: {detail}",
            code.map_or_else(|| "?".to_owned(), |c| c.to_string())
        );
        if let Err(error) = q::pause_tenant(conn, tenant_id, &reason).await {
            tracing::error!(error = %error, "could not record the pause; pausing this replica only");
        }
        if !self.ctx.paused.swap(true, Ordering::Relaxed) {
            tracing::error!(tenant_id = %tenant_id, meta_code = ?code, "auth error: pausing the tenant's sending");
        }
        metrics::gauge!("wa_sender_tenant_paused", "tenant" => tenant_id.clone()).set(1.0);
        self.ctx.pause_notify.notify_one();
    }
}

fn infra(what: &str, error: &dyn std::fmt::Display) -> Step {
    tracing::warn!(error = %error, "{what}; retrying");
    Step::Done(Outcome::retry_in(INFRA_RETRY))
}

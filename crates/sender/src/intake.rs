//! Intake of `sender.send` (single active consumer: one replica at a time, so publish order is
//! kept): validates each send-job, normalises `to`,
//! resolves the tenant, records the job (idempotency), and moves it with a confirmed publish to the
//! tenant's dispatch queue for its priority. Bad jobs get `outbound.failed` (when a job id can be
//! read) and are dead-lettered with the reason; a job already settled is acked without a Graph call.

use std::sync::Arc;
use std::time::Duration;

use wa_amqp::lapin::types::{AMQPValue, FieldTable};
use wa_amqp::{Handler, IncomingMessage, Outcome, PublishOptions};
use wa_common::contracts::outcome::FailureReason;
use wa_common::contracts::send_job::SendJob;
use wa_common::decode;
use wa_common::phone::E164;
use wa_common::topology::{HEADER_TO_E164, exchange, sender_dispatch_queue};
use wa_db::models::sender::SendJobRow;

use crate::batch::JobRecord;
use crate::deps::{Deps, JobRef};
use crate::sequencer::Sequencer;

/// Delay before a job whose intake hit an infrastructure error (DB, broker) is tried again.
const INFRA_RETRY: Duration = Duration::from_secs(1);

/// The `sender.send` handler.
pub struct Intake {
    deps: Arc<Deps>,
    order: Arc<Sequencer>,
}

impl Intake {
    /// A handler over the shared dependencies.
    pub fn new(deps: Arc<Deps>) -> Self {
        Self {
            deps,
            order: Arc::new(Sequencer::default()),
        }
    }
}

/// The parts of an invalid job we can still read, to tell the platform.
fn peek(body: &[u8]) -> Option<JobRef> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let job_id = value.get("job_id")?.as_str()?.to_owned();
    let tenant_id = value.get("tenant_id")?.as_str()?.to_owned();
    let to = value
        .get("to")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    let reference = value
        .get("reference")
        .and_then(|r| serde_json::from_value(r.clone()).ok());
    Some(JobRef {
        job_id,
        tenant_id,
        to,
        reference,
        message: value
            .get("message")
            .and_then(|m| serde_json::from_value(m.clone()).ok()),
    })
}

impl Handler for Intake {
    #[tracing::instrument(name = "sender.intake", skip_all, fields(job_id, tenant_id))]
    async fn handle(&self, msg: IncomingMessage) -> Outcome {
        let deps = &self.deps;
        let trace = Some(msg.trace_context.clone());
        let decoded = decode::<SendJob>(&msg.body);
        let to = decoded
            .as_ref()
            .ok()
            .and_then(|job| E164::parse(&job.to).ok());
        // Every delivery enters the sequencer first (before any other await): one recipient's jobs
        // are moved on in delivery order, which is publish order (single active consumer).
        let key = decoded
            .as_ref()
            .ok()
            .zip(to.as_ref())
            .map(|(job, to)| format!("{}/{}", job.tenant_id, to));
        let _turn = self.order.enter(msg.sequence, key).await;
        let job = match decoded {
            Ok(job) => job,
            Err(error) => {
                let detail = error.to_string();
                if let Some(job) = peek(&msg.body) {
                    let published = deps
                        .publish_failed(
                            &job,
                            FailureReason::InvalidJob,
                            None,
                            &detail,
                            0,
                            trace,
                            true,
                        )
                        .await;
                    if let Err(e) = published {
                        // An unreadable job id cannot be reported (the contract needs a valid one).
                        tracing::warn!(error = %e, "invalid job: outcome not published");
                    }
                } else {
                    metrics::counter!("wa_sender_failed_total", "tenant" => "unknown", "reason" => "invalid_job").increment(1);
                }
                return Outcome::dead_letter("invalid_job", detail);
            }
        };
        let span = tracing::Span::current();
        span.record("job_id", job.job_id.as_str());
        span.record("tenant_id", job.tenant_id.as_str());
        let mut job_ref = JobRef {
            job_id: job.job_id.as_str().to_owned(),
            tenant_id: job.tenant_id.as_str().to_owned(),
            to: job.to.clone(),
            reference: job.reference.clone(),
            message: Some(job.message.clone()),
        };
        if !deps.tenants.contains_key(job.tenant_id.as_str()) {
            let detail = format!("tenant {} is not configured", job.tenant_id);
            if let Err(e) = deps
                .publish_failed(
                    &job_ref,
                    FailureReason::UnknownTenant,
                    None,
                    &detail,
                    0,
                    trace,
                    true,
                )
                .await
            {
                tracing::warn!(error = %e, "could not publish outbound.failed; retrying");
                return Outcome::retry_in(INFRA_RETRY);
            }
            return Outcome::dead_letter("unknown_tenant", detail);
        }
        if let Some(to) = &to {
            job_ref.to = to.as_str().to_owned();
        }

        let record = JobRecord {
            tenant_id: job.tenant_id.as_str().to_owned(),
            job_id: job.job_id.as_str().to_owned(),
            to_e164: to.as_ref().map(|to| to.as_str().to_owned()),
            priority: job.priority.as_str(),
            message_type: job.message.content.type_name(),
            reference_kind: job.reference.as_ref().map(|r| r.kind.clone()),
            reference_id: job.reference.as_ref().map(|r| r.id.clone()),
            expires_at: job.expires_at.map(|at| at.to_utc()),
        };
        // Batched with the other jobs being taken in (one statement for many).
        let row = match deps.writes.record.submit(record.clone()).await {
            Ok(row) => row,
            Err(error) => {
                tracing::warn!(error = %error, "could not record the job; retrying");
                return Outcome::retry_in(INFRA_RETRY);
            }
        };
        if to.is_none() && row.state == "received" {
            let detail = "`to` is not a phone number";
            let marked = match deps.pool.get().await {
                Ok(mut conn) => SendJobRow::mark_failed(
                    &mut conn,
                    &record.tenant_id,
                    &record.job_id,
                    "invalid_recipient",
                    None,
                    detail,
                )
                .await
                .map_err(anyhow::Error::from),
                Err(error) => Err(anyhow::Error::from(error)),
            };
            if let Err(error) = marked {
                tracing::warn!(error = %error, "could not record the failure; retrying");
                return Outcome::retry_in(INFRA_RETRY);
            }
            if let Err(e) = deps
                .publish_failed(
                    &job_ref,
                    FailureReason::InvalidRecipient,
                    None,
                    detail,
                    0,
                    trace,
                    true,
                )
                .await
            {
                tracing::warn!(error = %e, "could not publish outbound.failed; retrying");
                return Outcome::retry_in(INFRA_RETRY);
            }
            return Outcome::dead_letter("invalid_recipient", detail);
        }
        match row.state.as_str() {
            "received" => {}
            "accepted" => {
                // Already sent: re-publish the outcome (we may have crashed before it was confirmed).
                let job = JobRef::from_row(&row);
                if let (Some(wamid), Some(at)) = (&row.wa_message_id, row.accepted_at)
                    && let Err(e) = deps
                        .publish_accepted(&job, wamid, at, row.attempts, trace)
                        .await
                {
                    tracing::warn!(error = %e, "could not re-publish outbound.accepted; retrying");
                    return Outcome::retry_in(INFRA_RETRY);
                }
                metrics::counter!("wa_sender_duplicates_total", "tenant" => row.tenant_id.clone())
                    .increment(1);
                return Outcome::Ack;
            }
            _ => {
                // failed (already reported), sending/unknown (being settled): never send again.
                metrics::counter!("wa_sender_duplicates_total", "tenant" => row.tenant_id.clone())
                    .increment(1);
                return Outcome::Ack;
            }
        }
        let queue = sender_dispatch_queue(job.tenant_id.as_str(), job.priority.as_str()).name;
        let mut headers = FieldTable::default();
        if let Some(to) = &to {
            headers.insert(
                HEADER_TO_E164.into(),
                AMQPValue::LongString(to.as_str().into()),
            );
        }
        let options = PublishOptions {
            message_id: msg.message_id.clone(),
            tenant_id: Some(job.tenant_id.as_str().to_owned()),
            headers,
            trace_context: trace,
            ..PublishOptions::default()
        };
        match deps
            .publisher
            .publish_bytes(exchange::RETRY_RETURN, &queue, &msg.body, options)
            .await
        {
            Ok(()) => Outcome::Ack,
            Err(error) => {
                tracing::warn!(error = %error, queue = %queue, "could not move the job to its dispatch queue; retrying");
                Outcome::retry_in(INFRA_RETRY)
            }
        }
    }
}

//! What the sender learns from `whatsapp.events`:
//! - `sender.inbound` (`inbound.message`): the recipient's last inbound time (24-hour window),
//!   from Meta's timestamp;
//! - `sender.status` (`inbound.status`): settles a job whose send outcome was unknown (matched by
//!   the `biz_opaque_callback_data` we set), publishing `outbound.accepted` with the wamid;
//!
//! and the settler, which fails jobs still unknown after the documented timeout.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use wa_amqp::{Handler, IncomingMessage, Outcome};
use wa_common::contracts::inbound::{InboundMessage, InboundStatus};
use wa_common::contracts::outcome::FailureReason;
use wa_common::decode;
use wa_db::models::sender::{self as q, SendJobRow};

use crate::deps::{Deps, JobRef};
use crate::dispatch::CALLBACK_PREFIX;

const INFRA_RETRY: Duration = Duration::from_secs(1);

/// Resolves the tenant of an event from its phone number id (or WABA id).
fn tenant_of(deps: &Deps, phone_number_id: Option<&str>, waba_id: &str) -> Option<String> {
    deps.tenants
        .values()
        .find(|ctx| match phone_number_id {
            Some(id) => ctx.tenant.phone_number_id == id,
            None => ctx.tenant.waba_id == waba_id,
        })
        .map(|ctx| ctx.tenant.tenant_id.clone())
}

/// The `sender.inbound` handler.
pub struct WindowTracker {
    deps: Arc<Deps>,
}

impl WindowTracker {
    /// A handler over the shared dependencies.
    pub fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }
}

impl Handler for WindowTracker {
    #[tracing::instrument(name = "sender.window", skip_all)]
    async fn handle(&self, msg: IncomingMessage) -> Outcome {
        let event = match decode::<InboundMessage>(&msg.body) {
            Ok(event) => event,
            Err(error) => return Outcome::dead_letter("invalid_payload", error.to_string()),
        };
        let Some(tenant_id) = tenant_of(
            &self.deps,
            event.source.phone_number_id.as_deref(),
            &event.source.waba_id,
        ) else {
            return Outcome::dead_letter("unknown_tenant", "no tenant has this phone number id");
        };
        if event.from.is_empty() {
            // Username-only senders have no phone number to send to; nothing to learn.
            return Outcome::Ack;
        }
        let mut conn = match self.deps.pool.get().await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(error = %error, "database unavailable; retrying");
                return Outcome::retry_in(INFRA_RETRY);
            }
        };
        match q::record_inbound(&mut conn, &tenant_id, &event.from, event.timestamp).await {
            Ok(()) => Outcome::Ack,
            Err(error) => {
                tracing::warn!(error = %error, "could not record the window; retrying");
                Outcome::retry_in(INFRA_RETRY)
            }
        }
    }
}

/// The `sender.status` handler.
pub struct StatusSettler {
    deps: Arc<Deps>,
}

impl StatusSettler {
    /// A handler over the shared dependencies.
    pub fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }
}

impl Handler for StatusSettler {
    #[tracing::instrument(name = "sender.status", skip_all)]
    async fn handle(&self, msg: IncomingMessage) -> Outcome {
        let event = match decode::<InboundStatus>(&msg.body) {
            Ok(event) => event,
            Err(error) => return Outcome::dead_letter("invalid_payload", error.to_string()),
        };
        let Some(job_id) = event
            .biz_opaque_callback_data
            .as_deref()
            .and_then(|data| data.strip_prefix(CALLBACK_PREFIX))
        else {
            return Outcome::Ack;
        };
        let Some(tenant_id) = tenant_of(
            &self.deps,
            event.source.phone_number_id.as_deref(),
            &event.source.waba_id,
        ) else {
            return Outcome::Ack;
        };
        let mut conn = match self.deps.pool.get().await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(error = %error, "database unavailable; retrying");
                return Outcome::retry_in(INFRA_RETRY);
            }
        };
        let row = match SendJobRow::get(&mut conn, &tenant_id, job_id).await {
            Ok(row) => row,
            Err(diesel::result::Error::NotFound) => return Outcome::Ack,
            Err(error) => {
                tracing::warn!(error = %error, "could not read the job; retrying");
                return Outcome::retry_in(INFRA_RETRY);
            }
        };
        // `sending` too: a replica that crashed mid-call leaves it there.
        if row.state != "unknown" && row.state != "sending" {
            return Outcome::Ack;
        }
        // Any status (even `failed`) proves Meta accepted the send and gave it this wamid.
        let accepted_at = event.timestamp.min(Utc::now());
        match SendJobRow::mark_accepted(
            &mut conn,
            &tenant_id,
            job_id,
            &event.wa_message_id,
            accepted_at,
        )
        .await
        {
            Ok(Some(row)) => {
                let job = JobRef::from_row(&row);
                if let Err(error) = self
                    .deps
                    .publish_accepted(
                        &job,
                        &event.wa_message_id,
                        accepted_at,
                        row.attempts,
                        Some(msg.trace_context.clone()),
                    )
                    .await
                {
                    tracing::warn!(error = %error, "could not publish outbound.accepted; retrying");
                    return Outcome::retry_in(INFRA_RETRY);
                }
                tracing::info!(job_id, "unknown outcome settled by a status webhook");
                Outcome::Ack
            }
            Ok(None) => Outcome::Ack,
            Err(error) => {
                tracing::warn!(error = %error, "could not settle the job; retrying");
                Outcome::retry_in(INFRA_RETRY)
            }
        }
    }
}

/// Every `interval`, fails the jobs whose outcome stayed unknown longer than `timeout`
/// (`outbound.failed`, reason `retries_exhausted`, detail says the outcome is unknown). Each job is
/// claimed by one UPDATE, so with several replicas only one reports it.
pub async fn run_settler(
    deps: Arc<Deps>,
    interval: Duration,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if let Err(error) = settle_once(&deps, timeout).await {
            tracing::warn!(error = %error, "settling unknown outcomes failed; will try again");
        }
    }
}

/// One settler pass; returns how many jobs it failed.
pub async fn settle_once(deps: &Deps, timeout: Duration) -> anyhow::Result<usize> {
    let cutoff = Utc::now() - chrono::Duration::from_std(timeout)?;
    let detail = format!(
        "outcome unknown: no answer from Meta and no status webhook within {} s; not resent to avoid a duplicate",
        timeout.as_secs()
    );
    let mut conn = deps.pool.get().await?;
    let rows = SendJobRow::fail_stale_unknown(
        &mut conn,
        cutoff,
        FailureReason::RetriesExhausted.as_str(),
        &detail,
    )
    .await?;
    for row in &rows {
        let job = JobRef::from_row(row);
        // Never resent to Meta; but the platform must get its outcome: if the publish fails, the
        // row goes back to `unknown` and the next pass fails and publishes it again.
        if let Err(error) = deps
            .publish_failed(
                &job,
                FailureReason::RetriesExhausted,
                None,
                &detail,
                row.attempts,
                None,
                true,
            )
            .await
        {
            tracing::warn!(error = %error, job_id = %row.job_id, "could not publish outbound.failed for an unknown outcome; retrying at the next pass");
            SendJobRow::reopen_unknown(&mut conn, &row.tenant_id, &row.job_id).await?;
        }
    }
    Ok(rows.len())
}

//! What every handler shares: the pool, the confirmed publisher, the Graph client, the tenants
//! with their limiter, lanes and pause state, and the outcome publishing (`outbound.accepted` /
//! `outbound.failed`), which is confirmed before any ack.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use wa_amqp::{PublishOptions, Publisher};
use wa_common::contracts::Reference;
use wa_common::contracts::outcome::{FailureReason, OutboundAccepted, OutboundFailed};
use wa_common::contracts::send_job::OutboundMessage;
use wa_common::ids::{JobId, TenantId};
use wa_common::topology::{exchange, routing};
use wa_db::PgPool;
use wa_db::models::sender::SendJobRow;
use wa_service::tenants::Tenant;

use crate::batch::{Batcher, ClaimJobs, RecordAccepted, RecordJobs};
use crate::clients::graph::GraphClient;
use crate::config::SendConfig;
use crate::lanes::Lanes;
use crate::lease::Lease;
use crate::limiter::RateLimiter;

/// Shared dependencies of the sender's handlers.
pub struct Deps {
    /// PostgreSQL.
    pub pool: PgPool,
    /// Confirmed publisher (outcomes, dispatch).
    pub publisher: Publisher,
    /// Graph API.
    pub graph: GraphClient,
    /// Sending policy.
    pub send: SendConfig,
    /// Per-tenant state, by tenant id.
    pub tenants: HashMap<String, Arc<TenantCtx>>,
    /// The hot path's database writes, batched across concurrent jobs.
    pub writes: Writes,
}

/// The batched writes of the hot path (see [`crate::batch`]).
pub struct Writes {
    /// Intake: record jobs.
    pub record: Batcher<RecordJobs>,
    /// Dispatch: claim jobs right before their Graph call.
    pub claim: Batcher<ClaimJobs>,
    /// Dispatch: record acceptances.
    pub accept: Batcher<RecordAccepted>,
}

impl Writes {
    /// Starts the batchers on `pool` (needs a running Tokio runtime).
    pub fn start(pool: &PgPool) -> Self {
        Self {
            record: Batcher::start(RecordJobs, pool.clone()),
            claim: Batcher::start(ClaimJobs, pool.clone()),
            accept: Batcher::start(RecordAccepted, pool.clone()),
        }
    }
}

/// One tenant's sending state in this process.
pub struct TenantCtx {
    /// Credentials and number.
    pub tenant: Arc<Tenant>,
    /// The number's cap (shared with other replicas through PostgreSQL).
    pub limiter: RateLimiter,
    /// The number's sending lease: only its holder consumes the tenant's dispatch queues.
    pub lease: Lease,
    /// Per-recipient pacing.
    pub lanes: Lanes,
    /// Set while the tenant is paused (auth error); handlers stop calling Graph.
    pub paused: AtomicBool,
    /// Wakes the tenant's supervisor when a handler paused the tenant.
    pub pause_notify: Notify,
    /// Template registry answers, cached for [`TEMPLATE_CACHE_TTL`].
    pub templates: TemplateCache,
    /// Held while the registry is read, so an expired entry is read once, not by every job.
    pub template_fetch: tokio::sync::Mutex<()>,
    /// Recipients known to have an open 24-hour window: their last inbound time.
    pub windows: WindowCache,
}

/// How long a template registry answer is reused (the registry changes on Meta's review webhooks,
/// minutes apart; Meta itself rejects a template paused in between with 132015).
pub const TEMPLATE_CACHE_TTL: Duration = Duration::from_secs(30);

/// `(name, language)` → `(fetched at, (status, parameter count) when the registry knows it)`.
pub type TemplateCache = Mutex<HashMap<(String, String), (Instant, Option<(String, i32)>)>>;

/// `wa_id` → last inbound time, kept only while the window is open. A last inbound time only
/// ever moves forward, so a cached one that opens the window is never wrong (it can only be
/// earlier than the stored one); a closed or unknown window is always read from the database,
/// so a message the recipient just sent (recorded by any replica) opens it at once.
#[derive(Default)]
pub struct WindowCache {
    open: Mutex<HashMap<String, DateTime<Utc>>>,
}

/// Above this many cached windows, the closed ones are dropped.
const WINDOW_CACHE_PRUNE_ABOVE: usize = 50_000;

impl WindowCache {
    fn open_at(&self, wa_id: &str, open_since: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(wa_id)
            .copied()
            .filter(|at| *at >= open_since)
    }

    fn remember(&self, wa_id: &str, at: DateTime<Utc>, open_since: DateTime<Utc>) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() >= WINDOW_CACHE_PRUNE_ABOVE {
            open.retain(|_, last| *last >= open_since);
        }
        if open.len() < WINDOW_CACHE_PRUNE_ABOVE {
            let entry = open.entry(wa_id.to_owned()).or_insert(at);
            *entry = (*entry).max(at);
        }
    }
}

impl TenantCtx {
    /// The recipient's last inbound time when it is at or after `open_since` is cached; otherwise
    /// read from the database (and cached when it opens the window).
    pub async fn last_inbound(
        &self,
        pool: &PgPool,
        wa_id: &str,
        open_since: DateTime<Utc>,
    ) -> anyhow::Result<Option<DateTime<Utc>>> {
        if let Some(at) = self.windows.open_at(wa_id, open_since) {
            return Ok(Some(at));
        }
        let mut conn = pool.get().await?;
        let last =
            wa_db::models::sender::last_inbound(&mut conn, &self.tenant.tenant_id, wa_id).await?;
        if let Some(at) = last
            && at >= open_since
        {
            self.windows.remember(wa_id, at, open_since);
        }
        Ok(last)
    }

    fn cached_template(&self, key: &(String, String)) -> Option<Option<(String, i32)>> {
        self.templates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .filter(|(at, _)| at.elapsed() < TEMPLATE_CACHE_TTL)
            .map(|(_, cached)| cached.clone())
    }

    /// The registry's `(status, body parameter count)` of a template, cached briefly.
    pub async fn template_status(
        &self,
        pool: &PgPool,
        name: &str,
        language: &str,
    ) -> anyhow::Result<Option<(String, i32)>> {
        let key = (name.to_owned(), language.to_owned());
        if let Some(cached) = self.cached_template(&key) {
            return Ok(cached);
        }
        // One lookup at a time: when the entry expires, hundreds of waiting jobs would otherwise
        // all query the registry at once.
        let _fetching = self.template_fetch.lock().await;
        if let Some(cached) = self.cached_template(&key) {
            return Ok(cached);
        }
        let mut conn = pool.get().await?;
        let fresh = wa_db::models::sender::template_status(
            &mut conn,
            &self.tenant.tenant_id,
            name,
            language,
        )
        .await?;
        self.templates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, (Instant::now(), fresh.clone()));
        Ok(fresh)
    }
}

/// Identity and echo fields of a job, for outcome events.
#[derive(Debug, Clone)]
pub struct JobRef {
    /// Job id.
    pub job_id: String,
    /// Tenant id (as given, even when unknown).
    pub tenant_id: String,
    /// Recipient (normalised when possible).
    pub to: String,
    /// Echoed reference.
    pub reference: Option<Reference>,
    /// The message, echoed in the outcome so the history has both directions (None when only the
    /// stored row is at hand).
    pub message: Option<OutboundMessage>,
}

impl JobRef {
    /// From a stored row.
    pub fn from_row(row: &SendJobRow) -> Self {
        Self {
            job_id: row.job_id.clone(),
            tenant_id: row.tenant_id.clone(),
            to: row.to_e164.clone().unwrap_or_default(),
            reference: match (&row.reference_kind, &row.reference_id) {
                (Some(kind), Some(id)) => Some(Reference {
                    kind: kind.clone(),
                    id: id.clone(),
                }),
                _ => None,
            },
            message: None,
        }
    }
}

fn ids(job: &JobRef) -> anyhow::Result<(JobId, TenantId)> {
    let job_id = JobId::parse(job.job_id.clone()).map_err(|e| anyhow::anyhow!("job_id: {e}"))?;
    let tenant_id =
        TenantId::parse(job.tenant_id.clone()).map_err(|e| anyhow::anyhow!("tenant_id: {e}"))?;
    Ok((job_id, tenant_id))
}

impl Deps {
    /// Publishes `outbound.accepted` and waits for the broker's confirm.
    pub async fn publish_accepted(
        &self,
        job: &JobRef,
        wa_message_id: &str,
        accepted_at: chrono::DateTime<Utc>,
        attempts: i32,
        trace: Option<opentelemetry::Context>,
    ) -> anyhow::Result<()> {
        let (job_id, tenant_id) = ids(job)?;
        let event = OutboundAccepted {
            job_id,
            tenant_id,
            to: job.to.clone(),
            wa_message_id: wa_message_id.to_owned(),
            accepted_at,
            attempts: u32::try_from(attempts).unwrap_or(0),
            reference: job.reference.clone(),
            message: job.message.clone(),
        };
        self.publisher
            .publish_json(
                exchange::WHATSAPP_EVENTS,
                routing::OUTBOUND_ACCEPTED,
                &event,
                options(job, trace),
            )
            .await?;
        metrics::counter!("wa_sender_sent_total", "tenant" => job.tenant_id.clone()).increment(1);
        Ok(())
    }

    /// Publishes `outbound.failed` and waits for the broker's confirm. Needs a valid job id (the
    /// contract type requires one); callers skip it when the job id itself is unreadable.
    #[expect(clippy::too_many_arguments, reason = "one field per contract field")]
    pub async fn publish_failed(
        &self,
        job: &JobRef,
        reason: FailureReason,
        meta_code: Option<i64>,
        detail: &str,
        attempts: i32,
        trace: Option<opentelemetry::Context>,
        count_metric: bool,
    ) -> anyhow::Result<()> {
        let (job_id, tenant_id) = ids(job)?;
        let event = OutboundFailed {
            job_id,
            tenant_id,
            to: job.to.clone(),
            reason,
            meta_code,
            detail: detail.to_owned(),
            attempts: u32::try_from(attempts).unwrap_or(0),
            failed_at: Utc::now(),
            reference: job.reference.clone(),
            message: job.message.clone(),
        };
        self.publisher
            .publish_json(
                exchange::WHATSAPP_EVENTS,
                routing::OUTBOUND_FAILED,
                &event,
                options(job, trace),
            )
            .await?;
        if count_metric {
            metrics::counter!("wa_sender_failed_total", "tenant" => job.tenant_id.clone(), "reason" => reason.as_str())
                .increment(1);
        }
        Ok(())
    }
}

fn options(job: &JobRef, trace: Option<opentelemetry::Context>) -> PublishOptions {
    PublishOptions {
        // Same message id for every copy of one outcome, so consumers can dedupe republished ones.
        message_id: Some(format!("{}:{}:outcome", job.tenant_id, job.job_id)),
        tenant_id: Some(job.tenant_id.clone()),
        trace_context: trace,
        ..PublishOptions::default()
    }
}

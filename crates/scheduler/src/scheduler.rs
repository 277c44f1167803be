//! The scheduler core: plans reminders from platform data and, every tick, claims the due ones,
//! publishes their send-jobs with publisher confirms and marks them `queued`, in one transaction.
//!
//! Consumes nothing itself (the [`crate::handler`] feeds it); produces send-jobs on
//! `whatsapp.commands`/`send`. A failed publish rolls the batch back, so its rows stay open and the
//! next tick tries again; a crash after the publish but before the commit republishes the same
//! deterministic job ids, which the sender drops as duplicates.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, FixedOffset, Utc};
use chrono_tz::Tz;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use serde_json::{Value, json};
use wa_amqp::{OutgoingMessage, PublishOptions, Publisher};
use wa_common::Contract;
use wa_common::contracts::Reference;
use wa_common::contracts::send_job::{
    MessageContent, OutboundMessage, Priority, SendJob, Template, TemplateComponent,
    TemplateLanguage,
};
use wa_common::format::{format_date_id, format_rupiah};
use wa_common::ids::{JobId, TenantId};
use wa_common::topology::{exchange, routing};
use wa_db::PgPool;
use wa_db::models::scheduler::{self as db, ClaimedReminder, NewReminder};
use wa_service::tenants::{DEFAULT_TIME_ZONE, TenantDirectory};

use crate::clock::Clock;
use crate::config::ReminderConfig;
use crate::error::TickError;
use crate::planning::{self, DEPARTURE_OFFSETS_DAYS};
use crate::telemetry as m;
use crate::templates::{self, APPROVED, LANGUAGE};

/// Reminder kinds (the `reminders.kind` column and `reference.kind` of the send-job).
pub mod kind {
    /// Instalment reminder.
    pub const PAYMENT_REMINDER: &str = "payment_reminder";
    /// Receipt of a payment.
    pub const PAYMENT_CONFIRMATION: &str = "payment_confirmation";
    /// Departure broadcast.
    pub const DEPARTURE_REMINDER: &str = "departure_reminder";
    /// Keyword auto-reply.
    pub const AUTO_REPLY: &str = "auto_reply";
}

/// How long a confirmation stays worth sending (e.g. while its jamaah is not known yet).
const CONFIRMATION_RELEVANCE: Duration = Duration::days(7);
/// How long a reminder whose jamaah is not known yet waits before it is looked at again, unless
/// the jamaah's upsert brings it back first.
const UNKNOWN_JAMAAH_RETRY: Duration = Duration::minutes(10);

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Rows claimed.
    pub claimed: usize,
    /// Send-jobs published and marked `queued`.
    pub enqueued: usize,
    /// Parked as `waiting_template`.
    pub waiting_template: usize,
    /// Closed without sending (expired, paid, not ready…).
    pub cancelled: usize,
    /// Ended `failed` (no usable phone number, invalid job).
    pub failed: usize,
    /// Pushed back because the jamaah is not known yet.
    pub deferred: usize,
    /// Left due for the next batch or tick: their jamaah arrived, or was arriving, as they were
    /// about to be pushed back.
    pub left_due: usize,
}

impl std::ops::AddAssign for TickReport {
    fn add_assign(&mut self, other: Self) {
        self.claimed += other.claimed;
        self.enqueued += other.enqueued;
        self.waiting_template += other.waiting_template;
        self.cancelled += other.cancelled;
        self.failed += other.failed;
        self.deferred += other.deferred;
        self.left_due += other.left_due;
    }
}

/// What to do with one claimed row.
#[derive(Debug)]
enum Decision {
    Enqueue(Box<SendJob>, Value),
    Wait,
    Cancel(&'static str),
    Fail(&'static str),
    Defer(DateTime<Utc>),
}

/// The scheduler's shared state: database, publisher, clock, tenants and rules.
pub struct Scheduler {
    pool: PgPool,
    publisher: Publisher,
    clock: Arc<dyn Clock>,
    tenants: TenantDirectory,
    rules: ReminderConfig,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Wires the scheduler; does no I/O.
    pub fn new(
        pool: PgPool,
        publisher: Publisher,
        clock: Arc<dyn Clock>,
        tenants: TenantDirectory,
        rules: ReminderConfig,
    ) -> Self {
        Self {
            pool,
            publisher,
            clock,
            tenants,
            rules,
        }
    }

    /// The database pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The confirmed publisher.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The clock every decision uses.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The tenants.
    pub fn tenants(&self) -> &TenantDirectory {
        &self.tenants
    }

    /// The planning rules.
    pub fn rules(&self) -> &ReminderConfig {
        &self.rules
    }

    /// The time zone of `tenant` (the default zone for a tenant not configured here).
    pub fn time_zone(&self, tenant: &str) -> Tz {
        self.tenants
            .get(tenant)
            .and_then(|t| t.time_zone.parse().ok())
            .or_else(|| DEFAULT_TIME_ZONE.parse().ok())
            .unwrap_or(chrono_tz::Asia::Jakarta)
    }

    /// Payment reminder rows for an unpaid instalment, one per configured offset.
    pub fn payment_reminder_rows(&self, schedule: &db::ScheduleRow) -> Vec<NewReminder> {
        let tz = self.time_zone(&schedule.tenant_id);
        planning::slots(
            schedule.due_date,
            &self.rules.offsets_days,
            self.rules.window,
            tz,
        )
        .into_iter()
        .map(|slot| NewReminder {
            tenant_id: schedule.tenant_id.clone(),
            kind: kind::PAYMENT_REMINDER.into(),
            dedupe_key: format!("{}:{}", schedule.schedule_id, slot.offset_days),
            job_id: planning::payment_reminder_job_id(&schedule.schedule_id, slot.offset_days),
            jamaah_id: Some(schedule.jamaah_id.clone()),
            schedule_id: Some(schedule.schedule_id.clone()),
            payment_id: None,
            package_id: schedule.package_id.clone(),
            offset_days: Some(slot.offset_days),
            due_at: slot.due_at,
            not_after: Some(slot.not_after),
            template_name: Some(templates::PAYMENT_REMINDER.name.into()),
            status: "pending".into(),
            parameters: None,
        })
        .collect()
    }

    /// Departure broadcast rows (7 and 1 days before) for one jamaah of a package.
    pub fn departure_rows(
        &self,
        tenant: &str,
        package_id: &str,
        jamaah_id: &str,
        departure_date: chrono::NaiveDate,
    ) -> Vec<NewReminder> {
        let tz = self.time_zone(tenant);
        planning::slots(
            departure_date,
            &DEPARTURE_OFFSETS_DAYS,
            self.rules.window,
            tz,
        )
        .into_iter()
        .map(|slot| NewReminder {
            tenant_id: tenant.to_owned(),
            kind: kind::DEPARTURE_REMINDER.into(),
            dedupe_key: format!("{package_id}:{jamaah_id}:{}", slot.offset_days),
            job_id: planning::departure_job_id(package_id, jamaah_id, slot.offset_days),
            jamaah_id: Some(jamaah_id.to_owned()),
            schedule_id: None,
            payment_id: None,
            package_id: Some(package_id.to_owned()),
            offset_days: Some(slot.offset_days),
            due_at: slot.due_at,
            not_after: Some(slot.not_after),
            template_name: Some(templates::DEPARTURE_REMINDER.name.into()),
            status: "pending".into(),
            parameters: None,
        })
        .collect()
    }

    /// The confirmation row of a payment: due at once, relevant for a week.
    pub fn confirmation_row(&self, payment: &db::PaymentRow) -> NewReminder {
        let now = self.now();
        NewReminder {
            tenant_id: payment.tenant_id.clone(),
            kind: kind::PAYMENT_CONFIRMATION.into(),
            dedupe_key: payment.payment_id.clone(),
            job_id: planning::payment_confirmation_job_id(&payment.payment_id),
            jamaah_id: Some(payment.jamaah_id.clone()),
            schedule_id: None,
            payment_id: Some(payment.payment_id.clone()),
            package_id: payment.package_id.clone(),
            offset_days: None,
            due_at: now,
            not_after: Some(now + CONFIRMATION_RELEVANCE),
            template_name: Some(templates::PAYMENT_CONFIRMATION.name.into()),
            status: "pending".into(),
            parameters: None,
        }
    }

    /// Tenants whose local send window is open at `now`.
    pub fn window_open_tenants(&self, now: DateTime<Utc>) -> Vec<String> {
        self.tenants
            .iter()
            .filter(|t| self.rules.window.is_open(now, self.time_zone(&t.tenant_id)))
            .map(|t| t.tenant_id.clone())
            .collect()
    }

    /// Claims and enqueues every due reminder (batch after batch), then refreshes the gauges.
    #[tracing::instrument(name = "scheduler.tick", skip_all, fields(claimed, enqueued))]
    pub async fn tick(&self) -> Result<TickReport, TickError> {
        let started = Instant::now();
        let mut report = TickReport::default();
        loop {
            let batch = self.run_batch().await?;
            let claimed = batch.claimed;
            let left_due = batch.left_due;
            report += batch;
            // Every claimed row leaves the claimable set (queued, waiting, closed or deferred)
            // but the few left due for their arriving jamaah, so a full batch means there may be
            // more, and the loop always ends (a batch of nothing but those waits for the next tick).
            if i64::try_from(claimed).unwrap_or(i64::MAX) < self.rules.batch_size
                || left_due == claimed
            {
                break;
            }
        }
        self.refresh_gauges().await;
        metrics::histogram!(m::TICK_SECONDS).record(started.elapsed().as_secs_f64());
        tracing::Span::current().record("claimed", report.claimed);
        tracing::Span::current().record("enqueued", report.enqueued);
        if report.claimed > 0 {
            tracing::info!(?report, "tick");
        }
        Ok(report)
    }

    /// One claim-publish-mark transaction.
    async fn run_batch(&self) -> Result<TickReport, TickError> {
        let now = self.now();
        let open = self.window_open_tenants(now);
        let mut conn = self.pool.get().await?;
        let this = self;
        conn.transaction(async move |conn| this.claim_and_enqueue(conn, now, &open).await)
            .await
    }

    async fn claim_and_enqueue(
        &self,
        conn: &mut AsyncPgConnection,
        now: DateTime<Utc>,
        open: &[String],
    ) -> Result<TickReport, TickError> {
        let rows =
            db::claim_due_reminders(conn, now, open, LANGUAGE, self.rules.batch_size).await?;
        let mut report = TickReport {
            claimed: rows.len(),
            ..TickReport::default()
        };
        let mut waiting = Vec::new();
        let mut closed: BTreeMap<(&'static str, &'static str), Vec<i64>> = BTreeMap::new();
        let mut deferred: BTreeMap<DateTime<Utc>, Vec<i64>> = BTreeMap::new();
        let mut outgoing = Vec::new();
        let mut queued_ids = Vec::new();
        let mut queued_params = Vec::new();
        let mut enqueued_labels = Vec::new();
        for row in &rows {
            match self.decide(row, now) {
                Decision::Enqueue(job, params) => {
                    let options = PublishOptions {
                        message_id: Some(job.job_id.to_string()),
                        tenant_id: Some(row.tenant_id.clone()),
                        ..PublishOptions::default()
                    };
                    outgoing.push(OutgoingMessage::json(
                        exchange::COMMANDS,
                        routing::SEND,
                        &*job,
                        options,
                    )?);
                    queued_ids.push(row.id);
                    queued_params.push(params);
                    enqueued_labels.push((row.kind.clone(), row.tenant_id.clone()));
                }
                Decision::Wait => waiting.push(row.id),
                Decision::Cancel(reason) => closed
                    .entry(("cancelled", reason))
                    .or_default()
                    .push(row.id),
                Decision::Fail(reason) => {
                    closed.entry(("failed", reason)).or_default().push(row.id)
                }
                Decision::Defer(until) => {
                    if self.jamaah_is_surely_unknown(conn, row).await? {
                        deferred.entry(until).or_default().push(row.id);
                    } else {
                        // The jamaah arrived meanwhile, or is arriving: still due, the next batch
                        // or tick sends it.
                        report.left_due += 1;
                    }
                }
            }
        }
        db::set_reminders_status(conn, &waiting, "waiting_template", None).await?;
        report.waiting_template = waiting.len();
        for ((status, reason), ids) in &closed {
            db::set_reminders_status(conn, ids, status, Some(reason)).await?;
            if *status == "failed" {
                report.failed += ids.len();
                metrics::counter!(m::REMINDERS_FAILED, "reason" => *reason)
                    .increment(ids.len() as u64);
            } else {
                report.cancelled += ids.len();
                metrics::counter!(m::REMINDERS_CANCELLED, "reason" => *reason)
                    .increment(ids.len() as u64);
            }
        }
        for (until, ids) in &deferred {
            db::defer_reminders(conn, ids, *until, db::HELD_FOR_UNKNOWN_JAMAAH).await?;
            report.deferred += ids.len();
        }
        if !outgoing.is_empty() {
            self.publisher.publish_all(outgoing).await?;
            db::mark_reminders_queued(conn, &queued_ids, &queued_params, now).await?;
            report.enqueued = queued_ids.len();
            for (kind, tenant) in enqueued_labels {
                metrics::counter!(m::REMINDERS_ENQUEUED, "kind" => kind, "tenant" => tenant)
                    .increment(1);
            }
        }
        Ok(report)
    }

    /// Whether the reminder's jamaah is unknown and will stay so until after this transaction:
    /// its upsert is not under way (we hold its lock, so it waits for our commit, and its release
    /// of held reminders then sees our hold) and has not committed. Holding a reminder without
    /// this check raced with the upsert: a release that ran before our hold was committed missed
    /// it, and the reminder waited out the whole deferral.
    async fn jamaah_is_surely_unknown(
        &self,
        conn: &mut AsyncPgConnection,
        row: &ClaimedReminder,
    ) -> Result<bool, TickError> {
        let Some(jamaah_id) = row.jamaah_id.as_deref() else {
            return Ok(true);
        };
        Ok(db::try_lock_jamaah(conn, &row.tenant_id, jamaah_id).await?
            && !db::jamaah_exists(conn, &row.tenant_id, jamaah_id).await?)
    }

    fn decide(&self, row: &ClaimedReminder, now: DateTime<Utc>) -> Decision {
        if row.not_after.is_some_and(|limit| now >= limit) {
            return Decision::Cancel("expired");
        }
        match row.kind.as_str() {
            kind::PAYMENT_REMINDER => match row.schedule_status.as_deref() {
                Some("unpaid") => {}
                Some("paid") => return Decision::Cancel("schedule_paid"),
                Some(_) => return Decision::Cancel("schedule_cancelled"),
                None => return Decision::Cancel("schedule_unknown"),
            },
            kind::DEPARTURE_REMINDER => {
                if row.jamaah_name.is_some() && row.jamaah_status.as_deref() != Some("ready") {
                    return Decision::Cancel("not_ready");
                }
                if row.jamaah_name.is_some() && row.jamaah_package_id != row.package_id {
                    return Decision::Cancel("package_changed");
                }
                if row.departure_date.is_none() {
                    return Decision::Cancel("departure_unknown");
                }
            }
            kind::PAYMENT_CONFIRMATION => {
                if row.payment_amount.is_none() {
                    return Decision::Cancel("payment_unknown");
                }
            }
            _ => return Decision::Fail("unknown_kind"),
        }
        let Some(name) = row.jamaah_name.as_deref() else {
            let retry = now + UNKNOWN_JAMAAH_RETRY;
            return match row.not_after {
                Some(limit) if retry >= limit => Decision::Cancel(db::HELD_FOR_UNKNOWN_JAMAAH),
                _ => Decision::Defer(retry),
            };
        };
        let Some(phone) = row.phone_e164.as_deref() else {
            return Decision::Fail("invalid_recipient");
        };
        if row.template_status.as_deref() != Some(APPROVED) {
            return Decision::Wait;
        }
        let package = row
            .package_name
            .clone()
            .or_else(|| row.package_id.clone())
            .unwrap_or_else(|| "Umrah".to_owned());
        let (params, priority) = match row.kind.as_str() {
            kind::PAYMENT_REMINDER => (
                vec![
                    name.to_owned(),
                    package,
                    row.due_date.map(format_date_id).unwrap_or_default(),
                    format_rupiah(row.schedule_amount.unwrap_or_default()),
                    row.agent_name
                        .clone()
                        .unwrap_or_else(|| "Travel Umroh".to_owned()),
                    row.agent_phone.clone().unwrap_or_else(|| "-".to_owned()),
                ],
                Priority::Transactional,
            ),
            kind::PAYMENT_CONFIRMATION => (
                vec![
                    name.to_owned(),
                    format_rupiah(row.payment_amount.unwrap_or_default()),
                    package,
                    format_rupiah(row.remaining_balance.unwrap_or_default()),
                    row.status_label.clone().unwrap_or_else(|| "-".to_owned()),
                ],
                Priority::Transactional,
            ),
            _ => (
                vec![
                    name.to_owned(),
                    row.departure_date.map(format_date_id).unwrap_or_default(),
                    package,
                ],
                Priority::Bulk,
            ),
        };
        let tz = self.time_zone(&row.tenant_id);
        let expires_at = match row.kind.as_str() {
            // Windowed kinds must not go out after the local window closes.
            kind::PAYMENT_REMINDER | kind::DEPARTURE_REMINDER => {
                let close = self.rules.window.current_close(now, tz);
                Some(row.not_after.map_or(close, |limit| limit.min(close)))
            }
            _ => row.not_after,
        };
        match build_template_job(
            row,
            phone,
            &params,
            priority,
            expires_at.map(|e| fixed(e, tz)),
        ) {
            Ok(job) => Decision::Enqueue(Box::new(job), json!(params)),
            Err(error) => {
                tracing::warn!(reminder = row.id, error = %error, "reminder does not make a valid send-job");
                Decision::Fail("invalid_job")
            }
        }
    }

    /// Refreshes `wa_scheduler_reminders_due` and `wa_scheduler_waiting_on_template`.
    pub async fn refresh_gauges(&self) {
        let Ok(mut conn) = self.pool.get().await else {
            return;
        };
        if let Ok(due) = db::count_due_reminders(&mut conn, self.now()).await {
            metrics::gauge!(m::REMINDERS_DUE).set(due as f64);
        }
        if let Ok(waiting) = db::count_waiting_on_template(&mut conn).await {
            let mut seen = std::collections::HashSet::new();
            for (tenant, template, count) in waiting {
                let template = template.unwrap_or_default();
                seen.insert((tenant.clone(), template.clone()));
                metrics::gauge!(m::WAITING_ON_TEMPLATE, "tenant" => tenant, "template" => template)
                    .set(count as f64);
            }
            // Reset the series of templates nothing waits on any more.
            for t in self.tenants.iter() {
                for def in &templates::REGISTRY {
                    if !seen.contains(&(t.tenant_id.clone(), def.name.to_owned())) {
                        metrics::gauge!(m::WAITING_ON_TEMPLATE, "tenant" => t.tenant_id.clone(), "template" => def.name)
                            .set(0.0);
                    }
                }
            }
        }
    }
}

fn fixed(instant: DateTime<Utc>, tz: Tz) -> DateTime<FixedOffset> {
    instant.with_timezone(&tz).fixed_offset()
}

fn build_template_job(
    row: &ClaimedReminder,
    phone: &str,
    params: &[String],
    priority: Priority,
    expires_at: Option<DateTime<FixedOffset>>,
) -> Result<SendJob, wa_common::ContractError> {
    let template_name = row.template_name.clone().unwrap_or_default();
    let job = SendJob {
        job_id: JobId::parse(row.job_id.clone())?,
        tenant_id: TenantId::parse(row.tenant_id.clone())?,
        to: phone.to_owned(),
        message: OutboundMessage {
            content: MessageContent::Template {
                template: Template {
                    name: template_name,
                    language: TemplateLanguage {
                        code: LANGUAGE.to_owned(),
                        policy: None,
                    },
                    components: vec![TemplateComponent {
                        kind: "body".to_owned(),
                        sub_type: None,
                        index: None,
                        parameters: params
                            .iter()
                            .map(|p| json!({"type": "text", "text": p}))
                            .collect(),
                    }],
                },
            },
            context: None,
            biz_opaque_callback_data: None,
        },
        priority,
        reference: Some(Reference {
            kind: row.kind.clone(),
            id: reference_id(row),
        }),
        expires_at,
    };
    job.validate()?;
    Ok(job)
}

fn reference_id(row: &ClaimedReminder) -> String {
    row.schedule_id
        .clone()
        .or_else(|| row.payment_id.clone())
        .unwrap_or_else(|| row.job_id.clone())
}

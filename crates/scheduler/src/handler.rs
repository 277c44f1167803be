//! The `scheduler.events` consumer: keeps the scheduler's copy of the platform data current,
//! plans reminders, applies delivery outcomes to them, updates the template registry and answers
//! keywords.
//!
//! Consumes `jamaah.upserted`, `payment_schedule.upserted`, `payment.recorded`,
//! `departure.scheduled`, `jamaah.erasure_requested` (platform), `inbound.message`,
//! `inbound.template_status` (ingress), `outbound.accepted`, `outbound.failed` (sender) and
//! `outbound.status` (conversation-sync). Every write is an idempotent upsert, so redelivery is
//! harmless. A message that breaks its contract or names an unknown tenant is dead-lettered with
//! the reason; database or broker trouble is retried through the delay queues. Publishes only
//! auto-replies (send-jobs, with confirms); everything else is sent by the tick.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection};
use serde_json::{Value, json};
use wa_amqp::{Handler, IncomingMessage, Outcome, PublishOptions};
use wa_common::contracts::Reference;
use wa_common::contracts::inbound::{InboundMessage, InboundTemplateStatus};
use wa_common::contracts::outcome::{OutboundAccepted, OutboundFailed};
use wa_common::contracts::platform::{
    DepartureScheduled, JamaahErasureRequested, JamaahUpserted, PaymentRecorded,
    PaymentScheduleUpserted, ScheduleStatus,
};
use wa_common::contracts::send_job::{MessageContent, OutboundMessage, Priority, SendJob, Text};
use wa_common::contracts::status::{DeliveryStatus, OutboundStatus};
use wa_common::format::{format_date_id, format_rupiah};
use wa_common::ids::{JobId, TenantId};
use wa_common::phone::E164;
use wa_common::topology::{exchange, routing};
use wa_common::{Contract, decode};
use wa_db::models::scheduler::{self as db, JamaahRow, NewReminder, PaymentRow, ScheduleRow};

use crate::error::HandleError;
use crate::planning;
use crate::scheduler::{Scheduler, kind};
use crate::telemetry as m;

/// Delay before a message that hit database or broker trouble is tried again.
const RETRY_DELAY: Duration = Duration::from_secs(4);
/// Meta's customer service window.
const SERVICE_WINDOW: chrono::Duration = chrono::Duration::hours(24);

/// The consume-loop adapter around [`Scheduler::handle_event`].
#[derive(Debug, Clone)]
pub struct EventHandler(pub Arc<Scheduler>);

impl Handler for EventHandler {
    async fn handle(&self, msg: IncomingMessage) -> Outcome {
        self.0.handle_event(&msg.routing_key, &msg.body).await
    }
}

/// What happened to one inbound message in the auto-reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoReplyOutcome {
    /// A reply was published.
    Replied,
    /// Already answered (redelivery).
    Duplicate,
    /// Not a keyword of the tenant.
    NoMatch,
    /// Older than 24 hours: the window is closed, free-form text would fail.
    WindowClosed,
    /// The sender is not a known jamaah and the reply needs their data.
    UnknownSender,
    /// Not a text or button message.
    NotText,
}

impl AutoReplyOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Replied => "replied",
            Self::Duplicate => "duplicate",
            Self::NoMatch => "no_match",
            Self::WindowClosed => "window_closed",
            Self::UnknownSender => "unknown_sender",
            Self::NotText => "not_text",
        }
    }
}

impl Scheduler {
    /// Handles one event; returns how the consume loop settles it.
    #[tracing::instrument(name = "scheduler.event", skip_all, fields(routing_key))]
    pub async fn handle_event(&self, routing_key: &str, body: &[u8]) -> Outcome {
        let result = self.dispatch(routing_key, body).await;
        let outcome = match &result {
            Ok(()) => Outcome::Ack,
            Err(error) if error.is_permanent() => {
                tracing::warn!(error = %error, "event dead-lettered");
                Outcome::dead_letter(error.reason(), error.to_string())
            }
            Err(error) => {
                tracing::warn!(error = %error, "event failed, retrying");
                Outcome::retry_in(RETRY_DELAY)
            }
        };
        let label = match &result {
            Ok(()) => "ok",
            Err(error) => error.reason(),
        };
        metrics::counter!(m::EVENTS, "routing_key" => routing_key.to_owned(), "outcome" => label)
            .increment(1);
        outcome
    }

    async fn dispatch(&self, routing_key: &str, body: &[u8]) -> Result<(), HandleError> {
        match routing_key {
            routing::JAMAAH_UPSERTED => self.on_jamaah(decode(body)?).await,
            routing::PAYMENT_SCHEDULE_UPSERTED => self.on_schedule(decode(body)?).await,
            routing::PAYMENT_RECORDED => self.on_payment(decode(body)?).await,
            routing::DEPARTURE_SCHEDULED => self.on_departure(decode(body)?).await,
            routing::JAMAAH_ERASURE_REQUESTED => self.on_erasure(decode(body)?).await,
            routing::INBOUND_MESSAGE => self.on_inbound(decode(body)?).await.map(|_| ()),
            routing::INBOUND_TEMPLATE_STATUS => self.on_template_status(decode(body)?).await,
            routing::OUTBOUND_ACCEPTED => self.on_accepted(decode(body)?).await,
            routing::OUTBOUND_FAILED => self.on_failed(decode(body)?).await,
            routing::OUTBOUND_STATUS => self.on_status(decode(body)?).await,
            other => {
                tracing::debug!(routing_key = other, "event not for the scheduler; ignored");
                Ok(())
            }
        }
    }

    fn known_tenant(&self, tenant: &TenantId) -> Result<(), HandleError> {
        match self.tenants().get(tenant.as_str()) {
            Some(_) => Ok(()),
            None => Err(HandleError::UnknownTenant(tenant.to_string())),
        }
    }

    async fn on_jamaah(&self, event: JamaahUpserted) -> Result<(), HandleError> {
        self.known_tenant(&event.tenant_id)?;
        let tenant = event.tenant_id.as_str();
        let phone = match E164::parse(&event.phone) {
            Ok(phone) => Some(phone.as_str().to_owned()),
            Err(error) => {
                tracing::warn!(jamaah = %event.jamaah_id, error = %error, "jamaah phone is not a phone number");
                None
            }
        };
        let row = JamaahRow {
            tenant_id: tenant.to_owned(),
            jamaah_id: event.jamaah_id.to_string(),
            name: event.name.trim().to_owned(),
            phone_e164: phone,
            status: event.status.trim().to_lowercase(),
            package_id: Some(event.package.id.to_string()),
            agent_id: Some(event.agent.id.to_string()),
            agent_name: Some(event.agent.name.trim().to_owned()),
            agent_phone: Some(event.agent.phone.trim().to_owned()),
        };
        let package_name = event.package.name.trim().to_owned();
        let mut conn = self.pool().get().await?;
        conn.transaction(async |conn| {
            // First, so a tick deciding to hold this jamaah's reminders sees the upsert whole or
            // not at all (see `db::lock_jamaah`).
            db::lock_jamaah(conn, tenant, &row.jamaah_id).await?;
            db::upsert_jamaah(conn, &row).await?;
            // Reminders deferred because this jamaah's events came first are due again now.
            db::release_reminders_held_for_jamaah(conn, tenant, &row.jamaah_id, self.now()).await?;
            let package_id = row.package_id.as_deref().unwrap_or_default();
            db::upsert_package_name(conn, tenant, package_id, &package_name).await?;
            if row.status == "ready" {
                db::cancel_open_departure_reminders(
                    conn,
                    tenant,
                    &row.jamaah_id,
                    Some(package_id),
                    "package_changed",
                )
                .await?;
                if let Some(date) = db::find_package(conn, tenant, package_id)
                    .await?
                    .and_then(|p| p.departure_date)
                {
                    let rows = self.departure_rows(tenant, package_id, &row.jamaah_id, date);
                    db::plan_reminders(conn, &rows).await?;
                }
            } else {
                db::cancel_open_departure_reminders(
                    conn,
                    tenant,
                    &row.jamaah_id,
                    None,
                    "not_ready",
                )
                .await?;
            }
            Ok::<_, HandleError>(())
        })
        .await
    }

    async fn on_schedule(&self, event: PaymentScheduleUpserted) -> Result<(), HandleError> {
        self.known_tenant(&event.tenant_id)?;
        let row = ScheduleRow {
            tenant_id: event.tenant_id.to_string(),
            schedule_id: event.schedule_id.to_string(),
            jamaah_id: event.jamaah_id.to_string(),
            package_id: Some(event.package_id.to_string()),
            due_date: event.due_date,
            amount: event.amount,
            status: event.status.as_str().to_owned(),
        };
        let mut conn = self.pool().get().await?;
        conn.transaction(async |conn| {
            db::upsert_schedule(conn, &row).await?;
            match event.status {
                ScheduleStatus::Unpaid => {
                    db::plan_reminders(conn, &self.payment_reminder_rows(&row)).await?;
                }
                ScheduleStatus::Paid => {
                    db::cancel_open_schedule_reminders(
                        conn,
                        &row.tenant_id,
                        &row.schedule_id,
                        "schedule_paid",
                    )
                    .await?;
                }
                ScheduleStatus::Cancelled => {
                    db::cancel_open_schedule_reminders(
                        conn,
                        &row.tenant_id,
                        &row.schedule_id,
                        "schedule_cancelled",
                    )
                    .await?;
                }
            }
            Ok::<_, HandleError>(())
        })
        .await
    }

    async fn on_payment(&self, event: PaymentRecorded) -> Result<(), HandleError> {
        self.known_tenant(&event.tenant_id)?;
        let row = PaymentRow {
            tenant_id: event.tenant_id.to_string(),
            payment_id: event.payment_id.to_string(),
            jamaah_id: event.jamaah_id.to_string(),
            package_id: Some(event.package_id.to_string()),
            amount: event.amount,
            remaining_balance: event.remaining_balance,
            status_label: Some(event.status_label.trim().to_owned()),
        };
        let confirmation = self.confirmation_row(&row);
        let mut conn = self.pool().get().await?;
        conn.transaction(async |conn| {
            db::insert_payment(conn, &row).await?;
            // Once per payment id: a replayed event finds the row and changes nothing.
            db::insert_reminder_once(conn, &confirmation).await?;
            Ok::<_, HandleError>(())
        })
        .await
    }

    async fn on_departure(&self, event: DepartureScheduled) -> Result<(), HandleError> {
        self.known_tenant(&event.tenant_id)?;
        let tenant = event.tenant_id.as_str();
        let package_id = event.package_id.as_str();
        let mut conn = self.pool().get().await?;
        conn.transaction(async |conn| {
            db::upsert_package_departure(
                conn,
                tenant,
                package_id,
                event.package_name.trim(),
                event.departure_date,
            )
            .await?;
            let ready =
                db::jamaah_of_package_with_status(conn, tenant, package_id, "ready").await?;
            let rows: Vec<NewReminder> = ready
                .iter()
                .flat_map(|j| {
                    self.departure_rows(tenant, package_id, &j.jamaah_id, event.departure_date)
                })
                .collect();
            for chunk in rows.chunks(1000) {
                db::plan_reminders(conn, chunk).await?;
            }
            Ok::<_, HandleError>(())
        })
        .await
    }

    async fn on_erasure(&self, event: JamaahErasureRequested) -> Result<(), HandleError> {
        self.known_tenant(&event.tenant_id)?;
        let mut conn = self.pool().get().await?;
        let tenant = event.tenant_id.as_str();
        let jamaah = event.jamaah_id.as_str();
        let deleted = conn
            .transaction(async |conn| {
                let n = db::erase_jamaah(conn, tenant, jamaah).await?;
                Ok::<_, HandleError>(n)
            })
            .await?;
        tracing::info!(rows = deleted, "jamaah erased from the scheduler");
        Ok(())
    }

    async fn on_template_status(&self, event: InboundTemplateStatus) -> Result<(), HandleError> {
        let status = event.event.trim().to_uppercase();
        let reason = event
            .raw
            .pointer("/rejection_info/reason")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| event.reason.clone().filter(|r| r != "NONE"));
        let reason = if status == "REJECTED" || status == "PAUSED" || status == "DISABLED" {
            reason
        } else {
            None
        };
        let tenants: Vec<String> = self
            .tenants()
            .iter()
            .filter(|t| t.waba_id == event.source.waba_id)
            .map(|t| t.tenant_id.clone())
            .collect();
        if tenants.is_empty() {
            tracing::info!(waba = %event.source.waba_id, "template status for a WABA not served here; ignored");
            return Ok(());
        }
        let mut conn = self.pool().get().await?;
        for tenant in tenants {
            let matched = db::update_template_status(
                &mut conn,
                &tenant,
                &event.message_template_name,
                &event.message_template_language,
                &status,
                reason.as_deref(),
                event.message_template_id,
            )
            .await?;
            tracing::info!(
                tenant,
                template = %event.message_template_name,
                status,
                matched,
                "template status updated"
            );
        }
        Ok(())
    }

    async fn advance(
        &self,
        tenant: &TenantId,
        job_id: &JobId,
        status: &str,
        wa_message_id: Option<&str>,
        reason: Option<&str>,
    ) -> Result<(), HandleError> {
        let mut conn = self.pool().get().await?;
        let moved = db::advance_reminder_status(
            &mut conn,
            tenant.as_str(),
            job_id.as_str(),
            status,
            wa_message_id,
            reason,
        )
        .await?;
        if moved {
            metrics::counter!(m::REMINDER_STATUS, "status" => status.to_owned()).increment(1);
            if status == "failed" {
                let reason = reason.unwrap_or("failed").to_owned();
                metrics::counter!(m::REMINDERS_FAILED, "reason" => reason).increment(1);
            }
        }
        Ok(())
    }

    async fn on_accepted(&self, event: OutboundAccepted) -> Result<(), HandleError> {
        self.advance(
            &event.tenant_id,
            &event.job_id,
            "sent",
            Some(&event.wa_message_id),
            None,
        )
        .await
    }

    async fn on_failed(&self, event: OutboundFailed) -> Result<(), HandleError> {
        self.advance(
            &event.tenant_id,
            &event.job_id,
            "failed",
            None,
            Some(event.reason.as_str()),
        )
        .await
    }

    async fn on_status(&self, event: OutboundStatus) -> Result<(), HandleError> {
        let Some(job_id) = &event.job_id else {
            return Ok(());
        };
        let reason = (event.status == DeliveryStatus::Failed).then(|| match event.meta_code {
            Some(code) => format!("meta_{code}"),
            None => "delivery_failed".to_owned(),
        });
        self.advance(
            &event.tenant_id,
            job_id,
            event.status.as_str(),
            Some(&event.wa_message_id),
            reason.as_deref(),
        )
        .await
    }

    /// Answers a keyword with free-form text while the message's 24-hour window is open.
    pub async fn on_inbound(&self, event: InboundMessage) -> Result<AutoReplyOutcome, HandleError> {
        let outcome = self.auto_reply(&event).await?;
        let tenant = event
            .source
            .phone_number_id
            .as_deref()
            .and_then(|id| self.tenants().by_phone_number_id(id))
            .map_or_else(|| "unknown".to_owned(), |t| t.tenant_id.clone());
        metrics::counter!(m::AUTO_REPLIES, "tenant" => tenant, "outcome" => outcome.as_str())
            .increment(1);
        Ok(outcome)
    }

    async fn auto_reply(&self, event: &InboundMessage) -> Result<AutoReplyOutcome, HandleError> {
        let Some(tenant) = event
            .source
            .phone_number_id
            .as_deref()
            .and_then(|id| self.tenants().by_phone_number_id(id))
        else {
            let id = event.source.phone_number_id.clone().unwrap_or_default();
            return Err(HandleError::UnknownTenant(format!("phone_number_id {id}")));
        };
        let tenant_id = tenant.tenant_id.clone();
        let Some(text) = inbound_text(event) else {
            return Ok(AutoReplyOutcome::NotText);
        };
        let keyword = text.trim().to_lowercase();
        if keyword.is_empty() || keyword.len() > 64 {
            return Ok(AutoReplyOutcome::NoMatch);
        }
        let now = self.now();
        let window_end = event.timestamp + SERVICE_WINDOW;
        let mut conn = self.pool().get().await?;
        let Some(reply) = db::find_auto_reply(&mut conn, &tenant_id, &keyword).await? else {
            return Ok(AutoReplyOutcome::NoMatch);
        };
        if now >= window_end {
            return Ok(AutoReplyOutcome::WindowClosed);
        }
        let Ok(phone) = E164::from_wa_id(&event.from) else {
            return Ok(AutoReplyOutcome::UnknownSender);
        };
        let Some(body) = self
            .render_reply(&mut conn, &tenant_id, phone.as_str(), &reply.reply)
            .await?
        else {
            return Ok(AutoReplyOutcome::UnknownSender);
        };
        let job_id = planning::auto_reply_job_id(&event.wa_message_id);
        let tz = self.time_zone(&tenant_id);
        let job = SendJob {
            job_id: JobId::parse(job_id.clone())?,
            tenant_id: TenantId::parse(tenant_id.clone())?,
            to: phone.as_str().to_owned(),
            message: OutboundMessage {
                content: MessageContent::Text {
                    text: Text {
                        body: body.clone(),
                        preview_url: None,
                    },
                },
                context: None,
                biz_opaque_callback_data: None,
            },
            priority: Priority::Interactive,
            reference: Some(Reference {
                kind: kind::AUTO_REPLY.to_owned(),
                id: event.wa_message_id.clone(),
            }),
            expires_at: Some(window_end.with_timezone(&tz).fixed_offset()),
        };
        job.validate()?;
        let row = NewReminder {
            tenant_id: tenant_id.clone(),
            kind: kind::AUTO_REPLY.into(),
            dedupe_key: event.wa_message_id.clone(),
            job_id,
            jamaah_id: None,
            schedule_id: None,
            payment_id: None,
            package_id: None,
            offset_days: None,
            due_at: now,
            not_after: Some(window_end),
            template_name: None,
            status: "queued".into(),
            parameters: Some(json!({"keyword": keyword, "text": body})),
        };
        let publisher = self.publisher();
        let options = PublishOptions {
            message_id: Some(job.job_id.to_string()),
            tenant_id: Some(tenant_id.clone()),
            ..PublishOptions::default()
        };
        let replied = conn
            .transaction(async |conn| {
                if !db::insert_reminder_once(conn, &row).await? {
                    return Ok::<_, HandleError>(false);
                }
                publisher
                    .publish_json(exchange::COMMANDS, routing::SEND, &job, options)
                    .await?;
                Ok(true)
            })
            .await?;
        if replied {
            metrics::counter!(m::REMINDERS_ENQUEUED, "kind" => kind::AUTO_REPLY, "tenant" => tenant_id).increment(1);
            Ok(AutoReplyOutcome::Replied)
        } else {
            Ok(AutoReplyOutcome::Duplicate)
        }
    }

    /// Fills `{name}`, `{package}`, `{balance}` and `{departure_date}`; `None` when the reply
    /// needs jamaah data and the sender is not a known jamaah.
    async fn render_reply(
        &self,
        conn: &mut AsyncPgConnection,
        tenant: &str,
        phone: &str,
        template: &str,
    ) -> Result<Option<String>, HandleError> {
        let needs_jamaah = ["{name}", "{package}", "{balance}", "{departure_date}"]
            .iter()
            .any(|p| template.contains(p));
        if !needs_jamaah {
            return Ok(Some(template.to_owned()));
        }
        let Some(jamaah) = db::find_jamaah_by_phone(conn, tenant, phone).await? else {
            return Ok(None);
        };
        let package = match jamaah.package_id.as_deref() {
            Some(id) => db::find_package(conn, tenant, id).await?,
            None => None,
        };
        let mut text = template.replace("{name}", &jamaah.name);
        if text.contains("{package}") {
            let name = package
                .as_ref()
                .and_then(|p| p.name.clone())
                .or_else(|| jamaah.package_id.clone())
                .unwrap_or_else(|| "-".to_owned());
            text = text.replace("{package}", &name);
        }
        if text.contains("{balance}") {
            let balance = match db::latest_payment(conn, tenant, &jamaah.jamaah_id).await? {
                Some(payment) => payment.remaining_balance,
                None => db::unpaid_total(conn, tenant, &jamaah.jamaah_id)
                    .await?
                    .unwrap_or(0),
            };
            text = text.replace("{balance}", &format_rupiah(balance));
        }
        if text.contains("{departure_date}") {
            let date = package
                .and_then(|p| p.departure_date)
                .map_or_else(|| "belum dijadwalkan".to_owned(), format_date_id);
            text = text.replace("{departure_date}", &date);
        }
        Ok(Some(text))
    }
}

/// The text a user typed or the button they pressed.
fn inbound_text(event: &InboundMessage) -> Option<String> {
    let raw = &event.raw;
    let pick = |pointer: &str| {
        raw.pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    match event.message_type.as_str() {
        "text" => pick("/text/body"),
        "button" => pick("/button/payload").or_else(|| pick("/button/text")),
        "interactive" => pick("/interactive/button_reply/id")
            .or_else(|| pick("/interactive/button_reply/title"))
            .or_else(|| pick("/interactive/list_reply/id")),
        _ => None,
    }
}

/// Default keyword replies seeded for every tenant (operators may edit or disable them).
pub fn default_auto_replies(tenant: &str) -> Vec<db::AutoReplyRow> {
    [
        (
            "saldo",
            "Assalamu'alaikum {name}, sisa pembayaran paket {package} Anda saat ini Rp {balance}.",
        ),
        (
            "jadwal",
            "Assalamu'alaikum {name}, jadwal keberangkatan paket {package}: {departure_date}.",
        ),
    ]
    .into_iter()
    .map(|(keyword, reply)| db::AutoReplyRow {
        tenant_id: tenant.to_owned(),
        keyword: keyword.to_owned(),
        reply: reply.to_owned(),
        enabled: true,
    })
    .collect()
}

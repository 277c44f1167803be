//! Metric names of the scheduler (Prometheus, via the `metrics` facade).

/// Gauge: open reminders whose `due_at` has passed (due now, or waiting for the window/template).
pub const REMINDERS_DUE: &str = "wa_scheduler_reminders_due";
/// Counter `{kind, tenant}`: send-jobs published (reminders, confirmations, broadcasts, replies).
pub const REMINDERS_ENQUEUED: &str = "wa_scheduler_reminders_enqueued_total";
/// Counter `{reason}`: reminders that ended `failed`.
pub const REMINDERS_FAILED: &str = "wa_scheduler_reminders_failed_total";
/// Counter `{reason}`: reminders closed without sending (expired, paid, not ready…).
pub const REMINDERS_CANCELLED: &str = "wa_scheduler_reminders_cancelled_total";
/// Gauge `{tenant, template}`: reminders waiting for their template to be approved.
pub const WAITING_ON_TEMPLATE: &str = "wa_scheduler_waiting_on_template";
/// Counter `{status}`: delivery steps applied to reminders (sent, delivered, read, failed).
pub const REMINDER_STATUS: &str = "wa_scheduler_reminder_status_total";
/// Counter `{tenant, outcome}`: inbound messages the auto-reply looked at.
pub const AUTO_REPLIES: &str = "wa_scheduler_auto_replies_total";
/// Histogram: duration of one tick, seconds.
pub const TICK_SECONDS: &str = "wa_scheduler_tick_seconds";
/// Counter `{routing_key, outcome}`: events handled.
pub const EVENTS: &str = "wa_scheduler_events_total";
/// Counter: ticks that failed (database or broker unavailable); the next tick retries.
pub const TICK_FAILURES: &str = "wa_scheduler_tick_failures_total";

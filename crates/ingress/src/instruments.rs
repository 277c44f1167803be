//! Metric names and recording helpers (the `metrics` facade; `/metrics` renders them for
//! Prometheus). Labels are bounded: outcomes and kinds are fixed words, phone number ids are the
//! tenants' numbers from signed webhooks.

use std::time::Duration;

use crate::webhook::{Event, EventKind};

/// Requests by `outcome` (`accepted`, `quarantined`, `signature_mismatch`, `broker_unavailable`, …).
pub const REQUESTS: &str = "wa_ingress_requests_total";
/// Seconds from first byte to answer, by `outcome`.
pub const REQUEST_DURATION: &str = "wa_ingress_request_duration_seconds";
/// Events published, by `kind` and `phone_number_id`.
pub const EVENTS: &str = "wa_ingress_events_total";
/// Signed bodies (or parts) kept raw in quarantine, by `reason`.
pub const QUARANTINED: &str = "wa_ingress_quarantined_total";
/// Seconds one request's batch waited for its publisher confirms, by `result`.
pub const PUBLISH_CONFIRM: &str = "wa_ingress_publish_confirm_seconds";

/// Webhook POSTs being handled right now (a drain waits for this to reach 0).
pub const IN_FLIGHT: &str = "wa_ingress_requests_in_flight";

/// Registers help texts once at start.
pub fn describe() {
    metrics::describe_counter!(REQUESTS, "Webhook requests by outcome");
    metrics::describe_gauge!(IN_FLIGHT, "Webhook POSTs being handled right now");
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Webhook request latency by outcome"
    );
    metrics::describe_counter!(
        EVENTS,
        "Events published to whatsapp.events by kind and phone number id"
    );
    metrics::describe_counter!(
        QUARANTINED,
        "Signed webhook bodies quarantined raw, by reason"
    );
    metrics::describe_histogram!(
        PUBLISH_CONFIRM,
        metrics::Unit::Seconds,
        "Publisher-confirm latency of one webhook's events"
    );
}

/// Counts one finished request.
pub fn record_request(outcome: &'static str, elapsed: Duration) {
    metrics::counter!(REQUESTS, "outcome" => outcome).increment(1);
    metrics::histogram!(REQUEST_DURATION, "outcome" => outcome).record(elapsed.as_secs_f64());
}

/// Times one confirm window.
pub fn record_confirm(elapsed: Duration, ok: bool) {
    let result = if ok { "confirmed" } else { "failed" };
    metrics::histogram!(PUBLISH_CONFIRM, "result" => result).record(elapsed.as_secs_f64());
}

/// Counts confirmed events. Consecutive events of one change share their labels, so each run of
/// them is one counter update (a status batch of 3 is one registry look-up, not three).
pub fn record_events(events: &[Event<'_>]) {
    let mut run: Option<(EventKind, Option<&str>, u64)> = None;
    for event in events {
        let labels = (event.body.kind(), event.body.phone_number_id());
        match &mut run {
            Some((kind, phone_number_id, count)) if (*kind, *phone_number_id) == labels => {
                *count += 1;
            }
            _ => {
                count_events(run.take());
                run = Some((labels.0, labels.1, 1));
            }
        }
    }
    count_events(run);
}

fn count_events(run: Option<(EventKind, Option<&str>, u64)>) {
    if let Some((kind, phone_number_id, count)) = run {
        let phone_number_id = phone_number_id.unwrap_or("none").to_owned();
        metrics::counter!(EVENTS, "kind" => kind.as_str(), "phone_number_id" => phone_number_id)
            .increment(count);
    }
}

/// Counts one quarantined body.
pub fn record_quarantine(reason: &'static str) {
    metrics::counter!(QUARANTINED, "reason" => reason).increment(1);
}

/// Counts a webhook POST as in flight until dropped.
pub struct InFlight(());

impl InFlight {
    /// Marks one more request in flight.
    pub fn start() -> Self {
        metrics::gauge!(IN_FLIGHT).increment(1.0);
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(IN_FLIGHT).decrement(1.0);
    }
}

//! `POST /{version}/{phone_number_id}/messages`: validation, faults, throughput and pair rate, scripted recipients,
//! and scheduling of the status webhooks for accepted sends.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Ctx, Reply, apply_latency, body_for_record, content_type};
use crate::error::{GraphError, webhook_error};
use crate::phone;
use crate::scripted::{self, Script};
use crate::state::{FaultAction, PhoneSlot, Settings, Shared, lock};
use crate::templates;
use crate::validate::{self, MessagesRequest, ValidSend};
use crate::webhook::Job;

/// Pair-rate map size above which stale entries are pruned.
const PAIR_PRUNE_THRESHOLD: usize = 50_000;

pub(super) async fn send(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let shared: Arc<Shared> = shared.into_inner();
    stall_if_due(&shared);
    let ctx = Ctx::new(&req);
    let (version, phone_number_id) = path.into_inner();
    shared.count_version(&version);
    apply_latency(&shared).await;
    let (recorded, parsed) = body_for_record(content_type(&req).as_deref(), &body);
    let outcome = handle(
        &shared,
        ctx.authorization(),
        &phone_number_id,
        parsed.as_ref(),
    )
    .await;
    ctx.respond(&shared, recorded, outcome)
}

async fn handle(
    shared: &Arc<Shared>,
    authorization: Option<&str>,
    phone_number_id: &str,
    body: Option<&Value>,
) -> Result<Reply, GraphError> {
    shared.authenticate(authorization)?;
    let slot = shared
        .phones
        .get(phone_number_id)
        .ok_or_else(|| GraphError::unsupported("post", phone_number_id))?;
    lock(&slot.state).stats.send_requests += 1;
    let result = handle_for_number(shared, slot, phone_number_id, body).await;
    if let Err(err) = &result {
        *lock(&slot.state)
            .stats
            .errors_by_code
            .entry(err.code.to_string())
            .or_default() += 1;
    }
    result
}

async fn handle_for_number(
    shared: &Arc<Shared>,
    slot: &PhoneSlot,
    phone_number_id: &str,
    body: Option<&Value>,
) -> Result<Reply, GraphError> {
    let body = body.ok_or_else(|| GraphError::invalid("The request body must be JSON."))?;
    let send = match validate::validate(body)? {
        MessagesRequest::MarkRead(_) => {
            lock(&slot.state).stats.mark_as_read += 1;
            return Ok(Reply::ok(json!({"success": true})));
        }
        MessagesRequest::Send(send) => send,
    };
    if send.recipient.wa_id == slot.number.display_phone_number {
        return Err(GraphError::coded(
            131_021,
            "The recipient phone number is the sender's own business number.",
        ));
    }
    let category = match &send.template {
        Some(t) => Some(templates::check_send(&lock(&shared.templates), t)?),
        None => None,
    };
    let key = phone::scripted_key(&send.to_input);
    match shared.take_send_fault(phone_number_id, &key) {
        Some(FaultAction::Fail(err)) => return Err(err),
        Some(FaultAction::Delay(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }
    let script = scripted::lookup(&key);
    let settings = shared.settings();
    admit(slot, &settings, &send, script.is_some())?;

    let is_template = send.template.is_some();
    match script {
        Some(Script::Undeliverable) => return Err(GraphError::stock(131_026)),
        Some(Script::WindowClosedSync) if !is_template => return Err(GraphError::stock(131_047)),
        Some(Script::Transient) if shared.count_scripted_call(&key, body) <= 2 => {
            return Err(GraphError::stock(131_000));
        }
        Some(Script::PairLimitedOnce) if shared.count_scripted_call(&key, body) == 1 => {
            return Err(pair_error());
        }
        Some(Script::ThrottledOnce) if shared.count_scripted_call(&key, body) == 1 => {
            return Err(GraphError::stock(130_429));
        }
        _ => {}
    }

    let wamid = shared.ids.wamid(&send.recipient.wa_id);
    {
        let mut state = lock(&slot.state);
        state.stats.accepted += 1;
        if !send.recipient.has_plus {
            state.stats.non_e164_to += 1;
        }
    }
    schedule_statuses(
        shared,
        &settings,
        phone_number_id,
        &wamid,
        &send,
        category,
        script,
    );
    if script == Some(Script::Slow) {
        tokio::time::sleep(Duration::from_millis(settings.slow_delay_ms)).await;
    }
    let mut message = json!({"id": wamid});
    if is_template && let Some(m) = message.as_object_mut() {
        m.insert("message_status".into(), json!("accepted"));
    }
    Ok(Reply {
        status: 200,
        body: json!({
            "messaging_product": "whatsapp",
            "contacts": [{"input": send.to_input, "wa_id": send.recipient.wa_id}],
            "messages": [message],
        }),
        wamid: Some(wamid),
    })
}

/// Blocks this worker's thread for the configured stall on every `stall_every`-th send (before the
/// send is read and timestamped): the requests on this worker's connections wait with it.
fn stall_if_due(shared: &Shared) {
    let settings = shared.settings();
    if settings.stall_every == 0 || settings.stall_ms == 0 {
        return;
    }
    let n = shared.sends_seen.fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_multiple_of(settings.stall_every) {
        std::thread::sleep(Duration::from_millis(settings.stall_ms));
    }
}

/// Throughput (every valid send) and pair rate (unscripted recipients), under the number's lock.
fn admit(
    slot: &PhoneSlot,
    settings: &Settings,
    send: &ValidSend,
    scripted: bool,
) -> Result<(), GraphError> {
    let now = Instant::now();
    let cap = usize::try_from(settings.rate_per_second).unwrap_or(usize::MAX);
    let mut state = lock(&slot.state);
    state.attempts.record(now.into_std());
    if !state.throughput.try_acquire(now.into_std(), cap) {
        state.stats.rate_limited_130429 += 1;
        return Err(GraphError::stock(130_429));
    }
    if scripted || settings.pair_interval_ms == 0 {
        return Ok(());
    }
    let interval = Duration::from_millis(settings.pair_interval_ms);
    let wa_id = &send.recipient.wa_id;
    if let Some(last) = state.pair_last.get(wa_id)
        && now.duration_since(*last) < interval
    {
        state.stats.pair_rate_limited_131056 += 1;
        return Err(pair_error());
    }
    if state.pair_last.len() >= PAIR_PRUNE_THRESHOLD {
        state
            .pair_last
            .retain(|_, last| now.duration_since(*last) < interval);
    }
    state.pair_last.insert(wa_id.clone(), now);
    Ok(())
}

fn pair_error() -> GraphError {
    GraphError::stock(131_056).with_subcode(2_494_055)
}

/// Queues sent/delivered/read (or failed) for an accepted send, honouring delay, order and duplicate settings.
fn schedule_statuses(
    shared: &Shared,
    settings: &Settings,
    phone_number_id: &str,
    wamid: &str,
    send: &ValidSend,
    category: Option<String>,
    script: Option<Script>,
) {
    if settings.webhook_url.is_none() {
        // Nobody to call: the statuses would be built only to be dropped (a benchmark's fast mock
        // answers thousands of sends a second without a webhook).
        shared
            .webhook_counters
            .skipped_no_url
            .fetch_add(1, Ordering::Relaxed);
        return;
    }
    let is_template = category.is_some();
    let pricing = json!({
        "billable": is_template,
        "pricing_model": "PMP",
        "type": if is_template { "regular" } else { "free_customer_service" },
        "category": category.unwrap_or_else(|| "service".to_owned()),
    });
    // (status, carries pricing, error code)
    let steps: &[(&str, bool, Option<i64>)] = match script {
        Some(Script::WindowClosedAsync) if !is_template => &[("failed", false, Some(131_047))],
        Some(Script::UndeliverableAsync) => &[("failed", false, Some(131_026))],
        Some(Script::DeliveredNotRead) => &[("sent", true, None), ("delivered", true, None)],
        Some(Script::ReadWithoutDelivered) => &[("sent", true, None), ("read", true, None)],
        _ => &[
            ("sent", true, None),
            ("delivered", true, None),
            ("read", false, None),
        ],
    };
    let delay = Duration::from_millis(settings.status_delay_ms);
    let start = Instant::now();
    let now_secs = Utc::now().timestamp();
    let mut events: Vec<(Duration, Value)> = steps
        .iter()
        .zip(1u32..)
        .map(|((status, with_pricing, error), step)| {
            let offset = delay * step;
            let timestamp = now_secs + i64::try_from(offset.as_secs()).unwrap_or(0);
            let mut value = json!({
                "id": wamid,
                "status": status,
                "timestamp": timestamp.to_string(),
                "recipient_id": send.recipient.wa_id,
            });
            if let Some(v) = value.as_object_mut() {
                if let Some(data) = &send.biz_opaque {
                    v.insert("biz_opaque_callback_data".into(), json!(data));
                }
                if *with_pricing {
                    v.insert("pricing".into(), pricing.clone());
                }
                if let Some(code) = error {
                    v.insert("errors".into(), json!([webhook_error(*code)]));
                }
            }
            (offset, value)
        })
        .collect();
    if settings.out_of_order {
        let position = |name: &str| events.iter().position(|(_, v)| v["status"] == name);
        if let (Some(d), Some(r)) = (position("delivered"), position("read")) {
            // read arrives when delivered would have, and delivered afterwards; timestamps keep the true order.
            let (d_offset, r_offset) = (events[d].0, events[r].0);
            events[d].0 = r_offset;
            events[r].0 = d_offset;
            events.swap(d, r);
        }
    }
    let duplicate_lag = (delay / 2).max(Duration::from_millis(20));
    for (offset, status) in &events {
        shared.schedule(
            start + *offset,
            Job::Status {
                phone_number_id: phone_number_id.to_owned(),
                status: status.clone(),
            },
        );
    }
    if settings.duplicate_statuses {
        for (offset, status) in events {
            shared.schedule(
                start + offset + duplicate_lag,
                Job::Status {
                    phone_number_id: phone_number_id.to_owned(),
                    status,
                },
            );
        }
    }
}

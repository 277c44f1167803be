//! Injecting what a jamaah sends: `POST /_mock/inbound` builds Meta's inbound `messages` webhook, signs it and POSTs
//! it to our webhook; `POST /_mock/webhook` does the same for any other field.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::media::register;
use crate::phone;
use crate::png;
use crate::state::Shared;
use crate::webhook::{self, DeliveryReport, Kind};

/// `POST /_mock/inbound` body: one message from a user to a business number.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InboundSpec {
    /// The user's number (any form; sent as digits).
    pub from: String,
    /// Profile name.
    #[serde(default)]
    pub name: Option<String>,
    /// `text`, `image`, `button`, `interactive`, `reaction` or `location`.
    #[serde(rename = "type", default = "default_type")]
    pub kind: String,
    /// Text body for `text` (a string or `{"body": ...}`).
    #[serde(default)]
    pub text: Option<Value>,
    /// Image caption (also accepted as `image.caption`).
    #[serde(default)]
    pub caption: Option<String>,
    /// `image` options: `{caption?, mime_type?, data_base64?, fail_first?, fail_status?}`.
    #[serde(default)]
    pub image: Option<Value>,
    /// `button` (template quick reply): `{payload, text}`.
    #[serde(default)]
    pub button: Option<Value>,
    /// `interactive`: `{type:"button_reply", button_reply:{id,title}}`, `{type:"list_reply", ...}` or `{id, title}`.
    #[serde(default)]
    pub interactive: Option<Value>,
    /// `reaction`: `{message_id, emoji}`.
    #[serde(default)]
    pub reaction: Option<Value>,
    /// `location`: `{latitude, longitude, name?, address?}`.
    #[serde(default)]
    pub location: Option<Value>,
    /// Receiving business number (defaults to the first configured).
    #[serde(default)]
    pub phone_number_id: Option<String>,
    /// Force the wamid (to replay a message).
    #[serde(default)]
    pub id: Option<String>,
    /// Unix seconds (defaults to now).
    #[serde(default)]
    pub timestamp: Option<i64>,
    /// Reply context: `{"id": "<wamid being replied to>"}`.
    #[serde(default)]
    pub context: Option<Value>,
}

fn default_type() -> String {
    "text".to_owned()
}

/// What injection did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboundOutcome {
    /// The inbound wamid used.
    pub id: String,
    /// Media id, for images.
    pub media_id: Option<String>,
    /// The `messages[]` element sent.
    pub message: Value,
    /// First delivery attempt.
    pub webhook: Value,
}

/// Builds, signs and posts an inbound message webhook; `Err` explains a bad spec.
pub async fn inject_inbound(
    shared: &Arc<Shared>,
    spec: InboundSpec,
) -> Result<InboundOutcome, String> {
    let phone_number_id = match &spec.phone_number_id {
        Some(id) if shared.phones.contains_key(id) => id.clone(),
        Some(id) => return Err(format!("unknown phone_number_id {id}")),
        None => shared
            .config
            .phone_numbers
            .first()
            .map(|n| n.phone_number_id.clone())
            .ok_or("no phone number")?,
    };
    let from = phone::digits_only(&spec.from);
    if !(8..=15).contains(&from.len()) {
        return Err("from must be a phone number of 8 to 15 digits".into());
    }
    let id = spec.id.clone().unwrap_or_else(|| shared.ids.wamid(&from));
    let timestamp = spec.timestamp.unwrap_or_else(|| Utc::now().timestamp());
    let mut message =
        json!({"from": from, "id": id, "timestamp": timestamp.to_string(), "type": spec.kind});
    let mut media_id = None;
    let payload = match spec.kind.as_str() {
        "text" => {
            let body = match &spec.text {
                Some(Value::String(s)) => s.clone(),
                Some(v) => v
                    .get("body")
                    .and_then(Value::as_str)
                    .ok_or("text.body is required")?
                    .to_owned(),
                None => return Err("text is required for type text".into()),
            };
            json!({"body": body})
        }
        "image" => {
            let opts = spec.image.clone().unwrap_or_else(|| json!({}));
            let mime = opts
                .get("mime_type")
                .and_then(Value::as_str)
                .unwrap_or("image/png")
                .to_owned();
            let bytes = match opts.get("data_base64").and_then(Value::as_str) {
                Some(data) => STANDARD
                    .decode(data)
                    .map_err(|e| format!("image.data_base64: {e}"))?,
                None => png::generate(shared.ids.numeric()),
            };
            let fail_first = opts.get("fail_first").and_then(Value::as_u64).unwrap_or(0);
            let fail_status = opts
                .get("fail_status")
                .and_then(Value::as_u64)
                .unwrap_or(404);
            let item = register(
                shared,
                &phone_number_id,
                &mime,
                Bytes::from(bytes),
                u32::try_from(fail_first).unwrap_or(u32::MAX),
                u16::try_from(fail_status).unwrap_or(404),
            );
            let mut image =
                json!({"mime_type": item.mime_type, "sha256": item.sha256_base64, "id": item.id});
            let caption = spec.caption.clone().or_else(|| {
                opts.get("caption")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
            if let (Some(caption), Some(obj)) = (caption, image.as_object_mut()) {
                obj.insert("caption".into(), json!(caption));
            }
            media_id = Some(item.id);
            image
        }
        "button" => {
            let b = spec
                .button
                .clone()
                .ok_or("button is required for type button")?;
            let payload = b
                .get("payload")
                .and_then(Value::as_str)
                .ok_or("button.payload is required")?;
            let text = b
                .get("text")
                .and_then(Value::as_str)
                .ok_or("button.text is required")?;
            json!({"payload": payload, "text": text})
        }
        "interactive" => interactive_payload(spec.interactive.as_ref())?,
        "reaction" => {
            let r = spec
                .reaction
                .clone()
                .ok_or("reaction is required for type reaction")?;
            let message_id = r
                .get("message_id")
                .and_then(Value::as_str)
                .ok_or("reaction.message_id is required")?;
            json!({"message_id": message_id, "emoji": r.get("emoji").and_then(Value::as_str).unwrap_or_default()})
        }
        "location" => {
            let l = spec
                .location
                .clone()
                .ok_or("location is required for type location")?;
            if !(l.get("latitude").is_some_and(Value::is_number)
                && l.get("longitude").is_some_and(Value::is_number))
            {
                return Err("location.latitude and location.longitude must be numbers".into());
            }
            l
        }
        other => return Err(format!("unsupported inbound type {other}")),
    };
    if let Some(obj) = message.as_object_mut() {
        obj.insert(spec.kind.clone(), payload);
        if let Some(context_id) = spec
            .context
            .as_ref()
            .and_then(|c| c.get("id"))
            .and_then(Value::as_str)
        {
            let display = shared.display_number(&phone_number_id).unwrap_or_default();
            obj.insert("context".into(), json!({"from": display, "id": context_id}));
        }
    }
    let display = shared.display_number(&phone_number_id).unwrap_or_default();
    let name = spec.name.clone().unwrap_or_else(|| "Jamaah".to_owned());
    let body = webhook::messages_envelope(
        &shared.config.waba_id,
        &phone_number_id,
        &display,
        json!({
            "contacts": [{"profile": {"name": name}, "wa_id": from}],
            "messages": [message.clone()],
        }),
    );
    shared.inbound_injected.fetch_add(1, Ordering::Relaxed);
    let report = webhook::deliver_on_main_runtime(shared, body, Kind::Messages(1)).await;
    Ok(InboundOutcome {
        id,
        media_id,
        message,
        webhook: report_json(&report),
    })
}

fn interactive_payload(spec: Option<&Value>) -> Result<Value, String> {
    let i = spec.ok_or("interactive is required for type interactive")?;
    let kind = i
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("button_reply");
    let reply = i.get(kind).unwrap_or(i);
    let id = reply
        .get("id")
        .and_then(Value::as_str)
        .ok_or("interactive reply id is required")?;
    let title = reply
        .get("title")
        .and_then(Value::as_str)
        .ok_or("interactive reply title is required")?;
    let mut reply_obj = json!({"id": id, "title": title});
    match kind {
        "button_reply" => {}
        "list_reply" => {
            if let (Some(d), Some(obj)) = (
                reply.get("description").and_then(Value::as_str),
                reply_obj.as_object_mut(),
            ) {
                obj.insert("description".into(), json!(d));
            }
        }
        other => return Err(format!("unsupported interactive type {other}")),
    }
    Ok(json!({"type": kind, kind: reply_obj}))
}

fn report_json(report: &DeliveryReport) -> Value {
    json!(report)
}

pub(super) async fn inbound(
    body: web::Json<InboundSpec>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let shared: Arc<Shared> = shared.into_inner();
    if shared.settings().webhook_url.is_none() {
        return HttpResponse::Conflict().json(json!({"error": "no webhook URL is configured"}));
    }
    match inject_inbound(&shared, body.into_inner()).await {
        Ok(outcome) => HttpResponse::Ok().json(outcome),
        Err(reason) => HttpResponse::BadRequest().json(json!({"error": reason})),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct RawWebhook {
    field: String,
    value: Value,
}

/// `POST /_mock/webhook`: any field (`account_update`, `user_preferences`, ...) wrapped in Meta's envelope.
pub(super) async fn raw_webhook(
    body: web::Json<RawWebhook>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let shared: Arc<Shared> = shared.into_inner();
    if shared.settings().webhook_url.is_none() {
        return HttpResponse::Conflict().json(json!({"error": "no webhook URL is configured"}));
    }
    let RawWebhook { field, value } = body.into_inner();
    let envelope = if field == "messages" {
        let phone_number_id = shared
            .config
            .phone_numbers
            .first()
            .map(|n| n.phone_number_id.clone())
            .unwrap_or_default();
        let display = shared.display_number(&phone_number_id).unwrap_or_default();
        webhook::messages_envelope(&shared.config.waba_id, &phone_number_id, &display, value)
    } else {
        webhook::field_envelope(&shared.config.waba_id, &field, value)
    };
    let report = webhook::deliver_on_main_runtime(&shared, envelope, Kind::Other).await;
    HttpResponse::Ok().json(json!({"webhook": report}))
}

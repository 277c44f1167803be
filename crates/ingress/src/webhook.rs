//! Splits one signed webhook body into one event per item Meta sent: each message, each status,
//! each value-level error, each template status update and every other field. Pure: no HTTP, no
//! broker, so it is unit-tested and fuzzed directly.
//!
//! Parsing is lenient where Meta is loose (unknown fields are kept in `raw`, `timestamp` may be a
//! string or a number, ids may be numbers) and strict only where an event would be meaningless
//! without a value (a message without a wamid). An item that cannot be read is reported as a
//! [`Problem`], never silently skipped: the caller keeps the whole body in quarantine, so nothing
//! Meta sent is lost, while every readable item still flows.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use wa_common::contracts::inbound::{
    EventSource, InboundError, InboundMessage, InboundOther, InboundStatus, InboundTemplateStatus,
    MetaErrorItem, Pricing,
};
use wa_common::topology::{OTHER_WEBHOOK_FIELDS, routing};

/// `object` of every WhatsApp Business webhook.
pub const WHATSAPP_OBJECT: &str = "whatsapp_business_account";
/// `changes[].field` of messages, statuses and value-level errors.
const FIELD_MESSAGES: &str = "messages";
/// `changes[].field` of template review updates.
const FIELD_TEMPLATE_STATUS: &str = "message_template_status_update";
/// The bound catch-all for fields we have no binding for.
const FIELD_UNKNOWN: &str = "unknown";

/// Why a signed body could not be read at all; it goes to quarantine whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    /// Not JSON (or not UTF-8 JSON).
    #[error("body is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not a WhatsApp Business webhook envelope.
    #[error("body is not a WhatsApp webhook: {0}")]
    NotWhatsApp(String),
}

impl Unreadable {
    /// Stable snake_case reason for headers and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotJson(_) => "not_json",
            Self::NotWhatsApp(_) => "not_whatsapp",
        }
    }
}

/// One item of a webhook that could not be turned into an event (path and reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// JSON path of the item, e.g. `entry[0].changes[1].value.messages[3]`.
    pub path: String,
    /// What was wrong, naming the field.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Which contract an event is; also the `kind` label of the events metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `inbound.message`.
    Message,
    /// `inbound.status`.
    Status,
    /// `inbound.template_status`.
    TemplateStatus,
    /// `inbound.error`.
    Error,
    /// `inbound.<field>` / `inbound.unknown`.
    Other,
}

impl EventKind {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Status => "status",
            Self::TemplateStatus => "template_status",
            Self::Error => "error",
            Self::Other => "other",
        }
    }
}

/// The event body, serialised as the matching `wa_common::contracts::inbound` type.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EventBody {
    /// See [`InboundMessage`].
    Message(InboundMessage),
    /// See [`InboundStatus`].
    Status(InboundStatus),
    /// See [`InboundTemplateStatus`].
    TemplateStatus(InboundTemplateStatus),
    /// See [`InboundError`].
    Error(InboundError),
    /// See [`InboundOther`].
    Other(InboundOther),
}

impl EventBody {
    /// Which contract this is.
    pub fn kind(&self) -> EventKind {
        match self {
            Self::Message(_) => EventKind::Message,
            Self::Status(_) => EventKind::Status,
            Self::TemplateStatus(_) => EventKind::TemplateStatus,
            Self::Error(_) => EventKind::Error,
            Self::Other(_) => EventKind::Other,
        }
    }

    /// Tenant resolution data of the event.
    pub fn source(&self) -> &EventSource {
        match self {
            Self::Message(e) => &e.source,
            Self::Status(e) => &e.source,
            Self::TemplateStatus(e) => &e.source,
            Self::Error(e) => &e.source,
            Self::Other(e) => &e.source,
        }
    }
}

/// One event to publish on `whatsapp.events`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Routing key (`inbound.message`, …), always one with a bound queue.
    pub routing_key: String,
    /// Stable id for consumers to dedupe Meta's redeliveries (same item → same id).
    pub dedupe_id: String,
    /// The event.
    pub body: EventBody,
}

/// Everything read from one webhook body.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Split {
    /// Events, in the order Meta listed the items.
    pub events: Vec<Event>,
    /// Items that could not be read (the body must then be quarantined as well).
    pub problems: Vec<Problem>,
}

/// Reads `body` (the exact signed bytes) into events; `received_at` stamps every event.
///
/// Errors only when the body as a whole is not a WhatsApp webhook; item-level trouble is
/// reported in [`Split::problems`] beside the events that could be read.
pub fn split_webhook(body: &[u8], received_at: DateTime<Utc>) -> Result<Split, Unreadable> {
    let root: Value =
        serde_json::from_slice(body).map_err(|e| Unreadable::NotJson(e.to_string()))?;
    let Value::Object(root) = root else {
        return Err(Unreadable::NotWhatsApp("top level is not an object".into()));
    };
    match root.get("object") {
        Some(Value::String(object)) if object == WHATSAPP_OBJECT => {}
        Some(other) => {
            return Err(Unreadable::NotWhatsApp(format!(
                "object is {}, expected {WHATSAPP_OBJECT:?}",
                short(other)
            )));
        }
        None => return Err(Unreadable::NotWhatsApp("object is missing".into())),
    }
    let Some(Value::Array(entries)) = root.get("entry") else {
        return Err(Unreadable::NotWhatsApp(
            "entry is missing or not an array".into(),
        ));
    };

    let mut split = Split::default();
    for (e, entry) in entries.iter().enumerate() {
        let path = format!("entry[{e}]");
        let Some(entry) = entry.as_object() else {
            split.problem(&path, "not an object");
            continue;
        };
        let Some(waba_id) = entry.get("id").and_then(id_string) else {
            split.problem(&path, "id is missing or not a string");
            continue;
        };
        let Some(Value::Array(changes)) = entry.get("changes") else {
            split.problem(&path, "changes is missing or not an array");
            continue;
        };
        for (c, change) in changes.iter().enumerate() {
            let path = format!("{path}.changes[{c}]");
            let Some(field) = change.get("field").and_then(Value::as_str) else {
                split.problem(&path, "field is missing or not a string");
                continue;
            };
            let Some(value) = change.get("value") else {
                split.problem(&path, "value is missing");
                continue;
            };
            let source = event_source(&waba_id, value);
            let mut cx = ChangeContext {
                split: &mut split,
                path: &path,
                source: &source,
                received_at,
            };
            match field {
                FIELD_MESSAGES => cx.messages_change(value),
                FIELD_TEMPLATE_STATUS => cx.template_status_change(value),
                other => cx.other_change(other, value),
            }
        }
    }
    Ok(split)
}

impl Split {
    fn problem(&mut self, path: &str, reason: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_owned(),
            reason: reason.into(),
        });
    }

    fn push(&mut self, routing_key: String, dedupe_id: String, body: EventBody) {
        self.events.push(Event {
            routing_key,
            dedupe_id,
            body,
        });
    }
}

struct ChangeContext<'a> {
    split: &'a mut Split,
    path: &'a str,
    source: &'a EventSource,
    received_at: DateTime<Utc>,
}

impl ChangeContext<'_> {
    /// `messages`: every message, status and value-level error; a change with none of them (a
    /// shape we do not know yet) is kept whole as `inbound.unknown`.
    fn messages_change(&mut self, value: &Value) {
        let mut items = 0_usize;
        let contacts = value.get("contacts").and_then(Value::as_array);
        for (key, read) in [
            (
                "messages",
                Self::message as fn(&mut Self, &str, &Value, Option<&Vec<Value>>),
            ),
            ("statuses", Self::status),
            ("errors", Self::value_error),
        ] {
            match value.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Array(list)) => {
                    for (i, item) in list.iter().enumerate() {
                        items += 1;
                        let path = format!("{}.value.{key}[{i}]", self.path);
                        read(self, &path, item, contacts);
                    }
                }
                Some(_) => {
                    items += 1;
                    self.split
                        .problem(&format!("{}.value.{key}", self.path), "not an array");
                }
            }
        }
        if items == 0 {
            self.other_change(FIELD_MESSAGES, value);
        }
    }

    fn message(&mut self, path: &str, item: &Value, contacts: Option<&Vec<Value>>) {
        let read = || -> Result<InboundMessage, String> {
            let wa_message_id = required_str(item, "id")?;
            let from = item.get("from").and_then(id_string).unwrap_or_default();
            let contact = contacts.and_then(|contacts| matching_contact(contacts, &from));
            let from_user_id = item
                .get("from_user_id")
                .and_then(id_string)
                .or_else(|| contact.and_then(|c| c.get("user_id")).and_then(id_string));
            let profile_name = contact
                .and_then(|c| c.pointer("/profile/name"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            Ok(InboundMessage {
                source: self.source.clone(),
                wa_message_id,
                from,
                from_user_id,
                profile_name,
                timestamp: required_timestamp(item)?,
                message_type: required_str(item, "type")?,
                raw: item.clone(),
                received_at: self.received_at,
            })
        };
        match read() {
            Ok(message) => {
                let dedupe_id = format!("message:{}", message.wa_message_id);
                self.split.push(
                    routing::INBOUND_MESSAGE.to_owned(),
                    dedupe_id,
                    EventBody::Message(message),
                );
            }
            Err(reason) => self.split.problem(path, reason),
        }
    }

    fn status(&mut self, path: &str, item: &Value, _contacts: Option<&Vec<Value>>) {
        let read = || -> Result<InboundStatus, String> {
            let errors = match item.get("errors") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(list)) => list
                    .iter()
                    .enumerate()
                    .map(|(i, e)| meta_error(e).map_err(|r| format!("errors[{i}]: {r}")))
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err("errors is not an array".into()),
            };
            Ok(InboundStatus {
                source: self.source.clone(),
                wa_message_id: required_str(item, "id")?,
                status: required_str(item, "status")?,
                timestamp: required_timestamp(item)?,
                recipient_id: item.get("recipient_id").and_then(id_string),
                biz_opaque_callback_data: item
                    .get("biz_opaque_callback_data")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                pricing: item.get("pricing").filter(|p| p.is_object()).map(pricing),
                errors,
                raw: item.clone(),
                received_at: self.received_at,
            })
        };
        match read() {
            Ok(status) => {
                let dedupe_id = format!(
                    "status:{}:{}:{}",
                    status.wa_message_id,
                    status.status,
                    status.timestamp.timestamp()
                );
                self.split.push(
                    routing::INBOUND_STATUS.to_owned(),
                    dedupe_id,
                    EventBody::Status(status),
                );
            }
            Err(reason) => self.split.problem(path, reason),
        }
    }

    fn value_error(&mut self, path: &str, item: &Value, _contacts: Option<&Vec<Value>>) {
        match meta_error(item) {
            Ok(error) => {
                let event = InboundError {
                    source: self.source.clone(),
                    error,
                    raw: item.clone(),
                    received_at: self.received_at,
                };
                let dedupe_id = content_id("error", &self.source.waba_id, item);
                self.split.push(
                    routing::INBOUND_ERROR.to_owned(),
                    dedupe_id,
                    EventBody::Error(event),
                );
            }
            Err(reason) => self.split.problem(path, reason),
        }
    }

    fn template_status_change(&mut self, value: &Value) {
        let read = || -> Result<InboundTemplateStatus, String> {
            Ok(InboundTemplateStatus {
                source: self.source.clone(),
                event: required_str(value, "event")?,
                message_template_id: match value.get("message_template_id") {
                    None | Some(Value::Null) => None,
                    Some(id) => Some(integer(id).ok_or("message_template_id is not an integer")?),
                },
                message_template_name: required_str(value, "message_template_name")?,
                message_template_language: required_str(value, "message_template_language")?,
                reason: value
                    .get("reason")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                raw: value.clone(),
                received_at: self.received_at,
            })
        };
        match read() {
            Ok(event) => {
                let dedupe_id = content_id("template_status", &self.source.waba_id, value);
                self.split.push(
                    routing::INBOUND_TEMPLATE_STATUS.to_owned(),
                    dedupe_id,
                    EventBody::TemplateStatus(event),
                );
            }
            Err(reason) => self.split.problem(&format!("{}.value", self.path), reason),
        }
    }

    /// Any other field, verbatim; fields without a binding go to `inbound.unknown` (still carrying
    /// the real field name) so nothing is unroutable.
    fn other_change(&mut self, field: &str, value: &Value) {
        let routing_key = if field != FIELD_UNKNOWN && OTHER_WEBHOOK_FIELDS.contains(&field) {
            routing::inbound_other(field)
        } else {
            routing::inbound_other(FIELD_UNKNOWN)
        };
        let event = InboundOther {
            source: self.source.clone(),
            field: field.to_owned(),
            raw: value.clone(),
            received_at: self.received_at,
        };
        let dedupe_id = content_id(field, &self.source.waba_id, value);
        self.split
            .push(routing_key, dedupe_id, EventBody::Other(event));
    }
}

fn event_source(waba_id: &str, value: &Value) -> EventSource {
    let metadata = value.get("metadata");
    EventSource {
        waba_id: waba_id.to_owned(),
        phone_number_id: metadata
            .and_then(|m| m.get("phone_number_id"))
            .and_then(id_string),
        display_phone_number: metadata
            .and_then(|m| m.get("display_phone_number"))
            .or_else(|| value.get("display_phone_number"))
            .and_then(id_string),
    }
}

/// The contact whose `wa_id` is `from`; else the only contact, when the phone number is missing
/// on either side (usernames may leave `wa_id` empty) so it cannot contradict the sender.
fn matching_contact<'a>(contacts: &'a [Value], from: &str) -> Option<&'a Value> {
    let wa_id = |c: &'a Value| c.get("wa_id").and_then(Value::as_str).unwrap_or_default();
    contacts
        .iter()
        .find(|c| !from.is_empty() && wa_id(c) == from)
        .or(match contacts {
            [only] if from.is_empty() || wa_id(only).is_empty() => Some(only),
            _ => None,
        })
}

fn meta_error(item: &Value) -> Result<MetaErrorItem, String> {
    if !item.is_object() {
        return Err("not an object".into());
    }
    let code = item.get("code").ok_or("code is missing")?;
    Ok(MetaErrorItem {
        code: integer(code).ok_or("code is not an integer")?,
        title: item.get("title").and_then(Value::as_str).map(str::to_owned),
        message: item
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned),
        details: item
            .pointer("/error_data/details")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

fn pricing(value: &Value) -> Pricing {
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    Pricing {
        billable: value.get("billable").and_then(Value::as_bool),
        pricing_model: text("pricing_model"),
        kind: text("type"),
        category: text("category"),
    }
}

/// A string field, or a number Meta sent where it usually sends a string.
fn id_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn required_str(item: &Value, key: &str) -> Result<String, String> {
    match item.get(key) {
        Some(value) => id_string(value)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("{key} is not a non-empty string")),
        None => Err(format!("{key} is missing")),
    }
}

/// An integer given as a JSON number or a string of digits.
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `timestamp`: unix seconds, as Meta's string or as a number.
fn required_timestamp(item: &Value) -> Result<DateTime<Utc>, String> {
    let value = item.get("timestamp").ok_or("timestamp is missing")?;
    integer(value)
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
        .ok_or_else(|| format!("timestamp is not unix seconds: {}", short(value)))
}

/// A dedupe id for items without an id of their own: a digest of what Meta sent (serde_json
/// sorts object keys, so the same item always gives the same id).
fn content_id(kind: &str, waba_id: &str, value: &Value) -> String {
    let mut digest = Sha256::new();
    digest.update(kind.as_bytes());
    digest.update([0]);
    digest.update(waba_id.as_bytes());
    digest.update([0]);
    digest.update(value.to_string().as_bytes());
    format!("{kind}:{}", hex::encode(&digest.finalize()[..16]))
}

/// A value shortened for an error message (no bodies in logs).
fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_226_000, 0).unwrap_or_default()
    }

    fn split(body: &Value) -> Split {
        split_webhook(body.to_string().as_bytes(), now()).expect("readable")
    }

    fn envelope(changes: Value) -> Value {
        json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": changes}]})
    }

    fn messages_value(extra: Value) -> Value {
        let mut value = json!({
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "6221555000111", "phone_number_id": "106540352242922"}
        });
        if let (Some(v), Value::Object(extra)) = (value.as_object_mut(), extra) {
            v.extend(extra);
        }
        value
    }

    #[test]
    fn an_inbound_text_becomes_one_message_event_with_profile_name_and_raw() {
        let body = envelope(json!([{"field": "messages", "value": messages_value(json!({
            "contacts": [{"profile": {"name": "Siti Aminah"}, "wa_id": "6281234567890", "user_id": "US.123"}],
            "messages": [{"from": "6281234567890", "id": "wamid.A", "timestamp": "1767225600",
                          "type": "text", "text": {"body": "Assalamualaikum"}, "future_field": 1}]
        }))}]));

        let split = split(&body);

        assert!(split.problems.is_empty(), "{:?}", split.problems);
        assert_eq!(split.events.len(), 1);
        let event = &split.events[0];
        assert_eq!(event.routing_key, "inbound.message");
        assert_eq!(event.dedupe_id, "message:wamid.A");
        let EventBody::Message(message) = &event.body else {
            panic!("not a message: {event:?}")
        };
        assert_eq!(message.source.waba_id, "102290129340398");
        assert_eq!(
            message.source.phone_number_id.as_deref(),
            Some("106540352242922")
        );
        assert_eq!(
            message.source.display_phone_number.as_deref(),
            Some("6221555000111")
        );
        assert_eq!(message.profile_name.as_deref(), Some("Siti Aminah"));
        assert_eq!(message.from_user_id.as_deref(), Some("US.123"));
        assert_eq!(message.message_type, "text");
        assert_eq!(message.timestamp.timestamp(), 1_767_225_600);
        assert_eq!(message.raw["future_field"], 1);
        assert_eq!(message.received_at, now());
    }

    #[test]
    fn every_entry_change_message_status_and_error_becomes_its_own_event() {
        let change = |n: u32| {
            json!({"field": "messages", "value": messages_value(json!({
                "messages": [
                    {"from": "62811", "id": format!("wamid.m{n}a"), "timestamp": "1767225600", "type": "text", "text": {"body": "a"}},
                    {"from": "62812", "id": format!("wamid.m{n}b"), "timestamp": 1767225601, "type": "image", "image": {"id": "1"}}
                ],
                "statuses": [
                    {"id": format!("wamid.s{n}"), "status": "failed", "timestamp": "1767226000", "recipient_id": "62811",
                     "errors": [{"code": 131047, "title": "Re-engagement message", "error_data": {"details": "window"}}]},
                    {"id": format!("wamid.s{n}"), "status": "sent", "timestamp": "1767226001",
                     "pricing": {"billable": true, "pricing_model": "PMP", "type": "regular", "category": "utility"}}
                ],
                "errors": [{"code": 130429, "title": "Rate limit hit"}]
            }))})
        };
        let body = json!({"object": "whatsapp_business_account", "entry": [
            {"id": "1", "changes": [change(1), change(2)]},
            {"id": "2", "changes": [change(3)]}
        ]});

        let split = split(&body);

        assert!(split.problems.is_empty(), "{:?}", split.problems);
        let keys: Vec<&str> = split
            .events
            .iter()
            .map(|e| e.routing_key.as_str())
            .collect();
        assert_eq!(keys.len(), 15);
        assert_eq!(keys.iter().filter(|k| **k == "inbound.message").count(), 6);
        assert_eq!(keys.iter().filter(|k| **k == "inbound.status").count(), 6);
        assert_eq!(keys.iter().filter(|k| **k == "inbound.error").count(), 3);
        let EventBody::Status(failed) = &split.events[2].body else {
            panic!("not a status")
        };
        assert_eq!(failed.errors[0].code, 131_047);
        assert_eq!(failed.errors[0].details.as_deref(), Some("window"));
        let EventBody::Status(sent) = &split.events[3].body else {
            panic!("not a status")
        };
        assert_eq!(
            sent.pricing.as_ref().and_then(|p| p.category.as_deref()),
            Some("utility")
        );
        assert_eq!(split.events[14].body.source().waba_id, "2");
    }

    #[test]
    fn the_profile_name_comes_from_the_senders_contact_only() {
        let message = |from: &str| json!({"from": from, "id": "wamid.X", "timestamp": "1767225600", "type": "text"});
        let names = |contacts: Value, from: &str| {
            let body = envelope(json!([{"field": "messages", "value": messages_value(json!({
                "contacts": contacts, "messages": [message(from)]
            }))}]));
            match &split(&body).events[0].body {
                EventBody::Message(m) => m.profile_name.clone(),
                other => panic!("not a message: {other:?}"),
            }
        };
        let two = json!([{"profile": {"name": "Siti"}, "wa_id": "62811"}, {"profile": {"name": "Budi"}, "wa_id": "62812"}]);

        assert_eq!(names(two.clone(), "62812").as_deref(), Some("Budi"));
        assert_eq!(names(two, "62813"), None);
        assert_eq!(
            names(
                json!([{"profile": {"name": "Siti"}, "wa_id": "62811"}]),
                "62899"
            ),
            None
        );
        assert_eq!(
            names(
                json!([{"profile": {"name": "Siti"}, "wa_id": "", "user_id": "US.1"}]),
                ""
            )
            .as_deref(),
            Some("Siti")
        );
    }

    #[test]
    fn template_status_update_reads_a_numeric_template_id() {
        let body = envelope(
            json!([{"field": "message_template_status_update", "value": {
                "event": "APPROVED", "message_template_id": 1_234_567_890_123_i64,
                "message_template_name": "payment_reminder", "message_template_language": "id", "reason": "NONE"
            }}]),
        );

        let split = split(&body);

        assert_eq!(split.events.len(), 1);
        assert_eq!(split.events[0].routing_key, "inbound.template_status");
        let EventBody::TemplateStatus(t) = &split.events[0].body else {
            panic!("not a template status")
        };
        assert_eq!(t.message_template_id, Some(1_234_567_890_123));
        assert_eq!(t.event, "APPROVED");
    }

    #[test]
    fn known_other_fields_get_their_own_key_and_unknown_ones_go_to_inbound_unknown() {
        let body = envelope(json!([
            {"field": "account_update", "value": {"event": "ACCOUNT_VIOLATION"}},
            {"field": "phone_number_quality_update", "value": {"display_phone_number": "6221", "event": "ONBOARDING"}},
            {"field": "brand_new_field.#", "value": {"x": 1}}
        ]));

        let split = split(&body);

        let keys: Vec<&str> = split
            .events
            .iter()
            .map(|e| e.routing_key.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "inbound.account_update",
                "inbound.phone_number_quality_update",
                "inbound.unknown"
            ]
        );
        let EventBody::Other(unknown) = &split.events[2].body else {
            panic!("not other")
        };
        assert_eq!(unknown.field, "brand_new_field.#");
        assert_eq!(unknown.raw, json!({"x": 1}));
        assert_eq!(
            split.events[1]
                .body
                .source()
                .display_phone_number
                .as_deref(),
            Some("6221")
        );
    }

    #[test]
    fn a_messages_change_without_items_is_kept_as_inbound_unknown() {
        let body = envelope(
            json!([{"field": "messages", "value": messages_value(json!({"message_echoes": []}))}]),
        );

        let split = split(&body);

        assert_eq!(split.events.len(), 1);
        assert_eq!(split.events[0].routing_key, "inbound.unknown");
    }

    #[test]
    fn an_unreadable_item_is_a_problem_naming_the_field_while_the_others_still_flow() {
        let body = envelope(json!([{"field": "messages", "value": messages_value(json!({
            "messages": [
                {"from": "62811", "id": "wamid.ok", "timestamp": "1767225600", "type": "text"},
                {"from": "62811", "id": "wamid.bad", "timestamp": "yesterday", "type": "text"}
            ]
        }))}]));

        let split = split(&body);

        assert_eq!(split.events.len(), 1);
        assert_eq!(split.problems.len(), 1);
        assert_eq!(
            split.problems[0].path,
            "entry[0].changes[0].value.messages[1]"
        );
        assert!(
            split.problems[0].reason.contains("timestamp"),
            "{}",
            split.problems[0]
        );
    }

    #[test]
    fn bodies_that_are_not_whatsapp_webhooks_are_unreadable_with_a_reason() {
        assert_eq!(
            split_webhook(b"hello", now()).map_err(|e| e.code()),
            Err("not_json")
        );
        assert_eq!(
            split_webhook(b"[1,2]", now()).map_err(|e| e.code()),
            Err("not_whatsapp")
        );
        assert_eq!(
            split_webhook(br#"{"object":"page","entry":[]}"#, now()).map_err(|e| e.code()),
            Err("not_whatsapp")
        );
        assert_eq!(
            split_webhook(br#"{"object":"whatsapp_business_account"}"#, now())
                .map_err(|e| e.code()),
            Err("not_whatsapp")
        );
    }

    #[test]
    fn the_same_item_always_gets_the_same_dedupe_id() {
        let body = envelope(json!([{"field": "account_update", "value": {"b": 2, "a": 1}}]));
        let reordered = envelope(json!([{"field": "account_update", "value": {"a": 1, "b": 2}}]));

        assert_eq!(
            split(&body).events[0].dedupe_id,
            split(&reordered).events[0].dedupe_id
        );
    }
}

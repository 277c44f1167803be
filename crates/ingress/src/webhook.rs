//! Splits one signed webhook body into one event per item Meta sent: each message, each status,
//! each value-level error, each template status update and every other field. Pure: no HTTP, no
//! broker, so it is unit-tested and fuzzed directly.
//!
//! Parsing is lenient where Meta is loose (unknown fields are kept in `raw`, `timestamp` may be a
//! string or a number, ids may be numbers) and strict only where an event would be meaningless
//! without a value (a message without a wamid). An item that cannot be read is reported as a
//! [`Problem`], never silently skipped: the caller keeps the whole body in quarantine, so nothing
//! Meta sent is lost, while every readable item still flows.
//!
//! Messages and statuses are nearly all the traffic, so they are read without building a
//! `serde_json::Value` tree: the body is checked once as a whole (exactly the JSON that
//! `serde_json::Value` accepts), then read in one typed pass that keeps each item as a borrowed
//! [`RawValue`] slice of the body; the event's `raw` is that slice, Meta's bytes verbatim, and
//! its typed fields borrow from it too. The rare kinds (template status, value-level errors,
//! other fields) still go through `Value`, which their content-derived dedupe ids need anyway.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use wa_common::contracts::inbound::{
    EventSource, InboundError, InboundOther, InboundTemplateStatus, MetaErrorItem, Pricing,
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

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// Tenant resolution data, borrowed from the body; serialises exactly as [`EventSource`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source<'a> {
    /// See [`EventSource::waba_id`].
    pub waba_id: Cow<'a, str>,
    /// See [`EventSource::phone_number_id`].
    pub phone_number_id: Option<Cow<'a, str>>,
    /// See [`EventSource::display_phone_number`].
    pub display_phone_number: Option<Cow<'a, str>>,
}

impl Source<'_> {
    fn to_contract(&self) -> EventSource {
        EventSource {
            waba_id: self.waba_id.clone().into_owned(),
            phone_number_id: self.phone_number_id.clone().map(Cow::into_owned),
            display_phone_number: self.display_phone_number.clone().map(Cow::into_owned),
        }
    }
}

/// An `inbound.message` borrowed from the body; serialises exactly as
/// [`InboundMessage`](wa_common::contracts::inbound::InboundMessage) (field for field, in order;
/// a test holds the two together).
#[derive(Debug, Clone, Serialize)]
pub struct MessageEvent<'a> {
    /// Tenant resolution data.
    pub source: Source<'a>,
    /// Meta's wamid.
    pub wa_message_id: Cow<'a, str>,
    /// Sender's `wa_id`; empty when Meta sent none.
    pub from: Cow<'a, str>,
    /// Sender's business-scoped user id.
    pub from_user_id: Option<Cow<'a, str>>,
    /// Sender's profile name, from the matching contact.
    pub profile_name: Option<Cow<'a, str>>,
    /// When the user sent it.
    pub timestamp: DateTime<Utc>,
    /// Meta's type word.
    pub message_type: Cow<'a, str>,
    /// Meta's message object: the exact bytes of the body.
    pub raw: &'a RawValue,
    /// When ingress received the webhook.
    pub received_at: DateTime<Utc>,
}

/// An `inbound.status` borrowed from the body; serialises exactly as
/// [`InboundStatus`](wa_common::contracts::inbound::InboundStatus).
#[derive(Debug, Clone, Serialize)]
pub struct StatusEvent<'a> {
    /// Tenant resolution data.
    pub source: Source<'a>,
    /// The wamid of the message we sent.
    pub wa_message_id: Cow<'a, str>,
    /// Meta's status word.
    pub status: Cow<'a, str>,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// Recipient `wa_id`.
    pub recipient_id: Option<Cow<'a, str>>,
    /// Echo of the send's `biz_opaque_callback_data`.
    pub biz_opaque_callback_data: Option<Cow<'a, str>>,
    /// Pricing, when Meta sent an object.
    pub pricing: Option<Pricing>,
    /// Errors of a `failed` status.
    pub errors: Vec<MetaErrorItem>,
    /// Meta's status object: the exact bytes of the body.
    pub raw: &'a RawValue,
    /// When ingress received the webhook.
    pub received_at: DateTime<Utc>,
}

/// The event body, serialised as the matching `wa_common::contracts::inbound` type.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum EventBody<'a> {
    /// See [`MessageEvent`].
    Message(MessageEvent<'a>),
    /// See [`StatusEvent`].
    Status(StatusEvent<'a>),
    /// See [`InboundTemplateStatus`].
    TemplateStatus(InboundTemplateStatus),
    /// See [`InboundError`].
    Error(InboundError),
    /// See [`InboundOther`].
    Other(InboundOther),
}

impl EventBody<'_> {
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

    /// The business phone number the event is about, when the change named one (metrics label).
    pub fn phone_number_id(&self) -> Option<&str> {
        match self {
            Self::Message(e) => e.source.phone_number_id.as_deref(),
            Self::Status(e) => e.source.phone_number_id.as_deref(),
            Self::TemplateStatus(e) => e.source.phone_number_id.as_deref(),
            Self::Error(e) => e.source.phone_number_id.as_deref(),
            Self::Other(e) => e.source.phone_number_id.as_deref(),
        }
    }
}

/// One event to publish on `whatsapp.events`.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// Routing key (`inbound.message`, …), always one with a bound queue.
    pub routing_key: String,
    /// Stable id for consumers to dedupe Meta's redeliveries (same item → same id).
    pub dedupe_id: String,
    /// The event.
    pub body: EventBody<'a>,
}

/// Everything read from one webhook body.
#[derive(Debug, Clone, Default)]
pub struct Split<'a> {
    /// Events, in the order Meta listed the items.
    pub events: Vec<Event<'a>>,
    /// Items that could not be read (the body must then be quarantined as well).
    pub problems: Vec<Problem>,
}

/// Reads `body` (the exact signed bytes) into events; `received_at` stamps every event.
///
/// Errors only when the body as a whole is not a WhatsApp webhook; item-level trouble is
/// reported in [`Split::problems`] beside the events that could be read.
pub fn split_webhook(body: &[u8], received_at: DateTime<Utc>) -> Result<Split<'_>, Unreadable> {
    // The typed pass below skips over what it does not need without checking number ranges or
    // escapes, so the body is first checked exactly as a `Value` parse would check it (without
    // building one): whatever `Value` refuses is refused here too, with the same message.
    serde_json::from_slice::<Valid>(body).map_err(|e| Unreadable::NotJson(e.to_string()))?;
    let text = std::str::from_utf8(body).map_err(|e| Unreadable::NotJson(e.to_string()))?;
    let Obj(root) = parse::<Obj<Root<'_>>>(text).map_err(Unreadable::NotJson)?;
    let Some(root) = root else {
        return Err(Unreadable::NotWhatsApp("top level is not an object".into()));
    };
    match root.object {
        Some(object) if object.as_str().as_deref() == Some(WHATSAPP_OBJECT) => {}
        Some(other) => {
            return Err(Unreadable::NotWhatsApp(format!(
                "object is {}, expected {WHATSAPP_OBJECT:?}",
                short(&other.to_value())
            )));
        }
        None => return Err(Unreadable::NotWhatsApp("object is missing".into())),
    }
    let Some(List::Items(entries)) = root.entry else {
        return Err(Unreadable::NotWhatsApp(
            "entry is missing or not an array".into(),
        ));
    };

    let mut split = Split::default();
    for (e, Obj(entry)) in entries.into_iter().enumerate() {
        let path = format!("entry[{e}]");
        let Some(entry) = entry else {
            split.problem(&path, "not an object");
            continue;
        };
        let Some(waba_id) = entry.id.and_then(Lax::id_string) else {
            split.problem(&path, "id is missing or not a string");
            continue;
        };
        let Some(List::Items(changes)) = entry.changes else {
            split.problem(&path, "changes is missing or not an array");
            continue;
        };
        for (c, Obj(change)) in changes.into_iter().enumerate() {
            let path = format!("{path}.changes[{c}]");
            let change = change.unwrap_or_default();
            let Some(field) = change.field.and_then(Lax::as_str) else {
                split.problem(&path, "field is missing or not a string");
                continue;
            };
            let Some(value) = change.value else {
                split.problem(&path, "value is missing");
                continue;
            };
            let Obj(lists) = match parse::<Obj<ChangeValue<'_>>>(value.text()) {
                Ok(lists) => lists,
                Err(reason) => {
                    split.problem(&format!("{path}.value"), reason);
                    continue;
                }
            };
            let lists = lists.unwrap_or_default();
            let source = lists.source(&waba_id);
            let mut cx = ChangeContext {
                split: &mut split,
                path: &path,
                source: &source,
                received_at,
            };
            match &*field {
                FIELD_MESSAGES => cx.messages_change(value, lists),
                FIELD_TEMPLATE_STATUS => cx.template_status_change(value),
                other => cx.other_change(other, value),
            }
        }
    }
    Ok(split)
}

impl<'a> Split<'a> {
    fn problem(&mut self, path: &str, reason: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_owned(),
            reason: reason.into(),
        });
    }

    fn push(&mut self, routing_key: &str, dedupe_id: String, body: EventBody<'a>) {
        self.events.push(Event {
            routing_key: routing_key.to_owned(),
            dedupe_id,
            body,
        });
    }
}

struct ChangeContext<'s, 'a> {
    split: &'s mut Split<'a>,
    path: &'s str,
    source: &'s Source<'a>,
    received_at: DateTime<Utc>,
}

/// Reads one item of a `messages` change into an event (or the reason it cannot be one).
type ReadItem<'s, 'a> = fn(&ChangeContext<'s, 'a>, Item<'a>, &[Obj<Contact<'a>>]) -> ItemResult<'a>;
/// An event with its routing key and dedupe id, or why the item is unreadable.
type ItemResult<'a> = Result<(&'static str, String, EventBody<'a>), String>;

impl<'a> ChangeContext<'_, 'a> {
    /// `messages`: every message, status and value-level error; a change with none of them (a
    /// shape we do not know yet) is kept whole as `inbound.unknown`.
    fn messages_change(&mut self, value: Lax<'a>, lists: ChangeValue<'a>) {
        let mut items = 0_usize;
        let contacts = match &lists.contacts {
            Some(List::Items(contacts)) => contacts.as_slice(),
            _ => &[],
        };
        // Each list with the function that reads one of its items into an event.
        let readers: [(&str, Option<List<Lax<'a>>>, ReadItem<'_, 'a>); 3] = [
            ("messages", lists.messages, Self::message),
            ("statuses", lists.statuses, Self::status),
            ("errors", lists.errors, Self::value_error),
        ];
        for (key, list, read) in readers {
            match list {
                None | Some(List::Null) => {}
                Some(List::Items(list)) => {
                    for (i, raw) in list.into_iter().enumerate() {
                        items += 1;
                        let read =
                            parse::<Obj<ItemFields<'a>>>(raw.text()).and_then(|Obj(fields)| {
                                let item = Item {
                                    raw,
                                    fields: fields.unwrap_or_default(),
                                };
                                read(self, item, contacts)
                            });
                        match read {
                            Ok((routing_key, dedupe_id, body)) => {
                                self.split.push(routing_key, dedupe_id, body);
                            }
                            Err(reason) => self
                                .split
                                .problem(&format!("{}.value.{key}[{i}]", self.path), reason),
                        }
                    }
                }
                Some(List::Other) => {
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

    fn message(&self, item: Item<'a>, contacts: &[Obj<Contact<'a>>]) -> ItemResult<'a> {
        let wa_message_id = required_str(item.fields.id, "id")?;
        let from = item
            .fields
            .from
            .and_then(Lax::id_string)
            .unwrap_or_default();
        let contact = matching_contact(contacts, &from);
        let from_user_id = item
            .fields
            .from_user_id
            .and_then(Lax::id_string)
            .or_else(|| contact.and_then(|c| c.user_id).and_then(Lax::id_string));
        let profile_name = contact
            .and_then(|c| c.profile.as_ref())
            .and_then(|Obj(profile)| profile.as_ref())
            .and_then(|profile| profile.name)
            .and_then(Lax::as_str);
        let message = MessageEvent {
            source: self.source.clone(),
            wa_message_id,
            from,
            from_user_id,
            profile_name,
            timestamp: required_timestamp(item.fields.timestamp)?,
            message_type: required_str(item.fields.kind, "type")?,
            raw: item.raw.0,
            received_at: self.received_at,
        };
        let dedupe_id = format!("message:{}", message.wa_message_id);
        Ok((
            routing::INBOUND_MESSAGE,
            dedupe_id,
            EventBody::Message(message),
        ))
    }

    fn status(&self, item: Item<'a>, _contacts: &[Obj<Contact<'a>>]) -> ItemResult<'a> {
        let errors = match item.fields.errors {
            None | Some(List::Null) => Vec::new(),
            Some(List::Items(list)) => list
                .into_iter()
                .enumerate()
                .map(|(i, e)| meta_error(&e.to_value()).map_err(|r| format!("errors[{i}]: {r}")))
                .collect::<Result<_, _>>()?,
            Some(List::Other) => return Err("errors is not an array".into()),
        };
        let status = StatusEvent {
            source: self.source.clone(),
            wa_message_id: required_str(item.fields.id, "id")?,
            status: required_str(item.fields.status, "status")?,
            timestamp: required_timestamp(item.fields.timestamp)?,
            recipient_id: item.fields.recipient_id.and_then(Lax::id_string),
            biz_opaque_callback_data: item.fields.biz_opaque_callback_data.and_then(Lax::as_str),
            pricing: item.fields.pricing.and_then(|Obj(p)| p).map(|p| Pricing {
                billable: p.billable.and_then(Lax::as_bool),
                pricing_model: p.pricing_model.and_then(Lax::as_string),
                kind: p.kind.and_then(Lax::as_string),
                category: p.category.and_then(Lax::as_string),
            }),
            errors,
            raw: item.raw.0,
            received_at: self.received_at,
        };
        let dedupe_id = format!(
            "status:{}:{}:{}",
            status.wa_message_id,
            status.status,
            status.timestamp.timestamp()
        );
        Ok((
            routing::INBOUND_STATUS,
            dedupe_id,
            EventBody::Status(status),
        ))
    }

    fn value_error(&self, item: Item<'a>, _contacts: &[Obj<Contact<'a>>]) -> ItemResult<'a> {
        let item = item.raw.to_value();
        let error = meta_error(&item)?;
        let dedupe_id = content_id("error", &self.source.waba_id, &item);
        let event = InboundError {
            source: self.source.to_contract(),
            error,
            raw: item,
            received_at: self.received_at,
        };
        Ok((routing::INBOUND_ERROR, dedupe_id, EventBody::Error(event)))
    }

    fn template_status_change(&mut self, value: Lax<'a>) {
        let value = value.to_value();
        let read = || -> Result<InboundTemplateStatus, String> {
            Ok(InboundTemplateStatus {
                source: self.source.to_contract(),
                event: required_value_str(&value, "event")?,
                message_template_id: match value.get("message_template_id") {
                    None | Some(Value::Null) => None,
                    Some(id) => Some(integer(id).ok_or("message_template_id is not an integer")?),
                },
                message_template_name: required_value_str(&value, "message_template_name")?,
                message_template_language: required_value_str(&value, "message_template_language")?,
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
                let dedupe_id = content_id("template_status", &self.source.waba_id, &value);
                self.split.push(
                    routing::INBOUND_TEMPLATE_STATUS,
                    dedupe_id,
                    EventBody::TemplateStatus(event),
                );
            }
            Err(reason) => self.split.problem(&format!("{}.value", self.path), reason),
        }
    }

    /// Any other field, verbatim; fields without a binding go to `inbound.unknown` (still carrying
    /// the real field name) so nothing is unroutable.
    fn other_change(&mut self, field: &str, value: Lax<'a>) {
        let routing_key = if field != FIELD_UNKNOWN && OTHER_WEBHOOK_FIELDS.contains(&field) {
            routing::inbound_other(field)
        } else {
            routing::inbound_other(FIELD_UNKNOWN)
        };
        let value = value.to_value();
        let dedupe_id = content_id(field, &self.source.waba_id, &value);
        let event = InboundOther {
            source: self.source.to_contract(),
            field: field.to_owned(),
            raw: value,
            received_at: self.received_at,
        };
        self.split
            .push(&routing_key, dedupe_id, EventBody::Other(event));
    }
}

/// The contact whose `wa_id` is `from`; else the only contact, when the phone number is missing
/// on either side (usernames may leave `wa_id` empty) so it cannot contradict the sender.
fn matching_contact<'c, 'a>(
    contacts: &'c [Obj<Contact<'a>>],
    from: &str,
) -> Option<&'c Contact<'a>> {
    // A contact that is not an object counts as one without a `wa_id`, as `Value::get` sees it.
    let wa_id = |c: &Obj<Contact<'a>>| {
        c.0.as_ref()
            .and_then(|c| c.wa_id)
            .and_then(Lax::as_str)
            .unwrap_or_default()
    };
    let found = contacts
        .iter()
        .find(|c| !from.is_empty() && wa_id(c) == from)
        .or(match contacts {
            [only] if from.is_empty() || wa_id(only).is_empty() => Some(only),
            _ => None,
        });
    static NO_FIELDS: Contact<'static> = Contact {
        wa_id: None,
        user_id: None,
        profile: None,
    };
    found.map(|Obj(contact)| contact.as_ref().unwrap_or(&NO_FIELDS))
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

/// A string field, or a number Meta sent where it usually sends a string.
fn id_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn required_value_str(item: &Value, key: &str) -> Result<String, String> {
    match item.get(key) {
        Some(value) => id_string(value)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("{key} is not a non-empty string")),
        None => Err(format!("{key} is missing")),
    }
}

fn required_str<'a>(field: Option<Lax<'a>>, key: &str) -> Result<Cow<'a, str>, String> {
    match field {
        Some(value) => value
            .id_string()
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
fn required_timestamp(field: Option<Lax<'_>>) -> Result<DateTime<Utc>, String> {
    let value = field.ok_or("timestamp is missing")?;
    value
        .integer()
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
        .ok_or_else(|| {
            format!(
                "timestamp is not unix seconds: {}",
                short(&value.to_value())
            )
        })
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

// The typed pass. Every type below reads any JSON value without failing: what does not have the
// expected shape is kept as "absent" or "other", which the code above turns into the same
// problems as reading a `Value` would. Duplicate keys keep the last value, as `Value` does.

/// Parses `text` (already checked as JSON) as `T`; the error is for a problem report.
fn parse<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("cannot be read: {e}"))
}

/// The scalar visits of a lenient visitor, all giving `$other`.
macro_rules! other_scalars {
    ($other:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($other)
        }
    };
}

/// Any JSON value, read fully (strings decoded, numbers parsed) as `Value` reads it, but kept
/// nowhere: `serde_json`'s own `IgnoredAny` skips values without those checks.
struct Valid;

impl<'de> Deserialize<'de> for Valid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValidVisitor;
        impl<'de> Visitor<'de> for ValidVisitor {
            type Value = Valid;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Valid, A::Error> {
                while seq.next_element::<Valid>()?.is_some() {}
                Ok(Valid)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Valid, A::Error> {
                while map.next_entry::<Valid, Valid>()?.is_some() {}
                Ok(Valid)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Valid, E> {
                Ok(Valid)
            }
            other_scalars!(Valid);
        }
        deserializer.deserialize_any(ValidVisitor)
    }
}

/// Any JSON value, kept as its exact text; read on demand with `Value`'s semantics.
#[derive(Debug, Clone, Copy)]
struct Lax<'a>(&'a RawValue);

impl<'de: 'a, 'a> Deserialize<'de> for Lax<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(deserializer).map(Lax)
    }
}

impl<'a> Lax<'a> {
    fn text(self) -> &'a str {
        self.0.get()
    }

    /// `Value::as_str`: the string, borrowed unless it holds escapes.
    fn as_str(self) -> Option<Cow<'a, str>> {
        let text = self.text();
        let inner = text.strip_prefix('"')?.strip_suffix('"')?;
        if inner.contains('\\') {
            serde_json::from_str::<String>(text).ok().map(Cow::Owned)
        } else {
            Some(Cow::Borrowed(inner))
        }
    }

    fn as_string(self) -> Option<String> {
        self.as_str().map(Cow::into_owned)
    }

    fn as_bool(self) -> Option<bool> {
        match self.text() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }

    fn number(self) -> Option<serde_json::Number> {
        let first = self.text().bytes().next()?;
        if first == b'-' || first.is_ascii_digit() {
            serde_json::from_str(self.text()).ok()
        } else {
            None
        }
    }

    /// [`id_string`]: a string, or a number's text as `Value` prints it.
    fn id_string(self) -> Option<Cow<'a, str>> {
        self.as_str()
            .or_else(|| self.number().map(|n| Cow::Owned(n.to_string())))
    }

    /// [`integer`]: a JSON integer or a string of digits.
    fn integer(self) -> Option<i64> {
        match self.number() {
            Some(n) => n.as_i64(),
            None => self.as_str()?.trim().parse().ok(),
        }
    }

    /// The value as a `Value`, for the rare kinds and for error messages.
    fn to_value(self) -> Value {
        // The body was checked as a whole, so every part of it parses; `Null` is unreachable.
        serde_json::from_str(self.text()).unwrap_or(Value::Null)
    }
}

/// A JSON value read where an array of `T` is expected.
#[derive(Debug)]
enum List<T> {
    /// `null`.
    Null,
    /// An array.
    Items(Vec<T>),
    /// Anything else.
    Other,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(List::Items(items))
            }
            fn visit_unit<E: de::Error>(self) -> Result<List<T>, E> {
                Ok(List::Null)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<List<T>, A::Error> {
                skip_map(map).map(|()| List::Other)
            }
            other_scalars!(List::Other);
        }
        deserializer.deserialize_any(ListVisitor(PhantomData))
    }
}

/// A JSON value read where an object of shape `T` is expected; `None` when it is not an object.
#[derive(Debug)]
struct Obj<T>(Option<T>);

/// An object shape read key by key (unknown keys skipped, a repeated key overwrites).
trait Fields<'de>: Default {
    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error>;
}

impl<'de, T: Fields<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjVisitor<T>(PhantomData<T>);
        impl<'de, T: Fields<'de>> Visitor<'de> for ObjVisitor<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Obj<T>, A::Error> {
                let mut fields = T::default();
                while let Some(Key(key)) = map.next_key()? {
                    fields.field(&key, &mut map)?;
                }
                Ok(Obj(Some(fields)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Obj<T>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Obj(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Obj<T>, E> {
                Ok(Obj(None))
            }
            other_scalars!(Obj(None));
        }
        deserializer.deserialize_any(ObjVisitor(PhantomData))
    }
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// An object key, borrowed unless it holds escapes (then decoded, as `Value` keys are).
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Reads the next value into `slot` (a repeated key overwrites, as in `Value`).
fn set<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
    slot: &mut Option<T>,
    map: &mut A,
) -> Result<(), A::Error> {
    *slot = Some(map.next_value()?);
    Ok(())
}

fn skip<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value::<IgnoredAny>().map(drop)
}

/// Declares an object shape read key by key: each field, its type and the JSON key it comes from.
macro_rules! fields {
    ($(#[$meta:meta])* struct $name:ident { $($field:ident: $ty:ty = $key:literal,)* }) => {
        $(#[$meta])*
        #[derive(Default)]
        struct $name<'a> {
            $($field: Option<$ty>,)*
        }

        impl<'de: 'a, 'a> Fields<'de> for $name<'a> {
            fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
                match key {
                    $($key => set(&mut self.$field, map),)*
                    _ => skip(map),
                }
            }
        }
    };
}

fields! {
    /// The envelope: `{"object": …, "entry": [...]}`.
    struct Root {
        object: Lax<'a> = "object",
        entry: List<Obj<Entry<'a>>> = "entry",
    }
}

fields! {
    /// `entry[]`: `{"id": …, "changes": [...]}`.
    struct Entry {
        id: Lax<'a> = "id",
        changes: List<Obj<Change<'a>>> = "changes",
    }
}

fields! {
    /// `changes[]`: `{"field": …, "value": …}`; the value is kept whole (it is the `raw` of the
    /// catch-all events).
    struct Change {
        field: Lax<'a> = "field",
        value: Lax<'a> = "value",
    }
}

fields! {
    /// What a change's value holds for us: tenant data and, for `messages`, the item lists (each
    /// item kept as its exact text).
    struct ChangeValue {
        metadata: Obj<Metadata<'a>> = "metadata",
        display_phone_number: Lax<'a> = "display_phone_number",
        contacts: List<Obj<Contact<'a>>> = "contacts",
        messages: List<Lax<'a>> = "messages",
        statuses: List<Lax<'a>> = "statuses",
        errors: List<Lax<'a>> = "errors",
    }
}

impl<'a> ChangeValue<'a> {
    /// `waba_id` with `metadata.phone_number_id` and the display number (from `metadata`, else
    /// from the value itself, as account and quality updates put it).
    fn source(&self, waba_id: &Cow<'a, str>) -> Source<'a> {
        let metadata = self.metadata.as_ref().and_then(|Obj(m)| m.as_ref());
        Source {
            waba_id: waba_id.clone(),
            phone_number_id: metadata
                .and_then(|m| m.phone_number_id)
                .and_then(Lax::id_string),
            display_phone_number: metadata
                .and_then(|m| m.display_phone_number)
                .or(self.display_phone_number)
                .and_then(Lax::id_string),
        }
    }
}

fields! {
    /// `value.metadata`.
    struct Metadata {
        phone_number_id: Lax<'a> = "phone_number_id",
        display_phone_number: Lax<'a> = "display_phone_number",
    }
}

fields! {
    /// `contacts[]`.
    struct Contact {
        wa_id: Lax<'a> = "wa_id",
        user_id: Lax<'a> = "user_id",
        profile: Obj<Profile<'a>> = "profile",
    }
}

fields! {
    /// `contacts[].profile`.
    struct Profile {
        name: Lax<'a> = "name",
    }
}

/// A message, status or value-level error: its exact text and the fields we read from it.
struct Item<'a> {
    raw: Lax<'a>,
    fields: ItemFields<'a>,
}

fields! {
    /// The fields any message or status needs (one shape for both: they share most keys).
    struct ItemFields {
        id: Lax<'a> = "id",
        from: Lax<'a> = "from",
        from_user_id: Lax<'a> = "from_user_id",
        kind: Lax<'a> = "type",
        timestamp: Lax<'a> = "timestamp",
        status: Lax<'a> = "status",
        recipient_id: Lax<'a> = "recipient_id",
        biz_opaque_callback_data: Lax<'a> = "biz_opaque_callback_data",
        pricing: Obj<PricingFields<'a>> = "pricing",
        errors: List<Lax<'a>> = "errors",
    }
}

fields! {
    /// `statuses[].pricing`.
    struct PricingFields {
        billable: Lax<'a> = "billable",
        pricing_model: Lax<'a> = "pricing_model",
        kind: Lax<'a> = "type",
        category: Lax<'a> = "category",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wa_common::contracts::inbound::{InboundMessage, InboundStatus};

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_226_000, 0).unwrap_or_default()
    }

    /// An event as consumers see it: its routing key, dedupe id and body decoded as its contract.
    #[derive(Debug)]
    struct Published {
        routing_key: String,
        dedupe_id: String,
        body: Decoded,
    }

    #[derive(Debug)]
    enum Decoded {
        Message(InboundMessage),
        Status(InboundStatus),
        TemplateStatus(InboundTemplateStatus),
        Error(InboundError),
        Other(InboundOther),
    }

    impl Decoded {
        fn source(&self) -> &EventSource {
            match self {
                Self::Message(e) => &e.source,
                Self::Status(e) => &e.source,
                Self::TemplateStatus(e) => &e.source,
                Self::Error(e) => &e.source,
                Self::Other(e) => &e.source,
            }
        }
    }

    struct Read {
        events: Vec<Published>,
        problems: Vec<Problem>,
    }

    /// Decodes `event` as its contract, checking that the contract reads every field of it and
    /// writes back the same JSON (so the borrowed shapes cannot drift from the contracts).
    fn decode(event: &Event<'_>) -> Decoded {
        fn exact<T: serde::de::DeserializeOwned + Serialize>(bytes: &[u8]) -> T {
            let decoded: T = serde_json::from_slice(bytes).expect("decodes as its contract");
            let written: Value = serde_json::from_slice(bytes).expect("JSON");
            assert_eq!(serde_json::to_value(&decoded).expect("serialises"), written);
            decoded
        }
        let bytes = serde_json::to_vec(&event.body).expect("serialises");
        match event.body.kind() {
            EventKind::Message => Decoded::Message(exact(&bytes)),
            EventKind::Status => Decoded::Status(exact(&bytes)),
            EventKind::TemplateStatus => Decoded::TemplateStatus(exact(&bytes)),
            EventKind::Error => Decoded::Error(exact(&bytes)),
            EventKind::Other => Decoded::Other(exact(&bytes)),
        }
    }

    fn read(body: &[u8]) -> Read {
        let split = split_webhook(body, now()).expect("readable");
        Read {
            events: split
                .events
                .iter()
                .map(|event| Published {
                    routing_key: event.routing_key.clone(),
                    dedupe_id: event.dedupe_id.clone(),
                    body: decode(event),
                })
                .collect(),
            problems: split.problems,
        }
    }

    fn split(body: &Value) -> Read {
        read(body.to_string().as_bytes())
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
        let Decoded::Message(message) = &event.body else {
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
        let Decoded::Status(failed) = &split.events[2].body else {
            panic!("not a status")
        };
        assert_eq!(failed.errors[0].code, 131_047);
        assert_eq!(failed.errors[0].details.as_deref(), Some("window"));
        let Decoded::Status(sent) = &split.events[3].body else {
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
                Decoded::Message(m) => m.profile_name.clone(),
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
        let Decoded::TemplateStatus(t) = &split.events[0].body else {
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
        let Decoded::Other(unknown) = &split.events[2].body else {
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
            split_webhook(b"hello", now()).err().map(|e| e.code()),
            Some("not_json")
        );
        assert_eq!(
            split_webhook(b"[1,2]", now()).err().map(|e| e.code()),
            Some("not_whatsapp")
        );
        assert_eq!(
            split_webhook(br#"{"object":"page","entry":[]}"#, now())
                .err()
                .map(|e| e.code()),
            Some("not_whatsapp")
        );
        assert_eq!(
            split_webhook(br#"{"object":"whatsapp_business_account"}"#, now())
                .err()
                .map(|e| e.code()),
            Some("not_whatsapp")
        );
    }

    #[test]
    fn a_message_raw_is_metas_exact_bytes_with_escapes_and_key_order() {
        let item = r#"{"type":"text","id":"wamid.Z","from":"62811","timestamp":"1767225600","text":{"body":"\u0627\u0644 caf\u00e9"}}"#;
        let body = format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{{"messages":[{item}]}}}}]}}]}}"#
        );

        let split = split_webhook(body.as_bytes(), now()).expect("readable");

        let published = serde_json::to_string(&split.events[0].body).expect("serialises");
        assert!(
            published.contains(&format!(r#""raw":{item},"#)),
            "{published}"
        );
    }

    #[test]
    fn a_repeated_key_counts_with_its_last_value_as_in_any_json_reader() {
        let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"statuses":[{"id":"wamid.old","id":"wamid.new","status":"read","timestamp":"1767226000"}]}}]}]}"#;

        let read = read(body);

        assert_eq!(read.events[0].dedupe_id, "status:wamid.new:read:1767226000");
    }

    #[test]
    fn json_that_a_full_parser_refuses_is_refused_even_where_the_split_skips_it() {
        for bad in [r#""\ud800""#, "1e400"] {
            let body = format!(
                r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{{"x":{bad}}}}}]}}]}}"#
            );
            assert_eq!(
                split_webhook(body.as_bytes(), now())
                    .err()
                    .map(|e| e.code()),
                Some("not_json"),
                "{bad}"
            );
        }
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

//! Events ingress publishes on `whatsapp.events`, one per item of a webhook (our design).
//!
//! Each carries what consumers need to route it (`waba_id`, `phone_number_id` for tenant
//! resolution) plus Meta's raw JSON for that item in `raw`, so nothing Meta sent is lost even
//! where our typed fields do not cover it.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Contract;

/// Where an event came from: resolves the tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventSource {
    /// WhatsApp Business Account id (`entry[].id`).
    pub waba_id: String,
    /// Business phone number id (`value.metadata.phone_number_id`), when the field has one.
    pub phone_number_id: Option<String>,
    /// Business display number, when present.
    pub display_phone_number: Option<String>,
}

/// `inbound.message`: one message a user sent to a business number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InboundMessage {
    /// Tenant resolution data.
    pub source: EventSource,
    /// Meta's wamid; the dedupe key.
    pub wa_message_id: String,
    /// Sender's `wa_id` (digits, no `+`); may be empty once usernames launch.
    pub from: String,
    /// Sender's business-scoped user id, when Meta sends one.
    pub from_user_id: Option<String>,
    /// Sender's WhatsApp profile name, from `contacts[]`.
    pub profile_name: Option<String>,
    /// When the user sent it (Meta's timestamp); the 24-hour window starts here.
    pub timestamp: DateTime<Utc>,
    /// Meta's type word: `text`, `image`, `button`, `interactive`, `unsupported`, …
    pub message_type: String,
    /// Meta's message object, verbatim.
    pub raw: Value,
    /// When ingress received the webhook.
    pub received_at: DateTime<Utc>,
}

impl Contract for InboundMessage {
    const SCHEMA_NAME: &'static str = "inbound-message";
}

/// An error object as Meta puts it in statuses and `value.errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MetaErrorItem {
    /// Graph error code, e.g. 131047.
    pub code: i64,
    /// Title.
    pub title: Option<String>,
    /// Message (same as title since v16).
    pub message: Option<String>,
    /// `error_data.details`.
    pub details: Option<String>,
}

/// Pricing of a status (`statuses[].pricing`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Pricing {
    /// Deprecated by Meta, still sent.
    pub billable: Option<bool>,
    /// `PMP` (per-message) or `CBP`.
    pub pricing_model: Option<String>,
    /// `regular`, `free_customer_service`, `free_entry_point`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `utility`, `marketing`, `authentication`, `service`, …
    pub category: Option<String>,
}

/// `inbound.status`: one status of a message we sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InboundStatus {
    /// Tenant resolution data.
    pub source: EventSource,
    /// The wamid the sender got back from Meta.
    pub wa_message_id: String,
    /// Meta's status word: `sent`, `delivered`, `read`, `failed`, `played`.
    pub status: String,
    /// When it happened (Meta's timestamp).
    pub timestamp: DateTime<Utc>,
    /// Recipient `wa_id`.
    pub recipient_id: Option<String>,
    /// Echo of the send's `biz_opaque_callback_data`.
    pub biz_opaque_callback_data: Option<String>,
    /// Pricing, on `sent` and one of `delivered`/`read`.
    pub pricing: Option<Pricing>,
    /// Errors of a `failed` status.
    #[serde(default)]
    pub errors: Vec<MetaErrorItem>,
    /// Meta's status object, verbatim.
    pub raw: Value,
    /// When ingress received the webhook.
    pub received_at: DateTime<Utc>,
}

impl Contract for InboundStatus {
    const SCHEMA_NAME: &'static str = "inbound-status";
}

/// `inbound.template_status`: a template's review or quality state changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InboundTemplateStatus {
    /// Tenant resolution data (`waba_id`).
    pub source: EventSource,
    /// `APPROVED`, `REJECTED`, `PAUSED`, `DISABLED`, …
    pub event: String,
    /// Meta's template id (a JSON number in the webhook).
    pub message_template_id: Option<i64>,
    /// Template name.
    pub message_template_name: String,
    /// Template language.
    pub message_template_language: String,
    /// Reason (`NONE`, `INVALID_FORMAT`, …).
    pub reason: Option<String>,
    /// Meta's value object, verbatim (rejection_info, other_info, …).
    pub raw: Value,
    /// When ingress received the webhook.
    pub received_at: DateTime<Utc>,
}

impl Contract for InboundTemplateStatus {
    const SCHEMA_NAME: &'static str = "inbound-template-status";
}

/// `inbound.error`: a value-level error of a `messages` webhook (system, app or account problem).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InboundError {
    /// Tenant resolution data.
    pub source: EventSource,
    /// The error.
    pub error: MetaErrorItem,
    /// Meta's error object, verbatim.
    pub raw: Value,
    /// When ingress received the webhook.
    pub received_at: DateTime<Utc>,
}

impl Contract for InboundError {
    const SCHEMA_NAME: &'static str = "inbound-error";
}

/// `inbound.<field>`: any other webhook field (account, quality, category updates, …), verbatim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InboundOther {
    /// Tenant resolution data.
    pub source: EventSource,
    /// Meta's `changes[].field`.
    pub field: String,
    /// Meta's `changes[].value`, verbatim.
    pub raw: Value,
    /// When ingress received the webhook.
    pub received_at: DateTime<Utc>,
}

impl Contract for InboundOther {
    const SCHEMA_NAME: &'static str = "inbound-other";
}

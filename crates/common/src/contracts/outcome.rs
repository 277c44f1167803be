//! Outcome events published by the sender: `outbound.accepted` and `outbound.failed`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Reference;
use super::send_job::OutboundMessage;
use crate::Contract;
use crate::ids::{JobId, TenantId};

/// Meta accepted the job (not delivered yet; statuses follow as `outbound.status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutboundAccepted {
    /// The job's idempotency key.
    pub job_id: JobId,
    /// The job's tenant.
    pub tenant_id: TenantId,
    /// Recipient as sent to Meta (E.164).
    pub to: String,
    /// Meta's message id; statuses refer to it.
    pub wa_message_id: String,
    /// When Meta answered.
    pub accepted_at: DateTime<Utc>,
    /// Graph calls made for this job, this one included.
    pub attempts: u32,
    /// The job's reference.
    pub reference: Option<Reference>,
    /// The message as sent, so the conversation history shows both directions; absent when the
    /// sender re-publishes an outcome it recorded earlier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<OutboundMessage>,
}

impl Contract for OutboundAccepted {
    const SCHEMA_NAME: &'static str = "outbound-accepted";
}

/// The job failed for good; nothing more will happen to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutboundFailed {
    /// The job's idempotency key.
    pub job_id: JobId,
    /// The job's tenant.
    pub tenant_id: TenantId,
    /// Recipient as given in the job (normalised when that was possible).
    pub to: String,
    /// Why, as a stable word.
    pub reason: FailureReason,
    /// Graph error code when Meta gave one.
    pub meta_code: Option<i64>,
    /// Human-readable detail (Meta's `error_data.details`, or which field of the job was wrong).
    pub detail: String,
    /// Graph calls made for this job.
    pub attempts: u32,
    /// When we gave up.
    pub failed_at: DateTime<Utc>,
    /// The job's reference.
    pub reference: Option<Reference>,
    /// The message that could not be sent, when the job was readable (see [`OutboundAccepted::message`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<OutboundMessage>,
}

impl Contract for OutboundFailed {
    const SCHEMA_NAME: &'static str = "outbound-failed";
}

/// Why a job failed; a stable snake_case word. Consumers should treat unknown words as `rejected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// Meta could not deliver (131026: not on WhatsApp, old client, or blocked us).
    Undeliverable,
    /// Free-form message outside the 24-hour window (131047); send a template instead.
    WindowClosed,
    /// Template missing, not approved, wrong parameters or format (132000-132016).
    TemplateInvalid,
    /// The template is paused (132015) or disabled (132016) for low quality.
    TemplatePaused,
    /// `to` is not a phone number.
    InvalidRecipient,
    /// `expires_at` passed before the job could be sent.
    Expired,
    /// The job does not satisfy the contract (detail names the field).
    InvalidJob,
    /// Meta rejected the request for another permanent reason (100-series parameters, 131008…).
    Rejected,
    /// Media could not be processed by Meta (131053).
    MediaError,
    /// The user opted out of marketing (131050) or Meta chose not to deliver (131049, 130472).
    MarketingFiltered,
    /// Sending restricted for spam or policy (131048, 368, 131031).
    PolicyRestricted,
    /// Transient errors did not clear within the attempt budget.
    RetriesExhausted,
    /// The tenant's credentials or permissions are wrong and stayed wrong.
    AuthFailed,
    /// Unknown tenant.
    UnknownTenant,
}

impl FailureReason {
    /// The snake_case word, for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Undeliverable => "undeliverable",
            Self::WindowClosed => "window_closed",
            Self::TemplateInvalid => "template_invalid",
            Self::TemplatePaused => "template_paused",
            Self::InvalidRecipient => "invalid_recipient",
            Self::Expired => "expired",
            Self::InvalidJob => "invalid_job",
            Self::Rejected => "rejected",
            Self::MediaError => "media_error",
            Self::MarketingFiltered => "marketing_filtered",
            Self::PolicyRestricted => "policy_restricted",
            Self::RetriesExhausted => "retries_exhausted",
            Self::AuthFailed => "auth_failed",
            Self::UnknownTenant => "unknown_tenant",
        }
    }
}

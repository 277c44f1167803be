//! `outbound.status`: one forward step of an outbound message, published by conversation-sync.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Reference;
use crate::Contract;
use crate::ids::{JobId, TenantId};

/// Delivery status of an outbound message. Ordered: a status only ever moves forward.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Meta sent it to WhatsApp's servers.
    Sent,
    /// It reached the phone.
    Delivered,
    /// The jamaah opened it.
    Read,
    /// It failed (terminal).
    Failed,
}

impl DeliveryStatus {
    /// The snake_case word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
        }
    }

    /// Rank for "only moves forward": sent < delivered < read; failed is terminal and wins
    /// over sent/delivered but not over read (a read message was evidently delivered).
    pub fn rank(self) -> u8 {
        match self {
            Self::Sent => 1,
            Self::Delivered => 2,
            Self::Failed => 3,
            Self::Read => 4,
        }
    }

    /// Parses Meta's status word (`played` counts as `read`).
    pub fn from_meta(word: &str) -> Option<Self> {
        match word {
            "sent" => Some(Self::Sent),
            "delivered" => Some(Self::Delivered),
            "read" | "played" => Some(Self::Read),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// A forward status step, emitted once per step and never backwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutboundStatus {
    /// The message's tenant.
    pub tenant_id: TenantId,
    /// Meta's message id.
    pub wa_message_id: String,
    /// The job that sent it (null for messages sent outside this system).
    pub job_id: Option<JobId>,
    /// The new status.
    pub status: DeliveryStatus,
    /// When Meta says it happened.
    pub timestamp: DateTime<Utc>,
    /// Graph error code of a `failed` status.
    pub meta_code: Option<i64>,
    /// Meta's pricing category (`utility`, `marketing`, `service`, …) when it reported one.
    pub pricing_category: Option<String>,
    /// The job's reference.
    pub reference: Option<Reference>,
}

impl Contract for OutboundStatus {
    const SCHEMA_NAME: &'static str = "outbound-status";
}

//! `agent.notification`: a jamaah wrote; the platform shows it to their agent.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Contract;
use crate::ids::{AgentId, JamaahId, TenantId};

/// Notification for the agent in charge of a jamaah, once per stored inbound message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AgentNotification {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The agent to notify; null for unknown senders (the platform shows it to every agent).
    pub agent_id: Option<AgentId>,
    /// The jamaah who wrote; null for unknown senders.
    pub jamaah_id: Option<JamaahId>,
    /// Short title, e.g. `Pesan WhatsApp baru`.
    pub title: String,
    /// Preview, e.g. `Siti Aminah: kapan jadwal manasik?`.
    pub message: String,
    /// Notification kind for the platform's UI (`info`).
    #[serde(rename = "type")]
    pub kind: String,
    /// `/jamaah/{jamaah_id}/conversations`, null for unknown senders.
    pub action_url: Option<String>,
}

impl Contract for AgentNotification {
    const SCHEMA_NAME: &'static str = "agent-notification";
}

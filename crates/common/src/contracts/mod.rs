//! Every message that travels over AMQP, as serde types (see `../shared/contracts.md` and `proto/`).
//!
//! Unknown JSON fields are ignored (serde's default), so producers may add fields compatibly.

pub mod inbound;
pub mod notification;
pub mod outcome;
pub mod platform;
pub mod send_job;
pub mod status;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Opaque reference the producer attaches to a job; echoed in every outcome and status event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Reference {
    /// What the job is about, e.g. `payment_reminder`.
    pub kind: String,
    /// The producer's id of that thing, e.g. `sched-42`.
    pub id: String,
}

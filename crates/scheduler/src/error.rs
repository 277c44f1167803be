//! Errors of the tick and of event handling, split into retryable and permanent.

use wa_amqp::PublishError;

/// Why a tick (or one claimed batch) did not complete; the claimed rows stay open and the next
/// tick tries again (nothing was marked queued).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TickError {
    /// No database connection.
    #[error("no database connection")]
    Pool(#[from] diesel_async::pooled_connection::deadpool::PoolError),
    /// A query failed.
    #[error("reminder query failed")]
    Query(#[from] diesel::result::Error),
    /// The broker did not confirm the send-jobs.
    #[error("publishing send-jobs failed")]
    Publish(#[from] PublishError),
}

/// Why an event could not be handled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError {
    /// The message does not satisfy its contract (dead-lettered, reason `invalid_payload`).
    #[error(transparent)]
    Invalid(#[from] wa_common::ContractError),
    /// The tenant is not configured here (dead-lettered, reason `unknown_tenant`).
    #[error("unknown tenant {0}")]
    UnknownTenant(String),
    /// No database connection (retried).
    #[error("no database connection")]
    Pool(#[from] diesel_async::pooled_connection::deadpool::PoolError),
    /// A query failed (retried).
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// The broker did not confirm a reply (retried).
    #[error("publishing failed: {0}")]
    Publish(#[from] PublishError),
}

impl HandleError {
    /// Permanent errors are dead-lettered; the rest are retried later.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Invalid(_) | Self::UnknownTenant(_))
    }

    /// Stable snake_case reason for the dead-letter header and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid_payload",
            Self::UnknownTenant(_) => "unknown_tenant",
            Self::Pool(_) | Self::Query(_) => "database",
            Self::Publish(_) => "publish",
        }
    }
}

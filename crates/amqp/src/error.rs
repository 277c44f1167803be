//! Error types of this crate: one enum for connection, topology and consume-loop failures, and one
//! for publishing, because callers react differently (a publish error becomes a 5xx or a retry of
//! the caller's own work; an [`AmqpError`] usually ends the process).

use std::time::Duration;

/// Failures of connecting, declaring and consuming.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AmqpError {
    /// The broker could not be reached or refused us (after the bounded initial retries).
    #[error("could not connect to the broker at {url}")]
    Connect {
        /// The broker URL with its password redacted.
        url: String,
        /// What lapin reported on the last attempt.
        #[source]
        source: lapin::Error,
    },
    /// The URL is not a valid `amqp://` / `amqps://` URL.
    #[error("invalid AMQP URL {url}: {reason}")]
    InvalidUrl {
        /// The URL with its password redacted.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Declaring an exchange, a queue or a binding failed (often: an existing entity with other arguments).
    #[error("could not declare {what}")]
    Declare {
        /// Which entity, e.g. `queue sender.send`.
        what: String,
        /// The broker's answer.
        #[source]
        source: lapin::Error,
    },
    /// Any other channel-level operation failed.
    #[error("AMQP operation {operation} failed")]
    Channel {
        /// The AMQP method, e.g. `basic.qos`.
        operation: &'static str,
        /// The broker's or lapin's answer.
        #[source]
        source: lapin::Error,
    },
    /// The connection is closed or failed for good (automatic recovery gave up): restart the process.
    #[error("the AMQP connection is gone and will not recover")]
    ConnectionLost,
}

/// Failures of a confirmed publish. Every variant means "not known to be stored": retry or fail the caller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// No queue is bound for this exchange and routing key (the broker returned the mandatory message).
    #[error(
        "unroutable: no queue is bound to exchange {exchange:?} for routing key {routing_key:?}"
    )]
    Unroutable {
        /// Target exchange.
        exchange: String,
        /// Routing key used.
        routing_key: String,
    },
    /// The broker refused to take responsibility for the message (e.g. a queue rejecting publishes).
    #[error("the broker nacked the message to {exchange:?} / {routing_key:?}")]
    Nacked {
        /// Target exchange.
        exchange: String,
        /// Routing key used.
        routing_key: String,
    },
    /// No confirm arrived in time; the message may or may not be stored.
    #[error("no publisher confirm within {after:?} for {exchange:?} / {routing_key:?}")]
    Timeout {
        /// Target exchange.
        exchange: String,
        /// Routing key used.
        routing_key: String,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The channel was not in confirm mode, so the broker's verdict is unknown (a bug of ours).
    #[error("the publishing channel is not in confirm mode")]
    NotConfirmed,
    /// The channel or connection failed (closed, recovering, or a channel error such as a missing exchange).
    #[error("publishing channel failed")]
    Channel(#[from] lapin::Error),
    /// The body could not be serialised to JSON.
    #[error("could not serialise the message body")]
    Serialize(#[from] serde_json::Error),
}

//! Queue depth for metrics and the ops CLI, over AMQP (no management plugin needed).

use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use crate::error::AmqpError;

/// Messages ready in `queue` (not counting unacked ones), via a passive `queue.declare`.
///
/// A missing queue makes the broker close `channel` (404); use a channel dedicated to such probes.
pub async fn queue_depth(channel: &Channel, queue: &str) -> Result<u32, AmqpError> {
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::default().passive(),
            FieldTable::default(),
        )
        .await
        .map_err(|source| AmqpError::Channel {
            operation: "queue.declare (passive)",
            source,
        })?;
    Ok(declared.message_count())
}

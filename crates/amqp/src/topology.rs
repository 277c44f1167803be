//! Declares [`wa_common::topology::Topology`] on the broker: every exchange durable, every queue a
//! durable quorum queue with all arguments explicit, then the bindings. Idempotent: every service
//! runs it at start, in any order, any number of times.
//!
//! A queue that already exists with *different* arguments makes the broker close the channel with
//! `PRECONDITION_FAILED`; that surfaces as [`AmqpError::Declare`] naming the queue. Changing an
//! argument of a live queue needs a migration (new queue name or delete + redeclare), not a deploy.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use wa_common::topology::{
    DeadLetterPolicy, ExchangeKind as SpecKind, QueueSpec, Topology, exchange,
};

use crate::error::AmqpError;

/// `x-dead-letter-strategy`: the broker re-publishes dead letters with confirms and keeps them
/// until the target queue has them (quorum queues only; needs `x-overflow=reject-publish`).
const AT_LEAST_ONCE: &str = "at-least-once";
/// `x-overflow` required by at-least-once dead-lettering (the default `drop-head` would silently
/// fall back to at-most-once).
const REJECT_PUBLISH: &str = "reject-publish";

/// Declares every exchange, queue and binding of `topology` on `channel`.
///
/// The channel is closed by the broker on the first mismatch; open a fresh one to retry.
#[tracing::instrument(skip_all, fields(exchanges = topology.exchanges.len(), queues = topology.queues.len()))]
pub async fn declare_topology(channel: &Channel, topology: &Topology) -> Result<(), AmqpError> {
    for spec in &topology.exchanges {
        let kind = match spec.kind {
            SpecKind::Topic => ExchangeKind::Topic,
            SpecKind::Direct => ExchangeKind::Direct,
            SpecKind::Fanout => ExchangeKind::Fanout,
        };
        channel
            .exchange_declare(
                spec.name.as_str().into(),
                kind,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|source| AmqpError::Declare {
                what: format!("exchange {}", spec.name),
                source,
            })?;
    }
    for spec in &topology.queues {
        channel
            .queue_declare(
                spec.name.as_str().into(),
                QueueDeclareOptions::durable(),
                queue_arguments(spec),
            )
            .await
            .map_err(|source| AmqpError::Declare {
                what: format!("queue {}", spec.name),
                source,
            })?;
        for (exchange, routing_key) in &spec.bindings {
            channel
                .queue_bind(
                    spec.name.as_str().into(),
                    exchange.as_str().into(),
                    routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|source| AmqpError::Declare {
                    what: format!("binding {exchange} -[{routing_key}]-> {}", spec.name),
                    source,
                })?;
        }
    }
    tracing::info!("topology declared");
    Ok(())
}

/// The `queue.declare` arguments for `spec`: the single place mapping the topology data to
/// RabbitMQ's `x-*` arguments, so 3.10 (no default delivery limit) and 4.x (default 20) agree.
pub fn queue_arguments(spec: &QueueSpec) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long_string("quorum"));
    if let Some(limit) = spec.delivery_limit {
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(limit)),
        );
    }
    let dead_letter_exchange = match &spec.dead_letter {
        DeadLetterPolicy::ToDeadLetterQueue => {
            // Keyed by our own name so `whatsapp.dlx` routes it into `<queue>.dlq`.
            args.insert("x-dead-letter-routing-key".into(), long_string(&spec.name));
            Some(exchange::DEAD_LETTER)
        }
        // No routing key: the message keeps its own (the target queue's name for retry tiers).
        DeadLetterPolicy::ToExchange(target) => Some(target.as_str()),
        DeadLetterPolicy::None => None,
    };
    if let Some(dlx) = dead_letter_exchange {
        args.insert("x-dead-letter-exchange".into(), long_string(dlx));
        args.insert("x-dead-letter-strategy".into(), long_string(AT_LEAST_ONCE));
        args.insert("x-overflow".into(), long_string(REJECT_PUBLISH));
    }
    if let Some(ttl) = spec.message_ttl_ms {
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::try_from(ttl).unwrap_or(i64::MAX)),
        );
    }
    if spec.single_active_consumer {
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    }
    args
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wa_common::topology::{QueueRole, queue, topology};

    fn arg<'a>(args: &'a FieldTable, key: &str) -> Option<&'a AMQPValue> {
        args.inner().get(key)
    }

    fn string_arg(args: &FieldTable, key: &str) -> Option<String> {
        match arg(args, key)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            _ => None,
        }
    }

    #[test]
    fn work_queue_arguments_are_quorum_with_limit_and_at_least_once_dead_lettering() {
        let topology = topology();
        let Some(mut spec) = topology.queue(queue::SYNC_EVENTS).cloned() else {
            panic!("sync.events missing from the topology");
        };
        spec.single_active_consumer = true;
        let args = queue_arguments(&spec);

        assert_eq!(string_arg(&args, "x-queue-type").as_deref(), Some("quorum"));
        assert_eq!(
            arg(&args, "x-delivery-limit"),
            Some(&AMQPValue::LongLongInt(10))
        );
        assert_eq!(
            string_arg(&args, "x-dead-letter-exchange").as_deref(),
            Some("whatsapp.dlx")
        );
        assert_eq!(
            string_arg(&args, "x-dead-letter-routing-key").as_deref(),
            Some("sync.events")
        );
        assert_eq!(
            string_arg(&args, "x-dead-letter-strategy").as_deref(),
            Some("at-least-once")
        );
        assert_eq!(
            string_arg(&args, "x-overflow").as_deref(),
            Some("reject-publish")
        );
        assert_eq!(
            arg(&args, "x-single-active-consumer"),
            Some(&AMQPValue::Boolean(true))
        );
        assert_eq!(arg(&args, "x-message-ttl"), None);
    }

    #[test]
    fn retry_tier_arguments_have_ttl_and_keep_the_routing_key() {
        let topology = topology();
        let Some(spec) = topology.queue("retry.4s").cloned() else {
            panic!("retry.4s missing from the topology");
        };
        let args = queue_arguments(&spec);

        assert_eq!(
            arg(&args, "x-message-ttl"),
            Some(&AMQPValue::LongLongInt(4000))
        );
        assert_eq!(
            string_arg(&args, "x-dead-letter-exchange").as_deref(),
            Some("whatsapp.retry.return")
        );
        assert_eq!(arg(&args, "x-dead-letter-routing-key"), None);
        assert_eq!(
            string_arg(&args, "x-dead-letter-strategy").as_deref(),
            Some("at-least-once")
        );
        assert_eq!(arg(&args, "x-delivery-limit"), None);
        assert_eq!(arg(&args, "x-single-active-consumer"), None);
    }

    #[test]
    fn dead_letter_queue_arguments_have_no_dead_letter_exchange() {
        let topology = topology();
        for spec in topology
            .queues
            .iter()
            .filter(|q| q.role == QueueRole::DeadLetter)
        {
            let args = queue_arguments(spec);
            assert_eq!(
                string_arg(&args, "x-queue-type").as_deref(),
                Some("quorum"),
                "{}",
                spec.name
            );
            assert_eq!(arg(&args, "x-dead-letter-exchange"), None, "{}", spec.name);
            assert_eq!(arg(&args, "x-dead-letter-strategy"), None, "{}", spec.name);
            assert_eq!(arg(&args, "x-overflow"), None, "{}", spec.name);
        }
    }
}

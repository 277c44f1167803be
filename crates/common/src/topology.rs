//! The broker topology as plain data: the one place that names every exchange, queue, binding and
//! queue argument. `wa_amqp` declares it; `catalogue` documents it in `proto/asyncapi.yaml`.
//!
//! Every durable queue is a quorum queue with every argument explicit (delivery limit, dead-letter
//! exchange and strategy), so RabbitMQ 3.10 here and 4.x in production behave the same.
//! Dead letters: each work queue `Q` dead-letters to exchange [`exchange::DEAD_LETTER`] with routing
//! key `Q`, which feeds `Q.dlq`. Consumers publish their own dead letters there with a reason header;
//! the broker does the same when the delivery limit is exceeded (a message that crashes its consumer
//! over and over), so nothing is dropped and nothing is redelivered forever.
//! Delayed retries: fanout exchanges `whatsapp.retry.<tier>` feed TTL queues `retry.<tier>`, which
//! dead-letter to [`exchange::RETRY_RETURN`] keeping the original routing key (the target queue's
//! name), so a retried message returns to exactly the queue it came from.

/// Exchange names.
pub mod exchange {
    /// Send-jobs from the platform and the scheduler (contract).
    pub const COMMANDS: &str = "whatsapp.commands";
    /// Directory, payment and departure events from the platform (contract).
    pub const PLATFORM_EVENTS: &str = "platform.events";
    /// Inbound webhooks, send outcomes, statuses and agent notifications (contract).
    pub const WHATSAPP_EVENTS: &str = "whatsapp.events";
    /// Dead letters of every work queue, routed by source queue name.
    pub const DEAD_LETTER: &str = "whatsapp.dlx";
    /// Where expired retry messages go back to their queue (direct, key = queue name).
    pub const RETRY_RETURN: &str = "whatsapp.retry.return";
}

/// Routing keys.
pub mod routing {
    /// A send-job on [`super::exchange::COMMANDS`].
    pub const SEND: &str = "send";
    /// Platform: a jamaah was created or changed.
    pub const JAMAAH_UPSERTED: &str = "jamaah.upserted";
    /// Platform: an instalment was created or changed.
    pub const PAYMENT_SCHEDULE_UPSERTED: &str = "payment_schedule.upserted";
    /// Platform: a payment was recorded.
    pub const PAYMENT_RECORDED: &str = "payment.recorded";
    /// Platform: a package got its departure date.
    pub const DEPARTURE_SCHEDULED: &str = "departure.scheduled";
    /// Platform: a jamaah asked to be forgotten.
    pub const JAMAAH_ERASURE_REQUESTED: &str = "jamaah.erasure_requested";
    /// Ingress: one inbound message from a jamaah.
    pub const INBOUND_MESSAGE: &str = "inbound.message";
    /// Ingress: one status of an outbound message.
    pub const INBOUND_STATUS: &str = "inbound.status";
    /// Ingress: one template review/quality status change.
    pub const INBOUND_TEMPLATE_STATUS: &str = "inbound.template_status";
    /// Ingress: one value-level error of a `messages` webhook.
    pub const INBOUND_ERROR: &str = "inbound.error";
    /// Sender: Meta accepted a job.
    pub const OUTBOUND_ACCEPTED: &str = "outbound.accepted";
    /// Sender: a job failed for good.
    pub const OUTBOUND_FAILED: &str = "outbound.failed";
    /// Conversation-sync: a forward status step of an outbound message.
    pub const OUTBOUND_STATUS: &str = "outbound.status";
    /// Conversation-sync: a jamaah wrote; tell their agent.
    pub const AGENT_NOTIFICATION: &str = "agent.notification";
    /// Ingress: a signed body that is not a WhatsApp payload, kept raw.
    pub const QUARANTINE_WEBHOOK: &str = "quarantine.webhook";

    /// Routing key of any other webhook field Meta sends (`inbound.account_update`, …).
    pub fn inbound_other(field: &str) -> String {
        format!("inbound.{field}")
    }
}

/// Queue names.
pub mod queue {
    /// Send-jobs waiting for the sender.
    pub const SENDER_SEND: &str = "sender.send";
    /// Inbound messages the sender learns the 24-hour window from.
    pub const SENDER_INBOUND: &str = "sender.inbound";
    /// Statuses the sender settles unknown outcomes from.
    pub const SENDER_STATUS: &str = "sender.status";
    /// Prefix of the sender's per-tenant, per-priority dispatch queues.
    pub const SENDER_DISPATCH_PREFIX: &str = "sender.dispatch.";
    /// Everything conversation-sync persists.
    pub const SYNC_EVENTS: &str = "sync.events";
    /// Everything the reminder scheduler reacts to.
    pub const SCHEDULER_EVENTS: &str = "scheduler.events";
    /// Webhook fields no service acts on yet (account, quality, category updates…), kept for audit.
    pub const INBOUND_OTHER: &str = "events.inbound_other";
    /// Signed webhook bodies we could not read, kept raw for a person to look at.
    pub const QUARANTINE: &str = "ingress.quarantine";
    /// Agent notifications, declared by us so none is lost before the platform consumes them.
    pub const PLATFORM_NOTIFICATIONS: &str = "platform.agent_notifications";
    /// Send outcomes and status steps for the platform, declared by us for the same reason.
    pub const PLATFORM_OUTCOMES: &str = "platform.outcomes";

    /// The dead-letter queue of `queue`.
    pub fn dead_letter_of(queue: &str) -> String {
        format!("{queue}{}", super::DEAD_LETTER_SUFFIX)
    }
}

/// Suffix of every dead-letter queue.
pub const DEAD_LETTER_SUFFIX: &str = ".dlq";

/// How often a message may be redelivered (crash, reject with requeue) before the broker
/// dead-letters it. Explicit because the default differs between 3.x (none) and 4.x (20).
pub const DEFAULT_DELIVERY_LIMIT: u32 = 10;

/// AMQP header our consumers set on a dead letter: a stable snake_case reason.
pub const HEADER_DEAD_LETTER_REASON: &str = "x-wa-dead-letter-reason";
/// AMQP header with the human-readable detail (which field, why).
pub const HEADER_DEAD_LETTER_DETAIL: &str = "x-wa-dead-letter-detail";
/// AMQP header with the exchange the message was first published to.
pub const HEADER_ORIGINAL_EXCHANGE: &str = "x-wa-original-exchange";
/// AMQP header with the routing key the message was first published with.
pub const HEADER_ORIGINAL_ROUTING_KEY: &str = "x-wa-original-routing-key";
/// AMQP header counting our own delayed retries of a message.
pub const HEADER_ATTEMPT: &str = "x-wa-attempt";
/// AMQP header with the tenant, so dead letters can be replayed per tenant without parsing bodies.
pub const HEADER_TENANT_ID: &str = "x-wa-tenant-id";
/// AMQP header the sender's intake sets on a job it moves to a dispatch queue: `to` in E.164, so
/// dispatch does not parse the number again.
pub const HEADER_TO_E164: &str = "x-wa-to-e164";

/// Kind of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Routing by dotted pattern.
    Topic,
    /// Routing by exact key.
    Direct,
    /// Every bound queue gets every message.
    Fanout,
}

/// One durable exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeSpec {
    /// Exchange name.
    pub name: String,
    /// Exchange type.
    pub kind: ExchangeKind,
    /// What flows through it.
    pub purpose: &'static str,
}

/// What a queue does with messages that cannot be handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterPolicy {
    /// Dead-letter to [`exchange::DEAD_LETTER`] with the queue's own name as key, into `<queue>.dlq`.
    ToDeadLetterQueue,
    /// Dead-letter (on TTL expiry) to `exchange`, keeping the message's routing key.
    ToExchange(String),
    /// End of the line: a dead-letter queue itself.
    None,
}

/// Role of a queue, used by the ops CLI and the documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRole {
    /// Consumed by a service.
    Work,
    /// Holds messages for a fixed delay, then returns them.
    Retry,
    /// Holds dead letters for a person.
    DeadLetter,
    /// Holds messages nobody consumes automatically (audit, quarantine).
    Holding,
}

/// One durable quorum queue with its bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// Queue name.
    pub name: String,
    /// What it is for.
    pub role: QueueRole,
    /// `(exchange, routing key)` pairs bound to it.
    pub bindings: Vec<(String, String)>,
    /// `x-delivery-limit`, if any.
    pub delivery_limit: Option<u32>,
    /// Dead-letter behaviour.
    pub dead_letter: DeadLetterPolicy,
    /// `x-message-ttl` in milliseconds (retry tiers only).
    pub message_ttl_ms: Option<u64>,
    /// `x-single-active-consumer`: one consumer at a time, broker-managed failover.
    pub single_active_consumer: bool,
    /// Who consumes it and why.
    pub purpose: &'static str,
}

/// The delay tiers of the retry ladder, in seconds: 4^X like Meta's 131056 advice, and the usual
/// capped exponential backoff for everything else.
pub const RETRY_TIERS_SECS: [u64; 5] = [1, 4, 16, 64, 256];

/// Name of the retry tier exchange and queue for a delay.
pub fn retry_tier_name(delay_secs: u64) -> String {
    format!("retry.{delay_secs}s")
}

/// The retry tier a delay of `delay_secs` is rounded up to (the longest tier past the last one).
pub fn retry_tier_for(delay_secs: u64) -> u64 {
    RETRY_TIERS_SECS
        .iter()
        .copied()
        .find(|tier| *tier >= delay_secs)
        .unwrap_or(RETRY_TIERS_SECS[RETRY_TIERS_SECS.len() - 1])
}

/// Exchange to publish a message to for a delayed retry of `delay_secs` (rounded to a tier).
pub fn retry_exchange_for(delay_secs: u64) -> String {
    format!("whatsapp.{}", retry_tier_name(retry_tier_for(delay_secs)))
}

/// The complete topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Exchanges, declared first.
    pub exchanges: Vec<ExchangeSpec>,
    /// Queues with their bindings.
    pub queues: Vec<QueueSpec>,
}

impl Topology {
    /// The queue named `name`.
    pub fn queue(&self, name: &str) -> Option<&QueueSpec> {
        self.queues.iter().find(|q| q.name == name)
    }
}

fn work_queue(
    name: &str,
    purpose: &'static str,
    bindings: &[(&str, &str)],
    single_active_consumer: bool,
) -> QueueSpec {
    let mut bindings: Vec<(String, String)> = bindings
        .iter()
        .map(|(e, k)| ((*e).to_owned(), (*k).to_owned()))
        .collect();
    // Retried messages come back through the return exchange, keyed by queue name.
    bindings.push((exchange::RETRY_RETURN.to_owned(), name.to_owned()));
    QueueSpec {
        name: name.to_owned(),
        role: QueueRole::Work,
        bindings,
        delivery_limit: Some(DEFAULT_DELIVERY_LIMIT),
        dead_letter: DeadLetterPolicy::ToDeadLetterQueue,
        message_ttl_ms: None,
        single_active_consumer,
        purpose,
    }
}

fn holding_queue(
    name: &str,
    purpose: &'static str,
    mut bindings: Vec<(String, String)>,
) -> QueueSpec {
    // Like a work queue, a consumer of a holding queue may ask for a delayed retry; the copy
    // must find its way back instead of waiting in a retry tier for good.
    bindings.push((exchange::RETRY_RETURN.to_owned(), name.to_owned()));
    QueueSpec {
        name: name.to_owned(),
        role: QueueRole::Holding,
        bindings,
        delivery_limit: Some(DEFAULT_DELIVERY_LIMIT),
        dead_letter: DeadLetterPolicy::ToDeadLetterQueue,
        message_ttl_ms: None,
        single_active_consumer: false,
        purpose,
    }
}

/// Webhook fields other than `messages` and `message_template_status_update` that Meta documents;
/// ingress publishes each as `inbound.<field>` and they are kept in [`queue::INBOUND_OTHER`].
pub const OTHER_WEBHOOK_FIELDS: &[&str] = &[
    "account_alerts",
    "account_review_update",
    "account_update",
    "automatic_events",
    "business_capability_update",
    "history",
    "message_template_components_update",
    "message_template_quality_update",
    "partner_solutions",
    "payment_configuration_update",
    "phone_number_name_update",
    "phone_number_quality_update",
    "security",
    "smb_app_state_sync",
    "smb_message_echoes",
    "template_category_update",
    "user_preferences",
    "unknown",
];

/// The sender's dispatch queue of one tenant and priority (`sender.dispatch.<tenant>.<priority>`):
/// single active consumer, so one replica at a time dispatches it (per-recipient order), bound to
/// [`exchange::RETRY_RETURN`] under its own name (intake and retries reach it that way).
/// `priority` is `interactive`, `transactional` or `bulk`.
pub fn sender_dispatch_queue(tenant_id: &str, priority: &str) -> QueueSpec {
    let name = format!("{}{tenant_id}.{priority}", queue::SENDER_DISPATCH_PREFIX);
    let mut spec = work_queue(
        &name,
        "one tenant's send-jobs of one priority, dispatched by one sender replica at a time",
        &[],
        true,
    );
    spec.name = name;
    spec
}

/// The dispatch queues of a tenant (every priority) with their dead-letter queues, declared by
/// the sender at start for every tenant it knows.
pub fn sender_dispatch_topology(tenant_id: &str) -> Topology {
    let mut queues = Vec::new();
    for priority in ["interactive", "transactional", "bulk"] {
        let spec = sender_dispatch_queue(tenant_id, priority);
        queues.push(dead_letter_queue_of(&spec.name));
        queues.push(spec);
    }
    queues.reverse();
    Topology {
        exchanges: Vec::new(),
        queues,
    }
}

fn dead_letter_queue_of(name: &str) -> QueueSpec {
    QueueSpec {
        name: queue::dead_letter_of(name),
        role: QueueRole::DeadLetter,
        bindings: vec![(exchange::DEAD_LETTER.to_owned(), name.to_owned())],
        delivery_limit: None,
        dead_letter: DeadLetterPolicy::None,
        message_ttl_ms: None,
        single_active_consumer: false,
        purpose: "dead letters with their reason, for inspection and replay (ops CLI)",
    }
}

/// Builds the topology every service declares at start (idempotently, in any order).
pub fn topology() -> Topology {
    use exchange::*;
    use routing::*;

    let mut exchanges = vec![
        ExchangeSpec {
            name: COMMANDS.into(),
            kind: ExchangeKind::Topic,
            purpose: "send-jobs",
        },
        ExchangeSpec {
            name: PLATFORM_EVENTS.into(),
            kind: ExchangeKind::Topic,
            purpose: "platform events",
        },
        ExchangeSpec {
            name: WHATSAPP_EVENTS.into(),
            kind: ExchangeKind::Topic,
            purpose: "WhatsApp events",
        },
        ExchangeSpec {
            name: DEAD_LETTER.into(),
            kind: ExchangeKind::Direct,
            purpose: "dead letters by source queue",
        },
        ExchangeSpec {
            name: RETRY_RETURN.into(),
            kind: ExchangeKind::Direct,
            purpose: "delayed retries back to their queue",
        },
    ];

    let mut queues = vec![
        work_queue(
            queue::SENDER_SEND,
            "send-jobs for the sender's intake (one active replica, keeping publish order): validated, then moved to the tenant's dispatch queue",
            &[(COMMANDS, SEND)],
            true,
        ),
        work_queue(
            queue::SENDER_INBOUND,
            "inbound messages, from which the sender learns each recipient's 24-hour window",
            &[(WHATSAPP_EVENTS, INBOUND_MESSAGE)],
            false,
        ),
        work_queue(
            queue::SENDER_STATUS,
            "statuses, from which the sender settles sends whose outcome was unknown",
            &[(WHATSAPP_EVENTS, INBOUND_STATUS)],
            false,
        ),
        work_queue(
            queue::SYNC_EVENTS,
            "conversation history, statuses, directory and erasure for conversation-sync",
            &[
                (WHATSAPP_EVENTS, INBOUND_MESSAGE),
                (WHATSAPP_EVENTS, INBOUND_STATUS),
                (WHATSAPP_EVENTS, OUTBOUND_ACCEPTED),
                (WHATSAPP_EVENTS, OUTBOUND_FAILED),
                (PLATFORM_EVENTS, JAMAAH_UPSERTED),
                (PLATFORM_EVENTS, JAMAAH_ERASURE_REQUESTED),
            ],
            false,
        ),
        work_queue(
            queue::SCHEDULER_EVENTS,
            "directory, schedules, payments, departures, outcomes and template statuses for the scheduler",
            &[
                (PLATFORM_EVENTS, JAMAAH_UPSERTED),
                (PLATFORM_EVENTS, PAYMENT_SCHEDULE_UPSERTED),
                (PLATFORM_EVENTS, PAYMENT_RECORDED),
                (PLATFORM_EVENTS, DEPARTURE_SCHEDULED),
                (PLATFORM_EVENTS, JAMAAH_ERASURE_REQUESTED),
                (WHATSAPP_EVENTS, INBOUND_MESSAGE),
                (WHATSAPP_EVENTS, INBOUND_TEMPLATE_STATUS),
                (WHATSAPP_EVENTS, OUTBOUND_ACCEPTED),
                (WHATSAPP_EVENTS, OUTBOUND_FAILED),
                (WHATSAPP_EVENTS, OUTBOUND_STATUS),
            ],
            false,
        ),
        holding_queue(
            queue::INBOUND_OTHER,
            "webhook fields no service acts on yet, and value-level errors, kept for audit",
            OTHER_WEBHOOK_FIELDS
                .iter()
                .map(|field| routing::inbound_other(field))
                .chain(std::iter::once(INBOUND_ERROR.to_owned()))
                .map(|key| (WHATSAPP_EVENTS.to_owned(), key))
                .collect(),
        ),
        holding_queue(
            queue::PLATFORM_NOTIFICATIONS,
            "agent notifications for the platform backend to consume",
            vec![(WHATSAPP_EVENTS.to_owned(), AGENT_NOTIFICATION.to_owned())],
        ),
        holding_queue(
            queue::PLATFORM_OUTCOMES,
            "accepted/failed outcomes and status steps for the platform backend to consume",
            [OUTBOUND_ACCEPTED, OUTBOUND_FAILED, OUTBOUND_STATUS]
                .iter()
                .map(|key| (WHATSAPP_EVENTS.to_owned(), (*key).to_owned()))
                .collect(),
        ),
        holding_queue(
            queue::QUARANTINE,
            "signed webhook bodies that are not WhatsApp payloads, kept raw",
            vec![(WHATSAPP_EVENTS.to_owned(), QUARANTINE_WEBHOOK.to_owned())],
        ),
    ];

    for delay in RETRY_TIERS_SECS {
        let tier = retry_tier_name(delay);
        let tier_exchange = format!("whatsapp.{tier}");
        exchanges.push(ExchangeSpec {
            name: tier_exchange.clone(),
            kind: ExchangeKind::Fanout,
            purpose: "delayed retry tier",
        });
        queues.push(QueueSpec {
            name: tier,
            role: QueueRole::Retry,
            bindings: vec![(tier_exchange, String::new())],
            delivery_limit: None,
            dead_letter: DeadLetterPolicy::ToExchange(RETRY_RETURN.to_owned()),
            message_ttl_ms: Some(delay * 1000),
            single_active_consumer: false,
            purpose: "holds a message for its delay, then returns it to the queue named by its routing key",
        });
    }

    let dead_letter_queues: Vec<QueueSpec> = queues
        .iter()
        .filter(|q| q.dead_letter == DeadLetterPolicy::ToDeadLetterQueue)
        .map(|q| dead_letter_queue_of(&q.name))
        .collect();
    queues.extend(dead_letter_queues);

    Topology { exchanges, queues }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_work_queue_has_a_dead_letter_queue_and_a_delivery_limit() {
        let topology = topology();
        for q in topology.queues.iter().filter(|q| q.role == QueueRole::Work) {
            assert!(q.delivery_limit.is_some(), "{}", q.name);
            assert!(
                topology.queue(&queue::dead_letter_of(&q.name)).is_some(),
                "{}",
                q.name
            );
        }
    }

    #[test]
    fn every_contract_routing_key_reaches_a_queue() {
        let topology = topology();
        let bound = |exchange: &str, key: &str| {
            topology
                .queues
                .iter()
                .any(|q| q.bindings.iter().any(|(e, k)| e == exchange && k == key))
        };
        assert!(bound(exchange::COMMANDS, routing::SEND));
        for key in [
            routing::INBOUND_MESSAGE,
            routing::INBOUND_STATUS,
            routing::INBOUND_TEMPLATE_STATUS,
            routing::INBOUND_ERROR,
            routing::OUTBOUND_ACCEPTED,
            routing::OUTBOUND_FAILED,
            routing::OUTBOUND_STATUS,
            routing::QUARANTINE_WEBHOOK,
            routing::AGENT_NOTIFICATION,
        ] {
            assert!(bound(exchange::WHATSAPP_EVENTS, key), "{key}");
        }
        for key in [
            routing::JAMAAH_UPSERTED,
            routing::PAYMENT_SCHEDULE_UPSERTED,
            routing::PAYMENT_RECORDED,
            routing::DEPARTURE_SCHEDULED,
            routing::JAMAAH_ERASURE_REQUESTED,
        ] {
            assert!(bound(exchange::PLATFORM_EVENTS, key), "{key}");
        }
    }

    #[test]
    fn every_queue_that_dead_letters_can_take_a_delayed_retry_back() {
        let topology = topology();
        for q in topology
            .queues
            .iter()
            .filter(|q| q.dead_letter == DeadLetterPolicy::ToDeadLetterQueue)
        {
            assert!(
                q.bindings
                    .iter()
                    .any(|(e, k)| e == exchange::RETRY_RETURN && k == &q.name),
                "{} is not bound to {}",
                q.name,
                exchange::RETRY_RETURN
            );
        }
    }

    #[test]
    fn retry_delays_round_up_to_a_tier_and_cap_at_the_last() {
        assert_eq!(retry_exchange_for(0), "whatsapp.retry.1s");
        assert_eq!(retry_exchange_for(3), "whatsapp.retry.4s");
        assert_eq!(retry_exchange_for(64), "whatsapp.retry.64s");
        assert_eq!(retry_exchange_for(10_000), "whatsapp.retry.256s");
    }
}

//! The catalogue of every AMQP contract: schema, example, exchange and routing keys. It renders
//! `proto/` (one JSON Schema per message, an example per message, and the AsyncAPI 3 document),
//! and a test fails when the committed `proto/` differs from what the types generate.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::contracts::{
    inbound::{InboundError, InboundMessage, InboundOther, InboundStatus, InboundTemplateStatus},
    notification::AgentNotification,
    outcome::{OutboundAccepted, OutboundFailed},
    platform::{
        DepartureScheduled, JamaahErasureRequested, JamaahUpserted, PaymentRecorded,
        PaymentScheduleUpserted,
    },
    send_job::SendJob,
    status::OutboundStatus,
};
use crate::topology::{self, DeadLetterPolicy, ExchangeKind, QueueRole, exchange, routing};
use crate::{Contract, ContractError, decode};

/// One message contract as documented in `proto/`.
pub struct ContractDoc {
    /// File stem, e.g. `send-job`.
    pub schema_name: &'static str,
    /// One-line description.
    pub summary: &'static str,
    /// Exchange it is published to.
    pub exchange: &'static str,
    /// Routing keys it is published with.
    pub routing_keys: Vec<String>,
    /// Who publishes it.
    pub publisher: &'static str,
    /// JSON Schema generated from the Rust type.
    pub schema: Value,
    /// A realistic example.
    pub example: Value,
    /// Decodes and validates bytes as this contract.
    pub check: fn(&[u8]) -> Result<(), ContractError>,
}

fn doc<T: Contract>(
    summary: &'static str,
    exchange: &'static str,
    routing_keys: &[&str],
    publisher: &'static str,
    example: Value,
) -> ContractDoc {
    let mut schema = serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut schema {
        map.insert(
            "$id".into(),
            Value::from(format!("{}.schema.json", T::SCHEMA_NAME)),
        );
        map.insert("description".into(), Value::from(summary));
    }
    ContractDoc {
        schema_name: T::SCHEMA_NAME,
        summary,
        exchange,
        routing_keys: routing_keys.iter().map(|k| (*k).to_owned()).collect(),
        publisher,
        schema,
        example,
        check: |bytes| decode::<T>(bytes).map(|_| ()),
    }
}

/// Every AMQP message contract.
pub fn contracts() -> Vec<ContractDoc> {
    use exchange::{COMMANDS, PLATFORM_EVENTS, WHATSAPP_EVENTS};
    let other_keys: Vec<String> = topology::OTHER_WEBHOOK_FIELDS
        .iter()
        .map(|f| routing::inbound_other(f))
        .collect();
    let mut other = doc::<InboundOther>(
        "Any other webhook field (account, quality, template category updates…), verbatim.",
        WHATSAPP_EVENTS,
        &[],
        "ingress",
        examples::inbound_other(),
    );
    other.routing_keys = other_keys;
    vec![
        doc::<SendJob>(
            "A request to send one WhatsApp message.",
            COMMANDS,
            &[routing::SEND],
            "platform, reminder-scheduler",
            examples::send_job(),
        ),
        doc::<OutboundAccepted>(
            "Meta accepted a job (not delivered yet).",
            WHATSAPP_EVENTS,
            &[routing::OUTBOUND_ACCEPTED],
            "sender",
            examples::outbound_accepted(),
        ),
        doc::<OutboundFailed>(
            "A job failed for good, with a stable reason word.",
            WHATSAPP_EVENTS,
            &[routing::OUTBOUND_FAILED],
            "sender",
            examples::outbound_failed(),
        ),
        doc::<OutboundStatus>(
            "A forward delivery-status step of an outbound message; never backwards.",
            WHATSAPP_EVENTS,
            &[routing::OUTBOUND_STATUS],
            "conversation-sync",
            examples::outbound_status(),
        ),
        doc::<AgentNotification>(
            "A jamaah wrote; notify their agent.",
            WHATSAPP_EVENTS,
            &[routing::AGENT_NOTIFICATION],
            "conversation-sync",
            examples::agent_notification(),
        ),
        doc::<JamaahUpserted>(
            "A jamaah was registered or changed.",
            PLATFORM_EVENTS,
            &[routing::JAMAAH_UPSERTED],
            "platform",
            examples::jamaah_upserted(),
        ),
        doc::<PaymentScheduleUpserted>(
            "An instalment (cicilan) was created or changed.",
            PLATFORM_EVENTS,
            &[routing::PAYMENT_SCHEDULE_UPSERTED],
            "platform",
            examples::payment_schedule_upserted(),
        ),
        doc::<PaymentRecorded>(
            "A payment was recorded.",
            PLATFORM_EVENTS,
            &[routing::PAYMENT_RECORDED],
            "platform",
            examples::payment_recorded(),
        ),
        doc::<DepartureScheduled>(
            "A package got its departure date.",
            PLATFORM_EVENTS,
            &[routing::DEPARTURE_SCHEDULED],
            "platform",
            examples::departure_scheduled(),
        ),
        doc::<JamaahErasureRequested>(
            "Delete everything held about a jamaah.",
            PLATFORM_EVENTS,
            &[routing::JAMAAH_ERASURE_REQUESTED],
            "platform",
            examples::jamaah_erasure_requested(),
        ),
        doc::<InboundMessage>(
            "One message a jamaah sent, split out of a webhook.",
            WHATSAPP_EVENTS,
            &[routing::INBOUND_MESSAGE],
            "ingress",
            examples::inbound_message(),
        ),
        doc::<InboundStatus>(
            "One status of a message we sent, split out of a webhook.",
            WHATSAPP_EVENTS,
            &[routing::INBOUND_STATUS],
            "ingress",
            examples::inbound_status(),
        ),
        doc::<InboundTemplateStatus>(
            "A template's review or quality state changed.",
            WHATSAPP_EVENTS,
            &[routing::INBOUND_TEMPLATE_STATUS],
            "ingress",
            examples::inbound_template_status(),
        ),
        doc::<InboundError>(
            "A value-level error of a messages webhook.",
            WHATSAPP_EVENTS,
            &[routing::INBOUND_ERROR],
            "ingress",
            examples::inbound_error(),
        ),
        other,
    ]
}

/// Every file of `proto/`, by path relative to it, with its exact content.
pub fn render_proto() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let docs = contracts();
    for contract in &docs {
        files.insert(
            format!("{}.schema.json", contract.schema_name),
            pretty(&contract.schema),
        );
        files.insert(
            format!("examples/{}.json", contract.schema_name),
            pretty(&contract.example),
        );
    }
    files.insert("asyncapi.json".to_owned(), pretty(&asyncapi(&docs)));
    files
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

fn exchange_kind(kind: ExchangeKind) -> &'static str {
    match kind {
        ExchangeKind::Topic => "topic",
        ExchangeKind::Direct => "direct",
        ExchangeKind::Fanout => "fanout",
    }
}

/// The AsyncAPI 3 document: every exchange/routing-key channel with its message, and every queue.
fn asyncapi(docs: &[ContractDoc]) -> Value {
    let topology = topology::topology();
    let exchange_spec = |name: &str| {
        topology
            .exchanges
            .iter()
            .find(|e| e.name == name)
            .map(|e| exchange_kind(e.kind))
            .unwrap_or("topic")
    };
    let mut channels = serde_json::Map::new();
    let mut operations = serde_json::Map::new();
    let mut messages = serde_json::Map::new();
    for contract in docs {
        messages.insert(
            contract.schema_name.to_owned(),
            json!({
                "name": contract.schema_name,
                "summary": contract.summary,
                "contentType": "application/json",
                "payload": { "$ref": format!("./{}.schema.json", contract.schema_name) },
                "examples": [{ "payload": contract.example }],
                "bindings": { "amqp": { "deliveryMode": 2, "bindingVersion": "0.3.0" } }
            }),
        );
        for key in &contract.routing_keys {
            let channel_id = format!("{}/{}", contract.exchange, key);
            channels.insert(
                channel_id.clone(),
                json!({
                    "address": key,
                    "description": format!("{} (published by {})", contract.summary, contract.publisher),
                    "messages": { contract.schema_name: { "$ref": format!("#/components/messages/{}", contract.schema_name) } },
                    "bindings": { "amqp": {
                        "is": "routingKey",
                        "exchange": { "name": contract.exchange, "type": exchange_spec(contract.exchange), "durable": true, "autoDelete": false, "vhost": "/" },
                        "bindingVersion": "0.3.0"
                    } }
                }),
            );
            let operation_id = format!("publish {channel_id}");
            operations.insert(
                operation_id,
                json!({
                    "action": "send",
                    "summary": format!("{} publishes {}", contract.publisher, contract.schema_name),
                    "channel": { "$ref": format!("#/channels/{}", escape_pointer(&channel_id)) }
                }),
            );
        }
    }
    for queue in &topology.queues {
        let mut arguments = serde_json::Map::new();
        arguments.insert("x-queue-type".into(), json!("quorum"));
        if let Some(limit) = queue.delivery_limit {
            arguments.insert("x-delivery-limit".into(), json!(limit));
        }
        match &queue.dead_letter {
            DeadLetterPolicy::ToDeadLetterQueue => {
                arguments.insert(
                    "x-dead-letter-exchange".into(),
                    json!(exchange::DEAD_LETTER),
                );
                arguments.insert("x-dead-letter-routing-key".into(), json!(queue.name));
                arguments.insert("x-dead-letter-strategy".into(), json!("at-least-once"));
                arguments.insert("x-overflow".into(), json!("reject-publish"));
            }
            DeadLetterPolicy::ToExchange(target) => {
                arguments.insert("x-dead-letter-exchange".into(), json!(target));
                arguments.insert("x-dead-letter-strategy".into(), json!("at-least-once"));
                arguments.insert("x-overflow".into(), json!("reject-publish"));
            }
            DeadLetterPolicy::None => {}
        }
        if let Some(ttl) = queue.message_ttl_ms {
            arguments.insert("x-message-ttl".into(), json!(ttl));
        }
        if queue.single_active_consumer {
            arguments.insert("x-single-active-consumer".into(), json!(true));
        }
        let role = match queue.role {
            QueueRole::Work => "work",
            QueueRole::Retry => "retry",
            QueueRole::DeadLetter => "dead-letter",
            QueueRole::Holding => "holding",
        };
        let bindings: Vec<Value> = queue
            .bindings
            .iter()
            .map(|(exchange, key)| json!({ "exchange": exchange, "routingKey": key }))
            .collect();
        channels.insert(
            format!("queue/{}", queue.name),
            json!({
                "address": queue.name,
                "title": format!("{role} queue {}", queue.name),
                "description": queue.purpose,
                "bindings": { "amqp": {
                    "is": "queue",
                    "queue": { "name": queue.name, "durable": true, "exclusive": false, "autoDelete": false, "vhost": "/" },
                    "bindingVersion": "0.3.0"
                } },
                "x-wa-queue": { "role": role, "arguments": arguments, "bindings": bindings }
            }),
        );
    }
    let exchanges: Vec<Value> = topology
        .exchanges
        .iter()
        .map(|e| json!({ "name": e.name, "type": exchange_kind(e.kind), "durable": true, "purpose": e.purpose }))
        .collect();
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "WhatsApp Business integration for the Umrah travel platform",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Generated from crates/common (contracts + topology); do not edit by hand. Bodies are UTF-8 JSON, persistent. Unknown fields are ignored; an invalid message is dead-lettered with the reason in the x-wa-dead-letter-reason/detail headers.",
            "x-wa-exchanges": exchanges
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": { "host": "127.0.0.1:5672", "protocol": "amqp", "protocolVersion": "0-9-1", "description": "RabbitMQ (3.10 in development, 4.x in production)" }
        },
        "channels": channels,
        "operations": operations,
        "components": { "messages": messages }
    })
}

/// JSON pointer escaping for `$ref` fragments (`/` → `~1`).
fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Realistic examples, one per contract (they are validated against the schemas by a test).
mod examples {
    use serde_json::{Value, json};

    pub fn send_job() -> Value {
        json!({
            "job_id": "rem-sched-42-d-3",
            "tenant_id": "default",
            "to": "0812-3456-7890",
            "message": {
                "type": "template",
                "template": {
                    "name": "payment_reminder",
                    "language": { "code": "id" },
                    "components": [{ "type": "body", "parameters": [
                        { "type": "text", "text": "Siti Aminah" },
                        { "type": "text", "text": "Umrah Reguler Desember 2026" },
                        { "type": "text", "text": "05 Des 2026" },
                        { "type": "text", "text": "1.500.000" },
                        { "type": "text", "text": "Ustadz Ahmad" },
                        { "type": "text", "text": "+62 811-2233-4455" }
                    ] }]
                }
            },
            "priority": "transactional",
            "reference": { "kind": "payment_reminder", "id": "sched-42" },
            "expires_at": "2026-12-01T09:00:00+07:00"
        })
    }

    pub fn outbound_accepted() -> Value {
        json!({
            "job_id": "rem-sched-42-d-3", "tenant_id": "default", "to": "+6281234567890",
            "wa_message_id": "wamid.HBgNNjI4MTIzNDU2Nzg5MBUCABEYEjc3QTFCMkMzRDRFNUY2MDcA",
            "accepted_at": "2026-11-28T02:00:01Z", "attempts": 1,
            "reference": { "kind": "payment_reminder", "id": "sched-42" },
            "message": { "type": "template", "template": { "name": "payment_reminder", "language": { "code": "id" },
                "components": [{ "type": "body", "parameters": [
                    { "type": "text", "text": "Siti Aminah" }, { "type": "text", "text": "Umrah Reguler Desember 2026" },
                    { "type": "text", "text": "05 Des 2026" }, { "type": "text", "text": "1.500.000" },
                    { "type": "text", "text": "Ustadz Ahmad" }, { "type": "text", "text": "+62 811-2233-4455" } ] }] } }
        })
    }

    pub fn outbound_failed() -> Value {
        json!({
            "job_id": "agent-reply-981", "tenant_id": "default", "to": "+6281234567890",
            "reason": "window_closed", "meta_code": 131047,
            "detail": "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
            "attempts": 1, "failed_at": "2026-11-28T02:00:01Z",
            "reference": { "kind": "agent_reply", "id": "chat-77" },
            "message": { "type": "text", "text": { "body": "Wa'alaikumussalam, manasik hari Sabtu jam 08.00." } }
        })
    }

    pub fn outbound_status() -> Value {
        json!({
            "tenant_id": "default",
            "wa_message_id": "wamid.HBgNNjI4MTIzNDU2Nzg5MBUCABEYEjc3QTFCMkMzRDRFNUY2MDcA",
            "job_id": "rem-sched-42-d-3", "status": "delivered", "timestamp": "2026-11-28T02:00:05Z",
            "meta_code": null, "pricing_category": "utility",
            "reference": { "kind": "payment_reminder", "id": "sched-42" }
        })
    }

    pub fn agent_notification() -> Value {
        json!({
            "tenant_id": "default", "agent_id": "agent-7", "jamaah_id": "jmh-1001",
            "title": "Pesan WhatsApp baru", "message": "Siti Aminah: Assalamualaikum, kapan jadwal manasik?",
            "type": "info", "action_url": "/jamaah/jmh-1001/conversations"
        })
    }

    pub fn jamaah_upserted() -> Value {
        json!({
            "tenant_id": "default", "jamaah_id": "jmh-1001", "name": "Siti Aminah", "phone": "0812-3456-7890",
            "status": "ready",
            "package": { "id": "pkg-dec-2026", "name": "Umrah Reguler Desember 2026" },
            "agent": { "id": "agent-7", "name": "Ustadz Ahmad", "phone": "+62 811-2233-4455" }
        })
    }

    pub fn payment_schedule_upserted() -> Value {
        json!({
            "tenant_id": "default", "schedule_id": "sched-42", "jamaah_id": "jmh-1001",
            "package_id": "pkg-dec-2026", "due_date": "2026-12-05", "amount": 1_500_000, "status": "unpaid"
        })
    }

    pub fn payment_recorded() -> Value {
        json!({
            "tenant_id": "default", "payment_id": "pay-9001", "jamaah_id": "jmh-1001", "package_id": "pkg-dec-2026",
            "amount": 1_500_000, "remaining_balance": 12_000_000, "status_label": "Cicilan 2 dari 10"
        })
    }

    pub fn departure_scheduled() -> Value {
        json!({
            "tenant_id": "default", "package_id": "pkg-dec-2026",
            "package_name": "Umrah Reguler Desember 2026", "departure_date": "2026-12-20"
        })
    }

    pub fn jamaah_erasure_requested() -> Value {
        json!({ "tenant_id": "default", "jamaah_id": "jmh-1001" })
    }

    fn source() -> Value {
        json!({ "waba_id": "102290129340398", "phone_number_id": "106540352242922", "display_phone_number": "6221555000111" })
    }

    pub fn inbound_message() -> Value {
        json!({
            "source": source(),
            "wa_message_id": "wamid.HBgNNjI4MTIzNDU2Nzg5MBUCABIYFjNFQjBBQ0RFRjEyMzQ1Njc4OUFCQ0QA",
            "from": "6281234567890", "from_user_id": null, "profile_name": "Siti Aminah",
            "timestamp": "2026-01-01T00:00:00Z", "message_type": "text",
            "raw": {
                "from": "6281234567890",
                "id": "wamid.HBgNNjI4MTIzNDU2Nzg5MBUCABIYFjNFQjBBQ0RFRjEyMzQ1Njc4OUFCQ0QA",
                "timestamp": "1767225600", "type": "text",
                "text": { "body": "Assalamualaikum, kapan jadwal manasik?" }
            },
            "received_at": "2026-01-01T00:00:01Z"
        })
    }

    pub fn inbound_status() -> Value {
        json!({
            "source": source(),
            "wa_message_id": "wamid.HBgNNjI4MTIzNDU2Nzg5MBUCABEYEjc3QTFCMkMzRDRFNUY2MDcA",
            "status": "delivered", "timestamp": "2026-01-01T00:06:40Z", "recipient_id": "6281234567890",
            "biz_opaque_callback_data": "reminder:INV2026-0142:h-7",
            "pricing": { "billable": true, "pricing_model": "PMP", "type": "regular", "category": "utility" },
            "errors": [],
            "raw": {
                "id": "wamid.HBgNNjI4MTIzNDU2Nzg5MBUCABEYEjc3QTFCMkMzRDRFNUY2MDcA", "status": "delivered",
                "timestamp": "1767226000", "recipient_id": "6281234567890",
                "biz_opaque_callback_data": "reminder:INV2026-0142:h-7",
                "pricing": { "billable": true, "pricing_model": "PMP", "type": "regular", "category": "utility" }
            },
            "received_at": "2026-01-01T00:06:41Z"
        })
    }

    pub fn inbound_template_status() -> Value {
        json!({
            "source": { "waba_id": "102290129340398", "phone_number_id": null, "display_phone_number": null },
            "event": "REJECTED", "message_template_id": 1_689_556_908_129_835_i64,
            "message_template_name": "payment_reminder", "message_template_language": "id",
            "reason": "INVALID_FORMAT",
            "raw": {
                "event": "REJECTED", "message_template_id": 1_689_556_908_129_835_i64,
                "message_template_name": "payment_reminder", "message_template_language": "id",
                "reason": "INVALID_FORMAT", "message_template_category": "UTILITY",
                "rejection_info": { "reason": "Parameters are adjacent without separating text.", "recommendation": "Put descriptive words between variables." }
            },
            "received_at": "2026-01-01T00:10:00Z"
        })
    }

    pub fn inbound_error() -> Value {
        json!({
            "source": source(),
            "error": { "code": 130429, "title": "Rate limit hit", "message": "Rate limit hit", "details": "Cloud API message throughput has been reached." },
            "raw": { "code": 130429, "title": "Rate limit hit", "message": "Rate limit hit", "error_data": { "details": "Cloud API message throughput has been reached." } },
            "received_at": "2026-01-01T00:10:00Z"
        })
    }

    pub fn inbound_other() -> Value {
        json!({
            "source": { "waba_id": "102290129340398", "phone_number_id": null, "display_phone_number": "6221555000111" },
            "field": "phone_number_quality_update",
            "raw": { "display_phone_number": "6221555000111", "event": "THROUGHPUT_UPGRADE", "max_daily_conversations_per_business": "TIER_UNLIMITED" },
            "received_at": "2026-01-01T00:10:00Z"
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn proto_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto")
    }

    /// `UPDATE_PROTO=1 cargo test -p wa_common proto` (or `make proto`) rewrites `proto/`.
    #[test]
    fn proto_directory_matches_the_rust_types() {
        let rendered = render_proto();
        let dir = proto_dir();
        if std::env::var_os("UPDATE_PROTO").is_some() {
            let _ = std::fs::remove_dir_all(&dir);
            for (path, content) in &rendered {
                let target = dir.join(path);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).expect("create proto dir");
                }
                std::fs::write(&target, content).expect("write proto file");
            }
        }
        let mut stale = Vec::new();
        for (path, content) in &rendered {
            let on_disk = std::fs::read_to_string(dir.join(path)).unwrap_or_default();
            if &on_disk != content {
                stale.push(path.clone());
            }
        }
        let mut extra = Vec::new();
        for entry in walk(&dir) {
            let relative = entry
                .strip_prefix(&dir)
                .expect("inside proto")
                .to_string_lossy()
                .replace('\\', "/");
            if !rendered.contains_key(&relative) {
                extra.push(relative);
            }
        }
        assert!(
            stale.is_empty() && extra.is_empty(),
            "proto/ is stale (run `make proto`): changed {stale:?}, unexpected {extra:?}"
        );
    }

    fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    out.extend(walk(&path));
                } else {
                    out.push(path);
                }
            }
        }
        out
    }

    #[test]
    fn every_example_validates_against_its_schema_and_decodes() {
        for contract in contracts() {
            let validator = jsonschema::validator_for(&contract.schema).expect("schema compiles");
            let errors: Vec<String> = validator
                .iter_errors(&contract.example)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{}: {errors:?}", contract.schema_name);
            let bytes = serde_json::to_vec(&contract.example).expect("serialise example");
            (contract.check)(&bytes).unwrap_or_else(|e| panic!("{}: {e}", contract.schema_name));
        }
    }

    #[test]
    fn schemas_reject_a_message_missing_a_required_field() {
        for contract in contracts() {
            let required = contract.schema["required"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let Some(first) = required.first().and_then(Value::as_str) else {
                continue;
            };
            let mut broken = contract.example.clone();
            if let Value::Object(map) = &mut broken {
                map.remove(first);
            }
            let validator = jsonschema::validator_for(&contract.schema).expect("schema compiles");
            assert!(
                !validator.is_valid(&broken),
                "{} accepted a message without {first}",
                contract.schema_name
            );
            let bytes = serde_json::to_vec(&broken).expect("serialise");
            let err = (contract.check)(&bytes).expect_err("decode must fail");
            assert_eq!(err.field, first, "{}", contract.schema_name);
        }
    }

    #[test]
    fn asyncapi_lists_every_contract_routing_key_and_queue() {
        let files = render_proto();
        let doc: Value = serde_json::from_str(&files["asyncapi.json"]).expect("asyncapi is json");
        assert_eq!(doc["asyncapi"], "3.0.0");
        for contract in contracts() {
            for key in &contract.routing_keys {
                let id = format!("{}/{}", contract.exchange, key);
                assert!(doc["channels"][&id].is_object(), "missing channel {id}");
            }
        }
        for queue in topology::topology().queues {
            assert!(
                doc["channels"][format!("queue/{}", queue.name)].is_object(),
                "missing queue {}",
                queue.name
            );
        }
    }
}

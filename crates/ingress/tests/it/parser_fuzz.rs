//! Property tests of the pure parser: random bytes, random JSON and mutated real payloads never
//! make it panic, and whatever it returns is self-consistent (every event has a bound routing key
//! and serialises exactly as its contract: decoded and written back, it is the same JSON).

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};
use wa_ingress::webhook::{EventBody, split_webhook};

use crate::payloads;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_226_000, 0).unwrap()
}

fn bound_keys() -> Vec<String> {
    let topology = wa_common::topology::topology();
    topology
        .queues
        .iter()
        .flat_map(|q| q.bindings.iter())
        .filter(|(exchange, _)| exchange == wa_common::topology::exchange::WHATSAPP_EVENTS)
        .map(|(_, key)| key.clone())
        .collect()
}

fn check(body: &[u8]) {
    let Ok(split) = split_webhook(body, now()) else {
        return;
    };
    let keys = bound_keys();
    for event in &split.events {
        assert!(
            keys.contains(&event.routing_key),
            "unbound key {}",
            event.routing_key
        );
        assert!(!event.dedupe_id.is_empty());
        let bytes = serde_json::to_vec(&event.body).expect("serialises");
        let decoded = match &event.body {
            EventBody::Message(_) => {
                round_trip::<wa_common::contracts::inbound::InboundMessage>(&bytes)
            }
            EventBody::Status(_) => {
                round_trip::<wa_common::contracts::inbound::InboundStatus>(&bytes)
            }
            EventBody::TemplateStatus(_) => {
                round_trip::<wa_common::contracts::inbound::InboundTemplateStatus>(&bytes)
            }
            EventBody::Error(_) => {
                round_trip::<wa_common::contracts::inbound::InboundError>(&bytes)
            }
            EventBody::Other(_) => {
                round_trip::<wa_common::contracts::inbound::InboundOther>(&bytes)
            }
        };
        let written: Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(decoded, Ok(written), "not exactly its contract");
    }
}

/// Decodes `bytes` as contract `T` and writes it back: equal to what was published only when the
/// event has exactly the contract's fields (the borrowed event shapes cannot drift from it).
fn round_trip<T: wa_common::Contract>(bytes: &[u8]) -> Result<Value, String> {
    let decoded: T = wa_common::decode(bytes).map_err(|e| e.to_string())?;
    serde_json::to_value(&decoded).map_err(|e| e.to_string())
}

/// Arbitrary JSON, a few levels deep, with keys Meta uses so the parser's paths get exercised.
fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("object".to_owned()),
        Just("entry".to_owned()),
        Just("id".to_owned()),
        Just("changes".to_owned()),
        Just("field".to_owned()),
        Just("value".to_owned()),
        Just("messages".to_owned()),
        Just("statuses".to_owned()),
        Just("errors".to_owned()),
        Just("timestamp".to_owned()),
        Just("code".to_owned()),
        Just("from".to_owned()),
        Just("type".to_owned()),
        Just("metadata".to_owned()),
        Just("contacts".to_owned()),
        "[a-z_]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(json!("whatsapp_business_account")),
        Just(json!("messages")),
        Just(json!("message_template_status_update")),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Replaces the value at a random path of `value` with `replacement`.
fn mutate(value: &mut Value, path: &[usize], replacement: Value) {
    let Some((step, rest)) = path.split_first() else {
        *value = replacement;
        return;
    };
    let child = match value {
        Value::Object(map) if !map.is_empty() => {
            let key = map.keys().nth(step % map.len()).cloned().unwrap();
            map.get_mut(&key)
        }
        Value::Array(list) if !list.is_empty() => {
            let len = list.len();
            list.get_mut(step % len)
        }
        _ => None,
    };
    match child {
        Some(child) => mutate(child, rest, replacement),
        None => *value = replacement,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_the_parser(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes);
    }

    #[test]
    fn random_json_never_panics_the_parser(value in arb_json()) {
        check(value.to_string().as_bytes());
        let wrapped = json!({"object": "whatsapp_business_account", "entry": [value]});
        check(wrapped.to_string().as_bytes());
        let in_change = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": wrapped}]}]});
        check(in_change.to_string().as_bytes());
    }

    #[test]
    fn mutated_real_payloads_never_panic_the_parser(
        which in 0..3_usize,
        path in prop::collection::vec(any::<usize>(), 0..8),
        replacement in arb_json(),
    ) {
        let mut value = match which {
            0 => payloads::batch(),
            1 => payloads::arabic_text(),
            _ => payloads::management_fields(),
        };
        mutate(&mut value, &path, replacement);
        check(value.to_string().as_bytes());
    }

    #[test]
    fn truncated_and_bit_flipped_payloads_never_panic_the_parser(cut in any::<usize>(), flip in any::<usize>(), bit in 0..8_u8) {
        let mut bytes = payloads::meta_bytes(&payloads::batch());
        let flip = flip % bytes.len();
        bytes[flip] ^= 1 << bit;
        check(&bytes);
        bytes.truncate(cut % (bytes.len() + 1));
        check(&bytes);
    }
}

use lapin::types::AMQPValue;
use wa_amqp::{declare_topology, queue_arguments};
use wa_common::topology::topology;
use wa_testkit::broker::{TestBroker, queue_len};

use crate::helpers::init_tracing;

fn as_json(value: &AMQPValue) -> serde_json::Value {
    match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned().into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        AMQPValue::Boolean(b) => (*b).into(),
        other => panic!("unexpected argument type {other:?}"),
    }
}

#[tokio::test]
async fn topology_declares_twice_and_every_queue_is_quorum_with_explicit_arguments()
-> anyhow::Result<()> {
    init_tracing();
    // Arrange
    let broker = TestBroker::new().await?;
    let conn = broker.connect("topology-test").await?;
    let channel = conn.create_channel().await?;
    let topology = topology();

    // Act: as two services starting one after the other would.
    declare_topology(&channel, &topology).await?;
    declare_topology(&channel, &topology).await?;

    // Assert
    for spec in &topology.queues {
        if broker.has_management_api() {
            let info = broker.queue_info(&spec.name).await?;
            assert_eq!(info["type"], "quorum", "{}", spec.name);
            assert_eq!(info["durable"], true, "{}", spec.name);
            let actual = info["arguments"].as_object().cloned().unwrap_or_default();
            let expected: serde_json::Map<String, serde_json::Value> = queue_arguments(spec)
                .inner()
                .iter()
                .map(|(key, value)| (key.to_string(), as_json(value)))
                .collect();
            assert_eq!(actual, expected, "arguments of {}", spec.name);
            if spec.delivery_limit.is_some() {
                assert_eq!(actual["x-delivery-limit"], 10, "{}", spec.name);
            }
        } else {
            // Without the management plugin: at least every queue exists and is empty.
            assert_eq!(queue_len(&channel, &spec.name).await?, 0, "{}", spec.name);
        }
    }
    Ok(())
}

use std::time::Duration;

use lapin::options::BasicGetOptions;
use wa_amqp::{OutgoingMessage, PublishError, PublishOptions, Publisher};
use wa_common::topology::exchange;
use wa_testkit::broker::{TestBroker, queue_len};

use crate::helpers::{init_tracing, plain_work_queue};

#[tokio::test]
async fn publish_with_confirm_reaches_the_bound_queue_as_persistent_json() -> anyhow::Result<()> {
    init_tracing();
    // Arrange
    let broker = TestBroker::new().await?;
    let publisher = Publisher::new(broker.declared().await?).await?;
    let target = plain_work_queue();
    let body = serde_json::json!({"job_id": "rem-1", "tenant_id": "default"});

    // Act
    publisher
        .publish_json(
            &target.exchange,
            &target.routing_key,
            &body,
            PublishOptions {
                tenant_id: Some("default".into()),
                ..PublishOptions::default()
            },
        )
        .await?;

    // Assert
    let channel = publisher.connection().create_channel().await?;
    let message = channel
        .basic_get(
            target.queue.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await?
        .expect("the message is in the bound queue");
    let properties = &message.delivery.properties;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&message.delivery.data)?,
        body
    );
    assert_eq!(*properties.delivery_mode(), Some(2));
    assert_eq!(
        properties.content_type().as_ref().map(|c| c.as_str()),
        Some("application/json")
    );
    assert!(properties.message_id().is_some());
    assert!(properties.timestamp().is_some());
    Ok(())
}

#[tokio::test]
async fn unroutable_publish_is_an_error() -> anyhow::Result<()> {
    init_tracing();
    // Arrange
    let broker = TestBroker::new().await?;
    let publisher = Publisher::new(broker.declared().await?).await?;

    // Act
    let result = publisher
        .publish_json(
            exchange::WHATSAPP_EVENTS,
            "no.queue.binds.this",
            &1,
            PublishOptions::default(),
        )
        .await;

    // Assert
    assert!(
        matches!(result, Err(PublishError::Unroutable { .. })),
        "{result:?}"
    );
    Ok(())
}

#[tokio::test]
async fn publish_all_confirms_every_message_of_a_batch() -> anyhow::Result<()> {
    init_tracing();
    // Arrange
    let broker = TestBroker::new().await?;
    let publisher = Publisher::new(broker.declared().await?).await?;
    let target = plain_work_queue();
    let messages = (0..200)
        .map(|i| {
            OutgoingMessage::json(
                &target.exchange,
                &target.routing_key,
                &serde_json::json!({ "n": i }),
                PublishOptions::default(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;

    // Act
    publisher.publish_all(messages).await?;

    // Assert
    let channel = publisher.connection().create_channel().await?;
    assert_eq!(queue_len(&channel, &target.queue).await?, 200);
    Ok(())
}

#[tokio::test]
async fn publishing_to_a_missing_exchange_fails_and_the_next_publish_still_works()
-> anyhow::Result<()> {
    init_tracing();
    // Arrange: the broker closes the channel on the first publish (404 NOT_FOUND).
    let broker = TestBroker::new().await?;
    let publisher = Publisher::new(broker.declared().await?).await?;
    let target = plain_work_queue();
    let failed = publisher
        .publish_json("no.such.exchange", "x", &1, PublishOptions::default())
        .await;
    assert!(failed.is_err(), "{failed:?}");

    // Act
    let next = tokio::time::timeout(
        Duration::from_secs(5),
        publisher.publish_json(
            &target.exchange,
            &target.routing_key,
            &2,
            PublishOptions::default(),
        ),
    )
    .await?;

    // Assert
    assert!(next.is_ok(), "{next:?}");
    assert!(publisher.is_ready());
    Ok(())
}

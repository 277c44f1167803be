//! What the declared topology makes the broker do by itself (RabbitMQ 3.10 here, 4.x in
//! production): TTL retry tiers returning messages to their queue, and at-least-once
//! dead-lettering into `<queue>.dlq` on nack and on exceeding the delivery limit.

use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, BasicNackOptions, BasicRejectOptions};
use lapin::types::AMQPValue;
use wa_amqp::{PublishOptions, Publisher};
use wa_common::topology::{DEFAULT_DELIVERY_LIMIT, retry_exchange_for};
use wa_testkit::broker::{TestBroker, queue_len, wait_for_message};

use crate::helpers::{header_str, init_tracing, plain_work_queue};

fn first_death_reason(headers: &lapin::types::FieldTable) -> Option<String> {
    header_str(headers, "x-first-death-reason")
}

#[tokio::test]
async fn message_sent_to_a_retry_tier_returns_to_the_queue_named_by_its_routing_key_after_the_ttl()
-> anyhow::Result<()> {
    init_tracing();
    // Arrange
    let broker = TestBroker::new().await?;
    let publisher = Publisher::new(broker.declared().await?).await?;
    let channel = publisher.connection().create_channel().await?;
    let target = plain_work_queue();
    let started = Instant::now();

    // Act
    publisher
        .publish_json(
            &retry_exchange_for(1),
            &target.queue,
            &"later",
            PublishOptions::default(),
        )
        .await?;

    // Assert: held in the tier first, then back in the work queue (and only there).
    assert_eq!(queue_len(&channel, "retry.1s").await?, 1);
    assert_eq!(queue_len(&channel, &target.queue).await?, 0);
    let (body, headers) = wait_for_message(&channel, &target.queue, Duration::from_secs(5))
        .await?
        .expect("the message came back to its queue");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900),
        "came back after {elapsed:?}"
    );
    assert_eq!(body, br#""later""#);
    assert_eq!(first_death_reason(&headers).as_deref(), Some("expired"));
    assert_eq!(queue_len(&channel, "retry.1s").await?, 0);
    for sibling in target.siblings() {
        assert_eq!(queue_len(&channel, &sibling).await?, 0, "{sibling}");
    }
    Ok(())
}

#[tokio::test]
async fn message_nacked_without_requeue_lands_in_its_dead_letter_queue() -> anyhow::Result<()> {
    init_tracing();
    // Arrange
    let broker = TestBroker::new().await?;
    let publisher = Publisher::new(broker.declared().await?).await?;
    let channel = publisher.connection().create_channel().await?;
    let target = plain_work_queue();
    publisher
        .publish_json(
            &target.exchange,
            &target.routing_key,
            &"poison",
            PublishOptions::default(),
        )
        .await?;
    let message = channel
        .basic_get(
            target.queue.as_str().into(),
            BasicGetOptions { no_ack: false },
        )
        .await?
        .expect("the message is in the work queue");

    // Act
    message
        .delivery
        .nack(BasicNackOptions {
            multiple: false,
            requeue: false,
        })
        .await?;

    // Assert
    let (body, headers) = wait_for_message(&channel, &target.dlq(), Duration::from_secs(5))
        .await?
        .expect("the message was dead-lettered");
    assert_eq!(body, br#""poison""#);
    assert_eq!(first_death_reason(&headers).as_deref(), Some("rejected"));
    assert_eq!(queue_len(&channel, &target.queue).await?, 0);
    Ok(())
}

#[tokio::test]
async fn message_over_the_delivery_limit_lands_in_its_dead_letter_queue() -> anyhow::Result<()> {
    init_tracing();
    // Arrange
    let broker = TestBroker::new().await?;
    let publisher = Publisher::new(broker.declared().await?).await?;
    let channel = publisher.connection().create_channel().await?;
    let target = plain_work_queue();
    publisher
        .publish_json(
            &target.exchange,
            &target.routing_key,
            &"crashes",
            PublishOptions::default(),
        )
        .await?;

    // Act: a consumer that keeps failing and giving it back.
    let mut deliveries = 0_u32;
    let mut last_delivery_count = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(message) = channel
            .basic_get(
                target.queue.as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await?
        {
            deliveries += 1;
            last_delivery_count = message
                .delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("x-delivery-count").cloned());
            message
                .delivery
                .reject(BasicRejectOptions { requeue: true })
                .await?;
            assert!(
                deliveries <= 2 * DEFAULT_DELIVERY_LIMIT,
                "delivered forever"
            );
            continue;
        }
        if queue_len(&channel, &target.dlq()).await? > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never dead-lettered after {deliveries} deliveries"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Assert
    let (_, headers) = wait_for_message(&channel, &target.dlq(), Duration::from_secs(5))
        .await?
        .expect("the message was dead-lettered");
    assert_eq!(
        first_death_reason(&headers).as_deref(),
        Some("delivery_limit")
    );
    assert_eq!(
        deliveries,
        DEFAULT_DELIVERY_LIMIT + 1,
        "last x-delivery-count {last_delivery_count:?}"
    );
    assert_eq!(
        last_delivery_count,
        Some(AMQPValue::LongLongInt(i64::from(DEFAULT_DELIVERY_LIMIT)))
    );
    Ok(())
}

//! Broker restart on a private RabbitMQ node (`wa_testkit::private`), so the machine's shared
//! broker and every other test keep running: `rabbitmqctl stop_app`, then `start_app`, and the
//! publisher and a consumer must work again by themselves, unready while the broker is down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wa_amqp::{ConsumerOptions, Outcome, PublishOptions, Publisher};
use wa_common::topology::{exchange, queue, routing};
use wa_testkit::private::PrivateBroker;

use crate::helpers::{init_tracing, next_seen, recording, spawn_consumer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_and_consumer_work_again_after_the_broker_restarts() -> anyhow::Result<()> {
    init_tracing();
    // Arrange
    let dir = std::env::temp_dir().join(format!("wa-amqp-recovery-{}", std::process::id()));
    let broker = PrivateBroker::start("wa-amqp-recovery", 5681, &dir).await?;
    let url = broker.amqp_url();
    let declare = wa_amqp::connect(&url, "declare").await?;
    let channel = declare.create_channel().await?;
    wa_amqp::declare_topology(&channel, &wa_common::topology::topology()).await?;
    declare.close(200, "declared").await?;
    let publisher = Publisher::new(wa_amqp::connect(&url, "publish").await?).await?;
    let consume = Arc::new(wa_amqp::connect(&url, "consume").await?);
    let (handler, mut seen) = recording(|_| async { Outcome::Ack });
    let options = ConsumerOptions::new(10, 4);
    let health = options.health.clone();
    let consumer = spawn_consumer(consume.clone(), queue::SYNC_EVENTS, options, handler);
    publisher
        .publish_json(
            exchange::WHATSAPP_EVENTS,
            routing::INBOUND_MESSAGE,
            &"before",
            PublishOptions::default(),
        )
        .await?;
    next_seen(&mut seen, Duration::from_secs(5)).await;

    // Act
    broker.stop_app().await?;
    let mut ready_during_outage = (true, true);
    for _ in 0..25 {
        ready_during_outage = (health.is_ready(), publisher.is_ready());
        if ready_during_outage == (false, false) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.start_app().await?;
    let restarted = Instant::now();
    let mut failures = 0;
    loop {
        match publisher
            .publish_json(
                exchange::WHATSAPP_EVENTS,
                routing::INBOUND_MESSAGE,
                &"after",
                PublishOptions::default(),
            )
            .await
        {
            Ok(()) => break,
            Err(error) => {
                failures += 1;
                eprintln!("publish after restart failed ({failures}): {error}");
                assert!(
                    restarted.elapsed() < Duration::from_secs(60),
                    "publisher never recovered"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    eprintln!(
        "publisher recovered {:?} after start_app, {failures} failed publishes",
        restarted.elapsed()
    );

    // Assert
    assert_eq!(
        ready_during_outage,
        (false, false),
        "(consumer, publisher) readiness while down"
    );
    let after = next_seen(&mut seen, Duration::from_secs(30)).await;
    assert_eq!(after.body, br#""after""#);
    assert!(health.is_ready());
    assert!(publisher.is_ready());
    consumer.stop().await?;
    Ok(())
}

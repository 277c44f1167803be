//! Broker restart: run by hand (`cargo test -p wa_amqp --test it -- --ignored`), never in CI,
//! because it restarts the machine's RabbitMQ under every other test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wa_amqp::{ConsumerOptions, Outcome, PublishOptions, Publisher};
use wa_common::topology::{exchange, queue, routing};
use wa_testkit::broker::TestBroker;

use crate::helpers::{init_tracing, next_seen, recording, spawn_consumer};

fn rabbitmqctl(args: &[&str]) {
    let status = std::process::Command::new("rabbitmqctl")
        .args(args)
        .status()
        .expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {args:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the local broker; run by hand"]
async fn publisher_and_consumer_work_again_after_the_broker_restarts() -> anyhow::Result<()> {
    init_tracing();
    // Arrange
    let broker = TestBroker::new().await?;
    let publisher = Publisher::new(broker.declared().await?).await?;
    let consume = Arc::new(broker.connect("consume").await?);
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
    tokio::task::spawn_blocking(|| rabbitmqctl(&["stop_app"])).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ready_during_outage = (health.is_ready(), publisher.is_ready());
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::spawn_blocking(|| rabbitmqctl(&["start_app"])).await?;
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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use wa_amqp::{ConsumerOptions, Outcome, PublishOptions, Publisher};
use wa_common::topology::{
    DEFAULT_DELIVERY_LIMIT, HEADER_DEAD_LETTER_DETAIL, HEADER_DEAD_LETTER_REASON,
    HEADER_ORIGINAL_EXCHANGE, HEADER_ORIGINAL_ROUTING_KEY,
};
use wa_testkit::broker::{TestBroker, queue_len, wait_for_message};

use crate::helpers::{
    Target, header_str, init_tracing, next_seen, plain_work_queue, recording, spawn_consumer,
};

const WAIT: Duration = Duration::from_secs(5);

/// A broker vhost with the topology, a publisher and a separate consume connection.
struct Setup {
    broker: TestBroker,
    target: Target,
    publisher: Publisher,
    consume: Arc<wa_amqp::Connection>,
}

async fn setup() -> anyhow::Result<Setup> {
    init_tracing();
    let broker = TestBroker::new().await?;
    let publisher = Publisher::new(broker.declared().await?).await?;
    let consume = Arc::new(broker.connect("consume").await?);
    Ok(Setup {
        broker,
        target: plain_work_queue(),
        publisher,
        consume,
    })
}

async fn publish_inbound(setup: &Setup, body: &serde_json::Value) -> anyhow::Result<()> {
    setup
        .publisher
        .publish_json(
            &setup.target.exchange,
            &setup.target.routing_key,
            body,
            PublishOptions::default(),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn consume_loop_acks_when_the_handler_returns_ack() -> anyhow::Result<()> {
    // Arrange
    let setup = setup().await?;
    let (handler, mut seen) = recording(|_| async { Outcome::Ack });
    let options = ConsumerOptions::new(10, 4);
    let health = options.health.clone();
    let consumer = spawn_consumer(setup.consume.clone(), &setup.target.queue, options, handler);

    // Act
    publish_inbound(&setup, &serde_json::json!({"n": 1})).await?;
    let message = next_seen(&mut seen, WAIT).await;
    assert!(health.is_ready());
    consumer.stop().await?;

    // Assert: acked, so nothing comes back once the consumer's channel is closed.
    assert_eq!(message.routing_key, setup.target.routing_key);
    assert_eq!(message.exchange, setup.target.exchange);
    assert_eq!(message.attempt, 0);
    assert!(message.message_id.is_some());
    assert!(!health.is_ready());
    let channel = setup.publisher.connection().create_channel().await?;
    assert_eq!(queue_len(&channel, &setup.target.queue).await?, 0);
    Ok(())
}

#[tokio::test]
async fn retry_returns_the_message_to_the_same_queue_after_the_tier_delay_with_attempt_incremented()
-> anyhow::Result<()> {
    // Arrange
    let setup = setup().await?;
    let (handler, mut seen) = recording(|msg: wa_amqp::IncomingMessage| async move {
        if msg.attempt == 0 {
            Outcome::retry_in(Duration::from_secs(1))
        } else {
            Outcome::Ack
        }
    });
    let consumer = spawn_consumer(
        setup.consume.clone(),
        &setup.target.queue,
        ConsumerOptions::new(10, 4),
        handler,
    );

    // Act
    publish_inbound(&setup, &serde_json::json!({"n": 2})).await?;
    let first = next_seen(&mut seen, WAIT).await;
    let first_seen_at = Instant::now();
    let second = next_seen(&mut seen, WAIT).await;
    let delay = first_seen_at.elapsed();
    consumer.stop().await?;

    // Assert
    assert_eq!(first.attempt, 0);
    assert_eq!(second.attempt, 1);
    assert!(
        delay >= Duration::from_millis(900),
        "retried after {delay:?}"
    );
    assert_eq!(second.body, first.body);
    assert_eq!(second.message_id, first.message_id);
    assert_eq!(second.queue, setup.target.queue);
    // The handler still sees where it was first published, not the retry exchanges.
    assert_eq!(second.routing_key, setup.target.routing_key);
    assert_eq!(second.exchange, setup.target.exchange);
    // Only the consumed queue got the retry; the other queues bound to the key got one copy.
    let channel = setup.publisher.connection().create_channel().await?;
    assert_eq!(queue_len(&channel, &setup.target.queue).await?, 0);
    for sibling in setup.target.siblings() {
        assert_eq!(queue_len(&channel, &sibling).await?, 1, "{sibling}");
    }
    assert!(seen.try_recv().is_err(), "no third delivery");
    Ok(())
}

#[tokio::test]
async fn dead_letter_puts_the_message_in_the_dlq_with_reason_and_detail_and_removes_it()
-> anyhow::Result<()> {
    // Arrange
    let setup = setup().await?;
    let (handler, mut seen) =
        recording(|_| async { Outcome::dead_letter("invalid_payload", "missing field `job_id`") });
    let consumer = spawn_consumer(
        setup.consume.clone(),
        &setup.target.queue,
        ConsumerOptions::new(10, 4),
        handler,
    );

    // Act
    publish_inbound(&setup, &serde_json::json!({"bad": true})).await?;
    next_seen(&mut seen, WAIT).await;
    let channel = setup.publisher.connection().create_channel().await?;
    let dead = wait_for_message(&channel, &setup.target.dlq(), WAIT).await?;
    consumer.stop().await?;

    // Assert
    let (body, headers) = dead.expect("the message is in the DLQ");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body)?,
        serde_json::json!({"bad": true})
    );
    assert_eq!(
        header_str(&headers, HEADER_DEAD_LETTER_REASON).as_deref(),
        Some("invalid_payload")
    );
    assert_eq!(
        header_str(&headers, HEADER_DEAD_LETTER_DETAIL).as_deref(),
        Some("missing field `job_id`")
    );
    assert_eq!(
        header_str(&headers, HEADER_ORIGINAL_EXCHANGE).as_deref(),
        Some(setup.target.exchange.as_str())
    );
    assert_eq!(
        header_str(&headers, HEADER_ORIGINAL_ROUTING_KEY).as_deref(),
        Some(setup.target.routing_key.as_str())
    );
    assert_eq!(queue_len(&channel, &setup.target.queue).await?, 0);
    assert!(
        seen.try_recv().is_err(),
        "dead-lettered once, not redelivered"
    );
    Ok(())
}

#[tokio::test]
async fn handler_that_always_requeues_ends_in_the_dlq_after_the_delivery_limit()
-> anyhow::Result<()> {
    // Arrange
    let setup = setup().await?;
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let (handler, _seen) = recording(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Outcome::Requeue }
    });
    let consumer = spawn_consumer(
        setup.consume.clone(),
        &setup.target.queue,
        ConsumerOptions::new(1, 1),
        handler,
    );

    // Act
    publish_inbound(&setup, &serde_json::json!({"poison": true})).await?;
    let channel = setup.publisher.connection().create_channel().await?;
    let dead = wait_for_message(&channel, &setup.target.dlq(), Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    consumer.stop().await?;

    // Assert
    let (_, headers) = dead.expect("the poison message is in the DLQ");
    assert_eq!(
        header_str(&headers, "x-first-death-reason").as_deref(),
        Some("delivery_limit")
    );
    assert_eq!(calls.load(Ordering::SeqCst), DEFAULT_DELIVERY_LIMIT + 1);
    assert_eq!(queue_len(&channel, &setup.target.queue).await?, 0);
    Ok(())
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_slow_handler_finish_and_ack() -> anyhow::Result<()> {
    // Arrange
    let setup = setup().await?;
    let finished = Arc::new(AtomicBool::new(false));
    let done = finished.clone();
    let (handler, mut seen) = recording(move |_| {
        let done = done.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            done.store(true, Ordering::SeqCst);
            Outcome::Ack
        }
    });
    let consumer = spawn_consumer(
        setup.consume.clone(),
        &setup.target.queue,
        ConsumerOptions::new(10, 4),
        handler,
    );
    publish_inbound(&setup, &serde_json::json!({"slow": true})).await?;
    next_seen(&mut seen, WAIT).await;

    // Act: shut down while the handler is still sleeping.
    let stop_started = Instant::now();
    consumer.stop().await?;

    // Assert: the stop waited for the handler, which acked; nothing is left to redeliver.
    assert!(
        finished.load(Ordering::SeqCst),
        "stopped before the handler finished"
    );
    assert!(stop_started.elapsed() >= Duration::from_millis(1000));
    let channel = setup.publisher.connection().create_channel().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(queue_len(&channel, &setup.target.queue).await?, 0);
    Ok(())
}

#[tokio::test]
async fn trace_context_travels_from_publisher_to_handler() -> anyhow::Result<()> {
    // Arrange
    let setup = setup().await?;
    let trace_id = TraceId::from_bytes(*b"wa-trace-test-01");
    let span_context = SpanContext::new(
        trace_id,
        SpanId::from_bytes(*b"span-001"),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    );
    let cx = opentelemetry::Context::new().with_remote_span_context(span_context);
    let (handler, mut seen) = recording(|_| async { Outcome::Ack });
    let consumer = spawn_consumer(
        setup.consume.clone(),
        &setup.target.queue,
        ConsumerOptions::new(10, 4),
        handler,
    );

    // Act: publish inside the trace (the current OpenTelemetry context).
    publish_inbound(&setup, &serde_json::json!({"traced": true}))
        .with_context(cx)
        .await?;
    let message = next_seen(&mut seen, WAIT).await;
    consumer.stop().await?;

    // Assert
    let span = message.trace_context.span();
    assert_eq!(span.span_context().trace_id(), trace_id);
    assert!(span.span_context().is_remote());
    Ok(())
}

#[tokio::test]
async fn dead_letter_that_cannot_be_published_is_given_back_instead_of_lost() -> anyhow::Result<()>
{
    // Arrange: without the DLQ the dead-letter copy is unroutable.
    let setup = setup().await?;
    let admin = setup.publisher.connection().create_channel().await?;
    admin
        .queue_delete(
            setup.target.dlq().as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await?;
    let (handler, mut seen) = recording(|_| async { Outcome::dead_letter("invalid_payload", "x") });
    let consumer = spawn_consumer(
        setup.consume.clone(),
        &setup.target.queue,
        ConsumerOptions::new(10, 4),
        handler,
    );

    // Act
    publish_inbound(&setup, &serde_json::json!({"kept": true})).await?;
    let first = next_seen(&mut seen, WAIT).await;
    wa_amqp::declare_topology(&admin, &wa_common::topology::topology()).await?;
    let second = next_seen(&mut seen, WAIT).await;
    let dead = wait_for_message(&admin, &setup.target.dlq(), WAIT).await?;
    consumer.stop().await?;

    // Assert: the first attempt was given back (redelivered), the second one parked it.
    assert!(!first.redelivered);
    assert!(second.redelivered);
    assert_eq!(second.message_id, first.message_id);
    assert!(
        dead.is_some(),
        "the message reached the DLQ once it existed"
    );
    assert_eq!(queue_len(&admin, &setup.target.queue).await?, 0);
    Ok(())
}

#[tokio::test]
async fn acks_of_later_deliveries_go_out_while_an_earlier_one_is_still_handled_and_never_cover_it()
-> anyhow::Result<()> {
    // Arrange: the first message's handler never finishes; the next 49 are acked at once (acks
    // are coalesced into `multiple` acks, which must not reach back over the first).
    let setup = setup().await?;
    let (handler, mut seen) = recording(|message| async move {
        if message.json::<serde_json::Value>().ok() == Some(serde_json::json!({"n": 0})) {
            std::future::pending::<()>().await;
        }
        Outcome::Ack
    });
    let mut options = ConsumerOptions::new(100, 100);
    options.drain_timeout = Duration::from_millis(500);
    let consumer = spawn_consumer(setup.consume.clone(), &setup.target.queue, options, handler);
    for n in 0..50 {
        publish_inbound(&setup, &serde_json::json!({ "n": n })).await?;
    }
    for _ in 0..50 {
        next_seen(&mut seen, WAIT).await;
    }

    // Act: stop with the first handler still running (the drain gives up on it).
    tokio::time::sleep(Duration::from_millis(200)).await;
    consumer.stop().await?;

    // Assert: only the unfinished message comes back.
    let channel = setup.publisher.connection().create_channel().await?;
    let (back, _) = wait_for_message(&channel, &setup.target.queue, WAIT)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the unfinished message did not come back"))?;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&back)?,
        serde_json::json!({"n": 0})
    );
    assert_eq!(queue_len(&channel, &setup.target.queue).await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_comes_back_after_every_connection_drop_however_busy_its_acks_were()
-> anyhow::Result<()> {
    // Arrange: the consume connection goes through a proxy that can drop it; the handler acks
    // at once, so acks are on their way whenever the connection drops. (A chaos run once saw a
    // consumer that never came back after the broker restarted under load.)
    let setup = setup().await?;
    let proxy = wa_testkit::proxy::TcpProxy::start("127.0.0.1:5672").await?;
    let consume =
        Arc::new(wa_amqp::connect(&proxy.rewrite_url(&setup.broker.amqp_url), "consume").await?);
    let (handler, mut seen) = recording(|_| async { Outcome::Ack });
    let consumer = spawn_consumer(
        consume,
        &setup.target.queue,
        ConsumerOptions::new(200, 64),
        handler,
    );

    for round in 0..12 {
        // Act: a burst being consumed and acked, and the connection dropped in the middle of it.
        for n in 0..300 {
            publish_inbound(&setup, &serde_json::json!({ "round": round, "n": n })).await?;
        }
        tokio::time::sleep(Duration::from_millis(round * 7 % 40)).await;
        proxy.cut();
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.restore();

        // Assert: a message published afterwards is handled (redeliveries of the burst may come
        // first).
        let marker = serde_json::json!({ "round": round, "marker": true });
        publish_inbound(&setup, &marker).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = tokio::time::timeout(left, seen.recv())
                .await
                .map_err(|_| anyhow::anyhow!("round {round}: the consumer did not come back"))?
                .expect("handler channel closed");
            if message.json::<serde_json::Value>().ok().as_ref() == Some(&marker) {
                break;
            }
        }
    }
    consumer.stop().await?;
    Ok(())
}

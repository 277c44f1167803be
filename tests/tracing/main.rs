//! One send followed through every hop by its spans, exported to an in-memory OpenTelemetry
//! exporter: the platform's publish → sender intake → sender dispatch → the Graph call, and the
//! status webhooks graph-mock then sends → ingress → conversation-sync → `outbound.status`.
//!
//! ingress, sender, conversation-sync and graph-mock (and reminder-scheduler) run in this process
//! on a vhost and a database of their own, under one global subscriber whose OpenTelemetry layer
//! exports every finished span (a test target of its own, because the subscriber is process-wide;
//! nextest also runs each test in a process of its own). The test plays the platform: it opens a root span and publishes a
//! send-job with that span's W3C context in the AMQP headers, then reads the `outbound.status`
//! events the platform would consume. It fails when any hop drops the context (a span whose parent
//! is not the previous hop's) and when a status's spans do not link back to the send.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a failing test should panic with context"
)]

#[path = "../support/mod.rs"]
#[allow(dead_code, reason = "the HTTP addresses are for the metrics test")]
mod support;

mod spans;

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{SpanId, SpanKind, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use wa_amqp::PublishOptions;
use wa_common::topology::{exchange, queue, routing, sender_dispatch_queue};

use crate::spans::Spans;
use crate::support::{Platform, System, TENANT, send_job};

/// The process-wide subscriber: everything at INFO and above goes to the in-memory exporter.
fn exporter() -> InMemorySpanExporter {
    static EXPORTER: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    EXPORTER
        .get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build();
            let subscriber = tracing_subscriber::registry()
                .with(tracing_subscriber::EnvFilter::new("info"))
                .with(
                    tracing_opentelemetry::layer().with_tracer(provider.tracer("wa-tracing-test")),
                )
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_test_writer()
                        .with_filter(tracing_subscriber::filter::LevelFilter::WARN),
                );
            tracing::subscriber::set_global_default(subscriber)
                .expect("the first subscriber of this process");
            (exporter, provider)
        })
        .0
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_send_is_a_parent_child_chain_and_its_status_webhooks_link_back_to_it() {
    // Arrange
    let exporter = exporter();
    let system = System::start().await;
    let mut platform = Platform::connect(&system.broker).await;
    let job_id = format!("trace-{}", uuid::Uuid::new_v4().simple());

    // Act: publish as the platform would, inside a root span of its own.
    let job = send_job(&job_id);
    let publish = tracing::info_span!("platform.publish", otel.kind = "producer");
    let published = platform.publisher.publish_json(
        exchange::COMMANDS,
        routing::SEND,
        &job,
        PublishOptions::default(),
    );
    tracing::Instrument::instrument(published, publish)
        .await
        .expect("send-job published");
    let mut statuses = Vec::new();
    for _ in ["sent", "delivered", "read"] {
        let (body, traceparent) = platform.next_status(&job_id).await;
        let traceparent = traceparent
            .unwrap_or_else(|| panic!("outbound.status {} has no traceparent", body["status"]));
        statuses.push((body, traceparent));
    }
    let spans = Spans::collect(&exporter, Duration::from_secs(10), |spans| {
        statuses
            .iter()
            .all(|(_, traceparent)| spans.by_traceparent(traceparent).is_some())
            && spans.named("graph.send").next().is_some()
    })
    .await;
    system.stop().await;

    // Assert: the send is one chain of parents and children.
    let root = spans.single("platform.publish", |_| true);
    assert_eq!(
        root.parent_span_id,
        SpanId::INVALID,
        "the platform span is a root"
    );
    let intake_consume = spans.consume_of(queue::SENDER_SEND, |s| spans.follows(s, root));
    spans.single("sender.intake", |s| spans.follows(s, intake_consume));
    let dispatch_queue = sender_dispatch_queue(TENANT, "transactional").name;
    let dispatch_consume = spans.consume_of(&dispatch_queue, |s| spans.follows(s, intake_consume));
    let dispatch = spans.single("sender.dispatch", |s| spans.follows(s, dispatch_consume));
    let graph_call = spans.single("graph.send", |s| spans.follows(s, dispatch));
    assert_eq!(graph_call.span_kind, SpanKind::Client);
    let send_trace = root.span_context.trace_id();
    for span in [intake_consume, dispatch_consume, dispatch, graph_call] {
        assert_eq!(
            span.span_context.trace_id(),
            send_trace,
            "{} is in the send's trace",
            span.name
        );
    }
    // conversation-sync took the sender's outcome inside the send's trace too.
    spans.consume_with_key(queue::SYNC_EVENTS, routing::OUTBOUND_ACCEPTED, |s| {
        spans.follows(s, dispatch_consume)
    });

    // Assert: each status is a chain of its own (webhook → ingress → sync → outbound.status) whose
    // sync span links to the send.
    let mut webhook_traces = Vec::new();
    for (body, traceparent) in &statuses {
        let status = body["status"].as_str().unwrap_or_default();
        let sync_consume = spans.by_traceparent(traceparent).unwrap_or_else(|| {
            panic!("the parent of outbound.status {status} ({traceparent}) was not exported")
        });
        assert_eq!(
            spans.destination_and_key(sync_consume),
            (queue::SYNC_EVENTS, routing::INBOUND_STATUS),
            "outbound.status {status} is published from the consume span of its inbound.status"
        );
        let webhook = spans.parent_of(sync_consume).unwrap_or_else(|| {
            panic!("the inbound.status span of {status} has no exported parent")
        });
        assert_eq!(
            webhook.name, "webhook.receive",
            "{status}: parent is the request"
        );
        assert_eq!(webhook.span_kind, SpanKind::Server);
        assert_eq!(
            webhook.parent_span_id,
            SpanId::INVALID,
            "{status}: Meta's webhook starts a trace (no context from graph-mock)"
        );
        assert_ne!(webhook.span_context.trace_id(), send_trace);
        let links: Vec<_> = sync_consume
            .links
            .iter()
            .map(|link| (link.span_context.trace_id(), link.span_context.span_id()))
            .collect();
        assert!(
            links.contains(&(send_trace, dispatch_consume.span_context.span_id())),
            "{status}: the status span links to the send's dispatch span; links: {links:?}"
        );
        webhook_traces.push(webhook.span_context.trace_id());
    }
    webhook_traces.dedup();
    assert_eq!(webhook_traces.len(), 3, "one trace per status webhook");
}

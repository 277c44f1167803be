//! With an OpenTelemetry layer installed (as `wa_service::telemetry` does when an OTLP endpoint is
//! set), every event carries the request span's own W3C trace context.

use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::layer::SubscriberExt as _;

use crate::helpers::{APP_SECRET, Spawn, spawn_app};
use crate::payloads;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_carry_the_request_spans_sampled_trace_context_when_tracing_is_exported() {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("ingress-test")));
    // nextest runs each test in its own process, so the global subscriber is this test's alone.
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber of this process");
    let app = spawn_app(Spawn::default()).await;

    let first = app
        .post_signed(payloads::batch().to_string().as_bytes(), APP_SECRET)
        .await;
    let first_events = app.published().await;
    let second = app
        .post_signed(payloads::batch().to_string().as_bytes(), APP_SECRET)
        .await;
    let second_events = app.published().await;

    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let trace_ids = |events: &[crate::helpers::Taken]| -> Vec<String> {
        events
            .iter()
            .map(|m| {
                let traceparent = m.header("traceparent").expect("traceparent");
                // A span sampled by the SDK (flags 01), unlike the unsampled fallback context.
                assert!(traceparent.ends_with("-01"), "{traceparent}");
                traceparent.split('-').nth(1).unwrap().to_owned()
            })
            .collect()
    };
    let (first_ids, second_ids) = (trace_ids(&first_events), trace_ids(&second_events));
    assert_eq!(first_ids.len(), 9);
    assert!(
        first_ids.iter().all(|id| *id == first_ids[0]),
        "one trace per request"
    );
    assert!(second_ids.iter().all(|id| *id == second_ids[0]));
    assert_ne!(first_ids[0], second_ids[0], "a new trace per request");
}

//! Every service's `/metrics`, scraped over HTTP after some real traffic and parsed with a strict
//! exposition-format parser ([`exposition`]): the families the dashboard and the alerts use exist,
//! with the expected types and labels, and names and labels follow one convention across services
//! (`wa_<service>_<thing>`, counters end in `_total`, the tenant is always `tenant`, the business
//! number always `phone_number_id`, a failure's cause always `reason`).
//!
//! The services run in this process ([`support::System`]), so they share one metrics registry and
//! every endpoint renders all of it; each endpoint is still scraped and parsed on its own, and each
//! service's own families are looked for on its own endpoint. (nextest runs every test in a
//! process of its own, so no other test's metrics show up here.)

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a failing test should panic with context"
)]

#[path = "../support/mod.rs"]
mod support;

mod exposition;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use wa_amqp::PublishOptions;
use wa_common::topology::{exchange, queue, routing, sender_dispatch_queue};

use crate::exposition::{Family, Kind};
use crate::support::{Platform, System, TENANT, contract_example, send_job};

/// One family a service must export.
struct Expected {
    name: &'static str,
    kind: Kind,
    /// Exactly the label names of its series (besides `le`/`quantile`).
    labels: &'static [&'static str],
    /// A series that must exist (label values), when the traffic guarantees one.
    series: &'static [(&'static str, &'static str)],
}

const fn family(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    series: &'static [(&'static str, &'static str)],
) -> Expected {
    Expected {
        name,
        kind,
        labels,
        series,
    }
}

const PHONE: &str = wa_graph_mock::config::DEFAULT_PHONE_NUMBER_ID;

fn expectations() -> Vec<(&'static str, Vec<Expected>)> {
    use Kind::{Counter, Gauge, Histogram};
    vec![
        (
            "ingress",
            vec![
                family(
                    "wa_ingress_requests_total",
                    Counter,
                    &["outcome"],
                    &[("outcome", "signature_mismatch")],
                ),
                family(
                    "wa_ingress_request_duration_seconds",
                    Histogram,
                    &["outcome"],
                    &[("outcome", "accepted")],
                ),
                family(
                    "wa_ingress_events_total",
                    Counter,
                    &["kind", "phone_number_id"],
                    &[("kind", "status"), ("phone_number_id", PHONE)],
                ),
                family(
                    "wa_ingress_publish_confirm_seconds",
                    Histogram,
                    &["result"],
                    &[("result", "confirmed")],
                ),
            ],
        ),
        (
            "sender",
            vec![
                family(
                    "wa_sender_sent_total",
                    Counter,
                    &["tenant"],
                    &[("tenant", TENANT)],
                ),
                family(
                    "wa_sender_failed_total",
                    Counter,
                    &["reason", "tenant"],
                    &[("reason", "invalid_recipient"), ("tenant", TENANT)],
                ),
                family(
                    "wa_sender_rate_per_second",
                    Gauge,
                    &["phone_number_id"],
                    &[("phone_number_id", PHONE)],
                ),
                family(
                    "wa_sender_tenant_paused",
                    Gauge,
                    &["tenant"],
                    &[("tenant", TENANT)],
                ),
                family(
                    "wa_sender_queue_lag_seconds",
                    Histogram,
                    &["tenant"],
                    &[("tenant", TENANT)],
                ),
                family(
                    "wa_queue_depth",
                    Gauge,
                    &["queue"],
                    &[("queue", queue::SENDER_SEND)],
                ),
                family(
                    "wa_queue_oldest_message_age_seconds",
                    Gauge,
                    &["queue"],
                    &[("queue", queue::SENDER_SEND)],
                ),
            ],
        ),
        (
            "conversation-sync",
            vec![
                family(
                    "wa_sync_events_total",
                    Counter,
                    &["kind", "outcome", "tenant"],
                    &[
                        ("kind", "inbound_status"),
                        ("tenant", TENANT),
                        ("outcome", "ack"),
                    ],
                ),
                family(
                    "wa_sync_statuses_total",
                    Counter,
                    &["status", "tenant"],
                    &[("status", "read"), ("tenant", TENANT)],
                ),
                family("wa_sync_event_to_commit_seconds", Histogram, &[], &[]),
                family(
                    "wa_queue_depth",
                    Gauge,
                    &["queue"],
                    &[("queue", queue::SYNC_EVENTS)],
                ),
                family(
                    "wa_queue_oldest_message_age_seconds",
                    Gauge,
                    &["queue"],
                    &[("queue", queue::SYNC_EVENTS)],
                ),
            ],
        ),
        (
            "reminder-scheduler",
            vec![
                family("wa_scheduler_reminders_due", Gauge, &[], &[]),
                family("wa_scheduler_tick_seconds", Histogram, &[], &[]),
                family(
                    "wa_scheduler_events_total",
                    Counter,
                    &["outcome", "routing_key"],
                    &[("routing_key", routing::JAMAAH_UPSERTED)],
                ),
                family(
                    "wa_queue_depth",
                    Gauge,
                    &["queue"],
                    &[("queue", queue::SCHEDULER_EVENTS)],
                ),
                family(
                    "wa_queue_oldest_message_age_seconds",
                    Gauge,
                    &["queue"],
                    &[("queue", queue::SCHEDULER_EVENTS)],
                ),
            ],
        ),
    ]
}

/// What is missing or wrong for one service's expected families in its scrape.
fn problems(
    service: &str,
    families: &BTreeMap<String, Family>,
    expected: &[Expected],
) -> Vec<String> {
    let mut problems = Vec::new();
    for want in expected {
        let Some(found) = families.get(want.name) else {
            problems.push(format!("{service}: no {}", want.name));
            continue;
        };
        if found.kind != want.kind {
            problems.push(format!(
                "{service}: {} is {:?}, not {:?}",
                want.name, found.kind, want.kind
            ));
        }
        let labels: Vec<&str> = found.label_names().into_iter().collect();
        if labels != want.labels {
            problems.push(format!(
                "{service}: {} has labels {labels:?}, not {:?}",
                want.name, want.labels
            ));
        }
        if !want.series.is_empty() && !found.has_series(want.series) {
            problems.push(format!(
                "{service}: {} has no series {:?}",
                want.name, want.series
            ));
        }
    }
    problems
}

/// Names and labels every family of every service must follow.
fn convention_problems(families: &BTreeMap<String, Family>) -> Vec<String> {
    let mut problems = Vec::new();
    for family in families.values() {
        let name = &family.name;
        let well_formed = name.strip_prefix("wa_").is_some_and(|rest| {
            rest.starts_with(|c: char| c.is_ascii_lowercase())
                && rest
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        });
        if !well_formed {
            problems.push(format!("{name}: not wa_<lowercase snake case>"));
        }
        if (family.kind == Kind::Counter) != name.ends_with("_total") {
            problems.push(format!(
                "{name}: only counters end in _total ({:?})",
                family.kind
            ));
        }
        // The queue gauges are shared by every worker: they say what they mean.
        if name.starts_with("wa_queue_") && family.help.is_none() {
            problems.push(format!("{name}: no HELP text"));
        }
        for label in family.label_names() {
            let consistent = match label {
                l if l.contains("tenant") => l == "tenant",
                l if l.contains("phone") || l.contains("number") => l == "phone_number_id",
                l if l.contains("reason") || l.contains("error") || l.contains("cause") => {
                    l == "reason"
                }
                _ => true,
            };
            if !consistent {
                problems.push(format!(
                    "{name}: label {label} (use tenant, phone_number_id, reason)"
                ));
            }
        }
        for sample in &family.samples {
            if let Some(phone) = sample.labels.get("phone_number_id")
                && !(phone == "none" || phone.chars().all(|c| c.is_ascii_digit()))
            {
                problems.push(format!(
                    "{name}: phone_number_id {phone:?} is not a number id"
                ));
            }
        }
    }
    problems
}

async fn scrape(http: &reqwest::Client, addr: std::net::SocketAddr) -> BTreeMap<String, Family> {
    let response = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("/metrics answers");
    assert_eq!(response.status(), 200, "/metrics of {addr}");
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "content type {content_type:?}"
    );
    let text = response.text().await.expect("body");
    let families = exposition::parse(&text)
        .unwrap_or_else(|error| panic!("/metrics of {addr} does not parse: {error}\n{text}"));
    families.into_iter().map(|f| (f.name.clone(), f)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_exports_parseable_metrics_with_consistent_names_and_labels() {
    // Arrange: a send that goes all the way to "read", a job that fails, a forged webhook and a
    // platform event, so every family the dashboard uses has a series.
    let system = System::start().await;
    let mut platform = Platform::connect(&system.broker).await;
    let job_id = format!("metrics-{}", uuid::Uuid::new_v4().simple());
    platform
        .publisher
        .publish_json(
            exchange::COMMANDS,
            routing::SEND,
            &send_job(&job_id),
            PublishOptions::default(),
        )
        .await
        .expect("send-job published");
    let mut bad_job = send_job(&format!("{job_id}-bad"));
    bad_job["to"] = json!("not a phone number");
    platform
        .publisher
        .publish_json(
            exchange::COMMANDS,
            routing::SEND,
            &bad_job,
            PublishOptions::default(),
        )
        .await
        .expect("bad send-job published");
    platform
        .publisher
        .publish_json(
            exchange::PLATFORM_EVENTS,
            routing::JAMAAH_UPSERTED,
            &contract_example(routing::JAMAAH_UPSERTED),
            PublishOptions::default(),
        )
        .await
        .expect("platform event published");
    let http = reqwest::Client::new();
    let forged = http
        .post(format!(
            "http://{}/api/v1/whatsapp/webhook",
            system.addresses.ingress
        ))
        .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
        .body(r#"{"object":"whatsapp_business_account","entry":[]}"#)
        .send()
        .await
        .expect("ingress answers");
    assert_eq!(forged.status(), 401);
    for _ in ["sent", "delivered", "read"] {
        platform.next_status(&job_id).await;
    }

    // Act: scrape until every expectation holds (the queue samplers report every 5 s) or time is up.
    let dispatch = sender_dispatch_queue(TENANT, "transactional").name;
    let depths = [
        // The invalid job is the one dead letter; everything else was consumed.
        ("sender.send.dlq", 1.0),
        (queue::SENDER_SEND, 0.0),
        (dispatch.as_str(), 0.0),
    ];
    let depth_problems = |families: &BTreeMap<String, Family>| -> Vec<String> {
        let Some(depth) = families.get("wa_queue_depth") else {
            return vec!["no wa_queue_depth".to_owned()];
        };
        depths
            .iter()
            .filter_map(|(queue, want)| {
                let got = depth.value(&[("queue", queue)]);
                (got != Some(*want))
                    .then(|| format!("wa_queue_depth{{queue={queue:?}}} is {got:?}, not {want}"))
            })
            .collect()
    };
    let services = [
        ("ingress", system.addresses.ingress),
        ("sender", system.addresses.sender),
        ("conversation-sync", system.addresses.sync),
        ("reminder-scheduler", system.addresses.scheduler),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (missing, scraped) = loop {
        let mut missing = Vec::new();
        let mut scraped = Vec::new();
        for ((service, addr), (_, expected)) in services.iter().zip(expectations()) {
            let families = scrape(&http, *addr).await;
            missing.extend(problems(service, &families, &expected));
            if *service == "sender" {
                missing.extend(depth_problems(&families));
            }
            scraped.push((*service, families));
        }
        if missing.is_empty() || tokio::time::Instant::now() >= deadline {
            break (missing, scraped);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    system.stop().await;

    // Assert
    assert!(
        missing.is_empty(),
        "missing or wrong families or values:\n{}",
        missing.join("\n")
    );
    for (service, families) in &scraped {
        let problems = convention_problems(families);
        assert!(problems.is_empty(), "{service}:\n{}", problems.join("\n"));
    }
}

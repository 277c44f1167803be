//! Scripted recipients: deterministic outcomes for the sender's tests.

use std::time::{Duration, Instant};

use serde_json::json;
use wa_graph_mock::{Script, number_for};

use crate::helpers::*;

#[tokio::test]
async fn the_undeliverable_number_answers_131026_synchronously() {
    let t = TestMock::start().await;

    let got = t
        .send(text_to(&number_for(Script::Undeliverable), "x"))
        .await;

    assert_meta_error(&got, 400, 131_026);
}

#[tokio::test]
async fn scripted_numbers_match_whatever_form_to_has() {
    let t = TestMock::start().await;

    for form in [
        "+6281100000101",
        "+62 811-0000-0101",
        "6281100000101",
        "081100000101",
    ] {
        let got = t.send(text_to(form, "x")).await;
        assert_meta_error(&got, 400, 131_026);
    }
}

#[tokio::test]
async fn the_closed_window_number_refuses_free_form_with_131047_but_accepts_templates() {
    let t = TestMock::start().await;
    let number = number_for(Script::WindowClosedSync);

    let text = t.send(text_to(&number, "Halo")).await;
    let template = t
        .send(template_to(&number, "payment_reminder", &reminder_params()))
        .await;

    assert_meta_error(&text, 400, 131_047);
    assert_eq!(template.0, 200, "{}", template.1);
}

#[tokio::test]
async fn the_async_closed_window_number_accepts_then_sends_a_failed_status_with_131047() {
    let receiver = Receiver::start().await;
    let t = TestMock::with_webhook(&receiver, |_| {}).await;
    let number = number_for(Script::WindowClosedAsync);

    let (status, body) = t.send(text_to(&number, "Halo")).await;
    assert_eq!(status, 200, "{body}");
    let wamid = body["messages"][0]["id"]
        .as_str()
        .expect("wamid")
        .to_owned();
    let statuses = receiver.wait_statuses(&wamid, 1).await;

    assert_eq!(statuses.len(), 1);
    let failed = &statuses[0];
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["recipient_id"], "6281100000103");
    let error = &failed["errors"][0];
    assert_eq!(error["code"], 131_047);
    assert_eq!(error["title"], "Re-engagement message");
    assert_eq!(error["message"], "Re-engagement message");
    assert!(
        error["error_data"]["details"]
            .as_str()
            .is_some_and(|d| d.contains("24 hours"))
    );
    assert!(error["href"].is_string());
    assert!(failed.get("pricing").is_none());
}

#[tokio::test]
async fn the_async_closed_window_number_delivers_templates_normally() {
    let receiver = Receiver::start().await;
    let t = TestMock::with_webhook(&receiver, |_| {}).await;

    let (_, body) = t
        .send(template_to(
            &number_for(Script::WindowClosedAsync),
            "payment_reminder",
            &reminder_params(),
        ))
        .await;
    let wamid = body["messages"][0]["id"]
        .as_str()
        .expect("wamid")
        .to_owned();
    let statuses = receiver.wait_statuses(&wamid, 3).await;

    let names: Vec<&str> = statuses
        .iter()
        .filter_map(|s| s["status"].as_str())
        .collect();
    assert_eq!(names, ["sent", "delivered", "read"]);
}

#[tokio::test]
async fn the_transient_number_fails_twice_with_131000_then_succeeds_per_recipient_and_body() {
    let t = TestMock::start().await;
    let number = number_for(Script::Transient);
    let first_body = text_to(&number, "Pengingat cicilan");

    let first = t.send(first_body.clone()).await;
    let second = t.send(first_body.clone()).await;
    let other_body = t.send(text_to(&number, "Pesan lain")).await;
    let third = t.send(first_body).await;

    assert_meta_error(&first, 500, 131_000);
    assert_meta_error(&second, 500, 131_000);
    assert_meta_error(&other_body, 500, 131_000);
    assert_eq!(third.0, 200, "{}", third.1);
}

#[tokio::test]
async fn the_slow_number_answers_after_the_slow_delay_and_its_statuses_still_arrive() {
    let receiver = Receiver::start().await;
    let t = TestMock::with_webhook(&receiver, |c| c.slow_delay = Duration::from_millis(800)).await;
    let number = number_for(Script::Slow);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");

    let started = Instant::now();
    let timed_out = impatient
        .post(t.url(&format!("/v24.0/{PNID}/messages")))
        .bearer_auth(TOKEN)
        .json(&text_to(&number, "Halo"))
        .send()
        .await;
    assert!(timed_out.expect_err("client timeout").is_timeout());
    let posts = receiver
        .wait_for(
            Duration::from_secs(5),
            "statuses of the timed-out send",
            |posts| {
                posts
                    .iter()
                    .flat_map(Post::statuses)
                    .filter(|s| s["recipient_id"] == "6281100000105")
                    .count()
                    >= 3
            },
        )
        .await;
    assert!(!posts.is_empty());

    let patient = t.send(text_to(&number, "Halo lagi")).await;
    assert_eq!(patient.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(800));
}

#[tokio::test]
async fn the_pair_limited_and_throttled_numbers_fail_once_then_succeed() {
    let t = TestMock::start().await;

    let pair = [
        t.send(text_to(&number_for(Script::PairLimitedOnce), "x"))
            .await,
        t.send(text_to(&number_for(Script::PairLimitedOnce), "x"))
            .await,
    ];
    let throttled = [
        t.send(text_to(&number_for(Script::ThrottledOnce), "x"))
            .await,
        t.send(text_to(&number_for(Script::ThrottledOnce), "x"))
            .await,
    ];

    assert_meta_error(&pair[0], 400, 131_056);
    assert_eq!(pair[1].0, 200);
    assert_meta_error(&throttled[0], 400, 130_429);
    assert_eq!(throttled[1].0, 200);
    let stats = t.stats().await;
    assert_eq!(
        stats["phone_numbers"][PNID]["rate_limited_130429"], 0,
        "scripted throttles are not limiter hits"
    );
    assert_eq!(stats["phone_numbers"][PNID]["pair_rate_limited_131056"], 0);
}

#[tokio::test]
async fn scripted_numbers_are_exempt_from_the_pair_rate() {
    let t = TestMock::with(|c| c.pair_interval = Duration::from_secs(60)).await;

    let a = t.send(text_to(&number_for(Script::Success), "a")).await;
    let b = t.send(text_to(&number_for(Script::Success), "b")).await;

    assert_eq!((a.0, b.0), (200, 200));
}

#[tokio::test]
async fn status_scripts_shape_the_webhook_sequence() {
    let receiver = Receiver::start().await;
    let t = TestMock::with_webhook(&receiver, |_| {}).await;
    let cases = [
        (Script::DeliveredNotRead, vec!["sent", "delivered"]),
        (Script::ReadWithoutDelivered, vec!["sent", "read"]),
        (Script::UndeliverableAsync, vec!["failed"]),
    ];

    for (script, expected) in cases {
        let (status, body) = t.send(text_to(&number_for(script), "x")).await;
        assert_eq!(status, 200);
        let wamid = body["messages"][0]["id"]
            .as_str()
            .expect("wamid")
            .to_owned();
        let statuses = receiver.wait_statuses(&wamid, expected.len()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let statuses_later = receiver.statuses_of(&wamid);
        assert_eq!(
            statuses.len(),
            statuses_later.len(),
            "{script:?} sent extra statuses"
        );
        let names: Vec<&str> = statuses
            .iter()
            .filter_map(|s| s["status"].as_str())
            .collect();
        assert_eq!(names, expected, "{script:?}");
        if script == Script::UndeliverableAsync {
            assert_eq!(statuses[0]["errors"][0]["code"], json!(131_026));
        }
        if script == Script::ReadWithoutDelivered {
            assert!(
                statuses[1]["pricing"].is_object(),
                "pricing moves to read when delivered is skipped"
            );
        }
    }
}

#[tokio::test]
async fn the_scripted_table_is_served_by_the_control_api() {
    let t = TestMock::start().await;

    let (status, body) = t.get("/_mock/scripted").await;

    assert_eq!(status, 200);
    assert_eq!(
        body["scripted"][1],
        json!({"number": "+6281100000101", "script": "undeliverable"})
    );
}

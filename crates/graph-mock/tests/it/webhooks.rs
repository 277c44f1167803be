//! Status webhooks: envelope, signature, pricing, delay, order, duplicates, batching and retries.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::*;

fn wamid_of(body: &Value) -> String {
    body["messages"][0]["id"]
        .as_str()
        .expect("wamid")
        .to_owned()
}

#[tokio::test]
async fn an_accepted_template_produces_signed_sent_delivered_read_in_metas_envelope() {
    let receiver = Receiver::start().await;
    let t = TestMock::with_webhook(&receiver, |_| {}).await;
    let mut request = template_to(JAMAAH, "payment_reminder", &reminder_params());
    request["biz_opaque_callback_data"] = json!("reminder:INV2026-0142:h-7");

    let (_, body) = t.send(request).await;
    let wamid = wamid_of(&body);
    let statuses = receiver.wait_statuses(&wamid, 3).await;

    for post in receiver.posts() {
        assert!(
            post.signature_valid,
            "signature over the raw bytes: {:?}",
            post.signature
        );
        assert_eq!(post.content_type.as_deref(), Some("application/json"));
        let json = &post.json;
        assert_eq!(json["object"], "whatsapp_business_account");
        assert_eq!(json["entry"][0]["id"], WABA);
        assert!(
            json["entry"][0].get("time").is_none(),
            "messages webhooks carry no entry.time"
        );
        let change = &json["entry"][0]["changes"][0];
        assert_eq!(change["field"], "messages");
        assert_eq!(change["value"]["messaging_product"], "whatsapp");
        assert_eq!(
            change["value"]["metadata"],
            json!({"display_phone_number": "6221555000111", "phone_number_id": PNID})
        );
    }
    let names: Vec<&str> = statuses
        .iter()
        .filter_map(|s| s["status"].as_str())
        .collect();
    assert_eq!(names, ["sent", "delivered", "read"]);
    let utility =
        json!({"billable": true, "pricing_model": "PMP", "type": "regular", "category": "utility"});
    assert_eq!(statuses[0]["pricing"], utility);
    assert_eq!(statuses[1]["pricing"], utility);
    assert!(
        statuses[2].get("pricing").is_none(),
        "pricing on sent and one of delivered/read, never both"
    );
    for s in &statuses {
        assert_eq!(s["id"], wamid.as_str());
        assert_eq!(s["recipient_id"], "6281234567890");
        assert_eq!(s["biz_opaque_callback_data"], "reminder:INV2026-0142:h-7");
        assert!(
            s["timestamp"]
                .as_str()
                .is_some_and(|ts| ts.parse::<i64>().is_ok()),
            "timestamp is a string"
        );
    }
}

#[tokio::test]
async fn free_form_messages_are_priced_as_free_service() {
    let receiver = Receiver::start().await;
    let t = TestMock::with_webhook(&receiver, |_| {}).await;

    let (_, body) = t.send(text_to(JAMAAH, "Wa'alaikumsalam")).await;
    let statuses = receiver.wait_statuses(&wamid_of(&body), 3).await;

    assert_eq!(
        statuses[0]["pricing"],
        json!({"billable": false, "pricing_model": "PMP", "type": "free_customer_service", "category": "service"})
    );
    assert!(statuses[0].get("biz_opaque_callback_data").is_none());
}

#[tokio::test]
async fn statuses_wait_for_the_configured_delay() {
    let receiver = Receiver::start().await;
    let t =
        TestMock::with_webhook(&receiver, |c| c.status_delay = Duration::from_millis(150)).await;
    let started = Instant::now();

    let (_, body) = t.send(text_to(JAMAAH, "x")).await;
    let wamid = wamid_of(&body);
    receiver.wait_statuses(&wamid, 1).await;
    let first = started.elapsed();
    receiver.wait_statuses(&wamid, 3).await;
    let all = started.elapsed();

    assert!(
        first >= Duration::from_millis(140),
        "sent came after {first:?}"
    );
    assert!(all >= Duration::from_millis(440), "read came after {all:?}");
}

#[tokio::test]
async fn the_out_of_order_option_sends_read_before_delivered() {
    let receiver = Receiver::start().await;
    let t = TestMock::with_webhook(&receiver, |c| {
        c.out_of_order = true;
        c.status_delay = Duration::from_millis(30);
    })
    .await;

    let (_, body) = t.send(text_to(JAMAAH, "x")).await;
    let statuses = receiver.wait_statuses(&wamid_of(&body), 3).await;

    let names: Vec<&str> = statuses
        .iter()
        .filter_map(|s| s["status"].as_str())
        .collect();
    assert_eq!(names, ["sent", "read", "delivered"]);
    let ts = |i: usize| {
        statuses[i]["timestamp"]
            .as_str()
            .and_then(|t| t.parse::<i64>().ok())
            .expect("ts")
    };
    assert!(
        ts(1) >= ts(2),
        "the read event itself still happened after delivery"
    );
}

#[tokio::test]
async fn the_duplicate_option_sends_every_status_twice() {
    let receiver = Receiver::start().await;
    let t = TestMock::with_webhook(&receiver, |c| c.duplicate_statuses = true).await;

    let (_, body) = t.send(text_to(JAMAAH, "x")).await;
    let statuses = receiver.wait_statuses(&wamid_of(&body), 6).await;

    for name in ["sent", "delivered", "read"] {
        assert_eq!(
            statuses.iter().filter(|s| s["status"] == name).count(),
            2,
            "{name}"
        );
    }
    assert!(
        receiver.accepted_posts().len() >= 2,
        "duplicates come in a later POST"
    );
}

#[tokio::test]
async fn statuses_that_fall_due_together_are_batched_into_one_post() {
    let receiver = Receiver::start().await;
    receiver.hold_next(400);
    let t = TestMock::with_webhook(&receiver, |c| c.status_delay = Duration::from_millis(50)).await;

    for _ in 0..10 {
        let (status, _) = t.send(text_to(&unique_number(), "Pengingat")).await;
        assert_eq!(status, 200);
    }
    let posts = receiver
        .wait_for(Duration::from_secs(5), "30 statuses", |posts| {
            posts.iter().map(|p| p.statuses().len()).sum::<usize>() >= 30
        })
        .await;

    let largest = posts.iter().map(|p| p.statuses().len()).max().unwrap_or(0);
    assert!(
        largest >= 20,
        "statuses due while our webhook was busy come in one POST; largest {largest}"
    );
    assert!(posts.len() < 10, "{} posts", posts.len());
}

#[tokio::test]
async fn delivery_is_retried_with_backoff_when_our_webhook_answers_500() {
    let receiver = Receiver::start().await;
    receiver.fail_next(2);
    let t = TestMock::with_webhook(&receiver, |_| {}).await;

    let (_, body) = t.send(text_to(JAMAAH, "x")).await;
    let wamid = wamid_of(&body);
    receiver.wait_statuses(&wamid, 3).await;

    let posts = receiver.posts();
    assert!(posts.iter().filter(|p| p.answered == 500).count() == 2);
    let first_failed = &posts[0];
    let retried = posts
        .iter()
        .skip(1)
        .find(|p| p.answered == 200 && p.raw == first_failed.raw);
    assert!(
        retried.is_some(),
        "the failed POST is re-sent byte for byte"
    );
    let stats = t.stats().await;
    assert!(
        stats["webhooks"]["attempts_failed"].as_u64() >= Some(2),
        "{stats}"
    );
    assert_eq!(stats["webhooks"]["deliveries_abandoned"], 0);
}

#[tokio::test]
async fn delivery_gives_up_after_the_configured_attempts() {
    let receiver = Receiver::start().await;
    receiver.fail_next(100);
    let t = TestMock::with_webhook(&receiver, |c| c.webhook_max_attempts = 2).await;

    t.send(text_to(JAMAAH, "x")).await;
    let started = Instant::now();
    loop {
        let stats = t.stats().await;
        if stats["webhooks"]["deliveries_abandoned"].as_u64() >= Some(1) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never abandoned: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, log) = t.get("/_mock/webhooks").await;
    assert!(
        log["deliveries"]
            .as_array()
            .is_some_and(|d| d.iter().any(|e| e["attempt"] == 2))
    );
}

#[tokio::test]
async fn without_a_webhook_url_statuses_are_skipped_and_counted() {
    let t = TestMock::start().await;

    t.send(text_to(JAMAAH, "x")).await;
    let started = Instant::now();
    while t.stats().await["webhooks"]["skipped_no_url"].as_u64() < Some(1) {
        assert!(started.elapsed() < Duration::from_secs(3));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_webhook_url_can_be_set_at_run_time() {
    let receiver = Receiver::start().await;
    let t = TestMock::start().await;
    let (status, _) = t
        .http
        .patch(t.url("/_mock/config"))
        .json(&json!({"webhook_url": receiver.url, "app_secret": SECRET}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .expect("patched");
    assert_eq!(status, 200);

    let (_, body) = t.send(text_to(JAMAAH, "x")).await;

    receiver.wait_statuses(&wamid_of(&body), 3).await;
}

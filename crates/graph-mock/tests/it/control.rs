//! The fault API, the request recorder and the statistics.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn an_error_fault_applies_count_times_with_its_code_and_status() {
    let t = TestMock::with(|c| c.pair_interval = Duration::ZERO).await;

    let (status, _) = t
        .post(
            "/_mock/faults",
            json!({"mode": "error", "code": 131000, "http_status": 500, "count": 2}),
        )
        .await;
    assert_eq!(status, 201);
    let first = t.send(text_to(JAMAAH, "x")).await;
    let second = t.send(text_to(JAMAAH, "x")).await;
    let third = t.send(text_to(JAMAAH, "x")).await;

    assert_meta_error(&first, 500, 131_000);
    assert_meta_error(&second, 500, 131_000);
    assert_eq!(third.0, 200);
    assert_eq!(t.stats().await["faults_applied"], 2);
}

#[tokio::test]
async fn an_error_fault_defaults_to_metas_status_for_the_code() {
    let t = TestMock::start().await;

    t.post("/_mock/faults", json!({"mode": "error", "code": 131048}))
        .await;
    let got = t.send(text_to(JAMAAH, "x")).await;

    assert_meta_error(&got, 400, 131_048);
}

#[tokio::test]
async fn a_throttle_fault_answers_130429() {
    let t = TestMock::start().await;

    t.post("/_mock/faults", json!({"mode": "throttle", "count": 1}))
        .await;
    let got = t.send(text_to(JAMAAH, "x")).await;

    assert_meta_error(&got, 400, 130_429);
    assert_eq!(
        t.stats().await["phone_numbers"][PNID]["rate_limited_130429"],
        0,
        "injected, not a limiter hit"
    );
}

#[tokio::test]
async fn a_slow_fault_delays_the_answer_but_accepts() {
    let t = TestMock::start().await;

    t.post(
        "/_mock/faults",
        json!({"mode": "slow", "delay_ms": 300, "count": 1}),
    )
    .await;
    let started = Instant::now();
    let got = t.send(text_to(JAMAAH, "x")).await;

    assert_eq!(got.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn faults_can_target_one_recipient() {
    let t = TestMock::start().await;

    t.post(
        "/_mock/faults",
        json!({"mode": "error", "code": 131026, "to": "0812-9999-0000", "count": 5}),
    )
    .await;
    let other = t.send(text_to(JAMAAH, "x")).await;
    let target = t.send(text_to("+6281299990000", "x")).await;

    assert_eq!(other.0, 200);
    assert_meta_error(&target, 400, 131_026);
}

#[tokio::test]
async fn a_token_invalid_fault_lasts_until_cleared() {
    let t = TestMock::with(|c| c.pair_interval = Duration::ZERO).await;

    t.post(
        "/_mock/faults",
        json!({"mode": "token_invalid", "until_cleared": true}),
    )
    .await;
    let first = t.send(text_to(JAMAAH, "x")).await;
    let second = t.get(&format!("/v24.0/{WABA}/message_templates")).await;
    let (_, faults) = t.get("/_mock/faults").await;
    let cleared = t.delete("/_mock/faults").await;
    let after = t.send(text_to(JAMAAH, "x")).await;

    assert_meta_error(&first, 401, 190);
    assert_meta_error(&second, 401, 190);
    assert_eq!(faults["faults"].as_array().map(Vec::len), Some(1));
    assert_eq!(cleared, 204);
    assert_eq!(after.0, 200);
}

#[tokio::test]
async fn requests_are_recorded_without_token_values_and_can_be_filtered() {
    let t = TestMock::with(|c| c.pair_interval = Duration::ZERO).await;
    let (_, accepted) = t.send(text_to(JAMAAH, "Pengingat")).await;
    t.send_as(Some("wrong-token"), PNID, text_to(JAMAAH, "x"))
        .await;
    t.send_as(None, PNID, text_to(JAMAAH, "x")).await;
    t.get(&format!("/v24.0/{WABA}/message_templates")).await;

    let (_, all) = t.get("/_mock/requests?path_contains=/messages").await;
    let requests = all["requests"].as_array().expect("requests");

    assert_eq!(requests.len(), 3);
    let first = &requests[0];
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], format!("/v24.0/{PNID}/messages"));
    assert_eq!(first["status"], 200);
    assert_eq!(first["wamid"], accepted["messages"][0]["id"]);
    assert_eq!(first["body"]["text"]["body"], "Pengingat");
    assert_eq!(first["bearer_present"], true);
    assert_eq!(first["token_label"], "token-1");
    assert!(first["headers"].get("authorization").is_none());
    assert!(first["received_at"].is_string());
    assert_eq!(requests[1]["status"], 401);
    assert_eq!(requests[1]["error_code"], 190);
    assert_eq!(requests[1]["bearer_present"], true);
    assert!(requests[1]["token_label"].is_null());
    assert_eq!(requests[2]["bearer_present"], false);
    assert!(
        !all.to_string().contains("graph-mock-token"),
        "token values never appear"
    );
    assert!(!all.to_string().contains("wrong-token"));

    let since = first["seq"].as_u64().expect("seq");
    let (_, later) = t.get(&format!("/_mock/requests?since={since}")).await;
    assert_eq!(later["requests"].as_array().map(Vec::len), Some(3));
    let (_, by_time) = t
        .get(&format!(
            "/_mock/requests?since={}",
            urlencode(first["received_at"].as_str().expect("time"))
        ))
        .await;
    assert!(by_time["requests"].as_array().map(Vec::len) <= Some(4));
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn deleting_requests_empties_the_recorder() {
    let t = TestMock::start().await;
    t.send(text_to(JAMAAH, "x")).await;

    let status = t.delete("/_mock/requests").await;
    let (_, after) = t.get("/_mock/requests").await;

    assert_eq!(status, 204);
    assert_eq!(after["requests"], json!([]));
}

#[tokio::test]
async fn the_recorder_is_bounded() {
    let t = TestMock::with(|c| {
        c.recorder_capacity = 3;
        c.pair_interval = Duration::ZERO;
    })
    .await;

    for i in 0..5 {
        t.send(text_to(JAMAAH, &format!("pesan {i}"))).await;
    }
    let (_, all) = t.get("/_mock/requests").await;

    let bodies: Vec<String> = all["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter_map(|r| r["body"]["text"]["body"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(bodies, ["pesan 2", "pesan 3", "pesan 4"]);
    assert_eq!(t.stats().await["recorder_dropped"], 2);
}

#[tokio::test]
async fn stats_count_requests_per_number_and_reset() {
    let t = TestMock::with(|c| {
        c.phone_numbers.push(wa_graph_mock::BusinessNumber {
            phone_number_id: "222222222".into(),
            display_phone_number: "6221555000222".into(),
        });
    })
    .await;

    t.send(text_to(JAMAAH, "x")).await;
    t.send_as(Some(TOKEN), "222222222", text_to(JAMAAH, "x"))
        .await;
    t.send_as(Some(TOKEN), "222222222", text_to("+6221555000222", "x"))
        .await;
    let stats = t.stats().await;

    assert_eq!(stats["phone_numbers"][PNID]["accepted"], 1);
    let second = &stats["phone_numbers"]["222222222"];
    assert_eq!(second["send_requests"], 2);
    assert_eq!(second["accepted"], 1, "pair rate is per business number");
    assert_eq!(second["errors_by_code"]["131021"], 1);
    assert_eq!(stats["rate_per_second"], 80);

    assert_eq!(t.delete("/_mock/stats").await, 204);
    assert_eq!(
        t.stats().await["phone_numbers"]["222222222"]["send_requests"],
        0
    );
}

#[tokio::test]
async fn the_running_mock_gives_in_process_access_to_stats_and_requests() {
    let t = TestMock::start().await;

    t.send(text_to(JAMAAH, "x")).await;

    assert_eq!(t.mock.stats().phone_numbers[PNID].accepted, 1);
    assert_eq!(
        t.mock
            .requests(&wa_graph_mock::RequestFilter::default())
            .len(),
        1
    );
}

#[tokio::test]
async fn base_latency_delays_every_graph_answer() {
    let t = TestMock::with(|c| c.latency = Duration::from_millis(150)).await;
    let started = Instant::now();

    t.send(text_to(JAMAAH, "x")).await;

    assert!(started.elapsed() >= Duration::from_millis(150));
}

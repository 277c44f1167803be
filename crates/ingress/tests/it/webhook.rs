use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use wa_common::topology::{HEADER_DEAD_LETTER_DETAIL, HEADER_DEAD_LETTER_REASON, queue};

use crate::helpers::{
    APP_SECRET, MAX_BODY_BYTES, NEW_APP_SECRET, Spawn, VERIFY_TOKEN, eventually, spawn_app,
};
use crate::payloads::{self, PHONE_NUMBER_ID, WABA_ID, meta_bytes};

fn key_counts(taken: &[crate::helpers::Taken]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for message in taken {
        *counts.entry(message.routing_key.clone()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_echoes_the_exact_challenge_for_subscribe_with_the_right_token() {
    let app = spawn_app(Spawn::default()).await;

    let response = app
        .handshake(&[
            ("hub.mode", "subscribe"),
            ("hub.verify_token", VERIFY_TOKEN),
            ("hub.challenge", "1158201444 x&y"),
        ])
        .await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "1158201444 x&y");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_with_a_wrong_token_wrong_mode_or_missing_fields_is_403() {
    let app = spawn_app(Spawn::default()).await;

    let cases: [&[(&str, &str)]; 4] = [
        &[
            ("hub.mode", "subscribe"),
            ("hub.verify_token", "guessed"),
            ("hub.challenge", "42"),
        ],
        &[
            ("hub.mode", "unsubscribe"),
            ("hub.verify_token", VERIFY_TOKEN),
            ("hub.challenge", "42"),
        ],
        &[("hub.mode", "subscribe"), ("hub.challenge", "42")],
        &[],
    ];
    for query in cases {
        let response = app.handshake(query).await;
        assert_eq!(response.status(), 403, "{query:?}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "verification_failed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_batch_publishes_one_event_per_message_status_and_error_with_the_right_keys() {
    let app = spawn_app(Spawn::default()).await;
    let body = payloads::batch().to_string();

    let response = app.post_signed(body.as_bytes(), APP_SECRET).await;

    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer, json!({"status": "accepted", "events": 9}));
    let published = app.published().await;
    assert_eq!(
        key_counts(&published),
        BTreeMap::from([
            ("inbound.error".to_owned(), 1),
            ("inbound.message".to_owned(), 4),
            ("inbound.status".to_owned(), 4)
        ])
    );
    let first = &published[0];
    let event = first.json();
    assert_eq!(first.routing_key, "inbound.message");
    assert_eq!(event["wa_message_id"], "wamid.M1");
    assert_eq!(event["profile_name"], "Siti Aminah");
    assert_eq!(
        event["source"],
        json!({"waba_id": WABA_ID, "phone_number_id": PHONE_NUMBER_ID, "display_phone_number": "6221555000111"})
    );
    assert_eq!(
        event["raw"]["text"]["body"],
        "Assalamualaikum, kapan jadwal manasik?"
    );
    let message: wa_common::contracts::inbound::InboundMessage =
        wa_common::decode(&first.body).expect("contract");
    assert_eq!(message.timestamp.timestamp(), 1_767_225_600);
    assert_eq!(
        first.properties.message_id().as_ref().map(|id| id.as_str()),
        Some("message:wamid.M1")
    );
    assert_eq!(first.properties.delivery_mode(), &Some(2));

    let correlation: Vec<_> = published
        .iter()
        .map(|m| m.properties.correlation_id().clone())
        .collect();
    assert!(
        correlation[0].is_some() && correlation.iter().all(|c| *c == correlation[0]),
        "one request id: {correlation:?}"
    );
    let traces: Vec<String> = published
        .iter()
        .map(|m| m.header("traceparent").expect("traceparent on every event"))
        .collect();
    let trace_id = traces[0].split('-').nth(1).unwrap().to_owned();
    assert!(
        traces
            .iter()
            .all(|t| t.starts_with("00-") && t.contains(&trace_id)),
        "{traces:?}"
    );
    let failed = published
        .iter()
        .find(|m| m.json()["status"] == "failed")
        .expect("failed status");
    assert_eq!(failed.json()["errors"][0]["code"], 131_047);
    assert_eq!(failed.json()["source"]["waba_id"], "300000000000001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_land_in_the_consumers_durable_queues() {
    let app = spawn_app(Spawn::default()).await;

    let batch = app
        .post_signed(payloads::batch().to_string().as_bytes(), APP_SECRET)
        .await;
    let management = app
        .post_signed(
            payloads::management_fields().to_string().as_bytes(),
            APP_SECRET,
        )
        .await;

    assert_eq!(
        (batch.status().as_u16(), management.status().as_u16()),
        (200, 200)
    );
    assert_eq!(app.drain(queue::SENDER_INBOUND).await.len(), 4, "messages");
    assert_eq!(
        app.drain(queue::SYNC_EVENTS).await.len(),
        8,
        "messages and statuses"
    );
    assert_eq!(
        app.drain(queue::SCHEDULER_EVENTS).await.len(),
        5,
        "messages and the template status"
    );
    let other = app.drain(queue::INBOUND_OTHER).await;
    let keys: Vec<&str> = other.iter().map(|m| m.routing_key.as_str()).collect();
    assert_eq!(
        keys,
        ["inbound.error", "inbound.account_update", "inbound.unknown"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_status_and_other_fields_get_their_own_routing_keys() {
    let app = spawn_app(Spawn::default()).await;

    let response = app
        .post_signed(
            payloads::management_fields().to_string().as_bytes(),
            APP_SECRET,
        )
        .await;

    assert_eq!(response.status(), 200);
    let published = app.published().await;
    let keys: Vec<&str> = published.iter().map(|m| m.routing_key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "inbound.template_status",
            "inbound.account_update",
            "inbound.unknown"
        ]
    );
    let template = published[0].json();
    assert_eq!(template["message_template_id"], 1_234_567_890_123_i64);
    assert_eq!(
        template["raw"]["rejection_info"]["recommendation"],
        "fix variables"
    );
    assert_eq!(published[2].json()["field"], "brand_new_field");
    assert_eq!(published[2].json()["raw"], json!({"anything": [1, 2, 3]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_ascii_body_escaped_as_meta_sends_it_verifies_and_keeps_the_text() {
    let app = spawn_app(Spawn::default()).await;
    let body = meta_bytes(&payloads::arabic_text());
    assert!(body.is_ascii() && String::from_utf8_lossy(&body).contains(r"\u0627"));

    let response = app.post_signed(&body, APP_SECRET).await;

    assert_eq!(response.status(), 200);
    let published = app.published().await;
    assert_eq!(published.len(), 1);
    let event = published[0].json();
    assert_eq!(event["profile_name"], "مُحَمَّد Zoë");
    assert_eq!(
        event["raw"]["text"]["body"],
        "السلام عليكم، متى موعد المناسك؟ 🕋🤲 café"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_utf8_non_ascii_body_verifies_over_its_exact_bytes() {
    let app = spawn_app(Spawn::default()).await;
    let body = payloads::arabic_text().to_string().into_bytes();
    assert!(!body.is_ascii());

    let response = app.post_signed(&body, NEW_APP_SECRET).await;

    assert_eq!(response.status(), 200);
    let published = app.published().await;
    assert_eq!(published.len(), 1);
    assert_eq!(
        published[0].json()["raw"]["text"]["body"],
        "السلام عليكم، متى موعد المناسك؟ 🕋🤲 café"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_missing_or_malformed_signatures_are_401_and_nothing_is_published() {
    let app = spawn_app(Spawn::default()).await;
    let body = payloads::batch().to_string();
    let mut tampered = body.clone().into_bytes();
    tampered[40] ^= 1;
    let good = wa_ingress::signature::sign(APP_SECRET, body.as_bytes());

    let cases = [
        (
            body.as_bytes().to_vec(),
            Some(wa_ingress::signature::sign(
                "attacker-secret",
                body.as_bytes(),
            )),
            "signature_mismatch",
        ),
        (tampered, Some(good.clone()), "signature_mismatch"),
        (body.as_bytes().to_vec(), None, "signature_missing"),
        (
            body.as_bytes().to_vec(),
            Some(good.replace("sha256=", "sha1=")),
            "signature_malformed",
        ),
        (
            body.as_bytes().to_vec(),
            Some("sha256=nothex".to_owned()),
            "signature_malformed",
        ),
    ];
    for (body, signature, code) in cases {
        let response = app.post_with_signature(&body, signature.as_deref()).await;
        assert_eq!(response.status(), 401, "{code}");
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["error"], code);
    }
    assert!(
        app.published().await.is_empty(),
        "nothing unsigned reaches the broker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_body_is_413_and_nothing_is_published() {
    let app = spawn_app(Spawn::default()).await;
    let mut value = payloads::arabic_text();
    value["padding"] = json!("x".repeat(MAX_BODY_BYTES));
    let body = value.to_string();

    let response = app.post_signed(body.as_bytes(), APP_SECRET).await;

    assert_eq!(response.status(), 413);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["error"], "payload_too_large");
    assert!(app.published().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_just_under_the_limit_is_accepted() {
    let app = spawn_app(Spawn::default()).await;
    let mut value = payloads::arabic_text();
    let base = value.to_string().len() + r#","padding":"""#.len();
    value["padding"] = json!("x".repeat(MAX_BODY_BYTES - base));
    let body = value.to_string();
    assert_eq!(body.len(), MAX_BODY_BYTES);

    let response = app.post_signed(body.as_bytes(), APP_SECRET).await;

    assert_eq!(response.status(), 200);
    assert_eq!(app.published().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_garbage_is_quarantined_raw_with_a_reason_and_answered_200() {
    let app = spawn_app(Spawn::default()).await;
    let cases: [(&[u8], &str); 3] = [
        (b"\x00\xffnot json at all", "not_json"),
        (br#"{"object":"page","entry":[]}"#, "not_whatsapp"),
        (
            br#"{"object":"whatsapp_business_account","entry":[]}"#,
            "no_events",
        ),
    ];

    for (body, reason) in cases {
        let response = app.post_signed(body, APP_SECRET).await;
        assert_eq!(response.status(), 200, "{reason}");
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["status"], "quarantined");

        let quarantined = app.drain(queue::QUARANTINE).await;
        assert_eq!(quarantined.len(), 1, "{reason}");
        assert_eq!(quarantined[0].body, body, "kept byte for byte");
        assert_eq!(
            quarantined[0].header(HEADER_DEAD_LETTER_REASON).as_deref(),
            Some(reason)
        );
        assert!(
            quarantined[0]
                .header(HEADER_DEAD_LETTER_DETAIL)
                .is_some_and(|d| !d.is_empty())
        );
        assert_eq!(
            quarantined[0]
                .properties
                .content_type()
                .as_ref()
                .map(|c| c.as_str()),
            Some("application/json")
        );
    }
    let keys = key_counts(&app.published().await);
    assert_eq!(keys, BTreeMap::from([("quarantine.webhook".to_owned(), 3)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_unreadable_webhook_publishes_the_readable_items_and_quarantines_the_body() {
    let app = spawn_app(Spawn::default()).await;
    let mut value = payloads::batch();
    value["entry"][0]["changes"][0]["value"]["messages"][1]["timestamp"] = json!("not a time");
    let body = value.to_string();

    let response = app.post_signed(body.as_bytes(), APP_SECRET).await;

    assert_eq!(response.status(), 200);
    let counts = key_counts(&app.published().await);
    assert_eq!(counts.get("inbound.message"), Some(&3));
    assert_eq!(counts.get("inbound.status"), Some(&4));
    assert_eq!(counts.get("quarantine.webhook"), Some(&1));
    let quarantined = app.drain(queue::QUARANTINE).await;
    let detail = quarantined[0].header(HEADER_DEAD_LETTER_DETAIL).unwrap();
    assert!(
        detail.contains("entry[0].changes[0].value.messages[1]") && detail.contains("timestamp"),
        "{detail}"
    );
    assert_eq!(
        quarantined[0].header(HEADER_DEAD_LETTER_REASON).as_deref(),
        Some("unreadable_items")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_redelivering_the_same_webhook_gives_the_same_message_ids() {
    let app = spawn_app(Spawn::default()).await;
    let body = payloads::batch().to_string();

    assert_eq!(
        app.post_signed(body.as_bytes(), APP_SECRET).await.status(),
        200
    );
    assert_eq!(
        app.post_signed(body.as_bytes(), APP_SECRET).await.status(),
        200
    );

    let ids: Vec<String> = app
        .published()
        .await
        .iter()
        .map(|m| m.properties.message_id().as_ref().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 18);
    assert_eq!(ids[..9], ids[9..]);
    let distinct: std::collections::BTreeSet<&String> = ids[..9].iter().collect();
    assert_eq!(distinct.len(), 9, "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_answers_503_and_ingress_recovers_once_the_broker_is_back() {
    let app = spawn_app(Spawn {
        through_proxy: true,
    })
    .await;
    let proxy = app.proxy.as_ref().unwrap();
    let body = payloads::arabic_text().to_string();
    assert_eq!(
        app.post_signed(body.as_bytes(), APP_SECRET).await.status(),
        200
    );
    assert_eq!(app.get("/readyz").await.status(), 200);
    app.published().await;

    proxy.cut();
    let response = app.post_signed(body.as_bytes(), APP_SECRET).await;

    assert_eq!(response.status(), 503);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["error"], "broker_unavailable");
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.get("/readyz").await.status() == 503
        })
        .await
    );

    proxy.restore();
    let recovered = eventually(Duration::from_secs(40), || async {
        app.post_signed(body.as_bytes(), APP_SECRET).await.status() == 200
    })
    .await;
    assert!(
        recovered,
        "ingress answers 200 again once the broker is reachable"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.get("/readyz").await.status() == 200
        })
        .await
    );
    let after = app.published().await;
    assert!(
        after
            .iter()
            .any(|m| m.json()["wa_message_id"] == "wamid.AR1"),
        "the redelivery was published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics_endpoints_answer() {
    let app = spawn_app(Spawn::default()).await;
    assert_eq!(
        app.post_signed(payloads::batch().to_string().as_bytes(), APP_SECRET)
            .await
            .status(),
        200
    );
    assert_eq!(app.post_with_signature(b"{}", None).await.status(), 401);

    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
    let metrics = app.get("/metrics").await.text().await.unwrap();

    for needle in [
        r#"wa_ingress_requests_total{outcome="accepted"}"#,
        r#"wa_ingress_requests_total{outcome="signature_missing"}"#,
        "wa_ingress_events_total{kind=\"status\",phone_number_id=\"106540352242922\"}",
        "wa_ingress_publish_confirm_seconds_bucket{result=\"confirmed\",le=\"0.005\"}",
        "wa_ingress_request_duration_seconds_bucket{outcome=\"accepted\",le=\"+Inf\"} 1",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing from:\n{metrics}"
        );
    }
    assert!(!metrics.contains(APP_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_returns_cleanly() {
    let mut app = spawn_app(Spawn::default()).await;
    assert_eq!(app.get("/healthz").await.status(), 200);

    app.stop().await.expect("run_until returns Ok");

    let refused = reqwest::Client::new()
        .get(format!("{}/healthz", app.base_url))
        .send()
        .await;
    assert!(refused.is_err(), "no longer listening on {}", app.addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_in_flight_webhook_finish_and_answer_200() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut app = spawn_app(Spawn::default()).await;
    let body = payloads::arabic_text().to_string();
    let signature = wa_ingress::signature::sign(APP_SECRET, body.as_bytes());
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/whatsapp/webhook HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         x-hub-signature-256: {signature}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        app.addr,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    stream.write_all(first).await.unwrap();
    stream.flush().await.unwrap();
    // The request is in flight (half its body read by the handler) when the shutdown starts.
    assert!(eventually(Duration::from_secs(5), || in_flight(&app)).await);

    app.shutdown.cancel();
    let addr = app.addr;
    let stopped_accepting = eventually(Duration::from_secs(5), || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(
        stopped_accepting,
        "the listener closes when the drain starts"
    );
    stream.write_all(rest).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();

    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    app.stop()
        .await
        .expect("run_until returns Ok after draining");
    assert_eq!(
        app.published().await.len(),
        1,
        "the in-flight webhook was published before the channel closed"
    );
}

/// True while the app reports a webhook POST in flight.
async fn in_flight(app: &crate::helpers::TestApp) -> bool {
    let metrics = app.get("/metrics").await.text().await.unwrap();
    metrics
        .lines()
        .any(|line| line.starts_with("wa_ingress_requests_in_flight ") && !line.ends_with(" 0"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_webhooks_are_each_published_completely() {
    let app = spawn_app(Spawn::default()).await;
    let body = payloads::batch().to_string();

    let responses = futures_util::future::join_all(
        (0..40).map(|_| app.post_signed(body.as_bytes(), APP_SECRET)),
    )
    .await;

    assert!(responses.iter().all(|r| r.status() == 200));
    let published = app.published().await;
    assert_eq!(published.len(), 40 * 9);
    let requests: std::collections::BTreeSet<String> = published
        .iter()
        .map(|m| m.properties.correlation_id().as_ref().unwrap().to_string())
        .collect();
    assert_eq!(requests.len(), 40, "one correlation id per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_chunked_body_without_content_length_is_413_and_nothing_is_published() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = spawn_app(Spawn::default()).await;
    let chunk = "x".repeat(64 * 1024);
    let body = chunk.repeat(MAX_BODY_BYTES / chunk.len() + 1);
    let signature = wa_ingress::signature::sign(APP_SECRET, body.as_bytes());
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/whatsapp/webhook HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         x-hub-signature-256: {signature}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        app.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();

    let mut response = Vec::new();
    for _ in 0..(MAX_BODY_BYTES / chunk.len() + 1) {
        let frame = format!("{:x}\r\n{chunk}\r\n", chunk.len());
        if stream.write_all(frame.as_bytes()).await.is_err() {
            break; // the server answered and closed mid-upload
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let _ = stream.read_to_end(&mut response).await;

    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("payload_too_large"), "{response}");
    assert!(app.published().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_1000_statuses_as_meta_may_send_publishes_1000_events() {
    let app = spawn_app(Spawn::default()).await;
    let statuses: Vec<serde_json::Value> = (0..1000)
        .map(|i| json!({"id": format!("wamid.B{i}"), "status": "delivered", "timestamp": "1767226000", "recipient_id": "62811"}))
        .collect();
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": WABA_ID, "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp", "metadata": {"phone_number_id": PHONE_NUMBER_ID}, "statuses": statuses}}]}]});

    let response = app
        .post_signed(body.to_string().as_bytes(), APP_SECRET)
        .await;

    assert_eq!(response.status(), 200);
    let published = app.published().await;
    assert_eq!(published.len(), 1000);
    assert!(published.iter().all(|m| m.routing_key == "inbound.status"));
    assert_eq!(published[999].json()["wa_message_id"], "wamid.B999");
}

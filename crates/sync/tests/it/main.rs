//! conversation-sync against the real broker and database (a vhost and a database per test) with
//! graph-mock as the only fake.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

mod batch;
mod helpers;

use std::time::Duration;

use chrono::{Duration as ChronoDuration, TimeZone, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::{Value, json};
use wa_common::topology::{HEADER_DEAD_LETTER_REASON, queue, routing};
use wa_testkit::broker::wait_for_message;

use helpers::*;

const PHONE: &str = "6281234567890";

fn header_str(headers: &lapin::types::FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        lapin::types::AMQPValue::LongString(s) => Some(s.to_string()),
        lapin::types::AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_text_is_stored_encrypted_and_notifies_the_agent_once_even_when_redelivered() {
    let app = spawn_app().await;
    app.publish(
        routing::JAMAAH_UPSERTED,
        &jamaah(TENANT, "jm-1", "0812-3456-7890"),
    )
    .await;
    app.wait_count(
        "SELECT count(*)::bigint AS n FROM contacts WHERE is_known",
        1,
    )
    .await;
    let event = inbound(
        "wamid.IN1",
        PHONE,
        "text",
        json!({"body": "kapan jadwal manasik?"}),
        Utc::now(),
    );

    app.publish(routing::INBOUND_MESSAGE, &event).await;
    app.publish(routing::INBOUND_MESSAGE, &event).await;
    app.wait_count("SELECT count(*)::bigint AS n FROM messages", 1)
        .await;
    // Both copies must have been handled before counting notifications.
    app.wait_count(
        "SELECT count(*)::bigint AS n FROM contacts WHERE last_inbound_at IS NOT NULL",
        1,
    )
    .await;
    app.outbox_drained().await;
    let notifications = eventually("one notification", || async {
        let n = app.notifications().await;
        (!n.is_empty()).then_some(n)
    })
    .await;
    // Give a duplicate notification the time to show up if one were (wrongly) published.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = app.notifications().await;

    assert_eq!(
        notifications.len() + late.len(),
        1,
        "{notifications:?} {late:?}"
    );
    let n = &notifications[0];
    assert_eq!(n["tenant_id"], TENANT);
    assert_eq!(n["jamaah_id"], "jm-1");
    assert_eq!(n["agent_id"], "agent-7");
    assert_eq!(n["action_url"], "/jamaah/jm-1/conversations");
    assert!(
        n["message"]
            .as_str()
            .unwrap()
            .contains("kapan jadwal manasik?")
    );
    let mut conn = app.conn().await;
    use wa_db::schema::messages::dsl as m;
    let (body, raw): (Option<Vec<u8>>, Option<Vec<u8>>) = m::messages
        .select((m::body_ciphertext, m::raw_ciphertext))
        .first(&mut conn)
        .await
        .unwrap();
    let body = body.expect("body stored");
    assert!(
        !body.windows(7).any(|w| w == b"manasik"),
        "body is plaintext"
    );
    assert!(
        !raw.expect("raw stored").windows(7).any(|w| w == b"manasik"),
        "raw payload is plaintext"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sender_is_kept_and_linked_when_a_jamaah_with_that_phone_appears() {
    let app = spawn_app().await;
    let at = Utc::now() - ChronoDuration::minutes(5);
    app.publish(
        routing::INBOUND_MESSAGE,
        &inbound("wamid.U1", PHONE, "text", json!({"body": "halo"}), at),
    )
    .await;
    app.wait_count("SELECT count(*)::bigint AS n FROM messages", 1)
        .await;
    app.outbox_drained().await;
    let first = app.notifications().await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["agent_id"], Value::Null);
    assert_eq!(first[0]["jamaah_id"], Value::Null);
    assert_eq!(
        app.count("SELECT count(*)::bigint AS n FROM contacts WHERE NOT is_known")
            .await,
        1
    );

    app.publish(
        routing::JAMAAH_UPSERTED,
        &jamaah(TENANT, "jm-9", "+62 812-3456-7890"),
    )
    .await;
    app.wait_count(
        "SELECT count(*)::bigint AS n FROM contacts WHERE is_known AND jamaah_id = 'jm-9'",
        1,
    )
    .await;

    assert_eq!(
        app.count("SELECT count(*)::bigint AS n FROM contacts")
            .await,
        1
    );
    let page: Value = app
        .get(&format!("/v1/tenants/{TENANT}/jamaah/jm-9/messages"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    assert_eq!(page["messages"][0]["body"], "halo");
    // The next message from that number notifies the jamaah's agent.
    app.publish(
        routing::INBOUND_MESSAGE,
        &inbound(
            "wamid.U2",
            PHONE,
            "text",
            json!({"body": "lagi"}),
            Utc::now(),
        ),
    )
    .await;
    app.wait_count("SELECT count(*)::bigint AS n FROM messages", 2)
        .await;
    app.outbox_drained().await;
    let second = app.notifications().await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0]["agent_id"], "agent-7");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_out_of_order_end_in_the_furthest_status_and_emit_forward_steps_only() {
    let app = spawn_app().await;
    let t0 = Utc::now() - ChronoDuration::minutes(10);
    app.publish(
        routing::OUTBOUND_ACCEPTED,
        &accepted("job-1", "+6281234567890", "wamid.O1", t0),
    )
    .await;
    app.wait_count("SELECT count(*)::bigint AS n FROM messages", 1)
        .await;

    // read before delivered before sent, plus a duplicate read.
    for (word, secs) in [("read", 30), ("delivered", 20), ("sent", 10), ("read", 30)] {
        app.publish(
            routing::INBOUND_STATUS,
            &status("wamid.O1", word, t0 + ChronoDuration::seconds(secs), None),
        )
        .await;
    }
    app.wait_count(
        "SELECT count(*)::bigint AS n FROM message_statuses WHERE applied",
        3,
    )
    .await;
    app.outbox_drained().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let steps = app.status_steps().await;

    assert_eq!(
        app.count("SELECT count(*)::bigint AS n FROM message_statuses")
            .await,
        3
    );
    assert_eq!(
        app.count("SELECT count(*)::bigint AS n FROM messages WHERE current_status = 'read'")
            .await,
        1
    );
    let words: Vec<&str> = steps
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(words, vec!["read"], "{steps:?}");
    assert_eq!(steps[0]["job_id"], "job-1");
    assert_eq!(steps[0]["reference"]["id"], "ref-job-1");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_before_the_accepted_event_are_applied_when_it_arrives_in_order_and_once() {
    let app = spawn_app().await;
    let t0 = Utc::now() - ChronoDuration::minutes(10);
    app.publish(
        routing::INBOUND_STATUS,
        &status(
            "wamid.E1",
            "delivered",
            t0 + ChronoDuration::seconds(5),
            Some(("utility", true)),
        ),
    )
    .await;
    app.publish(
        routing::INBOUND_STATUS,
        &status("wamid.E1", "sent", t0 + ChronoDuration::seconds(1), None),
    )
    .await;
    app.wait_count(
        "SELECT count(*)::bigint AS n FROM message_statuses WHERE NOT applied",
        2,
    )
    .await;
    assert!(app.status_steps().await.is_empty());

    app.publish(
        routing::OUTBOUND_ACCEPTED,
        &accepted("job-E", "0812-3456-7890", "wamid.E1", t0),
    )
    .await;
    app.publish(
        routing::OUTBOUND_ACCEPTED,
        &accepted("job-E", "0812-3456-7890", "wamid.E1", t0),
    )
    .await;
    app.wait_count(
        "SELECT count(*)::bigint AS n FROM message_statuses WHERE applied",
        2,
    )
    .await;
    app.outbox_drained().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let steps = app.status_steps().await;

    let words: Vec<&str> = steps
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(words, vec!["sent", "delivered"], "{steps:?}");
    assert!(steps.iter().all(|s| s["job_id"] == "job-E"));
    assert_eq!(steps[1]["pricing_category"], "utility");
    assert_eq!(
        app.count("SELECT count(*)::bigint AS n FROM messages WHERE current_status = 'delivered' AND pricing_category = 'utility'")
            .await,
        1
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_status_carries_its_error_and_a_later_delivered_does_not_undo_it() {
    let app = spawn_app().await;
    let t0 = Utc::now() - ChronoDuration::minutes(10);
    app.publish(
        routing::OUTBOUND_ACCEPTED,
        &accepted("job-F", PHONE, "wamid.F1", t0),
    )
    .await;
    app.publish(
        routing::INBOUND_STATUS,
        &status("wamid.F1", "failed", t0 + ChronoDuration::seconds(3), None),
    )
    .await;
    app.publish(
        routing::INBOUND_STATUS,
        &status(
            "wamid.F1",
            "delivered",
            t0 + ChronoDuration::seconds(2),
            None,
        ),
    )
    .await;
    app.wait_count(
        "SELECT count(*)::bigint AS n FROM message_statuses WHERE applied",
        2,
    )
    .await;
    app.outbox_drained().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let steps = app.status_steps().await;

    assert_eq!(
        app.count("SELECT count(*)::bigint AS n FROM messages WHERE current_status = 'failed' AND error_code = 131026").await,
        1
    );
    let words: Vec<&str> = steps
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(words, vec!["failed"]);
    assert_eq!(steps[0]["meta_code"], 131026);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_inbound_type_meta_sends_is_stored() {
    let app = spawn_app().await;
    let kinds = [
        ("text", json!({"body": "t"})),
        ("button", json!({"payload": "P", "text": "Ya"})),
        (
            "interactive",
            json!({"type": "button_reply", "button_reply": {"id": "1", "title": "Ya"}}),
        ),
        ("reaction", json!({"message_id": "wamid.X", "emoji": "👍"})),
        ("location", json!({"latitude": 21.4, "longitude": 39.8})),
        (
            "order",
            json!({"catalog_id": "c", "product_items": [{"product_retailer_id": "p"}]}),
        ),
        ("system", json!({"body": "User changed number"})),
        ("unsupported", json!({})),
        (
            "sticker",
            json!({"id": "555", "mime_type": "image/webp", "sha256": "x", "animated": false}),
        ),
        (
            "audio",
            json!({"id": "556", "mime_type": "audio/ogg", "sha256": "y", "voice": true}),
        ),
    ];
    for (i, (kind, object)) in kinds.iter().enumerate() {
        app.publish(
            routing::INBOUND_MESSAGE,
            &inbound(
                &format!("wamid.K{i}"),
                PHONE,
                kind,
                object.clone(),
                Utc::now(),
            ),
        )
        .await;
    }
    let mut contacts_card = inbound("wamid.KC", PHONE, "contacts", json!(null), Utc::now());
    contacts_card["raw"]["contacts"] = json!([{"name": {"formatted_name": "Ustadz Hasan"}}]);
    app.publish(routing::INBOUND_MESSAGE, &contacts_card).await;

    app.wait_count(
        "SELECT count(*)::bigint AS n FROM messages",
        kinds.len() as i64 + 1,
    )
    .await;
    assert_eq!(
        app.count("SELECT count(*)::bigint AS n FROM media WHERE state = 'pending'")
            .await,
        2
    );
    app.outbox_drained().await;
    assert_eq!(app.notifications().await.len(), kinds.len() + 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_is_downloaded_verified_and_stored_encrypted_after_a_failed_attempt_is_retried() {
    let app = spawn_app().await;
    let bytes = b"\x89PNG fake bukti transfer".to_vec();
    let (media_id, sha) = app.register_media(&bytes, 1).await;
    app.publish(
        routing::INBOUND_MESSAGE,
        &inbound(
            "wamid.M1",
            PHONE,
            "image",
            json!({"id": media_id, "mime_type": "image/png", "sha256": sha, "caption": "bukti"}),
            Utc::now(),
        ),
    )
    .await;
    app.wait_count(
        "SELECT count(*)::bigint AS n FROM media WHERE state = 'pending'",
        1,
    )
    .await;

    let first = app.media.run_once().await.unwrap();
    assert_eq!((first.stored, first.retrying), (0, 1));
    app.wait_count(
        "SELECT count(*)::bigint AS n FROM media WHERE attempts = 1 AND last_error IS NOT NULL",
        1,
    )
    .await;
    // The retry backoff in tests is 1 ms.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = app.media.run_once().await.unwrap();

    assert_eq!(second.stored, 1);
    use wa_db::schema::media::dsl as md;
    let mut conn = app.conn().await;
    let (key, key_id, size): (Option<String>, Option<String>, Option<i64>) = md::media
        .filter(md::state.eq("stored"))
        .select((md::storage_key, md::key_id, md::size_bytes))
        .first(&mut conn)
        .await
        .unwrap();
    assert_eq!(size, Some(bytes.len() as i64));
    let stored = app.media_store.get(&key.unwrap()).await.unwrap();
    assert!(
        !stored.windows(5).any(|w| w == b"bukti"),
        "file is plaintext"
    );
    assert_eq!(
        app.cipher.open_blob(&stored, &key_id.unwrap()).unwrap(),
        bytes
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_with_a_wrong_checksum_is_never_stored_and_fails_after_its_attempts() {
    let app = spawn_app_with(2).await;
    let (media_id, _) = app.register_media(b"real bytes", 0).await;
    app.publish(
        routing::INBOUND_MESSAGE,
        &inbound("wamid.M2", PHONE, "document", json!({"id": media_id, "mime_type": "application/pdf", "sha256": "AAAA", "filename": "paspor.pdf"}), Utc::now()),
    )
    .await;
    app.wait_count("SELECT count(*)::bigint AS n FROM media", 1)
        .await;

    app.media.run_once().await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let last = app.media.run_once().await.unwrap();

    assert_eq!(last.failed, 1);
    assert_eq!(
        app.count("SELECT count(*)::bigint AS n FROM media WHERE state = 'failed' AND last_error = 'sha256 mismatch' AND storage_key IS NULL")
            .await,
        1
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_messages_with_their_statuses_and_media_and_keeps_recent_ones() {
    let app = spawn_app().await;
    let old = Utc::now() - ChronoDuration::days(100);
    let (media_id, sha) = app.register_media(b"old image", 0).await;
    app.publish(
        routing::INBOUND_MESSAGE,
        &inbound(
            "wamid.OLD",
            PHONE,
            "image",
            json!({"id": media_id, "mime_type": "image/png", "sha256": sha}),
            old,
        ),
    )
    .await;
    app.publish(
        routing::OUTBOUND_ACCEPTED,
        &accepted("job-old", PHONE, "wamid.OLDOUT", old),
    )
    .await;
    app.publish(
        routing::INBOUND_STATUS,
        &status("wamid.OLDOUT", "read", old, None),
    )
    .await;
    app.publish(
        routing::INBOUND_MESSAGE,
        &inbound(
            "wamid.NEW",
            PHONE,
            "text",
            json!({"body": "baru"}),
            Utc::now(),
        ),
    )
    .await;
    app.wait_count(
        "SELECT count(*)::bigint AS n FROM message_statuses WHERE applied",
        1,
    )
    .await;
    app.wait_count("SELECT count(*)::bigint AS n FROM messages", 3)
        .await;
    assert_eq!(app.media.run_once().await.unwrap().stored, 1);
    let files_before = std::fs::read_dir(app.media_dir.join(TENANT))
        .unwrap()
        .count();
    assert_eq!(files_before, 1);

    let report =
        wa_sync::retention::run_retention(&app.db.pool().await, &app.media_store, 90, Utc::now())
            .await
            .unwrap();

    assert_eq!((report.messages, report.files), (2, 1));
    assert_eq!(
        app.count("SELECT count(*)::bigint AS n FROM messages")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*)::bigint AS n FROM messages WHERE wa_message_id = 'wamid.NEW'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*)::bigint AS n FROM message_statuses")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*)::bigint AS n FROM media").await,
        0
    );
    assert_eq!(
        std::fs::read_dir(app.media_dir.join(TENANT))
            .unwrap()
            .count(),
        0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_deletes_the_jamaahs_messages_media_and_contact_and_nothing_else() {
    let app = spawn_app().await;
    app.publish(routing::JAMAAH_UPSERTED, &jamaah(TENANT, "jm-erase", PHONE))
        .await;
    app.publish(
        routing::JAMAAH_UPSERTED,
        &jamaah(TENANT, "jm-keep", "081299998888"),
    )
    .await;
    app.wait_count("SELECT count(*)::bigint AS n FROM contacts", 2)
        .await;
    let (media_id, sha) = app.register_media(b"paspor scan", 0).await;
    app.publish(
        routing::INBOUND_MESSAGE,
        &inbound(
            "wamid.ER1",
            PHONE,
            "image",
            json!({"id": media_id, "mime_type": "image/png", "sha256": sha}),
            Utc::now(),
        ),
    )
    .await;
    app.publish(
        routing::OUTBOUND_ACCEPTED,
        &accepted("job-er", PHONE, "wamid.ER2", Utc::now()),
    )
    .await;
    app.publish(
        routing::INBOUND_STATUS,
        &status("wamid.ER2", "delivered", Utc::now(), None),
    )
    .await;
    app.publish(
        routing::INBOUND_MESSAGE,
        &inbound(
            "wamid.KP1",
            "6281299998888",
            "text",
            json!({"body": "tetap"}),
            Utc::now(),
        ),
    )
    .await;
    app.wait_count(
        "SELECT count(*)::bigint AS n FROM message_statuses WHERE applied",
        1,
    )
    .await;
    app.wait_count("SELECT count(*)::bigint AS n FROM messages", 3)
        .await;
    assert_eq!(app.media.run_once().await.unwrap().stored, 1);
    app.outbox_drained().await;
    app.notifications().await;
    app.status_steps().await;

    app.publish(
        routing::JAMAAH_ERASURE_REQUESTED,
        &json!({"tenant_id": TENANT, "jamaah_id": "jm-erase"}),
    )
    .await;
    app.wait_count("SELECT count(*)::bigint AS n FROM contacts", 1)
        .await;

    assert_eq!(
        app.count("SELECT count(*)::bigint AS n FROM contacts WHERE jamaah_id = 'jm-keep'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*)::bigint AS n FROM messages")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*)::bigint AS n FROM messages WHERE wa_message_id = 'wamid.KP1'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*)::bigint AS n FROM message_statuses")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*)::bigint AS n FROM media").await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*)::bigint AS n FROM conversations")
            .await,
        1
    );
    assert_eq!(
        std::fs::read_dir(app.media_dir.join(TENANT))
            .unwrap()
            .count(),
        0
    );
    let response = app
        .get(&format!("/v1/tenants/{TENANT}/jamaah/jm-erase/messages"))
        .await;
    assert_eq!(response.status(), 404);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        app.notifications().await.is_empty(),
        "erasure published a notification"
    );
    assert!(
        app.status_steps().await.is_empty(),
        "erasure published a status"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_api_needs_the_token_and_hides_other_tenants_jamaah() {
    let app = spawn_app().await;
    app.publish(
        routing::JAMAAH_UPSERTED,
        &jamaah(OTHER_TENANT, "jm-other", PHONE),
    )
    .await;
    app.wait_count("SELECT count(*)::bigint AS n FROM contacts", 1)
        .await;
    let path = format!("/v1/tenants/{OTHER_TENANT}/jamaah/jm-other/messages");

    let anonymous = app
        .http
        .get(format!("{}{path}", app.base_url))
        .send()
        .await
        .unwrap();
    let wrong = app
        .http
        .get(format!("{}{path}", app.base_url))
        .bearer_auth("wrong-token-0123456789")
        .send()
        .await
        .unwrap();
    let other_tenant = app
        .get(&format!("/v1/tenants/{TENANT}/jamaah/jm-other/messages"))
        .await;
    let own = app.get(&path).await;
    let metrics_anonymous = app
        .http
        .get(format!(
            "{}/v1/tenants/{TENANT}/metrics?from=2026-11-01&to=2026-11-02",
            app.base_url
        ))
        .send()
        .await
        .unwrap();

    assert_eq!(anonymous.status(), 401);
    assert_eq!(wrong.status(), 401);
    let body: Value = other_tenant.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    assert_eq!(own.status(), 200);
    assert_eq!(metrics_anonymous.status(), 401);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_newest_first_with_a_cursor() {
    let app = spawn_app().await;
    app.publish(routing::JAMAAH_UPSERTED, &jamaah(TENANT, "jm-p", PHONE))
        .await;
    app.wait_count("SELECT count(*)::bigint AS n FROM contacts", 1)
        .await;
    let t0 = Utc::now() - ChronoDuration::hours(1);
    for i in 0..5 {
        app.publish(
            routing::INBOUND_MESSAGE,
            &inbound(
                &format!("wamid.P{i}"),
                PHONE,
                "text",
                json!({"body": format!("pesan {i}")}),
                t0 + ChronoDuration::minutes(i),
            ),
        )
        .await;
    }
    app.wait_count("SELECT count(*)::bigint AS n FROM messages", 5)
        .await;

    let first: Value = app
        .get(&format!(
            "/v1/tenants/{TENANT}/jamaah/jm-p/messages?limit=3"
        ))
        .await
        .json()
        .await
        .unwrap();
    let cursor = first["next_cursor"].as_str().expect("a cursor").to_owned();
    let second: Value = app
        .get(&format!(
            "/v1/tenants/{TENANT}/jamaah/jm-p/messages?limit=3&cursor={cursor}"
        ))
        .await
        .json()
        .await
        .unwrap();
    let bad = app
        .get(&format!(
            "/v1/tenants/{TENANT}/jamaah/jm-p/messages?cursor=@@"
        ))
        .await;

    let bodies = |page: &Value| -> Vec<String> {
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["body"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(bodies(&first), vec!["pesan 4", "pesan 3", "pesan 2"]);
    assert_eq!(bodies(&second), vec!["pesan 1", "pesan 0"]);
    assert_eq!(second["next_cursor"], Value::Null);
    assert_eq!(bad.status(), 400);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_a_hand_computed_set() {
    let app = spawn_app().await;
    let t = Utc.with_ymd_and_hms(2026, 11, 20, 8, 0, 0).unwrap();
    let h = ChronoDuration::hours;
    // Four accepted messages an hour apart, one failed job, one reply 30 min after the first.
    for (i, wamid) in ["wamid.A1", "wamid.A2", "wamid.A3", "wamid.A4"]
        .iter()
        .enumerate()
    {
        app.publish(
            routing::OUTBOUND_ACCEPTED,
            &accepted(&format!("job-m{i}"), PHONE, wamid, t + h(i as i64)),
        )
        .await;
    }
    app.publish(
        routing::OUTBOUND_FAILED,
        &failed("job-m5", PHONE, "window_closed", t + h(4)),
    )
    .await;
    app.wait_count("SELECT count(*)::bigint AS n FROM messages", 5)
        .await;
    app.publish(
        routing::INBOUND_STATUS,
        &status(
            "wamid.A1",
            "read",
            t + h(0) + ChronoDuration::minutes(1),
            Some(("utility", true)),
        ),
    )
    .await;
    app.publish(
        routing::INBOUND_STATUS,
        &status(
            "wamid.A2",
            "delivered",
            t + h(1) + ChronoDuration::minutes(1),
            Some(("marketing", true)),
        ),
    )
    .await;
    app.publish(
        routing::INBOUND_STATUS,
        &status(
            "wamid.A3",
            "sent",
            t + h(2) + ChronoDuration::minutes(1),
            Some(("service", true)),
        ),
    )
    .await;
    app.publish(
        routing::INBOUND_STATUS,
        &status(
            "wamid.A4",
            "failed",
            t + h(3) + ChronoDuration::minutes(1),
            None,
        ),
    )
    .await;
    app.publish(
        routing::INBOUND_MESSAGE,
        &inbound(
            "wamid.R1",
            PHONE,
            "text",
            json!({"body": "terima kasih"}),
            t + ChronoDuration::minutes(30),
        ),
    )
    .await;
    // Outside the period: must not count.
    app.publish(
        routing::OUTBOUND_ACCEPTED,
        &accepted("job-late", PHONE, "wamid.A9", t + ChronoDuration::days(3)),
    )
    .await;
    app.wait_count(
        "SELECT count(*)::bigint AS n FROM message_statuses WHERE applied",
        4,
    )
    .await;
    app.wait_count("SELECT count(*)::bigint AS n FROM messages", 7)
        .await;

    let response = app
        .get(&format!(
            "/v1/tenants/{TENANT}/metrics?from=2026-11-20&to=2026-11-20"
        ))
        .await;
    let other = app
        .get(&format!(
            "/v1/tenants/{OTHER_TENANT}/metrics?from=2026-11-20&to=2026-11-20"
        ))
        .await;
    let bad = app
        .get(&format!(
            "/v1/tenants/{TENANT}/metrics?from=2026-11-21&to=2026-11-20"
        ))
        .await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let m = &body["metrics"];
    assert_eq!(m["messages_sent"], 4);
    assert_eq!(m["messages_delivered"], 2);
    assert_eq!(m["messages_read"], 1);
    assert_eq!(m["messages_replied"], 1);
    assert_eq!(m["messages_failed"], 2);
    assert_eq!(m["delivery_rate"], 0.5);
    assert_eq!(m["read_rate"], 0.25);
    assert_eq!(m["reply_rate"], 0.25);
    assert_eq!(m["api_errors"]["rate"], 0.2);
    assert_eq!(m["api_errors"]["by_reason"], json!({"window_closed": 1}));
    // Inbound at 08:30, next outbound (A2) at 09:00.
    assert_eq!(m["avg_agent_response_seconds"], 1800.0);
    let cost = &m["cost_usd_by_category"];
    assert!((cost["utility"].as_f64().unwrap() - 0.02).abs() < 1e-9);
    assert!((cost["marketing"].as_f64().unwrap() - 0.0411).abs() < 1e-9);
    assert_eq!(cost["service"], 0.0);
    assert!((m["cost_usd_total"].as_f64().unwrap() - 0.0611).abs() < 1e-9);
    let other: Value = other.json().await.unwrap();
    assert_eq!(other["metrics"]["messages_sent"], 0);
    assert_eq!(bad.status(), 400);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_and_unknown_tenant_events_are_dead_lettered_with_the_reason() {
    let app = spawn_app().await;
    let dlq = queue::dead_letter_of(queue::SYNC_EVENTS);

    app.publish(
        routing::OUTBOUND_ACCEPTED,
        &json!({"tenant_id": TENANT, "to": PHONE}),
    )
    .await;
    let first = wait_for_message(&app.channel, &dlq, Duration::from_secs(10))
        .await
        .unwrap()
        .expect("dead letter");
    app.publish(
        routing::INBOUND_MESSAGE,
        &inbound_to(
            "999999999",
            "wamid.NT",
            PHONE,
            "text",
            json!({"body": "x"}),
            Utc::now(),
        ),
    )
    .await;
    let second = wait_for_message(&app.channel, &dlq, Duration::from_secs(10))
        .await
        .unwrap()
        .expect("dead letter");

    assert_eq!(
        header_str(&first.1, HEADER_DEAD_LETTER_REASON).as_deref(),
        Some("invalid_payload")
    );
    assert!(
        header_str(&first.1, wa_common::topology::HEADER_DEAD_LETTER_DETAIL)
            .unwrap()
            .contains("job_id"),
        "the detail names the field"
    );
    assert_eq!(
        header_str(&second.1, HEADER_DEAD_LETTER_REASON).as_deref(),
        Some("unknown_tenant")
    );
    assert_eq!(
        app.count("SELECT count(*)::bigint AS n FROM messages")
            .await,
        0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_many_events_is_persisted_completely() {
    let app = spawn_app().await;
    let batch: Vec<Value> = (0..300)
        .map(|i| {
            inbound(
                &format!("wamid.B{i}"),
                &format!("62812000{i:05}"),
                "text",
                json!({"body": "b"}),
                Utc::now(),
            )
        })
        .collect();
    for event in &batch {
        app.publish(routing::INBOUND_MESSAGE, event).await;
    }
    app.wait_count("SELECT count(*)::bigint AS n FROM messages", 300)
        .await;
    assert_eq!(
        app.count("SELECT count(*)::bigint AS n FROM contacts")
            .await,
        300
    );
    app.outbox_drained().await;
    assert_eq!(app.notifications().await.len(), 300);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_statuses_in_one_batch_end_where_applying_them_one_by_one_would() {
    let app = spawn_app().await;
    let t0 = Utc::now() - ChronoDuration::minutes(30);
    // 40 messages; half get their statuses before the accepted event, all in scrambled order,
    // with duplicates, published back to back so they share batches.
    let mut events = Vec::new();
    for i in 0..40 {
        let wamid = format!("wamid.S{i}");
        let at = |s: i64| t0 + ChronoDuration::seconds(s);
        let statuses = [
            (
                routing::INBOUND_STATUS,
                status(&wamid, "read", at(30), None),
            ),
            (
                routing::INBOUND_STATUS,
                status(&wamid, "sent", at(10), Some(("marketing", true))),
            ),
            (
                routing::INBOUND_STATUS,
                status(&wamid, "delivered", at(20), None),
            ),
            (
                routing::INBOUND_STATUS,
                status(&wamid, "read", at(30), None),
            ),
        ];
        let accept = (
            routing::OUTBOUND_ACCEPTED,
            accepted(&format!("job-S{i}"), PHONE, &wamid, t0),
        );
        if i % 2 == 0 {
            events.push(accept);
            events.extend(statuses);
        } else {
            events.extend(statuses);
            events.push(accept);
        }
    }
    for (key, body) in &events {
        app.publish(key, body).await;
    }
    app.wait_count(
        "SELECT count(*)::bigint AS n FROM message_statuses WHERE applied",
        120,
    )
    .await;
    app.outbox_drained().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let steps = app.status_steps().await;

    assert_eq!(
        app.count("SELECT count(*)::bigint AS n FROM message_statuses")
            .await,
        120
    );
    assert_eq!(
        app.count("SELECT count(*)::bigint AS n FROM messages WHERE current_status = 'read' AND pricing_category = 'marketing'")
            .await,
        40
    );
    for i in 0..40 {
        let wamid = format!("wamid.S{i}");
        let words: Vec<&str> = steps
            .iter()
            .filter(|s| s["wa_message_id"] == wamid.as_str())
            .map(|s| s["status"].as_str().unwrap())
            .collect();
        // Forward steps only, never repeated: an accepted-first message sees read at once (it
        // arrives first); a status-first one replays its waiting statuses in order on accept.
        assert!(!words.is_empty(), "{wamid} had no step");
        assert_eq!(words.last(), Some(&"read"), "{wamid}: {words:?}");
        let mut sorted = words.clone();
        sorted.dedup();
        assert_eq!(sorted, words, "{wamid}: repeated step {words:?}");
        assert!(
            words.windows(2).all(|w| rank(w[0]) < rank(w[1])),
            "{wamid}: backwards {words:?}"
        );
    }
    app.stop().await;
}

fn rank(word: &str) -> u8 {
    wa_common::contracts::status::DeliveryStatus::from_meta(word)
        .unwrap()
        .rank()
}

#[test]
fn the_binary_exits_non_zero_naming_the_missing_variable() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_conversation-sync"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("binary runs");

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("MESSAGE_ENCRYPTION_KEY"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_left_in_the_outbox_by_a_failed_publish_are_published_by_the_relay() {
    let app = spawn_app().await;
    app.publish(routing::JAMAAH_UPSERTED, &jamaah(TENANT, "jm-o", PHONE))
        .await;
    app.wait_count("SELECT count(*)::bigint AS n FROM contacts", 1)
        .await;
    // As if the process died between the commit and the publish: a committed, unpublished row.
    let body = serde_json::to_vec(&json!({
        "tenant_id": TENANT, "agent_id": "agent-7", "jamaah_id": "jm-o", "title": "Pesan WhatsApp baru",
        "message": "Siti Aminah: tertinggal", "type": "info", "action_url": "/jamaah/jm-o/conversations",
    }))
    .unwrap();
    let id = app
        .leave_in_outbox(routing::AGENT_NOTIFICATION, &body, None)
        .await;
    let mut conn = app.conn().await;
    diesel::sql_query("UPDATE sync_outbox SET created_at = now() - interval '1 minute'")
        .execute(&mut conn)
        .await
        .unwrap();

    app.outbox_drained().await;
    let notifications = app.notifications().await;

    assert_eq!(notifications.len(), 1);
    assert_eq!(notifications[0]["message"], "Siti Aminah: tertinggal");
    assert!(id > 0);
    app.stop().await;
}

/// A step committed but left unpublished (the process died, or its publish failed) goes out
/// before every later step of its message: the later ones wait in the outbox for the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_status_step_waits_for_an_older_step_left_in_the_outbox() {
    let app = spawn_app().await;
    let t0 = Utc::now() - ChronoDuration::minutes(10);
    app.publish(
        routing::OUTBOUND_ACCEPTED,
        &accepted("job-h", "+6281234567890", "wamid.H", t0),
    )
    .await;
    app.publish(
        routing::INBOUND_STATUS,
        &status("wamid.H", "sent", t0 + ChronoDuration::seconds(1), None),
    )
    .await;
    app.wait_count(
        "SELECT count(*)::bigint AS n FROM messages WHERE current_status = 'sent'",
        1,
    )
    .await;
    app.outbox_drained().await;
    let message_id = app
        .count("SELECT id AS n FROM messages WHERE wa_message_id = 'wamid.H'")
        .await;
    // As if a replica died between committing `delivered` and publishing it.
    let body = serde_json::to_vec(&json!({
        "tenant_id": TENANT, "job_id": "job-h", "wa_message_id": "wamid.H", "status": "delivered",
        "timestamp": t0 + ChronoDuration::seconds(2),
    }))
    .unwrap();
    app.leave_in_outbox(routing::OUTBOUND_STATUS, &body, Some(message_id))
        .await;
    let mut conn = app.conn().await;

    app.publish(
        routing::INBOUND_STATUS,
        &status("wamid.H", "read", t0 + ChronoDuration::seconds(3), None),
    )
    .await;
    app.wait_count(
        "SELECT count(*)::bigint AS n FROM messages WHERE current_status = 'read'",
        1,
    )
    .await;
    // The batcher publishes right after its commit; give it time to (wrongly) do so.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_the_relay = app.status_steps().await;
    let waiting = app
        .count("SELECT count(*)::bigint AS n FROM sync_outbox")
        .await;
    // The relay's grace period is over for both rows.
    diesel::sql_query("UPDATE sync_outbox SET created_at = now() - interval '1 minute'")
        .execute(&mut conn)
        .await
        .unwrap();
    app.outbox_drained().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_the_relay = app.status_steps().await;

    let words = |steps: &[Value]| -> Vec<String> {
        steps
            .iter()
            .map(|s| s["status"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(words(&before_the_relay), ["sent"]);
    assert_eq!(waiting, 2);
    assert_eq!(words(&after_the_relay), ["delivered", "read"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_with_events_in_flight_loses_nothing() {
    let app = spawn_app().await;
    for i in 0..200 {
        let event = inbound(
            &format!("wamid.SD{i}"),
            PHONE,
            "text",
            json!({"body": "x"}),
            Utc::now(),
        );
        app.publish(routing::INBOUND_MESSAGE, &event).await;
    }
    app.wait_count("SELECT LEAST(count(*), 1)::bigint AS n FROM messages", 1)
        .await;

    app.shutdown.cancel();
    let mut app = app;
    let running = app.running.take().unwrap();
    running.await.unwrap().unwrap();

    let stored = app
        .count("SELECT count(*)::bigint AS n FROM messages")
        .await;
    let waiting = wa_testkit::broker::queue_len(&app.channel, queue::SYNC_EVENTS)
        .await
        .unwrap();
    assert!(stored <= 200, "duplicates stored: {stored}");
    // Every event is stored or back in the queue (an event committed just before the stop may be both).
    assert!(
        stored + i64::from(waiting) >= 200,
        "lost events: {stored} stored, {waiting} waiting"
    );
}

#[tokio::test]
async fn outbound_messages_show_their_type_and_text_in_the_history() {
    let app = spawn_app().await;
    app.publish(routing::JAMAAH_UPSERTED, &jamaah(TENANT, "jm-o", PHONE))
        .await;
    app.wait_count("SELECT count(*)::bigint AS n FROM contacts", 1)
        .await;
    let now = Utc::now();
    let mut text = accepted("job-text", PHONE, "wamid.OUT1", now);
    text["message"] =
        json!({"type": "text", "text": {"body": "Wa'alaikumussalam, manasik hari Sabtu."}});
    let mut template = accepted(
        "job-tpl",
        PHONE,
        "wamid.OUT2",
        now + ChronoDuration::seconds(1),
    );
    template["message"] = json!({"type": "template", "template": {"name": "payment_reminder", "language": {"code": "id"},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "Siti Aminah"}, {"type": "text", "text": "05 Des 2026"}]}]}});
    let mut refused = failed(
        "job-late",
        PHONE,
        "window_closed",
        now + ChronoDuration::seconds(2),
    );
    refused["message"] = json!({"type": "image", "image": {"link": "https://example.com/jadwal.png", "caption": "Jadwal manasik"}});
    let bare = accepted(
        "job-bare",
        PHONE,
        "wamid.OUT3",
        now + ChronoDuration::seconds(3),
    );
    app.publish(routing::OUTBOUND_ACCEPTED, &text).await;
    app.publish(routing::OUTBOUND_ACCEPTED, &template).await;
    app.publish(routing::OUTBOUND_FAILED, &refused).await;
    app.publish(routing::OUTBOUND_ACCEPTED, &bare).await;
    app.wait_count("SELECT count(*)::bigint AS n FROM messages", 4)
        .await;

    let page: Value = app
        .get(&format!("/v1/tenants/{TENANT}/jamaah/jm-o/messages"))
        .await
        .json()
        .await
        .unwrap();
    let shown: Vec<(String, Option<String>)> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["type"].as_str().unwrap_or_default().to_owned(),
                m["body"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            ("outbound".to_owned(), None),
            ("image".to_owned(), Some("Jadwal manasik".to_owned())),
            (
                "template".to_owned(),
                Some("[payment_reminder] Siti Aminah | 05 Des 2026".to_owned())
            ),
            (
                "text".to_owned(),
                Some("Wa'alaikumussalam, manasik hari Sabtu.".to_owned())
            ),
        ]
    );
    app.wait_count(
        "SELECT count(*)::bigint AS n FROM messages WHERE position('manasik'::bytea in body_ciphertext) > 0 OR position('manasik'::bytea in raw_ciphertext) > 0",
        0,
    )
    .await;
}

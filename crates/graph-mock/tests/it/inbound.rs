//! Injected inbound messages: text (with Arabic and emoji), image, template button and interactive replies.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::helpers::*;

#[tokio::test]
async fn inbound_text_with_arabic_and_emoji_is_escaped_and_signed_over_the_escaped_bytes() {
    let receiver = Receiver::start().await;
    let t = TestMock::with_webhook(&receiver, |_| {}).await;
    let text = "السلام عليكم, kapan jadwal manasik? 🕋🤲 Ümrah";

    let (status, outcome) = t
        .post(
            "/_mock/inbound",
            json!({"from": "6281234567890", "name": "Siti Aminah", "type": "text", "text": text}),
        )
        .await;

    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["webhook"]["status"], 200);
    let posts = receiver.accepted_posts();
    assert_eq!(posts.len(), 1);
    let post = &posts[0];
    assert!(post.signature_valid);
    assert!(post.raw.is_ascii(), "non-ASCII must travel escaped");
    let raw = String::from_utf8(post.raw.clone()).expect("ascii");
    assert!(
        raw.contains(r"\u0627\u0644\u0633\u0644\u0627\u0645"),
        "Arabic escaped in lowercase hex: {raw}"
    );
    assert!(
        raw.contains(r"\ud83d\udd4b\ud83e\udd32"),
        "emoji escaped as surrogate pairs: {raw}"
    );
    assert!(raw.contains(r"\u00dcmrah"));
    let messages = values(&post.json, "messages");
    assert_eq!(messages[0]["text"]["body"], text);
    assert_eq!(messages[0]["from"], "6281234567890");
    assert_eq!(messages[0]["type"], "text");
    assert_eq!(messages[0]["id"], outcome["id"]);
    assert!(messages[0]["timestamp"].is_string());
    let contacts = values(&post.json, "contacts");
    assert_eq!(
        contacts[0],
        json!({"profile": {"name": "Siti Aminah"}, "wa_id": "6281234567890"})
    );
}

#[tokio::test]
async fn a_replayed_inbound_message_keeps_its_wamid() {
    let receiver = Receiver::start().await;
    let t = TestMock::with_webhook(&receiver, |_| {}).await;

    let (_, first) = t
        .post(
            "/_mock/inbound",
            json!({"from": "+62 812-3456-7890", "text": "Halo"}),
        )
        .await;
    let (_, replay) = t
        .post(
            "/_mock/inbound",
            json!({"from": "6281234567890", "text": "Halo", "id": first["id"]}),
        )
        .await;

    assert_eq!(first["id"], replay["id"]);
    assert_eq!(receiver.accepted_posts().len(), 2);
}

#[tokio::test]
async fn inbound_image_carries_media_id_sha256_and_caption_and_downloads_to_the_same_bytes() {
    let receiver = Receiver::start().await;
    let t = TestMock::with_webhook(&receiver, |_| {}).await;

    let (status, outcome) = t
        .post("/_mock/inbound", json!({"from": "6281234567890", "name": "Siti", "type": "image", "caption": "Bukti transfer DP"}))
        .await;
    assert_eq!(status, 200, "{outcome}");
    let message = &values(&receiver.accepted_posts()[0].json, "messages")[0];
    let image = &message["image"];
    assert_eq!(image["caption"], "Bukti transfer DP");
    assert_eq!(image["mime_type"], "image/png");
    assert_eq!(image["id"], outcome["media_id"]);
    let media_id = image["id"].as_str().expect("id");

    let (_, lookup) = t.get(&format!("/v24.0/{media_id}")).await;
    let bytes = t
        .http
        .get(lookup["url"].as_str().expect("url"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("download")
        .bytes()
        .await
        .expect("bytes");

    assert!(bytes.starts_with(b"\x89PNG"));
    assert_eq!(
        image["sha256"],
        STANDARD.encode(Sha256::digest(&bytes)),
        "webhook sha256 is base64 of the bytes"
    );
}

#[tokio::test]
async fn inbound_template_quick_reply_arrives_as_a_button_message() {
    let receiver = Receiver::start().await;
    let t = TestMock::with_webhook(&receiver, |_| {}).await;

    let (status, _) = t
        .post(
            "/_mock/inbound",
            json!({"from": "6281234567890", "type": "button", "button": {"payload": "pay-confirm-INV2026-0142", "text": "Sudah transfer"},
                   "context": {"id": "wamid.HBgNNjIyMTU1NTAwMDExMRUCABEYEkE5QkQ3RjE2QzZBQjQ1RTEA"}}),
        )
        .await;

    assert_eq!(status, 200);
    let message = &values(&receiver.accepted_posts()[0].json, "messages")[0];
    assert_eq!(message["type"], "button");
    assert_eq!(
        message["button"],
        json!({"payload": "pay-confirm-INV2026-0142", "text": "Sudah transfer"})
    );
    assert_eq!(message["context"]["from"], "6221555000111");
}

#[tokio::test]
async fn inbound_interactive_button_reply_uses_metas_shape() {
    let receiver = Receiver::start().await;
    let t = TestMock::with_webhook(&receiver, |_| {}).await;

    let (status, _) = t
        .post(
            "/_mock/inbound",
            json!({"from": "6281234567890", "type": "interactive",
                   "interactive": {"type": "button_reply", "button_reply": {"id": "ya", "title": "Sudah transfer"}}}),
        )
        .await;

    assert_eq!(status, 200);
    let message = &values(&receiver.accepted_posts()[0].json, "messages")[0];
    assert_eq!(
        message["interactive"],
        json!({"type": "button_reply", "button_reply": {"id": "ya", "title": "Sudah transfer"}})
    );
}

#[tokio::test]
async fn inbound_without_a_webhook_is_a_conflict_and_bad_specs_are_refused() {
    let t = TestMock::start().await;
    let (status, _) = t
        .post(
            "/_mock/inbound",
            json!({"from": "6281234567890", "text": "x"}),
        )
        .await;
    assert_eq!(status, 409);

    let receiver = Receiver::start().await;
    let t = TestMock::with_webhook(&receiver, |_| {}).await;
    let (status, body) = t
        .post("/_mock/inbound", json!({"from": "12", "text": "x"}))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = t
        .post(
            "/_mock/inbound",
            json!({"from": "6281234567890", "type": "sticker"}),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn any_other_webhook_field_can_be_sent_signed() {
    let receiver = Receiver::start().await;
    let t = TestMock::with_webhook(&receiver, |_| {}).await;

    let (status, _) = t
        .post("/_mock/webhook", json!({"field": "account_update", "value": {"event": "ACCOUNT_VIOLATION", "violation_info": {"violation_type": "SPAM"}}}))
        .await;

    assert_eq!(status, 200);
    let post = &receiver.accepted_posts()[0];
    assert!(post.signature_valid);
    assert_eq!(
        post.json["entry"][0]["changes"][0]["field"],
        "account_update"
    );
    assert!(post.json["entry"][0]["time"].is_i64());
}

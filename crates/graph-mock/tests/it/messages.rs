//! The send endpoint: success shapes, authentication and Meta's validation errors.

use serde_json::{Value, json};
use wa_graph_mock::EXPIRED_TOKEN;

use crate::helpers::*;

#[tokio::test]
async fn text_send_returns_contacts_and_a_wamid_without_message_status() {
    let t = TestMock::start().await;

    let (status, body) = t
        .send(text_to("+62 812-3456-7890", "Assalamu'alaikum"))
        .await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messaging_product"], "whatsapp");
    assert_eq!(
        body["contacts"],
        json!([{"input": "+62 812-3456-7890", "wa_id": "6281234567890"}])
    );
    let message = &body["messages"][0];
    assert!(
        message["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("wamid.")),
        "{body}"
    );
    assert!(
        message.get("message_status").is_none(),
        "free-form sends have no message_status: {body}"
    );
}

#[tokio::test]
async fn template_send_returns_message_status_accepted() {
    let t = TestMock::start().await;

    let (status, body) = t
        .send(template_to(JAMAAH, "payment_reminder", &reminder_params()))
        .await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"][0]["message_status"], "accepted");
    assert_eq!(body["contacts"][0]["wa_id"], "6281234567890");
}

#[tokio::test]
async fn wamids_are_unique_across_sends() {
    let t = TestMock::with(|c| c.pair_interval = std::time::Duration::ZERO).await;

    let (_, a) = t.send(text_to(JAMAAH, "satu")).await;
    let (_, b) = t.send(text_to(JAMAAH, "dua")).await;

    assert_ne!(a["messages"][0]["id"], b["messages"][0]["id"]);
}

#[tokio::test]
async fn missing_or_wrong_bearer_token_is_refused_with_190_and_http_401() {
    let t = TestMock::start().await;

    let missing = t.send_as(None, PNID, text_to(JAMAAH, "x")).await;
    let wrong = t
        .send_as(Some("not-our-token"), PNID, text_to(JAMAAH, "x"))
        .await;

    assert_meta_error(&missing, 401, 190);
    assert_meta_error(&wrong, 401, 190);
    assert!(
        wrong.1["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Error validating access token"))
    );
}

#[tokio::test]
async fn the_scripted_expired_token_is_refused_with_190_subcode_463() {
    let t = TestMock::start().await;

    let got = t
        .send_as(Some(EXPIRED_TOKEN), PNID, text_to(JAMAAH, "x"))
        .await;

    assert_meta_error(&got, 401, 190);
    assert_eq!(got.1["error"]["error_subcode"], 463);
}

#[tokio::test]
async fn every_configured_token_is_accepted() {
    let t = TestMock::with(|c| c.tokens = vec!["token-a".into(), "token-b".into()]).await;

    let (status, _) = t.send_as(Some("token-b"), PNID, text_to(JAMAAH, "x")).await;

    assert_eq!(status, 200);
}

#[tokio::test]
async fn unknown_phone_number_id_answers_unsupported_post_request() {
    let t = TestMock::start().await;

    let got = t
        .send_as(Some(TOKEN), "999999999", text_to(JAMAAH, "x"))
        .await;

    assert_meta_error(&got, 400, 100);
    assert_eq!(got.1["error"]["error_subcode"], 33);
    assert!(
        got.1["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Unsupported post request"))
    );
}

#[tokio::test]
async fn any_graph_version_is_accepted_and_counted() {
    let t = TestMock::with(|c| c.pair_interval = std::time::Duration::ZERO).await;

    for version in ["v19.0", "v24.0", "v25.0"] {
        let response = t
            .http
            .post(t.url(&format!("/{version}/{PNID}/messages")))
            .bearer_auth(TOKEN)
            .json(&text_to(JAMAAH, "x"))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status().as_u16(), 200, "{version}");
    }
    let bad = into_json(
        t.http
            .post(t.url(&format!("/v24.1/{PNID}/messages")))
            .send()
            .await
            .expect("sent"),
    )
    .await;

    assert_meta_error(&bad, 400, 2500);
    let stats = t.stats().await;
    assert_eq!(
        stats["api_versions"],
        json!({"v19.0": 1, "v24.0": 1, "v25.0": 1})
    );
}

fn body(extra: Value) -> Value {
    let mut b = json!({"messaging_product": "whatsapp", "to": JAMAAH});
    if let (Some(b), Some(e)) = (b.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    b
}

#[tokio::test]
async fn each_invalid_body_gets_metas_code_and_http_status() {
    let t = TestMock::start().await;
    let four_buttons: Vec<Value> =
        (0..4).map(|i| json!({"type": "reply", "reply": {"id": format!("b{i}"), "title": format!("Pilihan {i}")}})).collect();
    let cases: Vec<(&str, Value, u16, i64)> = vec![
        (
            "messaging_product missing",
            json!({"to": JAMAAH, "type": "text", "text": {"body": "x"}}),
            400,
            100,
        ),
        (
            "messaging_product wrong",
            body(json!({"messaging_product": "sms", "text": {"body": "x"}})),
            400,
            100,
        ),
        (
            "to missing",
            json!({"messaging_product": "whatsapp", "type": "text", "text": {"body": "x"}}),
            400,
            131_008,
        ),
        (
            "to not a phone",
            body(json!({"to": "jamaah-42", "text": {"body": "x"}})),
            400,
            131_009,
        ),
        (
            "to too short",
            body(json!({"to": "+62812", "text": {"body": "x"}})),
            400,
            131_009,
        ),
        (
            "unknown type",
            body(json!({"type": "hologram", "hologram": {}})),
            400,
            131_051,
        ),
        (
            "type object missing",
            body(json!({"type": "image"})),
            400,
            131_008,
        ),
        (
            "text body missing",
            body(json!({"type": "text", "text": {}})),
            400,
            131_008,
        ),
        (
            "text body empty",
            body(json!({"type": "text", "text": {"body": ""}})),
            400,
            100,
        ),
        (
            "text body too long",
            body(json!({"type": "text", "text": {"body": "a".repeat(4097)}})),
            400,
            100,
        ),
        (
            "caption on audio",
            body(json!({"type": "audio", "audio": {"id": "123", "caption": "x"}})),
            400,
            100,
        ),
        (
            "caption on sticker",
            body(json!({"type": "sticker", "sticker": {"id": "123", "caption": "x"}})),
            400,
            100,
        ),
        (
            "media with id and link",
            body(json!({"type": "image", "image": {"id": "1", "link": "https://e.x/a.png"}})),
            400,
            100,
        ),
        (
            "media with neither",
            body(json!({"type": "document", "document": {"filename": "a.pdf"}})),
            400,
            100,
        ),
        (
            "four reply buttons",
            body(
                json!({"type": "interactive", "interactive": {"type": "button", "body": {"text": "Pilih"}, "action": {"buttons": four_buttons}}}),
            ),
            400,
            100,
        ),
        (
            "button title over 20 chars",
            body(
                json!({"type": "interactive", "interactive": {"type": "button", "body": {"text": "Pilih"},
                "action": {"buttons": [{"type": "reply", "reply": {"id": "a", "title": "Judul yang terlalu panjang"}}]}}}),
            ),
            400,
            100,
        ),
        (
            "reaction without message_id",
            body(json!({"type": "reaction", "reaction": {"emoji": "👍"}})),
            400,
            100,
        ),
        (
            "location without latitude",
            body(json!({"type": "location", "location": {"longitude": 39.8}})),
            400,
            131_008,
        ),
        (
            "to is the business number",
            body(json!({"to": "+62 21 5550 00111", "text": {"body": "x"}})),
            400,
            131_021,
        ),
        (
            "template name missing",
            body(json!({"type": "template", "template": {"language": {"code": "id"}}})),
            400,
            131_008,
        ),
    ];

    for (label, request, status, code) in cases {
        let got = t.send(request).await;
        assert_eq!(got.0, status, "{label}: {}", got.1);
        assert_eq!(got.1["error"]["code"], code, "{label}: {}", got.1);
        assert_meta_error(&got, status, code);
    }
}

#[tokio::test]
async fn text_of_exactly_4096_characters_is_accepted() {
    let t = TestMock::start().await;

    let (status, body) = t.send(text_to(JAMAAH, &"ش".repeat(4096))).await;

    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn valid_media_interactive_reaction_location_and_contacts_sends_are_accepted() {
    let t = TestMock::with(|c| c.pair_interval = std::time::Duration::ZERO).await;
    let sends = [
        json!({"type": "image", "image": {"link": "https://cdn.example/brosur.jpg", "caption": "Brosur"}}),
        json!({"type": "document", "document": {"id": "1376223850470843", "filename": "Invoice.pdf"}}),
        json!({"type": "audio", "audio": {"id": "1376223850470844"}}),
        json!({"type": "interactive", "interactive": {"type": "button", "body": {"text": "Sudah transfer?"},
            "action": {"buttons": [{"type": "reply", "reply": {"id": "ya", "title": "Sudah transfer"}},
                                   {"type": "reply", "reply": {"id": "belum", "title": "Belum"}}]}}}),
        json!({"type": "reaction", "reaction": {"message_id": "wamid.HBgNNjI4", "emoji": "🤲"}}),
        json!({"type": "location", "location": {"latitude": 21.4225, "longitude": 39.8262, "name": "Masjidil Haram"}}),
        json!({"type": "contacts", "contacts": [{"name": {"formatted_name": "Ustadz Ahmad"}, "phones": [{"phone": "+6281200000000"}]}]}),
    ];

    for send in sends {
        let got = t.send(body(send.clone())).await;
        assert_eq!(got.0, 200, "{send}: {}", got.1);
    }
}

#[tokio::test]
async fn unknown_template_is_132001_with_http_404() {
    let t = TestMock::start().await;

    let got = t
        .send(template_to(JAMAAH, "pengingat_tidak_ada", &[]))
        .await;

    assert_meta_error(&got, 404, 132_001);
}

#[tokio::test]
async fn template_in_another_language_is_132001() {
    let t = TestMock::start().await;
    let mut request = template_to(
        JAMAAH,
        "departure_reminder",
        &["Siti", "05 Des 2026", "Umrah"],
    );
    request["template"]["language"]["code"] = json!("en_US");

    let got = t.send(request).await;

    assert_meta_error(&got, 404, 132_001);
}

#[tokio::test]
async fn wrong_body_parameter_count_is_132000() {
    let t = TestMock::start().await;

    let got = t
        .send(template_to(JAMAAH, "payment_reminder", &["Siti", "Umrah"]))
        .await;

    assert_meta_error(&got, 400, 132_000);
}

#[tokio::test]
async fn every_seeded_template_accepts_its_parameter_count() {
    let t = TestMock::with(|c| c.pair_interval = std::time::Duration::ZERO).await;
    let seeds = [
        ("payment_reminder", 6),
        ("payment_confirmation", 5),
        ("departure_reminder", 3),
        ("registration_confirmation", 3),
        ("document_ready", 3),
        ("visa_status", 3),
    ];

    for (name, count) in seeds {
        let params = vec!["nilai"; count];
        let got = t.send(template_to(JAMAAH, name, &params)).await;
        assert_eq!(got.0, 200, "{name}: {}", got.1);
    }
}

#[tokio::test]
async fn templates_not_approved_cannot_be_sent() {
    let t = TestMock::start().await;
    for (status, http, code) in [
        ("PENDING", 404, 132_001),
        ("REJECTED", 404, 132_001),
        ("PAUSED", 400, 132_015),
        ("DISABLED", 400, 132_016),
    ] {
        let (s, b) = t
            .post(
                "/_mock/templates/departure_reminder/status",
                json!({"status": status}),
            )
            .await;
        assert_eq!(s, 200, "{b}");

        let got = t
            .send(template_to(
                JAMAAH,
                "departure_reminder",
                &["Siti", "05 Des 2026", "Umrah"],
            ))
            .await;

        assert_meta_error(&got, http, code);
    }
}

#[tokio::test]
async fn mark_as_read_and_typing_indicator_answer_success_true() {
    let t = TestMock::start().await;

    let read = t.send(json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.HBgNNjI4"})).await;
    let typing = t
        .send(json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.HBgNNjI4",
            "typing_indicator": {"type": "text"}}))
        .await;
    let missing_id = t
        .send(json!({"messaging_product": "whatsapp", "status": "read"}))
        .await;

    assert_eq!(read, (200, json!({"success": true})));
    assert_eq!(typing, (200, json!({"success": true})));
    assert_meta_error(&missing_id, 400, 131_008);
    assert_eq!(t.stats().await["phone_numbers"][PNID]["mark_as_read"], 2);
}

#[tokio::test]
async fn malformed_json_is_refused_with_100() {
    let t = TestMock::start().await;

    let got = into_json(
        t.http
            .post(t.url(&format!("/v24.0/{PNID}/messages")))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .expect("sent"),
    )
    .await;

    assert_meta_error(&got, 400, 100);
}

#[tokio::test]
async fn sends_without_a_leading_plus_are_accepted_but_counted() {
    let t = TestMock::start().await;

    let (status, body) = t.send(text_to("081234567890", "x")).await;

    assert_eq!(status, 200);
    assert_eq!(body["contacts"][0]["wa_id"], "081234567890");
    assert_eq!(t.stats().await["phone_numbers"][PNID]["non_e164_to"], 1);
}

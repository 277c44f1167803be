//! Template management: listing with fields and cursors, creation rules, review and status webhooks.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

fn template_body(name: &str, text: &str, examples: Value) -> Value {
    json!({"name": name, "category": "UTILITY", "language": "id",
           "components": [{"type": "BODY", "text": text, "example": {"body_text": [examples]}}]})
}

#[tokio::test]
async fn seeded_templates_are_listed_with_the_requested_fields_and_cursor_pagination() {
    let t = TestMock::start().await;

    let (status, first) = t
        .get(&format!(
            "/v24.0/{WABA}/message_templates?fields=name,status,language&limit=4"
        ))
        .await;
    assert_eq!(status, 200, "{first}");
    let data = first["data"].as_array().expect("data");
    assert_eq!(data.len(), 4);
    assert_eq!(
        data[0],
        json!({"name": "payment_reminder", "status": "APPROVED", "language": "id", "id": "1000000000000001"})
    );
    let after = first["paging"]["cursors"]["after"]
        .as_str()
        .expect("after cursor");
    assert!(first["paging"]["next"].is_string());

    let (_, second) = t
        .get(&format!(
            "/v24.0/{WABA}/message_templates?limit=4&after={after}"
        ))
        .await;
    let names: Vec<&str> = second["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(names, ["document_ready", "visa_status"]);
    assert!(second["paging"].get("next").is_none());
    assert_eq!(second["data"][1]["category"], "UTILITY");
    assert!(
        second["data"][1]["components"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("{{3}}"))
    );

    let before = second["paging"]["cursors"]["before"]
        .as_str()
        .expect("before");
    let (_, back) = t
        .get(&format!(
            "/v24.0/{WABA}/message_templates?limit=4&before={before}"
        ))
        .await;
    assert_eq!(back["data"].as_array().map(Vec::len), Some(4));
}

#[tokio::test]
async fn the_seeded_reminder_texts_are_the_contract_texts() {
    let t = TestMock::start().await;

    let (_, list) = t
        .get(&format!(
            "/v24.0/{WABA}/message_templates?name=payment_reminder"
        ))
        .await;

    assert_eq!(
        list["data"][0]["components"][0]["text"],
        "Assalamu'alaikum {{1}},\n\nPengingat cicilan paket {{2}}:\n- Jatuh tempo: {{3}}\n- Jumlah: Rp {{4}}\n\nMohon lakukan pembayaran sebelum tanggal jatuh tempo.\n\nJazakallah khairan,\n{{5}} - {{6}}"
    );
}

#[tokio::test]
async fn an_invalid_cursor_or_unknown_waba_is_refused() {
    let t = TestMock::start().await;

    let cursor = t
        .get(&format!("/v24.0/{WABA}/message_templates?after=bogus"))
        .await;
    let waba = t.get("/v24.0/111111111/message_templates").await;

    assert_meta_error(&cursor, 400, 131_059);
    assert_meta_error(&waba, 400, 100);
}

#[tokio::test]
async fn a_created_template_is_pending_then_approved_with_a_status_webhook() {
    let receiver = Receiver::start().await;
    let t = TestMock::with_webhook(&receiver, |c| {
        c.template_review_delay = Duration::from_millis(100)
    })
    .await;

    let (status, created) = t
        .post(
            &format!("/v24.0/{WABA}/message_templates"),
            template_body(
                "pelunasan_umrah",
                "Assalamu'alaikum {{1}}, sisa pelunasan Rp {{2}} ya.",
                json!(["Siti", "2.000.000"]),
            ),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["status"], "PENDING");
    assert_eq!(created["category"], "UTILITY");
    let pending = t
        .send(template_to(
            JAMAAH,
            "pelunasan_umrah",
            &["Siti", "2.000.000"],
        ))
        .await;
    assert_meta_error(&pending, 404, 132_001);

    let posts = receiver
        .wait_for(Duration::from_secs(5), "template webhook", |posts| {
            !posts.is_empty()
        })
        .await;
    let entry = &posts[0].json["entry"][0];
    assert!(entry["time"].is_i64());
    assert_eq!(
        entry["changes"][0]["field"],
        "message_template_status_update"
    );
    let value = &entry["changes"][0]["value"];
    assert_eq!(value["event"], "APPROVED");
    assert_eq!(value["reason"], "NONE");
    assert_eq!(value["message_template_name"], "pelunasan_umrah");
    assert_eq!(value["message_template_language"], "id");
    assert_eq!(value["message_template_category"], "UTILITY");
    assert_eq!(
        value["message_template_id"]
            .as_u64()
            .map(|id| id.to_string()),
        created["id"].as_str().map(str::to_owned)
    );
    let approved = t
        .send(template_to(
            JAMAAH,
            "pelunasan_umrah",
            &["Siti", "2.000.000"],
        ))
        .await;
    assert_eq!(approved.0, 200, "{}", approved.1);
}

#[tokio::test]
async fn adjacent_variables_are_rejected_later_as_invalid_format() {
    let receiver = Receiver::start().await;
    let t = TestMock::with_webhook(&receiver, |_| {}).await;

    let (status, created) = t
        .post(
            &format!("/v24.0/{WABA}/message_templates"),
            template_body(
                "nama_lengkap",
                "Halo {{1}}{{2}}, selamat datang.",
                json!(["Siti", "Aminah"]),
            ),
        )
        .await;

    assert_eq!((status, created["status"].clone()), (200, json!("PENDING")));
    let posts = receiver
        .wait_for(Duration::from_secs(5), "rejection", |p| !p.is_empty())
        .await;
    let value = &posts[0].json["entry"][0]["changes"][0]["value"];
    assert_eq!(value["event"], "REJECTED");
    assert_eq!(value["reason"], "INVALID_FORMAT");
    assert!(value["rejection_info"]["reason"].is_string());
    let (_, list) = t
        .get(&format!(
            "/v24.0/{WABA}/message_templates?name=nama_lengkap"
        ))
        .await;
    assert_eq!(list["data"][0]["status"], "REJECTED");
}

#[tokio::test]
async fn creation_rules_are_enforced_with_code_100() {
    let t = TestMock::start().await;
    let path = format!("/v24.0/{WABA}/message_templates");
    let cases = [
        (
            "uppercase name",
            template_body("Pengingat", "Halo {{1}} ya", json!(["a"])),
            None,
        ),
        (
            "missing example",
            template_body("pengingat_a", "Halo {{1}} dan {{2}} ya", json!(["a"])),
            None,
        ),
        (
            "variable at the end",
            template_body("pengingat_b", "Halo {{1}}", json!(["a"])),
            Some(2_388_299),
        ),
        (
            "duplicate name and language",
            template_body("payment_reminder", "Halo {{1}} ya", json!(["a"])),
            None,
        ),
        (
            "bad category",
            json!({"name": "x", "category": "TRANSACTIONAL", "language": "id", "components": []}),
            None,
        ),
    ];

    for (label, body, subcode) in cases {
        let got = t.post(&path, body).await;
        assert_eq!(got.0, 400, "{label}: {}", got.1);
        assert_meta_error(&got, 400, 100);
        if let Some(subcode) = subcode {
            assert_eq!(got.1["error"]["error_subcode"], subcode, "{label}");
        }
    }
    let duplicate = t
        .post(
            &path,
            template_body("payment_reminder", "Halo {{1}} ya", json!(["a"])),
        )
        .await;
    assert!(
        duplicate.1["error"]["error_data"]["details"]
            .as_str()
            .is_some_and(|d| d.contains("already exists"))
    );
}

#[tokio::test]
async fn a_status_change_through_the_control_api_sends_the_template_webhook() {
    let receiver = Receiver::start().await;
    let t = TestMock::with_webhook(&receiver, |_| {}).await;

    let (status, body) = t
        .post(
            "/_mock/templates/payment_reminder/status",
            json!({"status": "PAUSED"}),
        )
        .await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["webhook_scheduled"], true);
    let posts = receiver
        .wait_for(Duration::from_secs(5), "status webhook", |p| !p.is_empty())
        .await;
    let value = &posts[0].json["entry"][0]["changes"][0]["value"];
    assert_eq!(value["event"], "PAUSED");
    assert_eq!(value["message_template_id"], 1_000_000_000_000_001u64);
    assert_eq!(value["other_info"]["title"], "FIRST_PAUSE");
    let paused = t
        .send(template_to(JAMAAH, "payment_reminder", &reminder_params()))
        .await;
    assert_meta_error(&paused, 400, 132_015);

    let (status, _) = t
        .post(
            "/_mock/templates/payment_reminder/status",
            json!({"status": "APPROVED"}),
        )
        .await;
    assert_eq!(status, 200);
    let again = t
        .send(template_to(JAMAAH, "payment_reminder", &reminder_params()))
        .await;
    assert_eq!(again.0, 200);
    let (missing, _) = t
        .post(
            "/_mock/templates/tidak_ada/status",
            json!({"status": "PAUSED"}),
        )
        .await;
    assert_eq!(missing, 404);
}

#[tokio::test]
async fn a_template_can_be_added_directly_for_tests() {
    let t = TestMock::start().await;

    let (status, _) = t
        .post("/_mock/templates", json!({"name": "promo_ramadhan", "category": "MARKETING", "body_text": "Promo {{1}} khusus Ramadhan."}))
        .await;
    let sent = t
        .send(template_to(JAMAAH, "promo_ramadhan", &["umrah plus"]))
        .await;

    assert_eq!(status, 201);
    assert_eq!(sent.0, 200, "{}", sent.1);
}

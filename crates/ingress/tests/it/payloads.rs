//! Realistic webhook bodies, built as Meta sends them.

use serde_json::{Value, json};

/// WABA id of the test tenant.
pub const WABA_ID: &str = "102290129340398";
/// Phone number id of the test tenant.
pub const PHONE_NUMBER_ID: &str = "106540352242922";

fn messages_change(extra: Value) -> Value {
    let mut value = json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "6221555000111", "phone_number_id": PHONE_NUMBER_ID}
    });
    if let (Some(v), Value::Object(extra)) = (value.as_object_mut(), extra) {
        v.extend(extra);
    }
    json!({"field": "messages", "value": value})
}

/// Two entries: the first with two changes (2 messages + 2 statuses + 1 error; 1 message + 1
/// status), the second with one change (1 status with errors): 4 messages, 4 statuses, 1 error.
pub fn batch() -> Value {
    json!({"object": "whatsapp_business_account", "entry": [
        {"id": WABA_ID, "changes": [
            messages_change(json!({
                "contacts": [
                    {"profile": {"name": "Siti Aminah"}, "wa_id": "6281234567890"},
                    {"profile": {"name": "Budi"}, "wa_id": "6281298765432"}
                ],
                "messages": [
                    {"from": "6281234567890", "id": "wamid.M1", "timestamp": "1767225600", "type": "text",
                     "text": {"body": "Assalamualaikum, kapan jadwal manasik?"}},
                    {"from": "6281298765432", "id": "wamid.M2", "timestamp": "1767225700", "type": "image",
                     "image": {"caption": "Bukti transfer DP", "mime_type": "image/jpeg", "sha256": "abc=", "id": "1479537139650973"}}
                ],
                "statuses": [
                    {"id": "wamid.S1", "status": "sent", "timestamp": "1767226000", "recipient_id": "6281234567890",
                     "pricing": {"billable": true, "pricing_model": "PMP", "type": "regular", "category": "utility"}},
                    {"id": "wamid.S1", "status": "delivered", "timestamp": "1767226005", "recipient_id": "6281234567890"}
                ],
                "errors": [{"code": 130429, "title": "Rate limit hit", "message": "Rate limit hit",
                            "error_data": {"details": "Cloud API message throughput has been reached."}}]
            })),
            messages_change(json!({
                "contacts": [{"profile": {"name": "Ahmad"}, "wa_id": "6281311112222"}],
                "messages": [{"from": "6281311112222", "id": "wamid.M3", "timestamp": "1767225800", "type": "interactive",
                              "interactive": {"type": "button_reply", "button_reply": {"id": "pay-confirm", "title": "Sudah transfer"}}}],
                "statuses": [{"id": "wamid.S2", "status": "read", "timestamp": "1767226100", "recipient_id": "6281311112222"}]
            }))
        ]},
        {"id": "300000000000001", "changes": [
            messages_change(json!({
                "contacts": [{"profile": {"name": "Fatimah"}, "wa_id": "6281344445555"}],
                "messages": [{"from": "6281344445555", "id": "wamid.M4", "timestamp": "1767225900", "type": "text",
                              "text": {"body": "Terima kasih"}}],
                "statuses": [{"id": "wamid.S3", "status": "failed", "timestamp": "1767226200", "recipient_id": "6281344445555",
                              "errors": [{"code": 131047, "title": "Re-engagement message", "message": "Re-engagement message",
                                          "error_data": {"details": "More than 24 hours have passed"}}]}]
            }))
        ]}
    ]})
}

/// An inbound text whose sender and text are Arabic with emoji and accents.
pub fn arabic_text() -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": WABA_ID, "changes": [messages_change(json!({
        "contacts": [{"profile": {"name": "مُحَمَّد Zoë"}, "wa_id": "6281234567890"}],
        "messages": [{"from": "6281234567890", "id": "wamid.AR1", "timestamp": "1767225600", "type": "text",
                      "text": {"body": "السلام عليكم، متى موعد المناسك؟ 🕋🤲 café"}}]
    }))]}]})
}

/// Template status, a documented other field and a field nobody knows yet.
pub fn management_fields() -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": WABA_ID, "time": 1767225600, "changes": [
        {"field": "message_template_status_update", "value": {
            "event": "REJECTED", "message_template_id": 1234567890123_i64, "message_template_name": "payment_reminder",
            "message_template_language": "id", "reason": "INVALID_FORMAT",
            "rejection_info": {"reason": "INVALID_FORMAT", "recommendation": "fix variables"}}},
        {"field": "account_update", "value": {"event": "ACCOUNT_RESTRICTION",
            "restriction_info": [{"restriction_type": "RESTRICTED_BIZ_INITIATED_MESSAGING", "expiration": 1767312000}]}},
        {"field": "brand_new_field", "value": {"anything": [1, 2, 3]}}
    ]}]})
}

/// Meta's wire form: the JSON with every non-ASCII character escaped as `\uXXXX`.
pub fn meta_bytes(value: &Value) -> Vec<u8> {
    wa_ingress::signature::escape_non_ascii(&value.to_string()).into_bytes()
}

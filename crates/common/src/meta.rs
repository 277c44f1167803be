//! Meta Graph API shapes we read and write (reference §4.1, §4.4, §4.5).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::contracts::send_job::OutboundMessage;
use crate::phone::E164;

/// The body of `POST /{version}/{phone_number_id}/messages` for a job: the job's message object
/// plus `messaging_product`, `recipient_type` and `to` in E.164 (without `+` Meta would prepend the
/// business number's country code).
pub fn send_message_body(to: &E164, message: &OutboundMessage) -> Value {
    let mut body = serde_json::to_value(message).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut body {
        map.insert("messaging_product".into(), Value::from("whatsapp"));
        map.insert("recipient_type".into(), Value::from("individual"));
        map.insert("to".into(), Value::from(to.as_str()));
    }
    body
}

/// Success answer of the send API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMessageResponse {
    /// `[{input, wa_id}]`.
    #[serde(default)]
    pub contacts: Vec<ResponseContact>,
    /// `[{id, message_status?}]`; one entry.
    #[serde(default)]
    pub messages: Vec<ResponseMessage>,
}

impl SendMessageResponse {
    /// The wamid Meta assigned, if the answer has one.
    pub fn wa_message_id(&self) -> Option<&str> {
        self.messages.first().map(|m| m.id.as_str())
    }
}

/// One `contacts[]` entry of the send answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseContact {
    /// What we sent as `to`.
    #[serde(default)]
    pub input: String,
    /// WhatsApp's id for the recipient.
    #[serde(default)]
    pub wa_id: String,
}

/// One `messages[]` entry of the send answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseMessage {
    /// The wamid.
    pub id: String,
    /// Template pacing: `accepted` or `held_for_quality_assessment`.
    #[serde(default)]
    pub message_status: Option<String>,
}

/// Error answer of any Graph call: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphErrorEnvelope {
    /// The error.
    pub error: GraphError,
}

/// Meta's error object. Decide on `code` and `error_data.details`, never on HTTP status or titles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphError {
    /// `(#131056) …`.
    #[serde(default)]
    pub message: String,
    /// `OAuthException`, …
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The code; some captures show it as a string, so both are accepted.
    #[serde(deserialize_with = "lenient_i64")]
    pub code: i64,
    /// Deprecated but still sent sometimes.
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub error_subcode: Option<i64>,
    /// `{messaging_product, details}`.
    #[serde(default)]
    pub error_data: Option<GraphErrorData>,
    /// For support tickets.
    #[serde(default)]
    pub fbtrace_id: Option<String>,
}

impl GraphError {
    /// `error_data.details`, else the message.
    pub fn details(&self) -> &str {
        self.error_data
            .as_ref()
            .and_then(|d| d.details.as_deref())
            .unwrap_or(&self.message)
    }
}

/// `error.error_data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphErrorData {
    /// Always `whatsapp`.
    #[serde(default)]
    pub messaging_product: Option<String>,
    /// The useful explanation.
    #[serde(default)]
    pub details: Option<String>,
}

fn lenient_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    lenient_opt_i64(deserializer)?.ok_or_else(|| serde::de::Error::custom("error code is missing"))
}

fn lenient_opt_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Number(n) => Ok(n.as_i64()),
        Value::String(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("error code {s:?} is not a number"))),
        Value::Null => Ok(None),
        other => Err(serde::de::Error::custom(format!(
            "error code {other} is not a number"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_parse_as_numbers_or_strings() {
        let numeric: GraphErrorEnvelope = serde_json::from_str(
            r#"{"error":{"message":"(#131056) pair rate limit hit","type":"OAuthException","code":131056,
                "error_data":{"messaging_product":"whatsapp","details":"slow down"},"error_subcode":2494055,"fbtrace_id":"Az8"}}"#,
        )
        .expect("numeric code");
        assert_eq!(numeric.error.code, 131056);
        assert_eq!(numeric.error.details(), "slow down");
        let textual: GraphErrorEnvelope = serde_json::from_str(
            r#"{"error":{"message":"x","code":"130429","error_subcode":"1"}}"#,
        )
        .expect("string code");
        assert_eq!(textual.error.code, 130429);
        assert_eq!(textual.error.error_subcode, Some(1));
        assert_eq!(textual.error.details(), "x");
    }

    #[test]
    fn send_body_adds_the_envelope_fields() {
        let message: OutboundMessage =
            serde_json::from_str(r#"{"type":"text","text":{"body":"Assalamu'alaikum"}}"#)
                .expect("message");
        let to = E164::parse("0812-3456-7890").expect("phone");
        let body = send_message_body(&to, &message);
        assert_eq!(body["messaging_product"], "whatsapp");
        assert_eq!(body["recipient_type"], "individual");
        assert_eq!(body["to"], "+6281234567890");
        assert_eq!(body["type"], "text");
        assert_eq!(body["text"]["body"], "Assalamu'alaikum");
    }
}

//! Meta's validation of a `POST /{phone_number_id}/messages` body, written from Meta's documentation (reference §4),
//! not from our own client code.

use serde_json::{Map, Value};

use crate::error::GraphError;
use crate::phone::{self, Recipient};
use crate::templates::TemplateSend;

/// Message types the send API accepts.
pub const MESSAGE_TYPES: [&str; 11] = [
    "text",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "interactive",
    "reaction",
    "location",
    "contacts",
    "template",
];

/// A send body that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSend {
    /// `to` exactly as sent (echoed as `contacts[].input`).
    pub to_input: String,
    /// The recipient as Meta reads it.
    pub recipient: Recipient,
    /// `type` (defaults to `text` like Meta).
    pub msg_type: String,
    /// The template part for template sends.
    pub template: Option<TemplateSend>,
    /// `biz_opaque_callback_data`, echoed in status webhooks.
    pub biz_opaque: Option<String>,
}

/// The mark-as-read / typing-indicator form of the messages endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkRead {
    /// The inbound wamid being marked.
    pub message_id: String,
    /// Whether a typing indicator was requested too.
    pub typing: bool,
}

/// What a valid messages-endpoint body asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum MessagesRequest {
    /// An outbound message.
    Send(ValidSend),
    /// `{"status":"read","message_id":...}`.
    MarkRead(MarkRead),
}

/// Validates a messages-endpoint body like Meta does.
pub fn validate(body: &Value) -> Result<MessagesRequest, GraphError> {
    let Some(obj) = body.as_object() else {
        return Err(GraphError::invalid(
            "The request body must be a JSON object.",
        ));
    };
    match obj.get("messaging_product") {
        Some(Value::String(p)) if p == "whatsapp" => {}
        Some(_) => {
            return Err(GraphError::invalid(
                "Param messaging_product must be 'whatsapp'.",
            ));
        }
        None => {
            return Err(
                GraphError::invalid("The parameter messaging_product is required.")
                    .with_message("(#100) The parameter messaging_product is required."),
            );
        }
    }
    if obj.contains_key("status") {
        return validate_mark_read(obj).map(MessagesRequest::MarkRead);
    }
    validate_send(obj).map(MessagesRequest::Send)
}

fn validate_mark_read(obj: &Map<String, Value>) -> Result<MarkRead, GraphError> {
    if obj.get("status").and_then(Value::as_str) != Some("read") {
        return Err(GraphError::invalid("Param status must be 'read'."));
    }
    let message_id = match obj.get("message_id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        Some(_) => {
            return Err(GraphError::invalid(
                "Param message_id must be a non-empty string.",
            ));
        }
        None => return Err(GraphError::missing("message_id")),
    };
    let typing = match obj.get("typing_indicator") {
        None => false,
        Some(t) if t.get("type").and_then(Value::as_str) == Some("text") => true,
        Some(_) => {
            return Err(GraphError::invalid(
                "Param typing_indicator['type'] must be 'text'.",
            ));
        }
    };
    Ok(MarkRead { message_id, typing })
}

fn validate_send(obj: &Map<String, Value>) -> Result<ValidSend, GraphError> {
    match obj.get("recipient_type").map(|v| v.as_str()) {
        None | Some(Some("individual")) => {}
        Some(Some("group")) => {
            return Err(GraphError::invalid(
                "recipient_type 'group' is not supported by graph-mock.",
            ));
        }
        Some(_) => {
            return Err(GraphError::invalid(
                "Param recipient_type must be one of {individual, group}.",
            ));
        }
    }
    let to_input = match obj.get("to") {
        None | Some(Value::Null) => return Err(GraphError::missing("to")),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(GraphError::coded(
                131_009,
                "Param to must be a phone number string.",
            ));
        }
    };
    let recipient = phone::parse_recipient(&to_input).ok_or_else(|| {
        GraphError::coded(
            131_009,
            format!("Param to '{to_input}' is not a valid phone number."),
        )
    })?;
    let msg_type = match obj.get("type") {
        None => "text".to_owned(),
        Some(Value::String(t)) => t.clone(),
        Some(_) => return Err(GraphError::invalid("Param type must be a string.")),
    };
    if !MESSAGE_TYPES.contains(&msg_type.as_str()) {
        return Err(GraphError::coded(
            131_051,
            format!("Message type {msg_type} is not supported."),
        ));
    }
    let payload = match obj.get(&msg_type) {
        None | Some(Value::Null) => return Err(GraphError::missing(&msg_type)),
        Some(p) => p,
    };
    if !(payload.is_object() || (msg_type == "contacts" && payload.is_array())) {
        return Err(GraphError::invalid(format!(
            "Param {msg_type} must be an object."
        )));
    }
    if let Some(context) = obj.get("context")
        && context
            .get("message_id")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        return Err(GraphError::invalid(
            "Param context['message_id'] must be a non-empty string.",
        ));
    }
    let biz_opaque = match obj.get("biz_opaque_callback_data") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= 512 => Some(s.clone()),
        Some(_) => {
            return Err(GraphError::invalid(
                "Param biz_opaque_callback_data must be a string of at most 512 characters.",
            ));
        }
    };
    let mut template = None;
    match msg_type.as_str() {
        "text" => validate_text(payload)?,
        "image" | "audio" | "video" | "document" | "sticker" => validate_media(&msg_type, payload)?,
        "interactive" => validate_interactive(payload)?,
        "reaction" => validate_reaction(payload)?,
        "location" => validate_location(payload)?,
        "contacts" => validate_contacts(payload)?,
        "template" => template = Some(validate_template(payload)?),
        _ => {}
    }
    Ok(ValidSend {
        to_input,
        recipient,
        msg_type,
        template,
        biz_opaque,
    })
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// A string field that must be present; `131008` when missing, `100` when not a string.
fn required_string<'a>(payload: &'a Value, key: &str, path: &str) -> Result<&'a str, GraphError> {
    match payload.get(key) {
        None | Some(Value::Null) => Err(GraphError::missing(path)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(GraphError::invalid(format!(
            "Param {path} must be a string."
        ))),
    }
}

fn max_len(value: &str, max: usize, path: &str) -> Result<(), GraphError> {
    if chars(value) > max {
        return Err(GraphError::invalid(format!(
            "Param {path} must be at most {max} characters long."
        )));
    }
    Ok(())
}

fn validate_text(payload: &Value) -> Result<(), GraphError> {
    let body = required_string(payload, "body", "text['body']")?;
    if body.trim().is_empty() {
        return Err(GraphError::invalid(
            "Param text['body'] must be at least 1 character long.",
        ));
    }
    max_len(body, 4096, "text['body']")?;
    if payload.get("preview_url").is_some_and(|v| !v.is_boolean()) {
        return Err(GraphError::invalid(
            "Param text['preview_url'] must be a boolean.",
        ));
    }
    Ok(())
}

fn validate_media(kind: &str, payload: &Value) -> Result<(), GraphError> {
    let id = payload
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let link = payload
        .get("link")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    if id.is_some() == link.is_some() {
        return Err(GraphError::invalid(format!(
            "Param {kind} must contain exactly one of id or link."
        )));
    }
    if let Some(link) = link
        && !(link.starts_with("https://") || link.starts_with("http://"))
    {
        return Err(GraphError::invalid(format!(
            "Param {kind}['link'] must be an http(s) URL."
        )));
    }
    if let Some(caption) = payload.get("caption") {
        if matches!(kind, "audio" | "sticker") {
            return Err(GraphError::invalid(format!(
                "Param {kind}['caption'] is not allowed for {kind} messages."
            )));
        }
        let caption = caption.as_str().ok_or_else(|| {
            GraphError::invalid(format!("Param {kind}['caption'] must be a string."))
        })?;
        max_len(caption, 1024, &format!("{kind}['caption']"))?;
    }
    Ok(())
}

fn validate_interactive(payload: &Value) -> Result<(), GraphError> {
    let kind = required_string(payload, "type", "interactive['type']")?;
    let body_text = payload.pointer("/body/text").and_then(Value::as_str);
    for (part, max) in [("header", 60), ("footer", 60)] {
        if let Some(text) = payload
            .get(part)
            .and_then(|p| p.get("text"))
            .and_then(Value::as_str)
        {
            max_len(text, max, &format!("interactive['{part}']['text']"))?;
        }
    }
    match kind {
        "button" => {
            let body_text =
                body_text.ok_or_else(|| GraphError::missing("interactive['body']['text']"))?;
            max_len(body_text, 1024, "interactive['body']['text']")?;
            let buttons = payload
                .pointer("/action/buttons")
                .and_then(Value::as_array)
                .ok_or_else(|| GraphError::missing("interactive['action']['buttons']"))?;
            if buttons.is_empty() || buttons.len() > 3 {
                return Err(GraphError::invalid(
                    "Param interactive['action']['buttons'] must have between 1 and 3 elements.",
                ));
            }
            let mut seen_titles = Vec::new();
            let mut seen_ids = Vec::new();
            for (i, button) in buttons.iter().enumerate() {
                if button.get("type").and_then(Value::as_str) != Some("reply") {
                    return Err(GraphError::invalid(format!(
                        "Param interactive['action']['buttons'][{i}]['type'] must be 'reply'."
                    )));
                }
                let reply = button.get("reply").unwrap_or(&Value::Null);
                let path = format!("interactive['action']['buttons'][{i}]['reply']");
                let id = required_string(reply, "id", &format!("{path}['id']"))?;
                let title = required_string(reply, "title", &format!("{path}['title']"))?;
                if id.is_empty() || title.trim().is_empty() {
                    return Err(GraphError::invalid(format!(
                        "Param {path} needs a non-empty id and title."
                    )));
                }
                max_len(id, 256, &format!("{path}['id']"))?;
                max_len(title, 20, &format!("{path}['title']"))?;
                if seen_titles.contains(&title) || seen_ids.contains(&id) {
                    return Err(GraphError::invalid("Button titles and ids must be unique."));
                }
                seen_titles.push(title);
                seen_ids.push(id);
            }
        }
        "list" => {
            let body_text =
                body_text.ok_or_else(|| GraphError::missing("interactive['body']['text']"))?;
            max_len(body_text, 4096, "interactive['body']['text']")?;
            let button = payload
                .pointer("/action/button")
                .and_then(Value::as_str)
                .ok_or_else(|| GraphError::missing("interactive['action']['button']"))?;
            if button.is_empty() {
                return Err(GraphError::invalid(
                    "Param interactive['action']['button'] must not be empty.",
                ));
            }
            max_len(button, 20, "interactive['action']['button']")?;
            let sections = payload
                .pointer("/action/sections")
                .and_then(Value::as_array)
                .ok_or_else(|| GraphError::missing("interactive['action']['sections']"))?;
            let rows: Vec<&Value> = sections
                .iter()
                .flat_map(|s| {
                    s.get("rows")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                })
                .collect();
            if sections.is_empty() || sections.len() > 10 || rows.is_empty() || rows.len() > 10 {
                return Err(GraphError::invalid(
                    "A list needs 1 to 10 sections holding 1 to 10 rows in total.",
                ));
            }
            for row in rows {
                max_len(required_string(row, "id", "row['id']")?, 200, "row['id']")?;
                max_len(
                    required_string(row, "title", "row['title']")?,
                    24,
                    "row['title']",
                )?;
                if let Some(d) = row.get("description").and_then(Value::as_str) {
                    max_len(d, 72, "row['description']")?;
                }
            }
        }
        "cta_url"
        | "flow"
        | "product"
        | "product_list"
        | "catalog_message"
        | "location_request_message"
        | "address_message"
        | "call_permission_request"
        | "voice_call" => {}
        other => {
            return Err(GraphError::invalid(format!(
                "Param interactive['type'] '{other}' is not valid."
            )));
        }
    }
    Ok(())
}

fn validate_reaction(payload: &Value) -> Result<(), GraphError> {
    match payload.get("message_id") {
        Some(Value::String(id)) if !id.is_empty() => {}
        _ => {
            return Err(GraphError::invalid(
                "Param reaction['message_id'] is required.",
            ));
        }
    }
    if payload.get("emoji").is_some_and(|e| !e.is_string()) {
        return Err(GraphError::invalid(
            "Param reaction['emoji'] must be a string.",
        ));
    }
    Ok(())
}

fn validate_location(payload: &Value) -> Result<(), GraphError> {
    for (key, limit) in [("latitude", 90.0), ("longitude", 180.0)] {
        let value = match payload.get(key) {
            None | Some(Value::Null) => {
                return Err(GraphError::missing(&format!("location['{key}']")));
            }
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.parse::<f64>().ok(),
            Some(_) => None,
        };
        if !value.is_some_and(|v| v.abs() <= limit) {
            return Err(GraphError::invalid(format!(
                "Param location['{key}'] is not a valid coordinate."
            )));
        }
    }
    Ok(())
}

fn validate_contacts(payload: &Value) -> Result<(), GraphError> {
    let contacts = payload
        .as_array()
        .ok_or_else(|| GraphError::invalid("Param contacts must be an array."))?;
    if contacts.is_empty() {
        return Err(GraphError::invalid("Param contacts must not be empty."));
    }
    for (i, contact) in contacts.iter().enumerate() {
        if contact
            .pointer("/name/formatted_name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(GraphError::missing(&format!(
                "contacts[{i}]['name']['formatted_name']"
            )));
        }
    }
    Ok(())
}

fn validate_template(payload: &Value) -> Result<TemplateSend, GraphError> {
    let name = required_string(payload, "name", "template['name']")?.to_owned();
    let language = payload
        .get("language")
        .ok_or_else(|| GraphError::missing("template['language']"))?;
    let language = required_string(language, "code", "template['language']['code']")?.to_owned();
    let mut body_params = 0;
    let mut param_names = Vec::new();
    if let Some(components) = payload.get("components") {
        let components = components
            .as_array()
            .ok_or_else(|| GraphError::invalid("Param template['components'] must be an array."))?;
        for component in components {
            let kind = component
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !kind.eq_ignore_ascii_case("body") {
                continue;
            }
            let params = component
                .get("parameters")
                .and_then(Value::as_array)
                .map_or(&[][..], Vec::as_slice);
            for (i, param) in params.iter().enumerate() {
                let path = format!("template['components'][body]['parameters'][{i}]");
                let kind = required_string(param, "type", &format!("{path}['type']"))?;
                if kind == "text" {
                    required_string(param, "text", &format!("{path}['text']"))?;
                } else if param.get(kind).is_none() {
                    return Err(GraphError::missing(&format!("{path}['{kind}']")));
                }
                if let Some(n) = param.get("parameter_name").and_then(Value::as_str) {
                    param_names.push(n.to_owned());
                }
            }
            body_params += params.len();
        }
    }
    Ok(TemplateSend {
        name,
        language,
        body_params,
        param_names,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn code_of(body: Value) -> i64 {
        validate(&body).expect_err("should be refused").code
    }

    #[test]
    fn type_defaults_to_text() {
        let Ok(MessagesRequest::Send(send)) = validate(
            &json!({"messaging_product":"whatsapp","to":"+6281234567890","text":{"body":"Halo"}}),
        ) else {
            panic!("valid text send refused");
        };
        assert_eq!(send.msg_type, "text");
        assert_eq!(send.recipient.wa_id, "6281234567890");
    }

    #[test]
    fn each_rule_gives_meta_code() {
        let base = |extra: Value| {
            let mut b = json!({"messaging_product":"whatsapp","to":"+6281234567890"});
            if let (Some(b), Some(e)) = (b.as_object_mut(), extra.as_object()) {
                b.extend(e.clone());
            }
            b
        };
        assert_eq!(
            code_of(json!({"to":"+6281234567890","type":"text","text":{"body":"x"}})),
            100
        );
        assert_eq!(
            code_of(json!({"messaging_product":"whatsapp","type":"text","text":{"body":"x"}})),
            131_008
        );
        assert_eq!(
            code_of(base(
                json!({"to":"bukan nomor","type":"text","text":{"body":"x"}})
            )),
            131_009
        );
        assert_eq!(
            code_of(base(json!({"type":"hologram","hologram":{}}))),
            131_051
        );
        assert_eq!(code_of(base(json!({"type":"image"}))), 131_008);
        assert_eq!(
            code_of(base(json!({"type":"text","text":{"body":""}}))),
            100
        );
        assert_eq!(
            code_of(base(
                json!({"type":"text","text":{"body":"a".repeat(4097)}})
            )),
            100
        );
        assert_eq!(
            code_of(base(
                json!({"type":"audio","audio":{"id":"1","caption":"x"}})
            )),
            100
        );
        assert_eq!(
            code_of(base(
                json!({"type":"image","image":{"id":"1","link":"https://x/y.png"}})
            )),
            100
        );
        assert_eq!(
            code_of(base(json!({"type":"reaction","reaction":{"emoji":"👍"}}))),
            100
        );
    }
}

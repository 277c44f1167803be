//! The send-job (`whatsapp.commands` / `send`): what the platform and the scheduler ask us to send.

use chrono::{DateTime, FixedOffset};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Reference;
use crate::error::{ensure, ensure_max_chars, ensure_not_blank};
use crate::ids::{JobId, TenantId};
use crate::{Contract, ContractError};

/// A request to send one WhatsApp message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SendJob {
    /// Idempotency key within the tenant: a job id already sent is never sent again.
    pub job_id: JobId,
    /// Selects the business phone number and token.
    pub tenant_id: TenantId,
    /// Recipient in any usual Indonesian or international form; sent to Meta as E.164.
    pub to: String,
    /// The Graph API message object without `messaging_product`, `recipient_type` and `to`.
    pub message: OutboundMessage,
    /// Scheduling class; `transactional` when absent.
    #[serde(default)]
    pub priority: Priority,
    /// Echoed in every outcome and status event of this job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
    /// Not sent after this instant (`outbound.failed` with reason `expired`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<FixedOffset>>,
}

/// Scheduling class of a job: interactive overtakes transactional, which overtakes bulk.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Agent and bot replies: a person is waiting.
    Interactive,
    /// Reminders, confirmations: the default.
    #[default]
    Transactional,
    /// Broadcasts.
    Bulk,
}

impl Priority {
    /// Stable lowercase name, for metric labels and queue names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Interactive => "interactive",
            Self::Transactional => "transactional",
            Self::Bulk => "bulk",
        }
    }
}

/// A Graph API message object: `type` plus the object named after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutboundMessage {
    /// The typed content.
    #[serde(flatten)]
    pub content: MessageContent,
    /// Makes the message a quoted reply to `context.message_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<ReplyContext>,
    /// Echoed back by Meta in status webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_opaque_callback_data: Option<String>,
}

/// The message types of the Send Message API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageContent {
    /// Free-form text (only inside the 24-hour window).
    Text {
        /// The text object.
        text: Text,
    },
    /// An approved template (always allowed).
    Template {
        /// The template object.
        template: Template,
    },
    /// An image by uploaded id or HTTPS link.
    Image {
        /// The media object.
        image: Media,
    },
    /// A document (PDF invoice, itinerary) by id or link.
    Document {
        /// The media object.
        document: Media,
    },
    /// Audio (no caption).
    Audio {
        /// The media object.
        audio: Media,
    },
    /// Video.
    Video {
        /// The media object.
        video: Media,
    },
    /// A sticker (no caption).
    Sticker {
        /// The media object.
        sticker: Media,
    },
    /// Reply buttons, lists, CTA URLs… (Meta's interactive object, passed through as is).
    Interactive {
        /// Meta's interactive object.
        interactive: Value,
    },
    /// A reaction to an earlier message.
    Reaction {
        /// The reaction object.
        reaction: Reaction,
    },
    /// A location pin (e.g. the hotel in Makkah).
    Location {
        /// The location object.
        location: Location,
    },
    /// Contact cards (e.g. the tour leader).
    Contacts {
        /// Meta's contact objects, passed through as is.
        contacts: Vec<Value>,
    },
}

impl MessageContent {
    /// The Graph API `type` word.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Text { .. } => "text",
            Self::Template { .. } => "template",
            Self::Image { .. } => "image",
            Self::Document { .. } => "document",
            Self::Audio { .. } => "audio",
            Self::Video { .. } => "video",
            Self::Sticker { .. } => "sticker",
            Self::Interactive { .. } => "interactive",
            Self::Reaction { .. } => "reaction",
            Self::Location { .. } => "location",
            Self::Contacts { .. } => "contacts",
        }
    }

    /// Templates may be sent outside the 24-hour window; everything else may not.
    pub fn is_template(&self) -> bool {
        matches!(self, Self::Template { .. })
    }
}

/// `text` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Text {
    /// At most 4096 characters.
    pub body: String,
    /// Render a preview of the first URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_url: Option<bool>,
}

/// `template` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Template {
    /// Template name (lowercase, digits, underscores).
    pub name: String,
    /// Language, e.g. `{"code": "id"}`.
    pub language: TemplateLanguage,
    /// Header/body/button components with their parameters, passed through to Meta as is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<TemplateComponent>,
}

impl Template {
    /// Number of body parameters, checked against the template registry before sending.
    pub fn body_parameter_count(&self) -> usize {
        self.components
            .iter()
            .filter(|c| c.kind == "body")
            .map(|c| c.parameters.len())
            .sum()
    }
}

/// `template.language`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TemplateLanguage {
    /// Language code, `id` for Indonesian.
    pub code: String,
    /// Deprecated by Meta but still accepted (`deterministic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// One template component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TemplateComponent {
    /// `header`, `body` or `button`.
    #[serde(rename = "type")]
    pub kind: String,
    /// For buttons: `quick_reply`, `url`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_type: Option<String>,
    /// For buttons: position `"0"`..`"9"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Value>,
    /// Parameters (`text`, `currency`, `date_time`, `document`, …) as Meta defines them.
    #[serde(default)]
    pub parameters: Vec<Value>,
}

/// Media object (image, document, audio, video, sticker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Media {
    /// Uploaded media id (exactly one of `id` and `link`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// HTTPS URL Meta fetches the media from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Image, video and document only; at most 1024 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// Document only: file name shown to the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Audio only: send as a voice note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<bool>,
}

/// `reaction` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Reaction {
    /// The wamid reacted to.
    pub message_id: String,
    /// The emoji; empty removes the reaction.
    pub emoji: String,
}

/// `location` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Location {
    /// Degrees, -90..90.
    pub latitude: f64,
    /// Degrees, -180..180.
    pub longitude: f64,
    /// Place name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// `context` object of a quoted reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReplyContext {
    /// The wamid being replied to.
    pub message_id: String,
}

/// Meta's documented limits, checked before any Graph call so a bad job fails fast and clearly.
pub mod limits {
    /// `text.body`.
    pub const TEXT_BODY_CHARS: usize = 4096;
    /// `caption` on image, video, document.
    pub const CAPTION_CHARS: usize = 1024;
    /// Template name.
    pub const TEMPLATE_NAME_CHARS: usize = 512;
    /// Interactive body text.
    pub const INTERACTIVE_BODY_CHARS: usize = 1024;
    /// Reply buttons per interactive message.
    pub const REPLY_BUTTONS: usize = 3;
    /// Reply button title.
    pub const BUTTON_TITLE_CHARS: usize = 20;
}

impl Contract for SendJob {
    const SCHEMA_NAME: &'static str = "send-job";

    fn validate(&self) -> Result<(), ContractError> {
        ensure_not_blank(&self.to, "to")?;
        self.message.validate().map_err(|e| e.within("message"))
    }
}

impl OutboundMessage {
    /// Checks the message against Meta's documented rules.
    pub fn validate(&self) -> Result<(), ContractError> {
        if let Some(context) = &self.context {
            ensure_not_blank(&context.message_id, "context.message_id")?;
            ensure(
                !matches!(self.content, MessageContent::Reaction { .. }),
                "context",
                "a reaction cannot be a quoted reply",
            )?;
        }
        match &self.content {
            MessageContent::Text { text } => {
                ensure_not_blank(&text.body, "text.body")?;
                ensure_max_chars(&text.body, limits::TEXT_BODY_CHARS, "text.body")
            }
            MessageContent::Template { template } => validate_template(template),
            MessageContent::Image { image } => validate_media(image, "image", MediaRules::CAPTION),
            MessageContent::Video { video } => validate_media(video, "video", MediaRules::CAPTION),
            MessageContent::Document { document } => {
                validate_media(document, "document", MediaRules::CAPTION_AND_FILENAME)
            }
            MessageContent::Audio { audio } => validate_media(audio, "audio", MediaRules::VOICE),
            MessageContent::Sticker { sticker } => {
                validate_media(sticker, "sticker", MediaRules::NONE)
            }
            MessageContent::Interactive { interactive } => validate_interactive(interactive),
            MessageContent::Reaction { reaction } => {
                ensure_not_blank(&reaction.message_id, "reaction.message_id")
            }
            MessageContent::Location { location } => {
                ensure(
                    (-90.0..=90.0).contains(&location.latitude),
                    "location.latitude",
                    "must be between -90 and 90",
                )?;
                ensure(
                    (-180.0..=180.0).contains(&location.longitude),
                    "location.longitude",
                    "must be between -180 and 180",
                )
            }
            MessageContent::Contacts { contacts } => {
                ensure(
                    !contacts.is_empty(),
                    "contacts",
                    "must contain at least one contact",
                )?;
                for (i, contact) in contacts.iter().enumerate() {
                    let has_name = contact
                        .pointer("/name/formatted_name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| !n.trim().is_empty());
                    ensure(
                        has_name,
                        &format!("contacts[{i}].name.formatted_name"),
                        "is required",
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// Which optional media fields a media type accepts.
struct MediaRules {
    caption: bool,
    filename: bool,
    voice: bool,
}

impl MediaRules {
    const NONE: Self = Self {
        caption: false,
        filename: false,
        voice: false,
    };
    const CAPTION: Self = Self {
        caption: true,
        filename: false,
        voice: false,
    };
    const CAPTION_AND_FILENAME: Self = Self {
        caption: true,
        filename: true,
        voice: false,
    };
    const VOICE: Self = Self {
        caption: false,
        filename: false,
        voice: true,
    };
}

fn validate_media(media: &Media, kind: &str, rules: MediaRules) -> Result<(), ContractError> {
    let has_id = media.id.as_deref().is_some_and(|s| !s.trim().is_empty());
    let has_link = media.link.as_deref().is_some_and(|s| !s.trim().is_empty());
    ensure(
        has_id != has_link,
        kind,
        "exactly one of `id` and `link` is required",
    )?;
    if let Some(link) = &media.link {
        ensure(
            link.starts_with("https://") || link.starts_with("http://"),
            &format!("{kind}.link"),
            "must be an http(s) URL",
        )?;
    }
    if let Some(caption) = &media.caption {
        ensure(
            rules.caption,
            &format!("{kind}.caption"),
            format!("{kind} messages cannot have a caption"),
        )?;
        ensure_max_chars(caption, limits::CAPTION_CHARS, &format!("{kind}.caption"))?;
    }
    ensure(
        rules.filename || media.filename.is_none(),
        &format!("{kind}.filename"),
        "only documents have a file name",
    )?;
    ensure(
        rules.voice || media.voice.is_none(),
        &format!("{kind}.voice"),
        "only audio can be a voice note",
    )
}

fn validate_template(template: &Template) -> Result<(), ContractError> {
    ensure_not_blank(&template.name, "template.name")?;
    ensure_max_chars(&template.name, limits::TEMPLATE_NAME_CHARS, "template.name")?;
    ensure(
        template
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "template.name",
        "only lowercase letters, digits and underscores are allowed",
    )?;
    ensure_not_blank(&template.language.code, "template.language.code")?;
    for (i, component) in template.components.iter().enumerate() {
        let field = format!("template.components[{i}]");
        ensure(
            matches!(
                component.kind.as_str(),
                "header" | "body" | "button" | "carousel" | "limited_time_offer"
            ),
            &format!("{field}.type"),
            format!("unknown component type {:?}", component.kind),
        )?;
        for (j, parameter) in component.parameters.iter().enumerate() {
            let ptype = parameter.get("type").and_then(Value::as_str);
            ensure(
                ptype.is_some(),
                &format!("{field}.parameters[{j}].type"),
                "is required",
            )?;
            if ptype == Some("text") {
                let has_text = parameter
                    .get("text")
                    .and_then(Value::as_str)
                    .is_some_and(|t| !t.is_empty());
                ensure(
                    has_text,
                    &format!("{field}.parameters[{j}].text"),
                    "is required for a text parameter",
                )?;
            }
        }
    }
    Ok(())
}

fn validate_interactive(interactive: &Value) -> Result<(), ContractError> {
    let kind = interactive.get("type").and_then(Value::as_str);
    let Some(kind) = kind else {
        return Err(ContractError::new("interactive.type", "is required"));
    };
    ensure(
        matches!(
            kind,
            "button"
                | "list"
                | "cta_url"
                | "flow"
                | "product"
                | "product_list"
                | "location_request_message"
                | "address_message"
        ),
        "interactive.type",
        format!("unknown interactive type {kind:?}"),
    )?;
    if matches!(kind, "button" | "list" | "cta_url") {
        let body = interactive.pointer("/body/text").and_then(Value::as_str);
        let Some(body) = body else {
            return Err(ContractError::new("interactive.body.text", "is required"));
        };
        ensure_max_chars(
            body,
            limits::INTERACTIVE_BODY_CHARS,
            "interactive.body.text",
        )?;
    }
    if kind == "button" {
        let buttons = interactive
            .pointer("/action/buttons")
            .and_then(Value::as_array);
        let Some(buttons) = buttons else {
            return Err(ContractError::new(
                "interactive.action.buttons",
                "is required",
            ));
        };
        ensure(
            (1..=limits::REPLY_BUTTONS).contains(&buttons.len()),
            "interactive.action.buttons",
            format!("must have 1 to {} buttons", limits::REPLY_BUTTONS),
        )?;
        for (i, button) in buttons.iter().enumerate() {
            let title = button
                .pointer("/reply/title")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let field = format!("interactive.action.buttons[{i}].reply.title");
            ensure_not_blank(title, &field)?;
            ensure_max_chars(title, limits::BUTTON_TITLE_CHARS, &field)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode;

    fn job(message: Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "job_id": "rem-sched-42-d-3",
            "tenant_id": "default",
            "to": "0812-3456-7890",
            "message": message,
        }))
        .unwrap_or_default()
    }

    #[test]
    fn contract_example_decodes_with_defaults() {
        let body = br#"{
          "job_id": "rem-sched-42-d-3", "tenant_id": "default", "to": "0812-3456-7890",
          "message": { "type": "text", "text": { "body": "Assalamu'alaikum ..." } },
          "priority": "transactional", "reference": { "kind": "payment_reminder", "id": "sched-42" },
          "expires_at": "2026-12-01T09:00:00+07:00", "unknown_field": 1 }"#;
        let job = decode::<SendJob>(body).expect("contract example is valid");
        assert_eq!(job.priority, Priority::Transactional);
        assert_eq!(job.message.content.type_name(), "text");
    }

    #[test]
    fn missing_job_id_names_the_field() {
        let err = decode::<SendJob>(
            br#"{"tenant_id":"t","to":"0812","message":{"type":"text","text":{"body":"x"}}}"#,
        )
        .expect_err("job_id is required");
        assert_eq!(err.field, "job_id");
    }

    #[test]
    fn unknown_message_type_names_the_field() {
        let err = decode::<SendJob>(&job(serde_json::json!({"type": "fax", "fax": {}})))
            .expect_err("unknown type");
        assert_eq!(err.field, "message");
        assert!(err.reason.contains("fax"), "{}", err.reason);
    }

    #[test]
    fn bad_job_id_names_the_field() {
        let body = br#"{"job_id":"a b","tenant_id":"t","to":"0812","message":{"type":"text","text":{"body":"x"}}}"#;
        let err = decode::<SendJob>(body).expect_err("space not allowed");
        assert_eq!(err.field, "job_id");
    }

    #[test]
    fn meta_rules_are_checked_with_field_paths() {
        let cases = [
            (
                serde_json::json!({"type":"text","text":{"body":"x".repeat(4097)}}),
                "message.text.body",
            ),
            (
                serde_json::json!({"type":"text","text":{"body":"  "}}),
                "message.text.body",
            ),
            (
                serde_json::json!({"type":"audio","audio":{"id":"1","caption":"no"}}),
                "message.audio.caption",
            ),
            (
                serde_json::json!({"type":"image","image":{}}),
                "message.image",
            ),
            (
                serde_json::json!({"type":"image","image":{"id":"1","link":"https://x"}}),
                "message.image",
            ),
            (
                serde_json::json!({"type":"template","template":{"name":"Bad Name","language":{"code":"id"}}}),
                "message.template.name",
            ),
            (
                serde_json::json!({"type":"interactive","interactive":{"type":"button","body":{"text":"x"},"action":{"buttons":[]}}}),
                "message.interactive.action.buttons",
            ),
            (
                serde_json::json!({"type":"location","location":{"latitude":91.0,"longitude":0.0}}),
                "message.location.latitude",
            ),
            (
                serde_json::json!({"type":"contacts","contacts":[]}),
                "message.contacts",
            ),
        ];
        for (message, field) in cases {
            let err = decode::<SendJob>(&job(message.clone())).expect_err(&message.to_string());
            assert_eq!(err.field, field, "{message}");
        }
    }

    #[test]
    fn serialises_back_to_meta_shape() {
        let job = decode::<SendJob>(&job(serde_json::json!({
            "type": "template",
            "template": {"name": "payment_reminder", "language": {"code": "id"},
              "components": [{"type": "body", "parameters": [{"type": "text", "text": "Siti"}]}]},
            "biz_opaque_callback_data": "x"
        })))
        .expect("valid");
        let value = serde_json::to_value(&job.message).unwrap_or_default();
        assert_eq!(value["type"], "template");
        assert_eq!(
            value["template"]["components"][0]["parameters"][0]["text"],
            "Siti"
        );
        assert_eq!(value["biz_opaque_callback_data"], "x");
        let MessageContent::Template { template } = &job.message.content else {
            panic!("template expected");
        };
        assert_eq!(template.body_parameter_count(), 1);
    }
}

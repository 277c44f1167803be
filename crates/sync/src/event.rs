//! Turning one AMQP delivery into a typed [`SyncEvent`]: routing-key dispatch, contract decoding
//! (errors name the field) and tenant resolution. Everything here is pure, so it is unit-tested.

use serde_json::Value;
use wa_common::contracts::inbound::{InboundMessage, InboundStatus};
use wa_common::contracts::outcome::{OutboundAccepted, OutboundFailed};
use wa_common::contracts::platform::{JamaahErasureRequested, JamaahUpserted};
use wa_common::contracts::status::DeliveryStatus;
use wa_common::phone::E164;
use wa_common::topology::routing;
use wa_common::{Contract, decode};
use wa_service::tenants::TenantDirectory;

/// An event this service persists, with its tenant resolved.
#[derive(Debug, Clone)]
pub enum SyncEvent {
    /// A jamaah wrote to the business.
    Inbound {
        /// Resolved tenant.
        tenant: String,
        /// The event.
        message: Box<InboundMessage>,
    },
    /// A status of a message we sent.
    Status {
        /// Resolved tenant.
        tenant: String,
        /// Parsed status word.
        status: DeliveryStatus,
        /// The event.
        event: Box<InboundStatus>,
    },
    /// Meta accepted a job.
    Accepted(Box<OutboundAccepted>),
    /// A job failed for good.
    Failed(Box<OutboundFailed>),
    /// The platform created or changed a jamaah.
    JamaahUpserted {
        /// The event.
        event: Box<JamaahUpserted>,
        /// Its phone, normalised.
        phone: E164,
    },
    /// The platform asks us to forget a jamaah.
    Erasure(JamaahErasureRequested),
}

impl SyncEvent {
    /// Short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Inbound { .. } => "inbound_message",
            Self::Status { .. } => "inbound_status",
            Self::Accepted(_) => "outbound_accepted",
            Self::Failed(_) => "outbound_failed",
            Self::JamaahUpserted { .. } => "jamaah_upserted",
            Self::Erasure(_) => "erasure_requested",
        }
    }

    /// When the event entered our system (ingress receipt, Meta's answer to the sender), for the
    /// `wa_sync_event_lag_seconds` histogram; platform events carry no time.
    pub fn occurred_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        match self {
            Self::Inbound { message, .. } => Some(message.received_at),
            Self::Status { event, .. } => Some(event.received_at),
            Self::Accepted(e) => Some(e.accepted_at),
            Self::Failed(e) => Some(e.failed_at),
            Self::JamaahUpserted { .. } | Self::Erasure(_) => None,
        }
    }

    /// The tenant the event belongs to.
    pub fn tenant(&self) -> &str {
        match self {
            Self::Inbound { tenant, .. } | Self::Status { tenant, .. } => tenant,
            Self::Accepted(e) => e.tenant_id.as_str(),
            Self::Failed(e) => e.tenant_id.as_str(),
            Self::JamaahUpserted { event, .. } => event.tenant_id.as_str(),
            Self::Erasure(e) => e.tenant_id.as_str(),
        }
    }
}

/// Why a delivery cannot be processed, ever: it is dead-lettered with `reason` and `detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable snake_case word.
    pub reason: &'static str,
    /// What was wrong (field name, value class); never message content.
    pub detail: String,
}

impl Rejection {
    fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

fn decode_as<T: Contract>(body: &[u8]) -> Result<T, Rejection> {
    decode::<T>(body)
        .map_err(|e| Rejection::new("invalid_payload", format!("{}: {}", e.field, e.reason)))
}

fn tenant_of(
    tenants: &TenantDirectory,
    phone_number_id: Option<&str>,
    waba_id: &str,
) -> Result<String, Rejection> {
    let tenant = match phone_number_id {
        Some(id) => tenants.by_phone_number_id(id),
        None => tenants.by_waba_id(waba_id),
    };
    tenant.map(|t| t.tenant_id.clone()).ok_or_else(|| {
        Rejection::new(
            "unknown_tenant",
            format!(
                "no tenant has phone_number_id {} (waba {waba_id})",
                phone_number_id.unwrap_or("<none>")
            ),
        )
    })
}

/// Parses a delivery by its routing key.
pub fn parse(
    routing_key: &str,
    body: &[u8],
    tenants: &TenantDirectory,
) -> Result<SyncEvent, Rejection> {
    match routing_key {
        routing::INBOUND_MESSAGE => {
            let message: InboundMessage = decode_as(body)?;
            if message.wa_message_id.trim().is_empty() {
                return Err(Rejection::new(
                    "invalid_payload",
                    "wa_message_id: must not be empty",
                ));
            }
            if message.from.trim().is_empty()
                && message.from_user_id.as_deref().is_none_or(str::is_empty)
            {
                return Err(Rejection::new(
                    "invalid_payload",
                    "from: neither from nor from_user_id is set",
                ));
            }
            let tenant = tenant_of(
                tenants,
                message.source.phone_number_id.as_deref(),
                &message.source.waba_id,
            )?;
            Ok(SyncEvent::Inbound {
                tenant,
                message: Box::new(message),
            })
        }
        routing::INBOUND_STATUS => {
            let event: InboundStatus = decode_as(body)?;
            if event.wa_message_id.trim().is_empty() {
                return Err(Rejection::new(
                    "invalid_payload",
                    "wa_message_id: must not be empty",
                ));
            }
            let status = DeliveryStatus::from_meta(&event.status).ok_or_else(|| {
                Rejection::new(
                    "invalid_payload",
                    format!("status: unknown status word {:?}", event.status),
                )
            })?;
            let tenant = tenant_of(
                tenants,
                event.source.phone_number_id.as_deref(),
                &event.source.waba_id,
            )?;
            Ok(SyncEvent::Status {
                tenant,
                status,
                event: Box::new(event),
            })
        }
        routing::OUTBOUND_ACCEPTED => Ok(SyncEvent::Accepted(Box::new(decode_as(body)?))),
        routing::OUTBOUND_FAILED => Ok(SyncEvent::Failed(Box::new(decode_as(body)?))),
        routing::JAMAAH_UPSERTED => {
            let event: JamaahUpserted = decode_as(body)?;
            let phone = E164::parse(&event.phone).map_err(|_| {
                Rejection::new("invalid_payload", "phone: not a valid phone number")
            })?;
            Ok(SyncEvent::JamaahUpserted {
                event: Box::new(event),
                phone,
            })
        }
        routing::JAMAAH_ERASURE_REQUESTED => Ok(SyncEvent::Erasure(decode_as(body)?)),
        other => Err(Rejection::new(
            "unexpected_routing_key",
            format!("conversation-sync does not handle {other:?}"),
        )),
    }
}

/// A media attachment of an inbound message, to be downloaded by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRef {
    /// Meta's media id.
    pub id: String,
    /// MIME type.
    pub mime_type: Option<String>,
    /// Base64 SHA-256 of the file.
    pub sha256: Option<String>,
    /// Document file name.
    pub filename: Option<String>,
}

/// What a person would read of an inbound message, and its media, per Meta message type.
pub fn content_of(message_type: &str, raw: &Value) -> (Option<String>, Option<MediaRef>) {
    let obj = raw.get(message_type);
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    match message_type {
        "text" => (s(obj.and_then(|o| o.get("body"))), None),
        "image" | "video" | "audio" | "document" | "sticker" => {
            let media = obj.and_then(|o| {
                Some(MediaRef {
                    id: o.get("id")?.as_str()?.to_owned(),
                    mime_type: s(o.get("mime_type")),
                    sha256: s(o.get("sha256")),
                    filename: s(o.get("filename")),
                })
            });
            let caption = s(obj.and_then(|o| o.get("caption")))
                .or_else(|| s(obj.and_then(|o| o.get("filename"))));
            (caption, media)
        }
        "button" => (
            s(obj.and_then(|o| o.get("text"))).or_else(|| s(obj.and_then(|o| o.get("payload")))),
            None,
        ),
        "interactive" => {
            let reply = obj.and_then(|o| {
                ["button_reply", "list_reply", "nfm_reply"]
                    .iter()
                    .find_map(|k| o.get(*k))
            });
            let title = s(reply.and_then(|r| r.get("title")))
                .or_else(|| s(reply.and_then(|r| r.get("body"))))
                .or_else(|| {
                    reply
                        .and_then(|r| r.get("response_json"))
                        .map(ToString::to_string)
                });
            (title, None)
        }
        "reaction" => (s(obj.and_then(|o| o.get("emoji"))), None),
        "location" => {
            let o = obj.cloned().unwrap_or(Value::Null);
            let text = [s(o.get("name")), s(o.get("address"))]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ");
            let coords = match (o.get("latitude"), o.get("longitude")) {
                (Some(lat), Some(lon)) => format!("{lat},{lon}"),
                _ => String::new(),
            };
            let joined = [text, coords]
                .into_iter()
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            (Some(joined).filter(|t| !t.is_empty()), None)
        }
        "contacts" => {
            let names: Vec<String> = raw
                .get("contacts")
                .and_then(Value::as_array)
                .map(|cards| {
                    cards
                        .iter()
                        .filter_map(|c| s(c.get("name").and_then(|n| n.get("formatted_name"))))
                        .collect()
                })
                .unwrap_or_default();
            (Some(names.join(", ")).filter(|t| !t.is_empty()), None)
        }
        "order" => {
            let items = obj
                .and_then(|o| o.get("product_items"))
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let text = s(obj.and_then(|o| o.get("text")));
            (
                Some(text.unwrap_or_else(|| format!("order of {items} item(s)"))),
                None,
            )
        }
        "system" => (s(obj.and_then(|o| o.get("body"))), None),
        _ => (None, None),
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_body_is_extracted() {
        let raw = json!({"type": "text", "text": {"body": "Assalamu'alaikum"}});
        assert_eq!(
            content_of("text", &raw).0.as_deref(),
            Some("Assalamu'alaikum")
        );
    }

    #[test]
    fn image_yields_caption_and_media_reference() {
        let raw = json!({"image": {"id": "m1", "mime_type": "image/jpeg", "sha256": "abc=", "caption": "bukti"}});
        let (body, media) = content_of("image", &raw);
        assert_eq!(body.as_deref(), Some("bukti"));
        let media = media.unwrap();
        assert_eq!(media.id, "m1");
        assert_eq!(media.sha256.as_deref(), Some("abc="));
    }

    #[test]
    fn interactive_button_and_list_replies_yield_their_title() {
        let b = json!({"interactive": {"type": "button_reply", "button_reply": {"id": "y", "title": "Ya"}}});
        assert_eq!(content_of("interactive", &b).0.as_deref(), Some("Ya"));
        let l = json!({"interactive": {"type": "list_reply", "list_reply": {"id": "2", "title": "Paket B"}}});
        assert_eq!(content_of("interactive", &l).0.as_deref(), Some("Paket B"));
    }

    #[test]
    fn location_contacts_reaction_and_button_are_readable() {
        let loc =
            json!({"location": {"latitude": 21.4, "longitude": 39.8, "name": "Masjidil Haram"}});
        assert_eq!(
            content_of("location", &loc).0.as_deref(),
            Some("Masjidil Haram 21.4,39.8")
        );
        let cards = json!({"contacts": [{"name": {"formatted_name": "Siti"}}]});
        assert_eq!(content_of("contacts", &cards).0.as_deref(), Some("Siti"));
        let reaction = json!({"reaction": {"message_id": "w", "emoji": "👍"}});
        assert_eq!(content_of("reaction", &reaction).0.as_deref(), Some("👍"));
        let button = json!({"button": {"payload": "STOP", "text": "Berhenti"}});
        assert_eq!(content_of("button", &button).0.as_deref(), Some("Berhenti"));
    }

    #[test]
    fn unsupported_has_no_body_but_is_still_a_message() {
        let raw = json!({"type": "unsupported", "errors": [{"code": 131051}]});
        assert_eq!(content_of("unsupported", &raw), (None, None));
    }

    #[test]
    fn an_unknown_routing_key_is_rejected_by_name() {
        let err = parse("payment.recorded", b"{}", &TenantDirectory::default()).unwrap_err();
        assert_eq!(err.reason, "unexpected_routing_key");
    }

    #[test]
    fn a_missing_field_is_named_in_the_rejection() {
        let err = parse(
            routing::OUTBOUND_ACCEPTED,
            br#"{"tenant_id":"default"}"#,
            &TenantDirectory::default(),
        )
        .unwrap_err();
        assert_eq!(err.reason, "invalid_payload");
        assert!(err.detail.contains("job_id"), "{}", err.detail);
    }
}

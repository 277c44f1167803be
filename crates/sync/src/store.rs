//! Applying [`SyncEvent`]s to PostgreSQL inside the caller's transaction.
//!
//! Every step is idempotent on an external id, so a redelivered event changes nothing: messages
//! are unique on (tenant, wamid) and (tenant, job id), statuses on (tenant, wamid, status), and an
//! agent notification or status step is queued in the outbox only when its row was newly
//! inserted or the current status moved forward. Events to publish go to `sync_outbox` in the
//! same transaction; the batcher publishes them after the commit.
//!
//! [`apply_batch`] gives exactly the result of applying its events one by one in order, but
//! writes each run of message events (inbound messages, statuses, accepted and failed outcomes)
//! with a constant number of set-based statements (module `segment`); directory events
//! (`jamaah.upserted`, erasure) are rare and applied one at a time between those runs, because
//! every message event after them must see the directory they leave.

mod segment;

use chrono::{DateTime, SubsecRound as _, Utc};
use diesel::QueryResult;
use diesel_async::AsyncPgConnection;
use sha2::{Digest as _, Sha256};
use wa_common::contracts::Reference;
use wa_common::contracts::inbound::InboundStatus;
use wa_common::contracts::platform::{JamaahErasureRequested, JamaahUpserted};
use wa_common::contracts::send_job::{MessageContent, OutboundMessage};
use wa_common::contracts::status::{DeliveryStatus, OutboundStatus};
use wa_common::ids::{JobId, TenantId};
use wa_common::phone::E164;
use wa_db::models::conversation::{
    Contact, Media, Message, MessageStatus, NewContact, PricingFields,
};

use crate::crypto::Cipher;
use crate::event::{SyncEvent, content_of};

/// Title of every agent notification.
pub const NOTIFICATION_TITLE: &str = "Pesan WhatsApp baru";
/// Longest message preview in a notification, in characters.
const PREVIEW_CHARS: usize = 120;

/// An event written to the outbox in this transaction, kept in memory so the batcher can
/// publish it right after the commit without reading it back.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    /// The outbox row (deleted once published).
    pub id: i64,
    /// Tenant, for the AMQP tenant header.
    pub tenant: String,
    /// Routing key on `whatsapp.events`.
    pub routing_key: &'static str,
    /// The message an `outbound.status` step is about.
    pub message_id: Option<i64>,
    /// The JSON body.
    pub body: Vec<u8>,
    /// Position, in the events given to [`apply_batch`], of the event that caused it (its trace
    /// is the one to publish it in).
    pub cause: usize,
}

/// Side effects to run after the transaction commits.
#[derive(Debug, Default)]
pub struct Effects {
    /// Media files to delete (erasure); deleted only once the rows are gone for good.
    pub files_to_delete: Vec<String>,
    /// Events queued in the outbox, in order.
    pub outbox: Vec<PendingEvent>,
}

impl Effects {
    /// Adds the effects of another transaction (per-event retries of a failed batch).
    pub fn extend(&mut self, other: Effects) {
        self.files_to_delete.extend(other.files_to_delete);
        self.outbox.extend(other.outbox);
    }
}

/// A failure applying an event: the database said no (retry or isolate) or encryption failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A query failed.
    #[error("database: {0}")]
    Db(#[from] diesel::result::Error),
    /// No database connection (transient).
    #[error("database pool: {0}")]
    Pool(String),
    /// Encrypting failed.
    #[error("encryption: {0}")]
    Crypto(#[from] crate::crypto::CryptoError),
    /// A value we would publish breaks the contract (a tenant id outside the contract alphabet).
    #[error("contract: {0}")]
    Contract(String),
    /// Serialising an outbox event failed.
    #[error("serialising an event: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<StoreError> for diesel::result::Error {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Db(e) => e,
            other => diesel::result::Error::QueryBuilderError(other.to_string().into()),
        }
    }
}

/// Applies `events` in order inside the caller's transaction, with exactly the result of applying
/// them one by one (see the module documentation for how).
pub async fn apply_batch(
    conn: &mut AsyncPgConnection,
    cipher: &Cipher,
    events: &[&SyncEvent],
    effects: &mut Effects,
) -> Result<(), StoreError> {
    lock_named_messages(conn, events).await?;
    let mut start = 0;
    for (at, event) in events.iter().enumerate() {
        let directory = match event {
            SyncEvent::JamaahUpserted { event, phone } => Directory::Jamaah(event, phone),
            SyncEvent::Erasure(request) => Directory::Erasure(request),
            _ => continue,
        };
        segment::apply(conn, cipher, &events[start..at], start, effects).await?;
        match directory {
            Directory::Jamaah(event, phone) => apply_jamaah(conn, event, phone).await?,
            Directory::Erasure(request) => apply_erasure(conn, request, effects).await?,
        }
        start = at + 1;
    }
    segment::apply(conn, cipher, &events[start..], start, effects).await
}

/// Locks every message the batch's statuses and accepted events name, before anything else.
///
/// A status that arrives before its `outbound.accepted` is stored as waiting; the accepted event
/// applies the statuses waiting for it. If two replicas wrote the two at the same time, neither
/// transaction would see the other's uncommitted row and the status would wait for good. Both
/// lock `(tenant, wamid)` first, so the second reads what the first committed.
async fn lock_named_messages(
    conn: &mut AsyncPgConnection,
    events: &[&SyncEvent],
) -> Result<(), StoreError> {
    let mut keys: Vec<i64> = events
        .iter()
        .filter_map(|event| match event {
            SyncEvent::Status { tenant, event, .. } => {
                Some(wamid_lock_key(tenant, &event.wa_message_id))
            }
            SyncEvent::Accepted(accepted) => Some(wamid_lock_key(
                accepted.tenant_id.as_str(),
                &accepted.wa_message_id,
            )),
            _ => None,
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    Message::lock_keys(conn, &keys).await?;
    Ok(())
}

/// The advisory lock key of a message by `(tenant, wamid)`: a SHA-256 prefix, the same in every
/// replica and build.
fn wamid_lock_key(tenant: &str, wamid: &str) -> i64 {
    let digest = Sha256::new()
        .chain_update(tenant)
        .chain_update([0x1f])
        .chain_update(wamid)
        .finalize();
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(prefix)
}

/// A directory event, applied on its own.
enum Directory<'a> {
    Jamaah(&'a JamaahUpserted, &'a E164),
    Erasure(&'a JamaahErasureRequested),
}

fn preview(text: Option<&str>, message_type: &str) -> String {
    match text {
        Some(t) if !t.trim().is_empty() => {
            let mut out: String = t.chars().take(PREVIEW_CHARS).collect();
            if t.chars().count() > PREVIEW_CHARS {
                out.push('…');
            }
            out
        }
        _ => format!("[{message_type}]"),
    }
}

fn tenant_id(tenant: &str) -> Result<TenantId, StoreError> {
    TenantId::parse(tenant).map_err(|e| StoreError::Contract(format!("tenant_id: {}", e.reason)))
}

/// One status to apply to a message.
struct StatusInput {
    status: DeliveryStatus,
    at: DateTime<Utc>,
    meta_code: Option<i64>,
    error_detail: Option<String>,
    pricing: PricingFields,
}

fn rank_of(word: Option<&str>) -> u8 {
    word.and_then(DeliveryStatus::from_meta)
        .map_or(0, DeliveryStatus::rank)
}

/// Applies `input` to the in-memory `message`: pricing is kept once known, the status moves only
/// forward. Returns whether the row changed and the `outbound.status` step to publish, if any.
fn advance(
    message: &mut Message,
    input: &StatusInput,
) -> Result<(bool, Option<OutboundStatus>), StoreError> {
    let mut changed = false;
    if message.pricing_category.is_none() && input.pricing.category.is_some() {
        message.pricing_category.clone_from(&input.pricing.category);
        changed = true;
    }
    if message.pricing_type.is_none() && input.pricing.kind.is_some() {
        message.pricing_type.clone_from(&input.pricing.kind);
        changed = true;
    }
    if message.billable.is_none() && input.pricing.billable.is_some() {
        message.billable = input.pricing.billable;
        changed = true;
    }
    if input.status.rank() <= rank_of(message.current_status.as_deref()) {
        return Ok((changed, None));
    }
    message.current_status = Some(input.status.as_str().to_owned());
    message.status_at = Some(input.at);
    message.error_code = input.meta_code;
    message.error_detail.clone_from(&input.error_detail);
    metrics::counter!("wa_sync_statuses_total", "tenant" => message.tenant_id.clone(), "status" => input.status.as_str())
        .increment(1);
    let Some(wamid) = message.wa_message_id.clone() else {
        return Ok((true, None));
    };
    let step = OutboundStatus {
        tenant_id: tenant_id(&message.tenant_id)?,
        wa_message_id: wamid,
        job_id: message.job_id.as_deref().and_then(|j| JobId::parse(j).ok()),
        status: input.status,
        timestamp: input.at,
        meta_code: input.meta_code,
        pricing_category: message.pricing_category.clone(),
        reference: match (&message.reference_kind, &message.reference_id) {
            (Some(kind), Some(id)) => Some(Reference {
                kind: kind.clone(),
                id: id.clone(),
            }),
            _ => None,
        },
    };
    Ok((true, Some(step)))
}

fn status_input(status: DeliveryStatus, event: &InboundStatus) -> StatusInput {
    let error = event.errors.first();
    StatusInput {
        status,
        // PostgreSQL keeps microseconds: a step published now and one published from the stored
        // status when its message arrives carry the same time.
        at: event.timestamp.trunc_subsecs(6),
        meta_code: error.map(|e| e.code),
        error_detail: error.and_then(|e| e.details.clone().or_else(|| e.title.clone())),
        pricing: PricingFields {
            category: event.pricing.as_ref().and_then(|p| p.category.clone()),
            kind: event.pricing.as_ref().and_then(|p| p.kind.clone()),
            model: event.pricing.as_ref().and_then(|p| p.pricing_model.clone()),
            billable: event.pricing.as_ref().and_then(|p| p.billable),
        },
    }
}

fn wa_id_of(to: &str) -> Option<String> {
    match E164::parse(to) {
        Ok(phone) => Some(phone.digits().to_owned()),
        Err(_) => {
            let digits: String = to.chars().filter(char::is_ascii_digit).collect();
            Some(digits).filter(|d| !d.is_empty())
        }
    }
}

/// What an outbound message looks like in the history: its type, readable text and the whole
/// message object, the last two encrypted. Outcomes re-published from the sender's records carry
/// no message; those rows show type `outbound` without a body.
struct OutboundContent {
    message_type: String,
    body: Option<crate::crypto::Sealed>,
    raw: Option<crate::crypto::Sealed>,
}

fn outbound_content(
    cipher: &Cipher,
    message: Option<&OutboundMessage>,
) -> Result<OutboundContent, StoreError> {
    let Some(message) = message else {
        return Ok(OutboundContent {
            message_type: "outbound".into(),
            body: None,
            raw: None,
        });
    };
    let message_type = message.content.type_name().to_owned();
    let value = serde_json::to_value(message)?;
    let text = match &message.content {
        MessageContent::Template { template } => {
            let parameters: Vec<&str> = template
                .components
                .iter()
                .flat_map(|c| c.parameters.iter())
                .filter_map(|p| p.get("text").and_then(serde_json::Value::as_str))
                .collect();
            Some(format!("[{}] {}", template.name, parameters.join(" | ")))
        }
        MessageContent::Interactive { interactive } => interactive
            .pointer("/body/text")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned),
        _ => content_of(&message_type, &value).0,
    };
    let body = text.map(|t| cipher.seal(t.as_bytes())).transpose()?;
    let raw = Some(cipher.seal(&serde_json::to_vec(&value)?)?);
    Ok(OutboundContent {
        message_type,
        body,
        raw,
    })
}

async fn apply_jamaah(
    conn: &mut AsyncPgConnection,
    event: &JamaahUpserted,
    phone: &E164,
) -> Result<(), StoreError> {
    let tenant = event.tenant_id.as_str();
    let fields = NewContact {
        tenant_id: tenant.to_owned(),
        jamaah_id: Some(event.jamaah_id.as_str().to_owned()),
        wa_id: Some(phone.digits().to_owned()),
        user_id: None,
        phone_e164: Some(phone.as_str().to_owned()),
        name: Some(event.name.clone()),
        profile_name: None,
        status: Some(event.status.clone()),
        package_id: Some(event.package.id.as_str().to_owned()),
        package_name: Some(event.package.name.clone()),
        agent_id: Some(event.agent.id.as_str().to_owned()),
        agent_name: Some(event.agent.name.clone()),
        agent_phone: Some(event.agent.phone.clone()),
        is_known: true,
    };
    let by_jamaah = Contact::find_by_jamaah(conn, tenant, event.jamaah_id.as_str()).await?;
    let by_phone = Contact::find_by_wa_id(conn, tenant, phone.digits()).await?;
    match (by_jamaah, by_phone) {
        (None, None) => {
            Contact::insert(conn, &fields).await?;
        }
        (Some(jamaah), None) => Contact::update(conn, jamaah.id, &fields).await?,
        (None, Some(sender)) => {
            // An unknown sender (or a contact of an old phone) becomes this jamaah.
            if sender.jamaah_id.is_some()
                && sender.jamaah_id.as_deref() != Some(event.jamaah_id.as_str())
            {
                // The number moved from another jamaah to this one: the old jamaah keeps its history
                // but loses the number.
                clear_wa_id(conn, sender.id).await?;
                Contact::insert(conn, &fields).await?;
            } else {
                Contact::update(conn, sender.id, &fields).await?;
            }
        }
        (Some(jamaah), Some(sender)) if jamaah.id == sender.id => {
            Contact::update(conn, jamaah.id, &fields).await?
        }
        (Some(jamaah), Some(sender)) => {
            if sender.jamaah_id.is_none() {
                Contact::merge_into(conn, sender.id, jamaah.id, tenant).await?;
            } else {
                clear_wa_id(conn, sender.id).await?;
            }
            Contact::update(conn, jamaah.id, &fields).await?;
        }
    }
    Ok(())
}

async fn clear_wa_id(conn: &mut AsyncPgConnection, contact: i64) -> QueryResult<()> {
    use diesel_async::RunQueryDsl;
    diesel::sql_query("UPDATE contacts SET wa_id = NULL, phone_e164 = NULL WHERE id = $1")
        .bind::<diesel::sql_types::BigInt, _>(contact)
        .execute(conn)
        .await
        .map(drop)
}

async fn apply_erasure(
    conn: &mut AsyncPgConnection,
    request: &JamaahErasureRequested,
    effects: &mut Effects,
) -> Result<(), StoreError> {
    let tenant = request.tenant_id.as_str();
    let Some(contact) = Contact::find_by_jamaah(conn, tenant, request.jamaah_id.as_str()).await?
    else {
        return Ok(());
    };
    let files = Media::storage_keys_of_contact(conn, contact.id).await?;
    for wamid in Message::wamids_of_contact(conn, contact.id).await? {
        MessageStatus::delete_for_wamid(conn, tenant, &wamid).await?;
    }
    // Conversations, messages, media rows and unpublished outbox events cascade.
    Contact::delete(conn, contact.id).await?;
    effects.files_to_delete.extend(files);
    metrics::counter!("wa_sync_erasures_total", "tenant" => tenant.to_owned()).increment(1);
    Ok(())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]
mod tests {
    use super::*;

    #[test]
    fn previews_are_cut_and_media_without_caption_names_its_type() {
        assert_eq!(preview(Some("halo"), "text"), "halo");
        assert_eq!(preview(None, "image"), "[image]");
        let long = "a".repeat(200);
        assert_eq!(
            preview(Some(&long), "text").chars().count(),
            PREVIEW_CHARS + 1
        );
    }

    #[test]
    fn recipients_are_filed_under_their_wa_id() {
        assert_eq!(wa_id_of("+6281234567890").as_deref(), Some("6281234567890"));
        assert_eq!(wa_id_of("0812-3456-7890").as_deref(), Some("6281234567890"));
        assert_eq!(wa_id_of(""), None);
    }
}

//! Applying one [`SyncEvent`] to PostgreSQL inside the caller's transaction.
//!
//! Every step is idempotent on an external id, so a redelivered event changes nothing: messages
//! are unique on (tenant, wamid) and (tenant, job id), statuses on (tenant, wamid, status), and an
//! agent notification or status step is queued in the outbox only when its row was newly
//! inserted or the current status moved forward. Events to publish go to `sync_outbox` in the
//! same transaction; the batcher publishes them after the commit.

use chrono::{DateTime, Utc};
use diesel::QueryResult;
use diesel_async::AsyncPgConnection;
use serde::Serialize;
use wa_common::contracts::Reference;
use wa_common::contracts::inbound::{InboundMessage, InboundStatus};
use wa_common::contracts::notification::AgentNotification;
use wa_common::contracts::outcome::{OutboundAccepted, OutboundFailed};
use wa_common::contracts::platform::{JamaahErasureRequested, JamaahUpserted};
use wa_common::contracts::send_job::{MessageContent, OutboundMessage};
use wa_common::contracts::status::{DeliveryStatus, OutboundStatus};
use wa_common::ids::{AgentId, JamaahId, JobId, TenantId};
use wa_common::phone::E164;
use wa_common::topology::routing;
use wa_db::models::conversation::{
    Contact, Conversation, Media, Message, MessageStatus, NewContact, NewMedia, NewMessage,
    NewMessageStatus, NewOutboxEvent, OutboxEvent, PricingFields,
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
    /// The JSON body.
    pub body: Vec<u8>,
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

/// Applies one event; call inside a transaction.
pub async fn apply(
    conn: &mut AsyncPgConnection,
    cipher: &Cipher,
    event: &SyncEvent,
    effects: &mut Effects,
) -> Result<(), StoreError> {
    match event {
        SyncEvent::Inbound { tenant, message } => {
            apply_inbound(conn, cipher, tenant, message, effects).await
        }
        SyncEvent::Status {
            tenant,
            status,
            event,
        } => apply_status_event(conn, cipher, tenant, *status, event, effects).await,
        SyncEvent::Accepted(accepted) => apply_accepted(conn, cipher, accepted, effects).await,
        SyncEvent::Failed(failed) => apply_failed(conn, cipher, failed).await,
        SyncEvent::JamaahUpserted { event, phone } => apply_jamaah(conn, event, phone).await,
        SyncEvent::Erasure(request) => apply_erasure(conn, request, effects).await,
    }
}

async fn queue<T: Serialize>(
    conn: &mut AsyncPgConnection,
    cipher: &Cipher,
    tenant: &str,
    contact: i64,
    routing_key: &'static str,
    body: &T,
    effects: &mut Effects,
) -> Result<(), StoreError> {
    let body = serde_json::to_vec(body)?;
    let sealed = cipher.seal(&body)?;
    let id = OutboxEvent::insert(
        conn,
        &NewOutboxEvent {
            tenant_id: tenant.to_owned(),
            contact_id: Some(contact),
            routing_key: routing_key.to_owned(),
            payload_ciphertext: sealed.ciphertext,
            payload_nonce: sealed.nonce,
            key_id: sealed.key_id,
        },
    )
    .await?;
    effects.outbox.push(PendingEvent {
        id,
        tenant: tenant.to_owned(),
        routing_key,
        body,
    });
    Ok(())
}

/// The contact of a WhatsApp id, created as an unknown contact the first time we see it.
async fn contact_for_wa_id(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    wa_id: Option<&str>,
    user_id: Option<&str>,
) -> QueryResult<Contact> {
    if let Some(wa_id) = wa_id
        && let Some(found) = Contact::find_by_wa_id(conn, tenant, wa_id).await?
    {
        return Ok(found);
    }
    if wa_id.is_none()
        && let Some(user_id) = user_id
        && let Some(found) = Contact::find_by_user_id(conn, tenant, user_id).await?
    {
        return Ok(found);
    }
    let phone = wa_id.and_then(|w| E164::from_wa_id(w).ok());
    Contact::insert(
        conn,
        &NewContact {
            tenant_id: tenant.to_owned(),
            wa_id: wa_id.map(str::to_owned),
            user_id: user_id.map(str::to_owned),
            phone_e164: phone.map(|p| p.as_str().to_owned()),
            is_known: false,
            ..NewContact::default()
        },
    )
    .await
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

async fn apply_inbound(
    conn: &mut AsyncPgConnection,
    cipher: &Cipher,
    tenant: &str,
    message: &InboundMessage,
    effects: &mut Effects,
) -> Result<(), StoreError> {
    let wa_id = Some(message.from.trim()).filter(|w| !w.is_empty());
    let user_id = message.from_user_id.as_deref().filter(|u| !u.is_empty());
    let contact = contact_for_wa_id(conn, tenant, wa_id, user_id).await?;
    let conversation = Conversation::ensure(conn, tenant, contact.id).await?;
    let (body, media) = content_of(&message.message_type, &message.raw);
    let raw = cipher.seal(&serde_json::to_vec(&message.raw)?)?;
    let body_sealed = body
        .as_deref()
        .map(|b| cipher.seal(b.as_bytes()))
        .transpose()?;
    let inserted = Message::insert_new(
        conn,
        &NewMessage {
            tenant_id: tenant.to_owned(),
            conversation_id: conversation,
            contact_id: contact.id,
            direction: "inbound".into(),
            wa_message_id: Some(message.wa_message_id.clone()),
            job_id: None,
            reference_kind: None,
            reference_id: None,
            message_type: message.message_type.clone(),
            body_ciphertext: body_sealed.as_ref().map(|s| s.ciphertext.clone()),
            body_nonce: body_sealed.as_ref().map(|s| s.nonce.clone()),
            body_key_id: Some(raw.key_id.clone()),
            raw_ciphertext: Some(raw.ciphertext),
            raw_nonce: Some(raw.nonce),
            current_status: None,
            status_at: None,
            error_code: None,
            error_detail: None,
            failure_reason: None,
            sent_at: message.timestamp,
        },
    )
    .await?;
    let Some(message_id) = inserted else {
        // Redelivery or Meta's duplicate webhook: already stored and notified.
        return Ok(());
    };
    metrics::counter!("wa_sync_inbound_messages_total", "tenant" => tenant.to_owned(), "type" => message.message_type.clone())
        .increment(1);
    if let Some(media) = media {
        Media::insert_pending(
            conn,
            &NewMedia {
                tenant_id: tenant.to_owned(),
                message_id,
                media_id: media.id,
                mime_type: media.mime_type,
                sha256: media.sha256,
                filename: media.filename,
            },
        )
        .await?;
    }
    Contact::touch_inbound(
        conn,
        contact.id,
        message.profile_name.as_deref(),
        message.timestamp,
    )
    .await?;
    Conversation::touch(conn, conversation, message.timestamp, true).await?;

    let who = contact
        .name
        .clone()
        .or_else(|| message.profile_name.clone())
        .or_else(|| contact.profile_name.clone())
        .unwrap_or_else(|| format!("+{}", message.from));
    let jamaah_id = contact
        .jamaah_id
        .as_deref()
        .filter(|_| contact.is_known)
        .and_then(|j| JamaahId::parse(j).ok());
    let notification = AgentNotification {
        tenant_id: tenant_id(tenant)?,
        agent_id: contact
            .agent_id
            .as_deref()
            .filter(|_| jamaah_id.is_some())
            .and_then(|a| AgentId::parse(a).ok()),
        action_url: jamaah_id
            .as_ref()
            .map(|j| format!("/jamaah/{j}/conversations")),
        jamaah_id,
        title: NOTIFICATION_TITLE.to_owned(),
        message: format!("{who}: {}", preview(body.as_deref(), &message.message_type)),
        kind: "info".to_owned(),
    };
    queue(
        conn,
        cipher,
        tenant,
        contact.id,
        routing::AGENT_NOTIFICATION,
        &notification,
        effects,
    )
    .await
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

/// Applies `input` to `message` in the database; queues an `outbound.status` when it moved forward.
async fn apply_to_message(
    conn: &mut AsyncPgConnection,
    cipher: &Cipher,
    message: &mut Message,
    input: &StatusInput,
    effects: &mut Effects,
) -> Result<(), StoreError> {
    let (changed, step) = advance(message, input)?;
    if changed {
        Message::write_status_fields(conn, std::slice::from_ref(message)).await?;
    }
    if let Some(step) = step {
        let tenant = message.tenant_id.clone();
        queue(
            conn,
            cipher,
            &tenant,
            message.contact_id,
            routing::OUTBOUND_STATUS,
            &step,
            effects,
        )
        .await?;
    }
    Ok(())
}

/// One status event of a run handled by [`apply_status_run`].
pub struct StatusItem<'a> {
    /// Resolved tenant.
    pub tenant: &'a str,
    /// Parsed status.
    pub status: DeliveryStatus,
    /// The event.
    pub event: &'a InboundStatus,
}

fn status_input(status: DeliveryStatus, event: &InboundStatus) -> StatusInput {
    let error = event.errors.first();
    StatusInput {
        status,
        at: event.timestamp,
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

/// Applies a run of consecutive status events with a constant number of statements (append the
/// history, load the messages, write the changed messages, queue the steps, mark applied),
/// with exactly the semantics of applying them one by one in order.
pub async fn apply_status_run(
    conn: &mut AsyncPgConnection,
    cipher: &Cipher,
    items: &[StatusItem<'_>],
    effects: &mut Effects,
) -> Result<(), StoreError> {
    use std::collections::{BTreeMap, HashMap, HashSet};
    let mut by_tenant: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        by_tenant.entry(item.tenant).or_default().push(i);
    }
    for (tenant, indexes) in by_tenant {
        let inputs: Vec<StatusInput> = indexes
            .iter()
            .map(|&i| status_input(items[i].status, items[i].event))
            .collect();
        let mut rows: Vec<NewMessageStatus> = indexes
            .iter()
            .zip(&inputs)
            .map(|(&i, input)| NewMessageStatus {
                tenant_id: tenant.to_owned(),
                wa_message_id: items[i].event.wa_message_id.clone(),
                status: input.status.as_str().to_owned(),
                occurred_at: input.at,
                meta_code: input.meta_code,
                error_detail: input.error_detail.clone(),
                pricing_category: input.pricing.category.clone(),
                pricing_type: input.pricing.kind.clone(),
                pricing_model: input.pricing.model.clone(),
                billable: input.pricing.billable,
                applied: false,
            })
            .collect();
        let mut wamids: Vec<String> = rows.iter().map(|r| r.wa_message_id.clone()).collect();
        wamids.sort();
        wamids.dedup();
        let mut messages: HashMap<String, Message> = HashMap::new();
        for chunk in wamids.chunks(1000) {
            for message in Message::find_by_wamids(conn, tenant, chunk).await? {
                if let Some(wamid) = message.wa_message_id.clone() {
                    messages.insert(wamid, message);
                }
            }
        }
        for row in &mut rows {
            // Applied below in this transaction when its message is known; else it waits.
            row.applied = messages.contains_key(&row.wa_message_id);
        }
        let mut inserted: HashSet<(String, String)> = HashSet::new();
        for chunk in rows.chunks(1000) {
            for (_, wamid, status) in MessageStatus::insert_many(conn, chunk).await? {
                inserted.insert((wamid, status));
            }
        }
        let mut changed: Vec<String> = Vec::new();
        let mut outbox: Vec<NewOutboxEvent> = Vec::new();
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        for (row, input) in rows.iter().zip(&inputs) {
            // Only the first copy of a status is new; later copies are duplicates (no-ops).
            if !inserted.remove(&(row.wa_message_id.clone(), row.status.clone())) {
                continue;
            }
            let Some(message) = messages.get_mut(&row.wa_message_id) else {
                metrics::counter!("wa_sync_statuses_waiting_total", "tenant" => tenant.to_owned())
                    .increment(1);
                continue;
            };
            let (row_changed, step) = advance(message, input)?;
            if row_changed {
                changed.push(row.wa_message_id.clone());
            }
            if let Some(step) = step {
                let body = serde_json::to_vec(&step)?;
                let sealed = cipher.seal(&body)?;
                bodies.push(body);
                outbox.push(NewOutboxEvent {
                    tenant_id: tenant.to_owned(),
                    contact_id: Some(message.contact_id),
                    routing_key: routing::OUTBOUND_STATUS.to_owned(),
                    payload_ciphertext: sealed.ciphertext,
                    payload_nonce: sealed.nonce,
                    key_id: sealed.key_id,
                });
            }
        }
        changed.sort();
        changed.dedup();
        let rows: Vec<Message> = changed
            .iter()
            .filter_map(|w| messages.get(w).cloned())
            .collect();
        for chunk in rows.chunks(1000) {
            Message::write_status_fields(conn, chunk).await?;
        }
        let mut bodies = bodies.into_iter();
        for chunk in outbox.chunks(1000) {
            let ids = OutboxEvent::insert_many(conn, chunk).await?;
            for id in ids {
                let body = bodies.next().unwrap_or_default();
                effects.outbox.push(PendingEvent {
                    id,
                    tenant: tenant.to_owned(),
                    routing_key: routing::OUTBOUND_STATUS,
                    body,
                });
            }
        }
    }
    Ok(())
}

async fn apply_status_event(
    conn: &mut AsyncPgConnection,
    cipher: &Cipher,
    tenant: &str,
    status: DeliveryStatus,
    event: &InboundStatus,
    effects: &mut Effects,
) -> Result<(), StoreError> {
    apply_status_run(
        conn,
        cipher,
        &[StatusItem {
            tenant,
            status,
            event,
        }],
        effects,
    )
    .await
}

/// Applies statuses that arrived before their message, in status order.
async fn apply_waiting_statuses(
    conn: &mut AsyncPgConnection,
    cipher: &Cipher,
    message: &mut Message,
    effects: &mut Effects,
) -> Result<(), StoreError> {
    let Some(wamid) = message.wa_message_id.clone() else {
        return Ok(());
    };
    let mut waiting = MessageStatus::unapplied_for(conn, &message.tenant_id, &wamid).await?;
    if waiting.is_empty() {
        return Ok(());
    }
    waiting.sort_by_key(|s| (rank_of(Some(&s.status)), s.occurred_at));
    for status in &waiting {
        let Some(parsed) = DeliveryStatus::from_meta(&status.status) else {
            continue;
        };
        let input = StatusInput {
            status: parsed,
            at: status.occurred_at,
            meta_code: status.meta_code,
            error_detail: status.error_detail.clone(),
            pricing: PricingFields {
                category: status.pricing_category.clone(),
                kind: status.pricing_type.clone(),
                model: status.pricing_model.clone(),
                billable: status.billable,
            },
        };
        apply_to_message(conn, cipher, message, &input, effects).await?;
    }
    let ids: Vec<i64> = waiting.iter().map(|s| s.id).collect();
    MessageStatus::mark_applied(conn, &ids).await?;
    Ok(())
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

async fn apply_accepted(
    conn: &mut AsyncPgConnection,
    cipher: &Cipher,
    accepted: &OutboundAccepted,
    effects: &mut Effects,
) -> Result<(), StoreError> {
    let tenant = accepted.tenant_id.as_str();
    let contact = contact_for_wa_id(conn, tenant, wa_id_of(&accepted.to).as_deref(), None).await?;
    let conversation = Conversation::ensure(conn, tenant, contact.id).await?;
    let content = outbound_content(cipher, accepted.message.as_ref())?;
    let inserted = Message::insert_new(
        conn,
        &NewMessage {
            tenant_id: tenant.to_owned(),
            conversation_id: conversation,
            contact_id: contact.id,
            direction: "outbound".into(),
            wa_message_id: Some(accepted.wa_message_id.clone()),
            job_id: Some(accepted.job_id.as_str().to_owned()),
            reference_kind: accepted.reference.as_ref().map(|r| r.kind.clone()),
            reference_id: accepted.reference.as_ref().map(|r| r.id.clone()),
            message_type: content.message_type,
            body_ciphertext: content.body.as_ref().map(|b| b.ciphertext.clone()),
            body_nonce: content.body.as_ref().map(|b| b.nonce.clone()),
            body_key_id: content.raw.as_ref().map(|r| r.key_id.clone()),
            raw_ciphertext: content.raw.as_ref().map(|r| r.ciphertext.clone()),
            raw_nonce: content.raw.as_ref().map(|r| r.nonce.clone()),
            current_status: None,
            status_at: None,
            error_code: None,
            error_detail: None,
            failure_reason: None,
            sent_at: accepted.accepted_at,
        },
    )
    .await?;
    if inserted.is_some() {
        Conversation::touch(conn, conversation, accepted.accepted_at, false).await?;
        metrics::counter!("wa_sync_outbound_messages_total", "tenant" => tenant.to_owned(), "outcome" => "accepted")
            .increment(1);
    }
    if let Some(mut message) = Message::find_by_wamid(conn, tenant, &accepted.wa_message_id).await?
    {
        apply_waiting_statuses(conn, cipher, &mut message, effects).await?;
    }
    Ok(())
}

async fn apply_failed(
    conn: &mut AsyncPgConnection,
    cipher: &Cipher,
    failed: &OutboundFailed,
) -> Result<(), StoreError> {
    let tenant = failed.tenant_id.as_str();
    let Some(wa_id) = wa_id_of(&failed.to) else {
        // No recipient to file it under (an empty `to`): nothing to show in a conversation.
        metrics::counter!("wa_sync_failed_without_recipient_total", "tenant" => tenant.to_owned())
            .increment(1);
        return Ok(());
    };
    let contact = contact_for_wa_id(conn, tenant, Some(&wa_id), None).await?;
    let conversation = Conversation::ensure(conn, tenant, contact.id).await?;
    let content = outbound_content(cipher, failed.message.as_ref())?;
    let inserted = Message::insert_new(
        conn,
        &NewMessage {
            tenant_id: tenant.to_owned(),
            conversation_id: conversation,
            contact_id: contact.id,
            direction: "outbound".into(),
            wa_message_id: None,
            job_id: Some(failed.job_id.as_str().to_owned()),
            reference_kind: failed.reference.as_ref().map(|r| r.kind.clone()),
            reference_id: failed.reference.as_ref().map(|r| r.id.clone()),
            message_type: content.message_type,
            body_ciphertext: content.body.as_ref().map(|b| b.ciphertext.clone()),
            body_nonce: content.body.as_ref().map(|b| b.nonce.clone()),
            body_key_id: content.raw.as_ref().map(|r| r.key_id.clone()),
            raw_ciphertext: content.raw.as_ref().map(|r| r.ciphertext.clone()),
            raw_nonce: content.raw.as_ref().map(|r| r.nonce.clone()),
            current_status: Some("failed".into()),
            status_at: Some(failed.failed_at),
            error_code: failed.meta_code,
            error_detail: Some(failed.detail.clone()),
            failure_reason: Some(failed.reason.as_str().to_owned()),
            sent_at: failed.failed_at,
        },
    )
    .await?;
    if inserted.is_some() {
        metrics::counter!("wa_sync_outbound_messages_total", "tenant" => tenant.to_owned(), "outcome" => "failed")
            .increment(1);
    }
    Ok(())
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

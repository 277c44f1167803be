//! A run of message events (`inbound.message`, `inbound.status`, `outbound.accepted`,
//! `outbound.failed`) applied with a constant number of set-based statements, with the result
//! of applying them one by one in order:
//!
//! 1. what needs no database comes first: reading and encrypting each message's content;
//! 2. the contacts are looked up with their conversations (by WhatsApp id, and by user id) and
//!    the missing ones created in one insert, planned in event order so a sender hiding its
//!    number is matched as one-by-one would match it; the same for conversations;
//! 3. the messages that statuses and accepted events name are loaded and locked, with the
//!    statuses still waiting for those accepted events (these reads and step 2's are pipelined:
//!    one round trip);
//! 4. every message is inserted in one statement and every status in another, `ON CONFLICT DO
//!    NOTHING`, so a duplicate (stored before, or earlier in the run) is skipped;
//! 5. the events are replayed in memory, in order: a status moves its message forward if the
//!    message is known at that point, else it waits; an accepted event applies the statuses
//!    waiting for it in status order; a new inbound message queues its agent notification. This
//!    decides every status step and notification, in the order one-by-one would queue them;
//! 6. what changed is written with one statement per table, pipelined.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use serde::Serialize;
use wa_common::contracts::Reference;
use wa_common::contracts::inbound::InboundMessage;
use wa_common::contracts::notification::AgentNotification;
use wa_common::contracts::send_job::OutboundMessage;
use wa_common::contracts::status::DeliveryStatus;
use wa_common::ids::{AgentId, JamaahId, JobId, TenantId};
use wa_common::phone::E164;
use wa_common::topology::routing;
use wa_db::models::conversation::{
    Contact, Conversation, ConversationTouch, InboundTouch, Media, Message, MessageStatus,
    NewContact, NewMedia, NewMessage, NewMessageStatus, NewOutboxEvent, OutboxEvent, PricingFields,
};

use super::{
    Effects, NOTIFICATION_TITLE, PendingEvent, StatusInput, StoreError, advance, outbound_content,
    preview, status_input, tenant_id, wa_id_of,
};
use crate::crypto::Cipher;
use crate::event::{MediaRef, SyncEvent, content_of};

/// Rows per `VALUES` insert (contacts, conversations, media): PostgreSQL takes at most 65,535
/// parameters and a contact has 14. The big inserts bind one array per column and need no chunks.
const CHUNK: usize = 1000;

/// A message by `(tenant, wamid)`.
type Wamid = (String, String);

/// How a contact is found: by WhatsApp id, or by Meta's business-scoped user id for a sender
/// who hides the number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ContactKey {
    WaId { tenant: String, wa_id: String },
    UserId { tenant: String, user_id: String },
}

/// A contact an event needs, with the user id to store when it has to be created.
struct ContactNeed {
    key: ContactKey,
    user_id: Option<String>,
}

/// One event of the run, ready for the database. Message rows are in [`Prepared::rows`].
enum Item<'a> {
    Inbound {
        message: &'a InboundMessage,
        row: usize,
        text: Option<String>,
        media: Option<MediaRef>,
    },
    Accepted {
        row: usize,
    },
    Failed {
        row: usize,
    },
    /// An `outbound.failed` without a recipient: nothing to file it under.
    NoRecipient {
        tenant: &'a str,
    },
    Status {
        key: Wamid,
        input: StatusInput,
    },
}

/// The run after step 1.
struct Prepared<'a> {
    items: Vec<Item<'a>>,
    /// Message rows in event order; contact and conversation ids are filled in step 2.
    rows: Vec<NewMessage>,
    /// The contact of each row.
    row_contacts: Vec<ContactKey>,
    /// Contacts in the order the events need them.
    needs: Vec<ContactNeed>,
}

/// Applies a run of message events; `offset` is the position of its first event in the batch.
pub(super) async fn apply(
    conn: &mut AsyncPgConnection,
    cipher: &Cipher,
    events: &[&SyncEvent],
    offset: usize,
    effects: &mut Effects,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let Prepared {
        items,
        mut rows,
        row_contacts,
        needs,
    } = prepare(cipher, events)?;

    let lookups = Lookups::of(&needs, &items, &rows);
    let found = look_up(conn, &lookups).await?;
    let mut contacts = resolve_contacts(
        conn,
        &needs,
        &lookups.contacts,
        found.by_wa_id,
        found.by_user_id,
    )
    .await?;
    ensure_conversations(conn, &mut contacts, &needs).await?;
    let mut known = Known::new(lookups, found.messages, found.waiting);
    for (row, key) in rows.iter_mut().zip(&row_contacts) {
        row.contact_id = contacts.id_of(key)?;
        row.conversation_id = *contacts
            .conversations
            .get(&row.contact_id)
            .ok_or(StoreError::Db(diesel::result::Error::NotFound))?;
    }

    let mut inserted: Vec<Option<Message>> = Vec::with_capacity(rows.len());
    {
        let returned = Message::insert_many(conn, &rows).await?;
        // PostgreSQL inserts the rows in order, so the first of identical rows is the new one.
        let mut ids: HashMap<(String, Option<String>, Option<String>), i64> = returned
            .into_iter()
            .map(|m| ((m.tenant_id, m.wa_message_id, m.job_id), m.id))
            .collect();
        for row in &rows {
            let key = (
                row.tenant_id.clone(),
                row.wa_message_id.clone(),
                row.job_id.clone(),
            );
            inserted.push(ids.remove(&key).map(|id| Message::from_new(id, row)));
        }
    }
    for (at, item) in items.iter().enumerate() {
        if let Item::Inbound { row, .. } | Item::Accepted { row } = item
            && let Some(message) = &inserted[*row]
        {
            known.message_inserted(message, at);
        }
    }
    let new_statuses = insert_statuses(conn, &items, &known).await?;

    let mut replay = Replay {
        cipher,
        offset,
        known,
        dirty: HashSet::new(),
        parked: HashMap::new(),
        applied_waiting: Vec::new(),
        outbox: Vec::new(),
        media: Vec::new(),
        contact_touches: HashMap::new(),
        conversation_touches: HashMap::new(),
    };
    let mut statuses = new_statuses.into_iter();
    for (at, item) in items.into_iter().enumerate() {
        match item {
            Item::Inbound {
                message,
                row,
                text,
                media,
            } => {
                // Not inserted: a redelivery or Meta's duplicate, already stored and notified.
                if let Some(stored) = &inserted[row] {
                    let contact = contacts.by_id_mut(stored.contact_id)?;
                    let conversation = rows[row].conversation_id;
                    replay.inbound(at, message, stored, conversation, contact, (text, media))?;
                }
            }
            Item::Accepted { row } => {
                let new = &rows[row];
                if inserted[row].is_some() {
                    replay.touch_conversation(new.conversation_id, None, Some(new.sent_at));
                    metrics::counter!("wa_sync_outbound_messages_total", "tenant" => new.tenant_id.clone(), "outcome" => "accepted")
                        .increment(1);
                }
                if let Some(wamid) = &new.wa_message_id {
                    replay.apply_waiting(at, &(new.tenant_id.clone(), wamid.clone()))?;
                }
            }
            Item::Failed { row } => {
                if inserted[row].is_some() {
                    metrics::counter!("wa_sync_outbound_messages_total", "tenant" => rows[row].tenant_id.clone(), "outcome" => "failed")
                        .increment(1);
                }
            }
            Item::NoRecipient { tenant } => {
                metrics::counter!("wa_sync_failed_without_recipient_total", "tenant" => tenant.to_owned())
                    .increment(1);
            }
            Item::Status { key, input } => {
                // Only the first copy of a status is new; later copies are duplicates (no-ops).
                if statuses.next() != Some(true) {
                    continue;
                }
                if replay.known.at(&key, at) {
                    replay.apply_status(at, &key, &input)?;
                } else {
                    metrics::counter!("wa_sync_statuses_waiting_total", "tenant" => key.0.clone())
                        .increment(1);
                    replay.parked.entry(key).or_default().push(input);
                }
            }
        }
    }
    replay.write(conn, effects).await
}

/// Step 1: content, encryption and message rows, without the database.
fn prepare<'a>(cipher: &Cipher, events: &[&'a SyncEvent]) -> Result<Prepared<'a>, StoreError> {
    let mut prepared = Prepared {
        items: Vec::with_capacity(events.len()),
        rows: Vec::new(),
        row_contacts: Vec::new(),
        needs: Vec::new(),
    };
    for event in events {
        let item = match event {
            SyncEvent::Inbound { tenant, message } => {
                let wa_id = Some(message.from.trim()).filter(|w| !w.is_empty());
                let user_id = message.from_user_id.as_deref().filter(|u| !u.is_empty());
                let key = match (wa_id, user_id) {
                    (Some(wa_id), _) => ContactKey::WaId {
                        tenant: tenant.clone(),
                        wa_id: wa_id.to_owned(),
                    },
                    (None, Some(user_id)) => ContactKey::UserId {
                        tenant: tenant.clone(),
                        user_id: user_id.to_owned(),
                    },
                    (None, None) => {
                        return Err(StoreError::Contract(
                            "inbound.message: neither from nor from_user_id is set".into(),
                        ));
                    }
                };
                let (text, media) = content_of(&message.message_type, &message.raw);
                let raw = cipher.seal(&serde_json::to_vec(&message.raw)?)?;
                let body = text
                    .as_deref()
                    .map(|b| cipher.seal(b.as_bytes()))
                    .transpose()?;
                let row = prepared.push_row(
                    key,
                    user_id.map(str::to_owned),
                    NewMessage {
                        tenant_id: tenant.clone(),
                        conversation_id: 0,
                        contact_id: 0,
                        direction: "inbound".into(),
                        wa_message_id: Some(message.wa_message_id.clone()),
                        job_id: None,
                        reference_kind: None,
                        reference_id: None,
                        message_type: message.message_type.clone(),
                        body_nonce: body.as_ref().map(|s| s.nonce.clone()),
                        body_ciphertext: body.map(|s| s.ciphertext),
                        body_key_id: Some(raw.key_id),
                        raw_ciphertext: Some(raw.ciphertext),
                        raw_nonce: Some(raw.nonce),
                        current_status: None,
                        status_at: None,
                        error_code: None,
                        error_detail: None,
                        failure_reason: None,
                        sent_at: message.timestamp,
                    },
                );
                Item::Inbound {
                    message,
                    row,
                    text,
                    media,
                }
            }
            SyncEvent::Status {
                tenant,
                status,
                event,
            } => Item::Status {
                key: (tenant.clone(), event.wa_message_id.clone()),
                input: status_input(*status, event),
            },
            SyncEvent::Accepted(accepted) => {
                let wa_id = wa_id_of(&accepted.to).ok_or_else(|| {
                    StoreError::Contract("outbound.accepted: `to` holds no phone number".into())
                })?;
                let mut row = outbound_row(
                    cipher,
                    &accepted.tenant_id,
                    &accepted.job_id,
                    accepted.reference.as_ref(),
                    accepted.message.as_ref(),
                    accepted.accepted_at,
                )?;
                row.wa_message_id = Some(accepted.wa_message_id.clone());
                Item::Accepted {
                    row: prepared.push_outbound(wa_id, row),
                }
            }
            SyncEvent::Failed(failed) => {
                let Some(wa_id) = wa_id_of(&failed.to) else {
                    prepared.items.push(Item::NoRecipient {
                        tenant: failed.tenant_id.as_str(),
                    });
                    continue;
                };
                let mut row = outbound_row(
                    cipher,
                    &failed.tenant_id,
                    &failed.job_id,
                    failed.reference.as_ref(),
                    failed.message.as_ref(),
                    failed.failed_at,
                )?;
                row.current_status = Some("failed".into());
                row.status_at = Some(failed.failed_at);
                row.error_code = failed.meta_code;
                row.error_detail = Some(failed.detail.clone());
                row.failure_reason = Some(failed.reason.as_str().to_owned());
                Item::Failed {
                    row: prepared.push_outbound(wa_id, row),
                }
            }
            SyncEvent::JamaahUpserted { .. } | SyncEvent::Erasure(_) => {
                // `apply_batch` applies these between runs; reaching here is a bug, not bad input.
                return Err(StoreError::Contract(format!(
                    "{} cannot be applied inside a run of message events",
                    event.kind()
                )));
            }
        };
        prepared.items.push(item);
    }
    Ok(prepared)
}

/// The row of an outbound message of a job, its content encrypted, without its wamid and status
/// (set by the caller).
fn outbound_row(
    cipher: &Cipher,
    tenant: &TenantId,
    job: &JobId,
    reference: Option<&Reference>,
    message: Option<&OutboundMessage>,
    sent_at: DateTime<Utc>,
) -> Result<NewMessage, StoreError> {
    let content = outbound_content(cipher, message)?;
    Ok(NewMessage {
        tenant_id: tenant.as_str().to_owned(),
        conversation_id: 0,
        contact_id: 0,
        direction: "outbound".into(),
        wa_message_id: None,
        job_id: Some(job.as_str().to_owned()),
        reference_kind: reference.map(|r| r.kind.clone()),
        reference_id: reference.map(|r| r.id.clone()),
        message_type: content.message_type,
        body_key_id: content.raw.as_ref().map(|r| r.key_id.clone()),
        body_nonce: content.body.as_ref().map(|b| b.nonce.clone()),
        body_ciphertext: content.body.map(|b| b.ciphertext),
        raw_nonce: content.raw.as_ref().map(|r| r.nonce.clone()),
        raw_ciphertext: content.raw.map(|r| r.ciphertext),
        current_status: None,
        status_at: None,
        error_code: None,
        error_detail: None,
        failure_reason: None,
        sent_at,
    })
}

impl Prepared<'_> {
    /// An outbound message row, filed under the contact with WhatsApp id `wa_id`.
    fn push_outbound(&mut self, wa_id: String, row: NewMessage) -> usize {
        let key = ContactKey::WaId {
            tenant: row.tenant_id.clone(),
            wa_id,
        };
        self.push_row(key, None, row)
    }

    fn push_row(&mut self, key: ContactKey, user_id: Option<String>, row: NewMessage) -> usize {
        self.needs.push(ContactNeed {
            key: key.clone(),
            user_id,
        });
        self.row_contacts.push(key);
        self.rows.push(row);
        self.rows.len() - 1
    }
}

/// The contacts of a run, by how events find them and by id, with their conversations.
#[derive(Default)]
struct Contacts {
    ids: HashMap<ContactKey, i64>,
    by_id: HashMap<i64, Contact>,
    /// Contact id → conversation id.
    conversations: HashMap<i64, i64>,
}

impl Contacts {
    fn add(&mut self, key: ContactKey, contact: Contact, conversation: Option<i64>) {
        self.ids.insert(key, contact.id);
        if let Some(conversation) = conversation {
            self.conversations.insert(contact.id, conversation);
        }
        self.by_id.entry(contact.id).or_insert(contact);
    }

    fn id_of(&self, key: &ContactKey) -> Result<i64, StoreError> {
        self.ids
            .get(key)
            .copied()
            .ok_or(StoreError::Db(diesel::result::Error::NotFound))
    }

    fn by_id_mut(&mut self, id: i64) -> Result<&mut Contact, StoreError> {
        self.by_id
            .get_mut(&id)
            .ok_or(StoreError::Db(diesel::result::Error::NotFound))
    }
}

/// Distinct values of two columns, for an `eq_any` on each.
fn columns<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> (Vec<&'a str>, Vec<&'a str>) {
    let mut firsts: Vec<&str> = Vec::new();
    let mut seconds: Vec<&str> = Vec::new();
    for (a, b) in pairs {
        firsts.push(a);
        seconds.push(b);
    }
    for list in [&mut firsts, &mut seconds] {
        list.sort_unstable();
        list.dedup();
    }
    (firsts, seconds)
}

/// What a run looks up before it writes, collected from its events.
struct Lookups<'a> {
    /// Every contact key the events need.
    contacts: HashSet<&'a ContactKey>,
    /// Wamids that statuses and accepted events name (their messages are loaded and locked).
    named: HashSet<(&'a str, &'a str)>,
    /// Wamids of accepted events (the statuses waiting for them are loaded).
    accepted: HashSet<(&'a str, &'a str)>,
    /// Position of the last accepted event of each wamid.
    last_accepted: HashMap<Wamid, usize>,
}

impl<'a> Lookups<'a> {
    fn of(needs: &'a [ContactNeed], items: &'a [Item<'_>], rows: &'a [NewMessage]) -> Self {
        let mut lookups = Lookups {
            contacts: needs.iter().map(|n| &n.key).collect(),
            named: HashSet::new(),
            accepted: HashSet::new(),
            last_accepted: HashMap::new(),
        };
        for (at, item) in items.iter().enumerate() {
            match item {
                Item::Status { key, .. } => {
                    lookups.named.insert((&key.0, &key.1));
                }
                Item::Accepted { row } => {
                    let row = &rows[*row];
                    if let Some(wamid) = &row.wa_message_id {
                        lookups.named.insert((&row.tenant_id, wamid));
                        lookups.accepted.insert((&row.tenant_id, wamid));
                        lookups
                            .last_accepted
                            .insert((row.tenant_id.clone(), wamid.clone()), at);
                    }
                }
                _ => {}
            }
        }
        lookups
    }
}

/// What the run's reads found.
struct Found {
    /// Contacts by WhatsApp id, with their conversation.
    by_wa_id: Vec<(Contact, Option<i64>)>,
    /// Contacts by user id, oldest first, with their conversation.
    by_user_id: Vec<(Contact, Option<i64>)>,
    /// The named messages, locked.
    messages: Vec<Message>,
    /// Statuses waiting for the accepted events' messages, oldest first.
    waiting: Vec<MessageStatus>,
}

/// Steps 2 and 3's reads, pipelined: sent together, answered in one round trip.
async fn look_up(conn: &AsyncPgConnection, lookups: &Lookups<'_>) -> Result<Found, StoreError> {
    let (wa_tenants, wa_ids) = columns(lookups.contacts.iter().filter_map(wa_pair));
    let (user_tenants, user_ids) = columns(lookups.contacts.iter().filter_map(|key| match key {
        ContactKey::UserId { tenant, user_id } => Some((tenant.as_str(), user_id.as_str())),
        ContactKey::WaId { .. } => None,
    }));
    let (named_tenants, named) = columns(lookups.named.iter().copied());
    let (accepted_tenants, accepted) = columns(lookups.accepted.iter().copied());
    let (by_wa_id, by_user_id, messages, waiting) = futures_util::try_join!(
        Contact::find_by_wa_ids(conn, &wa_tenants, &wa_ids),
        Contact::find_by_user_ids(conn, &user_tenants, &user_ids),
        Message::lock_by_wamids(conn, &named_tenants, &named),
        MessageStatus::unapplied_for_many(conn, &accepted_tenants, &accepted),
    )?;
    Ok(Found {
        by_wa_id,
        by_user_id,
        messages,
        waiting,
    })
}

/// Step 2 for contacts: an event's contact is the one with its WhatsApp id, or else the oldest
/// with its user id, or else a new unknown contact; new contacts are created in event order, so
/// a later event that knows the sender only by user id finds the one an earlier event created.
async fn resolve_contacts(
    conn: &mut AsyncPgConnection,
    needs: &[ContactNeed],
    wanted: &HashSet<&ContactKey>,
    by_wa_id: Vec<(Contact, Option<i64>)>,
    by_user_id: Vec<(Contact, Option<i64>)>,
) -> Result<Contacts, StoreError> {
    let mut contacts = Contacts::default();
    for (contact, conversation) in by_wa_id {
        add_found_by_wa_id(&mut contacts, wanted, contact, conversation);
    }
    // Oldest first: the first contact of a user id is its contact.
    for (contact, conversation) in by_user_id {
        let Some(user_id) = contact.user_id.clone() else {
            continue;
        };
        let key = ContactKey::UserId {
            tenant: contact.tenant_id.clone(),
            user_id,
        };
        if wanted.contains(&key) && !contacts.ids.contains_key(&key) {
            contacts.add(key, contact, conversation);
        }
    }

    // Plan the new contacts in event order.
    let mut planned: HashSet<&ContactKey> = HashSet::new();
    let mut plan: Vec<(&ContactKey, NewContact)> = Vec::new();
    // The first contact of the run that carries a user id (the one a later lookup by it finds).
    let mut first_with_user: HashMap<(&str, &str), &ContactKey> = HashMap::new();
    let mut aliases: Vec<(&ContactKey, &ContactKey)> = Vec::new();
    for need in needs {
        if contacts.ids.contains_key(&need.key) || !planned.insert(&need.key) {
            continue;
        }
        match &need.key {
            ContactKey::WaId { tenant, wa_id } => {
                if let Some(user_id) = &need.user_id {
                    first_with_user
                        .entry((tenant.as_str(), user_id.as_str()))
                        .or_insert(&need.key);
                }
                plan.push((
                    &need.key,
                    NewContact {
                        tenant_id: tenant.clone(),
                        wa_id: Some(wa_id.clone()),
                        user_id: need.user_id.clone(),
                        phone_e164: E164::from_wa_id(wa_id).ok().map(|p| p.as_str().to_owned()),
                        is_known: false,
                        ..NewContact::default()
                    },
                ));
            }
            ContactKey::UserId { tenant, user_id } => {
                if let Some(first) = first_with_user.get(&(tenant.as_str(), user_id.as_str())) {
                    aliases.push((&need.key, first));
                    continue;
                }
                first_with_user.insert((tenant.as_str(), user_id.as_str()), &need.key);
                plan.push((
                    &need.key,
                    NewContact {
                        tenant_id: tenant.clone(),
                        user_id: Some(user_id.clone()),
                        is_known: false,
                        ..NewContact::default()
                    },
                ));
            }
        }
    }
    if !plan.is_empty() {
        let rows: Vec<NewContact> = plan.iter().map(|(_, row)| row.clone()).collect();
        let mut created: HashMap<ContactKey, Contact> = HashMap::new();
        for chunk in rows.chunks(CHUNK) {
            for contact in Contact::insert_many(conn, chunk).await? {
                let key = match (&contact.wa_id, &contact.user_id) {
                    (Some(wa_id), _) => ContactKey::WaId {
                        tenant: contact.tenant_id.clone(),
                        wa_id: wa_id.clone(),
                    },
                    (None, Some(user_id)) => ContactKey::UserId {
                        tenant: contact.tenant_id.clone(),
                        user_id: user_id.clone(),
                    },
                    (None, None) => continue,
                };
                created.insert(key, contact);
            }
        }
        let mut raced: Vec<&ContactKey> = Vec::new();
        for (key, _) in &plan {
            match created.remove(*key) {
                Some(contact) => contacts.add((*key).clone(), contact, None),
                None => raced.push(key),
            }
        }
        // Another replica created these between our lookup and our insert: theirs is the one.
        let (tenants, wa_ids) = columns(raced.iter().filter_map(wa_pair));
        if !wa_ids.is_empty() {
            for (contact, conversation) in Contact::find_by_wa_ids(conn, &tenants, &wa_ids).await? {
                add_found_by_wa_id(&mut contacts, wanted, contact, conversation);
            }
        }
    }
    for (alias, first) in aliases {
        let id = contacts.id_of(first)?;
        contacts.ids.insert(alias.clone(), id);
    }
    Ok(contacts)
}

/// `(tenant, wa_id)` of a key by WhatsApp id.
fn wa_pair<'a>(key: &&'a ContactKey) -> Option<(&'a str, &'a str)> {
    match key {
        ContactKey::WaId { tenant, wa_id } => Some((tenant.as_str(), wa_id.as_str())),
        ContactKey::UserId { .. } => None,
    }
}

fn add_found_by_wa_id(
    contacts: &mut Contacts,
    wanted: &HashSet<&ContactKey>,
    contact: Contact,
    conversation: Option<i64>,
) {
    let Some(wa_id) = contact.wa_id.clone() else {
        return;
    };
    let key = ContactKey::WaId {
        tenant: contact.tenant_id.clone(),
        wa_id,
    };
    if wanted.contains(&key) {
        contacts.add(key, contact, conversation);
    }
}

/// Step 2 for conversations: creates those the run's contacts lack, in the order the events
/// need them.
async fn ensure_conversations(
    conn: &mut AsyncPgConnection,
    contacts: &mut Contacts,
    needs: &[ContactNeed],
) -> Result<(), StoreError> {
    let mut seen: HashSet<i64> = HashSet::new();
    let mut missing: Vec<(&str, i64)> = Vec::new();
    for need in needs {
        let id = contacts.id_of(&need.key)?;
        if seen.insert(id)
            && !contacts.conversations.contains_key(&id)
            && let Some(contact) = contacts.by_id.get(&id)
        {
            missing.push((contact.tenant_id.as_str(), id));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let mut created: Vec<(i64, i64)> = Vec::with_capacity(missing.len());
    for chunk in missing.chunks(CHUNK) {
        created.extend(Conversation::insert_many(conn, chunk).await?);
    }
    // Another replica created these between our lookup and our insert.
    let raced: Vec<i64> = {
        let made: HashSet<i64> = created.iter().map(|(_, contact)| *contact).collect();
        missing
            .iter()
            .map(|(_, id)| *id)
            .filter(|id| !made.contains(id))
            .collect()
    };
    if !raced.is_empty() {
        created.extend(Conversation::find_for_contacts(conn, &raced).await?);
    }
    contacts.conversations.extend(
        created
            .into_iter()
            .map(|(conversation, contact)| (contact, conversation)),
    );
    Ok(())
}

/// Which messages exist at each point of the run, their current state, and the statuses that
/// were waiting for them before the run.
struct Known {
    /// Stored before the run (and locked), or inserted by it; updated as the replay goes.
    messages: HashMap<Wamid, Message>,
    before: HashSet<Wamid>,
    /// Position of the event that inserted a message.
    inserted_at: HashMap<Wamid, usize>,
    /// Position of the last accepted event of each wamid in the run.
    last_accepted: HashMap<Wamid, usize>,
    /// Statuses stored by earlier runs that still wait for their message, oldest first.
    waiting: HashMap<Wamid, Vec<MessageStatus>>,
}

impl Known {
    /// Step 3: the stored messages the run names and the statuses waiting for its accepted
    /// events, as found.
    fn new(lookups: Lookups<'_>, messages: Vec<Message>, statuses: Vec<MessageStatus>) -> Known {
        let mut known = Known {
            messages: HashMap::new(),
            before: HashSet::new(),
            inserted_at: HashMap::new(),
            last_accepted: lookups.last_accepted,
            waiting: HashMap::new(),
        };
        for message in messages {
            let Some(wamid) = message.wa_message_id.clone() else {
                continue;
            };
            if lookups
                .named
                .contains(&(message.tenant_id.as_str(), wamid.as_str()))
            {
                let key = (message.tenant_id.clone(), wamid);
                known.before.insert(key.clone());
                known.messages.insert(key, message);
            }
        }
        for status in statuses {
            if lookups
                .accepted
                .contains(&(status.tenant_id.as_str(), status.wa_message_id.as_str()))
            {
                let key = (status.tenant_id.clone(), status.wa_message_id.clone());
                known.waiting.entry(key).or_default().push(status);
            }
        }
        known
    }

    /// Whether the message exists when the event at position `at` is applied.
    fn at(&self, key: &Wamid, at: usize) -> bool {
        self.before.contains(key) || self.inserted_at.get(key).is_some_and(|&p| p <= at)
    }

    /// Whether a new status at position `at` is applied in this run: at once, or by a later
    /// accepted event of its message.
    fn applies(&self, key: &Wamid, at: usize) -> bool {
        self.at(key, at)
            || self
                .last_accepted
                .get(key)
                .is_some_and(|&last| last > at && self.at(key, last))
    }

    fn message_inserted(&mut self, message: &Message, at: usize) {
        if let Some(wamid) = &message.wa_message_id {
            let key = (message.tenant_id.clone(), wamid.clone());
            self.inserted_at.entry(key.clone()).or_insert(at);
            self.messages.entry(key).or_insert_with(|| message.clone());
        }
    }
}

/// Step 4 for statuses: appends the history; returns, for each status event in order, whether
/// it was new.
async fn insert_statuses(
    conn: &mut AsyncPgConnection,
    items: &[Item<'_>],
    known: &Known,
) -> Result<Vec<bool>, StoreError> {
    let rows: Vec<NewMessageStatus> = items
        .iter()
        .enumerate()
        .filter_map(|(at, item)| match item {
            Item::Status { key, input } => Some(NewMessageStatus {
                tenant_id: key.0.clone(),
                wa_message_id: key.1.clone(),
                status: input.status.as_str().to_owned(),
                occurred_at: input.at,
                meta_code: input.meta_code,
                error_detail: input.error_detail.clone(),
                pricing_category: input.pricing.category.clone(),
                pricing_type: input.pricing.kind.clone(),
                pricing_model: input.pricing.model.clone(),
                billable: input.pricing.billable,
                applied: known.applies(key, at),
            }),
            _ => None,
        })
        .collect();
    let mut new: HashSet<(String, String, String)> = MessageStatus::insert_many(conn, &rows)
        .await?
        .into_iter()
        .collect();
    Ok(rows
        .into_iter()
        .map(|r| new.remove(&(r.tenant_id, r.wa_message_id, r.status)))
        .collect())
}

/// An outbox event queued by the replay.
struct Queued {
    row: NewOutboxEvent,
    routing_key: &'static str,
    body: Vec<u8>,
    cause: usize,
}

/// Step 5: the in-memory replay and what it decided to write.
struct Replay<'c> {
    cipher: &'c Cipher,
    offset: usize,
    known: Known,
    /// Messages whose status or pricing changed.
    dirty: HashSet<Wamid>,
    /// New statuses of this run waiting for their message, in event order.
    parked: HashMap<Wamid, Vec<StatusInput>>,
    /// Statuses of earlier runs applied now.
    applied_waiting: Vec<i64>,
    outbox: Vec<Queued>,
    media: Vec<NewMedia>,
    contact_touches: HashMap<i64, InboundTouch>,
    conversation_touches: HashMap<i64, ConversationTouch>,
}

impl Replay<'_> {
    /// A new inbound message: its media download, its contact's and conversation's times, and
    /// the agent notification (naming the sender as the contact was at this point of the run).
    fn inbound(
        &mut self,
        at: usize,
        message: &InboundMessage,
        stored: &Message,
        conversation_id: i64,
        contact: &mut Contact,
        (text, media): (Option<String>, Option<MediaRef>),
    ) -> Result<(), StoreError> {
        let tenant = stored.tenant_id.as_str();
        metrics::counter!("wa_sync_inbound_messages_total", "tenant" => tenant.to_owned(), "type" => message.message_type.clone())
            .increment(1);
        if let Some(media) = media {
            self.media.push(NewMedia {
                tenant_id: tenant.to_owned(),
                message_id: stored.id,
                media_id: media.id,
                mime_type: media.mime_type,
                sha256: media.sha256,
                filename: media.filename,
            });
        }
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
            message: format!("{who}: {}", preview(text.as_deref(), &message.message_type)),
            kind: "info".to_owned(),
        };
        // The contact as the next message of this sender will see it.
        if message.profile_name.is_some() {
            contact.profile_name.clone_from(&message.profile_name);
        }
        let touch = self
            .contact_touches
            .entry(contact.id)
            .or_insert_with(|| InboundTouch {
                contact_id: contact.id,
                profile_name: None,
                at: message.timestamp,
            });
        touch.at = touch.at.max(message.timestamp);
        if message.profile_name.is_some() {
            touch.profile_name.clone_from(&message.profile_name);
        }
        self.touch_conversation(conversation_id, Some(message.timestamp), None);
        self.queue(
            at,
            tenant,
            (contact.id, None),
            routing::AGENT_NOTIFICATION,
            &notification,
        )
    }

    fn touch_conversation(
        &mut self,
        id: i64,
        inbound_at: Option<DateTime<Utc>>,
        outbound_at: Option<DateTime<Utc>>,
    ) {
        let touch = self
            .conversation_touches
            .entry(id)
            .or_insert_with(|| ConversationTouch {
                conversation_id: id,
                inbound_at: None,
                outbound_at: None,
            });
        touch.inbound_at = touch.inbound_at.max(inbound_at);
        touch.outbound_at = touch.outbound_at.max(outbound_at);
    }

    /// A new status of a known message: moves it forward and queues the step, if any.
    fn apply_status(
        &mut self,
        at: usize,
        key: &Wamid,
        input: &StatusInput,
    ) -> Result<(), StoreError> {
        let message = self
            .known
            .messages
            .get_mut(key)
            .ok_or(StoreError::Db(diesel::result::Error::NotFound))?;
        let (changed, step) = advance(message, input)?;
        let (tenant, about) = (
            message.tenant_id.clone(),
            (message.contact_id, Some(message.id)),
        );
        if changed {
            self.dirty.insert(key.clone());
        }
        match step {
            Some(step) => self.queue(at, &tenant, about, routing::OUTBOUND_STATUS, &step),
            None => Ok(()),
        }
    }

    /// An accepted event: when its message exists, the statuses waiting for it (from earlier
    /// runs, then from this one) are applied in status order, once.
    fn apply_waiting(&mut self, at: usize, key: &Wamid) -> Result<(), StoreError> {
        if !self.known.at(key, at) {
            return Ok(());
        }
        let mut waiting: Vec<StatusInput> = Vec::new();
        for stored in self.known.waiting.remove(key).unwrap_or_default() {
            self.applied_waiting.push(stored.id);
            let Some(status) = DeliveryStatus::from_meta(&stored.status) else {
                continue;
            };
            waiting.push(StatusInput {
                status,
                at: stored.occurred_at,
                meta_code: stored.meta_code,
                error_detail: stored.error_detail,
                pricing: PricingFields {
                    category: stored.pricing_category,
                    kind: stored.pricing_type,
                    model: stored.pricing_model,
                    billable: stored.billable,
                },
            });
        }
        waiting.extend(self.parked.remove(key).unwrap_or_default());
        // Stable: statuses of the same rank and time keep their arrival order.
        waiting.sort_by_key(|s| (s.status.rank(), s.at));
        for input in &waiting {
            self.apply_status(at, key, input)?;
        }
        Ok(())
    }

    /// Queues an outbox event about `(contact, message)`: a status step names its message.
    fn queue<T: Serialize>(
        &mut self,
        at: usize,
        tenant: &str,
        (contact, message): (i64, Option<i64>),
        routing_key: &'static str,
        body: &T,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_vec(body)?;
        let sealed = self.cipher.seal(&body)?;
        self.outbox.push(Queued {
            row: NewOutboxEvent {
                tenant_id: tenant.to_owned(),
                contact_id: Some(contact),
                routing_key: routing_key.to_owned(),
                payload_ciphertext: sealed.ciphertext,
                payload_nonce: sealed.nonce,
                key_id: sealed.key_id,
                message_id: message,
            },
            routing_key,
            body,
            cause: self.offset + at,
        });
        Ok(())
    }

    /// Step 6: one statement per table, all pipelined (they are independent); rows are updated
    /// in id order.
    async fn write(
        self,
        conn: &AsyncPgConnection,
        effects: &mut Effects,
    ) -> Result<(), StoreError> {
        let Replay {
            known,
            dirty,
            applied_waiting,
            outbox,
            media,
            contact_touches,
            conversation_touches,
            ..
        } = self;
        let mut changed: Vec<&Message> = dirty
            .iter()
            .filter_map(|key| known.messages.get(key))
            .collect();
        changed.sort_by_key(|m| m.id);
        let changed: Vec<Message> = changed.into_iter().cloned().collect();
        let mut contact_touches: Vec<InboundTouch> = contact_touches.into_values().collect();
        contact_touches.sort_by_key(|t| t.contact_id);
        let mut conversation_touches: Vec<ConversationTouch> =
            conversation_touches.into_values().collect();
        conversation_touches.sort_by_key(|t| t.conversation_id);
        let (rows, queued): (Vec<NewOutboxEvent>, Vec<_>) = outbox
            .into_iter()
            .map(|q| (q.row, (q.routing_key, q.body, q.cause)))
            .unzip();

        let downloads = async {
            for chunk in media.chunks(CHUNK) {
                Media::insert_pending_many(conn, chunk).await?;
            }
            Ok(())
        };
        let ((), (), ids, (), (), ()) = futures_util::try_join!(
            Message::write_status_fields(conn, &changed),
            MessageStatus::mark_applied(conn, &applied_waiting),
            OutboxEvent::insert_many(conn, &rows),
            downloads,
            Contact::touch_inbound_many(conn, &contact_touches),
            Conversation::touch_many(conn, &conversation_touches),
        )?;
        for ((id, row), (routing_key, body, cause)) in ids.into_iter().zip(&rows).zip(queued) {
            effects.outbox.push(PendingEvent {
                id,
                tenant: row.tenant_id.clone(),
                routing_key,
                message_id: row.message_id,
                body,
                cause,
            });
        }
        Ok(())
    }
}

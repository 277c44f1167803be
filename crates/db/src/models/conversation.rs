//! conversation-sync's tables: `contacts`, `conversations`, `messages`, `message_statuses`,
//! `media` and `sync_outbox`.
//!
//! Every write is idempotent on an external id (wamid, job id, jamaah id, wa_id, wamid + status),
//! because events arrive at least once; the caller owns the transaction around several calls.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::schema::{contacts, conversations, media, message_statuses, messages, sync_outbox};

/// A known jamaah or an unknown sender of one tenant.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = contacts, check_for_backend(diesel::pg::Pg))]
pub struct Contact {
    /// Row id.
    pub id: i64,
    /// Tenant.
    pub tenant_id: String,
    /// The platform's jamaah id; `None` for an unknown sender.
    pub jamaah_id: Option<String>,
    /// WhatsApp id (E.164 digits without `+`).
    pub wa_id: Option<String>,
    /// Business-scoped user id.
    pub user_id: Option<String>,
    /// The jamaah's name from the platform.
    pub name: Option<String>,
    /// The name the sender set in WhatsApp.
    pub profile_name: Option<String>,
    /// The agent who looks after the jamaah.
    pub agent_id: Option<String>,
    /// False until matched to a jamaah.
    pub is_known: bool,
}

/// Insert of a contact; unknown senders have no `jamaah_id`.
#[derive(Debug, Clone, Default, Insertable, AsChangeset)]
#[diesel(table_name = contacts)]
pub struct NewContact {
    /// Tenant.
    pub tenant_id: String,
    /// The platform's jamaah id.
    pub jamaah_id: Option<String>,
    /// WhatsApp id.
    pub wa_id: Option<String>,
    /// Business-scoped user id.
    pub user_id: Option<String>,
    /// `+62…`.
    pub phone_e164: Option<String>,
    /// Jamaah name.
    pub name: Option<String>,
    /// WhatsApp profile name.
    pub profile_name: Option<String>,
    /// Jamaah status word.
    pub status: Option<String>,
    /// Package id.
    pub package_id: Option<String>,
    /// Package name.
    pub package_name: Option<String>,
    /// Agent id.
    pub agent_id: Option<String>,
    /// Agent name.
    pub agent_name: Option<String>,
    /// Agent phone.
    pub agent_phone: Option<String>,
    /// True for platform jamaah.
    pub is_known: bool,
}

impl Contact {
    /// The contact of a jamaah.
    pub async fn find_by_jamaah(
        conn: &mut AsyncPgConnection,
        tenant: &str,
        jamaah: &str,
    ) -> QueryResult<Option<Contact>> {
        contacts::table
            .filter(
                contacts::tenant_id
                    .eq(tenant)
                    .and(contacts::jamaah_id.eq(jamaah)),
            )
            .select(Contact::as_select())
            .first(conn)
            .await
            .optional()
    }

    /// The contact with this WhatsApp id.
    pub async fn find_by_wa_id(
        conn: &mut AsyncPgConnection,
        tenant: &str,
        wa_id: &str,
    ) -> QueryResult<Option<Contact>> {
        contacts::table
            .filter(
                contacts::tenant_id
                    .eq(tenant)
                    .and(contacts::wa_id.eq(wa_id)),
            )
            .select(Contact::as_select())
            .first(conn)
            .await
            .optional()
    }

    /// The first contact with this business-scoped user id (senders that hide their number).
    pub async fn find_by_user_id(
        conn: &mut AsyncPgConnection,
        tenant: &str,
        user_id: &str,
    ) -> QueryResult<Option<Contact>> {
        contacts::table
            .filter(
                contacts::tenant_id
                    .eq(tenant)
                    .and(contacts::user_id.eq(user_id)),
            )
            .order(contacts::id.asc())
            .select(Contact::as_select())
            .first(conn)
            .await
            .optional()
    }

    /// Inserts a contact and returns it.
    pub async fn insert(conn: &mut AsyncPgConnection, new: &NewContact) -> QueryResult<Contact> {
        diesel::insert_into(contacts::table)
            .values(new)
            .returning(Contact::as_returning())
            .get_result(conn)
            .await
    }

    /// Overwrites a contact's directory fields (jamaah.upserted).
    pub async fn update(
        conn: &mut AsyncPgConnection,
        id: i64,
        new: &NewContact,
    ) -> QueryResult<()> {
        diesel::update(contacts::table.find(id))
            .set(new)
            .execute(conn)
            .await
            .map(drop)
    }

    /// Records the sender's latest profile name and inbound time.
    pub async fn touch_inbound(
        conn: &mut AsyncPgConnection,
        id: i64,
        profile_name: Option<&str>,
        at: DateTime<Utc>,
    ) -> QueryResult<()> {
        diesel::sql_query(
            "UPDATE contacts SET profile_name = COALESCE($2, profile_name), \
             last_inbound_at = GREATEST(last_inbound_at, $3) WHERE id = $1",
        )
        .bind::<diesel::sql_types::BigInt, _>(id)
        .bind::<diesel::sql_types::Nullable<diesel::sql_types::Text>, _>(profile_name)
        .bind::<diesel::sql_types::Timestamptz, _>(at)
        .execute(conn)
        .await
        .map(drop)
    }

    /// Moves everything of contact `from` onto contact `into` (an unknown sender turned out to be
    /// a jamaah), then deletes `from`.
    pub async fn merge_into(
        conn: &mut AsyncPgConnection,
        from: i64,
        into: i64,
        tenant: &str,
    ) -> QueryResult<()> {
        let conversation = Conversation::ensure(conn, tenant, into).await?;
        diesel::update(messages::table.filter(messages::contact_id.eq(from)))
            .set((
                messages::contact_id.eq(into),
                messages::conversation_id.eq(conversation),
            ))
            .execute(conn)
            .await?;
        diesel::update(sync_outbox::table.filter(sync_outbox::contact_id.eq(from)))
            .set(sync_outbox::contact_id.eq(into))
            .execute(conn)
            .await?;
        diesel::sql_query(
            "UPDATE conversations c SET \
               last_message_at = GREATEST(c.last_message_at, o.last_message_at), \
               last_inbound_at = GREATEST(c.last_inbound_at, o.last_inbound_at), \
               last_outbound_at = GREATEST(c.last_outbound_at, o.last_outbound_at) \
             FROM conversations o WHERE c.id = $1 AND o.contact_id = $2",
        )
        .bind::<diesel::sql_types::BigInt, _>(conversation)
        .bind::<diesel::sql_types::BigInt, _>(from)
        .execute(conn)
        .await?;
        diesel::delete(contacts::table.find(from))
            .execute(conn)
            .await
            .map(drop)
    }

    /// Deletes a contact; conversations, messages, media rows and outbox rows cascade.
    pub async fn delete(conn: &mut AsyncPgConnection, id: i64) -> QueryResult<()> {
        diesel::delete(contacts::table.find(id))
            .execute(conn)
            .await
            .map(drop)
    }
}

/// One conversation per contact.
pub struct Conversation;

impl Conversation {
    /// The contact's conversation id, created on first use.
    pub async fn ensure(
        conn: &mut AsyncPgConnection,
        tenant: &str,
        contact: i64,
    ) -> QueryResult<i64> {
        let inserted: Option<i64> = diesel::insert_into(conversations::table)
            .values((
                conversations::tenant_id.eq(tenant),
                conversations::contact_id.eq(contact),
            ))
            .on_conflict_do_nothing()
            .returning(conversations::id)
            .get_result(conn)
            .await
            .optional()?;
        match inserted {
            Some(id) => Ok(id),
            None => {
                conversations::table
                    .filter(conversations::contact_id.eq(contact))
                    .select(conversations::id)
                    .first(conn)
                    .await
            }
        }
    }

    /// Moves the conversation's last-activity times forward.
    pub async fn touch(
        conn: &mut AsyncPgConnection,
        id: i64,
        at: DateTime<Utc>,
        inbound: bool,
    ) -> QueryResult<()> {
        let sql = if inbound {
            "UPDATE conversations SET last_message_at = GREATEST(last_message_at, $2), \
             last_inbound_at = GREATEST(last_inbound_at, $2) WHERE id = $1"
        } else {
            "UPDATE conversations SET last_message_at = GREATEST(last_message_at, $2), \
             last_outbound_at = GREATEST(last_outbound_at, $2) WHERE id = $1"
        };
        diesel::sql_query(sql)
            .bind::<diesel::sql_types::BigInt, _>(id)
            .bind::<diesel::sql_types::Timestamptz, _>(at)
            .execute(conn)
            .await
            .map(drop)
    }
}

/// A stored message (either direction), bodies still encrypted.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = messages, check_for_backend(diesel::pg::Pg))]
pub struct Message {
    /// Row id (the cursor's tie-breaker).
    pub id: i64,
    /// Tenant.
    pub tenant_id: String,
    /// Contact.
    pub contact_id: i64,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// Meta's wamid.
    pub wa_message_id: Option<String>,
    /// The send-job of an outbound message.
    pub job_id: Option<String>,
    /// Reference kind echoed from the job.
    pub reference_kind: Option<String>,
    /// Reference id echoed from the job.
    pub reference_id: Option<String>,
    /// Meta's type word.
    pub message_type: String,
    /// Encrypted body or caption.
    pub body_ciphertext: Option<Vec<u8>>,
    /// Its nonce.
    pub body_nonce: Option<Vec<u8>>,
    /// The key that encrypted body and raw payload.
    pub body_key_id: Option<String>,
    /// Current (furthest) delivery status.
    pub current_status: Option<String>,
    /// When it was reached.
    pub status_at: Option<DateTime<Utc>>,
    /// Graph error code of a failure.
    pub error_code: Option<i64>,
    /// Failure detail.
    pub error_detail: Option<String>,
    /// The sender's reason word for a failed job.
    pub failure_reason: Option<String>,
    /// Pricing category from the statuses.
    pub pricing_category: Option<String>,
    /// Pricing type (`regular`, `free_*`).
    pub pricing_type: Option<String>,
    /// Meta's (deprecated) billable flag.
    pub billable: Option<bool>,
    /// Meta's time (inbound) or acceptance time (outbound).
    pub sent_at: DateTime<Utc>,
}

/// Insert of a message.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = messages)]
pub struct NewMessage {
    /// Tenant.
    pub tenant_id: String,
    /// Conversation.
    pub conversation_id: i64,
    /// Contact.
    pub contact_id: i64,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// Meta's wamid.
    pub wa_message_id: Option<String>,
    /// Send-job id.
    pub job_id: Option<String>,
    /// Reference kind.
    pub reference_kind: Option<String>,
    /// Reference id.
    pub reference_id: Option<String>,
    /// Type word.
    pub message_type: String,
    /// Encrypted body.
    pub body_ciphertext: Option<Vec<u8>>,
    /// Body nonce.
    pub body_nonce: Option<Vec<u8>>,
    /// Key id of both ciphertexts.
    pub body_key_id: Option<String>,
    /// Encrypted raw payload.
    pub raw_ciphertext: Option<Vec<u8>>,
    /// Raw payload nonce.
    pub raw_nonce: Option<Vec<u8>>,
    /// Initial status (a failed job).
    pub current_status: Option<String>,
    /// Initial status time.
    pub status_at: Option<DateTime<Utc>>,
    /// Graph error code.
    pub error_code: Option<i64>,
    /// Error detail.
    pub error_detail: Option<String>,
    /// The sender's failure reason.
    pub failure_reason: Option<String>,
    /// Message time.
    pub sent_at: DateTime<Utc>,
}

/// What applying a status changed on its message.
#[derive(Debug, Clone, Default)]
pub struct StatusChange {
    /// New current status.
    pub status: String,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Graph error code of a failure.
    pub error_code: Option<i64>,
    /// Error detail.
    pub error_detail: Option<String>,
}

/// Pricing reported by a status.
#[derive(Debug, Clone, Default)]
pub struct PricingFields {
    /// Category.
    pub category: Option<String>,
    /// Type.
    pub kind: Option<String>,
    /// Model (`PMP`, `CBP`).
    pub model: Option<String>,
    /// Billable flag.
    pub billable: Option<bool>,
}

impl Message {
    /// Inserts a message; `None` when one with the same wamid or job id already exists.
    pub async fn insert_new(
        conn: &mut AsyncPgConnection,
        new: &NewMessage,
    ) -> QueryResult<Option<i64>> {
        diesel::insert_into(messages::table)
            .values(new)
            .on_conflict_do_nothing()
            .returning(messages::id)
            .get_result(conn)
            .await
            .optional()
    }

    /// The message with this wamid.
    pub async fn find_by_wamid(
        conn: &mut AsyncPgConnection,
        tenant: &str,
        wamid: &str,
    ) -> QueryResult<Option<Message>> {
        messages::table
            .filter(
                messages::tenant_id
                    .eq(tenant)
                    .and(messages::wa_message_id.eq(wamid)),
            )
            .select(Message::as_select())
            .first(conn)
            .await
            .optional()
    }

    /// The messages with these wamids (one query for a batch of statuses).
    pub async fn find_by_wamids(
        conn: &mut AsyncPgConnection,
        tenant: &str,
        wamids: &[String],
    ) -> QueryResult<Vec<Message>> {
        messages::table
            .filter(
                messages::tenant_id
                    .eq(tenant)
                    .and(messages::wa_message_id.eq_any(wamids)),
            )
            .select(Message::as_select())
            .load(conn)
            .await
    }

    /// Writes the status and pricing fields of many messages in one statement (the values are
    /// the complete new state of each row, computed by the caller).
    pub async fn write_status_fields(
        conn: &mut AsyncPgConnection,
        rows: &[Message],
    ) -> QueryResult<()> {
        use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamptz};
        if rows.is_empty() {
            return Ok(());
        }
        diesel::sql_query(
            "UPDATE messages m SET current_status = u.current_status, status_at = u.status_at, \
               error_code = u.error_code, error_detail = u.error_detail, \
               pricing_category = u.pricing_category, pricing_type = u.pricing_type, billable = u.billable \
             FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::bigint[], $5::text[], \
                         $6::text[], $7::text[], $8::boolean[]) \
               AS u(id, current_status, status_at, error_code, error_detail, pricing_category, pricing_type, billable) \
             WHERE m.id = u.id",
        )
        .bind::<Array<BigInt>, _>(rows.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(rows.iter().map(|r| r.current_status.clone()).collect::<Vec<_>>())
        .bind::<Array<Nullable<Timestamptz>>, _>(rows.iter().map(|r| r.status_at).collect::<Vec<_>>())
        .bind::<Array<Nullable<BigInt>>, _>(rows.iter().map(|r| r.error_code).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(rows.iter().map(|r| r.error_detail.clone()).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(rows.iter().map(|r| r.pricing_category.clone()).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(rows.iter().map(|r| r.pricing_type.clone()).collect::<Vec<_>>())
        .bind::<Array<Nullable<Bool>>, _>(rows.iter().map(|r| r.billable).collect::<Vec<_>>())
        .execute(conn)
        .await
        .map(drop)
    }

    /// Sets the current status (the caller has checked that it moves forward).
    pub async fn set_status(
        conn: &mut AsyncPgConnection,
        id: i64,
        change: &StatusChange,
    ) -> QueryResult<()> {
        diesel::update(messages::table.find(id))
            .set((
                messages::current_status.eq(&change.status),
                messages::status_at.eq(change.at),
                messages::error_code.eq(change.error_code),
                messages::error_detail.eq(&change.error_detail),
            ))
            .execute(conn)
            .await
            .map(drop)
    }

    /// Stores pricing where the message has none yet (Meta repeats it on several statuses).
    pub async fn set_pricing(
        conn: &mut AsyncPgConnection,
        id: i64,
        pricing: &PricingFields,
    ) -> QueryResult<()> {
        diesel::sql_query(
            "UPDATE messages SET pricing_category = COALESCE(pricing_category, $2), \
             pricing_type = COALESCE(pricing_type, $3), billable = COALESCE(billable, $4) WHERE id = $1",
        )
        .bind::<diesel::sql_types::BigInt, _>(id)
        .bind::<diesel::sql_types::Nullable<diesel::sql_types::Text>, _>(&pricing.category)
        .bind::<diesel::sql_types::Nullable<diesel::sql_types::Text>, _>(&pricing.kind)
        .bind::<diesel::sql_types::Nullable<diesel::sql_types::Bool>, _>(pricing.billable)
        .execute(conn)
        .await
        .map(drop)
    }

    /// One page of a contact's messages, newest first, strictly before `(before_at, before_id)`.
    pub async fn page_for_contact(
        conn: &mut AsyncPgConnection,
        tenant: &str,
        contact: i64,
        before: Option<(DateTime<Utc>, i64)>,
        limit: i64,
    ) -> QueryResult<Vec<Message>> {
        let mut query = messages::table
            .filter(
                messages::tenant_id
                    .eq(tenant)
                    .and(messages::contact_id.eq(contact)),
            )
            .select(Message::as_select())
            .order((messages::sent_at.desc(), messages::id.desc()))
            .limit(limit)
            .into_boxed();
        if let Some((at, id)) = before {
            query = query.filter(
                messages::sent_at
                    .lt(at)
                    .or(messages::sent_at.eq(at).and(messages::id.lt(id))),
            );
        }
        query.load(conn).await
    }

    /// Every message of a tenant sent in `[from, to)`, oldest first (metrics).
    pub async fn list_between(
        conn: &mut AsyncPgConnection,
        tenant: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> QueryResult<Vec<Message>> {
        messages::table
            .filter(messages::tenant_id.eq(tenant))
            .filter(messages::sent_at.ge(from).and(messages::sent_at.lt(to)))
            .order((messages::sent_at.asc(), messages::id.asc()))
            .select(Message::as_select())
            .load(conn)
            .await
    }

    /// Wamids of a contact's messages (to delete their statuses on erasure).
    pub async fn wamids_of_contact(
        conn: &mut AsyncPgConnection,
        contact: i64,
    ) -> QueryResult<Vec<String>> {
        messages::table
            .filter(
                messages::contact_id
                    .eq(contact)
                    .and(messages::wa_message_id.is_not_null()),
            )
            .select(messages::wa_message_id.assume_not_null())
            .load(conn)
            .await
    }

    /// Deletes up to `limit` messages sent before `cutoff` with their statuses and media rows;
    /// returns how many messages went and the storage keys of their stored media files.
    pub async fn delete_older_than(
        conn: &mut AsyncPgConnection,
        cutoff: DateTime<Utc>,
        limit: i64,
    ) -> QueryResult<(usize, Vec<String>)> {
        let doomed: Vec<(i64, String, Option<String>)> = messages::table
            .filter(messages::sent_at.lt(cutoff))
            .order(messages::id.asc())
            .limit(limit)
            .select((messages::id, messages::tenant_id, messages::wa_message_id))
            .for_update()
            .skip_locked()
            .load(conn)
            .await?;
        if doomed.is_empty() {
            return Ok((0, Vec::new()));
        }
        let ids: Vec<i64> = doomed.iter().map(|(id, _, _)| *id).collect();
        let keys = Media::storage_keys_of_messages(conn, &ids).await?;
        for (_, tenant, wamid) in &doomed {
            if let Some(wamid) = wamid {
                MessageStatus::delete_for_wamid(conn, tenant, wamid).await?;
            }
        }
        let deleted = diesel::delete(messages::table.filter(messages::id.eq_any(&ids)))
            .execute(conn)
            .await?;
        Ok((deleted, keys))
    }
}

/// One row of the append-only status history.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = message_statuses, check_for_backend(diesel::pg::Pg))]
pub struct MessageStatus {
    /// Row id.
    pub id: i64,
    /// Tenant.
    pub tenant_id: String,
    /// The message's wamid.
    pub wa_message_id: String,
    /// `sent`, `delivered`, `read`, `failed`.
    pub status: String,
    /// Meta's timestamp.
    pub occurred_at: DateTime<Utc>,
    /// Graph error code of a failure.
    pub meta_code: Option<i64>,
    /// Failure detail.
    pub error_detail: Option<String>,
    /// Pricing category.
    pub pricing_category: Option<String>,
    /// Pricing type.
    pub pricing_type: Option<String>,
    /// Pricing model.
    pub pricing_model: Option<String>,
    /// Billable flag.
    pub billable: Option<bool>,
    /// Whether it has been applied to its message.
    pub applied: bool,
}

/// Insert of a status.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = message_statuses)]
pub struct NewMessageStatus {
    /// Tenant.
    pub tenant_id: String,
    /// Wamid.
    pub wa_message_id: String,
    /// Status word.
    pub status: String,
    /// Meta's timestamp.
    pub occurred_at: DateTime<Utc>,
    /// Graph error code.
    pub meta_code: Option<i64>,
    /// Failure detail.
    pub error_detail: Option<String>,
    /// Pricing category.
    pub pricing_category: Option<String>,
    /// Pricing type.
    pub pricing_type: Option<String>,
    /// Pricing model.
    pub pricing_model: Option<String>,
    /// Billable flag.
    pub billable: Option<bool>,
    /// True when its message is known and the status is applied in the same transaction.
    pub applied: bool,
}

impl MessageStatus {
    /// Appends a status; `None` when `(tenant, wamid, status)` is already recorded.
    pub async fn insert_new(
        conn: &mut AsyncPgConnection,
        new: &NewMessageStatus,
    ) -> QueryResult<Option<i64>> {
        diesel::insert_into(message_statuses::table)
            .values(new)
            .on_conflict_do_nothing()
            .returning(message_statuses::id)
            .get_result(conn)
            .await
            .optional()
    }

    /// Appends many statuses in one statement; returns `(id, wamid, status)` of the rows that
    /// were new (duplicates of recorded statuses are skipped).
    pub async fn insert_many(
        conn: &mut AsyncPgConnection,
        rows: &[NewMessageStatus],
    ) -> QueryResult<Vec<(i64, String, String)>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        diesel::insert_into(message_statuses::table)
            .values(rows)
            .on_conflict_do_nothing()
            .returning((
                message_statuses::id,
                message_statuses::wa_message_id,
                message_statuses::status,
            ))
            .get_results(conn)
            .await
    }

    /// Statuses of a wamid not yet applied to a message, oldest first.
    pub async fn unapplied_for(
        conn: &mut AsyncPgConnection,
        tenant: &str,
        wamid: &str,
    ) -> QueryResult<Vec<MessageStatus>> {
        message_statuses::table
            .filter(message_statuses::tenant_id.eq(tenant))
            .filter(message_statuses::wa_message_id.eq(wamid))
            .filter(message_statuses::applied.eq(false))
            .order(message_statuses::id.asc())
            .select(MessageStatus::as_select())
            .load(conn)
            .await
    }

    /// Marks statuses applied.
    pub async fn mark_applied(conn: &mut AsyncPgConnection, ids: &[i64]) -> QueryResult<()> {
        diesel::update(message_statuses::table.filter(message_statuses::id.eq_any(ids)))
            .set(message_statuses::applied.eq(true))
            .execute(conn)
            .await
            .map(drop)
    }

    /// The full history of a wamid, oldest first.
    pub async fn history(
        conn: &mut AsyncPgConnection,
        tenant: &str,
        wamid: &str,
    ) -> QueryResult<Vec<MessageStatus>> {
        message_statuses::table
            .filter(
                message_statuses::tenant_id
                    .eq(tenant)
                    .and(message_statuses::wa_message_id.eq(wamid)),
            )
            .order(message_statuses::id.asc())
            .select(MessageStatus::as_select())
            .load(conn)
            .await
    }

    /// Deletes a wamid's history (erasure, retention).
    pub async fn delete_for_wamid(
        conn: &mut AsyncPgConnection,
        tenant: &str,
        wamid: &str,
    ) -> QueryResult<()> {
        diesel::delete(
            message_statuses::table.filter(
                message_statuses::tenant_id
                    .eq(tenant)
                    .and(message_statuses::wa_message_id.eq(wamid)),
            ),
        )
        .execute(conn)
        .await
        .map(drop)
    }

    /// Deletes statuses received before `cutoff` that never found their message.
    pub async fn delete_unapplied_older_than(
        conn: &mut AsyncPgConnection,
        cutoff: DateTime<Utc>,
    ) -> QueryResult<usize> {
        diesel::delete(
            message_statuses::table
                .filter(message_statuses::applied.eq(false))
                .filter(message_statuses::received_at.lt(cutoff)),
        )
        .execute(conn)
        .await
    }
}

/// An inbound media download.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = media, check_for_backend(diesel::pg::Pg))]
pub struct Media {
    /// Row id.
    pub id: i64,
    /// Tenant.
    pub tenant_id: String,
    /// The message it belongs to.
    pub message_id: i64,
    /// Meta's media id.
    pub media_id: String,
    /// MIME type from the webhook.
    pub mime_type: Option<String>,
    /// Base64 SHA-256 from the webhook.
    pub sha256: Option<String>,
    /// Document file name.
    pub filename: Option<String>,
    /// `pending`, `stored`, `failed`.
    pub state: String,
    /// Download attempts so far.
    pub attempts: i32,
    /// Where the encrypted file is.
    pub storage_key: Option<String>,
    /// The key that encrypted it.
    pub key_id: Option<String>,
    /// Plaintext size.
    pub size_bytes: Option<i64>,
    /// Last failure.
    pub last_error: Option<String>,
}

/// Insert of a pending download.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = media)]
pub struct NewMedia {
    /// Tenant.
    pub tenant_id: String,
    /// Message.
    pub message_id: i64,
    /// Meta's media id.
    pub media_id: String,
    /// MIME type.
    pub mime_type: Option<String>,
    /// Base64 SHA-256.
    pub sha256: Option<String>,
    /// File name.
    pub filename: Option<String>,
}

impl Media {
    /// Queues a download (idempotent on `(message, media_id)`).
    pub async fn insert_pending(conn: &mut AsyncPgConnection, new: &NewMedia) -> QueryResult<()> {
        diesel::insert_into(media::table)
            .values(new)
            .on_conflict_do_nothing()
            .execute(conn)
            .await
            .map(drop)
    }

    /// Claims up to `limit` due pending downloads by pushing their next attempt `lease` ahead
    /// (`FOR UPDATE SKIP LOCKED`, so replicas never claim the same row); commit before working.
    pub async fn claim_due(
        conn: &mut AsyncPgConnection,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> QueryResult<Vec<Media>> {
        let due: Vec<i64> = media::table
            .filter(
                media::state
                    .eq("pending")
                    .and(media::next_attempt_at.le(now)),
            )
            .order(media::next_attempt_at.asc())
            .limit(limit)
            .select(media::id)
            .for_update()
            .skip_locked()
            .load(conn)
            .await?;
        diesel::update(media::table.filter(media::id.eq_any(&due)))
            .set(media::next_attempt_at.eq(lease_until))
            .returning(Media::as_returning())
            .get_results(conn)
            .await
    }

    /// Marks a download stored.
    pub async fn mark_stored(
        conn: &mut AsyncPgConnection,
        id: i64,
        storage_key: &str,
        key_id: &str,
        size: i64,
    ) -> QueryResult<()> {
        diesel::update(media::table.find(id))
            .set((
                media::state.eq("stored"),
                media::storage_key.eq(storage_key),
                media::key_id.eq(key_id),
                media::size_bytes.eq(size),
                media::attempts.eq(media::attempts + 1),
                media::next_attempt_at.eq(None::<DateTime<Utc>>),
                media::last_error.eq(None::<String>),
            ))
            .execute(conn)
            .await
            .map(drop)
    }

    /// Records a failed attempt: retried at `retry_at`, or `failed` for good when `None`.
    pub async fn mark_attempt_failed(
        conn: &mut AsyncPgConnection,
        id: i64,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> QueryResult<()> {
        let state = if retry_at.is_some() {
            "pending"
        } else {
            "failed"
        };
        diesel::update(media::table.find(id))
            .set((
                media::state.eq(state),
                media::attempts.eq(media::attempts + 1),
                media::next_attempt_at.eq(retry_at),
                media::last_error.eq(error),
            ))
            .execute(conn)
            .await
            .map(drop)
    }

    /// The media of some messages (read API).
    pub async fn of_messages(conn: &mut AsyncPgConnection, ids: &[i64]) -> QueryResult<Vec<Media>> {
        media::table
            .filter(media::message_id.eq_any(ids))
            .select(Media::as_select())
            .load(conn)
            .await
    }

    /// Storage keys of the stored files of some messages (to delete them with the messages).
    pub async fn storage_keys_of_messages(
        conn: &mut AsyncPgConnection,
        ids: &[i64],
    ) -> QueryResult<Vec<String>> {
        media::table
            .filter(
                media::message_id
                    .eq_any(ids)
                    .and(media::storage_key.is_not_null()),
            )
            .select(media::storage_key.assume_not_null())
            .load(conn)
            .await
    }

    /// Storage keys of every stored file of a contact.
    pub async fn storage_keys_of_contact(
        conn: &mut AsyncPgConnection,
        contact: i64,
    ) -> QueryResult<Vec<String>> {
        media::table
            .inner_join(messages::table)
            .filter(
                messages::contact_id
                    .eq(contact)
                    .and(media::storage_key.is_not_null()),
            )
            .select(media::storage_key.assume_not_null())
            .load(conn)
            .await
    }
}

/// An event waiting to be published.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = sync_outbox, check_for_backend(diesel::pg::Pg))]
pub struct OutboxEvent {
    /// Row id (publish order).
    pub id: i64,
    /// Tenant.
    pub tenant_id: String,
    /// Routing key on `whatsapp.events`.
    pub routing_key: String,
    /// Encrypted JSON body.
    pub payload_ciphertext: Vec<u8>,
    /// Its nonce.
    pub payload_nonce: Vec<u8>,
    /// The key that encrypted it.
    pub key_id: String,
}

/// Insert of an outbox event.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = sync_outbox)]
pub struct NewOutboxEvent {
    /// Tenant.
    pub tenant_id: String,
    /// The contact it is about (erasure cascades).
    pub contact_id: Option<i64>,
    /// Routing key.
    pub routing_key: String,
    /// Encrypted JSON body.
    pub payload_ciphertext: Vec<u8>,
    /// Its nonce.
    pub payload_nonce: Vec<u8>,
    /// Key id.
    pub key_id: String,
}

impl OutboxEvent {
    /// Queues an event; returns its id (the AMQP `message_id` is derived from it).
    pub async fn insert(conn: &mut AsyncPgConnection, new: &NewOutboxEvent) -> QueryResult<i64> {
        diesel::insert_into(sync_outbox::table)
            .values(new)
            .returning(sync_outbox::id)
            .get_result(conn)
            .await
    }

    /// Queues many events in one statement; returns their ids in the order of `rows`
    /// (PostgreSQL returns the rows of a multi-row `VALUES` insert in insertion order).
    pub async fn insert_many(
        conn: &mut AsyncPgConnection,
        rows: &[NewOutboxEvent],
    ) -> QueryResult<Vec<i64>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        diesel::insert_into(sync_outbox::table)
            .values(rows)
            .returning(sync_outbox::id)
            .get_results(conn)
            .await
    }

    /// Locks up to `limit` events created before `created_before` (all when `None`), oldest
    /// first, for publishing (`SKIP LOCKED`: one relay at a time per row). The batcher publishes
    /// fresh events itself; the periodic relay only takes those a failed publish left behind.
    pub async fn claim(
        conn: &mut AsyncPgConnection,
        limit: i64,
        created_before: Option<DateTime<Utc>>,
    ) -> QueryResult<Vec<OutboxEvent>> {
        // The far future when unbounded: one query shape (locking clauses do not box).
        let before = created_before.unwrap_or(DateTime::<Utc>::MAX_UTC);
        sync_outbox::table
            .filter(sync_outbox::created_at.lt(before))
            .order(sync_outbox::id.asc())
            .limit(limit)
            .select(OutboxEvent::as_select())
            .for_update()
            .skip_locked()
            .load(conn)
            .await
    }

    /// Deletes published events.
    pub async fn delete(conn: &mut AsyncPgConnection, ids: &[i64]) -> QueryResult<()> {
        diesel::delete(sync_outbox::table.filter(sync_outbox::id.eq_any(ids)))
            .execute(conn)
            .await
            .map(drop)
    }

    /// Events still waiting (tests, `/readyz` diagnostics).
    pub async fn count(conn: &mut AsyncPgConnection) -> QueryResult<i64> {
        sync_outbox::table.count().get_result(conn).await
    }
}

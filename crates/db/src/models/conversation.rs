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

    /// The contacts with these `(tenant, wa_id)`, each with its conversation if it has one (one
    /// query for a batch; the caller matches the pairs, since the filter takes every tenant with
    /// every wa_id). Takes a shared connection so it can be pipelined with other statements.
    pub async fn find_by_wa_ids(
        mut conn: &AsyncPgConnection,
        tenants: &[&str],
        wa_ids: &[&str],
    ) -> QueryResult<Vec<(Contact, Option<i64>)>> {
        if wa_ids.is_empty() {
            return Ok(Vec::new());
        }
        contacts::table
            .left_join(conversations::table)
            .filter(contacts::tenant_id.eq_any(tenants))
            .filter(contacts::wa_id.eq_any(wa_ids))
            .select((Contact::as_select(), conversations::id.nullable()))
            .load(&mut conn)
            .await
    }

    /// The contacts with these business-scoped user ids (senders that hide their number), oldest
    /// first (the first one of a `(tenant, user_id)` is its contact), each with its conversation
    /// if it has one. The caller matches the pairs.
    pub async fn find_by_user_ids(
        mut conn: &AsyncPgConnection,
        tenants: &[&str],
        user_ids: &[&str],
    ) -> QueryResult<Vec<(Contact, Option<i64>)>> {
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        contacts::table
            .left_join(conversations::table)
            .filter(contacts::tenant_id.eq_any(tenants))
            .filter(contacts::user_id.eq_any(user_ids))
            .order(contacts::id.asc())
            .select((Contact::as_select(), conversations::id.nullable()))
            .load(&mut conn)
            .await
    }

    /// Inserts contacts in one statement, in the order given; a contact whose `(tenant, wa_id)` or
    /// `(tenant, jamaah_id)` exists already (another replica was faster) is skipped and not
    /// returned.
    pub async fn insert_many(
        conn: &mut AsyncPgConnection,
        rows: &[NewContact],
    ) -> QueryResult<Vec<Contact>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        diesel::insert_into(contacts::table)
            .values(rows)
            .on_conflict_do_nothing()
            .returning(Contact::as_returning())
            .get_results(conn)
            .await
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

    /// Records each sender's latest profile name (kept when `None`) and moves its last inbound
    /// time forward, for many contacts in one statement (one entry per contact).
    pub async fn touch_inbound_many(
        mut conn: &AsyncPgConnection,
        touches: &[InboundTouch],
    ) -> QueryResult<()> {
        use diesel::sql_types::{Array, BigInt, Nullable, Text, Timestamptz};
        if touches.is_empty() {
            return Ok(());
        }
        diesel::sql_query(
            "UPDATE contacts c SET profile_name = COALESCE(u.profile_name, c.profile_name), \
               last_inbound_at = GREATEST(c.last_inbound_at, u.at) \
             FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS u(id, profile_name, at) \
             WHERE c.id = u.id",
        )
        .bind::<Array<BigInt>, _>(touches.iter().map(|t| t.contact_id).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(
            touches
                .iter()
                .map(|t| t.profile_name.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Timestamptz>, _>(touches.iter().map(|t| t.at).collect::<Vec<_>>())
        .execute(&mut conn)
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

/// What the inbound messages of a batch changed on their sender's contact.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundTouch {
    /// The contact.
    pub contact_id: i64,
    /// The latest profile name the sender showed, if any.
    pub profile_name: Option<String>,
    /// The latest inbound message time.
    pub at: DateTime<Utc>,
}

/// What the messages of a batch changed on their conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationTouch {
    /// The conversation.
    pub conversation_id: i64,
    /// The latest inbound message time, if any.
    pub inbound_at: Option<DateTime<Utc>>,
    /// The latest outbound message time, if any.
    pub outbound_at: Option<DateTime<Utc>>,
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

    /// `(conversation id, contact id)` of the conversations these contacts have.
    pub async fn find_for_contacts(
        conn: &mut AsyncPgConnection,
        contact_ids: &[i64],
    ) -> QueryResult<Vec<(i64, i64)>> {
        conversations::table
            .filter(conversations::contact_id.eq_any(contact_ids))
            .select((conversations::id, conversations::contact_id))
            .load(conn)
            .await
    }

    /// Creates the conversations of these `(tenant, contact id)` in one statement, in the order
    /// given; returns `(conversation id, contact id)` of those created (a contact that has one
    /// already is skipped).
    pub async fn insert_many(
        conn: &mut AsyncPgConnection,
        contacts: &[(&str, i64)],
    ) -> QueryResult<Vec<(i64, i64)>> {
        if contacts.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<_> = contacts
            .iter()
            .map(|(tenant, contact)| {
                (
                    conversations::tenant_id.eq(*tenant),
                    conversations::contact_id.eq(*contact),
                )
            })
            .collect();
        diesel::insert_into(conversations::table)
            .values(rows)
            .on_conflict_do_nothing()
            .returning((conversations::id, conversations::contact_id))
            .get_results(conn)
            .await
    }

    /// Moves the last-activity times of many conversations forward in one statement (one entry
    /// per conversation; `GREATEST` ignores the `None`s).
    pub async fn touch_many(
        mut conn: &AsyncPgConnection,
        touches: &[ConversationTouch],
    ) -> QueryResult<()> {
        use diesel::sql_types::{Array, BigInt, Nullable, Timestamptz};
        if touches.is_empty() {
            return Ok(());
        }
        diesel::sql_query(
            "UPDATE conversations c SET \
               last_message_at = GREATEST(c.last_message_at, u.inbound_at, u.outbound_at), \
               last_inbound_at = GREATEST(c.last_inbound_at, u.inbound_at), \
               last_outbound_at = GREATEST(c.last_outbound_at, u.outbound_at) \
             FROM unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[]) \
               AS u(id, inbound_at, outbound_at) \
             WHERE c.id = u.id",
        )
        .bind::<Array<BigInt>, _>(
            touches
                .iter()
                .map(|t| t.conversation_id)
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Timestamptz>>, _>(
            touches.iter().map(|t| t.inbound_at).collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Timestamptz>>, _>(
            touches.iter().map(|t| t.outbound_at).collect::<Vec<_>>(),
        )
        .execute(&mut conn)
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

/// The keys of a message [`Message::insert_many`] inserted.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct InsertedMessage {
    /// Row id.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub id: i64,
    /// Tenant.
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub tenant_id: String,
    /// Meta's wamid.
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub wa_message_id: Option<String>,
    /// Send-job id.
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub job_id: Option<String>,
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
    /// Inserts messages in one statement, in the order given, and returns the keys of those that
    /// were new: a row whose wamid or job id exists already, or appeared earlier in `rows`, is
    /// skipped. One array per column (`unnest`), so the statement is the same for any number of
    /// rows (prepared once) and carries 20 parameters instead of 20 per row.
    pub async fn insert_many(
        conn: &mut AsyncPgConnection,
        rows: &[NewMessage],
    ) -> QueryResult<Vec<InsertedMessage>> {
        use diesel::sql_types::{Array, BigInt, Bytea, Nullable, Text, Timestamptz};
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        fn column<'a, T: 'a>(rows: &'a [NewMessage], f: impl Fn(&'a NewMessage) -> T) -> Vec<T> {
            rows.iter().map(f).collect()
        }
        diesel::sql_query(
            "INSERT INTO messages (tenant_id, conversation_id, contact_id, direction, wa_message_id, \
               job_id, reference_kind, reference_id, message_type, body_ciphertext, body_nonce, \
               body_key_id, raw_ciphertext, raw_nonce, current_status, status_at, error_code, \
               error_detail, failure_reason, sent_at) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], \
               $6::text[], $7::text[], $8::text[], $9::text[], $10::bytea[], $11::bytea[], \
               $12::text[], $13::bytea[], $14::bytea[], $15::text[], $16::timestamptz[], \
               $17::bigint[], $18::text[], $19::text[], $20::timestamptz[]) \
             ON CONFLICT DO NOTHING \
             RETURNING id, tenant_id, wa_message_id, job_id",
        )
        .bind::<Array<Text>, _>(column(rows, |r| r.tenant_id.as_str()))
        .bind::<Array<BigInt>, _>(column(rows, |r| r.conversation_id))
        .bind::<Array<BigInt>, _>(column(rows, |r| r.contact_id))
        .bind::<Array<Text>, _>(column(rows, |r| r.direction.as_str()))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.wa_message_id.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.job_id.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.reference_kind.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.reference_id.as_deref()))
        .bind::<Array<Text>, _>(column(rows, |r| r.message_type.as_str()))
        .bind::<Array<Nullable<Bytea>>, _>(column(rows, |r| r.body_ciphertext.as_deref()))
        .bind::<Array<Nullable<Bytea>>, _>(column(rows, |r| r.body_nonce.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.body_key_id.as_deref()))
        .bind::<Array<Nullable<Bytea>>, _>(column(rows, |r| r.raw_ciphertext.as_deref()))
        .bind::<Array<Nullable<Bytea>>, _>(column(rows, |r| r.raw_nonce.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.current_status.as_deref()))
        .bind::<Array<Nullable<Timestamptz>>, _>(column(rows, |r| r.status_at))
        .bind::<Array<Nullable<BigInt>>, _>(column(rows, |r| r.error_code))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.error_detail.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.failure_reason.as_deref()))
        .bind::<Array<Timestamptz>, _>(column(rows, |r| r.sent_at))
        .load(conn)
        .await
    }

    /// The stored row of `new` once inserted as `id` (every other column is what was inserted).
    pub fn from_new(id: i64, new: &NewMessage) -> Message {
        Message {
            id,
            tenant_id: new.tenant_id.clone(),
            contact_id: new.contact_id,
            direction: new.direction.clone(),
            wa_message_id: new.wa_message_id.clone(),
            job_id: new.job_id.clone(),
            reference_kind: new.reference_kind.clone(),
            reference_id: new.reference_id.clone(),
            message_type: new.message_type.clone(),
            body_ciphertext: new.body_ciphertext.clone(),
            body_nonce: new.body_nonce.clone(),
            body_key_id: new.body_key_id.clone(),
            current_status: new.current_status.clone(),
            status_at: new.status_at,
            error_code: new.error_code,
            error_detail: new.error_detail.clone(),
            failure_reason: new.failure_reason.clone(),
            pricing_category: None,
            pricing_type: None,
            billable: None,
            sent_at: new.sent_at,
        }
    }

    /// Takes the transaction-scoped advisory locks `keys`, in the order given: callers pass them
    /// sorted, so two transactions take shared keys in the same order and cannot deadlock on them.
    pub async fn lock_keys(mut conn: &AsyncPgConnection, keys: &[i64]) -> QueryResult<()> {
        use diesel::sql_types::{Array, BigInt};
        if keys.is_empty() {
            return Ok(());
        }
        // A function scan of `unnest` yields the array in order.
        diesel::sql_query("SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k")
            .bind::<Array<BigInt>, _>(keys)
            .execute(&mut conn)
            .await
            .map(drop)
    }

    /// The messages with these `(tenant, wamid)` (the caller matches the pairs), locked until the
    /// transaction ends and in id order, so two replicas moving the same message's status wait
    /// for each other instead of overwriting each other's step (and never deadlock here).
    pub async fn lock_by_wamids(
        mut conn: &AsyncPgConnection,
        tenants: &[&str],
        wamids: &[&str],
    ) -> QueryResult<Vec<Message>> {
        if wamids.is_empty() {
            return Ok(Vec::new());
        }
        messages::table
            .filter(messages::tenant_id.eq_any(tenants))
            .filter(messages::wa_message_id.eq_any(wamids))
            .order(messages::id.asc())
            .select(Message::as_select())
            .for_update()
            .load(&mut conn)
            .await
    }

    /// Writes the status and pricing fields of many messages in one statement (the values are
    /// the complete new state of each row, computed by the caller).
    pub async fn write_status_fields(
        mut conn: &AsyncPgConnection,
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
        .execute(&mut conn)
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
    /// Appends many statuses in one statement, in the order given; returns
    /// `(tenant, wamid, status)` of the rows that were new (a status already recorded, or earlier
    /// in `rows`, is skipped).
    pub async fn insert_many(
        conn: &mut AsyncPgConnection,
        rows: &[NewMessageStatus],
    ) -> QueryResult<Vec<(String, String, String)>> {
        use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamptz};
        #[derive(QueryableByName)]
        struct Key {
            #[diesel(sql_type = Text)]
            tenant_id: String,
            #[diesel(sql_type = Text)]
            wa_message_id: String,
            #[diesel(sql_type = Text)]
            status: String,
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        fn column<'a, T: 'a>(
            rows: &'a [NewMessageStatus],
            f: impl Fn(&'a NewMessageStatus) -> T,
        ) -> Vec<T> {
            rows.iter().map(f).collect()
        }
        // One array per column, like `Message::insert_many`.
        let keys: Vec<Key> = diesel::sql_query(
            "INSERT INTO message_statuses (tenant_id, wa_message_id, status, occurred_at, meta_code, \
               error_detail, pricing_category, pricing_type, pricing_model, billable, applied) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], \
               $5::bigint[], $6::text[], $7::text[], $8::text[], $9::text[], $10::boolean[], \
               $11::boolean[]) \
             ON CONFLICT DO NOTHING \
             RETURNING tenant_id, wa_message_id, status",
        )
        .bind::<Array<Text>, _>(column(rows, |r| r.tenant_id.as_str()))
        .bind::<Array<Text>, _>(column(rows, |r| r.wa_message_id.as_str()))
        .bind::<Array<Text>, _>(column(rows, |r| r.status.as_str()))
        .bind::<Array<Timestamptz>, _>(column(rows, |r| r.occurred_at))
        .bind::<Array<Nullable<BigInt>>, _>(column(rows, |r| r.meta_code))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.error_detail.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.pricing_category.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.pricing_type.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.pricing_model.as_deref()))
        .bind::<Array<Nullable<Bool>>, _>(column(rows, |r| r.billable))
        .bind::<Array<Bool>, _>(column(rows, |r| r.applied))
        .load(conn)
        .await?;
        Ok(keys
            .into_iter()
            .map(|k| (k.tenant_id, k.wa_message_id, k.status))
            .collect())
    }

    /// Statuses of these `(tenant, wamid)` not yet applied to a message, oldest first (the caller
    /// matches the pairs).
    pub async fn unapplied_for_many(
        mut conn: &AsyncPgConnection,
        tenants: &[&str],
        wamids: &[&str],
    ) -> QueryResult<Vec<MessageStatus>> {
        if wamids.is_empty() {
            return Ok(Vec::new());
        }
        message_statuses::table
            .filter(message_statuses::tenant_id.eq_any(tenants))
            .filter(message_statuses::wa_message_id.eq_any(wamids))
            .filter(message_statuses::applied.eq(false))
            .order(message_statuses::id.asc())
            .select(MessageStatus::as_select())
            .load(&mut conn)
            .await
    }

    /// Marks statuses applied.
    pub async fn mark_applied(mut conn: &AsyncPgConnection, ids: &[i64]) -> QueryResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        diesel::update(message_statuses::table.filter(message_statuses::id.eq_any(ids)))
            .set(message_statuses::applied.eq(true))
            .execute(&mut conn)
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
    /// Queues downloads in one statement (idempotent on `(message, media_id)`).
    pub async fn insert_pending_many(
        mut conn: &AsyncPgConnection,
        rows: &[NewMedia],
    ) -> QueryResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        diesel::insert_into(media::table)
            .values(rows)
            .on_conflict_do_nothing()
            .execute(&mut conn)
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
#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable)]
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
    /// The message an `outbound.status` step is about (its steps are published in row order).
    pub message_id: Option<i64>,
}

/// Transaction-scoped advisory lock of the outbox relay: one relay publishes at a time, so two
/// replicas never publish steps of one message side by side out of order.
const OUTBOX_RELAY_LOCK: i64 = 0x7761_5f6f_7574_626f; // "wa_outbo"

impl OutboxEvent {
    /// Queues an event; returns its id (the AMQP `message_id` is derived from it).
    pub async fn insert(conn: &mut AsyncPgConnection, new: &NewOutboxEvent) -> QueryResult<i64> {
        diesel::insert_into(sync_outbox::table)
            .values(new)
            .returning(sync_outbox::id)
            .get_result(conn)
            .await
    }

    /// Queues many events in one statement (one array per column); returns their ids in the
    /// order of `rows`: the ids come from the sequence in insertion order, so sorted they line up
    /// with the rows whatever order `RETURNING` gives them in.
    pub async fn insert_many(
        mut conn: &AsyncPgConnection,
        rows: &[NewOutboxEvent],
    ) -> QueryResult<Vec<i64>> {
        use diesel::sql_types::{Array, BigInt, Bytea, Nullable, Text};
        #[derive(QueryableByName)]
        struct Id {
            #[diesel(sql_type = BigInt)]
            id: i64,
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids: Vec<i64> = diesel::sql_query(
            "INSERT INTO sync_outbox (tenant_id, contact_id, routing_key, payload_ciphertext, \
               payload_nonce, key_id, message_id) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bytea[], $5::bytea[], \
               $6::text[], $7::bigint[]) \
             RETURNING id",
        )
        .bind::<Array<Text>, _>(
            rows.iter()
                .map(|r| r.tenant_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<BigInt>>, _>(rows.iter().map(|r| r.contact_id).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(
            rows.iter()
                .map(|r| r.routing_key.as_str())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Bytea>, _>(
            rows.iter()
                .map(|r| r.payload_ciphertext.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Bytea>, _>(
            rows.iter()
                .map(|r| r.payload_nonce.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Text>, _>(rows.iter().map(|r| r.key_id.as_str()).collect::<Vec<_>>())
        .bind::<Array<Nullable<BigInt>>, _>(rows.iter().map(|r| r.message_id).collect::<Vec<_>>())
        .load::<Id>(&mut conn)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Locks up to `limit` events created before `created_before` (all when `None`), oldest
    /// first, for publishing, or none when another relay holds the relay lock (released at the
    /// end of the transaction). The batcher publishes fresh events itself; the periodic relay only
    /// takes those a failed publish left behind or the batcher held back. A row whose message has
    /// an older row too young to take waits with it, so a message's steps go out in order.
    pub async fn claim(
        conn: &mut AsyncPgConnection,
        limit: i64,
        created_before: Option<DateTime<Utc>>,
    ) -> QueryResult<Vec<OutboxEvent>> {
        use diesel::sql_types::{BigInt, Bool, Timestamptz};
        #[derive(QueryableByName)]
        struct Locked {
            #[diesel(sql_type = Bool)]
            locked: bool,
        }
        let relay = diesel::sql_query("SELECT pg_try_advisory_xact_lock($1) AS locked")
            .bind::<BigInt, _>(OUTBOX_RELAY_LOCK)
            .get_result::<Locked>(conn)
            .await?;
        if !relay.locked {
            return Ok(Vec::new());
        }
        // The far future when unbounded: one query shape.
        let before = created_before.unwrap_or(DateTime::<Utc>::MAX_UTC);
        diesel::sql_query(
            "SELECT o.id, o.tenant_id, o.routing_key, o.payload_ciphertext, o.payload_nonce, \
               o.key_id \
             FROM sync_outbox o \
             WHERE o.created_at < $1 \
               AND NOT EXISTS (SELECT 1 FROM sync_outbox p WHERE p.message_id = o.message_id \
                 AND p.id < o.id AND p.created_at >= $1) \
             ORDER BY o.id LIMIT $2 \
             FOR UPDATE OF o SKIP LOCKED",
        )
        .bind::<Timestamptz, _>(before)
        .bind::<BigInt, _>(limit)
        .load(conn)
        .await
    }

    /// Of the events `(message, id)` about to be published, the messages that still have an
    /// older event in the outbox other than these: a step committed earlier and not yet
    /// published (its publish failed, or its process died). Their events are left to the relay,
    /// which publishes in row order.
    pub async fn held_back(
        mut conn: &AsyncPgConnection,
        events: &[(i64, i64)],
    ) -> QueryResult<Vec<i64>> {
        use diesel::sql_types::{Array, BigInt};
        #[derive(QueryableByName)]
        struct Held {
            #[diesel(sql_type = BigInt)]
            message_id: i64,
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (messages, event_ids): (Vec<i64>, Vec<i64>) = events.iter().copied().unzip();
        Ok(diesel::sql_query(
            "SELECT DISTINCT b.message_id \
             FROM unnest($1::bigint[], $2::bigint[]) AS b(message_id, id) \
             JOIN sync_outbox o ON o.message_id = b.message_id AND o.id < b.id \
             WHERE o.id <> ALL($2::bigint[])",
        )
        .bind::<Array<BigInt>, _>(messages)
        .bind::<Array<BigInt>, _>(event_ids)
        .load::<Held>(&mut conn)
        .await?
        .into_iter()
        .map(|h| h.message_id)
        .collect())
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

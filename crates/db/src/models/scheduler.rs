//! The reminder scheduler's tables: its copy of the platform data (`jamaah`, `packages`,
//! `payment_schedules`, `payments`), the `reminders` it plans and sends, the `templates` registry
//! and the keyword `auto_replies`.
//!
//! Every write from a platform event is an upsert keyed on the platform's id (events arrive at
//! least once and in any order). Reminders are planned with `INSERT … ON CONFLICT (tenant_id,
//! kind, dedupe_key)`, so one (schedule, offset) is one row whatever the number of replicas, and
//! claimed by the tick with `FOR UPDATE OF r SKIP LOCKED` (see [`claim_due_reminders`]).

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Date, Integer, Jsonb, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;

use crate::schema::{
    auto_replies, jamaah, packages, payment_schedules, payments, reminders, templates,
};

/// Reminder statuses that the tick may still claim.
pub const OPEN_STATUSES: [&str; 2] = ["pending", "waiting_template"];

/// A jamaah as the scheduler keeps it (from `jamaah.upserted`).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = jamaah, check_for_backend(diesel::pg::Pg))]
#[diesel(treat_none_as_null = true)]
pub struct JamaahRow {
    /// Tenant.
    pub tenant_id: String,
    /// Platform id.
    pub jamaah_id: String,
    /// Full name (template parameter 1).
    pub name: String,
    /// E.164 with `+`; `None` when the platform's number could not be parsed.
    pub phone_e164: Option<String>,
    /// The platform's word (`ready` gets departure broadcasts).
    pub status: String,
    /// Booked package.
    pub package_id: Option<String>,
    /// Agent id.
    pub agent_id: Option<String>,
    /// Agent name (payment reminder parameter 5).
    pub agent_name: Option<String>,
    /// Agent phone as printed (payment reminder parameter 6).
    pub agent_phone: Option<String>,
}

/// Upserts a jamaah (replayed events leave the row unchanged).
pub async fn upsert_jamaah(conn: &mut AsyncPgConnection, row: &JamaahRow) -> QueryResult<()> {
    diesel::insert_into(jamaah::table)
        .values(row)
        .on_conflict((jamaah::tenant_id, jamaah::jamaah_id))
        .do_update()
        .set(row)
        .execute(conn)
        .await
        .map(|_| ())
}

/// The jamaah, if known.
pub async fn find_jamaah(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    jamaah_id: &str,
) -> QueryResult<Option<JamaahRow>> {
    jamaah::table
        .find((tenant, jamaah_id))
        .select(JamaahRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// The jamaah owning this E.164 number (auto-replies); the most recently updated if several.
pub async fn find_jamaah_by_phone(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    phone_e164: &str,
) -> QueryResult<Option<JamaahRow>> {
    jamaah::table
        .filter(jamaah::tenant_id.eq(tenant))
        .filter(jamaah::phone_e164.eq(phone_e164))
        .order(jamaah::updated_at.desc())
        .select(JamaahRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Jamaah of a package whose status is `status` (departure broadcasts go to `ready`).
pub async fn jamaah_of_package_with_status(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    package_id: &str,
    status: &str,
) -> QueryResult<Vec<JamaahRow>> {
    jamaah::table
        .filter(jamaah::tenant_id.eq(tenant))
        .filter(jamaah::package_id.eq(package_id))
        .filter(jamaah::status.eq(status))
        .select(JamaahRow::as_select())
        .load(conn)
        .await
}

/// A package as the scheduler keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = packages, check_for_backend(diesel::pg::Pg))]
pub struct PackageRow {
    /// Tenant.
    pub tenant_id: String,
    /// Platform id.
    pub package_id: String,
    /// Name shown in templates.
    pub name: Option<String>,
    /// Departure date, once `departure.scheduled` arrived.
    pub departure_date: Option<NaiveDate>,
}

/// Records a package's name (from `jamaah.upserted`) without touching its departure date.
pub async fn upsert_package_name(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    package_id: &str,
    name: &str,
) -> QueryResult<()> {
    diesel::insert_into(packages::table)
        .values((
            packages::tenant_id.eq(tenant),
            packages::package_id.eq(package_id),
            packages::name.eq(name),
        ))
        .on_conflict((packages::tenant_id, packages::package_id))
        .do_update()
        .set(packages::name.eq(name))
        .execute(conn)
        .await
        .map(|_| ())
}

/// Records a package's name and departure date (from `departure.scheduled`).
pub async fn upsert_package_departure(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    package_id: &str,
    name: &str,
    departure_date: NaiveDate,
) -> QueryResult<()> {
    diesel::insert_into(packages::table)
        .values((
            packages::tenant_id.eq(tenant),
            packages::package_id.eq(package_id),
            packages::name.eq(name),
            packages::departure_date.eq(departure_date),
        ))
        .on_conflict((packages::tenant_id, packages::package_id))
        .do_update()
        .set((
            packages::name.eq(name),
            packages::departure_date.eq(departure_date),
        ))
        .execute(conn)
        .await
        .map(|_| ())
}

/// The package, if known.
pub async fn find_package(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    package_id: &str,
) -> QueryResult<Option<PackageRow>> {
    packages::table
        .find((tenant, package_id))
        .select(PackageRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// One instalment (from `payment_schedule.upserted`).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = payment_schedules, check_for_backend(diesel::pg::Pg))]
#[diesel(treat_none_as_null = true)]
pub struct ScheduleRow {
    /// Tenant.
    pub tenant_id: String,
    /// Platform id.
    pub schedule_id: String,
    /// Who pays.
    pub jamaah_id: String,
    /// For which package.
    pub package_id: Option<String>,
    /// Local due date.
    pub due_date: NaiveDate,
    /// Whole rupiah.
    pub amount: i64,
    /// `unpaid`, `paid` or `cancelled`.
    pub status: String,
}

/// Upserts an instalment.
pub async fn upsert_schedule(conn: &mut AsyncPgConnection, row: &ScheduleRow) -> QueryResult<()> {
    diesel::insert_into(payment_schedules::table)
        .values(row)
        .on_conflict((payment_schedules::tenant_id, payment_schedules::schedule_id))
        .do_update()
        .set(row)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Sum of a jamaah's unpaid instalments (the balance when no payment was recorded yet); summed
/// in Rust because diesel's `SUM(bigint)` is `numeric`, which would need the `bigdecimal` feature.
pub async fn unpaid_total(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    jamaah_id: &str,
) -> QueryResult<Option<i64>> {
    payment_schedules::table
        .filter(payment_schedules::tenant_id.eq(tenant))
        .filter(payment_schedules::jamaah_id.eq(jamaah_id))
        .filter(payment_schedules::status.eq("unpaid"))
        .select(payment_schedules::amount)
        .load::<i64>(conn)
        .await
        .map(|amounts| (!amounts.is_empty()).then(|| amounts.iter().sum()))
}

/// One recorded payment (from `payment.recorded`).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = payments, check_for_backend(diesel::pg::Pg))]
pub struct PaymentRow {
    /// Tenant.
    pub tenant_id: String,
    /// Platform id (one confirmation per id).
    pub payment_id: String,
    /// Who paid.
    pub jamaah_id: String,
    /// For which package.
    pub package_id: Option<String>,
    /// Whole rupiah paid.
    pub amount: i64,
    /// Still to pay afterwards.
    pub remaining_balance: i64,
    /// The platform's label.
    pub status_label: Option<String>,
}

/// Inserts a payment; `false` when this payment id was already recorded.
pub async fn insert_payment(conn: &mut AsyncPgConnection, row: &PaymentRow) -> QueryResult<bool> {
    diesel::insert_into(payments::table)
        .values(row)
        .on_conflict((payments::tenant_id, payments::payment_id))
        .do_nothing()
        .execute(conn)
        .await
        .map(|n| n == 1)
}

/// The jamaah's most recent payment (its `remaining_balance` is the current balance).
pub async fn latest_payment(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    jamaah_id: &str,
) -> QueryResult<Option<PaymentRow>> {
    payments::table
        .filter(payments::tenant_id.eq(tenant))
        .filter(payments::jamaah_id.eq(jamaah_id))
        .order(payments::recorded_at.desc())
        .select(PaymentRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// A reminder to plan. Re-planning the same `(tenant_id, kind, dedupe_key)` only moves an open
/// row (new due date, new window); a row already queued or sent is never touched again.
#[derive(Debug, Clone, PartialEq, Insertable)]
#[diesel(table_name = reminders)]
pub struct NewReminder {
    /// Tenant.
    pub tenant_id: String,
    /// `payment_reminder`, `payment_confirmation`, `departure_reminder` or `auto_reply`.
    pub kind: String,
    /// Unique within (tenant, kind), e.g. `<schedule_id>:-3`.
    pub dedupe_key: String,
    /// Deterministic send-job id.
    pub job_id: String,
    /// The recipient jamaah.
    pub jamaah_id: Option<String>,
    /// For payment reminders.
    pub schedule_id: Option<String>,
    /// For payment confirmations.
    pub payment_id: Option<String>,
    /// For departure reminders.
    pub package_id: Option<String>,
    /// Days relative to the due/departure date.
    pub offset_days: Option<i32>,
    /// First instant it may be sent.
    pub due_at: DateTime<Utc>,
    /// Not sent after this instant (superseded by the next offset, or the last offset's day is over).
    pub not_after: Option<DateTime<Utc>>,
    /// The template it uses.
    pub template_name: Option<String>,
    /// Initial status (`pending`, or `queued` for auto-replies published at once).
    pub status: String,
    /// Template parameters or reply text, when known at planning time.
    pub parameters: Option<Value>,
}

/// Plans reminders; returns how many rows were inserted or moved.
///
/// On conflict an open row takes the new due instant and relevance limit; a row cancelled
/// because its subject stopped needing it (schedule paid/cancelled, jamaah not ready) is reopened
/// (the platform changed its mind); a row already queued, sent or failed is left alone.
pub async fn plan_reminders(
    conn: &mut AsyncPgConnection,
    rows: &[NewReminder],
) -> QueryResult<usize> {
    use diesel::dsl::sql;
    if rows.is_empty() {
        return Ok(0);
    }
    const REOPENABLE: &str = "(reminders.status IN ('pending', 'waiting_template') OR \
        (reminders.status = 'cancelled' AND reminders.failure_reason IN ('schedule_paid', 'schedule_cancelled', 'not_ready')))";
    diesel::insert_into(reminders::table)
        .values(rows)
        .on_conflict((reminders::tenant_id, reminders::kind, reminders::dedupe_key))
        .do_update()
        .set((
            reminders::due_at.eq(sql::<Timestamptz>(&format!(
                "CASE WHEN {REOPENABLE} THEN excluded.due_at ELSE reminders.due_at END"
            ))),
            reminders::not_after.eq(sql::<Nullable<Timestamptz>>(&format!(
                "CASE WHEN {REOPENABLE} THEN excluded.not_after ELSE reminders.not_after END"
            ))),
            reminders::failure_reason.eq(sql::<Nullable<Text>>(&format!(
                "CASE WHEN {REOPENABLE} THEN NULL ELSE reminders.failure_reason END"
            ))),
            reminders::status.eq(sql::<Text>(&format!(
                "CASE WHEN reminders.status = 'cancelled' AND {REOPENABLE} THEN 'pending' ELSE reminders.status END"
            ))),
        ))
        .execute(conn)
        .await
}

/// Inserts one reminder unless its dedupe key exists; `true` when inserted (auto-replies).
pub async fn insert_reminder_once(
    conn: &mut AsyncPgConnection,
    row: &NewReminder,
) -> QueryResult<bool> {
    diesel::insert_into(reminders::table)
        .values(row)
        .on_conflict((reminders::tenant_id, reminders::kind, reminders::dedupe_key))
        .do_nothing()
        .execute(conn)
        .await
        .map(|n| n == 1)
}

/// Cancels the open reminders of one instalment (paid or cancelled); returns how many.
pub async fn cancel_open_schedule_reminders(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    schedule_id: &str,
    reason: &str,
) -> QueryResult<usize> {
    diesel::update(
        reminders::table
            .filter(reminders::tenant_id.eq(tenant))
            .filter(reminders::kind.eq("payment_reminder"))
            .filter(reminders::schedule_id.eq(schedule_id))
            .filter(reminders::status.eq_any(OPEN_STATUSES)),
    )
    .set((
        reminders::status.eq("cancelled"),
        reminders::failure_reason.eq(reason),
    ))
    .execute(conn)
    .await
}

/// Cancels a jamaah's open departure reminders (no longer `ready`, or moved to another package).
pub async fn cancel_open_departure_reminders(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    jamaah_id: &str,
    except_package: Option<&str>,
    reason: &str,
) -> QueryResult<usize> {
    let mut query = reminders::table
        .filter(reminders::tenant_id.eq(tenant))
        .filter(reminders::kind.eq("departure_reminder"))
        .filter(reminders::jamaah_id.eq(jamaah_id))
        .filter(reminders::status.eq_any(OPEN_STATUSES))
        .into_boxed();
    if let Some(package) = except_package {
        query = query.filter(reminders::package_id.ne(package));
    }
    let ids: Vec<i64> = query.select(reminders::id).load(conn).await?;
    diesel::update(reminders::table.filter(reminders::id.eq_any(&ids)))
        .set((
            reminders::status.eq("cancelled"),
            reminders::failure_reason.eq(reason),
        ))
        .execute(conn)
        .await
}

/// Deletes everything the scheduler holds about a jamaah (erasure); returns deleted rows.
pub async fn erase_jamaah(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    jamaah_id: &str,
) -> QueryResult<usize> {
    let mut n = diesel::delete(
        reminders::table
            .filter(reminders::tenant_id.eq(tenant))
            .filter(reminders::jamaah_id.eq(jamaah_id)),
    )
    .execute(conn)
    .await?;
    n += diesel::delete(
        payments::table
            .filter(payments::tenant_id.eq(tenant))
            .filter(payments::jamaah_id.eq(jamaah_id)),
    )
    .execute(conn)
    .await?;
    n += diesel::delete(
        payment_schedules::table
            .filter(payment_schedules::tenant_id.eq(tenant))
            .filter(payment_schedules::jamaah_id.eq(jamaah_id)),
    )
    .execute(conn)
    .await?;
    n += diesel::delete(jamaah::table.find((tenant, jamaah_id)))
        .execute(conn)
        .await?;
    Ok(n)
}

/// A reminder row as stored.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = reminders, check_for_backend(diesel::pg::Pg))]
pub struct ReminderRow {
    /// Surrogate id.
    pub id: i64,
    /// Tenant.
    pub tenant_id: String,
    /// Kind.
    pub kind: String,
    /// Dedupe key.
    pub dedupe_key: String,
    /// Send-job id.
    pub job_id: String,
    /// Recipient.
    pub jamaah_id: Option<String>,
    /// Instalment.
    pub schedule_id: Option<String>,
    /// Payment.
    pub payment_id: Option<String>,
    /// Package.
    pub package_id: Option<String>,
    /// Offset in days.
    pub offset_days: Option<i32>,
    /// Due instant.
    pub due_at: DateTime<Utc>,
    /// Relevance limit.
    pub not_after: Option<DateTime<Utc>>,
    /// Lifecycle status.
    pub status: String,
    /// Template name.
    pub template_name: Option<String>,
    /// Parameters sent.
    pub parameters: Option<Value>,
    /// Meta's id once accepted.
    pub wa_message_id: Option<String>,
    /// Why it failed or was cancelled.
    pub failure_reason: Option<String>,
    /// Times published.
    pub attempts: i32,
    /// When it was published.
    pub enqueued_at: Option<DateTime<Utc>>,
}

/// Every reminder of a tenant, oldest due first (tests, ops).
pub async fn list_reminders(
    conn: &mut AsyncPgConnection,
    tenant: &str,
) -> QueryResult<Vec<ReminderRow>> {
    reminders::table
        .filter(reminders::tenant_id.eq(tenant))
        .order((reminders::due_at.asc(), reminders::id.asc()))
        .select(ReminderRow::as_select())
        .load(conn)
        .await
}

/// The reminder behind a send-job id.
pub async fn find_reminder_by_job(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    job_id: &str,
) -> QueryResult<Option<ReminderRow>> {
    reminders::table
        .filter(reminders::tenant_id.eq(tenant))
        .filter(reminders::job_id.eq(job_id))
        .select(ReminderRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// One claimed reminder with everything needed to build its send-job (one joined query).
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct ClaimedReminder {
    /// Reminder id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Tenant.
    #[diesel(sql_type = Text)]
    pub tenant_id: String,
    /// Kind.
    #[diesel(sql_type = Text)]
    pub kind: String,
    /// Send-job id.
    #[diesel(sql_type = Text)]
    pub job_id: String,
    /// Status before the claim.
    #[diesel(sql_type = Text)]
    pub status: String,
    /// Recipient.
    #[diesel(sql_type = Nullable<Text>)]
    pub jamaah_id: Option<String>,
    /// Instalment.
    #[diesel(sql_type = Nullable<Text>)]
    pub schedule_id: Option<String>,
    /// Payment.
    #[diesel(sql_type = Nullable<Text>)]
    pub payment_id: Option<String>,
    /// The reminder's package (departure broadcasts; the instalment's package otherwise).
    #[diesel(sql_type = Nullable<Text>)]
    pub package_id: Option<String>,
    /// Offset in days.
    #[diesel(sql_type = Nullable<Integer>)]
    pub offset_days: Option<i32>,
    /// Due instant.
    #[diesel(sql_type = Timestamptz)]
    pub due_at: DateTime<Utc>,
    /// Relevance limit.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub not_after: Option<DateTime<Utc>>,
    /// Template name.
    #[diesel(sql_type = Nullable<Text>)]
    pub template_name: Option<String>,
    /// Parameters stored at planning time (auto-replies).
    #[diesel(sql_type = Nullable<Jsonb>)]
    pub parameters: Option<Value>,
    /// Jamaah name (None: jamaah not known yet).
    #[diesel(sql_type = Nullable<Text>)]
    pub jamaah_name: Option<String>,
    /// Jamaah phone.
    #[diesel(sql_type = Nullable<Text>)]
    pub phone_e164: Option<String>,
    /// Jamaah status.
    #[diesel(sql_type = Nullable<Text>)]
    pub jamaah_status: Option<String>,
    /// Jamaah's current package.
    #[diesel(sql_type = Nullable<Text>)]
    pub jamaah_package_id: Option<String>,
    /// Agent name.
    #[diesel(sql_type = Nullable<Text>)]
    pub agent_name: Option<String>,
    /// Agent phone.
    #[diesel(sql_type = Nullable<Text>)]
    pub agent_phone: Option<String>,
    /// Instalment due date.
    #[diesel(sql_type = Nullable<Date>)]
    pub due_date: Option<NaiveDate>,
    /// Instalment amount.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub schedule_amount: Option<i64>,
    /// Instalment status.
    #[diesel(sql_type = Nullable<Text>)]
    pub schedule_status: Option<String>,
    /// Package name.
    #[diesel(sql_type = Nullable<Text>)]
    pub package_name: Option<String>,
    /// Package departure date.
    #[diesel(sql_type = Nullable<Date>)]
    pub departure_date: Option<NaiveDate>,
    /// Payment amount.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub payment_amount: Option<i64>,
    /// Balance after the payment.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub remaining_balance: Option<i64>,
    /// Payment label.
    #[diesel(sql_type = Nullable<Text>)]
    pub status_label: Option<String>,
    /// The template's registry status (None: not in the registry).
    #[diesel(sql_type = Nullable<Text>)]
    pub template_status: Option<String>,
}

/// Claims up to `limit` due reminders, locking them until the caller's transaction ends; rows
/// another transaction holds are skipped, so concurrent ticks (replicas) never claim the same row.
///
/// Due means: open (`pending`, or `waiting_template` whose template is now `APPROVED`), `due_at <=
/// now`, and for the windowed kinds (payment and departure reminders) a tenant in
/// `window_open_tenants`. Expired rows are claimed too, so the caller can close them. Must run
/// inside a transaction.
pub async fn claim_due_reminders(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    window_open_tenants: &[String],
    template_language: &str,
    limit: i64,
) -> QueryResult<Vec<ClaimedReminder>> {
    diesel::sql_query(CLAIM_SQL)
        .bind::<Timestamptz, _>(now)
        .bind::<Array<Text>, _>(window_open_tenants)
        .bind::<Text, _>(template_language)
        .bind::<BigInt, _>(limit)
        .load(conn)
        .await
}

const CLAIM_SQL: &str = "
SELECT r.id, r.tenant_id, r.kind, r.job_id, r.status, r.jamaah_id, r.schedule_id, r.payment_id, r.package_id,
       r.offset_days, r.due_at, r.not_after, r.template_name, r.parameters,
       j.name AS jamaah_name, j.phone_e164, j.status AS jamaah_status, j.package_id AS jamaah_package_id,
       j.agent_name, j.agent_phone,
       s.due_date, s.amount AS schedule_amount, s.status AS schedule_status,
       p.name AS package_name, p.departure_date,
       pay.amount AS payment_amount, pay.remaining_balance, pay.status_label,
       t.status AS template_status
FROM reminders r
LEFT JOIN jamaah j ON j.tenant_id = r.tenant_id AND j.jamaah_id = r.jamaah_id
LEFT JOIN payment_schedules s ON s.tenant_id = r.tenant_id AND s.schedule_id = r.schedule_id
LEFT JOIN payments pay ON pay.tenant_id = r.tenant_id AND pay.payment_id = r.payment_id
LEFT JOIN packages p ON p.tenant_id = r.tenant_id
      AND p.package_id = COALESCE(r.package_id, s.package_id, pay.package_id, j.package_id)
LEFT JOIN templates t ON t.tenant_id = r.tenant_id AND t.name = r.template_name AND t.language = $3
WHERE r.status IN ('pending', 'waiting_template')
  AND r.due_at <= $1
  AND (r.kind NOT IN ('payment_reminder', 'departure_reminder') OR r.tenant_id = ANY($2))
  AND (r.status = 'pending' OR t.status = 'APPROVED')
ORDER BY r.due_at, r.id
LIMIT $4
FOR UPDATE OF r SKIP LOCKED";

/// Marks claimed reminders as published (`queued`), storing the parameters each was sent with.
pub async fn mark_reminders_queued(
    conn: &mut AsyncPgConnection,
    ids: &[i64],
    parameters: &[Value],
    now: DateTime<Utc>,
) -> QueryResult<usize> {
    diesel::sql_query(
        "UPDATE reminders SET status = 'queued', enqueued_at = $3, attempts = attempts + 1,
                parameters = u.parameters, failure_reason = NULL
         FROM (SELECT unnest($1::bigint[]) AS id, unnest($2::jsonb[]) AS parameters) u
         WHERE reminders.id = u.id",
    )
    .bind::<Array<BigInt>, _>(ids)
    .bind::<Array<Jsonb>, _>(parameters)
    .bind::<Timestamptz, _>(now)
    .execute(conn)
    .await
}

/// Sets the status (and reason) of reminders, e.g. `waiting_template`, `cancelled`, `failed`.
pub async fn set_reminders_status(
    conn: &mut AsyncPgConnection,
    ids: &[i64],
    status: &str,
    reason: Option<&str>,
) -> QueryResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    diesel::update(reminders::table.filter(reminders::id.eq_any(ids)))
        .set((
            reminders::status.eq(status),
            reminders::failure_reason.eq(reason),
        ))
        .execute(conn)
        .await
}

/// Why a reminder is held back while it stays `pending` (kept in `failure_reason`, which becomes
/// the cancellation reason if the hold outlives the reminder).
pub const HELD_FOR_UNKNOWN_JAMAAH: &str = "jamaah_unknown";

/// Moves reminders' `due_at` to `until` and records why (e.g. [`HELD_FOR_UNKNOWN_JAMAAH`]).
pub async fn defer_reminders(
    conn: &mut AsyncPgConnection,
    ids: &[i64],
    until: DateTime<Utc>,
    reason: &str,
) -> QueryResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    diesel::update(reminders::table.filter(reminders::id.eq_any(ids)))
        .set((
            reminders::due_at.eq(until),
            reminders::failure_reason.eq(reason),
        ))
        .execute(conn)
        .await
}

/// Seed of the jamaah lock's key hash (`hashtextextended(key, seed)`): keeps these keys apart from
/// the other one-key advisory locks the services take.
const JAMAAH_LOCK_SEED: i64 = 0x4a41_4d41; // "JAMA"

/// Takes the transaction-scoped lock of a jamaah, waiting for it. The jamaah's upsert takes it
/// first, so a tick that holds it (see [`try_lock_jamaah`]) knows the jamaah's events are not half
/// applied: either committed (the jamaah is there) or not started (their release of held
/// reminders will see what the tick commits).
pub async fn lock_jamaah(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    jamaah_id: &str,
) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, $3))")
        .bind::<Text, _>(tenant)
        .bind::<Text, _>(jamaah_id)
        .bind::<BigInt, _>(JAMAAH_LOCK_SEED)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

/// Takes the lock of [`lock_jamaah`] if it is free; false when the jamaah's upsert holds it.
pub async fn try_lock_jamaah(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    jamaah_id: &str,
) -> QueryResult<bool> {
    let answer: Locked = diesel::sql_query(
        "SELECT pg_try_advisory_xact_lock(hashtextextended($1 || '/' || $2, $3)) AS locked",
    )
    .bind::<Text, _>(tenant)
    .bind::<Text, _>(jamaah_id)
    .bind::<BigInt, _>(JAMAAH_LOCK_SEED)
    .get_result(conn)
    .await?;
    Ok(answer.locked)
}

/// Whether the jamaah is known (read now, so it sees what committed since the transaction began).
pub async fn jamaah_exists(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    jamaah_id: &str,
) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        jamaah::table
            .filter(jamaah::tenant_id.eq(tenant))
            .filter(jamaah::jamaah_id.eq(jamaah_id)),
    ))
    .get_result(conn)
    .await
}

/// Brings back the reminders of a jamaah that were deferred because the jamaah was not known yet
/// (their events arrived first): each is due again at `now`, so the next tick sends it instead of
/// waiting out the deferral. Returns how many.
pub async fn release_reminders_held_for_jamaah(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    jamaah_id: &str,
    now: DateTime<Utc>,
) -> QueryResult<usize> {
    diesel::update(
        reminders::table
            .filter(reminders::tenant_id.eq(tenant))
            .filter(reminders::jamaah_id.eq(jamaah_id))
            .filter(reminders::status.eq("pending"))
            .filter(reminders::failure_reason.eq(HELD_FOR_UNKNOWN_JAMAAH))
            .filter(reminders::due_at.gt(now)),
    )
    .set((
        reminders::due_at.eq(now),
        reminders::failure_reason.eq(None::<String>),
    ))
    .execute(conn)
    .await
}

/// Applies a delivery step to the reminder behind `job_id`, forward only
/// (queued < sent < delivered < read; `failed` only over queued/sent/delivered). Returns whether it moved.
pub async fn advance_reminder_status(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    job_id: &str,
    status: &str,
    wa_message_id: Option<&str>,
    failure_reason: Option<&str>,
) -> QueryResult<bool> {
    diesel::sql_query(
        "UPDATE reminders SET status = $3,
                wa_message_id = COALESCE($4, wa_message_id),
                failure_reason = COALESCE($5, failure_reason)
         WHERE tenant_id = $1 AND job_id = $2
           AND (CASE status WHEN 'pending' THEN 0 WHEN 'waiting_template' THEN 0 WHEN 'queued' THEN 1
                            WHEN 'sent' THEN 2 WHEN 'delivered' THEN 3 WHEN 'failed' THEN 4
                            WHEN 'read' THEN 5 ELSE 9 END)
             < (CASE $3 WHEN 'sent' THEN 2 WHEN 'delivered' THEN 3 WHEN 'failed' THEN 4
                        WHEN 'read' THEN 5 ELSE -1 END)
           AND status <> 'cancelled'",
    )
    .bind::<Text, _>(tenant)
    .bind::<Text, _>(job_id)
    .bind::<Text, _>(status)
    .bind::<Nullable<Text>, _>(wa_message_id)
    .bind::<Nullable<Text>, _>(failure_reason)
    .execute(conn)
    .await
    .map(|n| n == 1)
}

/// Due open reminders (gauge `wa_scheduler_reminders_due`).
pub async fn count_due_reminders(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
) -> QueryResult<i64> {
    reminders::table
        .filter(reminders::status.eq_any(OPEN_STATUSES))
        .filter(reminders::due_at.le(now))
        .count()
        .get_result(conn)
        .await
}

/// Reminders waiting for their template's approval, per tenant and template.
pub async fn count_waiting_on_template(
    conn: &mut AsyncPgConnection,
) -> QueryResult<Vec<(String, Option<String>, i64)>> {
    reminders::table
        .filter(reminders::status.eq("waiting_template"))
        .group_by((reminders::tenant_id, reminders::template_name))
        .select((
            reminders::tenant_id,
            reminders::template_name,
            diesel::dsl::count_star(),
        ))
        .load(conn)
        .await
}

/// A template of the registry.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = templates, check_for_backend(diesel::pg::Pg))]
pub struct TemplateRow {
    /// Tenant (each tenant's WABA has its own copy).
    pub tenant_id: String,
    /// Template name.
    pub name: String,
    /// Language code.
    pub language: String,
    /// `UTILITY`, `MARKETING` or `AUTHENTICATION`.
    pub category: String,
    /// Body with `{{1}}`… placeholders.
    pub body_text: String,
    /// Example values, one per placeholder.
    pub example_values: Option<Value>,
    /// Number of body placeholders.
    pub parameter_count: i32,
    /// Meta's status word (or `NOT_SUBMITTED`).
    pub status: String,
    /// Why Meta rejected it.
    pub rejection_reason: Option<String>,
    /// Meta's id once submitted.
    pub meta_template_id: Option<i64>,
    /// When it was submitted.
    pub submitted_at: Option<DateTime<Utc>>,
}

/// Adds registry rows that do not exist yet; existing rows (and their status) are kept, but
/// their body text, category and examples follow the code.
pub async fn seed_templates(
    conn: &mut AsyncPgConnection,
    rows: &[TemplateRow],
) -> QueryResult<usize> {
    use diesel::upsert::excluded;
    diesel::insert_into(templates::table)
        .values(rows)
        .on_conflict((templates::tenant_id, templates::name, templates::language))
        .do_update()
        .set((
            templates::category.eq(excluded(templates::category)),
            templates::body_text.eq(excluded(templates::body_text)),
            templates::example_values.eq(excluded(templates::example_values)),
            templates::parameter_count.eq(excluded(templates::parameter_count)),
        ))
        .execute(conn)
        .await
}

/// The registry of one tenant, by name.
pub async fn list_templates(
    conn: &mut AsyncPgConnection,
    tenant: &str,
) -> QueryResult<Vec<TemplateRow>> {
    templates::table
        .filter(templates::tenant_id.eq(tenant))
        .order((templates::name.asc(), templates::language.asc()))
        .select(TemplateRow::as_select())
        .load(conn)
        .await
}

/// Records a status Meta reported for a template; returns whether a registry row matched.
pub async fn update_template_status(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    name: &str,
    language: &str,
    status: &str,
    rejection_reason: Option<&str>,
    meta_template_id: Option<i64>,
) -> QueryResult<bool> {
    diesel::update(templates::table.find((tenant, name, language)))
        .set((
            templates::status.eq(status),
            templates::rejection_reason.eq(rejection_reason),
            templates::meta_template_id.eq(diesel::dsl::sql::<Nullable<BigInt>>("COALESCE(")
                .bind::<Nullable<BigInt>, _>(meta_template_id)
                .sql(", meta_template_id)")),
        ))
        .execute(conn)
        .await
        .map(|n| n == 1)
}

/// Records that a template was submitted to Meta.
pub async fn mark_template_submitted(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    name: &str,
    language: &str,
    status: &str,
    meta_template_id: Option<i64>,
    at: DateTime<Utc>,
) -> QueryResult<bool> {
    diesel::update(templates::table.find((tenant, name, language)))
        .set((
            templates::status.eq(status),
            templates::meta_template_id.eq(meta_template_id),
            templates::submitted_at.eq(at),
            templates::rejection_reason.eq(None::<String>),
        ))
        .execute(conn)
        .await
        .map(|n| n == 1)
}

/// One keyword auto-reply.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = auto_replies, check_for_backend(diesel::pg::Pg))]
pub struct AutoReplyRow {
    /// Tenant.
    pub tenant_id: String,
    /// Lower-case keyword.
    pub keyword: String,
    /// Reply text with `{name}`, `{package}`, `{balance}`, `{departure_date}` placeholders.
    pub reply: String,
    /// Disabled rows never answer.
    pub enabled: bool,
}

/// Adds the default keywords a tenant does not have yet (operators' edits are kept).
pub async fn seed_auto_replies(
    conn: &mut AsyncPgConnection,
    rows: &[AutoReplyRow],
) -> QueryResult<usize> {
    diesel::insert_into(auto_replies::table)
        .values(rows)
        .on_conflict((auto_replies::tenant_id, auto_replies::keyword))
        .do_nothing()
        .execute(conn)
        .await
}

/// Sets (or adds) a keyword's reply, e.g. from the ops CLI.
pub async fn upsert_auto_reply(
    conn: &mut AsyncPgConnection,
    row: &AutoReplyRow,
) -> QueryResult<()> {
    diesel::insert_into(auto_replies::table)
        .values(row)
        .on_conflict((auto_replies::tenant_id, auto_replies::keyword))
        .do_update()
        .set((
            auto_replies::reply.eq(&row.reply),
            auto_replies::enabled.eq(row.enabled),
        ))
        .execute(conn)
        .await
        .map(|_| ())
}

/// The enabled reply for `keyword` (already lower-cased), if any.
pub async fn find_auto_reply(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    keyword: &str,
) -> QueryResult<Option<AutoReplyRow>> {
    auto_replies::table
        .find((tenant, keyword))
        .filter(auto_replies::enabled.eq(true))
        .select(AutoReplyRow::as_select())
        .first(conn)
        .await
        .optional()
}

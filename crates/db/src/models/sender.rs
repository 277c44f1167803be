//! Sender tables: `send_jobs` (idempotency and outcome of every send-job), `send_attempts` (one row
//! per Graph call), `customer_windows` (the 24-hour window), `rate_limits` (the sliding-window limiter shared
//! by every sender replica), plus the sender's reads of `templates` and `tenants.paused_at`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Double, Integer, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::schema::{customer_windows, send_attempts, send_jobs, templates, tenants};

/// A `send_jobs` row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = send_jobs, check_for_backend(diesel::pg::Pg))]
pub struct SendJobRow {
    /// The job's tenant.
    pub tenant_id: String,
    /// The producer's idempotency key.
    pub job_id: String,
    /// `received`, `sending`, `accepted`, `failed` or `unknown`.
    pub state: String,
    /// Normalised recipient.
    pub to_e164: Option<String>,
    /// `interactive`, `transactional` or `bulk`.
    pub priority: String,
    /// Graph `type` word.
    pub message_type: String,
    /// Echoed reference kind.
    pub reference_kind: Option<String>,
    /// Echoed reference id.
    pub reference_id: Option<String>,
    /// Meta's id once accepted.
    pub wa_message_id: Option<String>,
    /// Graph calls made so far.
    pub attempts: i32,
    /// Last Graph error code.
    pub last_meta_code: Option<i64>,
    /// Final failure word.
    pub failure_reason: Option<String>,
    /// Final failure detail.
    pub failure_detail: Option<String>,
    /// The job's deadline.
    pub expires_at: Option<DateTime<Utc>>,
    /// First intake.
    pub first_seen_at: DateTime<Utc>,
    /// Start of the latest Graph call.
    pub sending_started_at: Option<DateTime<Utc>>,
    /// When Meta accepted it.
    pub accepted_at: Option<DateTime<Utc>>,
    /// When it failed for good.
    pub failed_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// What intake records about a new job.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = send_jobs)]
pub struct NewSendJob<'a> {
    /// See [`SendJobRow::tenant_id`].
    pub tenant_id: &'a str,
    /// See [`SendJobRow::job_id`].
    pub job_id: &'a str,
    /// See [`SendJobRow::to_e164`].
    pub to_e164: Option<&'a str>,
    /// See [`SendJobRow::priority`].
    pub priority: &'a str,
    /// See [`SendJobRow::message_type`].
    pub message_type: &'a str,
    /// See [`SendJobRow::reference_kind`].
    pub reference_kind: Option<&'a str>,
    /// See [`SendJobRow::reference_id`].
    pub reference_id: Option<&'a str>,
    /// See [`SendJobRow::expires_at`].
    pub expires_at: Option<DateTime<Utc>>,
}

/// How one Graph call ended, for `send_attempts`.
#[derive(Debug, Clone)]
pub struct AttemptResult<'a> {
    /// HTTP status, when an answer came.
    pub http_status: Option<i32>,
    /// Graph error code, when Meta gave one.
    pub meta_code: Option<i64>,
    /// Sender's word: `accepted`, `transient`, `permanent`, `auth`, `unknown`.
    pub outcome: &'a str,
    /// Detail (never secrets, never message bodies).
    pub detail: Option<&'a str>,
    /// Meta's trace id for support tickets.
    pub fbtrace_id: Option<&'a str>,
}

impl SendJobRow {
    /// Inserts the job unless `(tenant_id, job_id)` exists, and returns the stored row either way
    /// (so a republished job sees the state of the first copy).
    pub async fn insert_or_get(
        conn: &mut AsyncPgConnection,
        new: &NewSendJob<'_>,
    ) -> QueryResult<SendJobRow> {
        let inserted = diesel::insert_into(send_jobs::table)
            .values(new)
            .on_conflict((send_jobs::tenant_id, send_jobs::job_id))
            .do_nothing()
            .returning(SendJobRow::as_returning())
            .get_result(conn)
            .await
            .optional()?;
        match inserted {
            Some(row) => Ok(row),
            None => Self::get(conn, new.tenant_id, new.job_id).await,
        }
    }

    /// The job's row.
    pub async fn get(
        conn: &mut AsyncPgConnection,
        tenant_id: &str,
        job_id: &str,
    ) -> QueryResult<SendJobRow> {
        send_jobs::table
            .find((tenant_id, job_id))
            .select(SendJobRow::as_select())
            .first(conn)
            .await
    }

    /// Claims the job for a Graph call: only from `received` (never twice at once, never after an
    /// outcome); bumps `attempts` and opens a `send_attempts` row. `None` when the job is not in
    /// `received` any more.
    pub async fn begin_attempt(
        conn: &mut AsyncPgConnection,
        tenant_id: &str,
        job_id: &str,
    ) -> QueryResult<Option<SendJobRow>> {
        let row = diesel::update(send_jobs::table.find((tenant_id, job_id)))
            .filter(send_jobs::state.eq("received"))
            .set((
                send_jobs::state.eq("sending"),
                send_jobs::attempts.eq(send_jobs::attempts + 1),
                send_jobs::sending_started_at.eq(diesel::dsl::now),
            ))
            .returning(SendJobRow::as_returning())
            .get_result(conn)
            .await
            .optional()?;
        if let Some(row) = &row {
            diesel::insert_into(send_attempts::table)
                .values((
                    send_attempts::tenant_id.eq(tenant_id),
                    send_attempts::job_id.eq(job_id),
                    send_attempts::attempt.eq(row.attempts),
                ))
                .execute(conn)
                .await?;
        }
        Ok(row)
    }

    /// Closes the current attempt row.
    pub async fn finish_attempt(
        conn: &mut AsyncPgConnection,
        tenant_id: &str,
        job_id: &str,
        attempt: i32,
        result: &AttemptResult<'_>,
    ) -> QueryResult<()> {
        diesel::update(
            send_attempts::table
                .filter(send_attempts::tenant_id.eq(tenant_id))
                .filter(send_attempts::job_id.eq(job_id))
                .filter(send_attempts::attempt.eq(attempt)),
        )
        .set((
            send_attempts::finished_at.eq(diesel::dsl::now),
            send_attempts::http_status.eq(result.http_status),
            send_attempts::meta_code.eq(result.meta_code),
            send_attempts::outcome.eq(result.outcome),
            send_attempts::detail.eq(result.detail),
            send_attempts::fbtrace_id.eq(result.fbtrace_id),
        ))
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Meta accepted it: store the wamid (only from `sending` or `unknown`). Returns the row when
    /// this call made the change.
    pub async fn mark_accepted(
        conn: &mut AsyncPgConnection,
        tenant_id: &str,
        job_id: &str,
        wa_message_id: &str,
        accepted_at: DateTime<Utc>,
    ) -> QueryResult<Option<SendJobRow>> {
        diesel::update(send_jobs::table.find((tenant_id, job_id)))
            .filter(send_jobs::state.eq_any(["sending", "unknown"]))
            .set((
                send_jobs::state.eq("accepted"),
                send_jobs::wa_message_id.eq(wa_message_id),
                send_jobs::accepted_at.eq(accepted_at),
            ))
            .returning(SendJobRow::as_returning())
            .get_result(conn)
            .await
            .optional()
    }

    /// Final failure (from any non-final state). Returns the row when this call made the change.
    pub async fn mark_failed(
        conn: &mut AsyncPgConnection,
        tenant_id: &str,
        job_id: &str,
        reason: &str,
        meta_code: Option<i64>,
        detail: &str,
    ) -> QueryResult<Option<SendJobRow>> {
        diesel::update(send_jobs::table.find((tenant_id, job_id)))
            .filter(send_jobs::state.eq_any(["received", "sending", "unknown"]))
            .set((
                send_jobs::state.eq("failed"),
                send_jobs::failure_reason.eq(reason),
                send_jobs::failure_detail.eq(detail),
                send_jobs::last_meta_code.eq(meta_code),
                send_jobs::failed_at.eq(diesel::dsl::now),
            ))
            .returning(SendJobRow::as_returning())
            .get_result(conn)
            .await
            .optional()
    }

    /// A transient failure: back to `received` so a later delivery may try again.
    pub async fn mark_retryable(
        conn: &mut AsyncPgConnection,
        tenant_id: &str,
        job_id: &str,
        meta_code: Option<i64>,
    ) -> QueryResult<()> {
        diesel::update(send_jobs::table.find((tenant_id, job_id)))
            .filter(send_jobs::state.eq("sending"))
            .set((
                send_jobs::state.eq("received"),
                send_jobs::last_meta_code.eq(meta_code),
            ))
            .execute(conn)
            .await?;
        Ok(())
    }

    /// The call may have reached Meta (timeout after sending, or a crash mid-call): never resend
    /// blindly; a status webhook or the unknown-outcome timeout settles it.
    pub async fn mark_unknown(
        conn: &mut AsyncPgConnection,
        tenant_id: &str,
        job_id: &str,
    ) -> QueryResult<()> {
        diesel::update(send_jobs::table.find((tenant_id, job_id)))
            .filter(send_jobs::state.eq("sending"))
            .set(send_jobs::state.eq("unknown"))
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Jobs in `unknown` (or stuck in `sending`) whose last call started before `cutoff`: claimed
    /// as `failed` with `reason` in one statement, so only one replica reports each.
    pub async fn fail_stale_unknown(
        conn: &mut AsyncPgConnection,
        cutoff: DateTime<Utc>,
        reason: &str,
        detail: &str,
    ) -> QueryResult<Vec<SendJobRow>> {
        diesel::update(
            send_jobs::table
                .filter(send_jobs::state.eq_any(["unknown", "sending"]))
                .filter(send_jobs::sending_started_at.lt(cutoff)),
        )
        .set((
            send_jobs::state.eq("failed"),
            send_jobs::failure_reason.eq(reason),
            send_jobs::failure_detail.eq(detail),
            send_jobs::failed_at.eq(diesel::dsl::now),
        ))
        .returning(SendJobRow::as_returning())
        .get_results(conn)
        .await
    }

    /// Undoes [`SendJobRow::fail_stale_unknown`] for one job whose `outbound.failed` could not be
    /// published: back to `unknown` (still stale), so the next settler pass fails and publishes it
    /// again instead of leaving the platform without an outcome.
    pub async fn reopen_unknown(
        conn: &mut AsyncPgConnection,
        tenant_id: &str,
        job_id: &str,
    ) -> QueryResult<()> {
        diesel::update(
            send_jobs::table
                .find((tenant_id, job_id))
                .filter(send_jobs::state.eq("failed")),
        )
        .set((
            send_jobs::state.eq("unknown"),
            send_jobs::failure_reason.eq(None::<String>),
            send_jobs::failure_detail.eq(None::<String>),
            send_jobs::failed_at.eq(None::<DateTime<Utc>>),
        ))
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// What [`claim_for_send`] returns: the attempt number of the call about to be made and when the
/// job was first seen (for the queue-lag metric).
#[derive(Debug, Clone, QueryableByName)]
pub struct Claim {
    /// Graph calls including the one about to be made.
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub attempts: i32,
    /// First intake of the job.
    #[diesel(sql_type = Timestamptz)]
    pub first_seen_at: DateTime<Utc>,
}

/// [`SendJobRow::begin_attempt`] in one round trip (the hot path): `received` → `sending`,
/// `attempts + 1`, attempt row opened. `None` when the job is missing or not `received`.
pub async fn claim_for_send(
    conn: &mut AsyncPgConnection,
    tenant_id: &str,
    job_id: &str,
) -> QueryResult<Option<Claim>> {
    diesel::sql_query(
        "WITH claimed AS ( \
             UPDATE send_jobs SET state = 'sending', attempts = attempts + 1, sending_started_at = now() \
             WHERE tenant_id = $1 AND job_id = $2 AND state = 'received' \
             RETURNING tenant_id, job_id, attempts, first_seen_at), \
         opened AS ( \
             INSERT INTO send_attempts (tenant_id, job_id, attempt) \
             SELECT tenant_id, job_id, attempts FROM claimed) \
         SELECT attempts, first_seen_at FROM claimed",
    )
    .bind::<Text, _>(tenant_id)
    .bind::<Text, _>(job_id)
    .get_result(conn)
    .await
    .optional()
}

/// [`SendJobRow::insert_or_get`] for many jobs in one round trip (intake's hot path): inserts the
/// ones not recorded yet and returns the stored row of every `(tenant_id, job_id)` given, in no
/// particular order (one row per distinct key). A key whose row is being inserted by another
/// transaction at the same moment may be missing from the answer: callers look those up again.
pub async fn record_send_jobs(
    conn: &mut AsyncPgConnection,
    jobs: &[NewSendJob<'_>],
) -> QueryResult<Vec<SendJobRow>> {
    // `inserted` and the existing rows come from one snapshot: a row is either inserted by this
    // statement (and returned by it) or was there before (and found by the second branch).
    diesel::sql_query(
        "WITH input AS ( \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                                  $6::text[], $7::text[], $8::timestamptz[]) \
                 AS i(tenant_id, job_id, to_e164, priority, message_type, reference_kind, reference_id, expires_at)), \
         inserted AS ( \
             INSERT INTO send_jobs (tenant_id, job_id, to_e164, priority, message_type, reference_kind, reference_id, expires_at) \
             SELECT tenant_id, job_id, to_e164, priority, message_type, reference_kind, reference_id, expires_at FROM input \
             ON CONFLICT (tenant_id, job_id) DO NOTHING \
             RETURNING *) \
         SELECT * FROM inserted \
         UNION ALL \
         SELECT s.* FROM send_jobs s \
         WHERE (s.tenant_id, s.job_id) IN (SELECT tenant_id, job_id FROM input) \
           AND NOT EXISTS (SELECT 1 FROM inserted n WHERE n.tenant_id = s.tenant_id AND n.job_id = s.job_id)",
    )
    .bind::<Array<Text>, _>(jobs.iter().map(|j| j.tenant_id).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(jobs.iter().map(|j| j.job_id).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(jobs.iter().map(|j| j.to_e164).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(jobs.iter().map(|j| j.priority).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(jobs.iter().map(|j| j.message_type).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(jobs.iter().map(|j| j.reference_kind).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(jobs.iter().map(|j| j.reference_id).collect::<Vec<_>>())
    .bind::<Array<Nullable<Timestamptz>>, _>(jobs.iter().map(|j| j.expires_at).collect::<Vec<_>>())
    .load(conn)
    .await
}

/// One job claimed by [`claim_many_for_send`].
#[derive(Debug, Clone, QueryableByName)]
pub struct ClaimedJob {
    /// The job's tenant.
    #[diesel(sql_type = Text)]
    pub tenant_id: String,
    /// The job.
    #[diesel(sql_type = Text)]
    pub job_id: String,
    /// Graph calls including the one about to be made.
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    /// First intake of the job.
    #[diesel(sql_type = Timestamptz)]
    pub first_seen_at: DateTime<Utc>,
}

/// [`claim_for_send`] for many jobs in one round trip (dispatch's hot path, batched across
/// concurrent sends): each `(tenant_id, job_id)` still `received` moves to `sending` with
/// `attempts + 1` and an open attempt row. Returns the jobs claimed; a key given twice is claimed
/// once (one row), so callers must hand the claim to one of its requesters only.
pub async fn claim_many_for_send(
    conn: &mut AsyncPgConnection,
    keys: &[(&str, &str)],
) -> QueryResult<Vec<ClaimedJob>> {
    diesel::sql_query(
        "WITH input AS (SELECT DISTINCT * FROM unnest($1::text[], $2::text[]) AS i(tenant_id, job_id)), \
         claimed AS ( \
             UPDATE send_jobs s SET state = 'sending', attempts = s.attempts + 1, sending_started_at = now() \
             FROM input i \
             WHERE s.tenant_id = i.tenant_id AND s.job_id = i.job_id AND s.state = 'received' \
             RETURNING s.tenant_id, s.job_id, s.attempts, s.first_seen_at), \
         opened AS ( \
             INSERT INTO send_attempts (tenant_id, job_id, attempt) \
             SELECT tenant_id, job_id, attempts FROM claimed) \
         SELECT tenant_id, job_id, attempts, first_seen_at FROM claimed",
    )
    .bind::<Array<Text>, _>(keys.iter().map(|(t, _)| *t).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(keys.iter().map(|(_, j)| *j).collect::<Vec<_>>())
    .load(conn)
    .await
}

/// One accepted send for [`record_many_accepted`].
#[derive(Debug, Clone)]
pub struct AcceptedSend<'a> {
    /// The job's tenant.
    pub tenant_id: &'a str,
    /// The job.
    pub job_id: &'a str,
    /// The attempt Meta accepted.
    pub attempt: i32,
    /// Meta's message id.
    pub wa_message_id: &'a str,
    /// When Meta answered.
    pub accepted_at: DateTime<Utc>,
}

/// A job key returned by the batched statements.
#[derive(Debug, Clone, PartialEq, Eq, Hash, QueryableByName)]
pub struct JobKey {
    /// The job's tenant.
    #[diesel(sql_type = Text)]
    pub tenant_id: String,
    /// The job.
    #[diesel(sql_type = Text)]
    pub job_id: String,
}

/// [`record_accepted`] for many sends in one round trip: stores each wamid (from `sending` or
/// `unknown`) and closes its attempt row. Returns the jobs this call moved to `accepted`.
pub async fn record_many_accepted(
    conn: &mut AsyncPgConnection,
    sends: &[AcceptedSend<'_>],
) -> QueryResult<Vec<JobKey>> {
    diesel::sql_query(
        "WITH input AS ( \
             SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::timestamptz[]) \
                 AS i(tenant_id, job_id, attempt, wa_message_id, accepted_at)), \
         accepted AS ( \
             UPDATE send_jobs s SET state = 'accepted', wa_message_id = i.wa_message_id, accepted_at = i.accepted_at \
             FROM input i \
             WHERE s.tenant_id = i.tenant_id AND s.job_id = i.job_id AND s.state IN ('sending', 'unknown') \
             RETURNING s.tenant_id, s.job_id), \
         closed AS ( \
             UPDATE send_attempts a SET finished_at = now(), http_status = 200, outcome = 'accepted' \
             FROM input i \
             WHERE a.tenant_id = i.tenant_id AND a.job_id = i.job_id AND a.attempt = i.attempt) \
         SELECT tenant_id, job_id FROM accepted",
    )
    .bind::<Array<Text>, _>(sends.iter().map(|s| s.tenant_id).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(sends.iter().map(|s| s.job_id).collect::<Vec<_>>())
    .bind::<Array<Integer>, _>(sends.iter().map(|s| s.attempt).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(sends.iter().map(|s| s.wa_message_id).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(sends.iter().map(|s| s.accepted_at).collect::<Vec<_>>())
    .load(conn)
    .await
}

#[derive(QueryableByName)]
struct Changed {
    #[diesel(sql_type = BigInt)]
    changed: i64,
}

/// Meta accepted attempt `attempt`: stores the wamid (from `sending` or `unknown`) and closes the
/// attempt row, in one round trip. True when this call moved the job to `accepted`.
pub async fn record_accepted(
    conn: &mut AsyncPgConnection,
    tenant_id: &str,
    job_id: &str,
    attempt: i32,
    wa_message_id: &str,
    accepted_at: DateTime<Utc>,
) -> QueryResult<bool> {
    let changed: Changed = diesel::sql_query(
        "WITH accepted AS ( \
             UPDATE send_jobs SET state = 'accepted', wa_message_id = $4, accepted_at = $5 \
             WHERE tenant_id = $1 AND job_id = $2 AND state IN ('sending', 'unknown') RETURNING 1), \
         closed AS ( \
             UPDATE send_attempts SET finished_at = now(), http_status = 200, outcome = 'accepted' \
             WHERE tenant_id = $1 AND job_id = $2 AND attempt = $3) \
         SELECT count(*) AS changed FROM accepted",
    )
    .bind::<Text, _>(tenant_id)
    .bind::<Text, _>(job_id)
    .bind::<diesel::sql_types::Integer, _>(attempt)
    .bind::<Text, _>(wa_message_id)
    .bind::<Timestamptz, _>(accepted_at)
    .get_result(conn)
    .await?;
    Ok(changed.changed > 0)
}

/// Records an inbound message: the window is the latest inbound time (replays and out-of-order
/// events never move it backwards).
pub async fn record_inbound(
    conn: &mut AsyncPgConnection,
    tenant_id: &str,
    wa_id: &str,
    at: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::insert_into(customer_windows::table)
        .values((
            customer_windows::tenant_id.eq(tenant_id),
            customer_windows::wa_id.eq(wa_id),
            customer_windows::last_inbound_at.eq(at),
        ))
        .on_conflict((customer_windows::tenant_id, customer_windows::wa_id))
        .do_update()
        .set(
            customer_windows::last_inbound_at.eq(diesel::dsl::sql::<Timestamptz>(
                "GREATEST(customer_windows.last_inbound_at, excluded.last_inbound_at)",
            )),
        )
        .execute(conn)
        .await?;
    Ok(())
}

/// The recipient's last inbound message time, if we ever saw one.
pub async fn last_inbound(
    conn: &mut AsyncPgConnection,
    tenant_id: &str,
    wa_id: &str,
) -> QueryResult<Option<DateTime<Utc>>> {
    customer_windows::table
        .find((tenant_id, wa_id))
        .select(customer_windows::last_inbound_at)
        .first(conn)
        .await
        .optional()
}

/// What the template registry knows about `(tenant, name, language)`: `(status, parameter_count)`.
pub async fn template_status(
    conn: &mut AsyncPgConnection,
    tenant_id: &str,
    name: &str,
    language: &str,
) -> QueryResult<Option<(String, i32)>> {
    templates::table
        .find((tenant_id, name, language))
        .select((templates::status, templates::parameter_count))
        .first(conn)
        .await
        .optional()
}

#[derive(QueryableByName)]
struct Reserved {
    #[diesel(sql_type = Array<Double>)]
    delays: Vec<f64>,
    #[diesel(sql_type = BigInt)]
    allowance_us: i64,
    #[diesel(sql_type = BigInt)]
    clock_us: i64,
}

/// Send slots reserved by [`reserve_send_slots`].
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    /// How many seconds from now each slot is, ascending.
    pub delays: Vec<f64>,
    /// How late after its slot each send may still start.
    pub allowance: Duration,
    /// The database clock reading (µs since the Unix epoch) the delays count from.
    pub clock_us: i64,
}

/// The shape of the send slots of one key (one business phone number), shared by all replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotWindow {
    /// At most this many slots in any `window`.
    pub cap: u32,
    /// The sliding window (a second plus the jitter margin).
    pub window: Duration,
    /// The least time between two consecutive slots.
    pub spacing: Duration,
    /// How late after its slot a send may start when the number runs near its cap: our share of
    /// the window's margin (the window rule keeps `window - tolerance` between ends).
    pub tolerance: Duration,
    /// How late it may start when the number runs far below its cap (at least `tolerance`).
    pub loose_allowance: Duration,
}

impl SlotWindow {
    /// From the first to the last of `n` slots taken back to back from an idle log (the fastest
    /// the rule allows): slot `k` is `k / cap` windows plus `k % cap` spacings in, unless the
    /// spacing alone is slower.
    pub fn span_from_idle(&self, n: u32) -> Duration {
        let Some(last) = n.checked_sub(1) else {
            return Duration::ZERO;
        };
        let cap = self.cap.max(1);
        (self.window * (last / cap) + self.spacing * (last % cap)).max(self.spacing * last)
    }
}

/// Sliding-window reservation shared by all replicas: reserves `count` send slots for `key`, none
/// earlier than `lead` from now (so the caller has time to prepare each send before its slot),
/// at least `shape.spacing` apart, and never more than `shape.cap` of them in any
/// `shape.window - shape.tolerance` however late within their allowance their sends start. The
/// allowance is `shape.loose_allowance` while the slots still binding plus `demand` (the sends the
/// caller expects within a window) are at most a quarter of the cap, else `shape.tolerance`.
/// Measured on the database clock, so replicas on different hosts agree; the row lock serialises
/// concurrent callers, so the window holds whichever replica asks (function `reserve_send_slots`,
/// migrations `2026-11-28-090000_rate_limits_slot_allowance` and
/// `2026-11-29-090000_rate_limits_clock_reading`).
pub async fn reserve_send_slots(
    conn: &mut AsyncPgConnection,
    key: &str,
    shape: SlotWindow,
    count: u32,
    demand: u32,
    lead: Duration,
) -> QueryResult<Reservation> {
    let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    let int = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    let reserved: Reserved = diesel::sql_query(
        "SELECT delays, allowance_us, clock_us FROM reserve_send_slots($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind::<Text, _>(key)
    .bind::<Integer, _>(int(shape.cap))
    .bind::<BigInt, _>(micros(shape.window))
    .bind::<BigInt, _>(micros(shape.spacing))
    .bind::<BigInt, _>(micros(shape.tolerance))
    .bind::<BigInt, _>(micros(shape.loose_allowance))
    .bind::<Integer, _>(int(count))
    .bind::<Integer, _>(int(demand))
    .bind::<BigInt, _>(micros(lead))
    .get_result(conn)
    .await?;
    Ok(Reservation {
        delays: reserved.delays,
        allowance: Duration::from_micros(u64::try_from(reserved.allowance_us).unwrap_or(0)),
        clock_us: reserved.clock_us,
    })
}

/// Makes `conn` a session for sending leases (see [`take_send_leases`]): PostgreSQL ends it once
/// it has been idle for `ttl` (`idle_session_timeout`, PostgreSQL 14+), which releases its leases,
/// so a holder that froze or lost its network hands its numbers on without anyone's help.
pub async fn start_lease_session(conn: &mut AsyncPgConnection, ttl: Duration) -> QueryResult<()> {
    diesel::sql_query("SELECT set_config('idle_session_timeout', $1, false)")
        .bind::<Text, _>(format!("{}ms", ttl.as_millis()))
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(QueryableByName)]
struct TakenLease {
    #[diesel(sql_type = Text)]
    key: String,
}

/// The advisory lock class of sending leases (`"WASE"`): the two-key lock space, apart from every
/// one-key (`bigint`) advisory lock the services take.
const SEND_LEASE_LOCK_CLASS: i32 = 0x5741_5345;

/// Takes for this session every lease among `keys` that no other session holds, and returns the
/// ones it took. A lease is a session-level advisory lock `(SEND_LEASE_LOCK_CLASS, hashtext(key))`:
/// it stays with the session until the session ends. Two keys that hash alike are one lock, so
/// their numbers are always held together (by the same session: the lock is re-entrant), which is
/// harmless. Pass only keys the session does not hold yet (taking one twice would stack the lock).
/// With no keys it still proves the session alive.
pub async fn take_send_leases(
    conn: &mut AsyncPgConnection,
    keys: &[String],
) -> QueryResult<Vec<String>> {
    let taken: Vec<TakenLease> = diesel::sql_query(
        "SELECT k AS key FROM unnest($1::text[]) AS k WHERE pg_try_advisory_lock($2, hashtext(k))",
    )
    .bind::<Array<Text>, _>(keys)
    .bind::<Integer, _>(SEND_LEASE_LOCK_CLASS)
    .load(conn)
    .await?;
    Ok(taken.into_iter().map(|t| t.key).collect())
}

/// Pauses a tenant's sending (auth error); keeps the first pause time. True when it was not paused.
pub async fn pause_tenant(
    conn: &mut AsyncPgConnection,
    tenant_id: &str,
    reason: &str,
) -> QueryResult<bool> {
    let changed = diesel::update(tenants::table.find(tenant_id))
        .filter(tenants::paused_at.is_null())
        .set((
            tenants::paused_at.eq(diesel::dsl::now),
            tenants::pause_reason.eq(reason),
        ))
        .execute(conn)
        .await?;
    Ok(changed > 0)
}

/// Resumes a tenant's sending after a successful probe.
pub async fn resume_tenant(conn: &mut AsyncPgConnection, tenant_id: &str) -> QueryResult<()> {
    diesel::update(tenants::table.find(tenant_id))
        .set((
            tenants::paused_at.eq(None::<DateTime<Utc>>),
            tenants::pause_reason.eq(None::<String>),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether the tenant is paused (shared by every replica).
pub async fn is_tenant_paused(conn: &mut AsyncPgConnection, tenant_id: &str) -> QueryResult<bool> {
    let paused: Option<Option<DateTime<Utc>>> = tenants::table
        .find(tenant_id)
        .select(tenants::paused_at)
        .first(conn)
        .await
        .optional()?;
    Ok(paused.flatten().is_some())
}

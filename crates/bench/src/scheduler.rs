//! reminder-scheduler benchmark: 1,000,000 unpaid instalments with their 4,000,000 planned
//! reminders (offsets -7, -3, -1, 0) in the database, due dates spread over a year, and the time
//! one tick takes to find every reminder due this morning (≈11,000) and enqueue its send-job:
//! joined claim with `FOR UPDATE SKIP LOCKED`, parameters, publish with confirms, mark `queued`.
//!
//! Baseline in the same run and on the same rows: the raw claim alone (`SELECT id … FOR UPDATE
//! SKIP LOCKED LIMIT 500` plus `UPDATE … SET status = 'queued'`, batch after batch, in a
//! transaction that is then rolled back), i.e. what the database costs without building and
//! publishing send-jobs. Target: under 10 s.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use diesel::sql_types::BigInt;
use diesel::{QueryableByName, sql_query};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use serde_json::json;
use wa_scheduler::config::ReminderConfig;
use wa_scheduler::{Scheduler, TestClock, templates};
use wa_service::tenants::{Tenant, TenantDirectory};
use wa_testkit::broker::{TestBroker, queue_len};
use wa_testkit::db::TestDb;

use crate::report::Figure;

const GROUP: &str = "scheduler";
/// Instalments in the database.
const SCHEDULES: i64 = 1_000_000;
/// Rows per claim transaction (the service's default `SCHEDULER_BATCH_SIZE`).
const BATCH: i64 = 500;
/// Target for one tick that enqueues a morning's reminders.
const TARGET_SECS: f64 = 10.0;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// The bulk data, generated in PostgreSQL; "today" is 2026-12-01 and the tick runs at 09:30 WIB.
const SEED_SQL: &str = "
INSERT INTO packages (tenant_id, package_id, name) VALUES ('default', 'pkg-1', 'Umrah Reguler 12 Hari');
INSERT INTO jamaah (tenant_id, jamaah_id, name, phone_e164, status, package_id, agent_id, agent_name, agent_phone)
SELECT 'default', 'j' || g, 'Jamaah ' || g, '+62812' || lpad(g::text, 8, '0'), 'registered', 'pkg-1',
       'agent-1', 'Ahmad', '+62 812-3456-7890'
FROM generate_series(0, $N - 1) g;
INSERT INTO payment_schedules (tenant_id, schedule_id, jamaah_id, package_id, due_date, amount, status)
SELECT 'default', 's' || g, 'j' || g, 'pkg-1', DATE '2026-12-01' + (g % 365)::int, 1500000 + (g % 7) * 250000, 'unpaid'
FROM generate_series(0, $N - 1) g;
INSERT INTO reminders (tenant_id, kind, dedupe_key, job_id, jamaah_id, schedule_id, package_id, offset_days,
                       due_at, not_after, status, template_name)
SELECT 'default', 'payment_reminder', 's' || g || ':' || o, 'rem-s' || g || '-d' || o, 'j' || g, 's' || g, 'pkg-1', o,
       ((DATE '2026-12-01' + (g % 365)::int + o) + TIME '09:00') AT TIME ZONE 'Asia/Jakarta',
       CASE o WHEN 0 THEN ((DATE '2026-12-01' + (g % 365)::int) + TIME '20:00') AT TIME ZONE 'Asia/Jakarta'
              ELSE ((DATE '2026-12-01' + (g % 365)::int + CASE o WHEN -7 THEN -3 WHEN -3 THEN -1 ELSE 0 END)
                    + TIME '09:00') AT TIME ZONE 'Asia/Jakarta' END,
       CASE WHEN DATE '2026-12-01' + (g % 365)::int + o < DATE '2026-12-01' THEN 'queued' ELSE 'pending' END,
       'payment_reminder'
FROM generate_series(0, $N - 1) g, unnest(ARRAY[-7, -3, -1, 0]) o;
ANALYZE;";

fn tenants() -> anyhow::Result<TenantDirectory> {
    let tenant: Tenant = serde_json::from_value(json!({
        "tenant_id": "default", "phone_number_id": "106540352242922", "waba_id": "102290129340398",
        "access_token": "bench-token", "time_zone": "Asia/Jakarta",
    }))?;
    TenantDirectory::new(vec![tenant]).map_err(anyhow::Error::msg)
}

/// Runs the scheduler benchmark (takes a few minutes, most of it generating the rows).
pub async fn run() -> anyhow::Result<Vec<Figure>> {
    let db = TestDb::new().await.context("benchmark database")?;
    let broker = TestBroker::new().await.context("benchmark vhost")?;
    let connection = broker.declared().await?;
    let channel = connection.create_channel().await?;
    let now: DateTime<Utc> = "2026-12-01T02:30:00Z".parse()?;

    eprintln!("scheduler: generating {SCHEDULES} schedules and their reminders …");
    let seeded = Instant::now();
    let mut conn = db.conn().await;
    conn.batch_execute(&SEED_SQL.replace("$N", &SCHEDULES.to_string()))
        .await
        .context("generating the rows")?;
    let pool = db.pool().await;
    templates::seed_registry(&pool, "default").await?;
    sql_query("UPDATE templates SET status = 'APPROVED'")
        .execute(&mut conn)
        .await?;
    let due: i64 = sql_query(
        "SELECT count(*) AS n FROM reminders WHERE status = 'pending' AND due_at <= '2026-12-01T02:30:00Z'",
    )
    .get_result::<Count>(&mut conn)
    .await?
    .n;
    let total: i64 = sql_query("SELECT count(*) AS n FROM reminders")
        .get_result::<Count>(&mut conn)
        .await?
        .n;
    eprintln!(
        "scheduler: {total} reminders, {due} due, generated in {:.1} s",
        seeded.elapsed().as_secs_f64()
    );

    // Baseline: the raw claim of the same rows, rolled back so the measured run finds them again.
    let started = Instant::now();
    conn.batch_execute("BEGIN").await?;
    let mut claimed = 0usize;
    loop {
        let ids: Vec<Id> = sql_query(
            "SELECT id FROM reminders WHERE status IN ('pending', 'waiting_template')
               AND due_at <= '2026-12-01T02:30:00Z' ORDER BY due_at, id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind::<BigInt, _>(BATCH)
        .load(&mut conn)
        .await?;
        if ids.is_empty() {
            break;
        }
        let list: Vec<i64> = ids.iter().map(|i| i.id).collect();
        sql_query("UPDATE reminders SET status = 'queued' WHERE id = ANY($1)")
            .bind::<diesel::sql_types::Array<BigInt>, _>(&list)
            .execute(&mut conn)
            .await?;
        claimed += list.len();
    }
    conn.batch_execute("ROLLBACK").await?;
    let baseline = started.elapsed().as_secs_f64();

    // Measured: one scheduler tick on the same rows.
    let publisher = wa_amqp::Publisher::connect(&broker.amqp_url, "bench-scheduler").await?;
    let rules = ReminderConfig {
        batch_size: BATCH,
        ..ReminderConfig::default()
    };
    let scheduler = Scheduler::new(
        pool,
        publisher.clone(),
        Arc::new(TestClock::at(now)),
        tenants()?,
        rules,
    );
    let started = Instant::now();
    let report = scheduler.tick().await.context("tick")?;
    let measured = started.elapsed().as_secs_f64();
    let published = queue_len(&channel, wa_common::topology::queue::SENDER_SEND).await?;
    eprintln!(
        "scheduler: tick {measured:.2} s ({report:?}), {published} send-jobs in sender.send; raw claim of {claimed} rows {baseline:.2} s"
    );
    anyhow::ensure!(
        report.enqueued == usize::try_from(due)? && published as i64 == due,
        "expected {due} send-jobs, enqueued {} and {published} in the queue",
        report.enqueued
    );
    publisher.close().await;

    Ok(vec![
        Figure {
            group: GROUP.into(),
            name: format!(
                "find and enqueue the due reminders ({due} of {total}, {SCHEDULES} schedules)"
            ),
            value: measured,
            unit: "s".into(),
            baseline_name: Some(
                "raw FOR UPDATE SKIP LOCKED claim of the same rows, no publish".into(),
            ),
            baseline_value: Some(baseline),
            target: format!("< {TARGET_SECS} s"),
            met: measured < TARGET_SECS,
        },
        Figure {
            group: GROUP.into(),
            name: "due reminders enqueued per second (publisher confirms)".into(),
            value: due as f64 / measured,
            unit: "reminders/s".into(),
            baseline_name: Some("raw claim rows/s".into()),
            baseline_value: Some(claimed as f64 / baseline),
            target: format!(
                ">= {:.0} reminders/s (the 10 s target)",
                due as f64 / TARGET_SECS
            ),
            met: measured < TARGET_SECS,
        },
    ])
}

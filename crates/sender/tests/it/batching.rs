//! The batched hot-path writes against a real database: many concurrent jobs share statements,
//! each still gets exactly its own answer, and one bad row fails alone.

use std::sync::Arc;

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use tokio::task::JoinSet;
use wa_db::schema::{send_attempts, send_jobs};
use wa_sender::batch::{Accepted, Batcher, ClaimJobs, JobRecord, RecordAccepted, RecordJobs};
use wa_testkit::db::TestDb;

fn record(job_id: &str) -> JobRecord {
    JobRecord {
        tenant_id: "default".to_owned(),
        job_id: job_id.to_owned(),
        to_e164: Some("+6281234567890".to_owned()),
        priority: "bulk",
        message_type: "template",
        reference_kind: Some("payment_reminder".to_owned()),
        reference_id: None,
        expires_at: None,
    }
}

fn key(job_id: &str) -> (String, String) {
    ("default".to_owned(), job_id.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_jobs_are_recorded_and_claimed_exactly_once_each() {
    // Arrange: 50 jobs recorded concurrently, 5 of them twice.
    let db = TestDb::new().await.unwrap();
    let pool = db.pool().await;
    let records = Arc::new(Batcher::start(RecordJobs, pool.clone()));
    let claims = Arc::new(Batcher::start(ClaimJobs, pool.clone()));
    let mut recorded = JoinSet::new();
    for i in (0..50).chain(0..5) {
        let records = records.clone();
        recorded.spawn(async move { records.submit(record(&format!("job-{i}"))).await });
    }
    let mut states = Vec::new();
    while let Some(row) = recorded.join_next().await {
        // Every submission gets its row, also when two statements inserted the same job at once.
        let row = row.unwrap().unwrap();
        states.push((row.job_id, row.state, row.reference_kind));
    }

    // Act: every job claimed concurrently, 10 of them by two deliveries at once.
    let mut claimed = JoinSet::new();
    for i in (0..50).chain(0..10) {
        let claims = claims.clone();
        let id = format!("job-{i}");
        claimed.spawn(async move { (id.clone(), claims.submit(key(&id)).await) });
    }
    let mut winners = Vec::new();
    while let Some(result) = claimed.join_next().await {
        let (id, claim) = result.unwrap();
        if let Some(claim) = claim.unwrap() {
            assert_eq!(claim.attempts, 1);
            winners.push(id);
        }
    }

    // Assert
    assert_eq!(states.len(), 55);
    assert!(
        states
            .iter()
            .all(|(_, state, kind)| state == "received"
                && kind.as_deref() == Some("payment_reminder"))
    );
    winners.sort();
    winners.dedup();
    assert_eq!(winners.len(), 50, "each job claimed once by one delivery");
    let mut conn = db.conn().await;
    let sending: i64 = send_jobs::table
        .filter(send_jobs::state.eq("sending"))
        .count()
        .get_result(&mut conn)
        .await
        .unwrap();
    let attempts: i64 = send_attempts::table
        .count()
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!((sending, attempts), (50, 50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_row_that_breaks_a_constraint_fails_alone_and_the_rest_of_its_batch_is_applied() {
    // Arrange: 20 claimed jobs.
    let db = TestDb::new().await.unwrap();
    let pool = db.pool().await;
    let records = Batcher::start(RecordJobs, pool.clone());
    let claims = Batcher::start(ClaimJobs, pool.clone());
    let accepts = Arc::new(Batcher::start(RecordAccepted, pool.clone()));
    for i in 0..20 {
        records.submit(record(&format!("job-{i}"))).await.unwrap();
        claims
            .submit(key(&format!("job-{i}")))
            .await
            .unwrap()
            .unwrap();
    }

    // Act: their acceptances arrive together; two carry the same wamid (unique per tenant).
    let mut accepted = JoinSet::new();
    for i in 0..20 {
        let accepts = accepts.clone();
        let wamid = if i == 19 {
            "wamid.0".to_owned()
        } else {
            format!("wamid.{i}")
        };
        accepted.spawn(async move {
            accepts
                .submit(Accepted {
                    tenant_id: "default".to_owned(),
                    job_id: format!("job-{i}"),
                    attempt: 1,
                    wa_message_id: wamid,
                    accepted_at: Utc::now(),
                })
                .await
        });
    }
    let mut applied = 0;
    let mut failed = 0;
    while let Some(result) = accepted.join_next().await {
        match result.unwrap() {
            Ok(true) => applied += 1,
            Ok(false) => panic!("an acceptance was not applied"),
            Err(_) => failed += 1,
        }
    }

    // Assert
    assert_eq!((applied, failed), (19, 1));
    let mut conn = db.conn().await;
    let accepted_rows: i64 = send_jobs::table
        .filter(send_jobs::state.eq("accepted"))
        .count()
        .get_result(&mut conn)
        .await
        .unwrap();
    let closed_attempts: i64 = send_attempts::table
        .filter(send_attempts::outcome.eq("accepted"))
        .count()
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!((accepted_rows, closed_attempts), (19, 19));
}

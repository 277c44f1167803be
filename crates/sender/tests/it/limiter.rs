//! The rate limiter's pump against the real database.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wa_common::contracts::send_job::Priority;
use wa_sender::limiter::{MAX_LEAD, RateLimiter};
use wa_testkit::db::TestDb;
use wa_testkit::proxy::TcpProxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_that_must_claim_their_jobs_still_get_slots_when_claims_take_longer_than_the_lead() {
    // Arrange: a pump whose recent claims took twice the longest lead on average (a starved
    // host: thousands of jobs in flight on two cores). The average is over about the last eight
    // claims, so one claim of sixteen leads takes it there.
    let db = TestDb::new().await.unwrap();
    let pool = wa_db::build_pool(&db.url, 2).unwrap();
    let limiter = RateLimiter::new(pool, "106540352242922", 1_000, 20);
    let stop = CancellationToken::new();
    let pump = tokio::spawn(limiter.clone().run(stop.clone()));
    let mut slot = limiter.acquire(Priority::Bulk, 0, false).await.unwrap();
    slot.claimed(Some(MAX_LEAD * 16));

    // Act: sends that still have to claim their jobs ask for slots.
    let asking: Vec<_> = (1..=16)
        .map(|order| {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.acquire(Priority::Bulk, order, false).await })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut granted = 0;
    for ask in asking {
        if let Ok(Ok(Ok(_slot))) = tokio::time::timeout_at(deadline, ask).await {
            granted += 1;
        }
    }

    // Assert: they get them (their claims may come back late; they then ask again as
    // prepared sends), rather than every slot being dropped as too close to claim in time.
    assert_eq!(granted, 16);
    stop.cancel();
    pump.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_get_slots_when_the_database_answers_slower_than_the_lead() {
    // Arrange: the limiter's database is 40 ms away each way (a starved or distant server): a
    // reservation's slots, placed from when the database read its clock, would have passed by the
    // time the answer arrives if the lead did not cover the way back.
    let db = TestDb::new().await.unwrap();
    let proxy = TcpProxy::start("127.0.0.1:5432").await.unwrap();
    let pool = wa_db::build_pool(&proxy.rewrite_url(&db.url), 2).unwrap();
    let limiter = RateLimiter::new(pool, "106540352242922", 1_000, 20);
    let stop = CancellationToken::new();
    let pump = tokio::spawn(limiter.clone().run(stop.clone()));
    let mut first = limiter.acquire(Priority::Bulk, 0, false).await.unwrap();
    first.claimed(Some(Duration::from_millis(1)));
    proxy.set_latency(Duration::from_millis(40));

    // Act: sends whose jobs are claimed (they missed their first slot) and sends that still have
    // to claim them ask for slots.
    let asking: Vec<_> = (1..=16)
        .map(|order| {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.acquire(Priority::Bulk, order, order <= 8).await })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut granted = 0;
    for ask in asking {
        if let Ok(Ok(Ok(_slot))) = tokio::time::timeout_at(deadline, ask).await {
            granted += 1;
        }
    }

    // Assert
    assert_eq!(granted, 16);
    stop.cancel();
    pump.await.unwrap();
}

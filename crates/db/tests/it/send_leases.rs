//! `take_send_leases`: one session at a time holds a number's sending lease.

use std::time::Duration;

use wa_db::models::sender::{start_lease_session, take_send_leases};
use wa_testkit::db::TestDb;

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

#[tokio::test]
async fn a_lease_is_held_by_one_session_until_that_session_ends() -> anyhow::Result<()> {
    // Arrange: two sessions, as two sender replicas.
    let db = TestDb::new().await?;
    let mut first = db.conn().await;
    let mut second = db.conn().await;

    // Act and assert: the first takes both numbers; the second gets neither while it lives.
    let taken = take_send_leases(&mut first, &keys(&["sender:1", "sender:2"])).await?;
    assert_eq!(taken, keys(&["sender:1", "sender:2"]));
    let taken = take_send_leases(&mut second, &keys(&["sender:1", "sender:2", "sender:3"])).await?;
    assert_eq!(taken, keys(&["sender:3"]), "only the number nobody holds");
    assert!(
        take_send_leases(&mut first, &[]).await?.is_empty(),
        "no keys: a ping"
    );

    // The first session ends: its leases go to whoever asks next.
    drop(first);
    let mut taken = Vec::new();
    for _ in 0..50 {
        taken = take_send_leases(&mut second, &keys(&["sender:1", "sender:2"])).await?;
        if !taken.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(taken, keys(&["sender:1", "sender:2"]));
    Ok(())
}

#[tokio::test]
async fn a_lease_session_that_goes_quiet_is_ended_by_the_database_and_its_lease_released()
-> anyhow::Result<()> {
    // Arrange: a holder whose session PostgreSQL ends after 300 ms idle (a frozen replica).
    let db = TestDb::new().await?;
    let mut holder = db.conn().await;
    start_lease_session(&mut holder, Duration::from_millis(300)).await?;
    assert_eq!(
        take_send_leases(&mut holder, &keys(&["sender:1"])).await?,
        keys(&["sender:1"])
    );
    let mut other = db.conn().await;
    assert!(
        take_send_leases(&mut other, &keys(&["sender:1"]))
            .await?
            .is_empty()
    );

    // Act: the holder says nothing for longer than its session's TTL.
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Assert: the lease is free, and the quiet session is gone.
    assert_eq!(
        take_send_leases(&mut other, &keys(&["sender:1"])).await?,
        keys(&["sender:1"])
    );
    assert!(take_send_leases(&mut holder, &[]).await.is_err());
    Ok(())
}

use chrono::{Duration, Utc};
use wa_db::models::ProcessedEvent;
use wa_testkit::db::TestDb;

#[tokio::test]
async fn mark_processed_returns_true_the_first_time_and_false_after() -> anyhow::Result<()> {
    // Arrange
    let db = TestDb::new().await?;
    let mut conn = db.conn().await;

    // Act
    let first = ProcessedEvent::mark_processed(&mut conn, "sync.inbound", "wamid.A").await?;
    let again = ProcessedEvent::mark_processed(&mut conn, "sync.inbound", "wamid.A").await?;
    let other_consumer =
        ProcessedEvent::mark_processed(&mut conn, "sync.status", "wamid.A").await?;

    // Assert
    assert!(first);
    assert!(!again);
    assert!(other_consumer, "keys are scoped to their consumer");
    Ok(())
}

#[tokio::test]
async fn mark_processed_rolls_back_with_the_transaction_it_is_part_of() -> anyhow::Result<()> {
    use diesel_async::AsyncConnection as _;

    // Arrange
    let db = TestDb::new().await?;
    let mut conn = db.conn().await;

    // Act: the work fails after the record was written, so the whole transaction rolls back.
    let failed = conn
        .transaction::<(), diesel::result::Error, _>(async |conn| {
            ProcessedEvent::mark_processed(conn, "sync.inbound", "wamid.B").await?;
            Err(diesel::result::Error::RollbackTransaction)
        })
        .await;
    let retried = ProcessedEvent::mark_processed(&mut conn, "sync.inbound", "wamid.B").await?;

    // Assert: the redelivery is processed, not skipped.
    assert!(failed.is_err());
    assert!(retried);
    Ok(())
}

#[tokio::test]
async fn delete_older_than_prunes_only_old_records() -> anyhow::Result<()> {
    // Arrange
    let db = TestDb::new().await?;
    let mut conn = db.conn().await;
    ProcessedEvent::mark_processed(&mut conn, "c", "old").await?;
    ProcessedEvent::mark_processed(&mut conn, "c", "new").await?;

    // Act
    let none =
        ProcessedEvent::delete_older_than(&mut conn, Utc::now() - Duration::hours(1)).await?;
    let all = ProcessedEvent::delete_older_than(&mut conn, Utc::now() + Duration::hours(1)).await?;

    // Assert
    assert_eq!(none, 0);
    assert_eq!(all, 2);
    Ok(())
}

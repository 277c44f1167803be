//! The retention job: deletes messages (with their statuses, media rows and media files) sent
//! more than `RETENTION_DAYS` ago, and statuses that never found their message within that time.
//! Runs every `RETENTION_INTERVAL_SECS`; chunks of rows per transaction keep locks short, and files
//! are deleted only after the rows' deletion committed.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel_async::AsyncConnection;
use tokio_util::sync::CancellationToken;
use wa_db::PgPool;
use wa_db::models::conversation::{Message, MessageStatus};

use crate::media::MediaStore;

/// Messages deleted per transaction.
const CHUNK: i64 = 1000;

/// What a retention run deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetentionReport {
    /// Messages deleted.
    pub messages: usize,
    /// Media files deleted.
    pub files: usize,
    /// Orphan statuses deleted.
    pub orphan_statuses: usize,
}

/// Deletes everything older than `now - retention_days`.
#[tracing::instrument(name = "sync.retention", skip_all)]
pub async fn run_retention(
    pool: &PgPool,
    store: &Arc<dyn MediaStore>,
    retention_days: u32,
    now: DateTime<Utc>,
) -> anyhow::Result<RetentionReport> {
    let cutoff = now - chrono::Duration::days(i64::from(retention_days));
    let mut report = RetentionReport::default();
    let mut conn = pool.get().await?;
    loop {
        let (deleted, files) = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                Message::delete_older_than(conn, cutoff, CHUNK).await
            })
            .await?;
        for key in &files {
            if let Err(error) = store.delete(key).await {
                metrics::counter!("wa_sync_media_delete_failures_total").increment(1);
                tracing::error!(error = %error, "could not delete an expired media file");
            } else {
                report.files += 1;
            }
        }
        report.messages += deleted;
        if deleted < CHUNK as usize {
            break;
        }
    }
    report.orphan_statuses = MessageStatus::delete_unapplied_older_than(&mut conn, cutoff).await?;
    metrics::counter!("wa_sync_retention_deleted_messages_total").increment(report.messages as u64);
    tracing::info!(
        messages = report.messages,
        files = report.files,
        orphan_statuses = report.orphan_statuses,
        "retention run done"
    );
    Ok(report)
}

/// Runs [`run_retention`] every `interval` until `shutdown`.
pub async fn run_until(
    pool: PgPool,
    store: Arc<dyn MediaStore>,
    retention_days: u32,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        if let Err(error) = run_retention(&pool, &store, retention_days, Utc::now()).await {
            tracing::warn!(error = %error, "retention run failed; next run retries");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

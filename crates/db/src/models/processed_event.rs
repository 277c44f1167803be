//! `processed_events`: idempotency records for at-least-once consumers.
//!
//! A consumer calls [`ProcessedEvent::mark_processed`] inside the same transaction as its side
//! effects and skips the work when it returns `false`; the key is the event's natural id (a
//! wamid, `wamid + status`, a job id). If a concurrent transaction holds the same key, the insert
//! waits for it and then reports `false` (it committed) or `true` (it rolled back).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::schema::processed_events;

/// One processed event.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = processed_events, check_for_backend(diesel::pg::Pg))]
pub struct ProcessedEvent {
    /// The consumer (queue or service) that did the work; keys are scoped to it.
    pub consumer: String,
    /// The event's idempotency key.
    pub event_key: String,
    /// When it was first processed.
    pub processed_at: DateTime<Utc>,
}

/// The insert behind [`ProcessedEvent::mark_processed`].
#[derive(Debug, Clone, Copy, Insertable)]
#[diesel(table_name = processed_events)]
pub struct NewProcessedEvent<'a> {
    /// See [`ProcessedEvent::consumer`].
    pub consumer: &'a str,
    /// See [`ProcessedEvent::event_key`].
    pub event_key: &'a str,
}

impl ProcessedEvent {
    /// Records `(consumer, event_key)` and returns `true` if it is new, `false` if it was already
    /// recorded (`INSERT … ON CONFLICT DO NOTHING`).
    pub async fn mark_processed(
        conn: &mut AsyncPgConnection,
        consumer: &str,
        event_key: &str,
    ) -> QueryResult<bool> {
        let inserted = diesel::insert_into(processed_events::table)
            .values(NewProcessedEvent {
                consumer,
                event_key,
            })
            .on_conflict((processed_events::consumer, processed_events::event_key))
            .do_nothing()
            .execute(conn)
            .await?;
        Ok(inserted == 1)
    }

    /// Deletes records older than `cutoff` (choose it well past the broker's redelivery
    /// horizon) and returns how many were removed.
    pub async fn delete_older_than(
        conn: &mut AsyncPgConnection,
        cutoff: DateTime<Utc>,
    ) -> QueryResult<usize> {
        diesel::delete(processed_events::table.filter(processed_events::processed_at.lt(cutoff)))
            .execute(conn)
            .await
    }
}

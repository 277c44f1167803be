//! The schema's own guarantees: CHECKed state words, partial unique keys and cascades. These
//! go through diesel's DSL directly because the services own the models of these tables.

use chrono::Utc;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use wa_db::schema::{contacts, conversations, messages, send_jobs};
use wa_testkit::db::TestDb;

fn is_violation(result: &QueryResult<usize>, kind: DatabaseErrorKind) -> bool {
    matches!(result, Err(DieselError::DatabaseError(k, _)) if *k == kind)
}

/// A known contact with its conversation; returns (contact_id, conversation_id).
async fn contact_with_conversation(conn: &mut AsyncPgConnection) -> QueryResult<(i64, i64)> {
    let contact_id: i64 = diesel::insert_into(contacts::table)
        .values((
            contacts::tenant_id.eq("default"),
            contacts::jamaah_id.eq("J-1"),
            contacts::wa_id.eq("6281234567890"),
            contacts::is_known.eq(true),
        ))
        .returning(contacts::id)
        .get_result(conn)
        .await?;
    let conversation_id: i64 = diesel::insert_into(conversations::table)
        .values((
            conversations::tenant_id.eq("default"),
            conversations::contact_id.eq(contact_id),
        ))
        .returning(conversations::id)
        .get_result(conn)
        .await?;
    Ok((contact_id, conversation_id))
}

async fn insert_inbound(
    conn: &mut AsyncPgConnection,
    (contact_id, conversation_id): (i64, i64),
    wamid: &str,
) -> QueryResult<usize> {
    diesel::insert_into(messages::table)
        .values((
            messages::tenant_id.eq("default"),
            messages::conversation_id.eq(conversation_id),
            messages::contact_id.eq(contact_id),
            messages::direction.eq("inbound"),
            messages::wa_message_id.eq(wamid),
            messages::message_type.eq("text"),
            messages::sent_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await
}

#[tokio::test]
async fn a_check_constraint_rejects_an_unknown_send_job_state() -> anyhow::Result<()> {
    // Arrange
    let db = TestDb::new().await?;
    let mut conn = db.conn().await;

    // Act
    let result = diesel::insert_into(send_jobs::table)
        .values((
            send_jobs::tenant_id.eq("default"),
            send_jobs::job_id.eq("job-1"),
            send_jobs::state.eq("delivered"),
            send_jobs::message_type.eq("text"),
        ))
        .execute(&mut conn)
        .await;

    // Assert
    assert!(
        is_violation(&result, DatabaseErrorKind::CheckViolation),
        "got {result:?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_accepted_send_job_must_carry_its_wamid() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let mut conn = db.conn().await;

    let result = diesel::insert_into(send_jobs::table)
        .values((
            send_jobs::tenant_id.eq("default"),
            send_jobs::job_id.eq("job-1"),
            send_jobs::state.eq("accepted"),
            send_jobs::message_type.eq("text"),
            send_jobs::accepted_at.eq(Utc::now()),
        ))
        .execute(&mut conn)
        .await;

    assert!(
        is_violation(&result, DatabaseErrorKind::CheckViolation),
        "got {result:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_second_message_with_the_same_wamid_in_a_tenant_is_rejected() -> anyhow::Result<()> {
    // Arrange
    let db = TestDb::new().await?;
    let mut conn = db.conn().await;
    let ids = contact_with_conversation(&mut conn).await?;
    insert_inbound(&mut conn, ids, "wamid.HBgM").await?;

    // Act
    let duplicate = insert_inbound(&mut conn, ids, "wamid.HBgM").await;
    let different = insert_inbound(&mut conn, ids, "wamid.OTHER").await;

    // Assert
    assert!(
        is_violation(&duplicate, DatabaseErrorKind::UniqueViolation),
        "got {duplicate:?}"
    );
    assert_eq!(different?, 1);
    Ok(())
}

#[tokio::test]
async fn outbound_messages_without_a_wamid_do_not_collide() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let mut conn = db.conn().await;
    let (contact_id, conversation_id) = contact_with_conversation(&mut conn).await?;

    for job in ["job-1", "job-2"] {
        diesel::insert_into(messages::table)
            .values((
                messages::tenant_id.eq("default"),
                messages::conversation_id.eq(conversation_id),
                messages::contact_id.eq(contact_id),
                messages::direction.eq("outbound"),
                messages::job_id.eq(job),
                messages::message_type.eq("template"),
                messages::sent_at.eq(Utc::now()),
            ))
            .execute(&mut conn)
            .await?;
    }

    let count: i64 = messages::table.count().get_result(&mut conn).await?;
    assert_eq!(count, 2);
    Ok(())
}

#[tokio::test]
async fn an_upsert_on_a_partial_unique_index_names_its_predicate() -> anyhow::Result<()> {
    // Arrange: the pattern the README documents for "unique when not null" keys.
    let db = TestDb::new().await?;
    let mut conn = db.conn().await;
    contact_with_conversation(&mut conn).await?;

    // Act
    let upserted = diesel::insert_into(contacts::table)
        .values((
            contacts::tenant_id.eq("default"),
            contacts::wa_id.eq("6281234567890"),
            contacts::profile_name.eq("Siti"),
        ))
        .on_conflict((contacts::tenant_id, contacts::wa_id))
        .filter_target(contacts::wa_id.is_not_null())
        .do_update()
        .set(contacts::profile_name.eq(excluded(contacts::profile_name)))
        .execute(&mut conn)
        .await?;

    // Assert: the existing contact was updated, not duplicated.
    let rows: Vec<(Option<String>, Option<String>)> = contacts::table
        .select((contacts::jamaah_id, contacts::profile_name))
        .load(&mut conn)
        .await?;
    assert_eq!(upserted, 1);
    assert_eq!(rows, [(Some("J-1".to_owned()), Some("Siti".to_owned()))]);
    Ok(())
}

#[tokio::test]
async fn deleting_a_contact_removes_its_conversation_and_messages() -> anyhow::Result<()> {
    // Arrange
    let db = TestDb::new().await?;
    let mut conn = db.conn().await;
    let ids = contact_with_conversation(&mut conn).await?;
    insert_inbound(&mut conn, ids, "wamid.1").await?;

    // Act: jamaah erasure.
    diesel::delete(contacts::table.find(ids.0))
        .execute(&mut conn)
        .await?;

    // Assert
    let conversations: i64 = conversations::table.count().get_result(&mut conn).await?;
    let messages: i64 = messages::table.count().get_result(&mut conn).await?;
    assert_eq!((conversations, messages), (0, 0));
    Ok(())
}

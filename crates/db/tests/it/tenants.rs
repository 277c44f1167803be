use wa_db::models::{NewTenant, Tenant};
use wa_testkit::db::TestDb;

fn default_tenant() -> NewTenant<'static> {
    NewTenant {
        tenant_id: "default",
        phone_number_id: "106540352242922",
        waba_id: "102290129340398",
        display_name: Some("Travel Umrah Berkah"),
        time_zone: None,
    }
}

#[tokio::test]
async fn upsert_inserts_a_tenant_that_is_found_by_phone_number_id() -> anyhow::Result<()> {
    // Arrange
    let db = TestDb::new().await?;
    let mut conn = db.conn().await;

    // Act
    let stored = Tenant::upsert(&mut conn, &default_tenant()).await?;
    let found = Tenant::find_by_phone_number_id(&mut conn, "106540352242922").await?;
    let missing = Tenant::find_by_phone_number_id(&mut conn, "999").await?;

    // Assert
    assert_eq!(stored.tenant_id, "default");
    assert_eq!(stored.time_zone, "Asia/Jakarta", "column default applies");
    assert_eq!(found.as_ref(), Some(&stored));
    assert_eq!(missing, None);
    Ok(())
}

#[tokio::test]
async fn upsert_overwrites_configuration_but_keeps_created_at_and_pause_state() -> anyhow::Result<()>
{
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    use wa_db::schema::tenants;

    // Arrange
    let db = TestDb::new().await?;
    let mut conn = db.conn().await;
    let first = Tenant::upsert(&mut conn, &default_tenant()).await?;
    diesel::update(tenants::table.find("default"))
        .set((
            tenants::paused_at.eq(diesel::dsl::now),
            tenants::pause_reason.eq("quality rating low"),
        ))
        .execute(&mut conn)
        .await?;

    // Act
    let changed = NewTenant {
        phone_number_id: "200000000000001",
        display_name: None,
        time_zone: Some("Asia/Makassar"),
        ..default_tenant()
    };
    let second = Tenant::upsert(&mut conn, &changed).await?;

    // Assert
    assert_eq!(second.phone_number_id, "200000000000001");
    assert_eq!(second.display_name, None);
    assert_eq!(second.time_zone, "Asia/Makassar");
    assert_eq!(second.created_at, first.created_at);
    assert!(
        second.updated_at > first.updated_at,
        "trigger stamps updated_at"
    );
    assert_eq!(second.pause_reason.as_deref(), Some("quality rating low"));
    assert_eq!(Tenant::list(&mut conn).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_replayed_upsert_does_not_touch_updated_at() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let mut conn = db.conn().await;
    let first = Tenant::upsert(&mut conn, &default_tenant()).await?;

    let replayed = Tenant::upsert(&mut conn, &default_tenant()).await?;

    assert_eq!(replayed, first);
    Ok(())
}

#[tokio::test]
async fn two_tenants_cannot_share_a_phone_number_id() -> anyhow::Result<()> {
    // Arrange
    let db = TestDb::new().await?;
    let mut conn = db.conn().await;
    Tenant::upsert(&mut conn, &default_tenant()).await?;

    // Act
    let other = NewTenant {
        tenant_id: "other",
        ..default_tenant()
    };
    let result = Tenant::upsert(&mut conn, &other).await;

    // Assert
    assert!(
        matches!(
            result,
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _
            ))
        ),
        "got {result:?}"
    );
    Ok(())
}

#[tokio::test]
async fn list_returns_tenants_ordered_by_id() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let mut conn = db.conn().await;
    for (id, phone) in [("zeta", "3"), ("alpha", "1"), ("mid", "2")] {
        let new = NewTenant {
            tenant_id: id,
            phone_number_id: phone,
            ..default_tenant()
        };
        Tenant::upsert(&mut conn, &new).await?;
    }

    let ids: Vec<String> = Tenant::list(&mut conn)
        .await?
        .into_iter()
        .map(|t| t.tenant_id)
        .collect();

    assert_eq!(ids, ["alpha", "mid", "zeta"]);
    Ok(())
}

//! `wa_testkit::db::TestDb` itself: isolation and clean-up.

use diesel_async::{AsyncConnection, RunQueryDsl};
use wa_db::models::{NewTenant, Tenant};
use wa_testkit::db::{DEFAULT_TEST_DATABASE_URL, TestDb};

async fn database_exists(name: &str) -> anyhow::Result<bool> {
    let server =
        std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_owned());
    let mut conn =
        wa_db::AsyncPgConnection::establish(&wa_db::admin::with_database(&server, "postgres")?)
            .await?;
    Ok(wa_db::admin::database_exists(&mut conn, name).await?)
}

#[tokio::test]
async fn two_test_databases_created_in_parallel_do_not_see_each_others_rows() -> anyhow::Result<()>
{
    // Arrange
    let (a, b) = tokio::join!(TestDb::new(), TestDb::new());
    let (a, b) = (a?, b?);
    let (mut conn_a, mut conn_b) = (a.conn().await, b.conn().await);

    // Act
    let new = NewTenant {
        tenant_id: "only-in-a",
        phone_number_id: "1",
        waba_id: "2",
        display_name: None,
        time_zone: None,
    };
    Tenant::upsert(&mut conn_a, &new).await?;

    // Assert
    assert_ne!(a.url, b.url);
    assert_eq!(Tenant::list(&mut conn_a).await?.len(), 1);
    assert!(Tenant::list(&mut conn_b).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_database_is_migrated_and_its_pool_works() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await;

    let mut conn = pool.get().await?;
    let tenants = Tenant::list(&mut conn).await?;
    let pending = wa_db::migrate::run_migrations(&db.url).await?;

    assert!(tenants.is_empty());
    assert!(pending.is_empty(), "the template was fully migrated");
    Ok(())
}

#[tokio::test]
async fn a_test_database_is_dropped_with_its_handle_even_with_open_connections()
-> anyhow::Result<()> {
    // Arrange
    let db = TestDb::new().await?;
    let name = db.name().to_owned();
    let mut open = db.conn().await;
    diesel::sql_query("SELECT 1").execute(&mut open).await?;
    assert!(database_exists(&name).await?);

    // Act
    drop(db);

    // Assert
    assert!(!database_exists(&name).await?);
    Ok(())
}

#[test]
fn a_test_database_is_dropped_outside_any_runtime() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let db = runtime.block_on(TestDb::new())?;
    let name = db.name().to_owned();

    drop(db);

    let exists = runtime.block_on(database_exists(&name))?;
    assert!(!exists);
    Ok(())
}

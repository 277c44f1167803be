use diesel::QueryableByName;
use diesel::migration::MigrationSource;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncMigrationHarness, RunQueryDsl};
use diesel_migrations::MigrationHarness;
use wa_db::migrate::{MIGRATIONS, create_database_if_missing, run_migrations};
use wa_testkit::db::TestDb;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// Tables, views, sequences and functions in `public`, apart from diesel's bookkeeping table.
async fn user_objects(conn: &mut wa_db::AsyncPgConnection) -> anyhow::Result<i64> {
    let relations = diesel::sql_query(
        "SELECT count(*) AS count FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relname NOT LIKE '\\_\\_diesel\\_schema\\_migrations%'",
    )
    .get_result::<Count>(conn)
    .await?;
    let functions = diesel::sql_query(
        "SELECT count(*) AS count FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE n.nspname = 'public'",
    )
    .get_result::<Count>(conn)
    .await?;
    Ok(relations.count + functions.count)
}

#[derive(QueryableByName)]
struct TableName {
    #[diesel(sql_type = Text)]
    tablename: String,
}

/// The application's tables, sorted (diesel's bookkeeping table excluded).
async fn table_names(conn: &mut wa_db::AsyncPgConnection) -> anyhow::Result<Vec<String>> {
    let rows = diesel::sql_query(
        "SELECT tablename::text AS tablename FROM pg_tables \
         WHERE schemaname = 'public' AND tablename <> '__diesel_schema_migrations' \
         ORDER BY tablename",
    )
    .load::<TableName>(conn)
    .await?;
    Ok(rows.into_iter().map(|row| row.tablename).collect())
}

fn migration_count() -> anyhow::Result<usize> {
    let migrations: Vec<Box<dyn diesel::migration::Migration<diesel::pg::Pg>>> =
        MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS)
            .map_err(|e| anyhow::anyhow!(e))?;
    Ok(migrations.len())
}

// AsyncMigrationHarness uses block_in_place, hence the multi-thread runtime.
#[tokio::test(flavor = "multi_thread")]
async fn migrations_apply_to_an_empty_database_and_a_second_run_applies_nothing()
-> anyhow::Result<()> {
    // Arrange
    let db = TestDb::new_empty().await?;

    // Act
    let first = run_migrations(&db.url).await?;
    let second = run_migrations(&db.url).await?;

    // Assert
    assert_eq!(first.len(), migration_count()?);
    let mut sorted = first.clone();
    sorted.sort();
    assert_eq!(first, sorted, "applied oldest first");
    assert!(second.is_empty(), "second run applied {second:?}");
    let tables = table_names(&mut db.conn().await).await?;
    let template_tables = table_names(&mut TestDb::new().await?.conn().await).await?;
    assert!(tables.iter().any(|t| t == "tenants"), "got {tables:?}");
    assert_eq!(tables, template_tables);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_migration_runs_apply_each_migration_once() -> anyhow::Result<()> {
    // Arrange
    let db = TestDb::new_empty().await?;
    let (url_a, url_b) = (db.url.clone(), db.url.clone());

    // Act: two "replicas" migrate the same database at once.
    let a = tokio::spawn(async move { run_migrations(&url_a).await });
    let b = tokio::spawn(async move { run_migrations(&url_b).await });
    let (a, b) = (a.await??, b.await??);

    // Assert: the advisory lock made one of them do all the work.
    assert_eq!(a.len() + b.len(), migration_count()?);
    assert!(a.is_empty() || b.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_down_migration_reverts_cleanly_and_up_applies_again() -> anyhow::Result<()> {
    // Arrange
    let db = TestDb::new().await?;
    let mut conn = db.conn().await;
    let tables_before = table_names(&mut conn).await?;
    let mut harness = AsyncMigrationHarness::new(conn);

    // Act
    let reverted = harness
        .revert_all_migrations(MIGRATIONS)
        .map_err(|e| anyhow::anyhow!(e))?
        .len();
    let mut conn = harness.into_inner();
    let left_after_down = user_objects(&mut conn).await?;
    let mut harness = AsyncMigrationHarness::new(conn);
    let reapplied = harness
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| anyhow::anyhow!(e))?
        .len();
    let mut conn = harness.into_inner();

    // Assert
    assert_eq!(reverted, migration_count()?);
    assert_eq!(left_after_down, 0, "down migrations left objects behind");
    assert_eq!(reapplied, migration_count()?);
    assert_eq!(table_names(&mut conn).await?, tables_before);
    Ok(())
}

#[tokio::test]
async fn migrations_refuse_the_current_thread_runtime_instead_of_panicking() -> anyhow::Result<()> {
    let db = TestDb::new_empty().await?;

    let result = run_migrations(&db.url).await;

    assert!(
        matches!(result, Err(wa_db::DbError::WrongRuntime)),
        "got {result:?}"
    );
    Ok(())
}

#[tokio::test]
async fn create_database_if_missing_creates_once_then_reports_it_exists() -> anyhow::Result<()> {
    // Arrange
    let server = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| wa_testkit::db::DEFAULT_TEST_DATABASE_URL.to_owned());
    let name = format!("wa_test_{}", uuid::Uuid::new_v4().simple());
    let url = wa_db::admin::with_database(&server, &name)?;
    let _cleanup = DropDatabaseOnExit { server, name };

    // Act
    let first = create_database_if_missing(&url).await?;
    let second = create_database_if_missing(&url).await?;

    // Assert
    assert!(first);
    assert!(!second);
    let mut conn = <wa_db::AsyncPgConnection as AsyncConnection>::establish(&url).await?;
    let one = diesel::sql_query("SELECT 1::int8 AS count")
        .get_result::<Count>(&mut conn)
        .await?;
    assert_eq!(one.count, 1);
    Ok(())
}

/// Drops a database created outside `TestDb` when the test ends, pass or fail.
struct DropDatabaseOnExit {
    server: String,
    name: String,
}

impl Drop for DropDatabaseOnExit {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let Ok(url) = wa_db::admin::with_database(&server, "postgres") else {
                    return;
                };
                if let Ok(mut conn) =
                    <wa_db::AsyncPgConnection as AsyncConnection>::establish(&url).await
                {
                    let sql = format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        wa_db::admin::quote_identifier(&name)
                    );
                    let _ = diesel::sql_query(sql).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}

//! Embedded migrations and the explicit `migrate` step (`make migrate`, the ops CLI, the test kit).
//!
//! Services do not migrate implicitly on start; one job does, and concurrent runs (two replicas,
//! parallel test processes) are serialised by a PostgreSQL advisory lock so neither sees a
//! half-applied schema or races on `__diesel_schema_migrations`.

use diesel_async::{AsyncConnection, AsyncMigrationHarness, AsyncPgConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::DbError;
use crate::admin::{self, MAINTENANCE_DATABASE};

/// Every migration under the workspace's `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// A hash (16 hex digits) of every file under `migrations/` as compiled into [`MIGRATIONS`]:
/// equal fingerprints mean identical migrations. The test kit names its migrated template
/// database after it. Computed by `build.rs`.
pub const MIGRATIONS_FINGERPRINT: &str = env!("WA_MIGRATIONS_FINGERPRINT");

/// Advisory-lock key held (on the target database) while migrations run. ASCII "wa_migr8".
pub const MIGRATION_LOCK_KEY: i64 = 0x7761_5f6d_6967_7238;

/// Advisory-lock key held (on the maintenance database) while checking for and creating a
/// database. ASCII "wa_credb".
pub const CREATE_DATABASE_LOCK_KEY: i64 = 0x7761_5f63_7265_6462;

/// Applies all pending migrations to `database_url` and returns the versions applied, oldest
/// first (empty when the schema was already current).
///
/// Each migration runs in its own transaction. Uses diesel-async's `AsyncMigrationHarness`,
/// which calls `block_in_place`: it must run on tokio's multi-thread runtime and not inside
/// `select!`/`join!`; on a current-thread runtime this returns an error instead of panicking.
#[tracing::instrument(skip_all)]
pub async fn run_migrations(database_url: &str) -> Result<Vec<String>, DbError> {
    ensure_multi_thread_runtime()?;
    let mut conn = AsyncPgConnection::establish(database_url).await?;
    admin::advisory_lock(&mut conn, MIGRATION_LOCK_KEY).await?;

    let mut harness = AsyncMigrationHarness::new(conn);
    let outcome = harness
        .run_pending_migrations(MIGRATIONS)
        .map(|versions| versions.iter().map(ToString::to_string).collect::<Vec<_>>());
    let mut conn = harness.into_inner();

    // A failed migration was rolled back by its transaction, so the session is usable;
    // if unlocking fails anyway, dropping the connection releases the lock.
    if let Err(err) = admin::advisory_unlock(&mut conn, MIGRATION_LOCK_KEY).await {
        tracing::warn!(error = %err, "could not release the migration lock; closing the session releases it");
    }

    let applied = outcome.map_err(DbError::Migration)?;
    tracing::info!(count = applied.len(), versions = ?applied, "migrations applied");
    Ok(applied)
}

/// Creates the database `database_url` names if the server does not have it yet, so
/// `make migrate` works on a fresh machine. Returns whether it was created.
///
/// Connects to the server's `postgres` maintenance database with the same credentials; the
/// role needs `CREATEDB` when the database is missing.
#[tracing::instrument(skip_all)]
pub async fn create_database_if_missing(database_url: &str) -> Result<bool, DbError> {
    let name = admin::database_name(database_url)?;
    let maintenance_url = admin::with_database(database_url, MAINTENANCE_DATABASE)?;
    let mut conn = AsyncPgConnection::establish(&maintenance_url).await?;

    // Serialise check-then-create so two concurrent callers do not both try to CREATE.
    admin::advisory_lock(&mut conn, CREATE_DATABASE_LOCK_KEY).await?;
    let created = create_unless_exists(&mut conn, &name).await;
    if let Err(err) = admin::advisory_unlock(&mut conn, CREATE_DATABASE_LOCK_KEY).await {
        tracing::warn!(error = %err, "could not release the create-database lock; closing the session releases it");
    }

    let created = created?;
    if created {
        tracing::info!(database = %name, "database created");
    }
    Ok(created)
}

async fn create_unless_exists(conn: &mut AsyncPgConnection, name: &str) -> Result<bool, DbError> {
    use diesel_async::RunQueryDsl;

    if admin::database_exists(conn, name).await? {
        return Ok(false);
    }
    diesel::sql_query(format!("CREATE DATABASE {}", admin::quote_identifier(name)))
        .execute(conn)
        .await?;
    Ok(true)
}

fn ensure_multi_thread_runtime() -> Result<(), DbError> {
    let flavor = Handle::try_current()
        .map_err(|_| DbError::WrongRuntime)?
        .runtime_flavor();
    if flavor == RuntimeFlavor::CurrentThread {
        return Err(DbError::WrongRuntime);
    }
    Ok(())
}

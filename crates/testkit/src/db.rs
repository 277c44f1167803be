//! A PostgreSQL database per test, cloned from a migrated template and dropped afterwards.
//!
//! The template is named `wa_template_<fingerprint of migrations/>` and is built at most once per
//! migration set: the first `TestDb::new` on a machine creates it from `template0`, runs
//! `wa_db::migrate::run_migrations` and marks it `IS_TEMPLATE` (which is also how later calls know
//! the build completed). Every clone then costs one `CREATE DATABASE … TEMPLATE`, far cheaper than
//! migrating. Templates for other migration sets are dropped when a new one is built.
//!
//! Building and cloning are serialised across threads *and* processes (parallel test binaries)
//! by a PostgreSQL advisory lock taken on the `postgres` maintenance database: `CREATE DATABASE
//! … TEMPLATE` fails if any other session is connected to the template, and two builders must not
//! race. The template also refuses connections (`ALLOW_CONNECTIONS false`) once built.
//!
//! Server: `TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432`). Set `TEST_KEEP_DB`
//! to keep each test's database for inspection instead of dropping it.

use std::sync::OnceLock;

use anyhow::Context as _;
use diesel::sql_types::{Bool, Text};
use diesel::{OptionalExtension as _, QueryableByName};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use wa_db::PgPool;
use wa_db::admin::{self, MAINTENANCE_DATABASE, quote_identifier};

/// Server used when `TEST_DATABASE_URL` is not set (the local trust-auth PostgreSQL).
pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432";

/// Pool size of [`TestDb::pool`]: small, because many tests run at once on one server.
pub const TEST_POOL_SIZE: usize = 4;

/// Advisory-lock key (on the maintenance database) serialising template builds and clones.
/// ASCII "wa_tmplt".
const TEMPLATE_LOCK_KEY: i64 = 0x7761_5f74_6d70_6c74;

const TEMPLATE_PREFIX: &str = "wa_template_";
const TEST_DB_PREFIX: &str = "wa_test_";

/// A freshly migrated database of its own for one test; dropped (`WITH (FORCE)`) on `Drop`.
#[derive(Debug)]
pub struct TestDb {
    /// Connection URL of this test's database.
    pub url: String,
    name: String,
    maintenance_url: String,
}

impl TestDb {
    /// Clones the migrated template into a new database `wa_test_<uuid>` (building the template
    /// first if this migration set has none yet). Works on both tokio runtime flavours.
    pub async fn new() -> anyhow::Result<TestDb> {
        let template = template_name();
        let name = format!("{TEST_DB_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let server_url = server_url();
        let maintenance_url = admin::with_database(&server_url, MAINTENANCE_DATABASE)?;

        let mut conn = AsyncPgConnection::establish(&maintenance_url)
            .await
            .with_context(|| {
                format!("connecting to PostgreSQL at {server_url} (TEST_DATABASE_URL)")
            })?;
        admin::advisory_lock(&mut conn, TEMPLATE_LOCK_KEY).await?;
        let cloned = async {
            ensure_template(&mut conn, &server_url, template).await?;
            execute(
                &mut conn,
                &format!(
                    "CREATE DATABASE {} TEMPLATE {}",
                    quote_identifier(&name),
                    quote_identifier(template)
                ),
            )
            .await
            .with_context(|| format!("cloning {template} into {name}"))
        }
        .await;
        // Closing the session below would release the lock as well.
        let _ = admin::advisory_unlock(&mut conn, TEMPLATE_LOCK_KEY).await;
        cloned?;

        Ok(TestDb {
            url: admin::with_database(&server_url, &name)?,
            name,
            maintenance_url,
        })
    }

    /// Creates an empty database (no migrations applied), for tests of the migrations
    /// themselves. Dropped like any other `TestDb`.
    pub async fn new_empty() -> anyhow::Result<TestDb> {
        let name = format!("{TEST_DB_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let server_url = server_url();
        let maintenance_url = admin::with_database(&server_url, MAINTENANCE_DATABASE)?;
        let mut conn = AsyncPgConnection::establish(&maintenance_url)
            .await
            .with_context(|| {
                format!("connecting to PostgreSQL at {server_url} (TEST_DATABASE_URL)")
            })?;
        execute(
            &mut conn,
            &format!(
                "CREATE DATABASE {} TEMPLATE template0",
                quote_identifier(&name)
            ),
        )
        .await?;
        Ok(TestDb {
            url: admin::with_database(&server_url, &name)?,
            name,
            maintenance_url,
        })
    }

    /// The database's name (`wa_test_<uuid>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A small pool on this database, for code under test that takes a `PgPool`.
    ///
    /// # Panics
    /// If the pool cannot be built; a test cannot go on without its database.
    pub async fn pool(&self) -> PgPool {
        match wa_db::build_pool(&self.url, TEST_POOL_SIZE) {
            Ok(pool) => pool,
            Err(err) => panic!("TestDb: cannot build a pool for {}: {err:#}", self.name),
        }
    }

    /// A new connection to this database.
    ///
    /// # Panics
    /// If connecting fails; a test cannot go on without its database.
    pub async fn conn(&self) -> AsyncPgConnection {
        match AsyncPgConnection::establish(&self.url).await {
            Ok(conn) => conn,
            Err(err) => panic!("TestDb: cannot connect to {}: {err}", self.name),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::env::var_os("TEST_KEEP_DB").is_some() {
            eprintln!(
                "wa_testkit: keeping test database {} (TEST_KEEP_DB is set)",
                self.url
            );
            return;
        }
        // Drop may run inside a tokio runtime (cannot block_on there) or outside any runtime,
        // so the DROP runs on a thread of its own with its own small runtime; joining it keeps
        // the process from exiting before the database is gone.
        let maintenance_url = self.maintenance_url.clone();
        let name = self.name.clone();
        let joined = std::thread::Builder::new()
            .name("testkit-drop-db".to_owned())
            .spawn(move || -> anyhow::Result<()> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    let mut conn = AsyncPgConnection::establish(&maintenance_url).await?;
                    let sql = format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        quote_identifier(&name)
                    );
                    execute(&mut conn, &sql).await
                })
            })
            .map_err(anyhow::Error::from)
            .and_then(|handle| {
                handle
                    .join()
                    .map_err(|_| anyhow::anyhow!("the drop thread panicked"))?
            });
        if let Err(err) = joined {
            eprintln!(
                "wa_testkit: could not drop test database {}: {err:#}",
                self.name
            );
        }
    }
}

/// The server URL tests use (no database in the path is needed).
fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_owned())
}

/// `wa_template_<fingerprint of the migrations compiled into wa_db>`. Taking the fingerprint
/// from the build (not from the files at run time) means a test binary built before someone
/// added a migration can never label a template with the newer migration set.
fn template_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        format!(
            "{TEMPLATE_PREFIX}{}",
            wa_db::migrate::MIGRATIONS_FINGERPRINT
        )
    })
}

#[derive(QueryableByName)]
struct TemplateState {
    #[diesel(sql_type = Bool)]
    datistemplate: bool,
}

#[derive(QueryableByName)]
struct DatabaseName {
    #[diesel(sql_type = Text)]
    datname: String,
}

/// Makes sure `template` exists and is complete. Caller holds `TEMPLATE_LOCK_KEY`.
async fn ensure_template(
    conn: &mut AsyncPgConnection,
    server_url: &str,
    template: &str,
) -> anyhow::Result<()> {
    let state = diesel::sql_query("SELECT datistemplate FROM pg_database WHERE datname = $1")
        .bind::<Text, _>(template)
        .get_result::<TemplateState>(conn)
        .await
        .optional()?;
    if state.is_some_and(|row| row.datistemplate) {
        return Ok(());
    }

    // Missing, or left half-built by a crashed run: (re)build it. Templates of other
    // migration sets are dead weight by now; remove them too.
    let stale = diesel::sql_query("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
        .bind::<Text, _>(TEMPLATE_PREFIX)
        .load::<DatabaseName>(conn)
        .await?;
    for db in stale {
        let quoted = quote_identifier(&db.datname);
        execute(
            conn,
            &format!("ALTER DATABASE {quoted} WITH IS_TEMPLATE false"),
        )
        .await?;
        execute(conn, &format!("DROP DATABASE {quoted} WITH (FORCE)")).await?;
    }

    let quoted = quote_identifier(template);
    execute(
        conn,
        &format!("CREATE DATABASE {quoted} TEMPLATE template0"),
    )
    .await?;
    let template_url = admin::with_database(server_url, template)?;
    run_migrations_on_own_runtime(template_url)
        .await
        .with_context(|| format!("migrating the template database {template}"))?;
    // Our migration session has closed, but its backend may still be exiting; make sure no
    // session is left that would make CREATE DATABASE … TEMPLATE fail.
    diesel::sql_query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind::<Text, _>(template)
    .execute(conn)
    .await?;
    // IS_TEMPLATE marks the build complete; refusing connections keeps clones possible.
    execute(
        conn,
        &format!("ALTER DATABASE {quoted} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"),
    )
    .await?;
    Ok(())
}

/// `run_migrations` needs tokio's multi-thread runtime (diesel-async's harness uses
/// `block_in_place`), but tests default to the current-thread one: run it on a thread with a
/// runtime of its own and await the result without blocking the caller's runtime.
async fn run_migrations_on_own_runtime(database_url: String) -> anyhow::Result<Vec<String>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("testkit-migrate".to_owned())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| {
                    runtime
                        .block_on(wa_db::migrate::run_migrations(&database_url))
                        .map_err(anyhow::Error::from)
                });
            // The receiver only goes away if the test was cancelled; nothing to report to.
            let _ = tx.send(result);
        })?;
    rx.await.context("the migration thread died")?
}

async fn execute(conn: &mut AsyncPgConnection, sql: &str) -> anyhow::Result<()> {
    diesel::sql_query(sql)
        .execute(conn)
        .await
        .with_context(|| format!("running `{sql}`"))?;
    Ok(())
}

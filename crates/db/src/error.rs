//! The crate's error type for everything that is not a plain query.
//!
//! Query functions in [`crate::models`] return `diesel::QueryResult` so callers can match on
//! `diesel::result::Error` (e.g. `NotFound`, unique violations) directly; `DbError` covers pool
//! construction, connecting, migrations and database administration. Messages never include the
//! database URL, because it may carry a password.

use std::error::Error as StdError;

/// Why a pool, connection, migration or admin step failed; the cause is in `source()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The database URL is not a `postgres://…/<database>` URL this crate can work with.
    #[error("invalid database URL: {0}")]
    InvalidUrl(&'static str),

    /// The pool settings are unusable (e.g. a size of zero).
    #[error("invalid pool configuration: {0}")]
    InvalidPoolConfig(&'static str),

    /// Establishing a connection failed (server down, auth, missing database).
    #[error("could not connect to PostgreSQL")]
    Connect(#[source] diesel::ConnectionError),

    /// A statement failed.
    #[error("database query failed")]
    Query(#[from] diesel::result::Error),

    /// The deadpool pool could not be built.
    #[error("could not build the database connection pool")]
    BuildPool(#[source] diesel_async::pooled_connection::deadpool::BuildError),

    /// No pooled connection could be handed out (pool exhausted/closed, or connecting failed).
    #[error("could not get a database connection from the pool")]
    Pool(#[from] diesel_async::pooled_connection::deadpool::PoolError),

    /// Migrations were started outside tokio's multi-thread runtime, where diesel-async's
    /// migration harness (it uses `block_in_place`) would panic.
    #[error("migrations must run on the tokio multi-thread runtime")]
    WrongRuntime,

    /// Running or reverting a migration failed.
    #[error("database migration failed")]
    Migration(#[source] Box<dyn StdError + Send + Sync>),
}

impl From<diesel::ConnectionError> for DbError {
    fn from(err: diesel::ConnectionError) -> Self {
        Self::Connect(err)
    }
}

//! The shared deadpool pool of async PostgreSQL connections.

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;

use crate::DbError;

/// The pool every service shares; handlers/workers take one connection per unit of work.
pub type PgPool = diesel_async::pooled_connection::deadpool::Pool<AsyncPgConnection>;

/// A pooled connection; derefs to `AsyncPgConnection` for the query functions.
pub type PooledConn = diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>;

/// Pool size for a service that does not configure one: enough for a few concurrent
/// consumers plus the HTTP handlers, well under PostgreSQL's default `max_connections`.
pub const DEFAULT_POOL_SIZE: usize = 10;

/// Builds a pool without connecting (connections open lazily on first `get()`), so a
/// service can start before the database is reachable and report it on `/readyz`.
///
/// Recycled connections are verified with a test query (diesel-async's default). The pool
/// has no wait timeout (deadpool needs a runtime feature for that); callers that must not
/// wait forever wrap `pool.get()` in `tokio::time::timeout`.
pub fn build_pool(database_url: &str, max_size: usize) -> Result<PgPool, DbError> {
    if max_size == 0 {
        return Err(DbError::InvalidPoolConfig("max_size must be at least 1"));
    }
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(database_url);
    PgPool::builder(manager)
        .max_size(max_size)
        .build()
        .map_err(DbError::BuildPool)
}

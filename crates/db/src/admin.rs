//! Small database-administration helpers shared by migrations, `make migrate` and the test kit:
//! URL surgery (which database a URL points at), identifier quoting and advisory locks.
//!
//! Only `postgres://` / `postgresql://` URLs are understood (not libpq `key=value` strings).

use diesel::sql_types::{BigInt, Bool, Text};
use diesel::{QueryableByName, sql_query};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::DbError;

/// The database every PostgreSQL server has, used to create or drop other databases.
pub const MAINTENANCE_DATABASE: &str = "postgres";

/// A `postgres://` URL split around its database name.
struct PgUrl<'a> {
    /// `scheme://user:pass@host:port`, without a trailing slash.
    server: &'a str,
    /// The raw (still percent-encoded) database name; may be empty.
    database: &'a str,
    /// `?…` including the question mark, or empty.
    query: &'a str,
}

impl<'a> PgUrl<'a> {
    fn parse(url: &'a str) -> Result<Self, DbError> {
        let (scheme, _) = url
            .split_once("://")
            .ok_or(DbError::InvalidUrl("expected postgres://…"))?;
        if scheme != "postgres" && scheme != "postgresql" {
            return Err(DbError::InvalidUrl("scheme must be postgres or postgresql"));
        }
        let authority_start = scheme.len() + 3;
        let (before_query, query) = match url.find('?') {
            Some(i) => url.split_at(i),
            None => (url, ""),
        };
        let (server, database) = match before_query[authority_start..].find('/') {
            Some(i) => {
                let slash = authority_start + i;
                (&before_query[..slash], &before_query[slash + 1..])
            }
            None => (before_query, ""),
        };
        if server.len() == authority_start {
            return Err(DbError::InvalidUrl("missing host"));
        }
        Ok(Self {
            server,
            database,
            query,
        })
    }
}

/// The (percent-decoded) database name in `database_url`; an error if it names none.
pub fn database_name(database_url: &str) -> Result<String, DbError> {
    let url = PgUrl::parse(database_url)?;
    if url.database.is_empty() {
        return Err(DbError::InvalidUrl("the URL names no database"));
    }
    percent_decode(url.database).ok_or(DbError::InvalidUrl("bad percent-encoding in database name"))
}

/// `database_url` pointing at `database` instead (same server, credentials and parameters).
/// Works on server-only URLs (`postgres://host:5432`) too, which is how the test kit builds
/// per-test URLs.
pub fn with_database(database_url: &str, database: &str) -> Result<String, DbError> {
    let url = PgUrl::parse(database_url)?;
    Ok(format!(
        "{}/{}{}",
        url.server,
        percent_encode(database),
        url.query
    ))
}

/// `name` as a double-quoted SQL identifier, for statements that cannot take bind
/// parameters (`CREATE DATABASE`, `DROP DATABASE`).
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Blocks until this session holds the session-level advisory lock `key`.
///
/// Advisory locks are per database, so processes that must exclude each other have to
/// lock through a connection to the same database.
pub async fn advisory_lock(conn: &mut AsyncPgConnection, key: i64) -> diesel::QueryResult<()> {
    sql_query("SELECT pg_advisory_lock($1)")
        .bind::<BigInt, _>(key)
        .execute(conn)
        .await
        .map(drop)
}

/// Releases a lock taken with [`advisory_lock`]; closing the session releases it too.
pub async fn advisory_unlock(conn: &mut AsyncPgConnection, key: i64) -> diesel::QueryResult<()> {
    sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<BigInt, _>(key)
        .execute(conn)
        .await
        .map(drop)
}

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = Bool)]
    exists: bool,
}

/// Whether the server has a database called `name` (any connection to the server will do).
pub async fn database_exists(
    conn: &mut AsyncPgConnection,
    name: &str,
) -> diesel::QueryResult<bool> {
    sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists")
        .bind::<Text, _>(name)
        .get_result::<Exists>(conn)
        .await
        .map(|row| row.exists)
}

fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_read_from_the_path() -> Result<(), DbError> {
        assert_eq!(
            database_name("postgres://u:p@db:5432/whatsapp?sslmode=disable")?,
            "whatsapp"
        );
        assert_eq!(database_name("postgresql://db/wa%2Dx")?, "wa-x");
        Ok(())
    }

    #[test]
    fn database_name_is_an_error_when_the_url_names_none() {
        assert!(database_name("postgres://postgres@127.0.0.1:5432").is_err());
        assert!(database_name("postgres://postgres@127.0.0.1:5432/").is_err());
        assert!(database_name("mysql://db/x").is_err());
        assert!(database_name("host=db dbname=x").is_err());
        assert!(database_name("postgres:///x").is_err());
    }

    #[test]
    fn with_database_replaces_or_appends_the_database_and_keeps_parameters() -> Result<(), DbError>
    {
        assert_eq!(
            with_database(
                "postgres://u:p@db:5432/whatsapp?sslmode=disable",
                "postgres"
            )?,
            "postgres://u:p@db:5432/postgres?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432", "wa_test_1")?,
            "postgres://postgres@127.0.0.1:5432/wa_test_1"
        );
        assert_eq!(with_database("postgres://h/", "a b")?, "postgres://h/a%20b");
        Ok(())
    }

    #[test]
    fn quote_identifier_doubles_embedded_quotes() {
        assert_eq!(quote_identifier("wa_test"), "\"wa_test\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}

//! Inbound media: the downloader and where files are kept.
//!
//! An inbound image/document/audio/video/sticker is stored as a message first, with a `media` row
//! in state `pending`. The downloader (same process, driven by the database so replicas share the
//! work) claims due rows `FOR UPDATE SKIP LOCKED`, looks the media id up in the Graph API with the
//! tenant's bearer token (the returned URL is valid 5 minutes, so it is fetched right away, with
//! the same bearer header), checks the bytes against the webhook's base64 SHA-256, encrypts them
//! and hands them to a [`MediaStore`], then marks the row `stored`. A failure is retried with
//! exponential backoff up to `max_attempts`, then the row is `failed` with the last error.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use diesel_async::AsyncConnection;
use futures_util::future::BoxFuture;
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use wa_db::PgPool;
use wa_db::models::conversation::Media;
use wa_service::tenants::TenantDirectory;

use crate::config::MediaConfig;
use crate::crypto::Cipher;

/// Downloads claimed per round.
const CLAIM_BATCH: i64 = 16;
/// How long a claimed row is hidden from other downloaders (covers a slow download).
const CLAIM_LEASE: Duration = Duration::from_secs(300);
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Where encrypted media files live. The filesystem store is the default; an S3 store would
/// implement the same three calls.
pub trait MediaStore: Send + Sync + 'static {
    /// Stores `bytes` (already encrypted) under `key`, replacing any previous file.
    fn put<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> BoxFuture<'a, std::io::Result<()>>;
    /// Reads the file under `key`.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, std::io::Result<Vec<u8>>>;
    /// Deletes the file under `key`; deleting a missing file is not an error.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, std::io::Result<()>>;
}

/// Files under a directory (`MEDIA_DIR`), one per key.
#[derive(Debug, Clone)]
pub struct FsMediaStore {
    root: PathBuf,
}

impl FsMediaStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory files go to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> std::io::Result<PathBuf> {
        // Keys are ours (`tenant/row-id.bin`), but never let one escape the root.
        if key.is_empty()
            || key
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "invalid media key",
            ));
        }
        Ok(self.root.join(key))
    }
}

impl MediaStore for FsMediaStore {
    fn put<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> BoxFuture<'a, std::io::Result<()>> {
        Box::pin(async move {
            let path = self.path_of(key)?;
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            let tmp = path.with_extension(format!("tmp-{}", rand::random::<u32>()));
            tokio::fs::write(&tmp, &bytes).await?;
            tokio::fs::rename(&tmp, &path).await
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, std::io::Result<Vec<u8>>> {
        Box::pin(async move { tokio::fs::read(self.path_of(key)?).await })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, std::io::Result<()>> {
        Box::pin(async move {
            match tokio::fs::remove_file(self.path_of(key)?).await {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        })
    }
}

/// Why a download attempt failed; texts never contain tokens or URLs with tokens.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The tenant is not configured (any more).
    #[error("tenant {0} is not configured")]
    UnknownTenant(String),
    /// The Graph lookup failed.
    #[error("media lookup answered HTTP {0}")]
    Lookup(u16),
    /// The download failed.
    #[error("media download answered HTTP {0}")]
    Download(u16),
    /// Network trouble.
    #[error("network: {0}")]
    Network(String),
    /// The bytes do not match the webhook's SHA-256.
    #[error("sha256 mismatch")]
    Checksum,
    /// Encrypting or storing failed.
    #[error("storing: {0}")]
    Store(String),
}

/// Looks media ids up in the Graph API and downloads them.
#[derive(Clone)]
pub struct GraphMediaClient {
    http: reqwest::Client,
    base_url: String,
    api_version: String,
}

#[derive(Deserialize)]
struct Lookup {
    url: String,
}

impl GraphMediaClient {
    /// A client for `base_url` (e.g. `https://graph.facebook.com`) and `api_version` (`v24.0`).
    pub fn new(base_url: &str, api_version: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("conversation-sync/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_version: api_version.to_owned(),
        })
    }

    /// Fetches the file of `media_id` with the tenant's token.
    #[tracing::instrument(name = "graph.media_download", skip_all, fields(media_id))]
    pub async fn download(
        &self,
        token: &str,
        phone_number_id: &str,
        media_id: &str,
    ) -> Result<Vec<u8>, MediaError> {
        let net = |e: reqwest::Error| MediaError::Network(e.without_url().to_string());
        let lookup = self
            .http
            .get(format!(
                "{}/{}/{}?phone_number_id={}",
                self.base_url,
                self.api_version,
                url_segment(media_id),
                url_segment(phone_number_id)
            ))
            .bearer_auth(token)
            .send()
            .await
            .map_err(net)?;
        if !lookup.status().is_success() {
            return Err(MediaError::Lookup(lookup.status().as_u16()));
        }
        let lookup: Lookup = lookup.json().await.map_err(net)?;
        let file = self
            .http
            .get(&lookup.url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(net)?;
        if !file.status().is_success() {
            return Err(MediaError::Download(file.status().as_u16()));
        }
        Ok(file.bytes().await.map_err(net)?.to_vec())
    }
}

/// Keeps only characters that are safe in a URL path or query (Meta's ids are digits).
fn url_segment(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .collect()
}

/// The downloader: claims due media rows and stores their files.
#[derive(Clone)]
pub struct MediaWorker {
    pool: PgPool,
    cipher: Cipher,
    tenants: Arc<TenantDirectory>,
    client: GraphMediaClient,
    store: Arc<dyn MediaStore>,
    config: MediaConfig,
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MediaRound {
    /// Files stored.
    pub stored: usize,
    /// Attempts that failed and will be retried.
    pub retrying: usize,
    /// Downloads given up.
    pub failed: usize,
}

impl MediaRound {
    fn claimed(&self) -> usize {
        self.stored + self.retrying + self.failed
    }
}

/// The storage key of a media row's file.
pub fn storage_key(tenant: &str, media_row: i64) -> String {
    let tenant: String = tenant
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{tenant}/{media_row}.bin")
}

/// Verifies `bytes` against Meta's base64 SHA-256 (hex accepted too, as `GET /{media-id}` uses it).
pub fn checksum_matches(bytes: &[u8], expected: &str) -> bool {
    let digest = Sha256::digest(bytes);
    let expected = expected.trim();
    STANDARD.encode(digest) == expected || hex::encode(digest).eq_ignore_ascii_case(expected)
}

impl MediaWorker {
    /// Builds a worker.
    pub fn new(
        pool: PgPool,
        cipher: Cipher,
        tenants: Arc<TenantDirectory>,
        client: GraphMediaClient,
        store: Arc<dyn MediaStore>,
        config: MediaConfig,
    ) -> Self {
        Self {
            pool,
            cipher,
            tenants,
            client,
            store,
            config,
        }
    }

    /// Claims and processes the downloads due now (tests drive the worker with this).
    pub async fn run_once(&self) -> anyhow::Result<MediaRound> {
        let mut conn = self.pool.get().await?;
        let now = Utc::now();
        let lease = now + chrono::Duration::from_std(CLAIM_LEASE)?;
        let claimed = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                Media::claim_due(conn, now, lease, CLAIM_BATCH).await
            })
            .await?;
        let mut round = MediaRound::default();
        for item in claimed {
            match self.fetch_and_store(&item).await {
                Ok((key, key_id, size)) => {
                    Media::mark_stored(&mut conn, item.id, &key, &key_id, size).await?;
                    metrics::counter!("wa_sync_media_total", "tenant" => item.tenant_id.clone(), "outcome" => "stored").increment(1);
                    round.stored += 1;
                }
                Err(error) => {
                    let attempts = item.attempts + 1;
                    let retry_at = (attempts < self.config.max_attempts).then(|| {
                        let factor =
                            2u32.saturating_pow(u32::try_from(attempts - 1).unwrap_or(0).min(16));
                        let delay = self
                            .config
                            .retry_base
                            .saturating_mul(factor)
                            .min(MAX_BACKOFF);
                        Utc::now()
                            + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero())
                    });
                    let outcome = if retry_at.is_some() {
                        "retrying"
                    } else {
                        "failed"
                    };
                    tracing::warn!(media_row = item.id, attempts, error = %error, outcome, "media download failed");
                    metrics::counter!("wa_sync_media_total", "tenant" => item.tenant_id.clone(), "outcome" => outcome).increment(1);
                    Media::mark_attempt_failed(&mut conn, item.id, &error.to_string(), retry_at)
                        .await?;
                    if retry_at.is_some() {
                        round.retrying += 1;
                    } else {
                        round.failed += 1;
                    }
                }
            }
        }
        Ok(round)
    }

    async fn fetch_and_store(&self, item: &Media) -> Result<(String, String, i64), MediaError> {
        let tenant = self
            .tenants
            .get(&item.tenant_id)
            .ok_or_else(|| MediaError::UnknownTenant(item.tenant_id.clone()))?;
        let bytes = self
            .client
            .download(
                tenant.access_token.expose_secret(),
                &tenant.phone_number_id,
                &item.media_id,
            )
            .await?;
        if let Some(expected) = item.sha256.as_deref()
            && !checksum_matches(&bytes, expected)
        {
            return Err(MediaError::Checksum);
        }
        let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        let (blob, key_id) = self
            .cipher
            .seal_blob(&bytes)
            .map_err(|e| MediaError::Store(e.to_string()))?;
        let key = storage_key(&item.tenant_id, item.id);
        self.store
            .put(&key, blob)
            .await
            .map_err(|e| MediaError::Store(e.to_string()))?;
        Ok((key, key_id, size))
    }

    /// Runs rounds until `shutdown`; polls again at once while there is work, else after the poll interval.
    pub async fn run_until(self, shutdown: CancellationToken) {
        loop {
            let busy = match self.run_once().await {
                Ok(round) => round.claimed() > 0,
                Err(error) => {
                    tracing::warn!(error = %error, "media round failed");
                    false
                }
            };
            if !busy {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(self.config.poll_interval) => {}
                }
            } else if shutdown.is_cancelled() {
                return;
            }
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_compared_in_base64_or_hex() {
        let digest = Sha256::digest(b"abc");
        assert!(checksum_matches(b"abc", &STANDARD.encode(digest)));
        assert!(checksum_matches(b"abc", &hex::encode(digest)));
        assert!(!checksum_matches(b"abd", &STANDARD.encode(digest)));
    }

    #[test]
    fn storage_keys_cannot_escape_the_root() {
        assert_eq!(storage_key("../evil", 7), "___evil/7.bin");
        let store = FsMediaStore::new("/tmp/x");
        assert!(store.path_of("../etc/passwd").is_err());
        assert!(store.path_of("a/7.bin").is_ok());
    }
}

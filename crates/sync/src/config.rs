//! conversation-sync's configuration, read once from the environment; every error names the variable.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use wa_service::env::{self, ConfigError};
use wa_service::tenants::TenantDirectory;

use crate::crypto::Cipher;

/// Graph API version used for media lookups when `WHATSAPP_API_VERSION` is unset.
pub const DEFAULT_API_VERSION: &str = "v24.0";
/// The rate card when `PRICING_RATES_USD` is unset: USD per delivered message by pricing category
/// (Meta's Indonesia rates, rounded; `service` conversations are free).
pub const DEFAULT_PRICING_RATES_USD: &str =
    "marketing=0.0411,utility=0.02,authentication=0.03,service=0";

/// How events are written to PostgreSQL.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Most events per transaction (`SYNC_BATCH_SIZE`, 1000).
    pub max_events: usize,
    /// Longest wait for a batch to fill (`SYNC_BATCH_WAIT_MS`, 10).
    pub max_wait: Duration,
}

/// Deliveries one consumer may hold (RabbitMQ caps a quorum queue's prefetch at 2,000).
const MAX_IN_FLIGHT: usize = 2000;

impl BatchConfig {
    /// Deliveries handled at once, and the prefetch: three batches (at most 2,000), so that while
    /// one batch is in its transaction the one before can be published and acked and the next
    /// one fills, instead of the database waiting for the broker's confirms.
    pub fn in_flight(&self) -> usize {
        self.max_events.max(1).saturating_mul(3).min(MAX_IN_FLIGHT)
    }
}

/// Inbound media downloads.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Where encrypted files go (`MEDIA_DIR`, `./media`).
    pub dir: PathBuf,
    /// Attempts before a download is `failed` (`MEDIA_MAX_ATTEMPTS`, 6).
    pub max_attempts: i32,
    /// First retry delay, doubled per attempt (`MEDIA_RETRY_BASE_MS`, 2000).
    pub retry_base: Duration,
    /// Idle poll interval of the downloader (`MEDIA_POLL_MS`, 1000).
    pub poll_interval: Duration,
}

/// Everything the service needs; secrets are `SecretString` and never printed.
#[derive(Debug, Clone)]
pub struct Config {
    /// `AMQP_URL`.
    pub amqp_url: String,
    /// `DATABASE_URL`.
    pub database_url: String,
    /// `SYNC_HTTP_ADDR` (`0.0.0.0:8082`): read API plus health endpoints.
    pub http_addr: String,
    /// `SYNC_API_TOKEN`: bearer token of the read API.
    pub api_token: SecretString,
    /// `MESSAGE_ENCRYPTION_KEY` (+ `MESSAGE_ENCRYPTION_KEYS_OLD`).
    pub cipher: Cipher,
    /// `RETENTION_DAYS` (90).
    pub retention_days: u32,
    /// `RETENTION_INTERVAL_SECS` (3600): how often the retention job runs.
    pub retention_interval: Duration,
    /// Tenants, by phone number id (`WHATSAPP_*`, `TENANTS_FILE`).
    pub tenants: TenantDirectory,
    /// `WHATSAPP_GRAPH_BASE_URL`.
    pub graph_base_url: String,
    /// `WHATSAPP_API_VERSION`.
    pub api_version: String,
    /// Batching.
    pub batch: BatchConfig,
    /// Media downloads.
    pub media: MediaConfig,
    /// `PRICING_RATES_USD`: `category=usd,…`.
    pub pricing_rates_usd: BTreeMap<String, f64>,
    /// `SYNC_DB_POOL_SIZE` (10).
    pub db_pool_size: usize,
}

impl Config {
    /// Reads and validates the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let key = env::secret_var("MESSAGE_ENCRYPTION_KEY")?;
        let old = env::var("MESSAGE_ENCRYPTION_KEYS_OLD").unwrap_or_default();
        // Checked alone first so an error names the variable that is wrong.
        Cipher::from_base64(key.expose_secret(), "")
            .map_err(|e| env::invalid("MESSAGE_ENCRYPTION_KEY", e.to_string()))?;
        let cipher = Cipher::from_base64(key.expose_secret(), &old)
            .map_err(|e| env::invalid("MESSAGE_ENCRYPTION_KEYS_OLD", e.to_string()))?;
        let api_token = env::secret_var("SYNC_API_TOKEN")?;
        if api_token.expose_secret().trim().len() < 8 || api_token.expose_secret() == "change-me" {
            return Err(env::invalid(
                "SYNC_API_TOKEN",
                "must be at least 8 characters and not the example value",
            ));
        }
        let retention_days: u32 = env::var_parsed("RETENTION_DAYS", 90)?;
        if retention_days == 0 {
            return Err(env::invalid("RETENTION_DAYS", "must be at least 1"));
        }
        let max_events: usize = env::var_parsed("SYNC_BATCH_SIZE", 1000)?;
        if max_events == 0 {
            return Err(env::invalid("SYNC_BATCH_SIZE", "must be at least 1"));
        }
        let pricing_rates_usd =
            parse_rates(&env::var_or("PRICING_RATES_USD", DEFAULT_PRICING_RATES_USD))
                .map_err(|reason| env::invalid("PRICING_RATES_USD", reason))?;
        Ok(Self {
            amqp_url: env::var_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            database_url: env::var_or(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/whatsapp",
            ),
            http_addr: env::var_or("SYNC_HTTP_ADDR", "0.0.0.0:8082"),
            api_token,
            cipher,
            retention_days,
            retention_interval: Duration::from_secs(env::var_parsed(
                "RETENTION_INTERVAL_SECS",
                3600,
            )?),
            tenants: TenantDirectory::from_env()?,
            graph_base_url: env::var_or("WHATSAPP_GRAPH_BASE_URL", "https://graph.facebook.com"),
            api_version: env::var_or("WHATSAPP_API_VERSION", DEFAULT_API_VERSION),
            batch: BatchConfig {
                max_events,
                max_wait: Duration::from_millis(env::var_parsed("SYNC_BATCH_WAIT_MS", 10)?),
            },
            media: MediaConfig {
                dir: PathBuf::from(env::var_or("MEDIA_DIR", "./media")),
                max_attempts: env::var_parsed("MEDIA_MAX_ATTEMPTS", 6)?,
                retry_base: Duration::from_millis(env::var_parsed("MEDIA_RETRY_BASE_MS", 2000)?),
                poll_interval: Duration::from_millis(env::var_parsed("MEDIA_POLL_MS", 1000)?),
            },
            pricing_rates_usd,
            db_pool_size: env::var_parsed("SYNC_DB_POOL_SIZE", 10)?,
        })
    }
}

/// Parses a rate card `marketing=0.0411,utility=0.02`; categories are lower-cased.
pub fn parse_rates(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let mut rates = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (category, rate) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not category=usd"))?;
        let rate: f64 = rate
            .trim()
            .parse()
            .map_err(|e| format!("rate of {category:?}: {e}"))?;
        if !rate.is_finite() || rate < 0.0 {
            return Err(format!(
                "rate of {category:?} must be a non-negative number"
            ));
        }
        rates.insert(category.trim().to_ascii_lowercase(), rate);
    }
    Ok(rates)
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
    fn the_default_rate_card_parses() {
        let rates = parse_rates(DEFAULT_PRICING_RATES_USD).unwrap();
        assert_eq!(rates.get("marketing"), Some(&0.0411));
        assert_eq!(rates.get("service"), Some(&0.0));
        assert_eq!(rates.len(), 4);
    }

    #[test]
    fn a_bad_rate_card_names_the_item() {
        assert!(parse_rates("marketing").unwrap_err().contains("marketing"));
        assert!(parse_rates("utility=-1").unwrap_err().contains("utility"));
        assert!(parse_rates("utility=abc").unwrap_err().contains("utility"));
    }
}

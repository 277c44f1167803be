//! The sender's configuration, read from the environment only; every error names the variable.

use std::time::Duration;

use wa_service::env::{self, ConfigError};
use wa_service::tenants::TenantDirectory;

/// Default Graph API version (a current one).
pub const DEFAULT_API_VERSION: &str = "v24.0";
/// Default per-number cap, summed over every replica (Meta's default throughput).
pub const DEFAULT_RATE_PER_SECOND: u32 = 80;

/// Everything the sender needs; built once by [`Config::from_env`] and passed to `App::build`.
#[derive(Debug, Clone)]
pub struct Config {
    /// `AMQP_URL`.
    pub amqp_url: String,
    /// `DATABASE_URL`.
    pub database_url: String,
    /// `SENDER_HTTP_ADDR`: `/healthz`, `/readyz`, `/metrics`.
    pub http_addr: String,
    /// Tenants (`WHATSAPP_*` + `DEFAULT_TENANT_ID`, `TENANTS_FILE`).
    pub tenants: TenantDirectory,
    /// Graph API client settings.
    pub graph: GraphConfig,
    /// Sending policy.
    pub send: SendConfig,
    /// Consumers.
    pub consumer: ConsumerConfig,
    /// Database pool size (`SENDER_DB_POOL_SIZE`).
    pub db_pool_size: usize,
}

/// Graph API client settings.
#[derive(Debug, Clone)]
pub struct GraphConfig {
    /// `WHATSAPP_GRAPH_BASE_URL` (`https://graph.facebook.com`).
    pub base_url: String,
    /// `WHATSAPP_API_VERSION` ([`DEFAULT_API_VERSION`]).
    pub api_version: String,
    /// `SENDER_GRAPH_TIMEOUT_MS` (15000): a send without an answer by then has an unknown outcome.
    pub timeout: Duration,
}

/// Sending policy.
#[derive(Debug, Clone)]
pub struct SendConfig {
    /// `SENDER_RATE_PER_SECOND` (80): per business number, summed over every replica.
    pub rate_per_second: u32,
    /// `SENDER_RATE_MARGIN_PERMILLE` (20): slots are spaced this much wider than `1/rate`, so network
    /// jitter cannot push `rate + 1` sends into one second as Meta measures it.
    pub rate_margin_permille: u32,
    /// `SENDER_PAIR_INTERVAL_MS` (6000): minimum spacing between two sends to one recipient.
    pub pair_interval: Duration,
    /// `SENDER_MAX_ATTEMPTS` (8): Graph calls per job before `retries_exhausted`.
    pub max_attempts: u32,
    /// `SENDER_WINDOW_MARGIN_SECS` (900): the 24-hour window is treated as closed this much early.
    pub window_margin: Duration,
    /// `SENDER_UNKNOWN_OUTCOME_TIMEOUT_SECS` (600): an unknown outcome without any status by then fails.
    pub unknown_outcome_timeout: Duration,
    /// `SENDER_SETTLE_INTERVAL_MS` (30000): how often unknown outcomes are checked.
    pub settle_interval: Duration,
    /// `SENDER_AUTH_PROBE_INTERVAL_MS` (30000): how often a paused tenant's credentials are probed.
    pub probe_interval: Duration,
}

impl Default for SendConfig {
    /// The defaults of the environment variables above (one place for both `from_env` and tests).
    fn default() -> Self {
        Self {
            rate_per_second: DEFAULT_RATE_PER_SECOND,
            rate_margin_permille: 20,
            pair_interval: Duration::from_secs(6),
            max_attempts: 8,
            window_margin: Duration::from_secs(900),
            unknown_outcome_timeout: Duration::from_secs(600),
            settle_interval: Duration::from_secs(30),
            probe_interval: Duration::from_secs(30),
        }
    }
}

/// Consumer tuning.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// `SENDER_PREFETCH` (500): deliveries in flight per queue.
    pub prefetch: u16,
    /// `SENDER_CONCURRENCY` (400): handlers at once per queue (most wait on the limiter).
    pub concurrency: usize,
}

fn millis(name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    let default = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
    Ok(Duration::from_millis(env::var_parsed(name, default)?))
}

fn secs(name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    Ok(Duration::from_secs(env::var_parsed(
        name,
        default.as_secs(),
    )?))
}

impl Config {
    /// Reads the environment; fails naming the variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        let defaults = SendConfig::default();
        let rate_per_second: u32 =
            env::var_parsed("SENDER_RATE_PER_SECOND", defaults.rate_per_second)?;
        if rate_per_second == 0 {
            return Err(env::invalid("SENDER_RATE_PER_SECOND", "must be at least 1"));
        }
        let max_attempts: u32 = env::var_parsed("SENDER_MAX_ATTEMPTS", defaults.max_attempts)?;
        if max_attempts == 0 {
            return Err(env::invalid("SENDER_MAX_ATTEMPTS", "must be at least 1"));
        }
        let prefetch: u16 = env::var_parsed("SENDER_PREFETCH", 500)?;
        let concurrency: usize = env::var_parsed("SENDER_CONCURRENCY", 400)?;
        if prefetch == 0 || concurrency == 0 {
            return Err(env::invalid(
                "SENDER_PREFETCH",
                "prefetch and SENDER_CONCURRENCY must be at least 1",
            ));
        }
        let tenants = TenantDirectory::from_env()?;
        if tenants.is_empty() {
            return Err(env::invalid(
                "WHATSAPP_PHONE_NUMBER_ID",
                "no tenant configured (set WHATSAPP_PHONE_NUMBER_ID or TENANTS_FILE)",
            ));
        }
        let base_url = env::var_or("WHATSAPP_GRAPH_BASE_URL", "https://graph.facebook.com");
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            return Err(env::invalid(
                "WHATSAPP_GRAPH_BASE_URL",
                "must be an http(s) URL",
            ));
        }
        Ok(Self {
            amqp_url: env::var_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            database_url: env::var_or(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/whatsapp",
            ),
            http_addr: env::var_or("SENDER_HTTP_ADDR", "0.0.0.0:8081"),
            tenants,
            graph: GraphConfig {
                base_url: base_url.trim_end_matches('/').to_owned(),
                api_version: env::var_or("WHATSAPP_API_VERSION", DEFAULT_API_VERSION),
                timeout: millis("SENDER_GRAPH_TIMEOUT_MS", Duration::from_secs(15))?,
            },
            send: SendConfig {
                rate_per_second,
                rate_margin_permille: env::var_parsed(
                    "SENDER_RATE_MARGIN_PERMILLE",
                    defaults.rate_margin_permille,
                )?,
                pair_interval: millis("SENDER_PAIR_INTERVAL_MS", defaults.pair_interval)?,
                max_attempts,
                window_margin: secs("SENDER_WINDOW_MARGIN_SECS", defaults.window_margin)?,
                unknown_outcome_timeout: secs(
                    "SENDER_UNKNOWN_OUTCOME_TIMEOUT_SECS",
                    defaults.unknown_outcome_timeout,
                )?,
                settle_interval: millis("SENDER_SETTLE_INTERVAL_MS", defaults.settle_interval)?,
                probe_interval: millis("SENDER_AUTH_PROBE_INTERVAL_MS", defaults.probe_interval)?,
            },
            consumer: ConsumerConfig {
                prefetch,
                concurrency,
            },
            db_pool_size: env::var_parsed("SENDER_DB_POOL_SIZE", 16)?,
        })
    }
}

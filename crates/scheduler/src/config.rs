//! The scheduler's configuration, read from the environment only; every error names the variable.

use std::time::Duration;

use wa_service::env::{self, ConfigError};
use wa_service::tenants::TenantDirectory;

use crate::planning::{SendWindow, parse_offsets};

/// Default `SCHEDULER_HTTP_ADDR` (contract).
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8083";
/// Graph API version used when `WHATSAPP_API_VERSION` is unset.
pub const DEFAULT_API_VERSION: &str = "v24.0";

/// Everything the scheduler needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Broker URL (`AMQP_URL`).
    pub amqp_url: String,
    /// PostgreSQL URL (`DATABASE_URL`).
    pub database_url: String,
    /// Pool size (`SCHEDULER_DB_POOL_SIZE`).
    pub db_pool_size: usize,
    /// Health/metrics listener (`SCHEDULER_HTTP_ADDR`).
    pub http_addr: String,
    /// Tenants (credentials, WABA, time zone).
    pub tenants: TenantDirectory,
    /// Reminder planning rules.
    pub reminders: ReminderConfig,
    /// Where the Graph API is (template submit/sync).
    pub graph: GraphConfig,
    /// Sync template statuses from Meta at start (`SCHEDULER_SYNC_TEMPLATES_ON_START`), retrying
    /// until it succeeds, then every `template_sync_interval`.
    pub sync_templates_on_start: bool,
    /// Pause between template syncs (`SCHEDULER_TEMPLATE_SYNC_SECS`, default 600; webhooks carry
    /// changes in between, the sync only repairs missed ones). Meta allows 200 such calls an hour.
    pub template_sync_interval: Duration,
}

/// How reminders are planned and claimed.
#[derive(Debug, Clone)]
pub struct ReminderConfig {
    /// `REMINDER_OFFSETS_DAYS`, sorted ascending.
    pub offsets_days: Vec<i32>,
    /// `REMINDER_SEND_WINDOW`.
    pub window: SendWindow,
    /// Pause between ticks (`SCHEDULER_TICK_SECS`).
    pub tick_interval: Duration,
    /// Rows claimed per transaction (`SCHEDULER_BATCH_SIZE`).
    pub batch_size: i64,
}

impl Default for ReminderConfig {
    fn default() -> Self {
        Self {
            offsets_days: vec![-7, -3, -1, 0],
            window: SendWindow::default(),
            tick_interval: Duration::from_secs(5),
            batch_size: 500,
        }
    }
}

/// The Graph API endpoint for template management.
#[derive(Debug, Clone)]
pub struct GraphConfig {
    /// `WHATSAPP_GRAPH_BASE_URL` without trailing slash.
    pub base_url: String,
    /// `WHATSAPP_API_VERSION`, e.g. `v24.0`.
    pub api_version: String,
}

impl Default for GraphConfig {
    fn default() -> Self {
        Self {
            base_url: "https://graph.facebook.com".into(),
            api_version: DEFAULT_API_VERSION.into(),
        }
    }
}

impl Config {
    /// Reads and validates the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let offsets_days = parse_offsets(&env::var_or("REMINDER_OFFSETS_DAYS", "-7,-3,-1,0"))
            .map_err(|r| env::invalid("REMINDER_OFFSETS_DAYS", r))?;
        let window: SendWindow = env::var_or("REMINDER_SEND_WINDOW", "09:00-20:00")
            .parse()
            .map_err(|r| env::invalid("REMINDER_SEND_WINDOW", r))?;
        let tick_secs: u64 = env::var_parsed("SCHEDULER_TICK_SECS", 5)?;
        if tick_secs == 0 {
            return Err(env::invalid("SCHEDULER_TICK_SECS", "must be at least 1"));
        }
        let batch_size: i64 = env::var_parsed("SCHEDULER_BATCH_SIZE", 500)?;
        if !(1..=10_000).contains(&batch_size) {
            return Err(env::invalid(
                "SCHEDULER_BATCH_SIZE",
                "must be between 1 and 10000",
            ));
        }
        let db_pool_size: usize =
            env::var_parsed("SCHEDULER_DB_POOL_SIZE", wa_db::DEFAULT_POOL_SIZE)?;
        if db_pool_size == 0 {
            return Err(env::invalid("SCHEDULER_DB_POOL_SIZE", "must be at least 1"));
        }
        let api_version = env::var_or("WHATSAPP_API_VERSION", DEFAULT_API_VERSION);
        if !api_version.starts_with('v') {
            return Err(env::invalid("WHATSAPP_API_VERSION", "must look like v24.0"));
        }
        let base_url = env::var_or("WHATSAPP_GRAPH_BASE_URL", "https://graph.facebook.com");
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(env::invalid(
                "WHATSAPP_GRAPH_BASE_URL",
                "must be an http(s) URL",
            ));
        }
        let template_sync_secs: u64 = env::var_parsed("SCHEDULER_TEMPLATE_SYNC_SECS", 600)?;
        if template_sync_secs < 60 {
            return Err(env::invalid(
                "SCHEDULER_TEMPLATE_SYNC_SECS",
                "must be at least 60 (Meta's rate limit)",
            ));
        }
        let tenants = TenantDirectory::from_env()?;
        if tenants.is_empty() {
            return Err(env::invalid(
                "WHATSAPP_PHONE_NUMBER_ID",
                "no tenant configured (set WHATSAPP_PHONE_NUMBER_ID or TENANTS_FILE)",
            ));
        }
        Ok(Self {
            amqp_url: env::var_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            database_url: env::var_or(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/whatsapp",
            ),
            db_pool_size,
            http_addr: env::var_or("SCHEDULER_HTTP_ADDR", DEFAULT_HTTP_ADDR),
            tenants,
            reminders: ReminderConfig {
                offsets_days,
                window,
                tick_interval: Duration::from_secs(tick_secs),
                batch_size,
            },
            graph: GraphConfig {
                base_url: base_url.trim_end_matches('/').to_owned(),
                api_version,
            },
            sync_templates_on_start: env::var_parsed("SCHEDULER_SYNC_TEMPLATES_ON_START", true)?,
            template_sync_interval: Duration::from_secs(template_sync_secs),
        })
    }
}

//! Configuration: [`MockConfig`] for `spawn`, and the `GRAPH_MOCK_*` environment/flags of the binary ([`Cli`]).

use std::net::SocketAddr;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Parser};
use serde::{Deserialize, Serialize};

/// Default WABA id (Meta's documentation example).
pub const DEFAULT_WABA_ID: &str = "102290129340398";
/// Default business phone number id (Meta's documentation example).
pub const DEFAULT_PHONE_NUMBER_ID: &str = "106540352242922";
/// Default display number of the first business phone number (digits, as in webhook metadata).
pub const DEFAULT_DISPLAY_NUMBER: &str = "6221555000111";
/// Default accepted bearer token.
pub const DEFAULT_TOKEN: &str = "graph-mock-token";
/// Token that always answers 190 "Session has expired" (scripted auth failure).
pub const EXPIRED_TOKEN: &str = "graph-mock-expired-token";

/// One business phone number served by the mock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusinessNumber {
    /// Graph id used in `/{version}/{phone_number_id}/messages`.
    pub phone_number_id: String,
    /// Digits shown as `metadata.display_phone_number`; sending to it answers 131021.
    pub display_phone_number: String,
}

/// Everything `spawn` needs; the defaults describe the demo set-up, [`MockConfig::for_tests`] a fast one.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Listen address; port 0 picks a free port.
    pub addr: SocketAddr,
    /// Accepted bearer tokens.
    pub tokens: Vec<String>,
    /// Tokens answered with 190 "Session has expired" (subcode 463).
    pub expired_tokens: Vec<String>,
    /// Business numbers; an unknown phone number id answers Meta's 100 "Unsupported post request".
    pub phone_numbers: Vec<BusinessNumber>,
    /// WhatsApp Business Account id (webhook `entry[].id`, template management path).
    pub waba_id: String,
    /// Per-number throughput cap in a sliding one-second window (Meta's default is 80).
    pub rate_per_second: u32,
    /// Minimum spacing between two accepted sends from one number to one recipient; zero disables the pair rate.
    pub pair_interval: Duration,
    /// Our webhook ingress; `None` means status and template webhooks are dropped (counted as skipped).
    pub webhook_url: Option<String>,
    /// App secret used to sign webhooks (`X-Hub-Signature-256`).
    pub app_secret: String,
    /// Delay between an accepted send and `sent`, and between successive statuses.
    pub status_delay: Duration,
    /// Send `read` before `delivered`.
    pub out_of_order: bool,
    /// Send every status twice (the copy in a later POST).
    pub duplicate_statuses: bool,
    /// Extra latency added to every Graph API answer.
    pub latency: Duration,
    /// Every this many message sends (0: never), the worker reading that send stalls (its thread
    /// blocked) for [`MockConfig::stall`] first: a receiver hiccup that holds up the requests queued
    /// on its connections and counts them late, as a congested link or a busy front end does.
    pub stall_every: u64,
    /// How long one stall lasts.
    pub stall: Duration,
    /// How long the scripted slow recipient takes to answer.
    pub slow_delay: Duration,
    /// Lifetime of a media download URL (Meta: 5 minutes).
    pub media_url_ttl: Duration,
    /// Time before a created template is approved or rejected.
    pub template_review_delay: Duration,
    /// How many requests the recorder keeps (oldest dropped first).
    pub recorder_capacity: usize,
    /// Delivery attempts per webhook POST before giving up.
    pub webhook_max_attempts: u32,
    /// First retry delay; doubles per attempt (capped at 30 s).
    pub webhook_retry_base: Duration,
    /// Timeout of one webhook POST.
    pub webhook_timeout: Duration,
    /// Most statuses in one webhook POST (Meta batches up to 1000).
    pub webhook_batch_max: usize,
    /// actix worker threads.
    pub workers: usize,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8090)),
            tokens: vec![DEFAULT_TOKEN.to_owned()],
            expired_tokens: vec![EXPIRED_TOKEN.to_owned()],
            phone_numbers: vec![BusinessNumber {
                phone_number_id: DEFAULT_PHONE_NUMBER_ID.to_owned(),
                display_phone_number: DEFAULT_DISPLAY_NUMBER.to_owned(),
            }],
            waba_id: DEFAULT_WABA_ID.to_owned(),
            rate_per_second: 80,
            pair_interval: Duration::from_millis(6000),
            webhook_url: None,
            app_secret: String::new(),
            status_delay: Duration::from_millis(300),
            out_of_order: false,
            duplicate_statuses: false,
            latency: Duration::ZERO,
            stall_every: 0,
            stall: Duration::ZERO,
            slow_delay: Duration::from_millis(3000),
            media_url_ttl: Duration::from_secs(300),
            template_review_delay: Duration::from_millis(2000),
            recorder_capacity: 100_000,
            webhook_max_attempts: 5,
            webhook_retry_base: Duration::from_millis(500),
            webhook_timeout: Duration::from_secs(5),
            webhook_batch_max: 1000,
            workers: 2,
        }
    }
}

impl MockConfig {
    /// Random port on 127.0.0.1, one worker, no status or review delay, fast webhook retries.
    pub fn for_tests() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            status_delay: Duration::ZERO,
            template_review_delay: Duration::ZERO,
            webhook_retry_base: Duration::from_millis(50),
            webhook_timeout: Duration::from_secs(2),
            slow_delay: Duration::from_millis(1500),
            workers: 1,
            ..Self::default()
        }
    }

    /// Checks the invariants `spawn` relies on; the error names the `GRAPH_MOCK_*` variable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tokens.is_empty() || self.tokens.iter().any(|t| t.trim().is_empty()) {
            return Err(ConfigError::new(
                "GRAPH_MOCK_TOKEN",
                "needs at least one non-empty token",
            ));
        }
        if self.phone_numbers.is_empty() {
            return Err(ConfigError::new(
                "GRAPH_MOCK_PHONE_NUMBER_IDS",
                "needs at least one phone number id",
            ));
        }
        for n in &self.phone_numbers {
            if n.phone_number_id.is_empty()
                || !n.phone_number_id.chars().all(|c| c.is_ascii_digit())
            {
                return Err(ConfigError::new(
                    "GRAPH_MOCK_PHONE_NUMBER_IDS",
                    "phone number ids must be digits",
                ));
            }
            if n.display_phone_number.len() < 8
                || !n.display_phone_number.chars().all(|c| c.is_ascii_digit())
            {
                return Err(ConfigError::new(
                    "GRAPH_MOCK_PHONE_NUMBER_IDS",
                    "display numbers (after '=') must be at least 8 digits",
                ));
            }
        }
        if self.waba_id.is_empty() || !self.waba_id.chars().all(|c| c.is_ascii_digit()) {
            return Err(ConfigError::new("GRAPH_MOCK_WABA_ID", "must be digits"));
        }
        if self.rate_per_second == 0 {
            return Err(ConfigError::new(
                "GRAPH_MOCK_RATE_PER_SECOND",
                "must be at least 1",
            ));
        }
        if let Some(url) = &self.webhook_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::new(
                    "GRAPH_MOCK_WEBHOOK_URL",
                    "must be an http(s) URL",
                ));
            }
            if self.app_secret.is_empty() {
                return Err(ConfigError::new(
                    "GRAPH_MOCK_APP_SECRET",
                    "is required when GRAPH_MOCK_WEBHOOK_URL is set",
                ));
            }
        }
        if self.recorder_capacity == 0 {
            return Err(ConfigError::new(
                "GRAPH_MOCK_RECORDER_CAPACITY",
                "must be at least 1",
            ));
        }
        if self.webhook_max_attempts == 0 {
            return Err(ConfigError::new(
                "GRAPH_MOCK_WEBHOOK_MAX_ATTEMPTS",
                "must be at least 1",
            ));
        }
        if self.workers == 0 {
            return Err(ConfigError::new("GRAPH_MOCK_WORKERS", "must be at least 1"));
        }
        Ok(())
    }
}

/// A configuration problem, naming the variable at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable} {reason}")]
pub struct ConfigError {
    /// The `GRAPH_MOCK_*` variable.
    pub variable: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    fn new(variable: &'static str, reason: impl Into<String>) -> Self {
        Self {
            variable,
            reason: reason.into(),
        }
    }
}

/// Command line and environment of the `graph-mock` binary (every flag has a `GRAPH_MOCK_*` variable).
#[derive(Debug, Parser)]
#[command(
    name = "graph-mock",
    about = "A fake of Meta's WhatsApp Cloud (Graph) API",
    version
)]
pub struct Cli {
    /// Listen address.
    #[arg(
        long,
        env = "GRAPH_MOCK_ADDR",
        value_name = "GRAPH_MOCK_ADDR",
        default_value = "127.0.0.1:8090"
    )]
    pub addr: SocketAddr,
    /// Accepted bearer token(s), comma-separated.
    #[arg(long, env = "GRAPH_MOCK_TOKEN", value_name = "GRAPH_MOCK_TOKEN", default_value = DEFAULT_TOKEN)]
    pub token: String,
    /// Phone number ids, comma-separated; each may carry its display number as `id=digits`.
    #[arg(
        long,
        env = "GRAPH_MOCK_PHONE_NUMBER_IDS",
        value_name = "GRAPH_MOCK_PHONE_NUMBER_IDS",
        default_value = DEFAULT_PHONE_NUMBER_ID
    )]
    pub phone_number_ids: String,
    /// WhatsApp Business Account id.
    #[arg(long, env = "GRAPH_MOCK_WABA_ID", value_name = "GRAPH_MOCK_WABA_ID", default_value = DEFAULT_WABA_ID)]
    pub waba_id: String,
    /// Per-number throughput cap (messages per second).
    #[arg(
        long,
        env = "GRAPH_MOCK_RATE_PER_SECOND",
        value_name = "GRAPH_MOCK_RATE_PER_SECOND",
        default_value_t = 80
    )]
    pub rate_per_second: u32,
    /// Pair rate: minimum milliseconds between sends to one recipient (0 disables).
    #[arg(
        long,
        env = "GRAPH_MOCK_PAIR_INTERVAL_MS",
        value_name = "GRAPH_MOCK_PAIR_INTERVAL_MS",
        default_value_t = 6000
    )]
    pub pair_interval_ms: u64,
    /// Our webhook ingress URL.
    #[arg(
        long,
        env = "GRAPH_MOCK_WEBHOOK_URL",
        value_name = "GRAPH_MOCK_WEBHOOK_URL"
    )]
    pub webhook_url: Option<String>,
    /// App secret used to sign webhooks.
    #[arg(
        long,
        env = "GRAPH_MOCK_APP_SECRET",
        value_name = "GRAPH_MOCK_APP_SECRET",
        default_value = "",
        hide_default_value = true
    )]
    pub app_secret: String,
    /// Milliseconds between an accepted send and each status webhook step.
    #[arg(
        long,
        env = "GRAPH_MOCK_STATUS_DELAY_MS",
        value_name = "GRAPH_MOCK_STATUS_DELAY_MS",
        default_value_t = 300
    )]
    pub status_delay_ms: u64,
    /// Send `read` before `delivered`.
    #[arg(
        long,
        env = "GRAPH_MOCK_OUT_OF_ORDER",
        value_name = "GRAPH_MOCK_OUT_OF_ORDER",
        default_value = "false",
        action = ArgAction::Set,
        value_parser = BoolishValueParser::new()
    )]
    pub out_of_order: bool,
    /// Send every status webhook twice.
    #[arg(
        long,
        env = "GRAPH_MOCK_DUPLICATE_STATUSES",
        value_name = "GRAPH_MOCK_DUPLICATE_STATUSES",
        default_value = "false",
        action = ArgAction::Set,
        value_parser = BoolishValueParser::new()
    )]
    pub duplicate_statuses: bool,
    /// Base latency of every Graph API answer, in milliseconds.
    #[arg(
        long,
        env = "GRAPH_MOCK_LATENCY_MS",
        value_name = "GRAPH_MOCK_LATENCY_MS",
        default_value_t = 0
    )]
    pub latency_ms: u64,
    /// Every this many message sends, the worker reading it stalls first (0: never).
    #[arg(
        long,
        env = "GRAPH_MOCK_STALL_EVERY",
        value_name = "GRAPH_MOCK_STALL_EVERY",
        default_value_t = 0
    )]
    pub stall_every: u64,
    /// How long one stall lasts, in milliseconds.
    #[arg(
        long,
        env = "GRAPH_MOCK_STALL_MS",
        value_name = "GRAPH_MOCK_STALL_MS",
        default_value_t = 0
    )]
    pub stall_ms: u64,
    /// Answer delay of the scripted slow recipient, in milliseconds.
    #[arg(
        long,
        env = "GRAPH_MOCK_SLOW_DELAY_MS",
        value_name = "GRAPH_MOCK_SLOW_DELAY_MS",
        default_value_t = 3000
    )]
    pub slow_delay_ms: u64,
    /// Lifetime of media download URLs, in seconds.
    #[arg(
        long,
        env = "GRAPH_MOCK_MEDIA_URL_TTL_SECONDS",
        value_name = "GRAPH_MOCK_MEDIA_URL_TTL_SECONDS",
        default_value_t = 300
    )]
    pub media_url_ttl_seconds: u64,
    /// Milliseconds before a created template is approved or rejected.
    #[arg(
        long,
        env = "GRAPH_MOCK_TEMPLATE_REVIEW_DELAY_MS",
        value_name = "GRAPH_MOCK_TEMPLATE_REVIEW_DELAY_MS",
        default_value_t = 2000
    )]
    pub template_review_delay_ms: u64,
    /// How many requests the recorder keeps.
    #[arg(
        long,
        env = "GRAPH_MOCK_RECORDER_CAPACITY",
        value_name = "GRAPH_MOCK_RECORDER_CAPACITY",
        default_value_t = 100_000
    )]
    pub recorder_capacity: usize,
    /// Delivery attempts per webhook POST.
    #[arg(
        long,
        env = "GRAPH_MOCK_WEBHOOK_MAX_ATTEMPTS",
        value_name = "GRAPH_MOCK_WEBHOOK_MAX_ATTEMPTS",
        default_value_t = 5
    )]
    pub webhook_max_attempts: u32,
    /// actix worker threads.
    #[arg(
        long,
        env = "GRAPH_MOCK_WORKERS",
        value_name = "GRAPH_MOCK_WORKERS",
        default_value_t = 2
    )]
    pub workers: usize,
}

impl Cli {
    /// Builds and validates the [`MockConfig`]; errors name the variable.
    pub fn into_config(self) -> Result<MockConfig, ConfigError> {
        let tokens = split_list(&self.token);
        let mut phone_numbers = Vec::new();
        for (index, item) in split_list(&self.phone_number_ids).into_iter().enumerate() {
            let (id, display) = match item.split_once('=') {
                Some((id, display)) => (
                    id.trim().to_owned(),
                    display.trim().trim_start_matches('+').to_owned(),
                ),
                None => (item.clone(), default_display(index)),
            };
            phone_numbers.push(BusinessNumber {
                phone_number_id: id,
                display_phone_number: display,
            });
        }
        let webhook_url = self.webhook_url.filter(|u| !u.trim().is_empty());
        let config = MockConfig {
            addr: self.addr,
            tokens,
            phone_numbers,
            waba_id: self.waba_id.trim().to_owned(),
            rate_per_second: self.rate_per_second,
            pair_interval: Duration::from_millis(self.pair_interval_ms),
            webhook_url,
            app_secret: self.app_secret,
            status_delay: Duration::from_millis(self.status_delay_ms),
            out_of_order: self.out_of_order,
            duplicate_statuses: self.duplicate_statuses,
            latency: Duration::from_millis(self.latency_ms),
            stall_every: self.stall_every,
            stall: Duration::from_millis(self.stall_ms),
            slow_delay: Duration::from_millis(self.slow_delay_ms),
            media_url_ttl: Duration::from_secs(self.media_url_ttl_seconds),
            template_review_delay: Duration::from_millis(self.template_review_delay_ms),
            recorder_capacity: self.recorder_capacity,
            webhook_max_attempts: self.webhook_max_attempts,
            workers: self.workers,
            ..MockConfig::default()
        };
        config.validate()?;
        Ok(config)
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Display number of the n-th business number when none is given: 6221555000111, ...112, ...
fn default_display(index: usize) -> String {
    format!("6221555000{}", 111 + index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<MockConfig, ConfigError> {
        let mut argv = vec!["graph-mock"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .map_err(|e| ConfigError::new("ARGS", e.to_string()))?
            .into_config()
    }

    #[test]
    fn phone_number_ids_take_optional_display_numbers() {
        let config = cli(&[
            "--phone-number-ids",
            "111111111, 222222222=+6221999000",
            "--token",
            "a,b",
        ])
        .expect("valid");
        assert_eq!(
            config.phone_numbers[0].display_phone_number,
            "6221555000111"
        );
        assert_eq!(config.phone_numbers[1].display_phone_number, "6221999000");
        assert_eq!(config.tokens, vec!["a", "b"]);
    }

    #[test]
    fn webhook_without_secret_names_the_variable() {
        let err = cli(&[
            "--webhook-url",
            "http://127.0.0.1:8080/api/v1/whatsapp/webhook",
        ])
        .expect_err("invalid");
        assert_eq!(err.variable, "GRAPH_MOCK_APP_SECRET");
    }

    #[test]
    fn bad_boolean_is_refused_with_the_variable_name() {
        let err = cli(&["--out-of-order", "maybe"]).expect_err("invalid");
        assert!(
            err.reason.contains("GRAPH_MOCK_OUT_OF_ORDER"),
            "{}",
            err.reason
        );
    }
}

//! Ingress configuration, read from the environment only (see `../shared/contracts.md`); every
//! error names the variable, and secrets never appear in `Debug` output.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use wa_service::env::{self, ConfigError};

/// Default listen address (contract).
pub const DEFAULT_ADDR: &str = "0.0.0.0:8080";
/// Default broker (contract).
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Meta sends at most 3 MB per webhook; anything larger is refused with 413.
pub const DEFAULT_MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// How long one request waits for the broker's confirms before answering 503 (Meta retries).
/// Well under Meta's delivery timeout, well over a healthy quorum-queue confirm.
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a graceful shutdown waits for in-flight requests.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// Everything ingress needs; built once by [`Config::from_env`] and passed to `App::build`.
#[derive(Clone)]
pub struct Config {
    /// `INGRESS_ADDR`: where the HTTP server listens.
    pub addr: String,
    /// `AMQP_URL`: the broker (may hold a password: never logged unredacted).
    pub amqp_url: SecretString,
    /// `WHATSAPP_APP_SECRET`: every secret accepted for webhook signatures (rotation).
    pub app_secrets: Vec<SecretString>,
    /// `WHATSAPP_WEBHOOK_VERIFY_TOKEN`: the GET handshake token.
    pub verify_token: SecretString,
    /// `INGRESS_MAX_BODY_BYTES`: larger bodies get 413.
    pub max_body_bytes: usize,
    /// `INGRESS_CONFIRM_TIMEOUT_MS`: publish-confirm budget per request.
    pub confirm_timeout: Duration,
    /// `INGRESS_WORKERS`: HTTP worker threads (default: the number of cores).
    pub workers: usize,
    /// `INGRESS_SHUTDOWN_TIMEOUT_SECS`: graceful-shutdown budget for in-flight requests.
    pub shutdown_timeout: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field(
                "amqp_url",
                &wa_amqp::redact_url(self.amqp_url.expose_secret()),
            )
            .field(
                "app_secrets",
                &format_args!("[{} redacted]", self.app_secrets.len()),
            )
            .field("verify_token", &"[redacted]")
            .field("max_body_bytes", &self.max_body_bytes)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("workers", &self.workers)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish()
    }
}

impl Config {
    /// Reads and validates the environment; the error names the offending variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        let app_secrets = parse_app_secrets(&env::required_var("WHATSAPP_APP_SECRET")?)?;
        let verify_token = env::secret_var("WHATSAPP_WEBHOOK_VERIFY_TOKEN")?;
        let default_workers = std::thread::available_parallelism().map_or(2, usize::from);
        let config = Self {
            addr: env::var_or("INGRESS_ADDR", DEFAULT_ADDR),
            amqp_url: SecretString::from(env::var_or("AMQP_URL", DEFAULT_AMQP_URL)),
            app_secrets,
            verify_token,
            max_body_bytes: env::var_parsed("INGRESS_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)?,
            confirm_timeout: Duration::from_millis(env::var_parsed(
                "INGRESS_CONFIRM_TIMEOUT_MS",
                millis(DEFAULT_CONFIRM_TIMEOUT),
            )?),
            workers: env::var_parsed("INGRESS_WORKERS", default_workers)?,
            shutdown_timeout: Duration::from_secs(env::var_parsed(
                "INGRESS_SHUTDOWN_TIMEOUT_SECS",
                DEFAULT_SHUTDOWN_TIMEOUT.as_secs(),
            )?),
        };
        config.validate()?;
        Ok(config)
    }

    /// Rejects values that would parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.app_secrets.is_empty() {
            return Err(env::invalid("WHATSAPP_APP_SECRET", "no secret given"));
        }
        if self.verify_token.expose_secret().trim().is_empty() {
            return Err(env::invalid(
                "WHATSAPP_WEBHOOK_VERIFY_TOKEN",
                "must not be empty",
            ));
        }
        if self.max_body_bytes == 0 {
            return Err(env::invalid("INGRESS_MAX_BODY_BYTES", "must be positive"));
        }
        if self.confirm_timeout.is_zero() {
            return Err(env::invalid(
                "INGRESS_CONFIRM_TIMEOUT_MS",
                "must be positive",
            ));
        }
        if self.workers == 0 {
            return Err(env::invalid("INGRESS_WORKERS", "must be positive"));
        }
        Ok(())
    }
}

/// Splits `WHATSAPP_APP_SECRET` on commas; every listed secret must be non-empty.
pub fn parse_app_secrets(raw: &str) -> Result<Vec<SecretString>, ConfigError> {
    raw.split(',')
        .map(str::trim)
        .enumerate()
        .map(|(i, secret)| {
            if secret.is_empty() {
                Err(env::invalid(
                    "WHATSAPP_APP_SECRET",
                    format!(
                        "secret number {} of the comma-separated list is empty",
                        i + 1
                    ),
                ))
            } else {
                Ok(SecretString::from(secret))
            }
        })
        .collect()
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_secrets_are_split_on_commas_and_trimmed() {
        let secrets = parse_app_secrets(" old , new").expect("valid");
        let exposed: Vec<&str> = secrets.iter().map(ExposeSecret::expose_secret).collect();
        assert_eq!(exposed, ["old", "new"]);
    }

    #[test]
    fn an_empty_secret_in_the_list_is_refused_naming_the_variable_not_the_value() {
        let err = parse_app_secrets("first-secret,,third").expect_err("empty second");
        let text = err.to_string();
        assert!(text.starts_with("WHATSAPP_APP_SECRET"), "{text}");
        assert!(text.contains("number 2"), "{text}");
        assert!(!text.contains("first-secret"), "{text}");
    }

    #[test]
    fn debug_output_never_shows_secrets_or_the_broker_password() {
        let config = Config {
            addr: DEFAULT_ADDR.into(),
            amqp_url: SecretString::from("amqp://user:brokerpass@rabbit/%2f"),
            app_secrets: parse_app_secrets("appsecret1,appsecret2").expect("valid"),
            verify_token: SecretString::from("verifytoken"),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
            workers: 2,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        };
        let debug = format!("{config:?}");
        for secret in ["brokerpass", "appsecret1", "appsecret2", "verifytoken"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(config.validate().is_ok());
    }
}

//! Reading configuration from the environment; every error names the variable (contract: a wrong
//! configuration exits non-zero with a one-line reason naming the variable).

use std::fmt::Display;
use std::str::FromStr;

use secrecy::SecretString;

/// A configuration problem, always naming the variable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Required and absent (or empty).
    #[error("{name} is required but not set")]
    Missing {
        /// Variable name.
        name: &'static str,
    },
    /// Present but unusable.
    #[error("{name} is invalid: {reason}")]
    Invalid {
        /// Variable name.
        name: &'static str,
        /// Why (never the value of a secret).
        reason: String,
    },
}

/// The variable's value, or `None` when unset or empty.
pub fn var(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The variable's value or `default`.
pub fn var_or(name: &'static str, default: &str) -> String {
    var(name).unwrap_or_else(|| default.to_owned())
}

/// The variable's value; an error naming it when unset.
pub fn required_var(name: &'static str) -> Result<String, ConfigError> {
    var(name).ok_or(ConfigError::Missing { name })
}

/// A secret: never logged, never in `Debug`.
pub fn secret_var(name: &'static str) -> Result<SecretString, ConfigError> {
    required_var(name).map(SecretString::from)
}

/// The variable parsed as `T`, or `default` when unset.
pub fn var_parsed<T>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match var(name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: format!("{raw:?}: {e}"),
            }),
    }
}

/// Builds an `Invalid` error for `name`.
pub fn invalid(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_variable() {
        let missing = required_var("WA_TEST_SURELY_UNSET_VARIABLE").expect_err("unset");
        assert_eq!(
            missing.to_string(),
            "WA_TEST_SURELY_UNSET_VARIABLE is required but not set"
        );
        let parsed: Result<u32, _> = var_parsed("WA_TEST_SURELY_UNSET_VARIABLE", 7);
        assert_eq!(parsed.ok(), Some(7));
        assert!(
            invalid("SENDER_RATE_PER_SECOND", "must be positive")
                .to_string()
                .starts_with("SENDER_RATE_PER_SECOND")
        );
    }
}

//! Contract validation errors and the one decoding entry point every consumer uses.

use schemars::JsonSchema;
use serde::{Serialize, de::DeserializeOwned};

/// A message that does not satisfy its contract: which field, and why.
///
/// `field` is a JSON path such as `message.text.body` (`$` for the whole document), so the
/// platform team can find the mistake without reading our code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid field `{field}`: {reason}")]
pub struct ContractError {
    /// JSON path of the offending field.
    pub field: String,
    /// Human-readable reason.
    pub reason: String,
}

impl ContractError {
    /// Builds an error for `field` with `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Prefixes the field path, used when a nested validator reports relative paths.
    #[must_use]
    pub fn within(mut self, parent: &str) -> Self {
        self.field = if self.field == "$" {
            parent.to_owned()
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

/// A message type that travels over AMQP as JSON and is described in `proto/`.
pub trait Contract: Serialize + DeserializeOwned + JsonSchema {
    /// File stem of its JSON Schema in `proto/` (e.g. `send-job`).
    const SCHEMA_NAME: &'static str;

    /// Checks the rules serde cannot express (lengths, formats, cross-field rules).
    fn validate(&self) -> Result<(), ContractError> {
        Ok(())
    }
}

/// Decodes and validates a contract message, naming the bad field on failure.
pub fn decode<T: Contract>(bytes: &[u8]) -> Result<T, ContractError> {
    // Tracking the path costs a third of the decoding time on every message; it is only needed to
    // name the field of a bad one, so a message that decodes is decoded without it.
    if let Ok(value) = serde_json::from_slice::<T>(bytes) {
        value.validate()?;
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let reason = inner.to_string();
        // serde reports a missing field at its parent's path; name the field itself.
        let missing = reason
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned);
        let field = match (missing, path.as_str()) {
            (Some(name), ".") => name,
            (Some(name), parent) => format!("{parent}.{name}"),
            (None, ".") => "$".to_owned(),
            (None, other) => other.to_owned(),
        };
        ContractError::new(field, strip_position(&reason))
    })?;
    value.validate()?;
    Ok(value)
}

/// serde_json appends " at line X column Y"; the field path is more useful than the position.
fn strip_position(reason: &str) -> String {
    match reason.rfind(" at line ") {
        Some(idx) => reason[..idx].to_owned(),
        None => reason.to_owned(),
    }
}

/// Fails with `reason` for `field` unless `ok`.
pub(crate) fn ensure(
    ok: bool,
    field: &str,
    reason: impl Into<String>,
) -> Result<(), ContractError> {
    if ok {
        Ok(())
    } else {
        Err(ContractError::new(field, reason))
    }
}

/// Fails when `value` is longer than `max` characters (Meta counts characters, not bytes).
pub(crate) fn ensure_max_chars(value: &str, max: usize, field: &str) -> Result<(), ContractError> {
    let len = value.chars().count();
    ensure(
        len <= max,
        field,
        format!("is {len} characters, at most {max} allowed"),
    )
}

/// Fails when `value` is empty or only whitespace.
pub(crate) fn ensure_not_blank(value: &str, field: &str) -> Result<(), ContractError> {
    ensure(!value.trim().is_empty(), field, "must not be empty")
}

//! Validated identifier newtypes shared by every service.
//!
//! Platform ids are opaque strings to us; we only bound their length and alphabet so they are
//! safe in logs, metric labels, AMQP headers and file names.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::ContractError;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, max = $max:expr, pattern = $pattern:expr, allowed = $allowed:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `value`.
            pub fn parse(value: impl Into<String>) -> Result<Self, ContractError> {
                let value = value.into();
                let len = value.chars().count();
                if len == 0 || len > $max {
                    return Err(ContractError::new(
                        "$",
                        format!("must be 1 to {} characters, got {}", $max, len),
                    ));
                }
                if let Some(bad) = value.chars().find(|c| !($allowed)(*c)) {
                    return Err(ContractError::new(
                        "$",
                        format!("character {bad:?} is not allowed (pattern {})", $pattern),
                    ));
                }
                Ok(Self(value))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ContractError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "minLength": 1,
                    "maxLength": $max,
                    "pattern": $pattern,
                })
            }
        }
    };
}

fn is_job_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

fn is_platform_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-' | '@')
}

string_id!(
    /// Idempotency key of a send-job within a tenant (contract: 1-128 of `A-Z a-z 0-9 . _ : -`).
    JobId, max = 128, pattern = "^[A-Za-z0-9._:-]{1,128}$", allowed = is_job_char
);
string_id!(
    /// A tenant (travel agency) of the platform; selects the business number and token.
    TenantId, max = 64, pattern = "^[A-Za-z0-9._:-]{1,64}$", allowed = is_job_char
);
string_id!(
    /// The platform's id of a jamaah (pilgrim).
    JamaahId, max = 128, pattern = "^[A-Za-z0-9._:@-]{1,128}$", allowed = is_platform_char
);
string_id!(
    /// The platform's id of an Umrah package.
    PackageId, max = 128, pattern = "^[A-Za-z0-9._:@-]{1,128}$", allowed = is_platform_char
);
string_id!(
    /// The platform's id of one instalment (cicilan) of a payment schedule.
    ScheduleId, max = 128, pattern = "^[A-Za-z0-9._:@-]{1,128}$", allowed = is_platform_char
);
string_id!(
    /// The platform's id of a recorded payment.
    PaymentId, max = 128, pattern = "^[A-Za-z0-9._:@-]{1,128}$", allowed = is_platform_char
);
string_id!(
    /// The platform's id of an agent (the travel agency employee who looks after a jamaah).
    AgentId, max = 128, pattern = "^[A-Za-z0-9._:@-]{1,128}$", allowed = is_platform_char
);

/// Meta's message id (`wamid.…`), unique per business number; opaque to us.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct WaMessageId(pub String);

impl fmt::Display for WaMessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_id_accepts_the_contract_alphabet() {
        assert!(JobId::parse("rem-sched-42-d-3").is_ok());
        assert!(JobId::parse("a.b_c:d-E9").is_ok());
        assert!(JobId::parse("x".repeat(128)).is_ok());
    }

    #[test]
    fn job_id_rejects_empty_long_and_foreign_characters() {
        assert!(JobId::parse("").is_err());
        assert!(JobId::parse("x".repeat(129)).is_err());
        let err = JobId::parse("job 1").unwrap_err();
        assert!(err.reason.contains("' '"), "{}", err.reason);
        assert!(JobId::parse("job/1").is_err());
    }

    #[test]
    fn ids_deserialize_through_validation() {
        let ok: Result<TenantId, _> = serde_json::from_str("\"default\"");
        assert!(ok.is_ok());
        let bad: Result<TenantId, _> = serde_json::from_str("\"\"");
        assert!(bad.is_err());
    }
}

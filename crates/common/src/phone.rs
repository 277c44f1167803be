//! Phone numbers: every usual Indonesian and international form to E.164 (`+62…`).
//!
//! Meta prepends the *business* number's country code to a `to` without `+`, so a local
//! `0812…` would be misrouted; everything we send goes out as E.164 with `+`.
//! Parsing uses the `phonenumber` crate (a libphonenumber port with Google's metadata). It has had
//! panic-on-crafted-input advisories, so input is pre-filtered and the parse runs under
//! `catch_unwind`.

use std::borrow::Cow;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use phonenumber::{Mode, country};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Longest input we try to parse; real numbers with separators are far shorter.
const MAX_INPUT_CHARS: usize = 32;

/// Why a phone number was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PhoneError {
    /// Nothing but separators.
    #[error("phone number is empty")]
    Empty,
    /// Longer than any real number with separators.
    #[error("phone number is longer than {MAX_INPUT_CHARS} characters")]
    TooLong,
    /// A character that never appears in a phone number.
    #[error(
        "phone number contains {0:?}, only digits, '+', spaces, '-', '.', '/' and parentheses are allowed"
    )]
    BadCharacter(char),
    /// The digits do not form a number that exists in the numbering plan.
    #[error("{0:?} is not a valid phone number")]
    Invalid(String),
}

/// A phone number in E.164 form, always starting with `+`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct E164(String);

impl E164 {
    /// Normalises any usual form (`0812-3456-7890`, `+62 812 3456 7890`, `62812…`, `0062…`,
    /// `(021) 555-0123`, `+60 12-345 6789`) to E.164; numbers without a country default to Indonesia.
    pub fn parse(input: &str) -> Result<Self, PhoneError> {
        normalize(input)
    }

    /// Builds from a WhatsApp `wa_id` (digits with country code, no `+`), as found in webhooks.
    pub fn from_wa_id(wa_id: &str) -> Result<Self, PhoneError> {
        let digits = wa_id.trim();
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(PhoneError::Invalid(wa_id.to_owned()));
        }
        normalize(&format!("+{digits}"))
    }

    /// Takes back a number [`E164::parse`] produced earlier (e.g. carried in a header), checking
    /// only its form (`+`, then 7 to 15 digits, the first not 0).
    pub fn from_normalized(value: &str) -> Result<Self, PhoneError> {
        let digits = value.strip_prefix('+').unwrap_or_default();
        let well_formed = (7..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if well_formed {
            Ok(Self(value.to_owned()))
        } else {
            Err(PhoneError::Invalid(value.to_owned()))
        }
    }

    /// The number with its leading `+`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits without `+`: the `wa_id` form Meta uses in webhooks.
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for E164 {
    type Error = PhoneError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        normalize(&value)
    }
}

impl From<E164> for String {
    fn from(value: E164) -> Self {
        value.0
    }
}

impl JsonSchema for E164 {
    fn schema_name() -> Cow<'static, str> {
        "E164".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": "^\\+[1-9][0-9]{6,14}$" })
    }
}

fn normalize(input: &str) -> Result<E164, PhoneError> {
    let trimmed = input.trim();
    if trimmed.chars().count() > MAX_INPUT_CHARS {
        return Err(PhoneError::TooLong);
    }
    if let Some(bad) = trimmed
        .chars()
        .find(|c| !(c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '.' | '/' | '(' | ')')))
    {
        return Err(PhoneError::BadCharacter(bad));
    }
    let plus = trimmed.starts_with('+');
    if trimmed.chars().skip(1).any(|c| c == '+') {
        return Err(PhoneError::Invalid(input.to_owned()));
    }
    // "+62 (0) 812…": the trunk zero in parentheses is a common way of writing both forms at once.
    let without_trunk = trimmed.replace("(0)", "");
    let digits: String = without_trunk.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return Err(PhoneError::Empty);
    }
    let candidate: Cow<'_, str> = if plus {
        Cow::Owned(format!("+{digits}"))
    } else if let Some(rest) = digits.strip_prefix("00") {
        // International call prefix (also what Indonesians type from abroad).
        Cow::Owned(format!("+{rest}"))
    } else if digits.starts_with("62") && digits.len() >= 10 {
        // Country code without '+', the wa_id form ("62812…"); a national number never starts with 62.
        Cow::Owned(format!("+{digits}"))
    } else {
        Cow::Owned(digits)
    };
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        phonenumber::parse(Some(country::Id::ID), candidate.as_ref())
            .ok()
            .filter(phonenumber::is_valid)
            .map(|number| number.format().mode(Mode::E164).to_string())
    }))
    .ok()
    .flatten();
    parsed
        .map(E164)
        .ok_or_else(|| PhoneError::Invalid(input.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_normalized_number_is_taken_back_as_it_is_and_anything_else_is_refused() {
        for (input, normalized) in VALID {
            let parsed = E164::parse(input).expect("valid");
            assert_eq!(parsed.as_str(), *normalized);
            assert_eq!(
                E164::from_normalized(parsed.as_str()).expect("well formed"),
                parsed
            );
        }
        for bad in [
            "",
            "+",
            "6281234567890",
            "+0812345678",
            "+62 812 3456",
            "+62812345678901234",
            "+62812x4567890",
        ] {
            assert!(E164::from_normalized(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// Real-world forms seen in Indonesian CRMs, forms and chats.
    const VALID: &[(&str, &str)] = &[
        ("0812-3456-7890", "+6281234567890"),
        ("081234567890", "+6281234567890"),
        ("0812 3456 7890", "+6281234567890"),
        ("0812.3456.7890", "+6281234567890"),
        ("+62 812-3456-7890", "+6281234567890"),
        ("+6281234567890", "+6281234567890"),
        ("6281234567890", "+6281234567890"),
        ("62 812 3456 7890", "+6281234567890"),
        ("+62 (0) 812 3456 7890", "+6281234567890"),
        ("006281234567890", "+6281234567890"),
        ("81234567890", "+6281234567890"),
        ("  0812-3456-7890  ", "+6281234567890"),
        ("(0812) 3456-7890", "+6281234567890"),
        ("0857 1234 5678", "+6285712345678"),
        ("0896-1234-5678", "+6289612345678"),
        ("0821/1234/5678", "+6282112345678"),
        ("021 5550 1234", "+622155501234"),
        ("(021) 5550-1234", "+622155501234"),
        ("+62 21 5550 1234", "+622155501234"),
        ("0274 512345", "+62274512345"),
        ("+966 50 123 4567", "+966501234567"),
        ("00966501234567", "+966501234567"),
        ("+60 12-345 6789", "+60123456789"),
        ("+65 8123 4567", "+6581234567"),
        ("+1 (415) 555-2671", "+14155552671"),
    ];

    #[test]
    fn normalises_usual_indonesian_and_international_forms() {
        for (input, expected) in VALID {
            let got = E164::parse(input).map(|n| n.to_string());
            assert_eq!(got.as_deref(), Ok(*expected), "input {input:?}");
        }
    }

    #[test]
    fn rejects_invalid_numbers_with_a_reason() {
        type Check = fn(&PhoneError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, PhoneError::Empty)),
            ("---", |e| matches!(e, PhoneError::Empty)),
            ("0812-3456-789O", |e| {
                matches!(e, PhoneError::BadCharacter('O'))
            }),
            ("siti@example.com", |e| {
                matches!(e, PhoneError::BadCharacter(_))
            }),
            ("12", |e| matches!(e, PhoneError::Invalid(_))),
            ("0812", |e| matches!(e, PhoneError::Invalid(_))),
            ("+62 812", |e| matches!(e, PhoneError::Invalid(_))),
            ("+999 1234 5678", |e| matches!(e, PhoneError::Invalid(_))),
            ("08123456789012345678", |e| {
                matches!(e, PhoneError::Invalid(_))
            }),
            ("+62+812345678", |e| matches!(e, PhoneError::Invalid(_))),
            ("0000000000000000000000000000000000000000", |e| {
                matches!(e, PhoneError::TooLong)
            }),
        ];
        for (input, check) in cases {
            let err = E164::parse(input).expect_err(input);
            assert!(check(&err), "input {input:?} gave {err:?}");
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn wa_id_round_trips() {
        let number = E164::from_wa_id("6281234567890").expect("valid wa_id");
        assert_eq!(number.as_str(), "+6281234567890");
        assert_eq!(number.digits(), "6281234567890");
        assert!(E164::from_wa_id("+6281234567890").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_input(input in ".{0,40}") {
            let _ = E164::parse(&input);
        }

        #[test]
        fn never_panics_on_phone_like_input(input in "[0-9+() ./-]{0,32}") {
            if let Ok(number) = E164::parse(&input) {
                proptest::prop_assert!(number.as_str().starts_with('+'));
            }
        }
    }
}

//! Reading the `to` field the way Meta does, independently of our own phone parsing in `wa_common`.
//!
//! Meta accepts `+`, `-`, parentheses and spaces in `to` and answers with the bare digits as `wa_id`. graph-mock also
//! counts sends whose `to` lacked the leading `+` (Meta would prefix the business number's country code and misroute a
//! local `0812...` number), so tests can assert that the sender always sends E.164.

/// Shortest and longest digit count graph-mock treats as a plausible international number.
const MIN_DIGITS: usize = 8;
const MAX_DIGITS: usize = 15;

/// A `to` value that passed the plausibility check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The digits of `to`, returned as `wa_id` and used as `recipient_id` in status webhooks.
    pub wa_id: String,
    /// Whether `to` started with `+` (E.164 as Meta recommends).
    pub has_plus: bool,
}

/// Parses `to`; `None` means Meta's 131009 "Parameter value is not valid".
pub fn parse_recipient(to: &str) -> Option<Recipient> {
    let trimmed = to.trim();
    let has_plus = trimmed.starts_with('+');
    let rest = trimmed.strip_prefix('+').unwrap_or(trimmed);
    let mut digits = String::with_capacity(rest.len());
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '(' | ')' | '.' => {}
            _ => return None,
        }
    }
    if !(MIN_DIGITS..=MAX_DIGITS).contains(&digits.len()) || (has_plus && digits.starts_with('0')) {
        return None;
    }
    Some(Recipient {
        wa_id: digits,
        has_plus,
    })
}

/// A lenient key for matching scripted numbers whatever form `to` had: digits only, a national `0` becomes `62`.
pub fn scripted_key(to: &str) -> String {
    let digits: String = to.chars().filter(char::is_ascii_digit).collect();
    match digits.strip_prefix('0') {
        Some(national) => format!("62{national}"),
        None => digits,
    }
}

/// Digits only, for comparing with a business display number.
pub fn digits_only(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_with_separators_is_accepted() {
        let r = parse_recipient("+62 812-3456-7890").expect("plausible");
        assert_eq!(r.wa_id, "6281234567890");
        assert!(r.has_plus);
    }

    #[test]
    fn local_form_is_accepted_but_flagged() {
        let r = parse_recipient("081234567890").expect("plausible");
        assert_eq!(r.wa_id, "081234567890");
        assert!(!r.has_plus);
    }

    #[test]
    fn letters_and_short_numbers_are_rejected() {
        assert_eq!(parse_recipient("abc"), None);
        assert_eq!(parse_recipient("+62 812"), None);
        assert_eq!(parse_recipient("+0812345678"), None);
        assert_eq!(parse_recipient("+6281234567890123456"), None);
    }

    #[test]
    fn scripted_key_normalises_every_form() {
        for form in [
            "+62811000001 01",
            "62811000001-01",
            "081100000101",
            "+62 (811) 0000-0101",
        ] {
            assert_eq!(scripted_key(form), "6281100000101", "{form}");
        }
    }
}

//! Scripted recipients: Indonesian-looking numbers with fixed, deterministic outcomes.
//!
//! They are matched on [`crate::phone::scripted_key`], so `+62 811-0000-0101`, `6281100000101` and `081100000101` all
//! hit the same script. Scripted numbers are exempt from the pair rate limit (so retries are not blurred by 131056) but
//! still count against the per-number throughput window.

use serde::Serialize;

/// Common prefix of every scripted number (E.164 digits without `+`); the last two digits pick the script.
pub const SCRIPTED_PREFIX: &str = "62811000001";

/// What graph-mock does when a send targets a scripted number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Script {
    /// Always accepted; sent, delivered, read webhooks (the same as any unscripted number, minus the pair rate).
    Success,
    /// Synchronous HTTP 400, code 131026 Message Undeliverable.
    Undeliverable,
    /// Synchronous HTTP 400, code 131047 for non-template messages; templates succeed.
    WindowClosedSync,
    /// HTTP 200 with a wamid, then a `failed` status webhook with 131047, for non-template messages; templates succeed.
    WindowClosedAsync,
    /// HTTP 500, code 131000 on the 1st and 2nd call for the same (recipient, body), success on the 3rd.
    Transient,
    /// Accepted (statuses are sent) but the answer comes only after the configured slow delay.
    Slow,
    /// HTTP 400, code 131056 on the 1st call for the same (recipient, body), success afterwards.
    PairLimitedOnce,
    /// HTTP 400, code 130429 on the 1st call for the same (recipient, body), success afterwards.
    ThrottledOnce,
    /// Accepted; `sent` and `delivered` webhooks, never `read`.
    DeliveredNotRead,
    /// Accepted; `sent` then `read` without `delivered` (Meta skips delivered when the chat is open).
    ReadWithoutDelivered,
    /// HTTP 200 with a wamid, then a `failed` status webhook with 131026.
    UndeliverableAsync,
}

/// The scripted numbers, in the order the README documents them.
pub const SCRIPTS: [(&str, Script); 11] = [
    ("00", Script::Success),
    ("01", Script::Undeliverable),
    ("02", Script::WindowClosedSync),
    ("03", Script::WindowClosedAsync),
    ("04", Script::Transient),
    ("05", Script::Slow),
    ("06", Script::PairLimitedOnce),
    ("07", Script::ThrottledOnce),
    ("08", Script::DeliveredNotRead),
    ("09", Script::ReadWithoutDelivered),
    ("10", Script::UndeliverableAsync),
];

/// The script for a normalised recipient key, if it is one of the scripted numbers.
pub fn lookup(key: &str) -> Option<Script> {
    let suffix = key.strip_prefix(SCRIPTED_PREFIX)?;
    SCRIPTS
        .iter()
        .find(|(s, _)| *s == suffix)
        .map(|(_, script)| *script)
}

/// The full E.164 number (with `+`) for a script, handy in tests.
pub fn number_for(script: Script) -> String {
    let suffix = SCRIPTS
        .iter()
        .find(|(_, s)| *s == script)
        .map_or("00", |(suffix, _)| suffix);
    format!("+{SCRIPTED_PREFIX}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_round_trips_through_its_number() {
        for (_, script) in SCRIPTS {
            let number = number_for(script);
            assert_eq!(lookup(&crate::phone::scripted_key(&number)), Some(script));
        }
    }

    #[test]
    fn other_numbers_are_not_scripted() {
        assert_eq!(lookup("6281234567890"), None);
        assert_eq!(lookup("6281100000199"), None);
    }
}

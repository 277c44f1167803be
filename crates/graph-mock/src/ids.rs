//! Identifiers graph-mock hands out: wamids, media ids and template ids.
//!
//! Each mock instance picks a random 32-bit prefix and counts from there, so ids are unique within a run and do not
//! collide across restarts in practice.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use rand::Rng;

/// Generator of unique ids for one mock instance.
#[derive(Debug)]
pub struct IdGen {
    instance: u32,
    counter: AtomicU64,
}

impl Default for IdGen {
    fn default() -> Self {
        Self::new()
    }
}

impl IdGen {
    /// A generator with a random instance prefix.
    pub fn new() -> Self {
        Self {
            instance: rand::rng().random(),
            counter: AtomicU64::new(1),
        }
    }

    fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// A wamid shaped like Meta's: `wamid.` + base64 of a small binary blob holding the user's digits and a unique
    /// 18-hex-digit message key.
    pub fn wamid(&self, wa_id: &str) -> String {
        let key = format!("{:08X}{:010X}", self.instance, self.next() & 0xFF_FFFF_FFFF);
        let digits = wa_id.as_bytes();
        let mut blob = Vec::with_capacity(digits.len() + 28);
        blob.extend_from_slice(&[0x1C, 0x18, u8::try_from(digits.len()).unwrap_or(u8::MAX)]);
        blob.extend_from_slice(digits);
        blob.extend_from_slice(&[0x15, 0x02, 0x00, 0x11, 0x18, 0x12]);
        blob.extend_from_slice(key.as_bytes());
        blob.push(0x00);
        format!("wamid.{}", STANDARD_NO_PAD.encode(blob))
    }

    /// A 16-digit numeric id (media ids and template ids are numeric strings at Meta).
    pub fn numeric(&self) -> u64 {
        let base = 1_000_000_000_000_000u64 + u64::from(self.instance % 4_000_000) * 1_000_000_000;
        base + (self.next() % 1_000_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wamids_are_unique_and_prefixed() {
        let ids = IdGen::new();
        let a = ids.wamid("6281234567890");
        let b = ids.wamid("6281234567890");
        assert!(a.starts_with("wamid.HBg"), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn numeric_ids_have_sixteen_digits() {
        let ids = IdGen::new();
        assert_eq!(ids.numeric().to_string().len(), 16);
    }
}

//! Indonesian formatting for template parameters (contract: `05 Des 2026`, `1.500.000`).
//!
//! A 12-entry table instead of chrono's `unstable-locales`: no unstable feature, and we control
//! the exact abbreviations the approved templates were written with.

use chrono::{Datelike, NaiveDate};

/// Indonesian month abbreviations, January first.
const MONTHS_ID: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "Mei", "Jun", "Jul", "Agu", "Sep", "Okt", "Nov", "Des",
];

/// Formats a date as `dd MMM yyyy` with Indonesian month abbreviations, e.g. `05 Des 2026`.
pub fn format_date_id(date: NaiveDate) -> String {
    let month = MONTHS_ID[date.month0() as usize];
    format!("{:02} {} {}", date.day(), month, date.year())
}

/// Formats whole rupiah with dots for thousands and no `Rp` prefix, e.g. `1.500.000`.
pub fn format_rupiah(amount: i64) -> String {
    let digits = amount.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if amount < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('.');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid test date")
    }

    #[test]
    fn dates_use_indonesian_month_abbreviations() {
        assert_eq!(format_date_id(date(2026, 12, 5)), "05 Des 2026");
        assert_eq!(format_date_id(date(2027, 1, 15)), "15 Jan 2027");
        assert_eq!(format_date_id(date(2026, 5, 1)), "01 Mei 2026");
        assert_eq!(format_date_id(date(2026, 8, 17)), "17 Agu 2026");
        assert_eq!(format_date_id(date(2026, 10, 31)), "31 Okt 2026");
    }

    #[test]
    fn rupiah_uses_dots_for_thousands() {
        assert_eq!(format_rupiah(0), "0");
        assert_eq!(format_rupiah(999), "999");
        assert_eq!(format_rupiah(1_000), "1.000");
        assert_eq!(format_rupiah(1_500_000), "1.500.000");
        assert_eq!(format_rupiah(12_500_000), "12.500.000");
        assert_eq!(format_rupiah(123_456_789_012), "123.456.789.012");
        assert_eq!(format_rupiah(-250_000), "-250.000");
    }
}

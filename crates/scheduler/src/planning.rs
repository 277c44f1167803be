//! Pure planning rules: the local send window, when each reminder is due and until when it stays
//! relevant, and deterministic send-job ids. No I/O here, so all of it is unit-tested.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// Offsets (days relative to the departure date) of the departure broadcast.
pub const DEPARTURE_OFFSETS_DAYS: [i32; 2] = [-7, -1];

/// The local time-of-day window reminders may be sent in (`REMINDER_SEND_WINDOW`, `HH:MM-HH:MM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendWindow {
    /// First local instant of the window (inclusive).
    pub start: NaiveTime,
    /// End of the window (exclusive).
    pub end: NaiveTime,
}

impl Default for SendWindow {
    fn default() -> Self {
        Self {
            start: NaiveTime::from_hms_opt(9, 0, 0).unwrap_or(NaiveTime::MIN),
            end: NaiveTime::from_hms_opt(20, 0, 0).unwrap_or(NaiveTime::MIN),
        }
    }
}

impl fmt::Display for SendWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            self.start.format("%H:%M"),
            self.end.format("%H:%M")
        )
    }
}

impl FromStr for SendWindow {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (start, end) = s
            .split_once('-')
            .ok_or_else(|| format!("expected HH:MM-HH:MM, got {s:?}"))?;
        let parse = |t: &str| {
            NaiveTime::parse_from_str(t.trim(), "%H:%M")
                .map_err(|e| format!("{t:?} is not HH:MM: {e}"))
        };
        let window = Self {
            start: parse(start)?,
            end: parse(end)?,
        };
        if window.start >= window.end {
            return Err(format!("the window must start before it ends, got {s:?}"));
        }
        Ok(window)
    }
}

impl SendWindow {
    /// Start of the window on local `date` in `tz`, as UTC (the earliest reading if ambiguous).
    pub fn opens_on(&self, date: NaiveDate, tz: Tz) -> DateTime<Utc> {
        local_instant(date, self.start, tz)
    }

    /// End of the window on local `date` in `tz`, as UTC.
    pub fn closes_on(&self, date: NaiveDate, tz: Tz) -> DateTime<Utc> {
        local_instant(date, self.end, tz)
    }

    /// Whether `now` falls inside the window in `tz`.
    pub fn is_open(&self, now: DateTime<Utc>, tz: Tz) -> bool {
        let local = now.with_timezone(&tz).time();
        local >= self.start && local < self.end
    }

    /// End of the window that is open at `now` in `tz` (send-jobs expire there).
    pub fn current_close(&self, now: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        self.closes_on(now.with_timezone(&tz).date_naive(), tz)
    }
}

fn local_instant(date: NaiveDate, time: NaiveTime, tz: Tz) -> DateTime<Utc> {
    let naive = date.and_time(time);
    match tz.from_local_datetime(&naive).earliest() {
        Some(local) => local.with_timezone(&Utc),
        // A DST gap (not in Indonesia): the same wall time read as UTC offset of the day.
        None => tz.from_utc_datetime(&naive).with_timezone(&Utc),
    }
}

/// Parses `REMINDER_OFFSETS_DAYS` (`-7,-3,-1,0`): sorted, deduplicated, each within ±366 days.
pub fn parse_offsets(raw: &str) -> Result<Vec<i32>, String> {
    let mut offsets = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let offset: i32 = part
            .parse()
            .map_err(|e| format!("{part:?} is not a whole number of days: {e}"))?;
        if !(-366..=366).contains(&offset) {
            return Err(format!("{offset} is more than a year from the due date"));
        }
        offsets.push(offset);
    }
    if offsets.is_empty() {
        return Err("needs at least one offset".into());
    }
    offsets.sort_unstable();
    offsets.dedup();
    Ok(offsets)
}

/// When one reminder of a series is due and until when it is still worth sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Days relative to the anchor date.
    pub offset_days: i32,
    /// Start of the send window on anchor + offset.
    pub due_at: DateTime<Utc>,
    /// The next offset's `due_at`, or for the last offset the end of the window on its day.
    pub not_after: DateTime<Utc>,
}

/// The slots of a series anchored on `anchor` (due date, departure date); `offsets` sorted ascending.
pub fn slots(anchor: NaiveDate, offsets: &[i32], window: SendWindow, tz: Tz) -> Vec<Slot> {
    let days: Vec<(i32, NaiveDate)> = offsets
        .iter()
        .filter_map(|&o| shift(anchor, o).map(|d| (o, d)))
        .collect();
    days.iter()
        .enumerate()
        .map(|(i, &(offset_days, day))| {
            let due_at = window.opens_on(day, tz);
            let not_after = match days.get(i + 1) {
                Some(&(_, next)) => window.opens_on(next, tz),
                None => window.closes_on(day, tz),
            };
            Slot {
                offset_days,
                due_at,
                not_after,
            }
        })
        .collect()
}

fn shift(date: NaiveDate, offset: i32) -> Option<NaiveDate> {
    let days = Days::new(u64::from(offset.unsigned_abs()));
    if offset < 0 {
        date.checked_sub_days(days)
    } else {
        date.checked_add_days(days)
    }
}

/// Longest job id the contract allows.
const MAX_JOB_ID: usize = 128;

fn is_job_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

/// FNV-1a: a hash that is the same in every process and every Rust version (unlike `DefaultHasher`),
/// so replicas derive the same job id.
fn fnv1a(input: &str) -> u64 {
    input.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Builds a contract-valid job id from `parts` joined by `-`: kept as is when every character is
/// allowed and it fits in 128; otherwise foreign characters become `_`, it is cut to fit, and a
/// hash of the original is appended so two different ids never collide.
pub fn job_id(parts: &[&str]) -> String {
    let raw = parts.join("-");
    if raw.chars().all(is_job_char) && raw.len() <= MAX_JOB_ID && !raw.is_empty() {
        return raw;
    }
    let suffix = format!("-h{:016x}", fnv1a(&raw));
    let cleaned: String = raw
        .chars()
        .map(|c| if is_job_char(c) { c } else { '_' })
        .take(MAX_JOB_ID - suffix.len())
        .collect();
    format!("{cleaned}{suffix}")
}

/// `rem-<schedule>-d<offset>` (e.g. `rem-sched-42-d-3`).
pub fn payment_reminder_job_id(schedule_id: &str, offset: i32) -> String {
    job_id(&["rem", schedule_id, &format!("d{offset}")])
}

/// `conf-<payment>`.
pub fn payment_confirmation_job_id(payment_id: &str) -> String {
    job_id(&["conf", payment_id])
}

/// `dep-<package>-<jamaah>-d<offset>`.
pub fn departure_job_id(package_id: &str, jamaah_id: &str, offset: i32) -> String {
    job_id(&["dep", package_id, jamaah_id, &format!("d{offset}")])
}

/// `auto-<wamid>`.
pub fn auto_reply_job_id(wa_message_id: &str) -> String {
    job_id(&["auto", wa_message_id])
}

#[cfg(test)]
mod tests {
    use super::*;
    use wa_common::ids::JobId;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().expect("rfc3339")
    }

    #[test]
    fn window_parses_and_rejects_nonsense() {
        let w: SendWindow = "09:00-20:00".parse().expect("valid");
        assert_eq!(w, SendWindow::default());
        assert_eq!(w.to_string(), "09:00-20:00");
        assert!("20:00-09:00".parse::<SendWindow>().is_err());
        assert!("9-20".parse::<SendWindow>().is_err());
        assert!("".parse::<SendWindow>().is_err());
    }

    #[test]
    fn window_is_read_in_the_tenant_time_zone() {
        let w = SendWindow::default();
        // 02:00 UTC is 09:00 in Jakarta (UTC+7) but 10:00 in Makassar (UTC+8) and 11:00 in Jayapura.
        assert!(w.is_open(utc("2026-12-01T02:00:00Z"), chrono_tz::Asia::Jakarta));
        assert!(!w.is_open(utc("2026-12-01T01:59:59Z"), chrono_tz::Asia::Jakarta));
        assert!(w.is_open(utc("2026-12-01T01:30:00Z"), chrono_tz::Asia::Makassar));
        assert!(!w.is_open(utc("2026-12-01T13:00:00Z"), chrono_tz::Asia::Jakarta));
        assert_eq!(
            w.opens_on(date(2026, 12, 1), chrono_tz::Asia::Jayapura),
            utc("2026-12-01T00:00:00Z")
        );
    }

    #[test]
    fn slots_are_due_at_window_start_and_superseded_by_the_next_offset() {
        let s = slots(
            date(2026, 12, 8),
            &[-7, -3, -1, 0],
            SendWindow::default(),
            chrono_tz::Asia::Jakarta,
        );
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].due_at, utc("2026-12-01T02:00:00Z"));
        assert_eq!(s[0].not_after, utc("2026-12-05T02:00:00Z"));
        assert_eq!(s[3].offset_days, 0);
        assert_eq!(s[3].due_at, utc("2026-12-08T02:00:00Z"));
        assert_eq!(s[3].not_after, utc("2026-12-08T13:00:00Z"));
    }

    #[test]
    fn offsets_parse_sorted_and_overdue_offsets_are_allowed() {
        assert_eq!(
            parse_offsets("0, -1,-7,-3,3").expect("ok"),
            vec![-7, -3, -1, 0, 3]
        );
        assert!(parse_offsets("").is_err());
        assert!(parse_offsets("-7,x").is_err());
        assert!(parse_offsets("1000").is_err());
    }

    #[test]
    fn job_ids_are_deterministic_and_always_contract_valid() {
        assert_eq!(payment_reminder_job_id("sched-42", -3), "rem-sched-42-d-3");
        assert_eq!(departure_job_id("pkg-1", "j-9", -7), "dep-pkg-1-j-9-d-7");
        let odd = payment_reminder_job_id("user@example/1", -1);
        assert_eq!(odd, payment_reminder_job_id("user@example/1", -1));
        assert!(JobId::parse(odd.clone()).is_ok(), "{odd}");
        assert_ne!(odd, payment_reminder_job_id("user_example_1", -1));
        let long = auto_reply_job_id(&"wamid.".repeat(40));
        assert!(long.len() <= 128);
        assert!(JobId::parse(long).is_ok());
    }
}

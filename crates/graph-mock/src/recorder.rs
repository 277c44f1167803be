//! The request recorder (a bounded ring buffer) and the statistics tests and benchmarks take as the truth.
//!
//! Pushing a record is O(1) under a short mutex that is never held across an await; queries scan a snapshot.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One request graph-mock received and what it answered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecordedRequest {
    /// Increasing sequence number (use it as `since`).
    pub seq: u64,
    /// When the request arrived.
    pub received_at: DateTime<Utc>,
    /// HTTP method.
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// Request headers, lowercase names, without the `authorization` value.
    pub headers: BTreeMap<String, String>,
    /// Whether an `Authorization: Bearer` header was present.
    pub bearer_present: bool,
    /// Which configured token matched (`token-1`, `token-2`, ..., `expired`), if any.
    pub token_label: Option<String>,
    /// The JSON body, or `{"binary_bytes": n, "content_type": ...}` for non-JSON bodies, or null when empty.
    pub body: Value,
    /// HTTP status graph-mock answered.
    pub status: u16,
    /// Meta error code in the answer, if it was an error.
    pub error_code: Option<i64>,
    /// The wamid handed out, for accepted sends.
    pub wamid: Option<String>,
}

/// Filter for [`Recorder::query`].
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RequestFilter {
    /// Keep requests whose path contains this.
    pub path_contains: Option<String>,
    /// A sequence number (keep later ones) or an RFC 3339 instant (keep requests received after it).
    pub since: Option<String>,
    /// Keep only requests with this method.
    pub method: Option<String>,
    /// Return at most this many (the oldest matching first).
    pub limit: Option<usize>,
}

/// Bounded in-memory log of requests.
#[derive(Debug)]
pub struct Recorder {
    capacity: usize,
    next_seq: AtomicU64,
    dropped: AtomicU64,
    items: Mutex<VecDeque<RecordedRequest>>,
}

impl Recorder {
    /// A recorder keeping at most `capacity` requests.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            next_seq: AtomicU64::new(1),
            dropped: AtomicU64::new(0),
            items: Mutex::new(VecDeque::with_capacity(capacity.clamp(1, 4096))),
        }
    }

    /// Stores a record (its `seq` is assigned here), dropping the oldest when full.
    pub fn push(&self, mut record: RecordedRequest) {
        let mut items = self
            .items
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        record.seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        if items.len() >= self.capacity {
            items.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        items.push_back(record);
    }

    /// Matching records, oldest first.
    pub fn query(&self, filter: &RequestFilter) -> Vec<RecordedRequest> {
        let since_seq = filter.since.as_deref().and_then(|s| s.parse::<u64>().ok());
        let since_time = filter
            .since
            .as_deref()
            .filter(|_| since_seq.is_none())
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc));
        let limit = filter.limit.unwrap_or(usize::MAX);
        let items = self
            .items
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        items
            .iter()
            .filter(|r| since_seq.is_none_or(|s| r.seq > s))
            .filter(|r| since_time.is_none_or(|t| r.received_at > t))
            .filter(|r| {
                filter
                    .path_contains
                    .as_deref()
                    .is_none_or(|p| r.path.contains(p))
            })
            .filter(|r| {
                filter
                    .method
                    .as_deref()
                    .is_none_or(|m| r.method.eq_ignore_ascii_case(m))
            })
            .take(limit)
            .cloned()
            .collect()
    }

    /// Forgets every record (sequence numbers keep increasing).
    pub fn clear(&self) {
        self.items
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Records currently held.
    pub fn len(&self) -> usize {
        self.items
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Per-business-number counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PhoneStats {
    /// `metadata.display_phone_number` of this number.
    pub display_phone_number: String,
    /// Authenticated POSTs to `/messages` for this number (sends and mark-as-read).
    pub send_requests: u64,
    /// Sends answered 200 with a wamid.
    pub accepted: u64,
    /// Mark-as-read / typing-indicator calls.
    pub mark_as_read: u64,
    /// Highest number of sends the throughput limiter let through in any one-second window (never above the cap).
    pub max_accepted_in_any_second: u64,
    /// Highest number of valid send attempts (throttled ones included) in any one-second window.
    pub max_attempts_in_any_second: u64,
    /// Sends refused by the throughput limiter with 130429 (injected faults and scripted numbers not included).
    pub rate_limited_130429: u64,
    /// Sends refused by the pair rate limiter with 131056 (scripted numbers not included).
    pub pair_rate_limited_131056: u64,
    /// Accepted sends whose `to` had no leading `+` (Meta would misroute a national number).
    pub non_e164_to: u64,
    /// Every error answered for this number, by Meta code.
    pub errors_by_code: BTreeMap<String, u64>,
}

/// Webhook delivery counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WebhookStats {
    /// POSTs that got a 2xx.
    pub deliveries_ok: u64,
    /// Attempts that got a non-2xx or a transport error (each retry counts).
    pub attempts_failed: u64,
    /// POSTs abandoned after the last attempt.
    pub deliveries_abandoned: u64,
    /// Statuses carried by successful POSTs (duplicates included).
    pub statuses_delivered: u64,
    /// Inbound messages carried by successful POSTs.
    pub messages_delivered: u64,
    /// Webhooks dropped because no webhook URL is configured (a send's statuses count once).
    pub skipped_no_url: u64,
}

/// Everything `GET /_mock/stats` answers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// Per business phone number id.
    pub phone_numbers: BTreeMap<String, PhoneStats>,
    /// Webhook deliveries.
    pub webhooks: WebhookStats,
    /// Requests per Graph API version seen in paths (`v24.0`: n).
    pub api_versions: BTreeMap<String, u64>,
    /// Faults from `/_mock/faults` that were applied.
    pub faults_applied: u64,
    /// Inbound messages injected.
    pub inbound_injected: u64,
    /// Media downloads served (successful ones).
    pub media_downloads: u64,
    /// Media uploads accepted.
    pub media_uploads: u64,
    /// Requests currently held by the recorder.
    pub recorded_requests: u64,
    /// Requests the recorder dropped because it was full.
    pub recorder_dropped: u64,
    /// The configured per-number cap, for convenience.
    pub rate_per_second: u32,
}

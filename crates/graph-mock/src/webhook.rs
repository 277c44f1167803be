//! Calling our webhook back like Meta: envelopes, `\uXXXX` escaping, `X-Hub-Signature-256`, batching, delayed and
//! retried delivery.
//!
//! Statuses are scheduled on a timer heap by a single dispatcher task; everything due is grouped per business number
//! into POSTs of at most `webhook_batch_max` statuses. The first attempt of each POST is awaited in order (so statuses
//! arrive in the scheduled order unless a delivery fails); failed POSTs are retried with exponential backoff in
//! separate tasks, like Meta re-delivering while new notifications keep flowing.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::state::Shared;

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";
/// Most retries back off to at most this.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Serialises JSON the way Meta sends webhooks: compact, every non-ASCII character escaped as `\uXXXX` with lowercase
/// hex (astral characters as UTF-16 surrogate pairs).
pub fn to_meta_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, AsciiFormatter);
    // Serialising a Value into a Vec cannot fail.
    let _ = value.serialize(&mut ser);
    out
}

struct AsciiFormatter;

impl serde_json::ser::Formatter for AsciiFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if c.is_ascii() {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// `sha256=<hex>` of HMAC-SHA256(secret, body).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this arm is unreachable in practice.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The outer envelope of a `messages` webhook for one business number.
pub fn messages_envelope(
    waba_id: &str,
    phone_number_id: &str,
    display: &str,
    value_fields: Value,
) -> Value {
    let mut value = json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": display, "phone_number_id": phone_number_id},
    });
    if let (Some(v), Value::Object(extra)) = (value.as_object_mut(), value_fields) {
        v.extend(extra);
    }
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id, "changes": [{"value": value, "field": "messages"}]}]
    })
}

/// The envelope of a non-`messages` field (templates, account updates): carries `entry[].time`.
pub fn field_envelope(waba_id: &str, field: &str, value: Value) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id, "time": chrono::Utc::now().timestamp(), "changes": [{"value": value, "field": field}]}]
    })
}

/// Something the dispatcher has to do at a given instant.
#[derive(Debug)]
pub enum Job {
    /// A status to put in the next `messages` POST of its business number.
    Status {
        /// Business phone number id (selects the metadata).
        phone_number_id: String,
        /// The `statuses[]` element.
        status: Value,
    },
    /// A complete webhook for another field, sent on its own.
    Field {
        /// Webhook field (`message_template_status_update`, ...).
        field: String,
        /// The `value` object.
        value: Value,
    },
    /// A created template whose review is due.
    TemplateReview {
        /// Template id.
        template_id: u64,
    },
}

/// A [`Job`] with its due instant.
#[derive(Debug)]
pub struct Scheduled {
    /// When to run it.
    pub due: Instant,
    /// The work.
    pub job: Job,
}

struct HeapItem {
    due: Instant,
    seq: u64,
    job: Job,
}

impl PartialEq for HeapItem {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for HeapItem {}
impl PartialOrd for HeapItem {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for HeapItem {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// Result of delivering one webhook POST (first attempt; retries continue in the background).
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryReport {
    /// HTTP status of the first attempt (`None` on a transport error or when no URL is configured).
    pub status: Option<u16>,
    /// Whether the first attempt got a 2xx.
    pub delivered: bool,
    /// Whether retries were scheduled.
    pub retrying: bool,
    /// Transport error of the first attempt, if any.
    pub error: Option<String>,
}

/// Runs the timer heap until `shutdown` flips or the channel closes.
pub async fn run_dispatcher(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Scheduled>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut heap: BinaryHeap<Reverse<HeapItem>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |heap: &mut BinaryHeap<Reverse<HeapItem>>, s: Scheduled| {
        seq += 1;
        heap.push(Reverse(HeapItem {
            due: s.due,
            seq,
            job: s.job,
        }));
    };
    loop {
        while let Ok(s) = rx.try_recv() {
            push(&mut heap, s);
        }
        let now = Instant::now();
        if heap.peek().is_some_and(|Reverse(top)| top.due <= now) {
            let mut due = Vec::new();
            while heap.peek().is_some_and(|Reverse(top)| top.due <= now) {
                if let Some(Reverse(item)) = heap.pop() {
                    due.push(item.job);
                }
            }
            run_due(&shared, due).await;
            continue;
        }
        let next = heap.peek().map(|Reverse(top)| top.due);
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            received = rx.recv() => match received {
                Some(s) => push(&mut heap, s),
                None => break,
            },
            () = sleep_until_opt(next) => {}
        }
    }
}

async fn sleep_until_opt(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

async fn run_due(shared: &Arc<Shared>, jobs: Vec<Job>) {
    let batch_max = shared.config.webhook_batch_max.max(1);
    let mut statuses: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut others = Vec::new();
    for job in jobs {
        match job {
            Job::Status {
                phone_number_id,
                status,
            } => statuses.entry(phone_number_id).or_default().push(status),
            Job::Field { field, value } => others.push((field, value)),
            Job::TemplateReview { template_id } => {
                if let Some(value) = shared.complete_review(template_id) {
                    others.push(("message_template_status_update".to_owned(), value));
                }
            }
        }
    }
    for (phone_number_id, list) in statuses {
        let display = shared.display_number(&phone_number_id).unwrap_or_default();
        for chunk in list.chunks(batch_max) {
            let count = chunk.len() as u64;
            let body = messages_envelope(
                &shared.config.waba_id,
                &phone_number_id,
                &display,
                json!({"statuses": chunk}),
            );
            let report = deliver(shared, body, Kind::Statuses(count)).await;
            tracing::debug!(
                phone_number_id,
                count,
                delivered = report.delivered,
                "status webhook"
            );
        }
    }
    for (field, value) in others {
        let body = field_envelope(&shared.config.waba_id, &field, value);
        deliver(shared, body, Kind::Other).await;
    }
}

/// What a webhook POST carries, for the counters.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// This many statuses.
    Statuses(u64),
    /// This many inbound messages.
    Messages(u64),
    /// Anything else.
    Other,
}

/// [`deliver`] run on the mock's main runtime (for callers on an actix worker thread).
pub async fn deliver_on_main_runtime(
    shared: &Arc<Shared>,
    body: Value,
    kind: Kind,
) -> DeliveryReport {
    let owned = Arc::clone(shared);
    let task = shared
        .runtime
        .spawn(async move { deliver(&owned, body, kind).await });
    task.await.unwrap_or_else(|e| DeliveryReport {
        status: None,
        delivered: false,
        retrying: false,
        error: Some(format!("delivery task failed: {e}")),
    })
}

/// Signs and POSTs `body` to the configured webhook; awaits the first attempt and retries in the background.
pub async fn deliver(shared: &Arc<Shared>, body: Value, kind: Kind) -> DeliveryReport {
    let settings = shared.settings();
    let Some(url) = settings.webhook_url.clone() else {
        shared
            .webhook_counters
            .skipped_no_url
            .fetch_add(1, Ordering::Relaxed);
        return DeliveryReport {
            status: None,
            delivered: false,
            retrying: false,
            error: None,
        };
    };
    let bytes = Arc::new(to_meta_json(&body));
    let signature = sign(&settings.app_secret, &bytes);
    let (status, error) = attempt(shared, &url, &bytes, &signature).await;
    let delivered = status.is_some_and(|s| (200..300).contains(&s));
    shared.log_delivery(&url, &body, status, 1);
    if delivered {
        count_success(shared, kind);
        return DeliveryReport {
            status,
            delivered,
            retrying: false,
            error,
        };
    }
    shared
        .webhook_counters
        .attempts_failed
        .fetch_add(1, Ordering::Relaxed);
    let max_attempts = shared.config.webhook_max_attempts;
    if max_attempts <= 1 {
        shared
            .webhook_counters
            .deliveries_abandoned
            .fetch_add(1, Ordering::Relaxed);
        return DeliveryReport {
            status,
            delivered,
            retrying: false,
            error,
        };
    }
    let shared2 = Arc::clone(shared);
    shared.runtime.spawn(async move {
        retry(shared2, url, body, bytes, signature, kind).await;
    });
    DeliveryReport {
        status,
        delivered,
        retrying: true,
        error,
    }
}

async fn retry(
    shared: Arc<Shared>,
    url: String,
    body: Value,
    bytes: Arc<Vec<u8>>,
    signature: String,
    kind: Kind,
) {
    let mut backoff = shared.config.webhook_retry_base;
    for attempt_no in 2..=shared.config.webhook_max_attempts {
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        let (status, _) = attempt(&shared, &url, &bytes, &signature).await;
        shared.log_delivery(&url, &body, status, attempt_no);
        if status.is_some_and(|s| (200..300).contains(&s)) {
            count_success(&shared, kind);
            return;
        }
        shared
            .webhook_counters
            .attempts_failed
            .fetch_add(1, Ordering::Relaxed);
    }
    tracing::warn!(url, "webhook abandoned after the last attempt");
    shared
        .webhook_counters
        .deliveries_abandoned
        .fetch_add(1, Ordering::Relaxed);
}

fn count_success(shared: &Shared, kind: Kind) {
    let c = &shared.webhook_counters;
    c.deliveries_ok.fetch_add(1, Ordering::Relaxed);
    match kind {
        Kind::Statuses(n) => {
            c.statuses_delivered.fetch_add(n, Ordering::Relaxed);
        }
        Kind::Messages(n) => {
            c.messages_delivered.fetch_add(n, Ordering::Relaxed);
        }
        Kind::Other => {}
    }
}

async fn attempt(
    shared: &Shared,
    url: &str,
    bytes: &Arc<Vec<u8>>,
    signature: &str,
) -> (Option<u16>, Option<String>) {
    let result = shared
        .http
        .post(url)
        .header("Content-Type", "application/json")
        .header(SIGNATURE_HEADER, signature)
        .header("User-Agent", "facebookexternalua")
        .body(bytes.as_ref().clone())
        .send()
        .await;
    match result {
        Ok(response) => (Some(response.status().as_u16()), None),
        Err(e) => {
            tracing::debug!(error = %e, url, "webhook attempt failed");
            (None, Some(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_is_escaped_with_lowercase_hex_and_surrogates() {
        let bytes = to_meta_json(&json!({"t": "äöå السلام 🕋 / ok"}));
        let text = String::from_utf8(bytes).expect("ascii");
        assert_eq!(
            text,
            r#"{"t":"\u00e4\u00f6\u00e5 \u0627\u0644\u0633\u0644\u0627\u0645 \ud83d\udd4b / ok"}"#
        );
        let back: Value = serde_json::from_str(&text).expect("valid json");
        assert_eq!(back["t"], "äöå السلام 🕋 / ok");
    }

    #[test]
    fn signature_is_hex_hmac_of_the_bytes() {
        // RFC 4231 test case 2.
        let sig = sign("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

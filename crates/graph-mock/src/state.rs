//! Shared state of one mock instance.
//!
//! Locks are per concern (one per business number, templates, media, faults, recorder) and are only held for a few
//! field updates, never across an await, so thousands of sends per second do not contend on a global lock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use actix_web::web::Bytes;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{BusinessNumber, MockConfig};
use crate::error::{GraphError, TokenProblem};
use crate::ids::IdGen;
use crate::limiter::SlidingWindow;
use crate::recorder::{PhoneStats, Recorder, Stats, WebhookStats};
use crate::templates::{Review, Template};
use crate::webhook::{Job, Scheduled};

/// Locks a mutex, recovering the data if another thread panicked while holding it (the mock keeps serving).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Settings that can be changed at run time through `PATCH /_mock/config`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    /// Per-number throughput cap.
    pub rate_per_second: u32,
    /// Pair rate spacing in milliseconds (0 disables).
    pub pair_interval_ms: u64,
    /// Our webhook URL.
    pub webhook_url: Option<String>,
    /// App secret used for signatures (never echoed).
    #[serde(skip_serializing, default)]
    pub app_secret: String,
    /// Delay between status steps in milliseconds.
    pub status_delay_ms: u64,
    /// `read` before `delivered`.
    pub out_of_order: bool,
    /// Every status twice.
    pub duplicate_statuses: bool,
    /// Base latency of Graph answers in milliseconds.
    pub latency_ms: u64,
    /// Every this many message sends, the worker reading it stalls first (0: never).
    pub stall_every: u64,
    /// How long one stall lasts, in milliseconds.
    pub stall_ms: u64,
    /// Answer delay of the scripted slow recipient in milliseconds.
    pub slow_delay_ms: u64,
    /// Media URL lifetime in milliseconds.
    pub media_url_ttl_ms: u64,
    /// Template review delay in milliseconds.
    pub template_review_delay_ms: u64,
}

impl Settings {
    fn from_config(c: &MockConfig) -> Self {
        Self {
            rate_per_second: c.rate_per_second,
            pair_interval_ms: millis(c.pair_interval),
            webhook_url: c.webhook_url.clone(),
            app_secret: c.app_secret.clone(),
            status_delay_ms: millis(c.status_delay),
            out_of_order: c.out_of_order,
            duplicate_statuses: c.duplicate_statuses,
            latency_ms: millis(c.latency),
            stall_every: c.stall_every,
            stall_ms: millis(c.stall),
            slow_delay_ms: millis(c.slow_delay),
            media_url_ttl_ms: millis(c.media_url_ttl),
            template_review_delay_ms: millis(c.template_review_delay),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A partial update of [`Settings`]; absent fields stay as they are, an empty `webhook_url` removes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SettingsPatch {
    /// See [`Settings::rate_per_second`].
    pub rate_per_second: Option<u32>,
    /// See [`Settings::pair_interval_ms`].
    pub pair_interval_ms: Option<u64>,
    /// See [`Settings::webhook_url`]; `""` clears it.
    pub webhook_url: Option<String>,
    /// See [`Settings::app_secret`].
    pub app_secret: Option<String>,
    /// See [`Settings::status_delay_ms`].
    pub status_delay_ms: Option<u64>,
    /// See [`Settings::out_of_order`].
    pub out_of_order: Option<bool>,
    /// See [`Settings::duplicate_statuses`].
    pub duplicate_statuses: Option<bool>,
    /// See [`Settings::latency_ms`].
    pub latency_ms: Option<u64>,
    /// See [`Settings::stall_every`].
    pub stall_every: Option<u64>,
    /// See [`Settings::stall_ms`].
    pub stall_ms: Option<u64>,
    /// See [`Settings::slow_delay_ms`].
    pub slow_delay_ms: Option<u64>,
    /// See [`Settings::media_url_ttl_ms`].
    pub media_url_ttl_ms: Option<u64>,
    /// See [`Settings::template_review_delay_ms`].
    pub template_review_delay_ms: Option<u64>,
}

/// A fault mode of the control API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultMode {
    /// Answer sends with the given error code (default 131000) and HTTP status (default from Meta's table).
    Error,
    /// Answer sends with 130429 Rate limit hit.
    Throttle,
    /// Accept sends but answer after `delay_ms`.
    Slow,
    /// Answer every Graph call with 190 as if the token had been revoked.
    TokenInvalid,
}

/// `POST /_mock/faults` body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultSpec {
    /// What to do.
    pub mode: FaultMode,
    /// Error code for `error` (default 131000).
    #[serde(default)]
    pub code: Option<i64>,
    /// HTTP status for `error` (default: Meta's status for the code).
    #[serde(default)]
    pub http_status: Option<u16>,
    /// Details text for `error`.
    #[serde(default)]
    pub details: Option<String>,
    /// Delay for `slow` (default 3000 ms).
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// How many calls it applies to (default 1).
    #[serde(default)]
    pub count: Option<u32>,
    /// Apply until `DELETE /_mock/faults` instead of a count.
    #[serde(default)]
    pub until_cleared: bool,
    /// Only sends from this business number.
    #[serde(default)]
    pub phone_number_id: Option<String>,
    /// Only sends to this recipient (any form; digits are compared).
    #[serde(default)]
    pub to: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct ActiveFault {
    spec: FaultSpec,
    remaining: Option<u32>,
}

/// What a matching fault does to a send.
#[derive(Debug, Clone)]
pub enum FaultAction {
    /// Answer this error.
    Fail(GraphError),
    /// Continue after sleeping this long.
    Delay(Duration),
}

/// A stored media object.
#[derive(Debug, Clone)]
pub struct MediaItem {
    /// Media id.
    pub id: String,
    /// Business number it belongs to.
    pub phone_number_id: String,
    /// MIME type.
    pub mime_type: String,
    /// Content.
    pub bytes: Bytes,
    /// Base64 SHA-256 (as in webhooks).
    pub sha256_base64: String,
    /// Hex SHA-256 (as in `GET /{media-id}`).
    pub sha256_hex: String,
    /// Downloads still to fail.
    pub fail_first: u32,
    /// Status of those failing downloads.
    pub fail_status: u16,
}

impl MediaItem {
    /// A media item for `bytes`, computing both SHA-256 encodings.
    pub fn new(id: String, phone_number_id: String, mime_type: String, bytes: Bytes) -> Self {
        let digest = Sha256::digest(&bytes);
        Self {
            id,
            phone_number_id,
            mime_type,
            sha256_base64: STANDARD.encode(digest),
            sha256_hex: hex::encode(digest),
            bytes,
            fail_first: 0,
            fail_status: 404,
        }
    }
}

/// Media objects and the download URLs handed out for them.
#[derive(Debug, Default)]
pub struct MediaStore {
    /// By media id.
    pub items: HashMap<String, MediaItem>,
    /// Download token → (media id, issued at).
    pub url_tokens: HashMap<String, (String, Instant)>,
}

/// Per-number mutable state (one mutex each).
#[derive(Debug, Default)]
pub struct PhoneState {
    /// Throughput limiter window.
    pub throughput: SlidingWindow,
    /// All valid attempts (statistics only).
    pub attempts: SlidingWindow,
    /// Last accepted send per recipient (pair rate).
    pub pair_last: HashMap<String, Instant>,
    /// Counters.
    pub stats: PhoneStats,
}

/// A business number and its state.
#[derive(Debug)]
pub struct PhoneSlot {
    /// Static description.
    pub number: BusinessNumber,
    /// Mutable state.
    pub state: Mutex<PhoneState>,
}

/// Webhook counters (atomics, updated from delivery tasks).
#[derive(Debug, Default)]
pub struct WebhookCounters {
    /// See [`WebhookStats::deliveries_ok`].
    pub deliveries_ok: AtomicU64,
    /// See [`WebhookStats::attempts_failed`].
    pub attempts_failed: AtomicU64,
    /// See [`WebhookStats::deliveries_abandoned`].
    pub deliveries_abandoned: AtomicU64,
    /// See [`WebhookStats::statuses_delivered`].
    pub statuses_delivered: AtomicU64,
    /// See [`WebhookStats::messages_delivered`].
    pub messages_delivered: AtomicU64,
    /// See [`WebhookStats::skipped_no_url`].
    pub skipped_no_url: AtomicU64,
}

/// One webhook POST attempt, kept for `GET /_mock/webhooks`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeliveryLogEntry {
    /// When the attempt finished.
    pub at: DateTime<Utc>,
    /// Target URL.
    pub url: String,
    /// HTTP status received (`None` on a transport error).
    pub status: Option<u16>,
    /// Attempt number (1 = first).
    pub attempt: u32,
    /// The payload.
    pub body: Value,
}

const DELIVERY_LOG_CAPACITY: usize = 1000;

/// Everything handlers and the dispatcher share.
#[derive(Debug)]
pub struct Shared {
    /// Start-up configuration (immutable parts are read from here).
    pub config: MockConfig,
    settings: RwLock<Arc<Settings>>,
    /// Business numbers by phone number id.
    pub phones: HashMap<String, PhoneSlot>,
    /// Templates of the WABA.
    pub templates: Mutex<Vec<Template>>,
    /// Media objects.
    pub media: Mutex<MediaStore>,
    faults: Mutex<Vec<ActiveFault>>,
    fault_count: AtomicU64,
    scripted_calls: Mutex<HashMap<(String, [u8; 32]), u32>>,
    /// Request log.
    pub recorder: Recorder,
    /// Webhook counters.
    pub webhook_counters: WebhookCounters,
    deliveries: Mutex<VecDeque<DeliveryLogEntry>>,
    versions: Mutex<BTreeMap<String, u64>>,
    /// Faults applied.
    pub faults_applied: AtomicU64,
    /// Inbound messages injected.
    pub inbound_injected: AtomicU64,
    /// Message sends seen (for [`Settings::stall_every`]).
    pub sends_seen: AtomicU64,
    /// Successful media downloads.
    pub media_downloads: AtomicU64,
    /// Media uploads.
    pub media_uploads: AtomicU64,
    /// Id generator.
    pub ids: IdGen,
    outbox: mpsc::UnboundedSender<Scheduled>,
    /// Client for webhook POSTs.
    pub http: reqwest::Client,
    /// The runtime `spawn` was called on: every webhook POST runs there, so the client's connections never straddle
    /// the actix worker runtimes.
    pub runtime: tokio::runtime::Handle,
}

impl Shared {
    /// Builds the state; `outbox` feeds the webhook dispatcher, `runtime` runs every webhook POST.
    pub fn new(
        config: MockConfig,
        outbox: mpsc::UnboundedSender<Scheduled>,
        runtime: tokio::runtime::Handle,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.webhook_timeout)
            .pool_max_idle_per_host(8)
            .build()?;
        let phones = config
            .phone_numbers
            .iter()
            .map(|n| {
                let state = PhoneState {
                    stats: PhoneStats {
                        display_phone_number: n.display_phone_number.clone(),
                        ..PhoneStats::default()
                    },
                    ..PhoneState::default()
                };
                (
                    n.phone_number_id.clone(),
                    PhoneSlot {
                        number: n.clone(),
                        state: Mutex::new(state),
                    },
                )
            })
            .collect();
        Ok(Self {
            settings: RwLock::new(Arc::new(Settings::from_config(&config))),
            phones,
            templates: Mutex::new(Template::seeds()),
            media: Mutex::new(MediaStore::default()),
            faults: Mutex::new(Vec::new()),
            fault_count: AtomicU64::new(0),
            scripted_calls: Mutex::new(HashMap::new()),
            recorder: Recorder::new(config.recorder_capacity),
            webhook_counters: WebhookCounters::default(),
            deliveries: Mutex::new(VecDeque::new()),
            versions: Mutex::new(BTreeMap::new()),
            faults_applied: AtomicU64::new(0),
            inbound_injected: AtomicU64::new(0),
            sends_seen: AtomicU64::new(0),
            media_downloads: AtomicU64::new(0),
            media_uploads: AtomicU64::new(0),
            ids: IdGen::new(),
            outbox,
            http,
            runtime,
            config,
        })
    }

    /// The current run-time settings (a cheap `Arc` clone).
    pub fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.settings.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Applies a [`SettingsPatch`] and returns the new settings.
    pub fn update_settings(&self, patch: SettingsPatch) -> Result<Arc<Settings>, String> {
        let mut guard = self
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut next = Settings::clone(&guard);
        if let Some(v) = patch.rate_per_second {
            if v == 0 {
                return Err("rate_per_second must be at least 1".into());
            }
            next.rate_per_second = v;
        }
        if let Some(url) = patch.webhook_url {
            next.webhook_url = Some(url).filter(|u| !u.trim().is_empty());
        }
        if let Some(secret) = patch.app_secret {
            next.app_secret = secret;
        }
        if next.webhook_url.is_some() && next.app_secret.is_empty() {
            return Err("app_secret is required when webhook_url is set".into());
        }
        next.pair_interval_ms = patch.pair_interval_ms.unwrap_or(next.pair_interval_ms);
        next.status_delay_ms = patch.status_delay_ms.unwrap_or(next.status_delay_ms);
        next.out_of_order = patch.out_of_order.unwrap_or(next.out_of_order);
        next.duplicate_statuses = patch.duplicate_statuses.unwrap_or(next.duplicate_statuses);
        next.latency_ms = patch.latency_ms.unwrap_or(next.latency_ms);
        next.stall_every = patch.stall_every.unwrap_or(next.stall_every);
        next.stall_ms = patch.stall_ms.unwrap_or(next.stall_ms);
        next.slow_delay_ms = patch.slow_delay_ms.unwrap_or(next.slow_delay_ms);
        next.media_url_ttl_ms = patch.media_url_ttl_ms.unwrap_or(next.media_url_ttl_ms);
        next.template_review_delay_ms = patch
            .template_review_delay_ms
            .unwrap_or(next.template_review_delay_ms);
        let next = Arc::new(next);
        *guard = Arc::clone(&next);
        Ok(next)
    }

    /// Display number of a business number.
    pub fn display_number(&self, phone_number_id: &str) -> Option<String> {
        self.phones
            .get(phone_number_id)
            .map(|p| p.number.display_phone_number.clone())
    }

    /// Queues a dispatcher job (ignored once the dispatcher has stopped).
    pub fn schedule(&self, due: Instant, job: Job) {
        let _ = self.outbox.send(Scheduled { due, job });
    }

    /// Checks the bearer token; returns the matched token's label.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<String, GraphError> {
        if self.take_token_fault() {
            return Err(GraphError::token(TokenProblem::Invalid));
        }
        let token =
            bearer_token(authorization).ok_or_else(|| GraphError::token(TokenProblem::Missing))?;
        if let Some(i) = self.config.tokens.iter().position(|t| t == token) {
            return Ok(format!("token-{}", i + 1));
        }
        if self.config.expired_tokens.iter().any(|t| t == token) {
            return Err(GraphError::token(TokenProblem::Expired));
        }
        Err(GraphError::token(TokenProblem::Invalid))
    }

    /// The label of the configured token in `authorization`, without side effects (for the recorder).
    pub fn token_label(&self, authorization: Option<&str>) -> Option<String> {
        let token = bearer_token(authorization)?;
        if let Some(i) = self.config.tokens.iter().position(|t| t == token) {
            return Some(format!("token-{}", i + 1));
        }
        self.config
            .expired_tokens
            .iter()
            .any(|t| t == token)
            .then(|| "expired".to_owned())
    }

    /// Counts a Graph API version seen in a path.
    pub fn count_version(&self, version: &str) {
        *lock(&self.versions).entry(version.to_owned()).or_default() += 1;
    }

    /// Adds a fault.
    pub fn add_fault(&self, spec: FaultSpec) {
        let remaining = if spec.until_cleared {
            None
        } else {
            Some(spec.count.unwrap_or(1))
        };
        let mut faults = lock(&self.faults);
        faults.push(ActiveFault { spec, remaining });
        self.fault_count
            .store(faults.len() as u64, Ordering::Release);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
        self.fault_count.store(0, Ordering::Release);
    }

    /// The active faults with their remaining counts.
    pub fn faults_json(&self) -> Value {
        json!(lock(&self.faults).clone())
    }

    fn take_fault(&self, pred: impl Fn(&FaultSpec) -> bool) -> Option<FaultSpec> {
        if self.fault_count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut faults = lock(&self.faults);
        let index = faults.iter().position(|f| pred(&f.spec))?;
        let spec = faults[index].spec.clone();
        if let Some(remaining) = faults[index].remaining.as_mut() {
            *remaining = remaining.saturating_sub(1);
            if *remaining == 0 {
                faults.remove(index);
            }
        }
        self.fault_count
            .store(faults.len() as u64, Ordering::Release);
        self.faults_applied.fetch_add(1, Ordering::Relaxed);
        Some(spec)
    }

    fn take_token_fault(&self) -> bool {
        self.take_fault(|f| f.mode == FaultMode::TokenInvalid)
            .is_some()
    }

    /// Consumes the first send fault matching this business number and recipient.
    pub fn take_send_fault(
        &self,
        phone_number_id: &str,
        recipient_key: &str,
    ) -> Option<FaultAction> {
        let spec = self.take_fault(|f| {
            f.mode != FaultMode::TokenInvalid
                && f.phone_number_id
                    .as_deref()
                    .is_none_or(|p| p == phone_number_id)
                && f.to
                    .as_deref()
                    .is_none_or(|t| crate::phone::scripted_key(t) == recipient_key)
        })?;
        Some(match spec.mode {
            FaultMode::Slow => {
                FaultAction::Delay(Duration::from_millis(spec.delay_ms.unwrap_or(3000)))
            }
            FaultMode::Throttle => FaultAction::Fail(GraphError::stock(130_429)),
            FaultMode::Error | FaultMode::TokenInvalid => {
                let code = spec.code.unwrap_or(131_000);
                let mut err = match spec.details {
                    Some(details) => GraphError::coded(code, details),
                    None => GraphError::stock(code),
                };
                if let Some(status) = spec.http_status {
                    err = err.with_status(status);
                }
                FaultAction::Fail(err)
            }
        })
    }

    /// Increments and returns the call count of a scripted (recipient, body) pair.
    pub fn count_scripted_call(&self, recipient_key: &str, body: &Value) -> u32 {
        let mut canonical = Vec::new();
        write_canonical(body, &mut canonical);
        let hash: [u8; 32] = Sha256::digest(&canonical).into();
        let mut calls = lock(&self.scripted_calls);
        let n = calls.entry((recipient_key.to_owned(), hash)).or_default();
        *n += 1;
        *n
    }

    /// Applies a due template review; returns the status webhook `value` to send.
    pub fn complete_review(&self, template_id: u64) -> Option<Value> {
        let mut templates = lock(&self.templates);
        let template = templates.iter_mut().find(|t| t.id == template_id)?;
        let review = template.pending_review.take()?;
        let (event, reason) = match review {
            Review::Approve => ("APPROVED", "NONE"),
            Review::RejectInvalidFormat => ("REJECTED", "INVALID_FORMAT"),
        };
        template.status = event.to_owned();
        Some(template_status_value(template, event, reason))
    }

    /// Keeps a webhook attempt in the bounded delivery log.
    pub fn log_delivery(&self, url: &str, body: &Value, status: Option<u16>, attempt: u32) {
        let mut log = lock(&self.deliveries);
        if log.len() >= DELIVERY_LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(DeliveryLogEntry {
            at: Utc::now(),
            url: url.to_owned(),
            status,
            attempt,
            body: body.clone(),
        });
    }

    /// The delivery log, oldest first.
    pub fn deliveries(&self) -> Vec<DeliveryLogEntry> {
        lock(&self.deliveries).iter().cloned().collect()
    }

    /// A snapshot of every counter.
    pub fn stats(&self) -> Stats {
        let phone_numbers = self
            .phones
            .iter()
            .map(|(id, slot)| {
                let state = lock(&slot.state);
                let mut stats = state.stats.clone();
                stats.max_accepted_in_any_second = state.throughput.max_seen() as u64;
                stats.max_attempts_in_any_second = state.attempts.max_seen() as u64;
                (id.clone(), stats)
            })
            .collect();
        let c = &self.webhook_counters;
        Stats {
            phone_numbers,
            webhooks: WebhookStats {
                deliveries_ok: c.deliveries_ok.load(Ordering::Relaxed),
                attempts_failed: c.attempts_failed.load(Ordering::Relaxed),
                deliveries_abandoned: c.deliveries_abandoned.load(Ordering::Relaxed),
                statuses_delivered: c.statuses_delivered.load(Ordering::Relaxed),
                messages_delivered: c.messages_delivered.load(Ordering::Relaxed),
                skipped_no_url: c.skipped_no_url.load(Ordering::Relaxed),
            },
            api_versions: lock(&self.versions).clone(),
            faults_applied: self.faults_applied.load(Ordering::Relaxed),
            inbound_injected: self.inbound_injected.load(Ordering::Relaxed),
            media_downloads: self.media_downloads.load(Ordering::Relaxed),
            media_uploads: self.media_uploads.load(Ordering::Relaxed),
            recorded_requests: self.recorder.len() as u64,
            recorder_dropped: self.recorder.dropped(),
            rate_per_second: self.settings().rate_per_second,
        }
    }

    /// Zeroes every counter (the limiter windows keep protecting; their maxima restart from the current window).
    pub fn reset_stats(&self) {
        for slot in self.phones.values() {
            let mut state = lock(&slot.state);
            state.stats = PhoneStats {
                display_phone_number: slot.number.display_phone_number.clone(),
                ..PhoneStats::default()
            };
            state.throughput.reset_max();
            state.attempts.reset_max();
        }
        let c = &self.webhook_counters;
        for counter in [
            &c.deliveries_ok,
            &c.attempts_failed,
            &c.deliveries_abandoned,
            &c.statuses_delivered,
            &c.messages_delivered,
            &c.skipped_no_url,
            &self.faults_applied,
            &self.inbound_injected,
            &self.media_downloads,
            &self.media_uploads,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        lock(&self.versions).clear();
        lock(&self.deliveries).clear();
    }
}

/// The `value` of a `message_template_status_update` webhook.
pub fn template_status_value(template: &Template, event: &str, reason: &str) -> Value {
    let mut value = json!({
        "event": event,
        "message_template_id": template.id,
        "message_template_name": template.name,
        "message_template_language": template.language,
        "reason": reason,
        "message_template_category": template.category,
    });
    if let Some(v) = value.as_object_mut() {
        if reason == "INVALID_FORMAT" {
            v.insert(
                "rejection_info".into(),
                json!({
                    "reason": "Parameters are adjacent without separating text.",
                    "recommendation": "Put descriptive words between variables."
                }),
            );
        }
        match event {
            "PAUSED" => {
                v.insert(
                    "other_info".into(),
                    json!({"title": "FIRST_PAUSE", "description": "Your template was paused because of low quality."}),
                );
            }
            "DISABLED" => {
                v.insert(
                    "disable_info".into(),
                    json!({"disable_date": Utc::now().timestamp()}),
                );
            }
            _ => {}
        }
    }
    value
}

fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// JSON with object keys sorted at every level, so equal bodies hash equally whatever the sender's key order.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(key.clone()).to_string().as_bytes());
                out.push(b':');
                if let Some(v) = map.get(key) {
                    write_canonical(v, out);
                }
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing_accepts_any_scheme_case() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(Some("Basic abc")), None);
        assert_eq!(bearer_token(Some("Bearer ")), None);
        assert_eq!(bearer_token(None), None);
    }

    #[test]
    fn canonical_json_ignores_key_order() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        write_canonical(&json!({"b": 1, "a": {"y": [1, 2], "x": "s"}}), &mut a);
        write_canonical(&json!({"a": {"x": "s", "y": [1, 2]}, "b": 1}), &mut b);
        assert_eq!(a, b);
    }
}

//! The read API on `SYNC_HTTP_ADDR`, beside `/healthz`, `/readyz` and `/metrics`:
//!
//! - `GET /v1/tenants/{tenant_id}/jamaah/{jamaah_id}/messages?limit=&cursor=`: the conversation with
//!   one jamaah, newest first, bodies decrypted, with each message's status history; `next_cursor`
//!   (opaque) continues after the last message of the page.
//! - `GET /v1/tenants/{tenant_id}/metrics?from=YYYY-MM-DD&to=YYYY-MM-DD`: the figures of
//!   [`compute_metrics`] over the UTC days `from..=to`.
//!
//! Every `/v1` call needs `Authorization: Bearer $SYNC_API_TOKEN` (compared in constant time,
//! 401 otherwise) and only ever reads rows of the tenant in the path: another tenant's jamaah is 404.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;
use wa_db::PgPool;
use wa_db::models::conversation::{Contact, Media, Message, MessageStatus};

use crate::crypto::Cipher;

/// Page size when `limit` is absent.
pub const DEFAULT_PAGE: i64 = 50;
/// Largest page.
pub const MAX_PAGE: i64 = 200;
/// Longest metrics period, in days.
pub const MAX_PERIOD_DAYS: i64 = 366;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The database.
    pub pool: PgPool,
    /// Decrypts bodies.
    pub cipher: Cipher,
    /// `SYNC_API_TOKEN`.
    pub token: Arc<SecretString>,
    /// USD per billable message by pricing category.
    pub rates: Arc<BTreeMap<String, f64>>,
}

/// Every way a `/v1` call fails; the body is `{"error": code, "message": text}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing or wrong bearer token.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// Unknown jamaah for this tenant.
    #[error("not found")]
    NotFound,
    /// A query parameter is wrong (the text names it).
    #[error("{0}")]
    BadRequest(String),
    /// No database connection right now.
    #[error("the database is unavailable")]
    Unavailable(String),
    /// Anything unexpected; the cause is logged, never returned.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::BadRequest(_) => "bad_request",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Unavailable(cause) | Self::Internal(cause) = self {
            tracing::error!(error = %cause, code = self.code(), "read API request failed");
        }
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, Self::Unauthorized) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.json(json!({"error": self.code(), "message": self.to_string()}))
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(err: diesel::result::Error) -> Self {
        match err {
            diesel::result::Error::NotFound => Self::NotFound,
            other => Self::Internal(other.to_string()),
        }
    }
}

/// Registers the `/v1` routes.
pub fn configure(cfg: &mut web::ServiceConfig, state: ApiState) {
    cfg.app_data(web::Data::new(state))
        .route(
            "/v1/tenants/{tenant_id}/jamaah/{jamaah_id}/messages",
            web::get().to(messages),
        )
        .route(
            "/v1/tenants/{tenant_id}/metrics",
            web::get().to(metrics_route),
        );
}

fn authorize(req: &HttpRequest, state: &ApiState) -> Result<(), ApiError> {
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    let expected = state.token.expose_secret().as_bytes();
    if bool::from(presented.trim().as_bytes().ct_eq(expected)) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

async fn conn(state: &ApiState) -> Result<wa_db::PooledConn, ApiError> {
    state
        .pool
        .get()
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))
}

/// Query of the messages route.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

/// Encodes a position `(sent_at, id)` as an opaque cursor.
pub fn encode_cursor(at: DateTime<Utc>, id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", at.timestamp_micros()))
}

/// Decodes [`encode_cursor`]'s output.
pub fn decode_cursor(cursor: &str) -> Option<(DateTime<Utc>, i64)> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (micros, id) = text.split_once(':')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        id.parse().ok()?,
    ))
}

#[derive(Serialize)]
struct StatusView {
    status: String,
    at: DateTime<Utc>,
    meta_code: Option<i64>,
}

#[derive(Serialize)]
struct MediaView {
    state: String,
    mime_type: Option<String>,
    filename: Option<String>,
    size_bytes: Option<i64>,
}

#[derive(Serialize)]
struct MessageView {
    id: i64,
    direction: String,
    #[serde(rename = "type")]
    message_type: String,
    wa_message_id: Option<String>,
    job_id: Option<String>,
    reference: Option<serde_json::Value>,
    body: Option<String>,
    status: Option<String>,
    status_at: Option<DateTime<Utc>>,
    error_code: Option<i64>,
    failure_reason: Option<String>,
    pricing_category: Option<String>,
    sent_at: DateTime<Utc>,
    media: Vec<MediaView>,
    statuses: Vec<StatusView>,
}

#[tracing::instrument(name = "api.messages", skip_all, fields(tenant_id, jamaah_id))]
async fn messages(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<PageQuery>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let (tenant, jamaah) = path.into_inner();
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_PAGE}"
        )));
    }
    let before = match &query.cursor {
        None => None,
        Some(c) => Some(
            decode_cursor(c).ok_or_else(|| ApiError::BadRequest("cursor is not valid".into()))?,
        ),
    };
    let mut conn = conn(&state).await?;
    let contact = Contact::find_by_jamaah(&mut conn, &tenant, &jamaah)
        .await?
        .ok_or(ApiError::NotFound)?;
    let page = Message::page_for_contact(&mut conn, &tenant, contact.id, before, limit).await?;
    let ids: Vec<i64> = page.iter().map(|m| m.id).collect();
    let mut media_by_message: HashMap<i64, Vec<MediaView>> = HashMap::new();
    for item in Media::of_messages(&mut conn, &ids).await? {
        media_by_message
            .entry(item.message_id)
            .or_default()
            .push(MediaView {
                state: item.state,
                mime_type: item.mime_type,
                filename: item.filename,
                size_bytes: item.size_bytes,
            });
    }
    let mut views = Vec::with_capacity(page.len());
    for message in &page {
        let body = match (
            &message.body_ciphertext,
            &message.body_nonce,
            &message.body_key_id,
        ) {
            (Some(ciphertext), Some(nonce), Some(key_id)) => Some(
                state
                    .cipher
                    .open(ciphertext, nonce, key_id)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .map_err(|e| ApiError::Internal(format!("message {}: {e}", message.id)))?,
            ),
            _ => None,
        };
        let statuses = match (&message.wa_message_id, message.direction.as_str()) {
            (Some(wamid), "outbound") => MessageStatus::history(&mut conn, &tenant, wamid)
                .await?
                .into_iter()
                .map(|s| StatusView {
                    status: s.status,
                    at: s.occurred_at,
                    meta_code: s.meta_code,
                })
                .collect(),
            _ => Vec::new(),
        };
        views.push(MessageView {
            id: message.id,
            direction: message.direction.clone(),
            message_type: message.message_type.clone(),
            wa_message_id: message.wa_message_id.clone(),
            job_id: message.job_id.clone(),
            reference: match (&message.reference_kind, &message.reference_id) {
                (Some(kind), Some(id)) => Some(json!({"kind": kind, "id": id})),
                _ => None,
            },
            body,
            status: message.current_status.clone(),
            status_at: message.status_at,
            error_code: message.error_code,
            failure_reason: message.failure_reason.clone(),
            pricing_category: message.pricing_category.clone(),
            sent_at: message.sent_at,
            media: media_by_message.remove(&message.id).unwrap_or_default(),
            statuses,
        });
    }
    let next_cursor = (page.len() as i64 == limit)
        .then(|| page.last().map(|m| encode_cursor(m.sent_at, m.id)))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({
        "tenant_id": tenant,
        "jamaah_id": jamaah,
        "messages": views,
        "next_cursor": next_cursor,
    })))
}

/// Query of the metrics route.
#[derive(Debug, Deserialize)]
pub struct PeriodQuery {
    from: Option<String>,
    to: Option<String>,
}

fn parse_day(value: Option<&str>, name: &str) -> Result<NaiveDate, ApiError> {
    let value =
        value.ok_or_else(|| ApiError::BadRequest(format!("{name} is required (YYYY-MM-DD)")))?;
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map_err(|_| ApiError::BadRequest(format!("{name} must be YYYY-MM-DD")))
}

fn start_of(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN))
}

#[tracing::instrument(name = "api.metrics", skip_all, fields(tenant_id))]
async fn metrics_route(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<PeriodQuery>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let tenant = path.into_inner();
    let from = parse_day(query.from.as_deref(), "from")?;
    let to = parse_day(query.to.as_deref(), "to")?;
    if to < from {
        return Err(ApiError::BadRequest("to must not be before from".into()));
    }
    if (to - from).num_days() >= MAX_PERIOD_DAYS {
        return Err(ApiError::BadRequest(format!(
            "the period must be at most {MAX_PERIOD_DAYS} days"
        )));
    }
    let start = start_of(from);
    let end = start_of(to) + chrono::Duration::days(1);
    let mut conn = conn(&state).await?;
    // Replies and responses up to 24 h after the period still count for messages inside it.
    let rows =
        Message::list_between(&mut conn, &tenant, start, end + chrono::Duration::hours(24)).await?;
    let report = compute_metrics(&rows, start, end, &state.rates);
    Ok(HttpResponse::Ok().json(json!({
        "tenant_id": tenant,
        "from": from,
        "to": to,
        "metrics": report,
    })))
}

/// API errors (jobs that failed for good) over the period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiErrors {
    /// Failed jobs / (accepted + failed jobs).
    pub rate: f64,
    /// Failed jobs by the sender's reason word.
    pub by_reason: BTreeMap<String, u64>,
}

/// The metrics of one tenant and period; rates are fractions 0..=1 (0 when nothing was sent).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsReport {
    /// Outbound messages Meta accepted.
    pub messages_sent: u64,
    /// Of those, delivered or read.
    pub messages_delivered: u64,
    /// Of those, read.
    pub messages_read: u64,
    /// Of those, answered by an inbound message within 24 h.
    pub messages_replied: u64,
    /// Outbound messages that failed (a failed status or a failed job).
    pub messages_failed: u64,
    /// delivered / sent.
    pub delivery_rate: f64,
    /// read / sent.
    pub read_rate: f64,
    /// replied / sent.
    pub reply_rate: f64,
    /// Failed jobs by reason.
    pub api_errors: ApiErrors,
    /// Mean seconds from a jamaah's first unanswered inbound message to the next outbound one
    /// (within 24 h); `None` when nothing was answered.
    pub avg_agent_response_seconds: Option<f64>,
    /// USD by pricing category of billable messages, from the configured rate card.
    pub cost_usd_by_category: BTreeMap<String, f64>,
    /// Sum of `cost_usd_by_category`.
    pub cost_usd_total: f64,
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Computes the metrics of messages sent in `[start, end)`; `rows` (oldest first) may extend 24 h
/// past `end` so replies and responses to messages near the end are seen.
pub fn compute_metrics(
    rows: &[Message],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    rates: &BTreeMap<String, f64>,
) -> MetricsReport {
    let window = chrono::Duration::hours(24);
    let in_period = |m: &Message| m.sent_at >= start && m.sent_at < end;
    let mut by_contact: HashMap<i64, Vec<&Message>> = HashMap::new();
    for m in rows {
        by_contact.entry(m.contact_id).or_default().push(m);
    }
    let (mut sent, mut delivered, mut read, mut replied, mut failed, mut failed_jobs) =
        (0, 0, 0, 0, 0, 0);
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    let mut cost: BTreeMap<String, f64> = BTreeMap::new();
    for m in rows
        .iter()
        .filter(|m| m.direction == "outbound" && in_period(m))
    {
        let status = m.current_status.as_deref();
        if status == Some("failed") {
            failed += 1;
        }
        if let Some(reason) = &m.failure_reason {
            failed_jobs += 1;
            *by_reason.entry(reason.clone()).or_default() += 1;
        }
        if m.wa_message_id.is_none() {
            continue;
        }
        sent += 1;
        if matches!(status, Some("delivered" | "read")) {
            delivered += 1;
        }
        if status == Some("read") {
            read += 1;
        }
        let answered = by_contact.get(&m.contact_id).is_some_and(|msgs| {
            msgs.iter().any(|r| {
                r.direction == "inbound" && r.sent_at > m.sent_at && r.sent_at <= m.sent_at + window
            })
        });
        if answered {
            replied += 1;
        }
        let free = m
            .pricing_type
            .as_deref()
            .is_some_and(|t| t.starts_with("free"));
        if let Some(category) = &m.pricing_category
            && m.billable != Some(false)
            && !free
        {
            let rate = rates
                .get(&category.to_ascii_lowercase())
                .copied()
                .unwrap_or(0.0);
            *cost.entry(category.clone()).or_default() += rate;
        }
    }
    // Response time: first inbound of an unanswered run (inside the period) → next outbound.
    let mut responses = Vec::new();
    for msgs in by_contact.values() {
        let mut waiting_since: Option<DateTime<Utc>> = None;
        for m in msgs {
            match m.direction.as_str() {
                "inbound" if waiting_since.is_none() && in_period(m) => {
                    waiting_since = Some(m.sent_at)
                }
                "outbound" if m.wa_message_id.is_some() => {
                    if let Some(since) = waiting_since.take()
                        && m.sent_at - since <= window
                    {
                        responses.push((m.sent_at - since).num_milliseconds() as f64 / 1000.0);
                    }
                }
                _ => {}
            }
        }
    }
    let avg =
        (!responses.is_empty()).then(|| responses.iter().sum::<f64>() / responses.len() as f64);
    let total = cost.values().sum();
    MetricsReport {
        messages_sent: sent,
        messages_delivered: delivered,
        messages_read: read,
        messages_replied: replied,
        messages_failed: failed,
        delivery_rate: ratio(delivered, sent),
        read_rate: ratio(read, sent),
        reply_rate: ratio(replied, sent),
        api_errors: ApiErrors {
            rate: ratio(failed_jobs, sent + failed_jobs),
            by_reason,
        },
        avg_agent_response_seconds: avg,
        cost_usd_by_category: cost,
        cost_usd_total: total,
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_rejected() {
        let at = Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap();
        assert_eq!(decode_cursor(&encode_cursor(at, 42)), Some((at, 42)));
        assert_eq!(decode_cursor("%%%"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("x:y")), None);
    }

    #[test]
    fn ratios_of_nothing_are_zero() {
        assert_eq!(ratio(0, 0), 0.0);
        assert_eq!(ratio(1, 4), 0.25);
    }
}

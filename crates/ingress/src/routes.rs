//! HTTP routes: the GET verification handshake and the POST webhook, beside `/healthz`,
//! `/readyz` and `/metrics`. Handlers extract, verify, call [`crate::ingest::publish_webhook`]
//! and map the result; nothing here touches lapin.

use std::time::Instant;

use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse, http::header};
use futures_util::StreamExt as _;
use metrics_exporter_prometheus::PrometheusHandle;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;
use wa_amqp::Publisher;
use wa_service::health::Readiness;

use crate::error::ApiError;
use crate::ingest::{Ingested, Webhook, publish_webhook};
use crate::instruments;
use crate::signature::{SIGNATURE_HEADER, Signature, Verifier};

/// The webhook path Meta is configured with (contract).
pub const WEBHOOK_PATH: &str = "/api/v1/whatsapp/webhook";

/// What the webhook handlers share across workers.
pub struct IngressState {
    /// Confirmed publisher on ingress's own connection.
    pub publisher: Publisher,
    /// The app secrets.
    pub verifier: Verifier,
    /// The GET handshake token.
    pub verify_token: SecretString,
    /// Larger bodies get 413.
    pub max_body_bytes: usize,
}

/// Registers every route; `main`, tests and the benchmark all serve exactly this.
pub fn configure(
    cfg: &mut web::ServiceConfig,
    state: web::Data<IngressState>,
    readiness: Readiness,
    metrics: PrometheusHandle,
) {
    cfg.app_data(state)
        .route(WEBHOOK_PATH, web::get().to(verify_subscription))
        .route(WEBHOOK_PATH, web::post().to(receive_webhook))
        .configure(|cfg| wa_service::health::configure(cfg, readiness, metrics));
}

/// Query of Meta's GET handshake; every field optional so a missing one is a 403, not a 400.
#[derive(Debug, Deserialize)]
struct Handshake {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// `GET /webhook`: echoes `hub.challenge` only for `hub.mode=subscribe` and the right token.
#[tracing::instrument(name = "webhook.verify", skip_all, fields(outcome))]
async fn verify_subscription(
    query: Option<web::Query<Handshake>>,
    state: web::Data<IngressState>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let result = match query.map(web::Query::into_inner) {
        Some(Handshake {
            mode: Some(mode),
            verify_token: Some(token),
            challenge: Some(challenge),
        }) if mode == "subscribe" && token_matches(&token, &state.verify_token) => {
            Ok(HttpResponse::Ok()
                .content_type("text/plain; charset=utf-8")
                .body(challenge))
        }
        _ => Err(ApiError::VerificationFailed),
    };
    let outcome = result.as_ref().map_or_else(ApiError::code, |_| "verified");
    tracing::Span::current().record("outcome", outcome);
    instruments::record_request(outcome, started.elapsed());
    if result.is_err() {
        tracing::warn!("webhook verification refused (wrong mode or token)");
    }
    result
}

fn token_matches(given: &str, expected: &SecretString) -> bool {
    // Lengths may differ in time; contents are compared in constant time.
    bool::from(given.as_bytes().ct_eq(expected.expose_secret().as_bytes()))
}

/// `POST /webhook`: verify, split, publish with confirms, then 200 (or 401/413/503).
#[tracing::instrument(
    name = "webhook.receive",
    skip_all,
    fields(request_id, trace_id, bytes, events, outcome, otel.kind = "server")
)]
async fn receive_webhook(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<IngressState>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let _in_flight = instruments::InFlight::start();
    let result = handle_webhook(&request, payload, &state).await;
    let outcome = match &result {
        Ok(Ingested {
            quarantined: Some(_),
            ..
        }) => "quarantined",
        Ok(_) => "accepted",
        Err(error) => error.code(),
    };
    let span = tracing::Span::current();
    span.record("outcome", outcome);
    instruments::record_request(outcome, started.elapsed());
    match result {
        Ok(ingested) => {
            span.record("events", ingested.events);
            tracing::debug!(events = ingested.events, "webhook stored");
            Ok(HttpResponse::Ok().json(Stored {
                status: outcome,
                events: ingested.events,
            }))
        }
        Err(error) => {
            match &error {
                ApiError::BrokerUnavailable(cause) => {
                    tracing::error!(error = %cause, "webhook not stored; answering 503 so Meta redelivers");
                }
                ApiError::Internal(cause) => tracing::error!(error = ?cause, "webhook failed"),
                other => tracing::warn!(error = %other, "webhook refused"),
            }
            Err(error)
        }
    }
}

/// The 200 answer's body: `{"status": "accepted"|"quarantined", "events": N}`.
#[derive(Serialize)]
struct Stored {
    status: &'static str,
    events: usize,
}

async fn handle_webhook(
    request: &HttpRequest,
    payload: web::Payload,
    state: &IngressState,
) -> Result<Ingested, ApiError> {
    let signature = Signature::parse(
        request
            .headers()
            .get(SIGNATURE_HEADER)
            .map(|v| v.as_bytes()),
    )?;
    let body = read_body(request, payload, state.max_body_bytes).await?;
    let span = tracing::Span::current();
    span.record("bytes", body.len());
    if !state.verifier.verify(&body, &signature) {
        return Err(signature_mismatch());
    }

    let request_id = uuid::Uuid::now_v7().to_string();
    let trace_context = trace_context();
    span.record("request_id", request_id.as_str());
    span.record(
        "trace_id",
        trace_context.span().span_context().trace_id().to_string(),
    );
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let webhook = Webhook {
        body: &body,
        content_type,
        received_at: chrono::Utc::now(),
        request_id: &request_id,
    };
    publish_webhook(&state.publisher, webhook, &trace_context)
        .await
        .map_err(|error| match error {
            // Our own event failed to serialise: a bug, not an outage.
            wa_amqp::PublishError::Serialize(cause) => ApiError::Internal(cause.into()),
            other => ApiError::BrokerUnavailable(other),
        })
}

fn signature_mismatch() -> ApiError {
    ApiError::Unauthorized(crate::signature::SignatureError::Mismatch)
}

/// Reads the raw body, refusing (before buffering it) anything over `limit`.
async fn read_body(
    request: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(8 * 1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(ApiError::BodyUnreadable)?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The trace context every event of this request carries: the request span's when an
/// OpenTelemetry layer is installed, else a fresh W3C trace of our own (ingress is where the trace
/// starts; Meta sends none), so every event is traceable either way.
fn trace_context() -> opentelemetry::Context {
    let current = wa_amqp::trace_context::current_context();
    if current.span().span_context().is_valid() {
        return current;
    }
    let trace_id = TraceId::from_bytes(*uuid::Uuid::new_v4().as_bytes());
    let mut span_bytes = [0_u8; 8];
    span_bytes.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
    let span_context = SpanContext::new(
        trace_id,
        SpanId::from_bytes(span_bytes),
        TraceFlags::default(),
        false,
        TraceState::default(),
    );
    opentelemetry::Context::new().with_remote_span_context(span_context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_trace_context_is_valid_and_unique_per_request() {
        let a = trace_context();
        let b = trace_context();
        assert!(a.span().span_context().is_valid());
        assert_ne!(
            a.span().span_context().trace_id(),
            b.span().span_context().trace_id()
        );
    }

    #[test]
    fn verify_token_comparison_needs_the_exact_token() {
        let expected = SecretString::from("tok-123");
        assert!(token_matches("tok-123", &expected));
        assert!(!token_matches("tok-12", &expected));
        assert!(!token_matches("tok-1234", &expected));
        assert!(!token_matches("", &expected));
    }
}

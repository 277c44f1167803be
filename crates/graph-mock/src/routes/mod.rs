//! HTTP routes: the Graph API paths Meta serves and graph-mock's `/_mock` control API, registered in [`configure`].

mod control;
mod inbound;
mod media;
mod messages;
mod templates;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::error::GraphError;
use crate::recorder::RecordedRequest;
use crate::state::Shared;

pub use inbound::{InboundOutcome, InboundSpec, inject_inbound};

/// Largest request body accepted (media uploads up to Meta's 100 MB document limit).
const MAX_BODY_BYTES: usize = 110 * 1024 * 1024;

/// Path segment matching any Graph version `v<NN>.0`.
const VERSION: &str = r"{version:v\d{1,3}\.0}";

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(MAX_BODY_BYTES));
    control::configure(cfg);
    cfg.route("/_media/{media_id}", web::get().to(media::download))
        .route(
            &format!("/{VERSION}/{{phone_number_id}}/messages"),
            web::post().to(messages::send),
        )
        .route(
            &format!("/{VERSION}/{{phone_number_id}}/media"),
            web::post().to(media::upload),
        )
        .route(
            &format!("/{VERSION}/{{waba_id}}/message_templates"),
            web::get().to(templates::list),
        )
        .route(
            &format!("/{VERSION}/{{waba_id}}/message_templates"),
            web::post().to(templates::create),
        )
        .route(
            &format!("/{VERSION}/{{object_id}}"),
            web::get().to(media::get_object),
        )
        .route(
            &format!("/{VERSION}/{{object_id}}"),
            web::delete().to(media::delete_object),
        )
        .default_service(web::to(unknown_path));
}

/// A successful Graph answer.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
    /// wamid handed out, for the recorder.
    pub wamid: Option<String>,
}

impl Reply {
    /// 200 with `body`.
    pub fn ok(body: Value) -> Self {
        Self {
            status: 200,
            body,
            wamid: None,
        }
    }
}

/// What the recorder needs from a request, captured before the handler consumes it.
pub struct Ctx {
    received_at: DateTime<Utc>,
    method: String,
    path: String,
    query: String,
    headers: BTreeMap<String, String>,
    authorization: Option<String>,
}

impl Ctx {
    /// Captures the request line and headers (the `authorization` value is kept only in memory for the check).
    pub fn new(req: &HttpRequest) -> Self {
        let mut headers = BTreeMap::new();
        let mut authorization = None;
        for (name, value) in req.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            if name.as_str() == "authorization" {
                authorization = Some(value);
            } else {
                headers.insert(name.as_str().to_owned(), value);
            }
        }
        Self {
            received_at: Utc::now(),
            method: req.method().as_str().to_owned(),
            path: req.path().to_owned(),
            query: req.query_string().to_owned(),
            headers,
            authorization,
        }
    }

    /// The `Authorization` header value.
    pub fn authorization(&self) -> Option<&str> {
        self.authorization.as_deref()
    }

    /// Records the exchange.
    pub fn record(
        self,
        shared: &Shared,
        body: Value,
        status: u16,
        error_code: Option<i64>,
        wamid: Option<String>,
    ) {
        let bearer_present = self
            .authorization
            .as_deref()
            .is_some_and(|a| a.trim_start().to_ascii_lowercase().starts_with("bearer "));
        let token_label = shared.token_label(self.authorization.as_deref());
        shared.recorder.push(RecordedRequest {
            seq: 0,
            received_at: self.received_at,
            method: self.method,
            path: self.path,
            query: self.query,
            headers: self.headers,
            bearer_present,
            token_label,
            body,
            status,
            error_code,
            wamid,
        });
    }

    /// Records the outcome and turns it into the HTTP response.
    pub fn respond(
        self,
        shared: &Shared,
        recorded_body: Value,
        outcome: Result<Reply, GraphError>,
    ) -> HttpResponse {
        match outcome {
            Ok(reply) => {
                let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
                let response = HttpResponse::build(status).json(&reply.body);
                self.record(shared, recorded_body, reply.status, None, reply.wamid);
                response
            }
            Err(err) => {
                let response = err.to_response();
                self.record(shared, recorded_body, err.http_status, Some(err.code), None);
                response
            }
        }
    }
}

/// The body as the recorder stores it: parsed JSON, or a summary for anything else.
pub fn body_for_record(content_type: Option<&str>, body: &[u8]) -> (Value, Option<Value>) {
    if body.is_empty() {
        return (Value::Null, None);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => (v.clone(), Some(v)),
        Err(_) => (
            json!({"binary_bytes": body.len(), "content_type": content_type}),
            None,
        ),
    }
}

/// Sleeps for the configured base latency.
pub async fn apply_latency(shared: &Shared) {
    let ms = shared.settings().latency_ms;
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

fn content_type(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn unknown_path(
    req: HttpRequest,
    body: web::Bytes,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let ctx = Ctx::new(&req);
    let (recorded, _) = body_for_record(content_type(&req).as_deref(), &body);
    let path = req.path().to_owned();
    let err = GraphError::coded(2500, format!("Unknown path components: {path}"))
        .with_message(format!("Unknown path components: {path}"));
    let shared: Arc<Shared> = shared.into_inner();
    ctx.respond(&shared, recorded, Err(err))
}

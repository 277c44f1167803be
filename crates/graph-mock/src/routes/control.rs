//! The `/_mock` control API: recorded requests, statistics, faults, template status changes, media registration,
//! inbound injection, the webhook delivery log and run-time settings. Not part of Meta's API; never authenticated.

use std::sync::Arc;

use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::inbound;
use super::media::register;
use crate::png;
use crate::recorder::RequestFilter;
use crate::scripted::{SCRIPTED_PREFIX, SCRIPTS};
use crate::state::{FaultMode, FaultSpec, SettingsPatch, Shared, lock, template_status_value};
use crate::templates::{self, STATUSES, Template};
use crate::webhook::Job;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/_mock")
            .route("/health", web::get().to(health))
            .route("/requests", web::get().to(get_requests))
            .route("/requests", web::delete().to(delete_requests))
            .route("/stats", web::get().to(get_stats))
            .route("/stats", web::delete().to(delete_stats))
            .route("/faults", web::get().to(get_faults))
            .route("/faults", web::post().to(post_fault))
            .route("/faults", web::delete().to(delete_faults))
            .route("/templates", web::get().to(get_templates))
            .route("/templates", web::post().to(post_template))
            .route(
                "/templates/{name}/status",
                web::post().to(post_template_status),
            )
            .route("/media", web::post().to(post_media))
            .route("/inbound", web::post().to(inbound::inbound))
            .route("/webhook", web::post().to(inbound::raw_webhook))
            .route("/webhooks", web::get().to(get_webhooks))
            .route("/config", web::get().to(get_config))
            .route("/config", web::patch().to(patch_config))
            .route("/scripted", web::get().to(get_scripted)),
    );
}

fn bad_request(reason: impl Into<String>) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({"error": reason.into()}))
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn get_requests(query: web::Query<RequestFilter>, shared: web::Data<Shared>) -> HttpResponse {
    let requests = shared.recorder.query(&query);
    let last_seq = requests.last().map(|r| r.seq);
    HttpResponse::Ok().json(json!({"requests": requests, "last_seq": last_seq}))
}

async fn delete_requests(shared: web::Data<Shared>) -> HttpResponse {
    shared.recorder.clear();
    HttpResponse::NoContent().finish()
}

async fn get_stats(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(shared.stats())
}

async fn delete_stats(shared: web::Data<Shared>) -> HttpResponse {
    shared.reset_stats();
    HttpResponse::NoContent().finish()
}

async fn get_faults(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"faults": shared.faults_json()}))
}

async fn post_fault(spec: web::Json<FaultSpec>, shared: web::Data<Shared>) -> HttpResponse {
    let spec = spec.into_inner();
    if !spec.until_cleared && spec.count == Some(0) {
        return bad_request("count must be at least 1 (or use until_cleared)");
    }
    if spec.mode == FaultMode::Error
        && let Some(status) = spec.http_status
        && !(100..=599).contains(&status)
    {
        return bad_request("http_status must be a valid HTTP status");
    }
    shared.add_fault(spec);
    HttpResponse::Created().json(json!({"faults": shared.faults_json()}))
}

async fn delete_faults(shared: web::Data<Shared>) -> HttpResponse {
    shared.clear_faults();
    HttpResponse::NoContent().finish()
}

async fn get_templates(shared: web::Data<Shared>) -> HttpResponse {
    let list: Vec<Value> = lock(&shared.templates)
        .iter()
        .map(|t| t.to_listing(None))
        .collect();
    HttpResponse::Ok().json(json!({"data": list}))
}

#[derive(Debug, Deserialize)]
struct DirectTemplate {
    name: String,
    #[serde(default = "default_language")]
    language: String,
    #[serde(default = "default_category")]
    category: String,
    body_text: String,
    #[serde(default = "default_status")]
    status: String,
}

fn default_language() -> String {
    "id".to_owned()
}
fn default_category() -> String {
    "UTILITY".to_owned()
}
fn default_status() -> String {
    "APPROVED".to_owned()
}

/// Adds a template without review (for tests that need a specific template in a specific status).
async fn post_template(body: web::Json<DirectTemplate>, shared: web::Data<Shared>) -> HttpResponse {
    let t = body.into_inner();
    let status = t.status.to_uppercase();
    if !STATUSES.contains(&status.as_str()) {
        return bad_request(format!("unknown status {status}"));
    }
    let mut variables: Vec<String> = Vec::new();
    for p in templates::placeholders(&t.body_text) {
        if !variables.contains(&p.name) {
            variables.push(p.name);
        }
    }
    let named = variables.iter().any(|v| v.parse::<usize>().is_err());
    let template = Template {
        id: shared.ids.numeric(),
        name: t.name,
        language: t.language,
        category: t.category.to_uppercase(),
        status,
        parameter_format: if named { "named" } else { "positional" }.to_owned(),
        variables,
        components: json!([{"type": "BODY", "text": t.body_text}]),
        pending_review: None,
    };
    let mut list = lock(&shared.templates);
    if list
        .iter()
        .any(|x| x.name == template.name && x.language == template.language)
    {
        return HttpResponse::Conflict()
            .json(json!({"error": "a template with this name and language exists"}));
    }
    let listing = template.to_listing(None);
    list.push(template);
    HttpResponse::Created().json(listing)
}

#[derive(Debug, Deserialize)]
struct StatusChange {
    status: String,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// Changes a template's status and sends the `message_template_status_update` webhook.
async fn post_template_status(
    name: web::Path<String>,
    body: web::Json<StatusChange>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let change = body.into_inner();
    let status = change.status.to_uppercase();
    if !STATUSES.contains(&status.as_str()) {
        return bad_request(format!(
            "unknown status {status}; use one of {}",
            STATUSES.join(", ")
        ));
    }
    let reason = change.reason.unwrap_or_else(|| {
        if status == "REJECTED" {
            "INVALID_FORMAT"
        } else {
            "NONE"
        }
        .to_owned()
    });
    let mut updated = Vec::new();
    let mut values = Vec::new();
    {
        let mut list = lock(&shared.templates);
        for t in list.iter_mut().filter(|t| {
            t.name == name.as_str() && change.language.as_deref().is_none_or(|l| l == t.language)
        }) {
            t.status = status.clone();
            t.pending_review = None;
            values.push(template_status_value(t, &status, &reason));
            updated.push(t.to_listing(None));
        }
    }
    if updated.is_empty() {
        return HttpResponse::NotFound()
            .json(json!({"error": format!("no template named {}", name.as_str())}));
    }
    let webhook = shared.settings().webhook_url.is_some();
    for value in values {
        shared.schedule(
            Instant::now(),
            Job::Field {
                field: "message_template_status_update".to_owned(),
                value,
            },
        );
    }
    HttpResponse::Ok().json(json!({"templates": updated, "webhook_scheduled": webhook}))
}

#[derive(Debug, Deserialize)]
struct MediaRegistration {
    #[serde(default)]
    mime_type: Option<String>,
    #[serde(default)]
    data_base64: Option<String>,
    #[serde(default)]
    fail_first: u32,
    #[serde(default)]
    fail_status: Option<u16>,
    #[serde(default)]
    phone_number_id: Option<String>,
}

/// Stores media (a generated PNG unless `data_base64` is given), optionally failing its first downloads.
async fn post_media(body: web::Json<MediaRegistration>, shared: web::Data<Shared>) -> HttpResponse {
    let reg = body.into_inner();
    let shared: Arc<Shared> = shared.into_inner();
    let bytes = match &reg.data_base64 {
        Some(data) => match STANDARD.decode(data) {
            Ok(b) => b,
            Err(e) => return bad_request(format!("data_base64: {e}")),
        },
        None => png::generate(shared.ids.numeric()),
    };
    let phone_number_id = reg
        .phone_number_id
        .or_else(|| {
            shared
                .config
                .phone_numbers
                .first()
                .map(|n| n.phone_number_id.clone())
        })
        .unwrap_or_default();
    if !shared.phones.contains_key(&phone_number_id) {
        return bad_request(format!("unknown phone_number_id {phone_number_id}"));
    }
    let mime = reg.mime_type.unwrap_or_else(|| "image/png".to_owned());
    let item = register(
        &shared,
        &phone_number_id,
        &mime,
        Bytes::from(bytes),
        reg.fail_first,
        reg.fail_status.unwrap_or(404),
    );
    HttpResponse::Created().json(json!({
        "id": item.id,
        "mime_type": item.mime_type,
        "sha256": item.sha256_base64,
        "sha256_hex": item.sha256_hex,
        "file_size": item.bytes.len(),
        "fail_first": item.fail_first,
    }))
}

async fn get_webhooks(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"deliveries": shared.deliveries()}))
}

async fn get_config(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(config_json(&shared))
}

async fn patch_config(patch: web::Json<SettingsPatch>, shared: web::Data<Shared>) -> HttpResponse {
    match shared.update_settings(patch.into_inner()) {
        Ok(_) => HttpResponse::Ok().json(config_json(&shared)),
        Err(reason) => bad_request(reason),
    }
}

fn config_json(shared: &Shared) -> Value {
    json!({
        "settings": *shared.settings(),
        "waba_id": shared.config.waba_id,
        "phone_numbers": shared.config.phone_numbers,
        "token_count": shared.config.tokens.len(),
    })
}

async fn get_scripted() -> HttpResponse {
    let list: Vec<Value> = SCRIPTS
        .iter()
        .map(|(suffix, script)| json!({"number": format!("+{SCRIPTED_PREFIX}{suffix}"), "script": script}))
        .collect();
    HttpResponse::Ok().json(json!({"scripted": list}))
}

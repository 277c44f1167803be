//! Media: upload (`POST /{version}/{phone_number_id}/media`), lookup and delete (`GET`/`DELETE /{version}/{media_id}`,
//! which also answers for phone number and WABA ids), and the download URL (`GET /_media/{id}?token=...`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use super::{Ctx, Reply, apply_latency, content_type};
use crate::error::GraphError;
use crate::multipart;
use crate::state::{MediaItem, Shared, lock};

/// Media types Meta accepts, with their size limits (reference §5).
const SUPPORTED: [(&str, usize); 17] = [
    ("audio/aac", 16 << 20),
    ("audio/amr", 16 << 20),
    ("audio/mpeg", 16 << 20),
    ("audio/mp4", 16 << 20),
    ("audio/ogg", 16 << 20),
    ("text/plain", 100 << 20),
    ("application/pdf", 100 << 20),
    ("application/vnd.ms-excel", 100 << 20),
    (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        100 << 20,
    ),
    ("application/msword", 100 << 20),
    (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        100 << 20,
    ),
    ("application/vnd.ms-powerpoint", 100 << 20),
    (
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        100 << 20,
    ),
    ("image/jpeg", 5 << 20),
    ("image/png", 5 << 20),
    ("image/webp", 500 << 10),
    ("video/mp4", 16 << 20),
];
const ALSO_SUPPORTED: [(&str, usize); 1] = [("video/3gpp", 16 << 20)];

/// Size limit for a MIME type, `None` when Meta does not accept it.
pub fn size_limit(mime: &str) -> Option<usize> {
    let base = mime
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    SUPPORTED
        .iter()
        .chain(ALSO_SUPPORTED.iter())
        .find(|(m, _)| *m == base)
        .map(|(_, limit)| *limit)
}

pub(super) async fn upload(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let ctx = Ctx::new(&req);
    let shared: Arc<Shared> = shared.into_inner();
    let (version, phone_number_id) = path.into_inner();
    shared.count_version(&version);
    apply_latency(&shared).await;
    let content_type = content_type(&req).unwrap_or_default();
    let recorded = json!({"binary_bytes": body.len(), "content_type": content_type});
    let outcome = handle_upload(
        &shared,
        ctx.authorization(),
        &phone_number_id,
        &content_type,
        req.query_string(),
        body,
    );
    ctx.respond(&shared, recorded, outcome)
}

fn handle_upload(
    shared: &Shared,
    authorization: Option<&str>,
    phone_number_id: &str,
    content_type: &str,
    query: &str,
    body: Bytes,
) -> Result<Reply, GraphError> {
    shared.authenticate(authorization)?;
    if !shared.phones.contains_key(phone_number_id) {
        return Err(GraphError::unsupported("post", phone_number_id));
    }
    let (messaging_product, declared_type, file_type, file) =
        if content_type.starts_with("multipart/form-data") {
            let parts = multipart::parse(content_type, &body).map_err(GraphError::invalid)?;
            let field = |name: &str| {
                parts
                    .iter()
                    .find(|p| p.name == name && p.filename.is_none())
                    .map(|p| String::from_utf8_lossy(p.data).trim().to_owned())
            };
            let file = parts.iter().find(|p| p.name == "file");
            (
                field("messaging_product"),
                field("type"),
                file.and_then(|f| f.content_type.clone()),
                file.map(|f| body.slice_ref(f.data)),
            )
        } else {
            // Raw upload: the body is the file, its Content-Type the MIME type, messaging_product in the query string.
            let product = web::Query::<RawUploadQuery>::from_query(query)
                .ok()
                .and_then(|q| q.messaging_product.clone());
            let file = (!body.is_empty()).then_some(body);
            (product, None, Some(content_type.to_owned()), file)
        };
    if messaging_product.as_deref() != Some("whatsapp") {
        return Err(
            GraphError::invalid("The parameter messaging_product is required.")
                .with_message("(#100) The parameter messaging_product is required."),
        );
    }
    let file = file.ok_or_else(|| {
        GraphError::invalid("The parameter file is required.")
            .with_message("(#100) The parameter file is required.")
    })?;
    let mime = declared_type.or(file_type).unwrap_or_default();
    let limit = size_limit(&mime).ok_or_else(|| {
        GraphError::coded(
            131_053,
            format!("Param file must be a file with one of the supported types; got '{mime}'."),
        )
    })?;
    if file.len() > limit {
        return Err(GraphError::coded(
            131_053,
            format!(
                "The {mime} file is {} bytes, over the {limit}-byte limit.",
                file.len()
            ),
        ));
    }
    let id = shared.ids.numeric().to_string();
    let item = MediaItem::new(id.clone(), phone_number_id.to_owned(), mime, file);
    lock(&shared.media).items.insert(id.clone(), item);
    shared.media_uploads.fetch_add(1, Ordering::Relaxed);
    Ok(Reply::ok(json!({"id": id})))
}

#[derive(Debug, Deserialize)]
struct RawUploadQuery {
    messaging_product: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ObjectQuery {
    phone_number_id: Option<String>,
}

pub(super) async fn get_object(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<ObjectQuery>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let ctx = Ctx::new(&req);
    let shared: Arc<Shared> = shared.into_inner();
    let (version, object_id) = path.into_inner();
    shared.count_version(&version);
    apply_latency(&shared).await;
    let base = format!(
        "{}://{}",
        req.connection_info().scheme(),
        req.connection_info().host()
    );
    let outcome = lookup(
        &shared,
        ctx.authorization(),
        &object_id,
        query.phone_number_id.as_deref(),
        &base,
    );
    ctx.respond(&shared, serde_json::Value::Null, outcome)
}

fn lookup(
    shared: &Shared,
    authorization: Option<&str>,
    object_id: &str,
    phone_filter: Option<&str>,
    base: &str,
) -> Result<Reply, GraphError> {
    shared.authenticate(authorization)?;
    if let Some(slot) = shared.phones.get(object_id) {
        return Ok(Reply::ok(json!({
            "id": object_id,
            "display_phone_number": format!("+{}", slot.number.display_phone_number),
            "verified_name": "Travel Umroh",
            "quality_rating": "GREEN",
            "code_verification_status": "VERIFIED",
            "platform_type": "CLOUD_API",
            "throughput": {"level": "STANDARD"},
        })));
    }
    if object_id == shared.config.waba_id {
        return Ok(Reply::ok(json!({
            "id": object_id,
            "name": "Travel Umroh",
            "currency": "IDR",
            "timezone_id": "58",
            "message_template_namespace": "graph_mock_namespace",
        })));
    }
    let mut media = lock(&shared.media);
    let item = media
        .items
        .get(object_id)
        .filter(|m| phone_filter.is_none_or(|p| p == m.phone_number_id));
    let Some(item) = item else {
        return Err(GraphError::unsupported("get", object_id).with_status(404));
    };
    let token: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    let body = json!({
        "messaging_product": "whatsapp",
        "url": format!("{base}/_media/{object_id}?token={token}"),
        "mime_type": item.mime_type,
        "sha256": item.sha256_hex,
        "file_size": item.bytes.len(),
        "id": object_id,
    });
    let now = Instant::now();
    if media.url_tokens.len() > 10_000 {
        let ttl = Duration::from_millis(shared.settings().media_url_ttl_ms);
        media
            .url_tokens
            .retain(|_, (_, issued)| now.duration_since(*issued) < ttl);
    }
    media.url_tokens.insert(token, (object_id.to_owned(), now));
    Ok(Reply::ok(body))
}

pub(super) async fn delete_object(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<ObjectQuery>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let ctx = Ctx::new(&req);
    let shared: Arc<Shared> = shared.into_inner();
    let (version, object_id) = path.into_inner();
    shared.count_version(&version);
    apply_latency(&shared).await;
    let outcome = shared.authenticate(ctx.authorization()).and_then(|_| {
        let mut media = lock(&shared.media);
        let owned = media.items.get(&object_id).is_some_and(|m| {
            query
                .phone_number_id
                .as_deref()
                .is_none_or(|p| p == m.phone_number_id)
        });
        if owned {
            media.items.remove(&object_id);
            Ok(Reply::ok(json!({"success": true})))
        } else {
            Err(GraphError::unsupported("delete", &object_id).with_status(404))
        }
    });
    ctx.respond(&shared, serde_json::Value::Null, outcome)
}

#[derive(Debug, Deserialize)]
pub(super) struct DownloadQuery {
    token: Option<String>,
}

pub(super) async fn download(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<DownloadQuery>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let ctx = Ctx::new(&req);
    let shared: Arc<Shared> = shared.into_inner();
    let media_id = path.into_inner();
    let outcome = serve_download(
        &shared,
        ctx.authorization(),
        &media_id,
        query.token.as_deref(),
    );
    match outcome {
        Ok((mime, bytes)) => {
            ctx.record(&shared, json!(null), 200, None, None);
            HttpResponse::Ok().content_type(mime).body(bytes)
        }
        Err(err) => {
            ctx.record(&shared, json!(null), err.http_status, Some(err.code), None);
            err.to_response()
        }
    }
}

fn serve_download(
    shared: &Shared,
    authorization: Option<&str>,
    media_id: &str,
    token: Option<&str>,
) -> Result<(String, Bytes), GraphError> {
    shared.authenticate(authorization)?;
    let ttl = Duration::from_millis(shared.settings().media_url_ttl_ms);
    let mut media = lock(&shared.media);
    let not_found =
        || GraphError::coded(100, "The media URL is invalid or has expired.").with_status(404);
    let valid = token
        .and_then(|t| media.url_tokens.get(t))
        .is_some_and(|(id, issued)| id == media_id && issued.elapsed() < ttl);
    if !valid {
        return Err(not_found());
    }
    let item = media.items.get_mut(media_id).ok_or_else(not_found)?;
    if item.fail_first > 0 {
        item.fail_first -= 1;
        let status = StatusCode::from_u16(item.fail_status).map_or(404, |s| s.as_u16());
        return Err(
            GraphError::coded(131_052, "Injected media download failure (fail_first).")
                .with_status(status),
        );
    }
    let result = (item.mime_type.clone(), item.bytes.clone());
    drop(media);
    shared.media_downloads.fetch_add(1, Ordering::Relaxed);
    Ok(result)
}

/// Registers media directly (control API and inbound injection); returns the stored item.
pub fn register(
    shared: &Shared,
    phone_number_id: &str,
    mime_type: &str,
    bytes: Bytes,
    fail_first: u32,
    fail_status: u16,
) -> MediaItem {
    let id = shared.ids.numeric().to_string();
    let mut item = MediaItem::new(
        id.clone(),
        phone_number_id.to_owned(),
        mime_type.to_owned(),
        bytes,
    );
    item.fail_first = fail_first;
    item.fail_status = fail_status;
    lock(&shared.media).items.insert(id, item.clone());
    item
}

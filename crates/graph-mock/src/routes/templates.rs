//! Template management: `GET` and `POST /{version}/{waba_id}/message_templates`.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Ctx, Reply, apply_latency, body_for_record, content_type};
use crate::error::GraphError;
use crate::state::{Shared, lock};
use crate::templates::{Template, validate_new_template};
use crate::webhook::Job;

/// Page size when `limit` is absent (Meta's default is 25).
const DEFAULT_LIMIT: usize = 25;

#[derive(Debug, Default, Deserialize)]
pub(super) struct ListQuery {
    fields: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
    before: Option<String>,
    status: Option<String>,
    name: Option<String>,
    category: Option<String>,
    language: Option<String>,
}

pub(super) async fn list(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let ctx = Ctx::new(&req);
    let shared: Arc<Shared> = shared.into_inner();
    let (version, waba_id) = path.into_inner();
    shared.count_version(&version);
    apply_latency(&shared).await;
    let query = web::Query::<ListQuery>::from_query(req.query_string()).map(web::Query::into_inner);
    let base = format!(
        "{}://{}{}",
        req.connection_info().scheme(),
        req.connection_info().host(),
        req.path()
    );
    let outcome = shared.authenticate(ctx.authorization()).and_then(|_| {
        if waba_id != shared.config.waba_id {
            return Err(GraphError::unsupported("get", &waba_id));
        }
        let query = query.map_err(|e| GraphError::invalid(format!("Invalid query string: {e}")))?;
        list_page(&lock(&shared.templates), &query, &base)
    });
    ctx.respond(&shared, Value::Null, outcome)
}

fn list_page(templates: &[Template], q: &ListQuery, base: &str) -> Result<Reply, GraphError> {
    let fields: Option<Vec<String>> = q.fields.as_ref().map(|f| {
        f.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    });
    let matches = |t: &&Template| {
        q.status
            .as_deref()
            .is_none_or(|s| t.status.eq_ignore_ascii_case(s))
            && q.name.as_deref().is_none_or(|n| t.name.contains(n))
            && q.category
                .as_deref()
                .is_none_or(|c| t.category.eq_ignore_ascii_case(c))
            && q.language.as_deref().is_none_or(|l| t.language == l)
    };
    let filtered: Vec<&Template> = templates.iter().filter(matches).collect();
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, 1000);
    let (start, end) = match (&q.after, &q.before) {
        (Some(after), _) => {
            let start = decode_cursor(after)? + 1;
            (start, (start + limit).min(filtered.len()))
        }
        (None, Some(before)) => {
            let end = decode_cursor(before)?.min(filtered.len());
            (end.saturating_sub(limit), end)
        }
        (None, None) => (0, limit.min(filtered.len())),
    };
    let start = start.min(end);
    let data: Vec<Value> = filtered[start..end]
        .iter()
        .map(|t| t.to_listing(fields.as_deref()))
        .collect();
    let mut body = json!({"data": data});
    if end > start {
        let before = encode_cursor(start);
        let after = encode_cursor(end - 1);
        let mut paging = json!({"cursors": {"before": before, "after": after}});
        let mut keep = vec![format!("limit={limit}")];
        if let Some(f) = &q.fields {
            keep.push(format!("fields={f}"));
        }
        let keep = keep.join("&");
        if let Some(p) = paging.as_object_mut() {
            if end < filtered.len() {
                p.insert("next".into(), json!(format!("{base}?{keep}&after={after}")));
            }
            if start > 0 {
                p.insert(
                    "previous".into(),
                    json!(format!("{base}?{keep}&before={before}")),
                );
            }
        }
        if let Some(b) = body.as_object_mut() {
            b.insert("paging".into(), paging);
        }
    }
    Ok(Reply::ok(body))
}

fn encode_cursor(index: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("idx:{index}"))
}

fn decode_cursor(cursor: &str) -> Result<usize, GraphError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("idx:").and_then(|n| n.parse().ok()))
        .ok_or_else(|| GraphError::coded(131_059, "The pagination cursor is invalid."))
}

pub(super) async fn create(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let ctx = Ctx::new(&req);
    let shared: Arc<Shared> = shared.into_inner();
    let (version, waba_id) = path.into_inner();
    shared.count_version(&version);
    apply_latency(&shared).await;
    let (recorded, parsed) = body_for_record(content_type(&req).as_deref(), &body);
    let outcome = shared.authenticate(ctx.authorization()).and_then(|_| {
        if waba_id != shared.config.waba_id {
            return Err(GraphError::unsupported("post", &waba_id));
        }
        let body = parsed
            .as_ref()
            .ok_or_else(|| GraphError::invalid("The request body must be JSON."))?;
        create_template(&shared, body)
    });
    ctx.respond(&shared, recorded, outcome)
}

fn create_template(shared: &Shared, body: &Value) -> Result<Reply, GraphError> {
    let new = validate_new_template(body)?;
    let id = shared.ids.numeric();
    {
        let mut templates = lock(&shared.templates);
        if templates
            .iter()
            .any(|t| t.name == new.name && t.language == new.language)
        {
            return Err(GraphError::invalid(format!(
                "Message template \"{}\" already exists in language {}.",
                new.name, new.language
            ))
            .with_extra("error_user_title", json!("Message Template Already Exists"))
            .with_extra(
                "error_user_msg",
                json!(format!(
                    "There is already {} content for this template. Create a new template or edit the existing one.",
                    new.language
                )),
            ));
        }
        templates.push(Template {
            id,
            name: new.name,
            language: new.language,
            category: new.category.clone(),
            status: "PENDING".to_owned(),
            parameter_format: new.parameter_format,
            variables: new.variables,
            components: new.components,
            pending_review: Some(new.review),
        });
    }
    let delay = Duration::from_millis(shared.settings().template_review_delay_ms);
    shared.schedule(
        Instant::now() + delay,
        Job::TemplateReview { template_id: id },
    );
    Ok(Reply::ok(
        json!({"id": id.to_string(), "status": "PENDING", "category": new.category}),
    ))
}

//! The template registry: the WhatsApp templates the product uses, their submission to Meta and
//! the sync of their review status.
//!
//! The texts are the ones Meta approved for the seeded WABA (graph-mock serves the same), in
//! Indonesian (`id`), category `UTILITY`, positional parameters. Submitting and syncing are library
//! functions so the ops CLI (`wactl templates submit|sync`) calls exactly what the service uses.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use wa_db::PgPool;
use wa_db::models::scheduler::{self as db, TemplateRow};
use wa_service::tenants::Tenant;

use crate::config::GraphConfig;

/// Language of every template (Indonesian).
pub const LANGUAGE: &str = "id";
/// Registry status of a template never submitted to Meta.
pub const NOT_SUBMITTED: &str = "NOT_SUBMITTED";
/// The only status Meta lets us send.
pub const APPROVED: &str = "APPROVED";

/// One template the product uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateDef {
    /// Template name.
    pub name: &'static str,
    /// Meta category.
    pub category: &'static str,
    /// Body text with `{{n}}` placeholders.
    pub body: &'static str,
    /// One example value per placeholder (Meta requires them at creation).
    pub examples: &'static [&'static str],
}

impl TemplateDef {
    /// Number of body parameters.
    pub fn parameter_count(&self) -> usize {
        self.examples.len()
    }

    /// The registry row of this template for `tenant`, not yet submitted.
    pub fn row(&self, tenant: &str) -> TemplateRow {
        TemplateRow {
            tenant_id: tenant.to_owned(),
            name: self.name.to_owned(),
            language: LANGUAGE.to_owned(),
            category: self.category.to_owned(),
            body_text: self.body.to_owned(),
            example_values: Some(json!(self.examples)),
            parameter_count: i32::try_from(self.parameter_count()).unwrap_or(i32::MAX),
            status: NOT_SUBMITTED.to_owned(),
            rejection_reason: None,
            meta_template_id: None,
            submitted_at: None,
        }
    }

    /// The `POST /{waba_id}/message_templates` body.
    pub fn create_request(&self) -> Value {
        json!({
            "name": self.name,
            "category": self.category,
            "language": LANGUAGE,
            "parameter_format": "positional",
            "components": [{
                "type": "BODY",
                "text": self.body,
                "example": { "body_text": [self.examples] },
            }],
        })
    }
}

/// `payment_reminder`: 1 name, 2 package, 3 due date, 4 amount, 5 agent name, 6 agent phone.
///
/// NOTE: the seed's text ends with `{{6}}`, which Meta refuses at creation (error 2388299: no
/// variable at the very start or end of a body), so ours closes with the agency's name.
pub const PAYMENT_REMINDER: TemplateDef = TemplateDef {
    name: "payment_reminder",
    category: "UTILITY",
    body: "Assalamu'alaikum {{1}},\n\nPengingat cicilan paket {{2}}:\n- Jatuh tempo: {{3}}\n- Jumlah: Rp {{4}}\n\nMohon lakukan pembayaran sebelum tanggal jatuh tempo.\n\nJazakallah khairan,\n{{5}} - {{6}}\n\nTravel Umroh",
    examples: &[
        "Siti Aminah",
        "Umrah Reguler 12 Hari",
        "05 Des 2026",
        "1.500.000",
        "Ahmad",
        "+62 812-3456-7890",
    ],
};

/// `payment_confirmation`: 1 name, 2 amount paid, 3 package, 4 remaining balance, 5 status label.
pub const PAYMENT_CONFIRMATION: TemplateDef = TemplateDef {
    name: "payment_confirmation",
    category: "UTILITY",
    body: "Assalamu'alaikum {{1}},\n\nTerima kasih atas pembayaran Anda sebesar Rp {{2}} untuk paket {{3}}.\n\nSisa pembayaran: Rp {{4}}\nStatus: {{5}}\n\nUntuk info lebih lanjut, hubungi kami.\n\nTravel Umroh",
    examples: &[
        "Siti Aminah",
        "1.500.000",
        "Umrah Reguler 12 Hari",
        "10.500.000",
        "Cicilan",
    ],
};

/// `departure_reminder`: 1 name, 2 departure date, 3 package.
pub const DEPARTURE_REMINDER: TemplateDef = TemplateDef {
    name: "departure_reminder",
    category: "UTILITY",
    body: "Assalamu'alaikum {{1}},\n\nKeberangkatan umrah Anda pada {{2}} untuk paket {{3}} sudah dekat. Mohon siapkan dokumen dan perlengkapan Anda.\n\nTravel Umroh",
    examples: &["Siti Aminah", "05 Des 2026", "Umrah Reguler 12 Hari"],
};

/// `registration_confirmation`: 1 name, 2 package, 3 registration number.
pub const REGISTRATION_CONFIRMATION: TemplateDef = TemplateDef {
    name: "registration_confirmation",
    category: "UTILITY",
    body: "Assalamu'alaikum {{1}},\n\nPendaftaran Anda untuk paket {{2}} sudah kami terima dengan nomor registrasi {{3}}.\n\nTerima kasih atas kepercayaan Anda.\n\nTravel Umroh",
    examples: &["Siti Aminah", "Umrah Reguler 12 Hari", "REG-2026-0142"],
};

/// `document_ready`: 1 name, 2 document, 3 package.
pub const DOCUMENT_READY: TemplateDef = TemplateDef {
    name: "document_ready",
    category: "UTILITY",
    body: "Assalamu'alaikum {{1}},\n\nDokumen {{2}} Anda untuk paket {{3}} sudah siap. Silakan ambil di kantor kami atau hubungi agen Anda.\n\nTravel Umroh",
    examples: &["Siti Aminah", "paspor", "Umrah Reguler 12 Hari"],
};

/// `visa_status`: 1 name, 2 package, 3 visa status.
pub const VISA_STATUS: TemplateDef = TemplateDef {
    name: "visa_status",
    category: "UTILITY",
    body: "Assalamu'alaikum {{1}},\n\nStatus visa umrah Anda untuk paket {{2}}: {{3}}.\n\nUntuk info lebih lanjut, hubungi kami.\n\nTravel Umroh",
    examples: &["Siti Aminah", "Umrah Reguler 12 Hari", "Disetujui"],
};

/// Every template the product uses.
pub const REGISTRY: [TemplateDef; 6] = [
    PAYMENT_REMINDER,
    PAYMENT_CONFIRMATION,
    DEPARTURE_REMINDER,
    REGISTRATION_CONFIRMATION,
    DOCUMENT_READY,
    VISA_STATUS,
];

/// The registry entry named `name`.
pub fn find(name: &str) -> Option<&'static TemplateDef> {
    REGISTRY.iter().find(|t| t.name == name)
}

/// Why submitting or syncing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// Database trouble.
    #[error("template registry database error")]
    Db(#[from] wa_db::DbError),
    /// A query failed.
    #[error("template registry query failed")]
    Query(#[from] diesel::result::Error),
    /// The Graph API could not be reached (the URL is stripped: Meta's paging links can carry tokens).
    #[error("calling the Graph API failed: {0}")]
    Http(reqwest::Error),
    /// The Graph API answered with an error.
    #[error("the Graph API refused {what}: HTTP {status}, code {code:?}: {message}")]
    Graph {
        /// Which call.
        what: String,
        /// HTTP status.
        status: u16,
        /// Graph error code.
        code: Option<i64>,
        /// Graph message and details.
        message: String,
    },
}

impl From<reqwest::Error> for TemplateError {
    fn from(error: reqwest::Error) -> Self {
        Self::Http(error.without_url())
    }
}

/// What `submit_templates` did, per template name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubmitReport {
    /// Submitted now (status as Meta answered, usually `PENDING`).
    pub submitted: Vec<String>,
    /// Meta already had it (the status comes with the next sync).
    pub already_present: Vec<String>,
    /// Already submitted earlier; skipped.
    pub skipped: Vec<String>,
    /// Refused by Meta (name, Meta's reason); the others were still submitted.
    pub refused: Vec<(String, String)>,
}

/// What `sync_templates` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Registry templates whose status Meta reported, with that status.
    pub updated: Vec<(String, String)>,
    /// Registry templates Meta does not have.
    pub missing: Vec<String>,
}

/// Makes sure `tenant` has a registry row for every template (status kept for existing rows).
pub async fn seed_registry(pool: &PgPool, tenant: &str) -> Result<(), TemplateError> {
    let mut conn = pool.get().await.map_err(wa_db::DbError::from)?;
    let rows: Vec<TemplateRow> = REGISTRY.iter().map(|t| t.row(tenant)).collect();
    db::seed_templates(&mut conn, &rows).await?;
    Ok(())
}

#[derive(Debug, Deserialize)]
struct GraphErrorBody {
    error: GraphErrorInner,
}

#[derive(Debug, Deserialize)]
struct GraphErrorInner {
    #[serde(default)]
    message: String,
    code: Option<i64>,
    #[serde(default)]
    error_data: Option<Value>,
    #[serde(default)]
    error_user_msg: Option<String>,
}

async fn graph_error(what: &str, response: reqwest::Response) -> TemplateError {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let (code, message) = match serde_json::from_str::<GraphErrorBody>(&text) {
        Ok(body) => {
            let details = body
                .error
                .error_data
                .as_ref()
                .and_then(|d| d.get("details"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or(body.error.error_user_msg)
                .unwrap_or_default();
            (
                body.error.code,
                format!("{} {details}", body.error.message)
                    .trim()
                    .to_owned(),
            )
        }
        Err(_) => (None, text.chars().take(300).collect()),
    };
    TemplateError::Graph {
        what: what.to_owned(),
        status,
        code,
        message,
    }
}

fn templates_url(graph: &GraphConfig, tenant: &Tenant) -> String {
    format!(
        "{}/{}/{}/message_templates",
        graph.base_url, graph.api_version, tenant.waba_id
    )
}

/// Submits every registry template of `tenant` not yet submitted (`POST /{waba_id}/message_templates`).
///
/// A template Meta already has (same name and language) counts as submitted; its status arrives
/// with [`sync_templates`] or the `message_template_status_update` webhook.
#[tracing::instrument(skip_all, fields(tenant = %tenant.tenant_id))]
pub async fn submit_templates(
    http: &reqwest::Client,
    graph: &GraphConfig,
    tenant: &Tenant,
    pool: &PgPool,
    now: DateTime<Utc>,
) -> Result<SubmitReport, TemplateError> {
    seed_registry(pool, &tenant.tenant_id).await?;
    let mut conn = pool.get().await.map_err(wa_db::DbError::from)?;
    let rows = db::list_templates(&mut conn, &tenant.tenant_id).await?;
    let mut report = SubmitReport::default();
    for def in &REGISTRY {
        let row = rows
            .iter()
            .find(|r| r.name == def.name && r.language == LANGUAGE);
        if row.is_some_and(|r| r.submitted_at.is_some() || r.status != NOT_SUBMITTED) {
            report.skipped.push(def.name.to_owned());
            continue;
        }
        let response = http
            .post(templates_url(graph, tenant))
            .bearer_auth(tenant.access_token.expose_secret())
            .json(&def.create_request())
            .send()
            .await?;
        if response.status().is_success() {
            let body: Value = response.json().await?;
            let status = body
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("PENDING");
            let id = meta_id(body.get("id"));
            db::mark_template_submitted(
                &mut conn,
                &tenant.tenant_id,
                def.name,
                LANGUAGE,
                status,
                id,
                now,
            )
            .await?;
            tracing::info!(template = def.name, status, "template submitted");
            report.submitted.push(def.name.to_owned());
            continue;
        }
        let error = graph_error(&format!("creating template {}", def.name), response).await;
        match &error {
            // A bad token or missing permission fails every template alike: stop and say so.
            TemplateError::Graph {
                status: 401 | 403, ..
            } => return Err(error),
            TemplateError::Graph { message, .. } if message.contains("already exists") => {
                db::mark_template_submitted(
                    &mut conn,
                    &tenant.tenant_id,
                    def.name,
                    LANGUAGE,
                    "PENDING",
                    None,
                    now,
                )
                .await?;
                report.already_present.push(def.name.to_owned());
            }
            TemplateError::Graph { message, .. } => {
                tracing::warn!(template = def.name, reason = %message, "Meta refused the template");
                report.refused.push((def.name.to_owned(), message.clone()));
            }
            _ => return Err(error),
        }
    }
    Ok(report)
}

fn meta_id(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

#[derive(Debug, Deserialize)]
struct ListPage {
    #[serde(default)]
    data: Vec<ListedTemplate>,
    #[serde(default)]
    paging: Option<Paging>,
}

#[derive(Debug, Deserialize)]
struct ListedTemplate {
    name: String,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    id: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Paging {
    #[serde(default)]
    next: Option<String>,
}

/// Most pages `sync_templates` follows (a WABA has at most 6,000 templates; 100 per page).
const MAX_PAGES: usize = 100;

/// Reads every template of the tenant's WABA (`GET`, following `paging.next`) and records the
/// status of the registry's templates.
#[tracing::instrument(skip_all, fields(tenant = %tenant.tenant_id))]
pub async fn sync_templates(
    http: &reqwest::Client,
    graph: &GraphConfig,
    tenant: &Tenant,
    pool: &PgPool,
) -> Result<SyncReport, TemplateError> {
    seed_registry(pool, &tenant.tenant_id).await?;
    let mut listed: HashMap<(String, String), (String, Option<i64>)> = HashMap::new();
    let mut url = format!(
        "{}?fields=name,language,status,category&limit=100",
        templates_url(graph, tenant)
    );
    for _ in 0..MAX_PAGES {
        let response = http
            .get(&url)
            .bearer_auth(tenant.access_token.expose_secret())
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(graph_error("listing templates", response).await);
        }
        let page: ListPage = response.json().await?;
        for t in page.data {
            if let Some(status) = t.status {
                let language = t.language.unwrap_or_else(|| LANGUAGE.to_owned());
                listed.insert(
                    (t.name, language),
                    (status.to_uppercase(), meta_id(t.id.as_ref())),
                );
            }
        }
        match page.paging.and_then(|p| p.next) {
            Some(next) => url = next,
            None => break,
        }
    }
    let mut conn = pool.get().await.map_err(wa_db::DbError::from)?;
    let mut report = SyncReport::default();
    for def in &REGISTRY {
        match listed.get(&(def.name.to_owned(), LANGUAGE.to_owned())) {
            Some((status, id)) => {
                db::update_template_status(
                    &mut conn,
                    &tenant.tenant_id,
                    def.name,
                    LANGUAGE,
                    status,
                    None,
                    *id,
                )
                .await?;
                report.updated.push((def.name.to_owned(), status.clone()));
            }
            None => report.missing.push(def.name.to_owned()),
        }
    }
    tracing::info!(
        updated = report.updated.len(),
        missing = report.missing.len(),
        "templates synced"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_has_one_example_per_placeholder_and_no_adjacent_variables() {
        for def in &REGISTRY {
            for n in 1..=def.parameter_count() {
                assert!(
                    def.body.contains(&format!("{{{{{n}}}}}")),
                    "{} lacks {{{{{n}}}}}",
                    def.name
                );
            }
            let extra = def.parameter_count() + 1;
            assert!(
                !def.body.contains(&format!("{{{{{extra}}}}}")),
                "{} has too many",
                def.name
            );
            assert!(!def.body.contains("}}{{"), "{}", def.name);
            assert!(
                !def.body.trim_end().ends_with("}}") && !def.body.starts_with("{{"),
                "{}",
                def.name
            );
            assert_eq!(def.category, "UTILITY");
        }
        assert_eq!(PAYMENT_REMINDER.parameter_count(), 6);
        assert_eq!(PAYMENT_CONFIRMATION.parameter_count(), 5);
        assert_eq!(DEPARTURE_REMINDER.parameter_count(), 3);
    }

    #[test]
    fn create_request_has_meta_shape() {
        let body = DEPARTURE_REMINDER.create_request();
        assert_eq!(body["language"], "id");
        assert_eq!(body["components"][0]["type"], "BODY");
        assert_eq!(
            body["components"][0]["example"]["body_text"][0][1],
            "05 Des 2026"
        );
    }
}

//! Message templates: the seeded Indonesian templates, Meta's creation rules and the send-time checks.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::GraphError;

/// Body of the seeded `payment_reminder` template (6 parameters).
pub const PAYMENT_REMINDER_TEXT: &str = "Assalamu'alaikum {{1}},\n\nPengingat cicilan paket {{2}}:\n- Jatuh tempo: {{3}}\n- Jumlah: Rp {{4}}\n\nMohon lakukan pembayaran sebelum tanggal jatuh tempo.\n\nJazakallah khairan,\n{{5}} - {{6}}";
/// Body of the seeded `payment_confirmation` template (5 parameters).
pub const PAYMENT_CONFIRMATION_TEXT: &str = "Assalamu'alaikum {{1}},\n\nTerima kasih atas pembayaran Anda sebesar Rp {{2}} untuk paket {{3}}.\n\nSisa pembayaran: Rp {{4}}\nStatus: {{5}}\n\nUntuk info lebih lanjut, hubungi kami.\n\nTravel Umroh";
/// Body of the seeded `departure_reminder` template (3 parameters).
pub const DEPARTURE_REMINDER_TEXT: &str = "Assalamu'alaikum {{1}},\n\nKeberangkatan umrah Anda pada {{2}} untuk paket {{3}} sudah dekat. Mohon siapkan dokumen dan perlengkapan Anda.\n\nTravel Umroh";
/// Body of the seeded `registration_confirmation` template (3 parameters).
pub const REGISTRATION_CONFIRMATION_TEXT: &str = "Assalamu'alaikum {{1}},\n\nPendaftaran Anda untuk paket {{2}} sudah kami terima dengan nomor registrasi {{3}}.\n\nTerima kasih atas kepercayaan Anda.\n\nTravel Umroh";
/// Body of the seeded `document_ready` template (3 parameters).
pub const DOCUMENT_READY_TEXT: &str = "Assalamu'alaikum {{1}},\n\nDokumen {{2}} Anda untuk paket {{3}} sudah siap. Silakan ambil di kantor kami atau hubungi agen Anda.\n\nTravel Umroh";
/// Body of the seeded `visa_status` template (3 parameters).
pub const VISA_STATUS_TEXT: &str = "Assalamu'alaikum {{1}},\n\nStatus visa umrah Anda untuk paket {{2}}: {{3}}.\n\nUntuk info lebih lanjut, hubungi kami.\n\nTravel Umroh";

/// Seeded templates: (id, name, body, example values). All are UTILITY, language `id`, APPROVED.
const SEEDS: [(u64, &str, &str, &[&str]); 6] = [
    (
        1_000_000_000_000_001,
        "payment_reminder",
        PAYMENT_REMINDER_TEXT,
        &[
            "Siti Aminah",
            "Umrah Reguler 12 Hari",
            "05 Des 2026",
            "1.500.000",
            "Ahmad",
            "+62 812-3456-7890",
        ],
    ),
    (
        1_000_000_000_000_002,
        "payment_confirmation",
        PAYMENT_CONFIRMATION_TEXT,
        &[
            "Siti Aminah",
            "1.500.000",
            "Umrah Reguler 12 Hari",
            "10.500.000",
            "Cicilan",
        ],
    ),
    (
        1_000_000_000_000_003,
        "departure_reminder",
        DEPARTURE_REMINDER_TEXT,
        &["Siti Aminah", "05 Des 2026", "Umrah Reguler 12 Hari"],
    ),
    (
        1_000_000_000_000_004,
        "registration_confirmation",
        REGISTRATION_CONFIRMATION_TEXT,
        &["Siti Aminah", "Umrah Reguler 12 Hari", "REG-2026-0142"],
    ),
    (
        1_000_000_000_000_005,
        "document_ready",
        DOCUMENT_READY_TEXT,
        &["Siti Aminah", "paspor", "Umrah Reguler 12 Hari"],
    ),
    (
        1_000_000_000_000_006,
        "visa_status",
        VISA_STATUS_TEXT,
        &["Siti Aminah", "Umrah Reguler 12 Hari", "Disetujui"],
    ),
];

/// Template statuses Meta reports (webhook `event` values).
pub const STATUSES: [&str; 13] = [
    "APPROVED",
    "ARCHIVED",
    "DELETED",
    "DISABLED",
    "FLAGGED",
    "IN_APPEAL",
    "LIMIT_EXCEEDED",
    "LOCKED",
    "PAUSED",
    "PENDING",
    "REINSTATED",
    "PENDING_DELETION",
    "REJECTED",
];

/// One message template as the WABA holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Template {
    /// Numeric template id.
    pub id: u64,
    /// Template name (lowercase, digits, underscores).
    pub name: String,
    /// Language code, e.g. `id`.
    pub language: String,
    /// `MARKETING`, `UTILITY` or `AUTHENTICATION`.
    pub category: String,
    /// Current status (`APPROVED`, `PENDING`, `PAUSED`, ...).
    pub status: String,
    /// `positional` or `named`.
    pub parameter_format: String,
    /// Variables of the BODY in order (`1`, `2`, ... or names).
    pub variables: Vec<String>,
    /// Components as Meta lists them (uppercase `type`).
    pub components: Value,
    /// Review outcome applied when the review delay has passed (`None` once reviewed).
    #[serde(skip)]
    pub pending_review: Option<Review>,
}

/// What review will decide for a newly created template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Review {
    /// Approved as submitted.
    Approve,
    /// Rejected with `INVALID_FORMAT` (adjacent variables).
    RejectInvalidFormat,
}

impl Template {
    /// The seeded templates with fixed ids.
    pub fn seeds() -> Vec<Template> {
        SEEDS
            .iter()
            .map(|(id, name, text, examples)| Template {
                id: *id,
                name: (*name).to_owned(),
                language: "id".to_owned(),
                category: "UTILITY".to_owned(),
                status: "APPROVED".to_owned(),
                parameter_format: "positional".to_owned(),
                variables: (1..=examples.len()).map(|i| i.to_string()).collect(),
                components: json!([{ "type": "BODY", "text": text, "example": { "body_text": [examples] } }]),
                pending_review: None,
            })
            .collect()
    }

    /// The template as `GET message_templates` lists it, restricted to `fields` when given (`id` is always kept).
    pub fn to_listing(&self, fields: Option<&[String]>) -> Value {
        let full = json!({
            "name": self.name,
            "parameter_format": self.parameter_format.to_uppercase(),
            "components": self.components,
            "language": self.language,
            "status": self.status,
            "category": self.category,
            "id": self.id.to_string(),
        });
        match (fields, full) {
            (Some(fields), Value::Object(map)) => Value::Object(
                map.into_iter()
                    .filter(|(k, _)| k == "id" || fields.iter().any(|f| f == k))
                    .collect(),
            ),
            (_, full) => full,
        }
    }
}

/// A variable found in a template text, with the byte range of its `{{...}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    /// What is between the braces, trimmed.
    pub name: String,
    /// Byte offset of `{{`.
    pub start: usize,
    /// Byte offset just after `}}`.
    pub end: usize,
}

/// Finds every `{{...}}` in `text`.
pub fn placeholders(text: &str) -> Vec<Placeholder> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(open) = text[from..].find("{{").map(|i| from + i) {
        let Some(close) = text[open + 2..].find("}}").map(|i| open + 2 + i) else {
            break;
        };
        found.push(Placeholder {
            name: text[open + 2..close].trim().to_owned(),
            start: open,
            end: close + 2,
        });
        from = close + 2;
    }
    found
}

/// Whether two variables follow each other with only whitespace between (Meta rejects these as INVALID_FORMAT).
pub fn has_adjacent_variables(text: &str) -> bool {
    placeholders(text)
        .windows(2)
        .any(|w| text[w[0].end..w[1].start].trim().is_empty())
}

/// A validated `POST message_templates` request.
#[derive(Debug, Clone)]
pub struct NewTemplate {
    /// Name.
    pub name: String,
    /// Language code.
    pub language: String,
    /// Category (uppercase).
    pub category: String,
    /// `positional` or `named`.
    pub parameter_format: String,
    /// BODY variables in order.
    pub variables: Vec<String>,
    /// Components normalised to uppercase types.
    pub components: Value,
    /// What review will decide.
    pub review: Review,
}

/// Applies Meta's template creation rules to a request body.
pub fn validate_new_template(body: &Value) -> Result<NewTemplate, GraphError> {
    let name = required_str(body, "name")?;
    if name.is_empty()
        || name.len() > 512
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(GraphError::invalid(format!(
            "Template name '{name}' is invalid: use at most 512 lowercase letters, digits and underscores."
        ))
        .with_extra("error_user_title", json!("Invalid template name"))
        .with_extra(
            "error_user_msg",
            json!("Template names can only contain lowercase alphanumeric characters and underscores."),
        ));
    }
    let category = required_str(body, "category")?.to_uppercase();
    if !["MARKETING", "UTILITY", "AUTHENTICATION"].contains(&category.as_str()) {
        return Err(GraphError::invalid(format!(
            "Param category must be one of {{MARKETING, UTILITY, AUTHENTICATION}}, got '{category}'."
        )));
    }
    let language = required_str(body, "language")?;
    if !is_language_code(&language) {
        return Err(GraphError::invalid(format!(
            "Param language '{language}' is not a supported language code."
        )));
    }
    let parameter_format = match body.get("parameter_format").and_then(Value::as_str) {
        None => "positional".to_owned(),
        Some(f) if f.eq_ignore_ascii_case("positional") || f.eq_ignore_ascii_case("named") => {
            f.to_lowercase()
        }
        Some(other) => {
            return Err(GraphError::invalid(format!(
                "Param parameter_format must be one of {{POSITIONAL, NAMED}}, got '{other}'."
            )));
        }
    };
    let Some(components) = body.get("components").and_then(Value::as_array) else {
        return Err(GraphError::invalid("The parameter components is required."));
    };
    let mut normalised = Vec::with_capacity(components.len());
    let mut bodies = Vec::new();
    for component in components {
        let kind = component
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_uppercase();
        let text = component.get("text").and_then(Value::as_str);
        match kind.as_str() {
            "BODY" => bodies.push(component),
            "HEADER" | "FOOTER" => {
                if text.is_some_and(|t| t.chars().count() > 60) {
                    return Err(GraphError::invalid(format!(
                        "{kind} text must be at most 60 characters."
                    )));
                }
            }
            "BUTTONS" => {
                let buttons = component
                    .get("buttons")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                if buttons > 10 {
                    return Err(GraphError::invalid(
                        "A template can have at most 10 buttons.",
                    ));
                }
            }
            _ => {
                return Err(GraphError::invalid(format!(
                    "Unknown component type '{kind}'."
                )));
            }
        }
        let mut c = component.clone();
        if let Some(obj) = c.as_object_mut() {
            obj.insert("type".into(), json!(kind));
        }
        normalised.push(c);
    }
    let [body_component] = bodies.as_slice() else {
        return Err(GraphError::invalid(
            "A template needs exactly one BODY component.",
        ));
    };
    let text = body_component
        .get("text")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if text.trim().is_empty() {
        return Err(GraphError::invalid("BODY text is required."));
    }
    if text.chars().count() > 1024 {
        return Err(GraphError::invalid(
            "BODY text must be at most 1024 characters.",
        ));
    }
    let found = placeholders(text);
    let variables = if parameter_format == "named" {
        named_variables(&found, body_component)?
    } else {
        positional_variables(&found, body_component)?
    };
    let trimmed = text.trim();
    if !found.is_empty() && (trimmed.starts_with("{{") || trimmed.ends_with("}}")) {
        return Err(GraphError::invalid("Variables can't be at the start or end of the template.")
            .with_subcode(2_388_299)
            .with_extra("error_user_title", json!("Variables can't be at the start or end of the template"))
            .with_extra(
                "error_user_msg",
                json!("Variables can't be at the start or end of the template body. Add text before or after them."),
            ));
    }
    let review = if has_adjacent_variables(text) {
        Review::RejectInvalidFormat
    } else {
        Review::Approve
    };
    Ok(NewTemplate {
        name,
        language,
        category,
        parameter_format,
        variables,
        components: Value::Array(normalised),
        review,
    })
}

fn positional_variables(found: &[Placeholder], body: &Value) -> Result<Vec<String>, GraphError> {
    let mut numbers = Vec::with_capacity(found.len());
    for p in found {
        match p.name.parse::<usize>() {
            Ok(n) if n >= 1 => numbers.push(n),
            _ => {
                return Err(GraphError::invalid(format!(
                    "Variable {{{{{}}}}} is not a positional parameter; use {{{{1}}}}, {{{{2}}}}, ...",
                    p.name
                )));
            }
        }
    }
    numbers.sort_unstable();
    numbers.dedup();
    if numbers.iter().enumerate().any(|(i, n)| *n != i + 1) {
        return Err(GraphError::invalid(
            "Positional variables must be numbered {{1}}, {{2}}, ... without gaps.",
        ));
    }
    if !numbers.is_empty() {
        let examples = body
            .pointer("/example/body_text/0")
            .and_then(Value::as_array)
            .map_or(0, |values| {
                values
                    .iter()
                    .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
                    .count()
            });
        if examples != numbers.len() {
            return Err(missing_examples(numbers.len(), examples));
        }
    }
    Ok(numbers.iter().map(ToString::to_string).collect())
}

fn named_variables(found: &[Placeholder], body: &Value) -> Result<Vec<String>, GraphError> {
    let mut names: Vec<String> = Vec::with_capacity(found.len());
    for p in found {
        if p.name.is_empty() || !p.name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            return Err(GraphError::invalid(format!(
                "Named variable {{{{{}}}}} must use lowercase letters and underscores.",
                p.name
            )));
        }
        if !names.contains(&p.name) {
            names.push(p.name.clone());
        }
    }
    let examples: Vec<&str> = body
        .pointer("/example/body_text_named_params")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter(|i| {
                    i.get("example")
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty())
                })
                .filter_map(|i| i.get("param_name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let covered = names
        .iter()
        .filter(|n| examples.contains(&n.as_str()))
        .count();
    if covered != names.len() {
        return Err(missing_examples(names.len(), covered));
    }
    Ok(names)
}

fn missing_examples(needed: usize, given: usize) -> GraphError {
    GraphError::invalid(format!(
        "Example values are required for every variable: the BODY has {needed} variable(s) but {given} example value(s) were given."
    ))
    .with_extra("error_user_title", json!("Message template example values are missing"))
}

fn required_str(body: &Value, key: &str) -> Result<String, GraphError> {
    match body.get(key) {
        Some(Value::String(s)) => Ok(s.trim().to_owned()),
        Some(_) => Err(GraphError::invalid(format!(
            "Param {key} must be a string."
        ))),
        None => Err(
            GraphError::invalid(format!("The parameter {key} is required."))
                .with_message(format!("(#100) The parameter {key} is required.")),
        ),
    }
}

/// `id`, `en_US`, `pt_BR`, `fil`: two or three lowercase letters with an optional `_XX` region.
fn is_language_code(code: &str) -> bool {
    let (lang, region) = match code.split_once('_') {
        Some((l, r)) => (l, Some(r)),
        None => (code, None),
    };
    (2..=3).contains(&lang.len())
        && lang.chars().all(|c| c.is_ascii_lowercase())
        && region.is_none_or(|r| r.len() == 2 && r.chars().all(|c| c.is_ascii_uppercase()))
}

/// The template part of a send request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSend {
    /// `template.name`.
    pub name: String,
    /// `template.language.code`.
    pub language: String,
    /// Parameters of the body component (count, and `parameter_name`s when named).
    pub body_params: usize,
    /// `parameter_name` of each body parameter, when given.
    pub param_names: Vec<String>,
}

/// Meta's send-time template checks against the WABA's templates; returns the matching template's category.
pub fn check_send(templates: &[Template], send: &TemplateSend) -> Result<String, GraphError> {
    let not_found = || {
        GraphError::coded(
            132_001,
            format!(
                "template name ({}) does not exist in {}",
                send.name, send.language
            ),
        )
    };
    let template = templates
        .iter()
        .find(|t| t.name == send.name && t.language == send.language)
        .ok_or_else(not_found)?;
    match template.status.as_str() {
        "APPROVED" | "REINSTATED" => {}
        "PAUSED" => {
            return Err(GraphError::coded(
                132_015,
                format!("Template {} is paused because of low quality.", send.name),
            ));
        }
        "DISABLED" => {
            return Err(GraphError::coded(
                132_016,
                format!(
                    "Template {} has been paused too many times and is now disabled.",
                    send.name
                ),
            ));
        }
        _ => return Err(not_found()),
    }
    if send.body_params != template.variables.len() {
        return Err(GraphError::coded(
            132_000,
            format!(
                "body: number of localizable_params ({}) does not match the expected number of params ({})",
                send.body_params,
                template.variables.len()
            ),
        ));
    }
    if template.parameter_format == "named"
        && send
            .param_names
            .iter()
            .any(|n| !template.variables.contains(n))
    {
        return Err(GraphError::coded(
            132_012,
            "Named parameters do not match the parameter names of the template.",
        ));
    }
    Ok(template.category.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_have_the_documented_parameter_counts() {
        let counts: Vec<(String, usize)> = Template::seeds()
            .into_iter()
            .map(|t| (t.name, t.variables.len()))
            .collect();
        assert_eq!(
            counts,
            vec![
                ("payment_reminder".to_owned(), 6),
                ("payment_confirmation".to_owned(), 5),
                ("departure_reminder".to_owned(), 3),
                ("registration_confirmation".to_owned(), 3),
                ("document_ready".to_owned(), 3),
                ("visa_status".to_owned(), 3),
            ]
        );
        for t in Template::seeds() {
            let text = t.components[0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert_eq!(placeholders(&text).len(), t.variables.len(), "{}", t.name);
        }
    }

    #[test]
    fn adjacent_variables_are_detected() {
        assert!(has_adjacent_variables("Halo {{1}}{{2}} ya"));
        assert!(has_adjacent_variables("Halo {{1}} {{2}} ya"));
        assert!(!has_adjacent_variables("Halo {{1}} - {{2}} ya"));
    }

    #[test]
    fn missing_examples_are_refused() {
        let body = json!({"name":"t","category":"UTILITY","language":"id",
            "components":[{"type":"BODY","text":"Halo {{1}} dan {{2}} ya","example":{"body_text":[["a"]]}}]});
        let err = validate_new_template(&body).expect_err("missing example");
        assert_eq!(err.code, 100);
    }

    #[test]
    fn variable_at_the_end_is_refused_with_subcode() {
        let body = json!({"name":"t","category":"UTILITY","language":"id",
            "components":[{"type":"BODY","text":"Halo {{1}}","example":{"body_text":[["a"]]}}]});
        assert_eq!(
            validate_new_template(&body).expect_err("end").subcode,
            Some(2_388_299)
        );
    }

    #[test]
    fn language_codes_follow_meta_shapes() {
        assert!(is_language_code("id"));
        assert!(is_language_code("en_US"));
        assert!(!is_language_code("ID"));
        assert!(!is_language_code("indonesian"));
    }
}

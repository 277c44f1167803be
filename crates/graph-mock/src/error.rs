//! Meta's Graph API error envelope and the table of WhatsApp error codes graph-mock can answer with.
//!
//! Codes, HTTP statuses and titles follow Meta's error-code page (reference §6.1). Throttling codes (4, 80007, 130429,
//! 131048, 131056) are HTTP 400, never 429; 190 is 401; 132001 is 404; 131000 is 500.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use rand::Rng;
use serde_json::{Map, Value, json};

/// One Graph API error, rendered as `{"error":{message,type,code,error_data,error_subcode?,fbtrace_id}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphError {
    /// HTTP status of the response.
    pub http_status: u16,
    /// Meta's numeric `error.code`.
    pub code: i64,
    /// Full `error.message`, e.g. `(#130429) Rate limit hit`.
    pub message: String,
    /// `error.error_data.details`.
    pub details: String,
    /// Deprecated `error.error_subcode`, still sent by Meta for a few errors.
    pub subcode: Option<i64>,
    /// Extra top-level fields inside `error` (template management uses `error_user_title`/`error_user_msg`).
    pub extra: Map<String, Value>,
}

/// HTTP status and title Meta documents for an error code; unknown codes are 400 "Unknown error".
pub fn code_info(code: i64) -> (u16, &'static str) {
    match code {
        0 => (401, "AuthException"),
        1 => (400, "API Unknown"),
        2 => (503, "API Service"),
        3 => (500, "API Method"),
        4 => (400, "API Too Many Calls"),
        10 => (403, "Permission Denied"),
        33 => (400, "Parameter value is not valid"),
        100 => (400, "Invalid parameter"),
        190 => (401, "Access token has expired"),
        200..=299 => (403, "API Permission"),
        368 => (403, "Temporarily blocked for policies violations"),
        2500 => (400, "Unknown path components"),
        80007 => (400, "Rate limit issues"),
        130429 => (400, "Rate limit hit"),
        130472 => (400, "User's number is part of an experiment"),
        130497 => (
            403,
            "Business account is restricted from messaging users in this country",
        ),
        131000 => (500, "Something went wrong"),
        131005 => (403, "Access denied"),
        131008 => (400, "Required parameter is missing"),
        131009 => (400, "Parameter value is not valid"),
        131016 => (500, "Service unavailable"),
        131021 => (400, "Recipient cannot be sender"),
        131026 => (400, "Message Undeliverable"),
        131030 => (400, "Recipient phone number not in allowed list"),
        131031 => (403, "Account has been locked"),
        131042 => (400, "Business eligibility payment issue"),
        131045 => (500, "Incorrect certificate"),
        131047 => (400, "Re-engagement message"),
        131048 => (400, "Spam rate limit hit"),
        131049 => (400, "Meta chose not to deliver"),
        131050 => (400, "User has stopped receipt of marketing messages"),
        131051 => (400, "Unsupported message type"),
        131052 => (400, "Media download error"),
        131053 => (400, "Media upload error"),
        131056 => (
            400,
            "(Business Account, Consumer Account) pair rate limit hit",
        ),
        131057 => (500, "Account in maintenance mode"),
        131059 => (400, "Invalid cursor"),
        132000 => (
            400,
            "Number of parameters does not match the expected number of params",
        ),
        132001 => (404, "Template name does not exist in the translation"),
        132005 => (400, "Template Hydrated Text Too Long"),
        132007 => (400, "Template Format Character Policy Violated"),
        132012 => (
            400,
            "Parameter format does not match format in the created template",
        ),
        132015 => (400, "Template is Paused"),
        132016 => (400, "Template is Disabled"),
        133010 => (400, "Phone number Not Registered"),
        135000 => (400, "Generic user error"),
        _ => (400, "Unknown error"),
    }
}

/// Details text Meta puts in `error_data.details` for the errors graph-mock produces without a more specific reason.
pub fn default_details(code: i64) -> &'static str {
    match code {
        130429 => "Cloud API message throughput has been reached.",
        131000 => "Something went wrong. Please retry later.",
        131026 => "Message Undeliverable.",
        131047 => {
            "Message failed to send because more than 24 hours have passed since the customer last replied to this number."
        }
        131048 => {
            "Message failed to send because there are restrictions on how many messages can be sent from this phone number."
        }
        131056 => {
            "Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time."
        }
        _ => "",
    }
}

impl GraphError {
    /// An error with Meta's documented status and title for `code`; `message` is `(#code) title`.
    pub fn coded(code: i64, details: impl Into<String>) -> Self {
        let (http_status, title) = code_info(code);
        Self {
            http_status,
            code,
            message: format!("(#{code}) {title}"),
            details: details.into(),
            subcode: None,
            extra: Map::new(),
        }
    }

    /// Like [`GraphError::coded`] with Meta's stock details text for the code.
    pub fn stock(code: i64) -> Self {
        Self::coded(code, default_details(code))
    }

    /// Replaces the full `error.message`.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// Sets the deprecated `error_subcode`.
    pub fn with_subcode(mut self, subcode: i64) -> Self {
        self.subcode = Some(subcode);
        self
    }

    /// Overrides the HTTP status (fault injection may ask for any status).
    pub fn with_status(mut self, http_status: u16) -> Self {
        self.http_status = http_status;
        self
    }

    /// Adds an extra field inside `error` (e.g. `error_user_msg`).
    pub fn with_extra(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    /// `100 Invalid parameter` with the given details, the most common validation error.
    pub fn invalid(details: impl Into<String>) -> Self {
        Self::coded(100, details)
    }

    /// `131008 Required parameter is missing` for parameter `param`.
    pub fn missing(param: &str) -> Self {
        Self::coded(131008, format!("The parameter {param} is required."))
    }

    /// Meta's answer for an object id that does not exist or does not support the operation.
    pub fn unsupported(method: &str, object_id: &str) -> Self {
        Self::coded(100, format!("Object with ID '{object_id}' does not exist."))
            .with_message(format!(
                "Unsupported {method} request. Object with ID '{object_id}' does not exist, cannot be loaded due to \
                 missing permissions, or does not support this operation. Please read the Graph API documentation at \
                 https://developers.facebook.com/docs/graph-api"
            ))
            .with_subcode(33)
    }

    /// `190` for a request whose bearer token is missing, unknown or expired.
    pub fn token(reason: TokenProblem) -> Self {
        let (message, subcode) = match reason {
            TokenProblem::Missing => (
                "Error validating access token: the request carries no access token.",
                None,
            ),
            TokenProblem::Invalid => (
                "Error validating access token: Invalid OAuth access token - Cannot parse access token",
                None,
            ),
            TokenProblem::Expired => (
                "Error validating access token: Session has expired on Friday, 01-Jan-2027 00:00:00 PST. The current \
                 time is later.",
                Some(463),
            ),
        };
        let mut err = Self::coded(190, message).with_message(message);
        err.subcode = subcode;
        err
    }

    /// The JSON body Meta sends, with a fresh random `fbtrace_id`.
    pub fn to_json(&self) -> Value {
        let mut error = Map::new();
        error.insert("message".into(), json!(self.message));
        error.insert("type".into(), json!("OAuthException"));
        error.insert("code".into(), json!(self.code));
        error.insert(
            "error_data".into(),
            json!({"messaging_product": "whatsapp", "details": self.details}),
        );
        if let Some(subcode) = self.subcode {
            error.insert("error_subcode".into(), json!(subcode));
        }
        for (k, v) in &self.extra {
            error.insert(k.clone(), v.clone());
        }
        error.insert("fbtrace_id".into(), json!(fbtrace_id()));
        json!({ "error": error })
    }

    /// The HTTP response for this error.
    pub fn to_response(&self) -> HttpResponse {
        let status = StatusCode::from_u16(self.http_status).unwrap_or(StatusCode::BAD_REQUEST);
        HttpResponse::build(status).json(self.to_json())
    }
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token graph-mock does not know (or the `token_invalid` fault is active).
    Invalid,
    /// One of the scripted expired tokens.
    Expired,
}

/// A random 23-character trace id from the base64url alphabet, like Meta's `fbtrace_id`.
pub fn fbtrace_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..23)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// The `errors[]` element of a failed-status webhook (reference §3.7(e)).
pub fn webhook_error(code: i64) -> Value {
    let (_, title) = code_info(code);
    let title = match code {
        131026 => "Message undeliverable",
        _ => title,
    };
    json!({
        "code": code,
        "title": title,
        "message": title,
        "error_data": {"details": default_details(code)},
        "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_codes_are_http_400() {
        for code in [4, 80007, 130429, 131048, 131056] {
            assert_eq!(code_info(code).0, 400, "code {code}");
        }
        assert_eq!(code_info(190).0, 401);
        assert_eq!(code_info(132001).0, 404);
        assert_eq!(code_info(131000).0, 500);
    }

    #[test]
    fn error_json_has_meta_envelope() {
        let body = GraphError::stock(131056).with_subcode(2494055).to_json();
        let err = &body["error"];
        assert_eq!(err["code"], 131056);
        assert_eq!(err["type"], "OAuthException");
        assert_eq!(err["error_subcode"], 2494055);
        assert_eq!(err["error_data"]["messaging_product"], "whatsapp");
        assert_eq!(
            err["message"],
            "(#131056) (Business Account, Consumer Account) pair rate limit hit"
        );
        assert_eq!(err["fbtrace_id"].as_str().map(str::len), Some(23));
    }
}

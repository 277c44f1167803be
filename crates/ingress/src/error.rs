//! The one error type of the HTTP layer. Every variant has a fixed status and a stable snake_case
//! code; internal causes are logged, never sent to the caller.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::signature::SignatureError;

/// Why a request was not answered 200.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// GET handshake with a wrong mode or token: Meta shows the endpoint as unverified.
    #[error("webhook verification failed")]
    VerificationFailed,
    /// Missing, malformed or wrong `X-Hub-Signature-256`: nothing is published.
    #[error(transparent)]
    Unauthorized(#[from] SignatureError),
    /// Body over the configured limit (Meta sends at most 3 MB): nothing is published.
    #[error("body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The client broke off or garbled the upload.
    #[error("could not read the request body")]
    BodyUnreadable(#[source] actix_web::error::PayloadError),
    /// The broker did not confirm every event in time: Meta must redeliver.
    #[error("the events could not be stored on the broker")]
    BrokerUnavailable(#[source] wa_amqp::PublishError),
    /// A bug of ours (e.g. an event that does not serialise).
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// Stable snake_case code: the `error` field of the body and the `outcome` metric label.
    pub fn code(&self) -> &'static str {
        match self {
            Self::VerificationFailed => "verification_failed",
            Self::Unauthorized(reason) => reason.code(),
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::BodyUnreadable(_) => "body_unreadable",
            Self::BrokerUnavailable(_) => "broker_unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::VerificationFailed => StatusCode::FORBIDDEN,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyUnreadable(_) => StatusCode::BAD_REQUEST,
            Self::BrokerUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, Self::BrokerUnavailable(_)) {
            // Meta ignores it, but proxies and people debugging do not.
            response.insert_header(("Retry-After", "5"));
        }
        response.json(ErrorBody {
            error: self.code(),
            message: self.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody as _;

    #[test]
    fn every_error_has_its_status_and_a_body_without_internal_causes() {
        let cases = [
            (ApiError::VerificationFailed, 403, "verification_failed"),
            (
                ApiError::Unauthorized(SignatureError::Mismatch),
                401,
                "signature_mismatch",
            ),
            (
                ApiError::PayloadTooLarge { limit: 10 },
                413,
                "payload_too_large",
            ),
            (
                ApiError::BrokerUnavailable(wa_amqp::PublishError::NotConfirmed),
                503,
                "broker_unavailable",
            ),
            (
                ApiError::Internal(anyhow::anyhow!("secret internal detail")),
                500,
                "internal",
            ),
        ];
        for (error, status, code) in cases {
            let response = error.error_response();
            assert_eq!(response.status().as_u16(), status);
            let body = response.into_body().try_into_bytes().expect("sized body");
            let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(json["error"], code);
            assert!(!body.windows(6).any(|w| w == b"secret"), "{json}");
        }
    }
}

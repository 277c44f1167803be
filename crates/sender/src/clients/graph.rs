//! The Graph API client: one `reqwest::Client` (connection reuse, timeouts, user agent) for every
//! tenant; the tenant's token is a per-call bearer and never appears in logs or errors.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use wa_common::meta::{GraphErrorEnvelope, SendMessageResponse};

use crate::config::GraphConfig;

/// How one send call ended, as far as we can know.
#[derive(Debug, Clone)]
pub enum SendResult {
    /// 2xx with a wamid.
    Accepted {
        /// Meta's message id.
        wa_message_id: String,
    },
    /// Meta answered with an error (a Graph error body when `code` is set).
    Rejected {
        /// HTTP status.
        http_status: u16,
        /// Graph error code, when the body had one.
        code: Option<i64>,
        /// `error_data.details` or the message (no secrets).
        detail: String,
        /// Meta's trace id.
        fbtrace_id: Option<String>,
    },
    /// The request never left (connection refused, DNS): safe to retry.
    NotSent {
        /// What failed.
        detail: String,
    },
    /// The request may have reached Meta but we have no usable answer (timeout, reset, garbled 2xx):
    /// never resend blindly.
    Unknown {
        /// What happened.
        detail: String,
    },
}

/// Typed client of the Graph API.
#[derive(Debug, Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    base_url: String,
    api_version: String,
}

impl GraphClient {
    /// Builds the client once at start-up.
    pub fn new(config: &GraphConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("wa-sender/", env!("CARGO_PKG_VERSION")))
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(5).min(config.timeout))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(512)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            base_url: config.base_url.clone(),
            api_version: config.api_version.clone(),
        })
    }

    /// `POST /{version}/{phone_number_id}/messages` with the complete Meta body.
    #[tracing::instrument(name = "graph.send", skip_all, fields(otel.kind = "client", phone_number_id, http.status_code))]
    pub async fn send_message(
        &self,
        phone_number_id: &str,
        token: &SecretString,
        body: &Value,
    ) -> SendResult {
        let url = format!(
            "{}/{}/{phone_number_id}/messages",
            self.base_url, self.api_version
        );
        let response = match self
            .http
            .post(url)
            .bearer_auth(token.expose_secret())
            .json(body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(error) if error.is_connect() => {
                return SendResult::NotSent {
                    detail: describe(&error),
                };
            }
            Err(error) => {
                return SendResult::Unknown {
                    detail: describe(&error),
                };
            }
        };
        let status = response.status().as_u16();
        tracing::Span::current().record("http.status_code", status);
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(error) if (200..300).contains(&status) => {
                return SendResult::Unknown {
                    detail: describe(&error),
                };
            }
            Err(error) => {
                return SendResult::Rejected {
                    http_status: status,
                    code: None,
                    detail: describe(&error),
                    fbtrace_id: None,
                };
            }
        };
        if (200..300).contains(&status) {
            return match serde_json::from_slice::<SendMessageResponse>(&bytes) {
                Ok(parsed) => match parsed.wa_message_id() {
                    Some(id) => SendResult::Accepted {
                        wa_message_id: id.to_owned(),
                    },
                    None => SendResult::Unknown {
                        detail: format!("HTTP {status} without a message id"),
                    },
                },
                Err(error) => SendResult::Unknown {
                    detail: format!("HTTP {status} with an unreadable body: {error}"),
                },
            };
        }
        match serde_json::from_slice::<GraphErrorEnvelope>(&bytes) {
            Ok(envelope) => SendResult::Rejected {
                http_status: status,
                code: Some(envelope.error.code),
                detail: envelope.error.details().to_owned(),
                fbtrace_id: envelope.error.fbtrace_id.clone(),
            },
            Err(_) => SendResult::Rejected {
                http_status: status,
                code: None,
                detail: format!("HTTP {status} without a Graph error body"),
                fbtrace_id: None,
            },
        }
    }

    /// `GET /{version}/{phone_number_id}`: succeeds when the token works again (auth probe).
    #[tracing::instrument(name = "graph.probe", skip_all, fields(otel.kind = "client", phone_number_id))]
    pub async fn probe(&self, phone_number_id: &str, token: &SecretString) -> Result<(), String> {
        let url = format!("{}/{}/{phone_number_id}", self.base_url, self.api_version);
        let response = self
            .http
            .get(url)
            .bearer_auth(token.expose_secret())
            .send()
            .await
            .map_err(|e| describe(&e))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", response.status().as_u16()))
        }
    }
}

/// A reqwest error without its URL (the URL has no secret, but keep error text short and stable).
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_body() || error.is_decode() {
        "body"
    } else {
        "request"
    };
    format!("{kind} error: {error}")
}

//! Why the receiver did not take a webhook, and what it says about it. One [`Refusal`] makes
//! both the HTTP answer (status, `{"status":"error","error":<code>,"message":...}`,
//! Retry-After, `Connection: close`) and the fields of the request's log line ([`Outcome`]), so
//! the answer and the log never drift apart.
//!
//! Never carries the body, a secret or a header value other than the (sanitized) eBay kid; a
//! source name from the URL goes through [`for_log`] before it reaches a log line or a label.

use crate::ebay_keys::FetchError;
use crate::schemes::{for_log, VerifyError};
use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;
use std::sync::Arc;
use std::time::Duration;
use stockhook_shared::envelope::EventId;
use stockhook_shared::queue::QueueError;

pub type Resp = Response<Full<Bytes>>;

/// Why a request to `/webhooks/<source>` was refused.
pub enum Refusal {
    /// Neither POST nor an eBay challenge GET.
    MethodNotAllowed,
    /// No source of that name is configured.
    UnknownSource,
    /// The source is configured but switched off; the platform should retry later.
    Disabled { why: String },
    /// Over the source's rate limit; retry after this many seconds.
    RateLimited { retry_after: u64 },
    /// The body is over `receiver.max_body_bytes`.
    TooLarge { limit: usize },
    /// The body did not arrive in time.
    BodyTimeout(Duration),
    /// The body could not be read.
    BadBody,
    /// eBay's public key for the kid could not be fetched; eBay delivers again later.
    KeyUnavailable { kid: String, error: FetchError },
    /// The signature or credentials did not verify.
    Unverified(VerifyError),
    /// The event could not be stored; the sender retries.
    NotStored(QueueError),
    /// A challenge GET for a source that answers none.
    NoChallenge,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::UnknownSource | Refusal::NoChallenge => StatusCode::NOT_FOUND,
            Refusal::Disabled { .. } | Refusal::KeyUnavailable { .. } | Refusal::NotStored(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Refusal::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Refusal::BadBody => StatusCode::BAD_REQUEST,
            Refusal::Unverified(_) => StatusCode::UNAUTHORIZED,
        }
    }

    /// The stable code in the answer's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::UnknownSource => "unknown_source",
            Refusal::Disabled { .. } => "source_disabled",
            Refusal::RateLimited { .. } => "rate_limited",
            Refusal::TooLarge { .. } => "body_too_large",
            Refusal::BodyTimeout(_) => "body_timeout",
            Refusal::BadBody => "bad_body",
            Refusal::KeyUnavailable { .. } => "key_unavailable",
            Refusal::Unverified(e) => e.code(),
            Refusal::NotStored(QueueError::OverBudget { .. }) => "queue_full",
            Refusal::NotStored(QueueError::ShuttingDown) => "shutting_down",
            Refusal::NotStored(_) => "storage_error",
            Refusal::NoChallenge => "no_challenge",
        }
    }

    /// The reason on the log line and in the metrics: the code, except that every storage
    /// failure logs as `not_stored`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NotStored(_) => "not_stored",
            r => r.code(),
        }
    }

    fn message(&self, name: &str) -> String {
        match self {
            Refusal::MethodNotAllowed => {
                "webhooks are POSTed; GET is only for eBay's ?challenge_code= validation".into()
            }
            Refusal::UnknownSource => {
                format!("no source named {:?} is configured", for_log(name))
            }
            Refusal::Disabled { why } => format!("source {name} is disabled: {why}"),
            Refusal::RateLimited { .. } => format!("over the rate limit of source {name}"),
            Refusal::TooLarge { limit } => {
                format!("body exceeds receiver.max_body_bytes = {limit}")
            }
            Refusal::BodyTimeout(t) => format!("the body did not arrive within {t:?}"),
            Refusal::BadBody => "the body could not be read".into(),
            Refusal::KeyUnavailable { kid, .. } => {
                format!("eBay's public key {kid} could not be fetched; retry later")
            }
            Refusal::Unverified(e) => e.to_string(),
            Refusal::NotStored(_) => "the event could not be stored; retry later".into(),
            Refusal::NoChallenge => format!(
                "source {name} answers no endpoint challenge: set scheme = \"ebay\", \
                 verification_token and endpoint_url"
            ),
        }
    }

    /// Seconds the sender should wait before trying again, where it should.
    fn retry_after(&self) -> Option<u64> {
        match self {
            Refusal::Disabled { .. } | Refusal::KeyUnavailable { .. } => Some(60),
            Refusal::RateLimited { retry_after } => Some(*retry_after),
            Refusal::NotStored(_) => Some(30),
            _ => None,
        }
    }

    /// Whether the connection is closed after the answer (the body was not read to its end).
    fn closes(&self) -> bool {
        matches!(
            self,
            Refusal::TooLarge { .. } | Refusal::BodyTimeout(_) | Refusal::BadBody
        )
    }

    /// The failures worth a line of their own beyond the request's: the operator has to act.
    fn log_cause(&self, name: &str) {
        match self {
            Refusal::NotStored(e) => {
                tracing::error!(source = %for_log(name), error = %e, "event not stored: answering 503 so the sender retries")
            }
            Refusal::KeyUnavailable {
                kid,
                error: e @ FetchError::Credentials { .. },
            } => {
                tracing::error!(source = %for_log(name), kid = %kid, error = %e, "eBay public key unavailable: answering 503 so eBay retries")
            }
            Refusal::KeyUnavailable { kid, error } => {
                tracing::warn!(source = %for_log(name), kid = %kid, error = %error, "eBay public key unavailable: answering 503 so eBay retries")
            }
            _ => {}
        }
    }

    /// The answer and the log line's fields, for source `name` (from the URL) after `bytes` of
    /// body were read.
    pub fn answer(self, name: &str, bytes: usize) -> (Resp, Outcome) {
        self.log_cause(name);
        let status = self.status();
        let mut r = error(status, self.code(), self.message(name));
        let h = r.headers_mut();
        if let Some(secs) = self.retry_after() {
            h.insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        if self.closes() {
            h.insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        if matches!(self, Refusal::MethodNotAllowed) {
            h.insert(header::ALLOW, header::HeaderValue::from_static("POST, GET"));
        }
        let source = match self {
            Refusal::UnknownSource => "<unknown>",
            _ => name,
        };
        (
            r,
            Outcome::new(source, status, bytes, None, Some(self.reason())),
        )
    }
}

/// What the log line and the metrics record about one request.
pub struct Outcome {
    /// A configured source's name (shared with its [`crate::routes::Source`]), or a bounded
    /// copy of the URL's.
    pub source: Arc<str>,
    pub status: StatusCode,
    pub bytes: usize,
    pub event_id: Option<EventId>,
    pub reason: Option<&'static str>,
}

impl Outcome {
    pub fn new(
        source: &str,
        status: StatusCode,
        bytes: usize,
        event_id: Option<EventId>,
        reason: Option<&'static str>,
    ) -> Outcome {
        // An unknown source name comes from the request: bound it before it reaches a log.
        Outcome::of_source(Arc::from(for_log(source)), status, bytes, event_id, reason)
    }

    /// [`Outcome::new`] for a configured source, named as configured (no copy of the name).
    pub fn of_source(
        source: Arc<str>,
        status: StatusCode,
        bytes: usize,
        event_id: Option<EventId>,
        reason: Option<&'static str>,
    ) -> Outcome {
        Outcome {
            source,
            status,
            bytes,
            event_id,
            reason,
        }
    }
}

pub fn json_response(status: StatusCode, body: serde_json::Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// `{"status": "error", "error": code, "message": ...}`.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Resp {
    json_response(
        status,
        serde_json::json!({"status": "error", "error": code, "message": message.into()}),
    )
}

pub fn with_retry_after(mut r: Resp, secs: u64) -> Resp {
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    r
}

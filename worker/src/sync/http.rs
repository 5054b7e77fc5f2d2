//! The transport every platform client of catalog sync uses, and the one place an API's
//! answer is sorted into success, retry later, credentials refused, and give up.
//!
//! It is the same pooled hyper client over rustls as the alert channels
//! ([`crate::channels::http`]), with a bounded answer size and a deadline on each exchange.
//! [`ApiClient::send_retrying`] retries network errors, 408, 429 and 5xx with the worker's
//! exponential backoff ([`crate::retry::Backoff`]), honouring `Retry-After`.
//!
//! Never: logs or returns a URL's query, a header value or a request body (they carry tokens).
//! Errors name the endpoint by the `what` the caller gives ("Shopify products page").

use crate::channels::http::{exchange, https_client, parse_retry_after, HttpClient, NoAnswer};
use crate::retry::Backoff;
use bytes::Bytes;
use http_body_util::Full;
use std::time::{Duration, SystemTime};

/// One exchange (connect, TLS, request, whole answer) may take this long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer read (a page of 250 products with their variants is well under this).
pub const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;
/// Attempts [`ApiClient::send_retrying`] makes before giving up on a transient failure.
pub const MAX_ATTEMPTS: u32 = 6;

/// Why a call failed. Callers branch on it: `Unauthorized` stops the source's sync until its
/// credentials are fixed; `Transient` is retried; the others fail this sync run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    #[error("{what}: the platform refused the credentials (HTTP {status}); check the source's token or key and its scopes, then run `stockhook-worker sync` again")]
    Unauthorized { what: String, status: u16 },
    #[error("{what}: {reason} (will retry)")]
    Transient {
        what: String,
        reason: String,
        retry_after: Option<Duration>,
    },
    #[error("{what}: HTTP {status}: {body}")]
    Refused {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what}: the answer is not what the API documents: {problem}")]
    Protocol { what: String, problem: String },
    #[error("sync configuration: {0}")]
    Config(String),
}

impl SyncError {
    pub fn is_transient(&self) -> bool {
        matches!(self, SyncError::Transient { .. })
    }
}

/// A successful (2xx) answer.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl ApiResponse {
    /// The body as JSON of type `T`; a mismatch is a [`SyncError::Protocol`].
    pub fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, SyncError> {
        serde_json::from_slice(&self.body).map_err(|e| SyncError::Protocol {
            what: what.into(),
            problem: e.to_string(),
        })
    }
}

/// A pooled HTTP(S) client for the platform APIs; cheap to clone.
#[derive(Clone)]
pub struct ApiClient {
    client: HttpClient,
    timeout: Duration,
}

impl ApiClient {
    pub fn new() -> Result<ApiClient, SyncError> {
        let client = https_client(4)
            .map_err(|e| SyncError::Config(format!("setting up TLS for catalog sync: {e}")))?;
        Ok(ApiClient {
            client,
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// One exchange. `what` names the endpoint in errors, never the URL.
    pub async fn send(
        &self,
        req: http::Request<Full<Bytes>>,
        what: &str,
    ) -> Result<ApiResponse, SyncError> {
        let transient = |reason: String| SyncError::Transient {
            what: what.into(),
            reason,
            retry_after: None,
        };
        let a = match exchange(&self.client, req, MAX_ANSWER_BYTES, self.timeout).await {
            Err(NoAnswer::Timeout) => {
                return Err(transient(format!("no answer within {:?}", self.timeout)))
            }
            Err(NoAnswer::Unreachable(e)) => {
                return Err(transient(format!("could not reach the API: {e}")))
            }
            Ok(a) => a,
        };
        let body = a
            .body
            .map_err(|e| transient(format!("could not reach the API: reading the answer: {e}")))?;
        classify(what, a.status, a.headers, body)
    }

    /// [`ApiClient::send`], retrying transient failures up to [`MAX_ATTEMPTS`] times with
    /// exponential backoff (from `initial`), waiting at least what `Retry-After` asks.
    /// `make` builds the request afresh for each attempt.
    pub async fn send_retrying(
        &self,
        make: impl Fn() -> Result<http::Request<Full<Bytes>>, SyncError>,
        what: &str,
        initial: Duration,
    ) -> Result<ApiResponse, SyncError> {
        let mut backoff = Backoff::new(initial, Duration::from_secs(60));
        let mut attempt = 1;
        loop {
            match self.send(make()?, what).await {
                Err(SyncError::Transient { retry_after, .. }) if attempt < MAX_ATTEMPTS => {
                    let wait = backoff.next_delay().max(retry_after.unwrap_or_default());
                    tracing::info!(what, attempt, wait_ms = wait.as_millis() as u64, "retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// The one place a status is sorted.
fn classify(
    what: &str,
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
) -> Result<ApiResponse, SyncError> {
    match status {
        200..=299 => Ok(ApiResponse {
            status,
            headers,
            body,
        }),
        401 | 403 => Err(SyncError::Unauthorized {
            what: what.into(),
            status,
        }),
        408 | 429 | 500..=599 => Err(SyncError::Transient {
            what: what.into(),
            reason: format!("HTTP {status}"),
            retry_after: headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now())),
        }),
        _ => Err(SyncError::Refused {
            what: what.into(),
            status,
            body: answer_text(&body),
        }),
    }
}

/// The start of an error answer, printable and on one line (APIs answer with short error
/// objects; a token is never echoed by them).
fn answer_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_sort() {
        let h = http::HeaderMap::new();
        assert!(classify("x", 200, h.clone(), Bytes::new()).is_ok());
        assert!(matches!(
            classify("x", 401, h.clone(), Bytes::new()),
            Err(SyncError::Unauthorized { status: 401, .. })
        ));
        for s in [408, 429, 500, 503] {
            assert!(classify("x", s, h.clone(), Bytes::new())
                .unwrap_err()
                .is_transient());
        }
        let mut h2 = http::HeaderMap::new();
        h2.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        match classify("x", 429, h2, Bytes::new()) {
            Err(SyncError::Transient { retry_after, .. }) => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify("x", 404, h, Bytes::from_static(b"not found")),
            Err(SyncError::Refused { status: 404, .. })
        ));
    }
}

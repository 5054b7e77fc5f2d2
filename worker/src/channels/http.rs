//! One HTTP POST for the Slack and webhook channels, and the one place its outcome is sorted
//! into delivered, retry later, and give up.
//!
//! Why it exists: both HTTP channels share a transport (hyper's pooled client over rustls with
//! the webpki roots for https; plain http for loopback and private endpoints), a deadline on the
//! whole exchange, and the same reading of the answer: 2xx is delivered; 429, 408 and 5xx are
//! transient, honouring `Retry-After` (seconds or an HTTP date); every other status is permanent
//! (the endpoint refuses this message and will refuse it again). Connection errors and timeouts
//! are transient.
//!
//! Never: logs or returns the URL (a Slack webhook URL is a credential) or the request body.
//! The answer's body is returned for the channel to explain (Slack answers with short codes such
//! as `invalid_payload`), cut to [`MAX_ANSWER`] bytes.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use stockhook_shared::redact::error_chain;

/// Connecting may take this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole exchange (connect, TLS, request, answer) may take this long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest `Retry-After` honoured; a longer one waits this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How much of an answer's body is kept for the error message.
pub const MAX_ANSWER: usize = 200;

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx; the body (cut).
    Delivered { status: u16, body: String },
    /// 429, 408, 5xx, or no answer: try again, not before `retry_after` when the server said.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Any other status: this message will never be taken.
    Refused { status: u16, body: String },
}

/// A pooled HTTP client; cheap to clone.
#[derive(Clone)]
pub struct Poster {
    client: HttpClient,
    timeout: Duration,
}

impl Poster {
    pub fn new() -> Result<Poster, String> {
        Poster::with_timeout(REQUEST_TIMEOUT)
    }

    pub fn with_timeout(timeout: Duration) -> Result<Poster, String> {
        let client =
            https_client(2).map_err(|e| format!("setting up TLS for the alert channels: {e}"))?;
        Ok(Poster { client, timeout })
    }

    /// POSTs `body` as JSON with `headers` to `url`. `what` names the endpoint in errors
    /// ("Slack channel ops-slack"), never the URL.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
        what: &str,
    ) -> Outcome {
        let mut req = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("stockhook/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = match req.body(Full::new(Bytes::from(body))) {
            Ok(r) => r,
            // The URL was checked at load; a header we build is ASCII. Still: no panic.
            Err(e) => {
                return Outcome::Refused {
                    status: 0,
                    body: format!("cannot build the request to {what}: {e}"),
                }
            }
        };
        // Read a bounded amount of the answer; an endpoint that streams forever is cut off by
        // the deadline around all of it.
        match exchange(&self.client, req, 64 * 1024, self.timeout).await {
            Err(NoAnswer::Timeout) => Outcome::Retry {
                reason: format!("{what} did not answer within {:?}", self.timeout),
                retry_after: None,
            },
            Err(NoAnswer::Unreachable(e)) => Outcome::Retry {
                reason: format!("could not reach {what}: {e}"),
                retry_after: None,
            },
            Ok(a) => {
                let retry_after = a
                    .headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                classify(a.status, retry_after, &a.body.unwrap_or_default())
            }
        }
    }
}

/// The pooled HTTP(S) client the worker's outgoing calls share (alert channels, catalog sync):
/// rustls with the webpki roots for https, plain http for loopback and private endpoints.
pub(crate) fn https_client(max_idle_per_host: usize) -> Result<HttpClient, rustls::Error> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(max_idle_per_host)
        .build(https))
}

/// The worker's outgoing HTTP client (alert channels, catalog sync).
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// What one exchange brought back: the status, the headers, and the body up to the caller's
/// limit (`Err` when it was larger or broke off).
pub(crate) struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Result<Bytes, String>,
}

/// Why an exchange brought nothing back.
pub(crate) enum NoAnswer {
    /// The whole exchange took longer than its deadline.
    Timeout,
    /// Connecting, TLS or the request failed: the error chain (never the URL).
    Unreachable(String),
}

/// One request on `client`, the whole of it (connect, TLS, request, answer up to `limit` bytes)
/// within `timeout`: the one exchange the alert channels and catalog sync make.
pub(crate) async fn exchange(
    client: &HttpClient,
    req: http::Request<Full<Bytes>>,
    limit: usize,
    timeout: Duration,
) -> Result<Answer, NoAnswer> {
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| NoAnswer::Unreachable(error_chain(&e)))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = Limited::new(resp.into_body(), limit)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| e.to_string());
        Ok(Answer {
            status,
            headers,
            body,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(NoAnswer::Timeout))
}

/// The one place a status is sorted into delivered / retry / refused.
pub fn classify(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Outcome {
    let body = answer_text(body);
    match status {
        200..=299 => Outcome::Delivered { status, body },
        408 | 429 | 500..=599 => Outcome::Retry {
            reason: if body.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status} {body}")
            },
            retry_after,
        },
        _ => Outcome::Refused { status, body },
    }
}

/// The start of an answer, printable and on one line.
fn answer_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_ANSWER)]);
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// `Retry-After` as delay-seconds or an HTTP date, at most [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let fmt = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        let at = time::PrimitiveDateTime::parse(v, &fmt).ok()?.assume_utc();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(at.unix_timestamp().try_into().ok()?);
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(d.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_sort_into_three() {
        assert!(matches!(
            classify(200, None, b"ok"),
            Outcome::Delivered { status: 200, ref body } if body == "ok"
        ));
        for s in [408u16, 429, 500, 502, 503] {
            assert!(
                matches!(classify(s, None, b""), Outcome::Retry { .. }),
                "{s}"
            );
        }
        for s in [400u16, 401, 403, 404, 410, 413, 301] {
            assert!(
                matches!(classify(s, None, b"x"), Outcome::Refused { status, .. } if status == s),
                "{s}"
            );
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("999999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn answers_are_cut_and_on_one_line() {
        let long = vec![b'a'; 1000];
        match classify(400, None, &long) {
            Outcome::Refused { body, .. } => assert_eq!(body.len(), MAX_ANSWER),
            o => panic!("{o:?}"),
        }
        match classify(400, None, b"invalid_payload\r\n") {
            Outcome::Refused { body, .. } => assert_eq!(body, "invalid_payload"),
            o => panic!("{o:?}"),
        }
    }
}

//! The HTTP request path: route, limit, verify, append, answer.
//!
//! Invariant: a 2xx for a webhook is sent only after the queue's append returned, and the append
//! returns only once the event is flushed and fdatasync'd. This module never parses the body as a
//! platform payload and never logs it: one log line per request with source, status, bytes,
//! latency and event id ([`crate::access_log`]).
//!
//! Answers (DESIGN.md "What each bad input gets"): 404 unknown source, 401 with a reason, 413 /
//! 408 (connection closed), 429 + Retry-After, 200 `duplicate`, 503 + Retry-After when the event
//! cannot be stored; 503 `key_unavailable` + Retry-After when an eBay public key cannot be
//! fetched (eBay delivers again later).

use crate::ebay_keys::KeyCache;
use crate::metrics::Metrics;
use crate::ratelimit::TokenBucket;
use crate::refusal::{error, json_response, with_retry_after, Outcome, Refusal, Resp};
use crate::reload::SourceTable;
use crate::schemes::{self, Incoming, Verifier};
use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use serde_json::json;
use std::collections::HashMap;
use std::future::Future as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use stockhook_shared::config::{Config, Platform, SchemeKind, SourceConfig};
use stockhook_shared::envelope::{delivery_id_of, EventId, KEPT_HEADERS};
use stockhook_shared::queue::{now_ms, AppendOutcome, EventSink, NewEvent};
use stockhook_shared::secret::Secret;

/// One configured source, ready to serve.
pub struct Source {
    /// Shared with every event and log line of the source (no copy per request).
    pub name: Arc<str>,
    pub platform: Platform,
    pub scheme: SchemeKind,
    pub verifier: Box<dyn Verifier>,
    pub limiter: Option<TokenBucket>,
    /// eBay endpoint validation: the verification token and the registered endpoint URL.
    pub challenge: Option<(Secret, String)>,
    /// eBay with `client_id` + client secret: the key cache `verifier` looks keys up in; the
    /// request's kid is fetched into it before verifying.
    pub ebay_keys: Option<Arc<KeyCache>>,
}

/// Everything a request needs; shared by all connections.
pub struct AppState<S: EventSink> {
    /// Enabled sources, and those switched off with the reason (answered 503 so the platform
    /// retries); replaced whole on SIGHUP.
    pub sources: SourceTable,
    pub sink: S,
    pub data_dir: PathBuf,
    pub metrics: Metrics,
    /// Whether the webhook listener also answers `/metrics`, `/healthz` and `/readyz`; false
    /// when `receiver.metrics_listen` serves them on their own address.
    pub serve_ops: bool,
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    /// Seconds since the epoch; injected so tests can pin time.
    pub clock: fn() -> i64,
}

pub fn system_clock() -> i64 {
    now_ms() / 1000
}

/// Enabled sources by name, and disabled ones with the reason.
pub type Sources = (HashMap<String, Source>, HashMap<String, String>);

/// Builds the sources from config; a source that cannot be built is a config error naming it.
pub fn build_sources(config: &Config) -> Result<Sources, String> {
    let mut sources = HashMap::new();
    let mut disabled = HashMap::new();
    for s in &config.sources {
        if let Some(why) = &s.disabled {
            disabled.insert(s.name.clone(), why.clone());
            continue;
        }
        sources.insert(s.name.clone(), build_source(s)?);
    }
    Ok((sources, disabled))
}

fn build_source(s: &SourceConfig) -> Result<Source, String> {
    let ebay_keys = match s.scheme {
        SchemeKind::Ebay => KeyCache::from_source(s)?.map(Arc::new),
        _ => None,
    };
    if ebay_keys.is_none() && s.scheme == SchemeKind::Ebay && s.client_id.is_some() {
        tracing::warn!(source = %s.name, "client_id is set but its client secret is not: eBay keys are not fetched, only [sources.public_keys] verify");
    }
    let verifier = schemes::build(s, ebay_keys.clone())?;
    let challenge = match (&s.verification_token, &s.endpoint_url) {
        (Some(t), Some(u)) if s.scheme == SchemeKind::Ebay => Some((t.clone(), u.clone())),
        _ => None,
    };
    Ok(Source {
        name: Arc::from(s.name.as_str()),
        platform: s.platform,
        scheme: s.scheme,
        verifier,
        limiter: s
            .rate_limit
            .map(|r| TokenBucket::new(r.per_second, r.burst)),
        challenge,
        ebay_keys,
    })
}

/// `200 {"status":"accepted"|"duplicate","id":"evt_..."}`, the answer to nearly every request:
/// written directly, the same bytes `json_response` would produce without building a `Value`.
fn stored_response(status: &'static str, id: EventId) -> Resp {
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(br#"{"status":""#);
    body.extend_from_slice(status.as_bytes());
    body.extend_from_slice(br#"","id":""#);
    body.extend_from_slice(&id.text());
    body.extend_from_slice(br#""}"#);
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// The service function: every request comes through here.
pub async fn handle<S: EventSink, B>(
    state: Arc<AppState<S>>,
    req: Request<B>,
) -> Result<Resp, std::convert::Infallible>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let (resp, outcome) = match (&parts.method, path) {
        (&Method::GET, "/healthz" | "/readyz" | "/metrics") if state.serve_ops => {
            (ops(&state, path).await, None)
        }
        (m, p) if p.starts_with("/webhooks/") => {
            let name = &p["/webhooks/".len()..];
            let (r, o) = if m == Method::POST {
                webhook(&state, name, &parts.headers, body).await
            } else if m == Method::GET {
                challenge(&state, name, parts.uri.query())
            } else {
                Refusal::MethodNotAllowed.answer(name, 0)
            };
            (r, Some(o))
        }
        _ => (
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                "webhooks go to POST /webhooks/<source>; also GET /healthz, /readyz, /metrics",
            ),
            None,
        ),
    };
    if let Some(mut o) = outcome {
        // Only configured names become labels and log fields (a 405 or a disabled source's 503
        // carries the name from the URL until here). A 2xx is always for a configured source,
        // named as configured.
        if !o.status.is_success() && state.sources.current().label(&o.source) == "<unknown>" {
            o.source = Arc::from("<unknown>");
        }
        let elapsed = started.elapsed();
        state.metrics.request_seconds.observe(elapsed.as_secs_f64());
        state.metrics.requests.inc(&[&o.source, o.status.as_str()]);
        crate::access_log::request(&o, elapsed);
    }
    Ok(resp)
}

/// The body, read whole (at most `max_body_bytes`) within `body_timeout`. The timer is armed
/// only when the body is not all there yet: hyper usually has it in hand already (it came with
/// the headers), and then the first poll completes without a timer entry to register and cancel.
async fn read_body<S: EventSink, B>(
    state: &AppState<S>,
    name: &str,
    body: B,
) -> Result<Bytes, (Resp, Outcome)>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let collect = Limited::new(body, state.max_body_bytes).collect();
    tokio::pin!(collect);
    let first = std::future::poll_fn(|cx| match collect.as_mut().poll(cx) {
        Poll::Ready(r) => Poll::Ready(Some(r)),
        Poll::Pending => Poll::Ready(None),
    })
    .await;
    let read = match first {
        Some(r) => r,
        None => match tokio::time::timeout(state.body_timeout, collect).await {
            Ok(r) => r,
            Err(_) => return Err(Refusal::BodyTimeout(state.body_timeout).answer(name, 0)),
        },
    };
    match read {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(Refusal::TooLarge {
            limit: state.max_body_bytes,
        }
        .answer(name, state.max_body_bytes + 1)),
        Err(_) => Err(Refusal::BadBody.answer(name, 0)),
    }
}

async fn webhook<S: EventSink, B>(
    state: &AppState<S>,
    name: &str,
    headers: &HeaderMap,
    body: B,
) -> (Resp, Outcome)
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let table = state.sources.current();
    let Some(source) = table.enabled.get(name) else {
        let r = match table.disabled.get(name) {
            Some(why) => Refusal::Disabled { why: why.clone() },
            None => Refusal::UnknownSource,
        };
        return r.answer(name, 0);
    };
    if let Some(limiter) = &source.limiter {
        if let Err(retry_after) = limiter.take(Instant::now()) {
            return Refusal::RateLimited { retry_after }.answer(name, 0);
        }
    }
    // Refuse what cannot be stored before reading the body.
    if let Err(e) = state.sink.ready() {
        return Refusal::NotStored(e).answer(name, 0);
    }
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > state.max_body_bytes as u64 {
            return Refusal::TooLarge {
                limit: state.max_body_bytes,
            }
            .answer(name, len as usize);
        }
    }
    let body = match read_body(state, name, body).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    let bytes = body.len();
    if is_woocommerce_ping(source, headers, &body) {
        let r = json_response(StatusCode::OK, json!({"status": "ping"}));
        return (
            r,
            Outcome::new(name, StatusCode::OK, bytes, None, Some("ping")),
        );
    }
    if let Some(cache) = source.ebay_keys.as_ref().filter(|_| !body.is_empty()) {
        if let Some(kid) = schemes::ebay::signature_kid(headers) {
            if let Err(error) = cache.ensure(&kid).await {
                let kid = schemes::for_log(&kid);
                return Refusal::KeyUnavailable { kid, error }.answer(name, bytes);
            }
        }
    }
    let now_unix = (state.clock)();
    if let Err(e) = source.verifier.verify(&Incoming {
        headers,
        body: &body,
        now_unix,
    }) {
        state.metrics.verify_failures.inc(&[name, e.code()]);
        return Refusal::Unverified(e).answer(name, bytes);
    }
    let kept = kept_headers(headers);
    let dedup_key = delivery_id_of(|n| headers.get(n).and_then(|v| v.to_str().ok()))
        .map(|d| format!("{}\0{d}", source.name));
    let ev = NewEvent {
        source: source.name.clone(),
        platform: source.platform,
        received_at_ms: now_ms(),
        headers: kept,
        body,
        dedup_key,
    };
    let t = Instant::now();
    let result = state.sink.append(ev).await;
    state
        .metrics
        .append_seconds
        .observe(t.elapsed().as_secs_f64());
    match result {
        Ok(AppendOutcome::Accepted(id)) => {
            state
                .metrics
                .last_event
                .set(&[&source.name], now_ms() as f64 / 1000.0);
            (
                stored_response("accepted", id),
                Outcome::of_source(source.name.clone(), StatusCode::OK, bytes, Some(id), None),
            )
        }
        Ok(AppendOutcome::Duplicate(id)) => (
            stored_response("duplicate", id),
            Outcome::of_source(
                source.name.clone(),
                StatusCode::OK,
                bytes,
                Some(id),
                Some("duplicate"),
            ),
        ),
        Err(e) => Refusal::NotStored(e).answer(name, bytes),
    }
}

/// The headers of [`KEPT_HEADERS`] the request carries, in that order, each with its first value
/// (cut to 512 bytes). One pass over the request's headers (about ten), not a lookup per kept
/// name (25, each hashing the name): this runs on every request. The values are copied into one
/// buffer the pairs share, not one allocation per name and value.
fn kept_headers(h: &HeaderMap) -> Vec<(&'static str, Bytes)> {
    // Per kept name: unseen, or the first value's text (None when that value is not text).
    let mut first: [Option<Option<&str>>; KEPT_HEADERS.len()] = [None; KEPT_HEADERS.len()];
    for (name, value) in h {
        if let Some(i) = KEPT_HEADERS.iter().position(|k| *k == name.as_str()) {
            first[i].get_or_insert_with(|| value.to_str().ok());
        }
    }
    // `to_str` accepts visible ASCII only: any byte index is a char boundary.
    let values = first.map(|v| v.flatten().map(|v| &v[..v.len().min(512)]));
    let mut text = Vec::with_capacity(values.iter().flatten().map(|v| v.len()).sum());
    for v in values.iter().flatten() {
        text.extend_from_slice(v.as_bytes());
    }
    let text = Bytes::from(text);
    let mut at = 0;
    KEPT_HEADERS
        .iter()
        .zip(values)
        .filter_map(|(name, v)| {
            let v = text.slice(at..at + v?.len());
            at += v.len();
            Some((*name, v))
        })
        .collect()
}

/// WooCommerce pings a new webhook with an unsigned form body `webhook_id=<n>` and disables it
/// unless it gets a 2xx. Answered 200, stored nowhere.
fn is_woocommerce_ping(source: &Source, h: &HeaderMap, body: &[u8]) -> bool {
    source.scheme == SchemeKind::HmacSha256
        && !h.contains_key("x-wc-webhook-signature")
        && body.len() < 64
        && body
            .strip_prefix(b"webhook_id=")
            .is_some_and(|rest| !rest.is_empty() && rest.iter().all(u8::is_ascii_digit))
}

/// eBay's endpoint validation: `GET /webhooks/<source>?challenge_code=...`.
fn challenge<S: EventSink>(
    state: &AppState<S>,
    name: &str,
    query: Option<&str>,
) -> (Resp, Outcome) {
    let code = query.and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "challenge_code")
            .map(|(_, v)| v.to_string())
    });
    let table = state.sources.current();
    let Some(source) = table.enabled.get(name) else {
        return Refusal::UnknownSource.answer(name, 0);
    };
    match (code, &source.challenge) {
        (Some(code), Some((token, endpoint))) => {
            let answer = schemes::ebay::challenge_response(&code, token.expose(), endpoint);
            (
                json_response(StatusCode::OK, json!({"challengeResponse": answer})),
                Outcome::new(name, StatusCode::OK, 0, None, Some("challenge")),
            )
        }
        (None, _) => Refusal::MethodNotAllowed.answer(name, 0),
        (Some(_), None) => Refusal::NoChallenge.answer(name, 0),
    }
}

/// `/healthz`, `/readyz` and `/metrics` (404 for any other path): on the webhook listener, or
/// alone on `receiver.metrics_listen`.
pub async fn ops<S: EventSink>(state: &AppState<S>, path: &str) -> Resp {
    match path {
        "/healthz" => healthz(state).await,
        "/readyz" => readyz(state),
        "/metrics" => {
            let q = state.sink.stats().await.unwrap_or_default();
            let mut r = Response::new(Full::new(Bytes::from(state.metrics.render(&q))));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "this address serves GET /metrics, /healthz and /readyz only",
        ),
    }
}

async fn healthz<S: EventSink>(state: &AppState<S>) -> Resp {
    let q = state.sink.stats().await.unwrap_or_default();
    let last = q.last_event_at_ms.and_then(|ms| {
        time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
    });
    json_response(
        StatusCode::OK,
        json!({
            "status": "ok",
            "queue": {"pending": q.pending, "leased": q.leased, "dead": q.dead, "disk_bytes": q.disk_bytes},
            "last_event_at": last,
            "disk_free_bytes": stockhook_shared::queue::sled_store::free_bytes(&state.data_dir),
        }),
    )
}

fn readyz<S: EventSink>(state: &AppState<S>) -> Resp {
    match state.sink.ready() {
        Ok(()) => json_response(StatusCode::OK, json!({"status": "ready"})),
        Err(e) => with_retry_after(
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "not_ready", "reason": e.to_string()}),
            ),
            30,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn kept_headers_are_the_known_names_in_their_order_first_value_cut_to_512() {
        let mut h = HeaderMap::new();
        h.insert("x-shopify-topic", HeaderValue::from_static("orders/create"));
        h.insert("authorization", HeaderValue::from_static("Bearer secret"));
        h.append("content-type", HeaderValue::from_static("application/json"));
        h.append("content-type", HeaderValue::from_static("text/plain"));
        let long = "d".repeat(600);
        h.insert(
            "x-shopify-shop-domain",
            HeaderValue::from_str(&long).unwrap(),
        );
        h.insert(
            "x-shopify-webhook-id",
            HeaderValue::from_bytes(b"not text \xff").unwrap(),
        );
        let kept = kept_headers(&h);
        let text: Vec<(&str, &[u8])> = kept.iter().map(|(k, v)| (*k, &v[..])).collect();
        assert_eq!(
            text,
            [
                ("content-type", &b"application/json"[..]),
                ("x-shopify-topic", b"orders/create"),
                ("x-shopify-shop-domain", &long.as_bytes()[..512]),
            ]
        );
        assert!(kept_headers(&HeaderMap::new()).is_empty());
    }
}

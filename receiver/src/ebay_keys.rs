//! eBay public keys by kid: the pinned ones from `[sources.public_keys]`, else fetched from eBay
//! and cached for an hour.
//!
//! Why: eBay signs each notification with the key named by the `kid` of `X-EBAY-SIGNATURE`, and
//! serves the public key for a kid at `GET <api>/commerce/notification/v1/public_key/{kid}`
//! behind an OAuth client-credentials token (`POST <api>/identity/v1/oauth2/token`, Basic auth
//! with the app's client_id and client secret, scope `https://api.ebay.com/oauth/api_scope`).
//! eBay recommends caching a key for about an hour; keys rotate by kid.
//!
//! Contract:
//! * [`KeyCache`] is the eBay verifier's [`KeyStore`]: the synchronous lookup answers the pinned
//!   (static) keys first, then the fetched ones. The route awaits [`KeyCache::ensure`] with the
//!   request's kid *before* verifying, so the sync verify never touches the network;
//! * `ensure` fetches when the kid is neither pinned nor fetched within the last hour
//!   ([`KEY_TTL`]). It is single-flight per kid (a burst of N requests for a new kid makes one
//!   token request at most and one key request), reuses the OAuth token until shortly before
//!   its `expires_in`, and bounds the whole fetch by [`FETCH_TIMEOUT`];
//! * a failure is remembered for [`FAILURE_HOLD`] and answered from memory meanwhile (so the
//!   requests waiting on a failed fetch, and a flood with one bad kid, do not fetch again); when a
//!   refresh of a key that was fetched before fails transiently (timeout, connection, 5xx), the
//!   previous key keeps verifying for up to [`MAX_STALE`] and a warning is logged; a 404 drops it;
//! * at most [`MAX_KEYS`] fetched kids are kept (the oldest goes first), and fetches for kids
//!   never seen before are rate-limited (a forged header with random kids cannot make the
//!   receiver hammer eBay's API, which rate-limits the app's keyset);
//! * a kid that cannot be one of eBay's (not 1 to 128 of `A-Z a-z 0-9 - _ .`) is never fetched
//!   (it would end up in a URL path): `ensure` returns `Ok` and verification then answers
//!   `unknown_key`.
//!
//! Must never: put the client secret or a token in an error, a log line or a `Debug` output
//! (errors carry statuses and kids only), follow a plain-http URL that is not the loopback
//! address (tests only), or block the sync `public_key` on anything but a short mutex.

use crate::ratelimit::TokenBucket;
use crate::schemes::ebay::{parse_public_key, KeyStore, StaticKeys};
use crate::schemes::{b64_encode, for_log, src};
use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use p256::ecdsa::VerifyingKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use stockhook_shared::config::SourceConfig;
use stockhook_shared::secret::Secret;

/// eBay's production API host; `https://api.sandbox.ebay.com` for a sandbox keyset.
pub const DEFAULT_API_URL: &str = "https://api.ebay.com";
/// How long a fetched key is used before it is fetched again.
pub const KEY_TTL: Duration = Duration::from_secs(3600);
/// Bound on one fetch (token and key together, connection set-up included).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Fetched kids kept at most; past it the oldest is dropped.
pub const MAX_KEYS: usize = 64;
/// How long a failed fetch is answered from memory before the next attempt.
pub const FAILURE_HOLD: Duration = Duration::from_secs(10);
/// How long a key that was fetched before keeps verifying while its refresh fails transiently.
pub const MAX_STALE: Duration = Duration::from_secs(24 * 3600);
/// A token is renewed this long before eBay says it expires (at most half its lifetime).
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// Largest response body read from eBay (the key answer is ~250 bytes).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// The client-credentials request body (form-encoded; the scope eBay documents for
/// getPublicKey, the same on sandbox).
const TOKEN_FORM: &str =
    "grant_type=client_credentials&scope=https%3A%2F%2Fapi.ebay.com%2Foauth%2Fapi_scope";
/// Fetches of kids never seen before: a burst of this many, then one per 5 s.
const NEW_KID_BURST: u32 = 20;
const NEW_KID_PER_SECOND: f64 = 0.2;

/// The clock the cache reads; injected so tests can move time.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Why a key could not be had. Carries statuses, kids and transport errors, never a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// eBay answered 404 for the kid: no such key (or a forged kid).
    #[error("eBay has no public key with kid {kid} (getPublicKey answered 404)")]
    UnknownKid { kid: String },
    /// The token endpoint refused the app's credentials.
    #[error("eBay's OAuth token endpoint refused the client credentials (HTTP {status}): check client_id and the secret in client_secret_env")]
    Credentials { status: u16 },
    /// Any other unexpected HTTP status.
    #[error("{what} answered HTTP {status}")]
    Status { what: String, status: u16 },
    #[error("fetching eBay's public key for kid {kid} took longer than {}s", FETCH_TIMEOUT.as_secs())]
    Timeout { kid: String },
    /// Connection, TLS or protocol failure.
    #[error("{what}: {reason}")]
    Transport { what: String, reason: String },
    /// A 200 whose body is not what eBay documents.
    #[error("{what}: unexpected answer: {reason}")]
    BadResponse { what: String, reason: String },
    #[error("too many public-key fetches for new kids; kid {kid} not fetched, retry later")]
    RateLimited { kid: String },
}

impl FetchError {
    /// Worth keeping a previously fetched key for: the network or eBay hiccuped; the key itself
    /// was not said to be gone.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::UnknownKid { .. } | FetchError::Credentials { .. } => false,
            FetchError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => true,
        }
    }
}

/// An OAuth application token and when to stop using it.
struct Token {
    value: Secret,
    renew_at: Instant,
}

#[derive(Default)]
struct Fetched {
    keys: HashMap<String, (VerifyingKey, Instant)>,
    failures: HashMap<String, (FetchError, Instant)>,
}

/// What is known about a kid right now.
enum Lookup {
    /// Pinned, fetched within the TTL, or stale but covering a recent transient failure.
    Usable,
    /// Failed within FAILURE_HOLD, and nothing to fall back on.
    Failed(FetchError),
    /// Fetched before (older than the TTL).
    Stale,
    Missing,
}

/// Pinned keys plus keys fetched from eBay by kid; see the module docs.
pub struct KeyCache {
    source: String,
    pinned: StaticKeys,
    api: String,
    client_id: String,
    client_secret: Secret,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    clock: Clock,
    fetched: Mutex<Fetched>,
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    token: tokio::sync::Mutex<Option<Token>>,
    new_kids: TokenBucket,
}

impl KeyCache {
    /// The cache for an `ebay` source that has `client_id` and a resolved client secret;
    /// `Ok(None)` when it has not (it then verifies with its pinned keys only). `Err` is a
    /// configuration problem naming the key.
    pub fn from_source(source: &SourceConfig) -> Result<Option<KeyCache>, String> {
        let (Some(client_id), Some(client_secret)) = (&source.client_id, &source.client_secret)
        else {
            return Ok(None);
        };
        let client_id = client_id.trim();
        if client_id.is_empty() {
            return Err(format!("{}: client_id is empty", src(source)));
        }
        let pinned = StaticKeys::from_pems(&source.public_keys)
            .map_err(|e| format!("{}: {e}", src(source)))?;
        let api = api_base(source.ebay_api_url.as_deref())
            .map_err(|e| format!("{}: ebay_api_url: {e}", src(source)))?;
        let http = http_client().map_err(|e| format!("{}: {e}", src(source)))?;
        Ok(Some(KeyCache {
            source: source.name.clone(),
            pinned,
            api,
            client_id: client_id.to_string(),
            client_secret: client_secret.clone(),
            http,
            clock: Arc::new(Instant::now),
            fetched: Mutex::new(Fetched::default()),
            flights: Mutex::new(HashMap::new()),
            token: tokio::sync::Mutex::new(None),
            new_kids: TokenBucket::new(NEW_KID_PER_SECOND, NEW_KID_BURST),
        }))
    }

    /// Replaces the clock (tests move time with it).
    pub fn with_clock(mut self, clock: Clock) -> KeyCache {
        self.clock = clock;
        self
    }

    /// The API base URL this cache fetches from (no trailing slash).
    pub fn api_url(&self) -> &str {
        &self.api
    }

    fn now(&self) -> Instant {
        (self.clock)()
    }

    fn state(&self) -> MutexGuard<'_, Fetched> {
        self.fetched.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lookup(&self, kid: &str, now: Instant) -> Lookup {
        if self.pinned.public_key(kid).is_some() {
            return Lookup::Usable;
        }
        let st = self.state();
        let key_age = st
            .keys
            .get(kid)
            .map(|(_, at)| now.saturating_duration_since(*at));
        if key_age.is_some_and(|age| age < KEY_TTL) {
            return Lookup::Usable;
        }
        if let Some((e, at)) = st.failures.get(kid) {
            if now.saturating_duration_since(*at) < FAILURE_HOLD {
                return match key_age {
                    Some(age) if e.is_transient() && age < MAX_STALE => Lookup::Usable,
                    _ => Lookup::Failed(e.clone()),
                };
            }
        }
        match key_age {
            Some(_) => Lookup::Stale,
            None => Lookup::Missing,
        }
    }

    /// True when `kid` verifies without a fetch: pinned, or fetched within the hour.
    pub fn is_fresh(&self, kid: &str) -> bool {
        matches!(self.lookup(kid, self.now()), Lookup::Usable)
    }

    /// Makes sure the key for `kid` is here, fetching it (token first when needed) unless it is
    /// pinned or was fetched within the hour. `Err`: it could not be fetched; the request should
    /// be answered 503 so eBay delivers it again. See the module docs for what is single-flight,
    /// remembered and rate-limited.
    pub async fn ensure(&self, kid: &str) -> Result<(), FetchError> {
        if !plausible_kid(kid) {
            return Ok(());
        }
        match self.lookup(kid, self.now()) {
            Lookup::Usable => return Ok(()),
            Lookup::Failed(e) => return Err(e),
            Lookup::Stale | Lookup::Missing => {}
        }
        let flight = {
            let mut f = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            f.entry(kid.to_string()).or_default().clone()
        };
        let result = {
            let _leader = flight.lock().await;
            self.fetch_unless_done(kid).await
        };
        {
            let mut f = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            // Ours and the map's: nobody else is waiting on this kid.
            if Arc::strong_count(&flight) == 2 {
                f.remove(kid);
            }
        }
        result
    }

    /// Under the kid's flight lock: someone before us may have settled it already.
    async fn fetch_unless_done(&self, kid: &str) -> Result<(), FetchError> {
        let now = self.now();
        match self.lookup(kid, now) {
            Lookup::Usable => return Ok(()),
            Lookup::Failed(e) => return Err(e),
            Lookup::Stale => {}
            Lookup::Missing => {
                if self.new_kids.take(now).is_err() {
                    return Err(FetchError::RateLimited { kid: for_log(kid) });
                }
            }
        }
        let result = match tokio::time::timeout(FETCH_TIMEOUT, self.fetch(kid)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout { kid: for_log(kid) }),
        };
        let now = self.now();
        let mut st = self.state();
        match result {
            Ok(key) => {
                st.failures.remove(kid);
                if !st.keys.contains_key(kid) && st.keys.len() >= MAX_KEYS {
                    if let Some(oldest) = oldest(&st.keys) {
                        st.keys.remove(&oldest);
                    }
                }
                st.keys.insert(kid.to_string(), (key, now));
                tracing::info!(source = %self.source, kid = %for_log(kid), "fetched eBay public key");
                Ok(())
            }
            Err(e) => {
                let stale_ok = e.is_transient()
                    && st
                        .keys
                        .get(kid)
                        .is_some_and(|(_, at)| now.saturating_duration_since(*at) < MAX_STALE);
                if !stale_ok {
                    st.keys.remove(kid);
                }
                st.failures
                    .retain(|_, (_, at)| now.saturating_duration_since(*at) < FAILURE_HOLD);
                if st.failures.len() >= MAX_KEYS {
                    if let Some(oldest) = oldest(&st.failures) {
                        st.failures.remove(&oldest);
                    }
                }
                st.failures.insert(kid.to_string(), (e.clone(), now));
                if stale_ok {
                    tracing::warn!(source = %self.source, kid = %for_log(kid), error = %e, "refreshing eBay public key failed; still using the one fetched before");
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Token (cached or new), then the key; a 401 on the key retries once with a new token.
    async fn fetch(&self, kid: &str) -> Result<VerifyingKey, FetchError> {
        let token = self.token(false).await?;
        match self.fetch_key(kid, &token).await {
            Err(FetchError::Status { status: 401, .. }) => {
                let token = self.token(true).await?;
                self.fetch_key(kid, &token).await
            }
            other => other,
        }
    }

    /// The application token, fetched when there is none, it is due for renewal, or `renew`.
    async fn token(&self, renew: bool) -> Result<Secret, FetchError> {
        let mut slot = self.token.lock().await;
        let now = self.now();
        if let Some(t) = slot.as_ref() {
            if !renew && now < t.renew_at {
                return Ok(t.value.clone());
            }
        }
        *slot = None;
        let what = "eBay's OAuth token endpoint";
        let basic =
            b64_encode(format!("{}:{}", self.client_id, self.client_secret.expose()).as_bytes());
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("{}/identity/v1/oauth2/token", self.api))
            .header(header::AUTHORIZATION, format!("Basic {basic}"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from_static(TOKEN_FORM.as_bytes())))
            .map_err(|e| bad(what, format!("cannot build the request: {e}")))?;
        let (status, body) = self.send(req, what).await?;
        match status {
            StatusCode::OK => {}
            StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(FetchError::Credentials {
                    status: status.as_u16(),
                })
            }
            s => {
                return Err(FetchError::Status {
                    what: what.to_string(),
                    status: s.as_u16(),
                })
            }
        }
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            access_token: String,
            expires_in: u64,
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
            bad(
                what,
                "not a JSON object with access_token and expires_in".into(),
            )
        })?;
        if answer.access_token.is_empty() {
            return Err(bad(what, "empty access_token".into()));
        }
        let lifetime = Duration::from_secs(answer.expires_in);
        let renew_at = now + lifetime.saturating_sub(TOKEN_MARGIN.min(lifetime / 2));
        let value = Secret::new(answer.access_token);
        *slot = Some(Token {
            value: value.clone(),
            renew_at,
        });
        Ok(value)
    }

    async fn fetch_key(&self, kid: &str, token: &Secret) -> Result<VerifyingKey, FetchError> {
        let what = format!("eBay's getPublicKey for kid {}", for_log(kid));
        let req = Request::builder()
            .method(Method::GET)
            .uri(format!(
                "{}/commerce/notification/v1/public_key/{kid}",
                self.api
            ))
            .header(header::AUTHORIZATION, format!("Bearer {}", token.expose()))
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| bad(&what, format!("cannot build the request: {e}")))?;
        let (status, body) = self.send(req, &what).await?;
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(FetchError::UnknownKid { kid: for_log(kid) }),
            s => {
                return Err(FetchError::Status {
                    what,
                    status: s.as_u16(),
                })
            }
        }
        #[derive(serde::Deserialize)]
        struct KeyAnswer {
            key: String,
            #[serde(default)]
            algorithm: Option<String>,
            #[serde(default)]
            digest: Option<String>,
        }
        let answer: KeyAnswer = serde_json::from_slice(&body)
            .map_err(|_| bad(&what, "not a JSON object with a key".into()))?;
        if let Some(a) = answer.algorithm.as_deref() {
            if !a.eq_ignore_ascii_case("ecdsa") {
                return Err(bad(
                    &what,
                    format!("algorithm {:?}, expected ECDSA", for_log(a)),
                ));
            }
        }
        if let Some(d) = answer.digest.as_deref() {
            if !d.eq_ignore_ascii_case("sha1") {
                return Err(bad(
                    &what,
                    format!("digest {:?}, expected SHA1", for_log(d)),
                ));
            }
        }
        parse_public_key(&answer.key).map_err(|e| bad(&what, e))
    }

    /// One request, its body read up to MAX_RESPONSE_BYTES. (The caller bounds the time.)
    async fn send(
        &self,
        req: Request<Full<Bytes>>,
        what: &str,
    ) -> Result<(StatusCode, Bytes), FetchError> {
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| FetchError::Transport {
                what: what.to_string(),
                reason: error_chain(&e),
            })?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| FetchError::Transport {
                what: what.to_string(),
                reason: format!("reading the answer: {e}"),
            })?
            .to_bytes();
        Ok((status, body))
    }
}

impl KeyStore for KeyCache {
    /// Pinned first, then fetched (whatever its age: `ensure` decides when to refetch).
    fn public_key(&self, kid: &str) -> Option<VerifyingKey> {
        self.pinned
            .public_key(kid)
            .or_else(|| self.state().keys.get(kid).map(|(k, _)| *k))
    }
}

fn bad(what: &str, reason: String) -> FetchError {
    FetchError::BadResponse {
        what: what.to_string(),
        reason,
    }
}

fn oldest<V>(map: &HashMap<String, (V, Instant)>) -> Option<String> {
    map.iter()
        .min_by_key(|(_, (_, at))| *at)
        .map(|(k, _)| k.clone())
}

/// eBay's kids are UUIDs; anything outside this cannot be one and never reaches a URL.
fn plausible_kid(kid: &str) -> bool {
    (1..=128).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The error and its sources, `a: b: c` (hyper's own message alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// `ebay_api_url` (or the default), checked: `https://host[:port][/prefix]`, or `http://` to the
/// loopback address only (tests; the client secret must not cross a network in clear).
fn api_base(url: Option<&str>) -> Result<String, String> {
    let text = url.unwrap_or(DEFAULT_API_URL).trim().trim_end_matches('/');
    let uri: Uri = text
        .parse()
        .map_err(|_| format!("{text:?} is not a URL (e.g. \"{DEFAULT_API_URL}\")"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("{text:?} has no host (e.g. \"{DEFAULT_API_URL}\")"))?;
    if uri.query().is_some() {
        return Err(format!("{text:?}: a base URL takes no query"));
    }
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1") => {}
        _ => {
            return Err(format!(
                "{text:?} must start with https:// (\"{DEFAULT_API_URL}\", or \
                 \"https://api.sandbox.ebay.com\" for a sandbox keyset)"
            ))
        }
    }
    Ok(text.to_string())
}

/// hyper-util's pooled client over rustls (ring, webpki roots), http/1.1; plain http too, which
/// [`api_base`] allows only to the loopback address.
fn http_client() -> Result<Client<HttpsConnector<HttpConnector>, Full<Bytes>>, String> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(FETCH_TIMEOUT));
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
        .map_err(|e| format!("setting up TLS for eBay's API: {e}"))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(2)
        .build(https))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schemes::ebay::Ebay;
    use crate::schemes::test_support::*;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

    const KID: &str = "9936261a-7d7b-4621-a0f1-96ccb428af49";
    const CLIENT_ID: &str = "Test-App-PRD-0123";
    const CLIENT_SECRET: &str = "PRD-test-client-secret";

    /// A stand-in for eBay's two endpoints on 127.0.0.1, counting requests.
    #[derive(Default)]
    struct FakeEbay {
        token_hits: AtomicUsize,
        key_hits: AtomicUsize,
        /// The key endpoint answers 500.
        fail_keys: AtomicBool,
        /// The token endpoint answers 401.
        bad_credentials: AtomicBool,
        /// Delay before the key endpoint answers (ms), so concurrent callers overlap.
        key_delay_ms: AtomicU64,
        expires_in: AtomicU64,
        /// Tokens handed out so far (the key endpoint accepts only the latest).
        tokens: AtomicUsize,
        /// Every request's Authorization header, to check what was sent.
        auth_seen: Mutex<Vec<String>>,
    }

    impl FakeEbay {
        async fn start() -> (Arc<FakeEbay>, String) {
            let fake = Arc::new(FakeEbay::default());
            fake.expires_in.store(7200, Ordering::SeqCst);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let f = fake.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let f = f.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| {
                            let f = f.clone();
                            async move { Ok::<_, std::convert::Infallible>(f.answer(req).await) }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
            (fake, format!("http://{addr}"))
        }

        async fn answer(&self, req: Request<hyper::body::Incoming>) -> http::Response<Full<Bytes>> {
            let respond = |status: u16, body: String| {
                let mut r = http::Response::new(Full::new(Bytes::from(body)));
                *r.status_mut() = StatusCode::from_u16(status).unwrap();
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                r
            };
            let auth = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            self.auth_seen.lock().unwrap().push(auth.clone());
            let path = req.uri().path().to_string();
            let method = req.method().clone();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            if method == Method::POST && path == "/identity/v1/oauth2/token" {
                self.token_hits.fetch_add(1, Ordering::SeqCst);
                let want = format!(
                    "Basic {}",
                    b64_encode(format!("{CLIENT_ID}:{CLIENT_SECRET}").as_bytes())
                );
                if self.bad_credentials.load(Ordering::SeqCst) || auth != want {
                    return respond(401, r#"{"error":"invalid_client","error_description":"client authentication failed"}"#.into());
                }
                assert_eq!(&body[..], TOKEN_FORM.as_bytes());
                let n = self.tokens.fetch_add(1, Ordering::SeqCst) + 1;
                return respond(
                    200,
                    serde_json::json!({
                        "access_token": format!("v^1.1#token-{n}"),
                        "expires_in": self.expires_in.load(Ordering::SeqCst),
                        "token_type": "Application Access Token"
                    })
                    .to_string(),
                );
            }
            if let Some(kid) = path.strip_prefix("/commerce/notification/v1/public_key/") {
                assert_eq!(method, Method::GET);
                self.key_hits.fetch_add(1, Ordering::SeqCst);
                let delay = self.key_delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                let latest = format!("Bearer v^1.1#token-{}", self.tokens.load(Ordering::SeqCst));
                if auth != latest {
                    return respond(
                        401,
                        r#"{"errors":[{"errorId":1001,"message":"Invalid access token"}]}"#.into(),
                    );
                }
                if self.fail_keys.load(Ordering::SeqCst) {
                    return respond(500, r#"{"errors":[{"errorId":195000,"message":"There was a problem with an eBay internal system or process."}]}"#.into());
                }
                if kid == KID || kid.starts_with("same-key-") {
                    return respond(
                        200,
                        fixture_text("payloads/ebay/getPublicKey_response.json"),
                    );
                }
                return respond(
                    404,
                    r#"{"errors":[{"errorId":195001,"message":"The public key was not found."}]}"#
                        .into(),
                );
            }
            respond(404, "{}".into())
        }

        fn hits(&self) -> (usize, usize) {
            (
                self.token_hits.load(Ordering::SeqCst),
                self.key_hits.load(Ordering::SeqCst),
            )
        }
    }

    /// A clock that tests move forward by hand.
    fn test_clock() -> (Clock, Arc<AtomicU64>) {
        let offset = Arc::new(AtomicU64::new(0));
        let base = Instant::now();
        let o = offset.clone();
        (
            Arc::new(move || base + Duration::from_secs(o.load(Ordering::SeqCst))),
            offset,
        )
    }

    fn ebay_source(api: &str, extra: serde_json::Value) -> SourceConfig {
        let mut fields = serde_json::json!({
            "scheme": "ebay", "platform": "ebay",
            "client_id": CLIENT_ID, "client_secret_env": "EBAY_CLIENT_SECRET",
            "ebay_api_url": api,
        });
        for (k, v) in extra.as_object().unwrap() {
            fields[k] = v.clone();
        }
        let mut s = source(fields);
        s.client_secret = Some(Secret::new(CLIENT_SECRET));
        s
    }

    fn cache(api: &str) -> (Arc<KeyCache>, Arc<AtomicU64>) {
        let (clock, offset) = test_clock();
        let c = KeyCache::from_source(&ebay_source(api, serde_json::json!({})))
            .unwrap()
            .expect("client_id + secret make a cache")
            .with_clock(clock);
        (Arc::new(c), offset)
    }

    fn signed_request() -> (http::HeaderMap, Vec<u8>) {
        let v = vector("ebay_signature.json", "ebay-valid");
        let body = fixture_text("payloads/ebay/marketplace_account_deletion.signed_compact.json");
        (vector_headers(&v), body.into_bytes())
    }

    #[tokio::test]
    async fn fetched_key_verifies_the_fixture_and_is_cached_for_the_hour() {
        if !published("ebay_keys::fetched_key_verifies_the_fixture_and_is_cached_for_the_hour") {
            return;
        }
        let (fake, api) = FakeEbay::start().await;
        let (cache, clock) = cache(&api);
        let verifier = Ebay::new(cache.clone());
        let (h, body) = signed_request();
        assert_eq!(
            crate::schemes::ebay::signature_kid(&h).as_deref(),
            Some(KID)
        );
        // Before: unknown.
        assert_eq!(
            verify(&verifier, &h, &body, 0).unwrap_err().code(),
            "unknown_key"
        );
        assert!(!cache.is_fresh(KID));
        cache.ensure(KID).await.unwrap();
        assert_eq!(verify(&verifier, &h, &body, 0), Ok(()));
        assert!(cache.is_fresh(KID));
        assert_eq!(fake.hits(), (1, 1));
        // What went over the wire: Basic client credentials, then the Bearer token.
        let seen = fake.auth_seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                format!(
                    "Basic {}",
                    b64_encode(format!("{CLIENT_ID}:{CLIENT_SECRET}").as_bytes())
                ),
                "Bearer v^1.1#token-1".to_string()
            ]
        );

        // Within the hour: from memory.
        clock.store(59 * 60, Ordering::SeqCst);
        cache.ensure(KID).await.unwrap();
        cache.ensure(KID).await.unwrap();
        assert_eq!(fake.hits(), (1, 1));

        // Past the hour: fetched again, with the same token (7200 s, not yet due).
        clock.store(61 * 60, Ordering::SeqCst);
        assert!(!cache.is_fresh(KID));
        cache.ensure(KID).await.unwrap();
        assert_eq!(fake.hits(), (1, 2));
        assert_eq!(verify(&verifier, &h, &body, 0), Ok(()));
    }

    #[tokio::test]
    async fn concurrent_ensures_for_one_kid_fetch_once() {
        // The fake key endpoint serves eBay's published getPublicKey response.
        if !published("ebay_keys::concurrent_ensures_for_one_kid_fetch_once") {
            return;
        }
        let (fake, api) = FakeEbay::start().await;
        fake.key_delay_ms.store(200, Ordering::SeqCst);
        let (cache, _) = cache(&api);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let c = cache.clone();
            tasks.spawn(async move { c.ensure(KID).await });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap();
        }
        assert_eq!(fake.hits(), (1, 1));
        assert!(cache.flights.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn concurrent_failures_fetch_once_and_are_held_briefly() {
        // The fake key endpoint serves eBay's published getPublicKey response.
        if !published("ebay_keys::concurrent_failures_fetch_once_and_are_held_briefly") {
            return;
        }
        let (fake, api) = FakeEbay::start().await;
        fake.key_delay_ms.store(200, Ordering::SeqCst);
        fake.fail_keys.store(true, Ordering::SeqCst);
        let (cache, clock) = cache(&api);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let c = cache.clone();
            tasks.spawn(async move { c.ensure(KID).await });
        }
        while let Some(r) = tasks.join_next().await {
            assert!(matches!(
                r.unwrap(),
                Err(FetchError::Status { status: 500, .. })
            ));
        }
        assert_eq!(fake.hits(), (1, 1));
        // After the hold, and with eBay back, the next request fetches.
        fake.fail_keys.store(false, Ordering::SeqCst);
        cache.ensure(KID).await.unwrap_err();
        assert_eq!(fake.hits(), (1, 1));
        clock.store(FAILURE_HOLD.as_secs() + 1, Ordering::SeqCst);
        cache.ensure(KID).await.unwrap();
        assert_eq!(fake.hits(), (1, 2));
    }

    #[tokio::test]
    async fn server_error_is_a_fetch_error() {
        if !published("ebay_keys::server_error_is_a_fetch_error") {
            return;
        }
        let (fake, api) = FakeEbay::start().await;
        fake.fail_keys.store(true, Ordering::SeqCst);
        let (cache, _) = cache(&api);
        let e = cache.ensure(KID).await.unwrap_err();
        assert_eq!(
            e,
            FetchError::Status {
                what: format!("eBay's getPublicKey for kid {KID}"),
                status: 500
            }
        );
        assert!(e.to_string().contains("HTTP 500"), "{e}");
        assert!(e.is_transient());
        let (h, body) = signed_request();
        assert_eq!(
            verify(&Ebay::new(cache.clone()), &h, &body, 0)
                .unwrap_err()
                .code(),
            "unknown_key"
        );
    }

    #[tokio::test]
    async fn unknown_kid_is_a_fetch_error_naming_it() {
        let (fake, api) = FakeEbay::start().await;
        let (cache, _) = cache(&api);
        let kid = "00000000-0000-0000-0000-000000000000";
        let e = cache.ensure(kid).await.unwrap_err();
        assert_eq!(e, FetchError::UnknownKid { kid: kid.into() });
        assert!(e.to_string().contains(kid), "{e}");
        assert!(!e.is_transient());
        assert_eq!(fake.hits(), (1, 1));
    }

    #[tokio::test]
    async fn token_is_reused_until_it_expires() {
        // The fake key endpoint serves eBay's published getPublicKey response.
        if !published("ebay_keys::token_is_reused_until_it_expires") {
            return;
        }
        let (fake, api) = FakeEbay::start().await;
        let (cache, clock) = cache(&api);
        cache.ensure(KID).await.unwrap();
        // Another kid 30 min later: same token.
        clock.store(30 * 60, Ordering::SeqCst);
        cache.ensure("same-key-2").await.unwrap();
        assert_eq!(fake.hits(), (1, 2));
        // Past expires_in (7200 s, renewed 60 s early): a new token first.
        clock.store(7200 - 59, Ordering::SeqCst);
        cache.ensure("same-key-3").await.unwrap();
        assert_eq!(fake.hits(), (2, 3));
        let seen = fake.auth_seen.lock().unwrap().clone();
        assert_eq!(seen.last().unwrap(), "Bearer v^1.1#token-2");

        // A short-lived token (expires_in 10 s): renewed at half its life. token-2 (from 7141 s)
        // is due at 7141 + 7140 s.
        fake.expires_in.store(10, Ordering::SeqCst);
        let t = 5 * 3600;
        clock.store(t, Ordering::SeqCst);
        cache.ensure("same-key-4").await.unwrap();
        assert_eq!(fake.hits(), (3, 4));
        clock.store(t + 4, Ordering::SeqCst);
        cache.ensure("same-key-5").await.unwrap();
        assert_eq!(fake.hits(), (3, 5));
        clock.store(t + 5, Ordering::SeqCst);
        cache.ensure("same-key-6").await.unwrap();
        assert_eq!(fake.hits(), (4, 6));
    }

    #[tokio::test]
    async fn a_token_refused_by_the_key_endpoint_is_renewed_once() {
        // The fake key endpoint serves eBay's published getPublicKey response.
        if !published("ebay_keys::a_token_refused_by_the_key_endpoint_is_renewed_once") {
            return;
        }
        let (fake, api) = FakeEbay::start().await;
        let (cache, _) = cache(&api);
        cache.ensure(KID).await.unwrap();
        // eBay revoked it early: someone else got token-2, so token-1 is refused.
        fake.tokens.fetch_add(1, Ordering::SeqCst);
        cache.ensure("same-key-2").await.unwrap();
        assert_eq!(fake.hits(), (2, 3));
    }

    #[tokio::test]
    async fn refused_credentials_say_what_to_check_and_never_the_secret() {
        let (fake, api) = FakeEbay::start().await;
        fake.bad_credentials.store(true, Ordering::SeqCst);
        let (cache, _) = cache(&api);
        let e = cache.ensure(KID).await.unwrap_err();
        assert_eq!(e, FetchError::Credentials { status: 401 });
        let text = format!("{e} {e:?}");
        assert!(text.contains("client_secret_env"), "{text}");
        assert!(!text.contains(CLIENT_SECRET), "{text}");
        assert_eq!(fake.hits(), (1, 0));
    }

    #[tokio::test]
    async fn stale_key_survives_a_transient_refresh_failure_but_not_a_404() {
        if !published("ebay_keys::stale_key_survives_a_transient_refresh_failure_but_not_a_404") {
            return;
        }
        let (fake, api) = FakeEbay::start().await;
        let (cache, clock) = cache(&api);
        cache.ensure(KID).await.unwrap();
        fake.fail_keys.store(true, Ordering::SeqCst);
        clock.store(2 * 3600, Ordering::SeqCst);
        cache.ensure(KID).await.unwrap();
        // The token was due too (7200 s, renewed 60 s early).
        assert_eq!(fake.hits(), (2, 2));
        let (h, body) = signed_request();
        assert_eq!(verify(&Ebay::new(cache.clone()), &h, &body, 0), Ok(()));
        // Past MAX_STALE: the failure is an error.
        clock.store(MAX_STALE.as_secs() + 3600, Ordering::SeqCst);
        assert!(cache.ensure(KID).await.is_err());
        assert_eq!(
            verify(&Ebay::new(cache.clone()), &h, &body, 0)
                .unwrap_err()
                .code(),
            "unknown_key"
        );
    }

    #[tokio::test]
    async fn unreachable_api_is_a_transport_error() {
        // A port nobody listens on.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let (cache, _) = cache(&format!("http://{addr}"));
        let e = cache.ensure(KID).await.unwrap_err();
        assert!(matches!(e, FetchError::Transport { .. }), "{e:?}");
        assert!(e.is_transient());
    }

    #[tokio::test]
    async fn pinned_keys_win_and_never_fetch() {
        if !published("ebay_keys::pinned_keys_win_and_never_fetch") {
            return;
        }
        let (fake, api) = FakeEbay::start().await;
        let pem = fixture("payloads/ebay/getPublicKey_response.json")["key"].clone();
        let c = KeyCache::from_source(&ebay_source(
            &api,
            serde_json::json!({"public_keys": {KID: pem}}),
        ))
        .unwrap()
        .unwrap();
        c.ensure(KID).await.unwrap();
        assert!(c.is_fresh(KID));
        assert_eq!(fake.hits(), (0, 0));
        let (h, body) = signed_request();
        assert_eq!(verify(&Ebay::new(Arc::new(c)), &h, &body, 0), Ok(()));
    }

    #[tokio::test]
    async fn implausible_kids_are_never_fetched() {
        let (fake, api) = FakeEbay::start().await;
        let (cache, _) = cache(&api);
        for kid in ["", "../../identity", "a b", &"x".repeat(129), "k?x=1"] {
            cache.ensure(kid).await.unwrap();
            assert!(cache.public_key(kid).is_none());
        }
        assert_eq!(fake.hits(), (0, 0));
    }

    #[tokio::test]
    async fn new_kids_are_rate_limited_and_the_cache_is_bounded() {
        // The fake key endpoint serves eBay's published getPublicKey response.
        if !published("ebay_keys::new_kids_are_rate_limited_and_the_cache_is_bounded") {
            return;
        }
        let (fake, api) = FakeEbay::start().await;
        let (cache, clock) = cache(&api);
        for i in 0..NEW_KID_BURST {
            cache.ensure(&format!("same-key-{i}")).await.unwrap();
        }
        let e = cache.ensure("same-key-burst").await.unwrap_err();
        assert!(matches!(e, FetchError::RateLimited { .. }), "{e:?}");
        assert_eq!(fake.hits().1, NEW_KID_BURST as usize);
        // Refill one every 5 s: fill the cache past MAX_KEYS, 1 s of fake time per kid would be
        // refused, so step 5 s each.
        let mut t = 0;
        for i in NEW_KID_BURST as usize..MAX_KEYS + 5 {
            t += 5;
            clock.store(t, Ordering::SeqCst);
            cache.ensure(&format!("same-key-{i}")).await.unwrap();
        }
        let st = cache.state();
        assert_eq!(st.keys.len(), MAX_KEYS);
        // The five dropped were among the oldest (the burst, all fetched at t = 0).
        for i in NEW_KID_BURST as usize..MAX_KEYS + 5 {
            assert!(st.keys.contains_key(&format!("same-key-{i}")), "{i}");
        }
    }

    #[tokio::test]
    async fn a_slow_api_is_a_timeout() {
        let (fake, api) = FakeEbay::start().await;
        fake.key_delay_ms
            .store(FETCH_TIMEOUT.as_millis() as u64 + 2000, Ordering::SeqCst);
        let (cache, _) = cache(&api);
        let started = std::time::Instant::now();
        let e = cache.ensure(KID).await.unwrap_err();
        assert_eq!(e, FetchError::Timeout { kid: KID.into() });
        assert!(started.elapsed() < FETCH_TIMEOUT + Duration::from_secs(1));
    }

    /// Stores appends in memory: enough for the route.
    struct MemSink(Mutex<Vec<stockhook_shared::queue::NewEvent>>);

    impl stockhook_shared::queue::EventSink for MemSink {
        async fn append(
            &self,
            ev: stockhook_shared::queue::NewEvent,
        ) -> Result<stockhook_shared::queue::AppendOutcome, stockhook_shared::queue::QueueError>
        {
            let mut v = self.0.lock().unwrap();
            v.push(ev);
            Ok(stockhook_shared::queue::AppendOutcome::Accepted(
                stockhook_shared::envelope::EventId(v.len() as u64),
            ))
        }
        fn ready(&self) -> Result<(), stockhook_shared::queue::QueueError> {
            Ok(())
        }
        async fn stats(
            &self,
        ) -> Result<stockhook_shared::queue::QueueStats, stockhook_shared::queue::QueueError>
        {
            Ok(Default::default())
        }
    }

    /// Through the route: 503 key_unavailable + Retry-After while eBay fails, 200 once the key
    /// can be fetched, and the stored event only then.
    #[tokio::test]
    async fn route_answers_503_while_the_key_cannot_be_fetched() {
        if !published("ebay_keys::route_answers_503_while_the_key_cannot_be_fetched") {
            return;
        }
        use crate::routes::{self, AppState};
        let (fake, api) = FakeEbay::start().await;
        fake.fail_keys.store(true, Ordering::SeqCst);
        let mut config = stockhook_shared::config::Config::default();
        let mut s = ebay_source(
            &api,
            serde_json::json!({"verification_token": "t".repeat(32)}),
        );
        s.name = "ebay-store".into();
        config.sources = vec![s];
        let (sources, disabled) = routes::build_sources(&config).unwrap();
        assert!(sources["ebay-store"].ebay_keys.is_some());
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(AppState {
            sources: crate::reload::SourceTable::new((sources, disabled)),
            sink: MemSink(Mutex::new(Vec::new())),
            data_dir: dir.path().to_path_buf(),
            metrics: Default::default(),
            serve_ops: true,
            max_body_bytes: 1 << 20,
            body_timeout: Duration::from_secs(5),
            clock: routes::system_clock,
        });
        let (h, body) = signed_request();
        let post = || {
            let mut req = Request::builder()
                .method(Method::POST)
                .uri("/webhooks/ebay-store");
            for (k, v) in h.iter() {
                req = req.header(k, v);
            }
            req.body(Full::new(Bytes::from(body.clone()))).unwrap()
        };
        let r = routes::handle(state.clone(), post()).await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "60");
        let text = r.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(json["error"], "key_unavailable");
        assert!(state.sink.0.lock().unwrap().is_empty());

        // eBay is back; the failure is held for FAILURE_HOLD, so this cache is asked again
        // through a fresh build (the real clock cannot be moved here).
        fake.fail_keys.store(false, Ordering::SeqCst);
        let (sources, _) = routes::build_sources(&config).unwrap();
        let state = Arc::new(AppState {
            sources: crate::reload::SourceTable::new((sources, Default::default())),
            sink: MemSink(Mutex::new(Vec::new())),
            data_dir: dir.path().to_path_buf(),
            metrics: Default::default(),
            serve_ops: true,
            max_body_bytes: 1 << 20,
            body_timeout: Duration::from_secs(5),
            clock: routes::system_clock,
        });
        let r = routes::handle(state.clone(), post()).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = routes::handle(state.clone(), post()).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(state.sink.0.lock().unwrap().len(), 2);
        // Each build has its own cache (one token, one key request each): the second request
        // was verified from the cache.
        assert_eq!(fake.hits(), (2, 2));
    }

    #[test]
    fn api_url_is_checked() {
        assert_eq!(api_base(None).unwrap(), "https://api.ebay.com");
        assert_eq!(
            api_base(Some("https://api.sandbox.ebay.com/")).unwrap(),
            "https://api.sandbox.ebay.com"
        );
        assert_eq!(
            api_base(Some("http://127.0.0.1:8099")).unwrap(),
            "http://127.0.0.1:8099"
        );
        for bad in [
            "http://api.ebay.com",
            "ftp://api.ebay.com",
            "api.ebay.com",
            "https://api.ebay.com?x=1",
            "",
        ] {
            assert!(api_base(Some(bad)).is_err(), "{bad}");
        }
        let mut s = ebay_source("http://api.ebay.com", serde_json::json!({}));
        let e = KeyCache::from_source(&s).err().unwrap();
        assert!(e.contains("ebay_api_url") && e.contains("https://"), "{e}");
        s.client_secret = None;
        assert!(KeyCache::from_source(&s).unwrap().is_none());
    }
}

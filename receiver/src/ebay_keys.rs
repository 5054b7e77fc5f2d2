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
                reason: stockhook_shared::redact::error_chain(&e),
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
mod tests;

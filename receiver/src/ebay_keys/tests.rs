//! Tests of [`super`], kept apart so the module reads as production code.
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

type Fixture = (Arc<FakeEbay>, Arc<KeyCache>, Arc<AtomicU64>);

/// The fake eBay, and a key cache pointed at it on a test clock.
async fn fake_with_cache() -> Fixture {
    let (fake, api) = FakeEbay::start().await;
    let (cache, clock) = cache(&api);
    (fake, cache, clock)
}

/// [`fake_with_cache`] for the running test, whose fake serves eBay's published getPublicKey response;
/// `None` (the test returns) where that fixture is not in this checkout.
async fn fake_and_cache() -> Option<Fixture> {
    if !published(&stockhook_test_kit::skip::current_test()) {
        return None;
    }
    Some(fake_with_cache().await)
}

/// [`fake_and_cache`] with the fixture's key fetched once already (one token, one key call).
async fn fake_and_fetched_key() -> Option<Fixture> {
    let (fake, cache, clock) = fake_and_cache().await?;
    cache.ensure(KID).await.unwrap();
    Some((fake, cache, clock))
}

fn signed_request() -> (http::HeaderMap, Vec<u8>) {
    let v = vector("ebay_signature.json", "ebay-valid");
    let body = fixture_text("payloads/ebay/marketplace_account_deletion.signed_compact.json");
    (vector_headers(&v), body.into_bytes())
}

/// How the `ebay` scheme over `cache` answers [`signed_request`]: `Ok`, or the refusal's code.
fn verdict(cache: &Arc<KeyCache>) -> Result<(), &'static str> {
    let (h, body) = signed_request();
    verify(&Ebay::new(cache.clone()), &h, &body, 0).map_err(|e| e.code())
}

#[tokio::test]
async fn fetched_key_verifies_the_fixture_and_is_cached_for_the_hour() {
    let Some((fake, cache, clock)) = fake_and_cache().await else {
        return;
    };
    let (h, _) = signed_request();
    assert_eq!(
        crate::schemes::ebay::signature_kid(&h).as_deref(),
        Some(KID)
    );
    // Before: unknown.
    assert_eq!(verdict(&cache), Err("unknown_key"));
    assert!(!cache.is_fresh(KID));
    cache.ensure(KID).await.unwrap();
    assert_eq!(verdict(&cache), Ok(()));
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
    assert_eq!(verdict(&cache), Ok(()));
}

#[tokio::test]
async fn concurrent_ensures_for_one_kid_fetch_once() {
    let Some((fake, cache, _)) = fake_and_cache().await else {
        return;
    };
    fake.key_delay_ms.store(200, Ordering::SeqCst);
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
    let Some((fake, cache, clock)) = fake_and_cache().await else {
        return;
    };
    fake.key_delay_ms.store(200, Ordering::SeqCst);
    fake.fail_keys.store(true, Ordering::SeqCst);
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
    let Some((fake, cache, _)) = fake_and_cache().await else {
        return;
    };
    fake.fail_keys.store(true, Ordering::SeqCst);
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
    assert_eq!(verdict(&cache), Err("unknown_key"));
}

#[tokio::test]
async fn unknown_kid_is_a_fetch_error_naming_it() {
    let (fake, cache, _) = fake_with_cache().await;
    let kid = "00000000-0000-0000-0000-000000000000";
    let e = cache.ensure(kid).await.unwrap_err();
    assert_eq!(e, FetchError::UnknownKid { kid: kid.into() });
    assert!(e.to_string().contains(kid), "{e}");
    assert!(!e.is_transient());
    assert_eq!(fake.hits(), (1, 1));
}

#[tokio::test]
async fn token_is_reused_until_it_expires() {
    let Some((fake, cache, clock)) = fake_and_fetched_key().await else {
        return;
    };
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
    let Some((fake, cache, _)) = fake_and_fetched_key().await else {
        return;
    };
    // eBay revoked it early: someone else got token-2, so token-1 is refused.
    fake.tokens.fetch_add(1, Ordering::SeqCst);
    cache.ensure("same-key-2").await.unwrap();
    assert_eq!(fake.hits(), (2, 3));
}

#[tokio::test]
async fn refused_credentials_say_what_to_check_and_never_the_secret() {
    let (fake, cache, _) = fake_with_cache().await;
    fake.bad_credentials.store(true, Ordering::SeqCst);
    let e = cache.ensure(KID).await.unwrap_err();
    assert_eq!(e, FetchError::Credentials { status: 401 });
    let text = format!("{e} {e:?}");
    assert!(text.contains("client_secret_env"), "{text}");
    assert!(!text.contains(CLIENT_SECRET), "{text}");
    assert_eq!(fake.hits(), (1, 0));
}

#[tokio::test]
async fn stale_key_survives_a_transient_refresh_failure_but_not_a_404() {
    let Some((fake, cache, clock)) = fake_and_fetched_key().await else {
        return;
    };
    fake.fail_keys.store(true, Ordering::SeqCst);
    clock.store(2 * 3600, Ordering::SeqCst);
    cache.ensure(KID).await.unwrap();
    // The token was due too (7200 s, renewed 60 s early).
    assert_eq!(fake.hits(), (2, 2));
    assert_eq!(verdict(&cache), Ok(()));
    // Past MAX_STALE: the failure is an error.
    clock.store(MAX_STALE.as_secs() + 3600, Ordering::SeqCst);
    assert!(cache.ensure(KID).await.is_err());
    assert_eq!(verdict(&cache), Err("unknown_key"));
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
    if !published(&stockhook_test_kit::skip::current_test()) {
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
    assert_eq!(verdict(&Arc::new(c)), Ok(()));
}

#[tokio::test]
async fn implausible_kids_are_never_fetched() {
    let (fake, cache, _) = fake_with_cache().await;
    for kid in ["", "../../identity", "a b", &"x".repeat(129), "k?x=1"] {
        cache.ensure(kid).await.unwrap();
        assert!(cache.public_key(kid).is_none());
    }
    assert_eq!(fake.hits(), (0, 0));
}

#[tokio::test]
async fn new_kids_are_rate_limited_and_the_cache_is_bounded() {
    let Some((fake, cache, clock)) = fake_and_cache().await else {
        return;
    };
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
    let (fake, cache, _) = fake_with_cache().await;
    fake.key_delay_ms
        .store(FETCH_TIMEOUT.as_millis() as u64 + 2000, Ordering::SeqCst);
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
    ) -> Result<stockhook_shared::queue::AppendOutcome, stockhook_shared::queue::QueueError> {
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
    ) -> Result<stockhook_shared::queue::QueueStats, stockhook_shared::queue::QueueError> {
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

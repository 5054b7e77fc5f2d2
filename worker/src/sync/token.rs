//! The OAuth access token of one sync run, refreshed from the seller's refresh token: Login
//! with Amazon for the SP-API, eBay's OAuth for its Sell and Trading APIs. Both are the same
//! exchange (`grant_type=refresh_token` posted as a form, `{access_token, expires_in}` back),
//! so the clients share this one implementation of when to refresh.
//!
//! A token is fetched on first use, again a minute before it expires, and once more when the
//! API refuses it (an expired or revoked access token answers 401/403): only a refusal right
//! after a fresh token means the credentials themselves are wrong ([`SyncError::Unauthorized`]).
//!
//! Never: logs or puts into an error the refresh token, the client secret or an access token.
//! The token endpoint's error answers (`{"error":"invalid_grant",...}`) are not echoed either.

use super::http::{ApiClient, ApiResponse, SyncError};
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use std::time::{Duration, Instant};
use stockhook_shared::secret::Secret;

/// A token is refreshed this long before the expiry its endpoint announced.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// Assumed lifetime when the endpoint announces none.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// How to get a fresh access token.
pub struct TokenSource {
    /// Names the endpoint in errors ("Amazon LWA token").
    pub what: &'static str,
    pub url: String,
    /// Form fields besides `grant_type` and `refresh_token` (LWA: the client id and secret).
    pub form: Vec<(&'static str, Secret)>,
    pub refresh_token: Secret,
    /// HTTP Basic credentials (eBay: the app's client id and secret).
    pub basic: Option<(String, Secret)>,
    /// First wait before retrying a transient failure.
    pub initial_backoff: Duration,
}

/// The current access token and when to stop using it.
pub struct Token {
    source: TokenSource,
    current: Option<(Secret, Instant)>,
    /// Tokens fetched in this run (tests and logs: how often it was refreshed).
    pub refreshes: u32,
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Token {
    pub fn new(source: TokenSource) -> Token {
        Token {
            source,
            current: None,
            refreshes: 0,
        }
    }

    fn request(&self) -> Result<http::Request<Full<Bytes>>, SyncError> {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "refresh_token");
        form.append_pair("refresh_token", self.source.refresh_token.expose());
        for (k, v) in &self.source.form {
            form.append_pair(k, v.expose());
        }
        let mut req = http::Request::post(&self.source.url)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, super::USER_AGENT);
        if let Some((id, secret)) = &self.source.basic {
            let pair = format!("{id}:{}", secret.expose());
            let b64 = base64::engine::general_purpose::STANDARD.encode(pair);
            req = req.header(http::header::AUTHORIZATION, format!("Basic {b64}"));
        }
        req.body(Full::new(Bytes::from(form.finish())))
            .map_err(|_| SyncError::Config(format!("{}: token_url is not a URL", self.source.what)))
    }

    /// Fetches a new access token.
    async fn refresh(&mut self, api: &ApiClient) -> Result<(), SyncError> {
        let what = self.source.what;
        let answer = api
            .send_retrying(|| self.request(), what, self.source.initial_backoff)
            .await
            .map_err(|e| match e {
                // invalid_grant (a revoked or mistyped refresh token) and invalid_client answer
                // 400/401: the credentials are wrong, whatever the status. The body is not kept.
                SyncError::Refused { status, .. } if status == 400 || status == 401 => {
                    SyncError::Unauthorized {
                        what: what.into(),
                        status,
                    }
                }
                SyncError::Refused { status, .. } => SyncError::Refused {
                    what: what.into(),
                    status,
                    body: "(token endpoint answer not shown)".into(),
                },
                other => other,
            })?;
        let t: TokenAnswer = answer.json(what)?;
        if t.access_token.is_empty() {
            return Err(SyncError::Protocol {
                what: what.into(),
                problem: "empty access_token".into(),
            });
        }
        let life = t
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_LIFETIME);
        let until = Instant::now() + life.saturating_sub(EXPIRY_MARGIN);
        self.current = Some((Secret::new(t.access_token), until));
        self.refreshes += 1;
        tracing::debug!(
            what,
            expires_in_s = life.as_secs(),
            "access token refreshed"
        );
        Ok(())
    }

    /// The access token, refreshed when missing or about to expire; `true` when it was
    /// fetched by this call.
    async fn get(&mut self, api: &ApiClient) -> Result<(Secret, bool), SyncError> {
        let fresh = match &self.current {
            Some((_, until)) if Instant::now() < *until => false,
            _ => {
                self.refresh(api).await?;
                true
            }
        };
        match &self.current {
            Some((t, _)) => Ok((t.clone(), fresh)),
            None => Err(SyncError::Protocol {
                what: self.source.what.into(),
                problem: "no access token".into(),
            }),
        }
    }

    /// Sends a request made with the access token (`make` gets it and is called for each
    /// attempt), retrying transient failures; `check` sorts a 2xx answer that still says the
    /// token was refused (eBay's Trading API answers 200 with an error code). On a refusal of a
    /// token that was not just fetched, the token is refreshed and the request sent once more.
    pub async fn send(
        &mut self,
        api: &ApiClient,
        make: impl Fn(&str) -> Result<http::Request<Full<Bytes>>, SyncError>,
        what: &str,
        initial: Duration,
        check: impl Fn(&ApiResponse) -> Result<(), SyncError>,
    ) -> Result<ApiResponse, SyncError> {
        let (token, fresh) = self.get(api).await?;
        let first = api
            .send_retrying(|| make(token.expose()), what, initial)
            .await
            .and_then(|r| check(&r).map(|()| r));
        match first {
            Err(SyncError::Unauthorized { .. }) if !fresh => {
                tracing::info!(what, "access token refused; refreshing it once");
                self.current = None;
                let (token, _) = self.get(api).await?;
                api.send_retrying(|| make(token.expose()), what, initial)
                    .await
                    .and_then(|r| check(&r).map(|()| r))
            }
            other => other,
        }
    }
}

//! Signature schemes: one file per scheme, all behind the one [`Verifier`] trait.
//!
//! Why: the receiver must decide, before anything touches the disk, whether a request really
//! comes from the configured sender. Every platform proves that differently (an HMAC header, a
//! timestamped HMAC list, an ECDSA signature with a key id, a credential, a SOAP header), so each
//! scheme is a small file and this module only holds what they share: the request view
//! ([`Incoming`]), the error type ([`VerifyError`]), the trait, and [`build`], which turns a
//! source's configuration into its verifier.
//!
//! Contract:
//! * a verifier looks only at the headers, the raw body bytes and the injected clock
//!   (`now_unix`); it never reads the system clock, the network or the disk;
//! * every comparison with secret-derived material is constant-time, and a rotation (several
//!   secrets) checks every secret, not just until the first match;
//! * [`build`] is where configuration problems surface, with the key to set in the message; a
//!   verifier that was built never fails for configuration reasons.
//!
//! Must never: parse the body as a platform payload (only the two eBay schemes read the body's
//! structure, because their signatures are defined over it), log or return secret material,
//! or panic on anything a request contains.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use stockhook_shared::config::{SchemeKind, SourceConfig};
use subtle::{Choice, ConstantTimeEq};

pub mod api_key;
pub mod basic_auth;
pub mod ebay;
pub mod ebay_legacy;
pub mod hmac_sha256;
pub mod none;
pub mod shopify_hmac;
pub mod standard_webhooks;

/// What a verifier sees: the request's headers, its raw body, and the clock (injected, never
/// read inside a verifier).
pub struct Incoming<'a> {
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
    /// Seconds since the Unix epoch, as the caller's clock says; timestamped schemes compare
    /// against this so tests can pin time.
    pub now_unix: i64,
}

/// Why a request was refused. Each variant maps to one stable [`VerifyError::code`] for the
/// 401 body, the log line and the metric label. No variant ever carries secret material or
/// body content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The header is absent or empty. A `String` because `hmac-sha256` and `api-key` read a
    /// header whose name comes from the configuration.
    #[error("missing header {0}")]
    MissingHeader(String),
    #[error("malformed {header}: {reason}")]
    Malformed { header: String, reason: String },
    #[error("signature does not match any configured secret")]
    Mismatch,
    #[error("timestamp {timestamp} is more than {tolerance_secs}s from now ({now}): replayed or clock skew")]
    StaleTimestamp {
        timestamp: i64,
        now: i64,
        tolerance_secs: u64,
    },
    #[error(
        "unknown key id {0}: add it under [sources.public_keys] or configure client_id to fetch it"
    )]
    UnknownKey(String),
    #[error("empty body")]
    EmptyBody,
}

impl VerifyError {
    /// A stable, machine-readable reason: `missing_header`, `malformed_signature`,
    /// `signature_mismatch`, `stale_timestamp`, `unknown_key` or `empty_body`.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_) => "missing_header",
            VerifyError::Malformed { .. } => "malformed_signature",
            VerifyError::Mismatch => "signature_mismatch",
            VerifyError::StaleTimestamp { .. } => "stale_timestamp",
            VerifyError::UnknownKey(_) => "unknown_key",
            VerifyError::EmptyBody => "empty_body",
        }
    }

    pub(crate) fn malformed(header: &str, reason: impl Into<String>) -> VerifyError {
        VerifyError::Malformed {
            header: header.to_string(),
            reason: reason.into(),
        }
    }
}

pub trait Verifier: Send + Sync {
    /// Constant-time verification over the raw bytes.
    fn verify(&self, req: &Incoming<'_>) -> Result<(), VerifyError>;
    /// The headers a sender would attach to `body` (with the first configured secret): for the
    /// `sign` CLI command and for tests. `delivery_id` goes into the scheme's id header where it
    /// has one. A scheme that cannot sign (eBay: no private key; `none`) returns an empty vec.
    fn sign(&self, body: &[u8], now_unix: i64, delivery_id: &str) -> Vec<(String, String)>;
}

/// Builds the verifier for a source whose secrets are already resolved (`source.secrets` holds
/// every secret from value/env/file; `source.verification_token` and `source.cert_id` are
/// resolved too). An `ebay` source verifies against `ebay_keys` when it fetches keys (the
/// route's [`KeyCache`](crate::ebay_keys::KeyCache), pinned keys first), else against its pinned
/// keys alone. `Err` is a configuration problem, naming the source and the key to set.
pub fn build(
    source: &SourceConfig,
    ebay_keys: Option<std::sync::Arc<crate::ebay_keys::KeyCache>>,
) -> Result<Box<dyn Verifier>, String> {
    match source.scheme {
        SchemeKind::ShopifyHmac => Ok(Box::new(shopify_hmac::ShopifyHmac::from_source(source)?)),
        SchemeKind::StandardWebhooks => Ok(Box::new(
            standard_webhooks::StandardWebhooks::from_source(source)?,
        )),
        SchemeKind::HmacSha256 => Ok(Box::new(hmac_sha256::HmacSha256::from_source(source)?)),
        SchemeKind::ApiKey => Ok(Box::new(api_key::ApiKey::from_source(source)?)),
        SchemeKind::BasicAuth => Ok(Box::new(basic_auth::BasicAuth::from_source(source)?)),
        SchemeKind::Ebay => match ebay_keys {
            Some(cache) => Ok(Box::new(ebay::Ebay::new(cache))),
            None => Ok(Box::new(ebay::Ebay::from_source(source)?)),
        },
        SchemeKind::EbayLegacy => Ok(Box::new(ebay_legacy::EbayLegacy::from_source(source)?)),
        SchemeKind::None => Ok(Box::new(none::Unsigned::from_source(source)?)),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the schemes.

/// Standard base64 alphabet, padding optional: senders differ on padding and it carries no
/// meaning, so decoding accepts both. Encoding uses `base64::engine::general_purpose::STANDARD`.
pub(crate) const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Standard base64 with padding, as every scheme here sends it.
pub(crate) fn b64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The value of header `name` (looked up case-insensitively), trimmed. Absent or empty ->
/// `MissingHeader(display)`; not visible ASCII -> `Malformed`. `display` is how the error names
/// the header (the platform's own spelling).
pub(crate) fn header<'a>(
    headers: &'a http::HeaderMap,
    name: &str,
    display: &str,
) -> Result<&'a str, VerifyError> {
    let value = headers
        .get(name)
        .ok_or_else(|| VerifyError::MissingHeader(display.to_string()))?;
    let value = value
        .to_str()
        .map_err(|_| VerifyError::malformed(display, "not visible ASCII"))?
        .trim();
    if value.is_empty() {
        return Err(VerifyError::MissingHeader(display.to_string()));
    }
    Ok(value)
}

/// An HMAC-SHA256 key, prepared once when the source is built: the key's inner and outer pad
/// blocks are hashed at config load, and each request clones that state instead of keying a new
/// MAC (two SHA-256 blocks and the key handling saved per request and per secret). Holds no raw
/// key bytes, only the keyed hash state; never logged.
#[derive(Clone)]
pub(crate) struct HmacKey(Hmac<Sha256>);

impl HmacKey {
    /// Any key length, the empty one too.
    pub(crate) fn new(key: &[u8]) -> HmacKey {
        HmacKey(
            <Hmac<Sha256> as Mac>::new_from_slice(key).expect(
                "HMAC accepts keys of any length: new_from_slice never fails for Hmac<Sha256>",
            ),
        )
    }

    /// HMAC-SHA256 of the concatenation of `parts` under this key.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

/// HMAC-SHA256 of the concatenation of `parts` under `key` (any key length, the empty one too).
#[cfg(test)]
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    HmacKey::new(key).mac(parts)
}

/// True when `received` equals any of `expected`, in time independent of which one matched
/// (every candidate is compared; slices of different lengths compare unequal).
pub(crate) fn ct_any<E: AsRef<[u8]>>(
    received: &[u8],
    expected: impl IntoIterator<Item = E>,
) -> bool {
    let mut any = Choice::from(0u8);
    for candidate in expected {
        any |= received.ct_eq(candidate.as_ref());
    }
    any.into()
}

/// [`ct_any`] as a verdict: `Ok`, or [`VerifyError::Mismatch`].
pub(crate) fn ct_match<E: AsRef<[u8]>>(
    received: &[u8],
    expected: impl IntoIterator<Item = E>,
) -> Result<(), VerifyError> {
    if ct_any(received, expected) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// `Ok` when `received` is the HMAC-SHA256 of `body` under any of `keys` (every key computed
/// and compared, as [`ct_any`] does), else [`VerifyError::Mismatch`].
pub(crate) fn hmac_match(
    received: &[u8],
    keys: &[HmacKey],
    body: &[u8],
) -> Result<(), VerifyError> {
    ct_match(received, keys.iter().map(|k| k.mac(&[body])))
}

/// SHA-256 of a credential: comparing digests keeps the comparison fixed-length, so the time it
/// takes says nothing about the configured credential's length.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The message prefix every build error carries, so the operator sees which source to fix.
pub(crate) fn src(source: &SourceConfig) -> String {
    format!("source {:?} (scheme {})", source.name, source.scheme)
}

/// The source's secrets, or an error telling the operator how to provide one.
pub(crate) fn require_secrets(source: &SourceConfig) -> Result<Vec<&str>, String> {
    if source.secrets.is_empty() {
        return Err(format!(
            "{}: no secret configured: set secrets, secrets_env or secrets_file",
            src(source)
        ));
    }
    Ok(source.secrets.iter().map(|s| s.expose()).collect())
}

/// Shortens a request-supplied string for an error message (which is logged): at most 64
/// characters, control characters replaced.
pub(crate) fn for_log(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Fixtures and request builders for the schemes' tests.
    use super::*;
    use http::{HeaderMap, HeaderName, HeaderValue};

    /// Whether the published vectors (`<repo>/../shared/fixtures/`) are there; when they are not,
    /// prints a loud SKIPPED line naming `test` (or fails, with `SHARED_FIXTURES_REQUIRED=1`).
    /// A test that reads [`fixture`] or [`vector`] is a [`published_test`].
    pub fn published(test: &str) -> bool {
        stockhook_test_kit::fixtures::shared(test).is_some()
    }

    /// `published_test!(name, { body })`: the test `name`, which runs `body` when the published
    /// vectors are there and is skipped, loudly and by its own name, when not ([`published`]).
    macro_rules! published_test {
        ($name:ident, $body:block) => {
            #[test]
            fn $name() {
                if !$crate::schemes::test_support::published(concat!(
                    module_path!(),
                    "::",
                    stringify!($name)
                )) {
                    return;
                }
                $body
            }
        };
    }
    pub(crate) use published_test;

    /// `<repo>/../shared/fixtures/<name>`, parsed. Panics (failing the test) when absent.
    pub fn fixture(name: &str) -> serde_json::Value {
        stockhook_test_kit::fixtures::Fixtures::new(stockhook_test_kit::fixtures::shared_dir())
            .json(name)
    }

    /// `<repo>/../shared/fixtures/<name>` as text.
    pub fn fixture_text(name: &str) -> String {
        stockhook_test_kit::fixtures::Fixtures::new(stockhook_test_kit::fixtures::shared_dir())
            .text(name)
    }

    /// The suite's own sample payload `<repo>/tests/data/payloads/<rel>`.
    pub fn own_payload(rel: &str) -> Vec<u8> {
        stockhook_test_kit::fixtures::data().bytes(&format!("payloads/{rel}"))
    }

    /// The vector with `id` in fixture `name`.
    pub fn vector(name: &str, id: &str) -> serde_json::Value {
        fixture(name)["vectors"]
            .as_array()
            .expect("fixture has vectors")
            .iter()
            .find(|v| v["id"] == id)
            .unwrap_or_else(|| panic!("no vector {id} in {name}"))
            .clone()
    }

    pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).expect("test header name"),
                HeaderValue::from_str(v).expect("test header value"),
            );
        }
        map
    }

    /// The vector's `headers` object as a HeaderMap.
    pub fn vector_headers(v: &serde_json::Value) -> HeaderMap {
        let pairs = stockhook_test_kit::fixtures::vector_headers(v);
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        headers(&refs)
    }

    /// The signed headers from `sign()` as a HeaderMap.
    pub fn signed(pairs: Vec<(String, String)>) -> HeaderMap {
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        headers(&refs)
    }

    /// A source from JSON fields on top of `name = "test"`, `platform = "simple"`.
    pub fn source(fields: serde_json::Value) -> SourceConfig {
        let mut base = serde_json::json!({"name": "test", "platform": "simple"});
        for (k, v) in fields.as_object().expect("object").iter() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).expect("valid test source")
    }

    pub fn verify(
        v: &dyn Verifier,
        headers: &HeaderMap,
        body: &[u8],
        now_unix: i64,
    ) -> Result<(), VerifyError> {
        v.verify(&Incoming {
            headers,
            body,
            now_unix,
        })
    }

    /// Flips one character of a base64/hex string to another valid character of its alphabet.
    pub fn flip_char(s: &str, at: usize) -> String {
        let mut chars: Vec<char> = s.chars().collect();
        chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn codes_are_stable() {
        let cases = [
            (VerifyError::MissingHeader("x".into()), "missing_header"),
            (VerifyError::malformed("x", "y"), "malformed_signature"),
            (VerifyError::Mismatch, "signature_mismatch"),
            (
                VerifyError::StaleTimestamp {
                    timestamp: 1,
                    now: 1000,
                    tolerance_secs: 300,
                },
                "stale_timestamp",
            ),
            (VerifyError::UnknownKey("k".into()), "unknown_key"),
            (VerifyError::EmptyBody, "empty_body"),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err}");
        }
        assert_eq!(
            VerifyError::StaleTimestamp {
                timestamp: 1,
                now: 1000,
                tolerance_secs: 300
            }
            .to_string(),
            "timestamp 1 is more than 300s from now (1000): replayed or clock skew"
        );
    }

    #[test]
    fn header_treats_empty_as_missing_and_is_case_insensitive() {
        let h = headers(&[("X-Thing", "  v  "), ("x-empty", "")]);
        assert_eq!(header(&h, "x-thing", "X-Thing"), Ok("v"));
        assert_eq!(header(&h, "X-THING", "X-Thing"), Ok("v"));
        assert_eq!(
            header(&h, "x-empty", "X-Empty"),
            Err(VerifyError::MissingHeader("X-Empty".into()))
        );
        assert_eq!(
            header(&h, "x-absent", "X-Absent"),
            Err(VerifyError::MissingHeader("X-Absent".into()))
        );
    }

    #[test]
    fn ct_any_checks_every_candidate() {
        assert!(ct_any(b"abc", [&b"xyz"[..], &b"abc"[..]]));
        assert!(!ct_any(b"abc", [&b"ab"[..], &b"abcd"[..]]));
        assert!(!ct_any(b"", [&b"x"[..]]));
        assert!(!ct_any(b"abc", [&b""[..]; 0]));
    }

    #[test]
    fn for_log_truncates_and_strips_control_chars() {
        assert_eq!(for_log("a\nb"), "a?b");
        let long = "x".repeat(100);
        assert_eq!(for_log(&long).chars().count(), 65);
    }

    #[test]
    fn build_makes_every_scheme_from_a_minimal_config() {
        let cases = [
            serde_json::json!({"scheme": "shopify-hmac", "secrets": ["s"]}),
            serde_json::json!({"scheme": "standard-webhooks", "secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}),
            serde_json::json!({"scheme": "hmac-sha256", "secrets": ["s"], "signature_header": "X-Sig"}),
            serde_json::json!({"scheme": "api-key", "secrets": ["s"]}),
            serde_json::json!({"scheme": "basic-auth", "secrets": ["u:p"]}),
            serde_json::json!({"scheme": "ebay", "public_keys": {"k": "-----BEGIN PUBLIC KEY-----MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEZhhxXKtR+TOvtDbgTPCkSof02qgBB7IsYOyf76ilExJ/upAa/vKIKheOoCyOpcLmi4t0b4uepb7LLjmMr90FUg==-----END PUBLIC KEY-----"}}),
            serde_json::json!({"scheme": "ebay-legacy", "dev_id": "d", "app_id": "a", "cert_id": "c"}),
            serde_json::json!({"scheme": "none", "insecure": true}),
        ];
        for fields in cases {
            let s = source(fields.clone());
            assert!(build(&s, None).is_ok(), "{fields}");
        }
    }

    #[test]
    fn build_errors_name_the_source_and_the_key() {
        let e = build(&source(serde_json::json!({"scheme": "shopify-hmac"})), None)
            .err()
            .expect("no secret is an error");
        assert!(e.contains("\"test\""), "{e}");
        assert!(e.contains("secrets_env"), "{e}");
    }
}

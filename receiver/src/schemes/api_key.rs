//! `api-key`: a shared credential in a header, as an EventBridge API destination sends it.
//!
//! Why: Amazon SP-API notifications reach an HTTPS endpoint only through EventBridge, whose
//! connection attaches a credential but signs nothing. With `API_KEY` auth the connection sends
//! header `ApiKeyName` = `ApiKeyValue`; this scheme checks that header against the secrets.
//!
//! Contract: header = `signature_header` (default `x-api-key`); the request verifies when the
//! value equals any secret. Comparison is of SHA-256 digests in constant time, so neither the
//! content nor the length of a configured key leaks through timing; every secret is compared.
//! Empty secrets are a config error (an empty key would authenticate nothing).
//!
//! Must never: log or echo the received value, case-fold it, or short-circuit across
//! secrets.

use super::{ct_match, header, require_secrets, sha256, src, Incoming, Verifier, VerifyError};
use stockhook_shared::config::SourceConfig;

/// The header used when `signature_header` is unset.
pub const DEFAULT_HEADER: &str = "x-api-key";

pub struct ApiKey {
    header_lc: String,
    header: String,
    /// SHA-256 of each key.
    digests: Vec<[u8; 32]>,
    /// The first key, for `sign()` only.
    first: String,
}

impl ApiKey {
    pub fn new<S: AsRef<str>>(header: &str, keys: &[S]) -> Result<ApiKey, String> {
        http::HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| format!("signature_header {header:?} is not a valid HTTP header name"))?;
        if keys.is_empty() {
            return Err("no secret configured: set secrets, secrets_env or secrets_file".into());
        }
        if let Some(i) = keys.iter().position(|k| k.as_ref().is_empty()) {
            return Err(format!(
                "secret #{} is empty: an empty API key authenticates nothing",
                i + 1
            ));
        }
        Ok(ApiKey {
            header_lc: header.to_ascii_lowercase(),
            header: header.to_string(),
            digests: keys.iter().map(|k| sha256(k.as_ref().as_bytes())).collect(),
            first: keys
                .first()
                .map(|k| k.as_ref().to_string())
                .unwrap_or_default(),
        })
    }

    pub(crate) fn from_source(source: &SourceConfig) -> Result<ApiKey, String> {
        let header = source.signature_header.as_deref().unwrap_or(DEFAULT_HEADER);
        ApiKey::new(header, &require_secrets(source)?).map_err(|e| format!("{}: {e}", src(source)))
    }
}

impl Verifier for ApiKey {
    fn verify(&self, req: &Incoming<'_>) -> Result<(), VerifyError> {
        let value = header(req.headers, &self.header_lc, &self.header)?;
        let received = sha256(value.as_bytes());
        ct_match(&received, &self.digests)
    }

    /// The configured header carrying the first key.
    fn sign(&self, _body: &[u8], _now_unix: i64, _delivery_id: &str) -> Vec<(String, String)> {
        vec![(self.header.clone(), self.first.clone())]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    // No published vector exists for a bare credential; the body is a real Amazon sample so the
    // test also shows the body plays no part.
    fn body() -> Vec<u8> {
        own_payload("amazon/listings_item_mfn_quantity_change.json")
    }

    const KEY: &str = "sk_live_7f3a9c2e41b8d6f0";

    #[test]
    fn matching_key_verifies_with_default_header() {
        let s = source(
            serde_json::json!({"scheme": "api-key", "platform": "amazon", "secrets": [KEY]}),
        );
        let v = super::super::build(&s, None).unwrap();
        let h = headers(&[("X-Api-Key", KEY)]);
        assert_eq!(verify(v.as_ref(), &h, &body(), 0), Ok(()));
        assert_eq!(
            v.sign(b"", 0, ""),
            vec![("x-api-key".to_string(), KEY.to_string())]
        );
    }

    #[test]
    fn configured_header_is_used() {
        let s = source(serde_json::json!({
            "scheme": "api-key", "secrets": [KEY], "signature_header": "X-Stockhook-Key"
        }));
        let v = ApiKey::from_source(&s).unwrap();
        assert_eq!(
            verify(&v, &headers(&[("x-stockhook-key", KEY)]), &body(), 0),
            Ok(())
        );
        assert_eq!(
            verify(&v, &headers(&[("x-api-key", KEY)]), &body(), 0),
            Err(VerifyError::MissingHeader("X-Stockhook-Key".into()))
        );
        let signed_headers = signed(v.sign(&body(), 0, "id"));
        assert_eq!(verify(&v, &signed_headers, &body(), 0), Ok(()));
    }

    #[test]
    fn changed_body_byte_does_not_matter() {
        // A credential scheme authenticates the sender, not the bytes: documented, asserted.
        let v = ApiKey::new(DEFAULT_HEADER, &[KEY]).unwrap();
        let mut b = body();
        b[5] ^= 1;
        assert_eq!(verify(&v, &headers(&[("x-api-key", KEY)]), &b, 0), Ok(()));
    }

    #[test]
    fn changed_char_prefix_suffix_or_case_is_a_mismatch() {
        let v = ApiKey::new(DEFAULT_HEADER, &[KEY]).unwrap();
        let flipped = flip_char(KEY, 4);
        for value in [
            flipped.as_str(),
            "sk_live_7f3a9c2e41b8d6f",
            "sk_live_7f3a9c2e41b8d6f00",
            "SK_LIVE_7F3A9C2E41B8D6F0",
            "Bearer sk_live_7f3a9c2e41b8d6f0",
        ] {
            assert_eq!(
                verify(&v, &headers(&[("x-api-key", value)]), &body(), 0),
                Err(VerifyError::Mismatch),
                "{value}"
            );
        }
    }

    #[test]
    fn wrong_secret_is_a_mismatch() {
        let v = ApiKey::new(DEFAULT_HEADER, &["another-key"]).unwrap();
        assert_eq!(
            verify(&v, &headers(&[("x-api-key", KEY)]), &body(), 0),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn rotation_second_secret_matches() {
        let v = ApiKey::new(DEFAULT_HEADER, &["new-key", KEY]).unwrap();
        assert_eq!(
            verify(&v, &headers(&[("x-api-key", KEY)]), &body(), 0),
            Ok(())
        );
        assert_eq!(
            verify(&v, &headers(&[("x-api-key", "new-key")]), &body(), 0),
            Ok(())
        );
    }

    #[test]
    fn missing_and_empty_header() {
        let v = ApiKey::new(DEFAULT_HEADER, &[KEY]).unwrap();
        let want = Err(VerifyError::MissingHeader("x-api-key".into()));
        assert_eq!(verify(&v, &headers(&[]), &body(), 0), want);
        assert_eq!(verify(&v, &headers(&[("x-api-key", "")]), &body(), 0), want);
    }

    #[test]
    fn garbage_value_is_a_mismatch() {
        // No encoding to be malformed: any other text is simply not the key.
        let v = ApiKey::new(DEFAULT_HEADER, &[KEY]).unwrap();
        assert_eq!(
            verify(&v, &headers(&[("x-api-key", "!!!%%%")]), &body(), 0),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn empty_secret_is_a_config_error() {
        let s = source(serde_json::json!({"scheme": "api-key", "secrets": [KEY, ""]}));
        let e = ApiKey::from_source(&s).err().unwrap();
        assert!(e.contains("secret #2 is empty"), "{e}");
        assert!(!e.contains(KEY), "{e}");
    }
}

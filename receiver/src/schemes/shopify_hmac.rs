//! `shopify-hmac`: Shopify's webhook signature.
//!
//! Why: Shopify signs every delivery with `X-Shopify-Hmac-Sha256` = base64(HMAC-SHA256(app client
//! secret, raw body)); newer "events" deliveries send the same value unprefixed as
//! `shopify-hmac-sha256`. Both are accepted (the prefixed one wins when both are present).
//!
//! Contract: the decoded 32 bytes are compared with the HMAC under every configured secret in
//! constant time (rotation: any secret verifies). An empty body is refused (`EmptyBody`) as
//! Shopify's SDK does. A value that is not base64, or does not decode to 32 bytes, is
//! `Malformed`; a well-formed value that matches no secret is `Mismatch`.
//!
//! Must never: verify over anything but the raw bytes (no JSON re-serialization), compare
//! base64 text instead of bytes, or short-circuit across secrets.

use super::{
    b64_encode, header, hmac_match, require_secrets, HmacKey, Incoming, Verifier, VerifyError, B64,
};
use base64::Engine;
use stockhook_shared::config::SourceConfig;

/// The header as Shopify spells it in webhooks (and as errors name it).
pub const HMAC_HEADER: &str = "X-Shopify-Hmac-Sha256";
/// The unprefixed spelling of newer deliveries.
pub const HMAC_HEADER_UNPREFIXED: &str = "shopify-hmac-sha256";
/// The delivery id header, emitted by `sign()`.
pub const WEBHOOK_ID_HEADER: &str = "X-Shopify-Webhook-Id";

pub struct ShopifyHmac {
    /// The app secrets, keyed once; the first one is used by `sign()`.
    secrets: Vec<HmacKey>,
}

impl ShopifyHmac {
    pub fn new<S: AsRef<[u8]>>(secrets: &[S]) -> ShopifyHmac {
        ShopifyHmac {
            secrets: secrets.iter().map(|s| HmacKey::new(s.as_ref())).collect(),
        }
    }

    pub(crate) fn from_source(source: &SourceConfig) -> Result<ShopifyHmac, String> {
        Ok(ShopifyHmac::new(&require_secrets(source)?))
    }
}

impl Verifier for ShopifyHmac {
    fn verify(&self, req: &Incoming<'_>) -> Result<(), VerifyError> {
        if req.body.is_empty() {
            return Err(VerifyError::EmptyBody);
        }
        let value = match header(req.headers, HMAC_HEADER, HMAC_HEADER) {
            Err(VerifyError::MissingHeader(_)) => {
                header(req.headers, HMAC_HEADER_UNPREFIXED, HMAC_HEADER).map_err(|e| match e {
                    // Name the header Shopify documents, not the fallback.
                    VerifyError::MissingHeader(_) => VerifyError::MissingHeader(HMAC_HEADER.into()),
                    other => other,
                })?
            }
            other => other?,
        };
        let received = B64
            .decode(value)
            .map_err(|_| VerifyError::malformed(HMAC_HEADER, "not base64"))?;
        if received.len() != 32 {
            return Err(VerifyError::malformed(
                HMAC_HEADER,
                format!("decodes to {} bytes, an HMAC-SHA256 has 32", received.len()),
            ));
        }
        hmac_match(&received, &self.secrets, req.body)
    }

    /// `X-Shopify-Hmac-Sha256` and `X-Shopify-Webhook-Id` (= `delivery_id`). The topic and shop
    /// headers are the caller's to add.
    fn sign(&self, body: &[u8], _now_unix: i64, delivery_id: &str) -> Vec<(String, String)> {
        let Some(key) = self.secrets.first() else {
            return Vec::new();
        };
        vec![
            (HMAC_HEADER.to_string(), b64_encode(&key.mac(&[body]))),
            (WEBHOOK_ID_HEADER.to_string(), delivery_id.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::super::hmac_sha256;
    use super::super::test_support::*;
    use super::*;

    const FIXTURE: &str = "shopify_hmac.json";

    fn valid() -> (ShopifyHmac, http::HeaderMap, Vec<u8>) {
        let v = vector(FIXTURE, "shopify-api-js-validate-valid");
        let secret = v["secret"].as_str().unwrap().to_string();
        let body = v["body_utf8"].as_str().unwrap().as_bytes().to_vec();
        assert_eq!(hex::encode(&body), v["body_hex"].as_str().unwrap());
        (ShopifyHmac::new(&[secret]), vector_headers(&v), body)
    }

    published_test!(fixture_vector_verifies, {
        let (s, h, body) = valid();
        assert_eq!(verify(&s, &h, &body, 0), Ok(()));
    });

    published_test!(built_from_config_verifies_the_vector, {
        let v = vector(FIXTURE, "shopify-api-js-validate-valid");
        let src = source(serde_json::json!({
            "scheme": "shopify-hmac", "platform": "shopify", "secrets": [v["secret"]]
        }));
        let built = super::super::build(&src, None).unwrap();
        let (_, h, body) = valid();
        assert_eq!(verify(built.as_ref(), &h, &body, 0), Ok(()));
    });

    published_test!(fixture_invalid_hmac_is_refused, {
        let v = vector(FIXTURE, "shopify-api-js-validate-invalid-hmac");
        let s = ShopifyHmac::new(&[v["secret"].as_str().unwrap()]);
        let body = v["body_utf8"].as_str().unwrap().as_bytes();
        // "fake" is valid base64 for 3 bytes: malformed, not a mismatch.
        assert_eq!(
            verify(&s, &vector_headers(&v), body, 0),
            Err(VerifyError::malformed(
                HMAC_HEADER,
                "decodes to 3 bytes, an HMAC-SHA256 has 32"
            ))
        );
    });

    published_test!(sign_reproduces_the_fixture_signature_and_id, {
        let v = vector(FIXTURE, "shopify-api-js-validate-valid");
        let (s, _, body) = valid();
        let out = s.sign(&body, 0, "123456789");
        assert_eq!(
            out,
            vec![
                (
                    HMAC_HEADER.to_string(),
                    v["expected_signature"].as_str().unwrap().to_string()
                ),
                (WEBHOOK_ID_HEADER.to_string(), "123456789".to_string()),
            ]
        );
        assert_eq!(verify(&s, &signed(out.clone()), &body, 0), Ok(()));
    });

    published_test!(unprefixed_header_is_accepted, {
        let v = vector(FIXTURE, "shopify-api-js-validate-valid");
        let (s, _, body) = valid();
        let h = headers(&[(
            "shopify-hmac-sha256",
            v["expected_signature"].as_str().unwrap(),
        )]);
        assert_eq!(verify(&s, &h, &body, 0), Ok(()));
    });

    published_test!(changed_body_byte_is_a_mismatch, {
        let (s, h, mut body) = valid();
        body[2] ^= 0x01;
        assert_eq!(verify(&s, &h, &body, 0), Err(VerifyError::Mismatch));
    });

    published_test!(changed_signature_char_is_a_mismatch, {
        let v = vector(FIXTURE, "shopify-api-js-validate-valid");
        let (s, _, body) = valid();
        let sig = flip_char(v["expected_signature"].as_str().unwrap(), 5);
        let h = headers(&[(HMAC_HEADER, &sig)]);
        assert_eq!(verify(&s, &h, &body, 0), Err(VerifyError::Mismatch));
    });

    published_test!(wrong_secret_is_a_mismatch, {
        let (_, h, body) = valid();
        let s = ShopifyHmac::new(&["not_the_secret"]);
        assert_eq!(verify(&s, &h, &body, 0), Err(VerifyError::Mismatch));
    });

    published_test!(rotation_second_secret_matches, {
        let v = vector(FIXTURE, "shopify-api-js-validate-valid");
        let (_, h, body) = valid();
        let s = ShopifyHmac::new(&["new_secret_not_yet_used", v["secret"].as_str().unwrap()]);
        assert_eq!(verify(&s, &h, &body, 0), Ok(()));
    });

    published_test!(missing_and_empty_header, {
        let (s, _, body) = valid();
        let want = Err(VerifyError::MissingHeader(HMAC_HEADER.into()));
        assert_eq!(verify(&s, &headers(&[]), &body, 0), want);
        assert_eq!(verify(&s, &headers(&[(HMAC_HEADER, "")]), &body, 0), want);
        assert_eq!(
            verify(&s, &headers(&[("shopify-hmac-sha256", "")]), &body, 0),
            want
        );
    });

    published_test!(garbage_base64_is_malformed, {
        let (s, _, body) = valid();
        let h = headers(&[(HMAC_HEADER, "!!!not*base64!!!")]);
        assert_eq!(
            verify(&s, &h, &body, 0),
            Err(VerifyError::malformed(HMAC_HEADER, "not base64"))
        );
    });

    published_test!(hex_encoded_hmac_is_malformed_not_accepted, {
        // Wrong encoding ("prefix"/format) of the right HMAC: a sender misconfiguration.
        let (s, _, body) = valid();
        let hex_sig = hex::encode(hmac_sha256(b"test_secret_key", &[&body]));
        let h = headers(&[(HMAC_HEADER, &hex_sig)]);
        assert_eq!(
            verify(&s, &h, &body, 0).unwrap_err().code(),
            "malformed_signature"
        );
    });

    published_test!(empty_body_is_refused, {
        let (s, h, _) = valid();
        assert_eq!(verify(&s, &h, b"", 0), Err(VerifyError::EmptyBody));
        // Even with a correct HMAC of the empty body.
        let h = signed(s.sign(b"", 0, "1"));
        assert_eq!(verify(&s, &h, b"", 0), Err(VerifyError::EmptyBody));
    });
}

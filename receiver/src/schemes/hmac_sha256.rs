//! `hmac-sha256`: a plain HMAC-SHA256 of the raw body in a configurable header.
//!
//! Why: many senders sign this way and differ only in the header, the encoding and a prefix:
//! WooCommerce (`X-WC-Webhook-Signature`, base64, no prefix), GitHub-style senders
//! (`X-Hub-Signature-256`, hex, prefix `sha256=`). One configurable verifier covers them.
//!
//! Contract:
//! * `signature_header` is required (a config error otherwise);
//! * `signature_encoding` is `hex` or `base64`; **when unset it is `base64`** (WooCommerce's
//!   form), whether or not a prefix is set: a GitHub-style source must say `hex`. When a base64
//!   source receives something that looks like hex, the `Malformed` reason says so;
//! * `signature_prefix` (e.g. `sha256=`), when set, must start the value (ASCII case-insensitive),
//!   else `Malformed`; it is stripped before decoding;
//! * the decoded bytes must be 32 long, else `Malformed`; they are compared with the HMAC under
//!   every secret in constant time. An empty secret is allowed (WooCommerce's default secret is
//!   the empty string).
//!
//! Must never: compare encoded text, accept a value without the configured prefix, or verify
//! over anything but the raw bytes.

use super::{
    b64_encode, header, hmac_match, require_secrets, src, HmacKey, Incoming, Verifier, VerifyError,
    B64,
};
use base64::Engine;
use stockhook_shared::config::{SignatureEncoding, SourceConfig};

pub struct HmacSha256 {
    /// The header, lowercased for lookup.
    header_lc: String,
    /// The header as configured, for error messages and `sign()`.
    header: String,
    encoding: SignatureEncoding,
    prefix: Option<String>,
    /// The secrets, keyed once; may include the empty one. The first is used by `sign()`.
    secrets: Vec<HmacKey>,
}

impl HmacSha256 {
    /// `header` must be a valid HTTP header name.
    pub fn new<S: AsRef<[u8]>>(
        header: &str,
        encoding: SignatureEncoding,
        prefix: Option<&str>,
        secrets: &[S],
    ) -> Result<HmacSha256, String> {
        http::HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| format!("signature_header {header:?} is not a valid HTTP header name"))?;
        Ok(HmacSha256 {
            header_lc: header.to_ascii_lowercase(),
            header: header.to_string(),
            encoding,
            prefix: prefix.filter(|p| !p.is_empty()).map(str::to_string),
            secrets: secrets.iter().map(|s| HmacKey::new(s.as_ref())).collect(),
        })
    }

    pub(crate) fn from_source(source: &SourceConfig) -> Result<HmacSha256, String> {
        let header = source.signature_header.as_deref().ok_or_else(|| {
            format!(
                "{}: scheme hmac-sha256 needs signature_header (e.g. \"X-WC-Webhook-Signature\" \
                 for WooCommerce, \"X-Hub-Signature-256\" with signature_encoding = \"hex\" and \
                 signature_prefix = \"sha256=\" for GitHub-style senders)",
                src(source)
            )
        })?;
        let secrets = require_secrets(source)?;
        HmacSha256::new(
            header,
            source
                .signature_encoding
                .unwrap_or(SignatureEncoding::Base64),
            source.signature_prefix.as_deref(),
            &secrets,
        )
        .map_err(|e| format!("{}: {e}", src(source)))
    }

    fn decode(&self, text: &str) -> Result<Vec<u8>, VerifyError> {
        let bytes = match self.encoding {
            SignatureEncoding::Hex => {
                hex::decode(text).map_err(|_| VerifyError::malformed(&self.header, "not hex"))?
            }
            SignatureEncoding::Base64 => B64
                .decode(text)
                .map_err(|_| VerifyError::malformed(&self.header, "not base64"))?,
        };
        if bytes.len() != 32 {
            let hint = if self.encoding == SignatureEncoding::Base64
                && text.len() == 64
                && text.bytes().all(|b| b.is_ascii_hexdigit())
            {
                ": it looks like hex, set signature_encoding = \"hex\""
            } else {
                ""
            };
            return Err(VerifyError::malformed(
                &self.header,
                format!(
                    "decodes to {} bytes, an HMAC-SHA256 has 32{hint}",
                    bytes.len()
                ),
            ));
        }
        Ok(bytes)
    }
}

impl Verifier for HmacSha256 {
    fn verify(&self, req: &Incoming<'_>) -> Result<(), VerifyError> {
        let value = header(req.headers, &self.header_lc, &self.header)?;
        let text = match &self.prefix {
            None => value,
            Some(prefix) => value
                .get(..prefix.len())
                .filter(|head| head.eq_ignore_ascii_case(prefix))
                .and_then(|_| value.get(prefix.len()..))
                .ok_or_else(|| {
                    VerifyError::malformed(&self.header, format!("does not start with {prefix:?}"))
                })?,
        };
        let received = self.decode(text)?;
        hmac_match(&received, &self.secrets, req.body)
    }

    /// The configured header with prefix + encoded HMAC under the first secret. These senders
    /// have no standard id header, so `delivery_id` is not used.
    fn sign(&self, body: &[u8], _now_unix: i64, _delivery_id: &str) -> Vec<(String, String)> {
        let Some(key) = self.secrets.first() else {
            return Vec::new();
        };
        let mac = key.mac(&[body]);
        let encoded = match self.encoding {
            SignatureEncoding::Hex => hex::encode(mac),
            SignatureEncoding::Base64 => b64_encode(&mac),
        };
        let prefix = self.prefix.as_deref().unwrap_or("");
        vec![(self.header.clone(), format!("{prefix}{encoded}"))]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    const WC_HEADER: &str = "X-WC-Webhook-Signature";
    const GH_HEADER: &str = "X-Hub-Signature-256";

    struct Case {
        secret: String,
        body: Vec<u8>,
        signature: String,
    }

    fn woo() -> Case {
        let v = vector("woocommerce_hmac.json", "wc-test_generate_signature");
        Case {
            secret: v["secret"].as_str().unwrap().to_string(),
            body: v["body_utf8"].as_str().unwrap().as_bytes().to_vec(),
            signature: v["expected_signature"].as_str().unwrap().to_string(),
        }
    }

    fn github() -> Case {
        let v = vector("github_sha256.json", "github-docs");
        assert_eq!(
            v["headers"][GH_HEADER].as_str().unwrap(),
            v["expected_signature"].as_str().unwrap()
        );
        Case {
            secret: v["secret"].as_str().unwrap().to_string(),
            body: v["body_utf8"].as_str().unwrap().as_bytes().to_vec(),
            signature: v["expected_signature"].as_str().unwrap().to_string(),
        }
    }

    fn woo_verifier(secrets: &[&str]) -> HmacSha256 {
        HmacSha256::new(WC_HEADER, SignatureEncoding::Base64, None, secrets).unwrap()
    }

    /// `v` accepts the case's signature in `header`, and signs its body with the same.
    fn verifies_and_signs_as_the_vector(v: &HmacSha256, header: &str, c: &Case) {
        let h = headers(&[(header, &c.signature)]);
        assert_eq!(verify(v, &h, &c.body, 0), Ok(()));
        assert_eq!(
            v.sign(&c.body, 0, "x"),
            vec![(header.to_string(), c.signature.clone())]
        );
    }

    fn gh_verifier(secrets: &[&str]) -> HmacSha256 {
        HmacSha256::new(GH_HEADER, SignatureEncoding::Hex, Some("sha256="), secrets).unwrap()
    }

    published_test!(woocommerce_vector_with_empty_secret_verifies, {
        let c = woo();
        assert_eq!(c.secret, "");
        let v = woo_verifier(&[&c.secret]);
        verifies_and_signs_as_the_vector(&v, WC_HEADER, &c);
    });

    published_test!(woocommerce_from_config_defaults_to_base64, {
        let c = woo();
        let s = source(serde_json::json!({
            "scheme": "hmac-sha256", "secrets": [c.secret], "signature_header": WC_HEADER
        }));
        let v = super::super::build(&s, None).unwrap();
        let h = headers(&[("x-wc-webhook-signature", &c.signature)]);
        assert_eq!(verify(v.as_ref(), &h, &c.body, 0), Ok(()));
    });

    published_test!(github_vector_verifies, {
        let c = github();
        let v = gh_verifier(&[&c.secret]);
        verifies_and_signs_as_the_vector(&v, GH_HEADER, &c);
    });

    published_test!(github_from_config, {
        let c = github();
        let s = source(serde_json::json!({
            "scheme": "hmac-sha256", "secrets": [c.secret], "signature_header": GH_HEADER,
            "signature_encoding": "hex", "signature_prefix": "sha256="
        }));
        let v = super::super::build(&s, None).unwrap();
        let h = headers(&[(GH_HEADER, &c.signature)]);
        assert_eq!(verify(v.as_ref(), &h, &c.body, 0), Ok(()));
    });

    published_test!(github_hex_with_base64_default_is_malformed_with_a_hint, {
        let c = github();
        let v = HmacSha256::new(
            GH_HEADER,
            SignatureEncoding::Base64,
            Some("sha256="),
            &[&c.secret],
        )
        .unwrap();
        let h = headers(&[(GH_HEADER, &c.signature)]);
        let e = verify(&v, &h, &c.body, 0).unwrap_err();
        assert_eq!(e.code(), "malformed_signature");
        assert!(
            e.to_string().contains("signature_encoding = \"hex\""),
            "{e}"
        );
    });

    published_test!(uppercase_hex_and_prefix_are_accepted, {
        let c = github();
        let v = gh_verifier(&[&c.secret]);
        let upper = c.signature.to_ascii_uppercase();
        let h = headers(&[(GH_HEADER, &upper)]);
        assert_eq!(verify(&v, &h, &c.body, 0), Ok(()));
    });

    published_test!(changed_body_byte_is_a_mismatch, {
        for (c, v, name) in [
            (woo(), woo_verifier(&[""]), WC_HEADER),
            (
                github(),
                gh_verifier(&["It's a Secret to Everybody"]),
                GH_HEADER,
            ),
        ] {
            let mut body = c.body.clone();
            body[0] ^= 0x20;
            let h = headers(&[(name, &c.signature)]);
            assert_eq!(
                verify(&v, &h, &body, 0),
                Err(VerifyError::Mismatch),
                "{name}"
            );
        }
    });

    published_test!(changed_signature_char_is_a_mismatch, {
        let c = woo();
        let h = headers(&[(WC_HEADER, &flip_char(&c.signature, 3))]);
        assert_eq!(
            verify(&woo_verifier(&[""]), &h, &c.body, 0),
            Err(VerifyError::Mismatch)
        );
        let c = github();
        let mut sig = c.signature.clone();
        sig.replace_range(10..11, if &sig[10..11] == "0" { "1" } else { "0" });
        let h = headers(&[(GH_HEADER, &sig)]);
        assert_eq!(
            verify(&gh_verifier(&[&c.secret]), &h, &c.body, 0),
            Err(VerifyError::Mismatch)
        );
    });

    published_test!(wrong_secret_is_a_mismatch, {
        let c = woo();
        let h = headers(&[(WC_HEADER, &c.signature)]);
        assert_eq!(
            verify(&woo_verifier(&["x"]), &h, &c.body, 0),
            Err(VerifyError::Mismatch)
        );
        let c = github();
        let h = headers(&[(GH_HEADER, &c.signature)]);
        assert_eq!(
            verify(
                &gh_verifier(&["It's a Secret to Everybody!"]),
                &h,
                &c.body,
                0
            ),
            Err(VerifyError::Mismatch)
        );
    });

    published_test!(rotation_second_secret_matches, {
        let c = github();
        let h = headers(&[(GH_HEADER, &c.signature)]);
        assert_eq!(
            verify(&gh_verifier(&["new-secret", &c.secret]), &h, &c.body, 0),
            Ok(())
        );
        let c = woo();
        let h = headers(&[(WC_HEADER, &c.signature)]);
        assert_eq!(
            verify(&woo_verifier(&["new-secret", ""]), &h, &c.body, 0),
            Ok(())
        );
    });

    published_test!(missing_and_empty_header, {
        let c = github();
        let v = gh_verifier(&[&c.secret]);
        let want = Err(VerifyError::MissingHeader(GH_HEADER.into()));
        assert_eq!(verify(&v, &headers(&[]), &c.body, 0), want);
        assert_eq!(verify(&v, &headers(&[(GH_HEADER, "")]), &c.body, 0), want);
        // The signature under another header name does not count.
        let h = headers(&[("X-Hub-Signature", &c.signature)]);
        assert_eq!(verify(&v, &h, &c.body, 0), want);
    });

    published_test!(garbage_encodings_are_malformed, {
        let c = github();
        let v = gh_verifier(&[&c.secret]);
        let h = headers(&[(
            GH_HEADER,
            "sha256=zz7107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )]);
        assert_eq!(
            verify(&v, &h, &c.body, 0),
            Err(VerifyError::malformed(GH_HEADER, "not hex"))
        );
        let h = headers(&[(GH_HEADER, "sha256=7571")]);
        assert_eq!(
            verify(&v, &h, &c.body, 0),
            Err(VerifyError::malformed(
                GH_HEADER,
                "decodes to 2 bytes, an HMAC-SHA256 has 32"
            ))
        );
        let c = woo();
        let h = headers(&[(WC_HEADER, "GBDo00G55h6I*V+6CxqivQPLbI//KzaOZm747971tPs=")]);
        assert_eq!(
            verify(&woo_verifier(&[""]), &h, &c.body, 0),
            Err(VerifyError::malformed(WC_HEADER, "not base64"))
        );
    });

    published_test!(wrong_or_missing_prefix_is_malformed, {
        let c = github();
        let v = gh_verifier(&[&c.secret]);
        let hex_only = c.signature.strip_prefix("sha256=").unwrap();
        for value in [
            hex_only.to_string(),
            format!("sha1={hex_only}"),
            "sha25".to_string(),
        ] {
            let h = headers(&[(GH_HEADER, &value)]);
            assert_eq!(
                verify(&v, &h, &c.body, 0),
                Err(VerifyError::malformed(
                    GH_HEADER,
                    "does not start with \"sha256=\""
                )),
                "{value}"
            );
        }
    });

    #[test]
    fn prefix_boundary_on_multibyte_text_does_not_panic() {
        let v =
            HmacSha256::new(GH_HEADER, SignatureEncoding::Hex, Some("sha256="), &["s"]).unwrap();
        let mut h = http::HeaderMap::new();
        h.insert(
            GH_HEADER,
            http::HeaderValue::from_bytes("shaé56=00".as_bytes()).unwrap(),
        );
        // Not visible ASCII: refused before prefix handling.
        assert_eq!(
            verify(&v, &h, b"x", 0).unwrap_err().code(),
            "malformed_signature"
        );
    }

    #[test]
    fn config_errors() {
        let e = HmacSha256::from_source(&source(serde_json::json!({
            "scheme": "hmac-sha256", "secrets": ["s"]
        })))
        .err()
        .unwrap();
        assert!(e.contains("needs signature_header"), "{e}");
        let e = HmacSha256::from_source(&source(serde_json::json!({
            "scheme": "hmac-sha256", "secrets": ["s"], "signature_header": "bad header"
        })))
        .err()
        .unwrap();
        assert!(e.contains("not a valid HTTP header name"), "{e}");
        let e = HmacSha256::from_source(&source(serde_json::json!({
            "scheme": "hmac-sha256", "signature_header": "X-Sig"
        })))
        .err()
        .unwrap();
        assert!(e.contains("no secret configured"), "{e}");
    }
}

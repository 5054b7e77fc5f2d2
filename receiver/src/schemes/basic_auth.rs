//! `basic-auth`: HTTP Basic credentials, as an EventBridge API destination with `BASIC` auth
//! sends them.
//!
//! Why: the other credential form EventBridge connections offer for Amazon SP-API
//! notifications (Amazon itself signs nothing).
//!
//! Contract: `Authorization: Basic base64(user:password)` (scheme name case-insensitive); each
//! secret is `user:password`. The decoded credential is compared with every secret by SHA-256
//! digest in constant time, so neither content nor length leaks. A header that is not `Basic`,
//! not base64, or has no `:` is `Malformed`; a well-formed credential matching no secret is
//! `Mismatch`. A secret without `:` or with an empty user or password is a config error.
//!
//! Must never: log or echo the decoded credential, or short-circuit across secrets.

use super::{
    b64_encode, ct_match, header, require_secrets, sha256, src, Incoming, Verifier, VerifyError,
    B64,
};
use base64::Engine;
use stockhook_shared::config::SourceConfig;

pub const HEADER: &str = "Authorization";

pub struct BasicAuth {
    /// SHA-256 of each `user:password`.
    digests: Vec<[u8; 32]>,
    /// The first `user:password`, for `sign()` only.
    first: String,
}

impl BasicAuth {
    pub fn new<S: AsRef<str>>(credentials: &[S]) -> Result<BasicAuth, String> {
        if credentials.is_empty() {
            return Err("no secret configured: set secrets, secrets_env or secrets_file".into());
        }
        for (i, c) in credentials.iter().enumerate() {
            match c.as_ref().split_once(':') {
                Some((user, pass)) if !user.is_empty() && !pass.is_empty() => {}
                _ => {
                    return Err(format!(
                        "secret #{} must be \"user:password\" (both non-empty), as set on the \
                         EventBridge connection",
                        i + 1
                    ))
                }
            }
        }
        Ok(BasicAuth {
            digests: credentials
                .iter()
                .map(|c| sha256(c.as_ref().as_bytes()))
                .collect(),
            first: credentials
                .first()
                .map(|c| c.as_ref().to_string())
                .unwrap_or_default(),
        })
    }

    pub(crate) fn from_source(source: &SourceConfig) -> Result<BasicAuth, String> {
        BasicAuth::new(&require_secrets(source)?).map_err(|e| format!("{}: {e}", src(source)))
    }
}

impl Verifier for BasicAuth {
    fn verify(&self, req: &Incoming<'_>) -> Result<(), VerifyError> {
        let value = header(req.headers, "authorization", HEADER)?;
        let (scheme, encoded) = value
            .split_once(' ')
            .ok_or_else(|| VerifyError::malformed(HEADER, "expected \"Basic <base64>\""))?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(VerifyError::malformed(
                HEADER,
                "expected \"Basic <base64>\"",
            ));
        }
        let credential = B64
            .decode(encoded.trim())
            .map_err(|_| VerifyError::malformed(HEADER, "credentials are not base64"))?;
        if !credential.contains(&b':') {
            return Err(VerifyError::malformed(
                HEADER,
                "credentials are not user:password",
            ));
        }
        let received = sha256(&credential);
        ct_match(&received, &self.digests)
    }

    /// `Authorization: Basic base64(first secret)`.
    fn sign(&self, _body: &[u8], _now_unix: i64, _delivery_id: &str) -> Vec<(String, String)> {
        vec![(
            HEADER.to_string(),
            format!("Basic {}", b64_encode(self.first.as_bytes())),
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    const CRED: &str = "stockhook:s3cr3t-passw0rd";
    /// `base64("stockhook:s3cr3t-passw0rd")`, computed independently with
    /// `python3 -c 'import base64;print(base64.b64encode(b"stockhook:s3cr3t-passw0rd"))'`.
    const CRED_B64: &str = "c3RvY2tob29rOnMzY3IzdC1wYXNzdzByZA==";

    fn body() -> Vec<u8> {
        own_payload("amazon/listings_item_mfn_quantity_change.json")
    }

    fn auth(value: &str) -> http::HeaderMap {
        headers(&[("Authorization", value)])
    }

    #[test]
    fn matching_credential_verifies() {
        let s = source(
            serde_json::json!({"scheme": "basic-auth", "platform": "amazon", "secrets": [CRED]}),
        );
        let v = super::super::build(&s, None).unwrap();
        assert_eq!(
            verify(v.as_ref(), &auth(&format!("Basic {CRED_B64}")), &body(), 0),
            Ok(())
        );
        assert_eq!(
            verify(v.as_ref(), &auth(&format!("basic {CRED_B64}")), &body(), 0),
            Ok(())
        );
        assert_eq!(
            v.sign(b"", 0, ""),
            vec![("Authorization".to_string(), format!("Basic {CRED_B64}"))]
        );
    }

    #[test]
    fn changed_body_byte_does_not_matter() {
        let v = BasicAuth::new(&[CRED]).unwrap();
        let mut b = body();
        b[3] ^= 1;
        assert_eq!(
            verify(&v, &auth(&format!("Basic {CRED_B64}")), &b, 0),
            Ok(())
        );
    }

    #[test]
    fn changed_signature_char_is_a_mismatch() {
        let v = BasicAuth::new(&[CRED]).unwrap();
        let value = format!("Basic {}", flip_char(CRED_B64, 2));
        assert_eq!(
            verify(&v, &auth(&value), &body(), 0),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn wrong_password_or_user_is_a_mismatch() {
        let v = BasicAuth::new(&[CRED]).unwrap();
        for cred in [
            "stockhook:s3cr3t-passw0rD",
            "Stockhook:s3cr3t-passw0rd",
            "stockhook:",
        ] {
            let value = format!("Basic {}", b64_encode(cred.as_bytes()));
            assert_eq!(
                verify(&v, &auth(&value), &body(), 0),
                Err(VerifyError::Mismatch),
                "{cred}"
            );
        }
    }

    #[test]
    fn wrong_secret_is_a_mismatch() {
        let v = BasicAuth::new(&["other:user"]).unwrap();
        assert_eq!(
            verify(&v, &auth(&format!("Basic {CRED_B64}")), &body(), 0),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn rotation_second_secret_matches() {
        let v = BasicAuth::new(&["stockhook:new-password", CRED]).unwrap();
        assert_eq!(
            verify(&v, &auth(&format!("Basic {CRED_B64}")), &body(), 0),
            Ok(())
        );
    }

    #[test]
    fn missing_and_empty_header() {
        let v = BasicAuth::new(&[CRED]).unwrap();
        let want = Err(VerifyError::MissingHeader("Authorization".into()));
        assert_eq!(verify(&v, &headers(&[]), &body(), 0), want);
        assert_eq!(verify(&v, &auth(""), &body(), 0), want);
    }

    #[test]
    fn wrong_prefix_is_malformed() {
        let v = BasicAuth::new(&[CRED]).unwrap();
        for value in [
            format!("Bearer {CRED_B64}"),
            CRED_B64.to_string(),
            format!("Digest {CRED_B64}"),
        ] {
            assert_eq!(
                verify(&v, &auth(&value), &body(), 0),
                Err(VerifyError::malformed(
                    "Authorization",
                    "expected \"Basic <base64>\""
                )),
                "{value}"
            );
        }
    }

    #[test]
    fn garbage_base64_is_malformed() {
        let v = BasicAuth::new(&[CRED]).unwrap();
        assert_eq!(
            verify(&v, &auth("Basic ***"), &body(), 0),
            Err(VerifyError::malformed(
                "Authorization",
                "credentials are not base64"
            ))
        );
        let no_colon = format!("Basic {}", b64_encode(b"stockhooks3cr3t"));
        assert_eq!(
            verify(&v, &auth(&no_colon), &body(), 0),
            Err(VerifyError::malformed(
                "Authorization",
                "credentials are not user:password"
            ))
        );
    }

    #[test]
    fn secret_without_colon_is_a_config_error() {
        for bad in ["justapassword", ":hunter2", "alice:"] {
            let s = source(serde_json::json!({"scheme": "basic-auth", "secrets": [bad]}));
            let e = BasicAuth::from_source(&s).err().unwrap();
            assert!(e.contains("must be \"user:password\""), "{e}");
            assert!(!e.contains(bad), "leaks the secret: {e}");
        }
    }
}

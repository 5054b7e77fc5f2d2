//! `standard-webhooks`: the Standard Webhooks v1 symmetric scheme (Svix and others).
//!
//! Why: a growing number of platforms sign with this one spec, so one verifier covers them all.
//! Headers `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`, a
//! space-separated list of `<version>,<base64>` entries. The signed content is
//! `{id}.{timestamp}.{raw body}`; the HMAC key is the base64 decoding of the secret after an
//! optional `whsec_` prefix.
//!
//! Contract:
//! * the timestamp must lie within `tolerance_secs` (default 300) of the injected clock in either
//!   direction, else `StaleTimestamp`; a non-integer timestamp is `Malformed`; the timestamp is
//!   checked before the signature, as the reference libraries do;
//! * the request verifies when any `v1,` entry equals the HMAC under any configured secret
//!   (constant-time, every entry against every secret); `v1a,` (asymmetric), `v2,` and other
//!   versions are ignored, not errors; an entry that is not 32 bytes of base64 (including an
//!   empty `v1,`) never matches;
//! * no well-formed `v1,` entry at all is `Malformed`; well-formed entries none of which match
//!   are `Mismatch`.
//!
//! Must never: read the system clock, accept a request on a non-`v1` entry, or compare the
//! signature as text.

use super::{ct_any, header, require_secrets, src, HmacKey, Incoming, Verifier, VerifyError, B64};
use base64::Engine;
use stockhook_shared::config::SourceConfig;

pub use stockhook_shared::standard_webhooks::{
    ID_HEADER, SECRET_PREFIX, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};

pub struct StandardWebhooks {
    /// Decoded HMAC keys, the first one used by `sign()`.
    keys: Vec<Vec<u8>>,
    /// The same keys, keyed once for verifying (same order).
    macs: Vec<HmacKey>,
    tolerance_secs: u64,
}

impl StandardWebhooks {
    /// Keys from secrets as the platform shows them (`whsec_<base64>` or bare base64). `Err`
    /// names the (1-based) secret that does not decode, never its value.
    pub fn new<S: AsRef<str>>(secrets: &[S], tolerance_secs: u64) -> Result<Self, String> {
        let mut keys = Vec::with_capacity(secrets.len());
        for (i, secret) in secrets.iter().enumerate() {
            let secret = secret.as_ref().trim();
            let b64 = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
            if b64.is_empty() {
                return Err(format!("secret #{} is empty", i + 1));
            }
            let key = stockhook_shared::standard_webhooks::decode_key(secret).ok_or_else(|| {
                format!(
                    "secret #{} is not base64 after the optional {SECRET_PREFIX} prefix \
                     (copy it exactly as the sender shows it, e.g. whsec_MfKQ9r8GKYqrTwjU...)",
                    i + 1
                )
            })?;
            keys.push(key);
        }
        Ok(StandardWebhooks {
            macs: keys.iter().map(|k| HmacKey::new(k)).collect(),
            keys,
            tolerance_secs,
        })
    }

    pub(crate) fn from_source(source: &SourceConfig) -> Result<Self, String> {
        StandardWebhooks::new(&require_secrets(source)?, source.tolerance_secs)
            .map_err(|e| format!("{}: {e}", src(source)))
    }

    /// HMAC-SHA256 of `id.timestamp.body`, as `stockhook_shared::standard_webhooks::signature`.
    fn signature(key: &HmacKey, id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
        key.mac(&[id.as_bytes(), b".", timestamp.as_bytes(), b".", body])
    }
}

impl Verifier for StandardWebhooks {
    fn verify(&self, req: &Incoming<'_>) -> Result<(), VerifyError> {
        let id = header(req.headers, ID_HEADER, ID_HEADER)?;
        let ts_text = header(req.headers, TIMESTAMP_HEADER, TIMESTAMP_HEADER)?;
        let list = header(req.headers, SIGNATURE_HEADER, SIGNATURE_HEADER)?;

        let timestamp: i64 = ts_text.parse().map_err(|_| {
            VerifyError::malformed(TIMESTAMP_HEADER, "not an integer (Unix seconds)")
        })?;
        if req.now_unix.abs_diff(timestamp) > self.tolerance_secs {
            return Err(VerifyError::StaleTimestamp {
                timestamp,
                now: req.now_unix,
                tolerance_secs: self.tolerance_secs,
            });
        }

        let candidates: Vec<Vec<u8>> = list
            .split_ascii_whitespace()
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|b64| B64.decode(b64).ok())
            .filter(|sig| sig.len() == 32)
            .collect();
        if candidates.is_empty() {
            return Err(VerifyError::malformed(
                SIGNATURE_HEADER,
                "no v1,<base64 HMAC-SHA256> entry",
            ));
        }
        let expected: Vec<[u8; 32]> = self
            .macs
            .iter()
            .map(|k| Self::signature(k, id, ts_text, req.body))
            .collect();
        let mut matched = false;
        for candidate in &candidates {
            // `|` (not `||`): every candidate is compared against every key.
            matched |= ct_any(candidate, &expected);
        }
        matched.then_some(()).ok_or(VerifyError::Mismatch)
    }

    /// `webhook-id` = `delivery_id`, `webhook-timestamp` = `now_unix`, `webhook-signature` =
    /// `v1,<base64>` under the first secret.
    fn sign(&self, body: &[u8], now_unix: i64, delivery_id: &str) -> Vec<(String, String)> {
        let Some(key) = self.keys.first() else {
            return Vec::new();
        };
        stockhook_shared::standard_webhooks::sign_headers(key, delivery_id, now_unix, body)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    const FIXTURE: &str = "standard_webhooks.json";
    const SIGN_VECTOR: &str = "sw-sign-function (python/js/go/php/ruby/csharp)";

    struct Case {
        verifier: StandardWebhooks,
        secret: String,
        headers: http::HeaderMap,
        body: Vec<u8>,
        now: i64,
        signature: String,
    }

    impl Case {
        /// What the case's verifier says of `headers` over `body` at the case's time.
        fn check(&self, headers: &http::HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
            verify(&self.verifier, headers, body, self.now)
        }
    }

    fn case(id: &str) -> Case {
        let v = vector(FIXTURE, id);
        let secret = v["secret"].as_str().unwrap().to_string();
        let ts: i64 = v["headers"]["webhook-timestamp"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        Case {
            verifier: StandardWebhooks::new(&[&secret], 300).unwrap(),
            secret,
            headers: vector_headers(&v),
            body: v["body_utf8"].as_str().unwrap().as_bytes().to_vec(),
            now: ts,
            signature: v["headers"]["webhook-signature"]
                .as_str()
                .unwrap()
                .to_string(),
        }
    }

    fn with_signature(c: &Case, sig: &str) -> http::HeaderMap {
        let mut h = c.headers.clone();
        h.insert(SIGNATURE_HEADER, sig.parse().unwrap());
        h
    }

    published_test!(both_fixture_vectors_verify, {
        for id in [SIGN_VECTOR, "sw-rust-test_sign"] {
            let c = case(id);
            assert_eq!(c.check(&c.headers, &c.body), Ok(()), "{id}");
            let v = vector(FIXTURE, id);
            assert_eq!(
                c.signature,
                v["expected_signature"].as_str().unwrap(),
                "{id}"
            );
        }
    });

    published_test!(built_from_config_with_default_tolerance_verifies, {
        let c = case(SIGN_VECTOR);
        let s = source(serde_json::json!({"scheme": "standard-webhooks", "secrets": [c.secret]}));
        assert_eq!(s.tolerance_secs, 300);
        let built = super::super::build(&s, None).unwrap();
        assert_eq!(
            verify(built.as_ref(), &c.headers, &c.body, c.now + 300),
            Ok(())
        );
        assert_eq!(
            verify(built.as_ref(), &c.headers, &c.body, c.now + 301)
                .unwrap_err()
                .code(),
            "stale_timestamp"
        );
    });

    published_test!(secret_without_whsec_prefix_works, {
        let c = case(SIGN_VECTOR);
        let bare = c.secret.strip_prefix("whsec_").unwrap();
        let v = StandardWebhooks::new(&[bare], 300).unwrap();
        assert_eq!(verify(&v, &c.headers, &c.body, c.now), Ok(()));
    });

    published_test!(sign_reproduces_the_fixture_headers, {
        let c = case(SIGN_VECTOR);
        let out = c
            .verifier
            .sign(&c.body, c.now, "msg_p5jXN8AQM9LWM0D4loKWxJek");
        assert_eq!(
            out,
            vec![
                (
                    "webhook-id".to_string(),
                    "msg_p5jXN8AQM9LWM0D4loKWxJek".to_string()
                ),
                ("webhook-timestamp".to_string(), "1614265330".to_string()),
                (
                    "webhook-signature".to_string(),
                    "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".to_string()
                ),
            ]
        );
    });

    published_test!(fixture_negative_altered_last_char_is_a_mismatch, {
        let v = vector(FIXTURE, "sw-negative-altered-last-char (python test)");
        let c = case(SIGN_VECTOR);
        assert_eq!(
            c.check(&vector_headers(&v), &c.body),
            Err(VerifyError::Mismatch)
        );
    });

    published_test!(multi_signature_list_accepts_when_one_v1_matches, {
        let c = case(SIGN_VECTOR);
        let wrong = vector(
            FIXTURE,
            "sw-negative-multi-sig-all-wrong (go/js/python/php/ruby/csharp tests)",
        );
        let entries: Vec<&str> = wrong["webhook-signature_entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        let all_wrong = entries.join(" ");
        assert_eq!(
            c.check(&with_signature(&c, &all_wrong), &c.body),
            Err(VerifyError::Mismatch)
        );
        let with_valid = format!("{all_wrong} {}", c.signature);
        assert_eq!(c.check(&with_signature(&c, &with_valid), &c.body), Ok(()));
        let valid_first = format!("{} {all_wrong}", c.signature);
        assert_eq!(c.check(&with_signature(&c, &valid_first), &c.body), Ok(()));
    });

    published_test!(other_versions_are_ignored_not_accepted, {
        let c = case(SIGN_VECTOR);
        let b64 = c.signature.strip_prefix("v1,").unwrap();
        for version in ["v2", "v1a", "v0", "V1"] {
            let h = with_signature(&c, &format!("{version},{b64}"));
            assert_eq!(
                c.check(&h, &c.body).unwrap_err().code(),
                "malformed_signature",
                "{version}"
            );
        }
        // A v1a entry next to a valid v1 is ignored, not an error.
        let h = with_signature(&c, &format!("v1a,{b64} {}", c.signature));
        assert_eq!(c.check(&h, &c.body), Ok(()));
    });

    published_test!(empty_v1_entry_never_matches, {
        let c = case(SIGN_VECTOR);
        assert_eq!(
            c.check(&with_signature(&c, "v1,"), &c.body)
                .unwrap_err()
                .code(),
            "malformed_signature"
        );
        // Nor does it let anything through next to a wrong entry.
        let wrong = flip_char(&c.signature, 10);
        let h = with_signature(&c, &format!("v1, {wrong}"));
        assert_eq!(c.check(&h, &c.body), Err(VerifyError::Mismatch));
    });

    published_test!(changed_body_byte_is_a_mismatch, {
        let c = case(SIGN_VECTOR);
        let mut body = c.body.clone();
        let last = body.len() - 2;
        body[last] ^= 0x01;
        assert_eq!(c.check(&c.headers, &body), Err(VerifyError::Mismatch));
    });

    published_test!(changed_signature_char_is_a_mismatch, {
        let c = case(SIGN_VECTOR);
        let h = with_signature(&c, &flip_char(&c.signature, 7));
        assert_eq!(c.check(&h, &c.body), Err(VerifyError::Mismatch));
    });

    published_test!(changed_id_or_timestamp_is_a_mismatch, {
        let c = case(SIGN_VECTOR);
        let mut h = c.headers.clone();
        h.insert(ID_HEADER, "msg_other".parse().unwrap());
        assert_eq!(c.check(&h, &c.body), Err(VerifyError::Mismatch));
        let mut h = c.headers.clone();
        h.insert(TIMESTAMP_HEADER, (c.now + 1).to_string().parse().unwrap());
        assert_eq!(c.check(&h, &c.body), Err(VerifyError::Mismatch));
    });

    published_test!(wrong_secret_is_a_mismatch, {
        let c = case(SIGN_VECTOR);
        let other = case("sw-rust-test_sign");
        let v = StandardWebhooks::new(&[&other.secret], 300).unwrap();
        assert_eq!(
            verify(&v, &c.headers, &c.body, c.now),
            Err(VerifyError::Mismatch)
        );
    });

    published_test!(rotation_second_secret_matches, {
        let c = case(SIGN_VECTOR);
        let other = case("sw-rust-test_sign");
        let v = StandardWebhooks::new(&[&other.secret, &c.secret], 300).unwrap();
        assert_eq!(verify(&v, &c.headers, &c.body, c.now), Ok(()));
        let v = StandardWebhooks::new(&[&other.secret, &other.secret], 300).unwrap();
        assert_eq!(
            verify(&v, &c.headers, &c.body, c.now),
            Err(VerifyError::Mismatch)
        );
    });

    published_test!(missing_or_empty_headers, {
        let c = case(SIGN_VECTOR);
        for name in [ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER] {
            let mut h = c.headers.clone();
            h.remove(name);
            assert_eq!(
                c.check(&h, &c.body),
                Err(VerifyError::MissingHeader(name.to_string())),
                "{name} absent"
            );
            h.insert(name, "".parse().unwrap());
            assert_eq!(
                c.check(&h, &c.body),
                Err(VerifyError::MissingHeader(name.to_string())),
                "{name} empty"
            );
        }
    });

    published_test!(malformed_headers_name_what_is_wrong, {
        let c = case(SIGN_VECTOR);
        let signature = |v: &'static str| (SIGNATURE_HEADER, v, "no v1,<base64 HMAC-SHA256> entry");
        let timestamp = |v: &'static str| (TIMESTAMP_HEADER, v, "not an integer (Unix seconds)");
        for (header, value, reason) in [
            // Garbage base64, no `v1,` prefix, too short for an HMAC-SHA256.
            signature("v1,***garbage***"),
            signature("g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            signature("v1,AAAA"),
            timestamp("1614265330.5"),
            timestamp("abc"),
            timestamp("2021-02-25T15:02:10Z"),
            timestamp("99999999999999999999"),
        ] {
            let mut h = c.headers.clone();
            h.insert(header, value.parse().unwrap());
            assert_eq!(
                c.check(&h, &c.body),
                Err(VerifyError::malformed(header, reason)),
                "{value}"
            );
        }
    });

    published_test!(timestamp_tolerance_both_directions, {
        let c = case(SIGN_VECTOR);
        assert_eq!(
            verify(&c.verifier, &c.headers, &c.body, c.now + 300),
            Ok(())
        );
        assert_eq!(
            verify(&c.verifier, &c.headers, &c.body, c.now - 300),
            Ok(())
        );
        assert_eq!(
            verify(&c.verifier, &c.headers, &c.body, c.now + 301),
            Err(VerifyError::StaleTimestamp {
                timestamp: c.now,
                now: c.now + 301,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            verify(&c.verifier, &c.headers, &c.body, c.now - 301),
            Err(VerifyError::StaleTimestamp {
                timestamp: c.now,
                now: c.now - 301,
                tolerance_secs: 300
            })
        );
    });

    published_test!(tolerance_comes_from_the_source, {
        let c = case(SIGN_VECTOR);
        let s = source(serde_json::json!({
            "scheme": "standard-webhooks", "secrets": [c.secret], "tolerance_secs": 10
        }));
        let v = StandardWebhooks::from_source(&s).unwrap();
        assert_eq!(verify(&v, &c.headers, &c.body, c.now + 10), Ok(()));
        assert_eq!(
            verify(&v, &c.headers, &c.body, c.now + 11)
                .unwrap_err()
                .code(),
            "stale_timestamp"
        );
    });

    published_test!(extreme_timestamps_do_not_overflow, {
        let c = case(SIGN_VECTOR);
        let mut h = c.headers.clone();
        h.insert(TIMESTAMP_HEADER, i64::MIN.to_string().parse().unwrap());
        assert_eq!(
            verify(&c.verifier, &h, &c.body, i64::MAX)
                .unwrap_err()
                .code(),
            "stale_timestamp"
        );
    });

    #[test]
    fn bad_secret_is_a_config_error_without_the_secret() {
        let s = source(serde_json::json!({
            "scheme": "standard-webhooks", "secrets": ["whsec_not base64 at all!"]
        }));
        let e = StandardWebhooks::from_source(&s).err().unwrap();
        assert!(e.contains("secret #1 is not base64"), "{e}");
        assert!(!e.contains("not base64 at all!"), "{e}");
    }
}

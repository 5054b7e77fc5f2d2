//! `ebay`: the eBay Notification API's ECDSA signature, and its endpoint challenge.
//!
//! Why: eBay signs each notification with `X-EBAY-SIGNATURE` = base64 of a JSON object
//! `{"alg":"ecdsa","kid":"<key id>","signature":"<base64 DER ECDSA>","digest":"SHA1"}`; the
//! public key for `kid` is an ECDSA P-256 key that eBay serves by id. When an endpoint is
//! registered, eBay also sends `GET <endpoint>?challenge_code=X` and expects
//! [`challenge_response`].
//!
//! Contract:
//! * keys come from a [`KeyStore`]; [`build`](super::build) uses the static
//!   `[sources.public_keys]` (kid -> PEM, with or without newlines, exactly as eBay's API returns
//!   it). An unknown kid is `UnknownKey(kid)`. The store is a trait (also implemented for
//!   closures): for a source with `client_id` and a client secret the route builds the verifier
//!   on [`crate::ebay_keys::KeyCache`] (pinned keys first, then keys fetched from eBay). Since
//!   `verify` is synchronous, the route reads the kid with [`signature_kid`] and awaits the
//!   cache's fetch before `verify` runs;
//! * verification is ECDSA P-256 over SHA-1 of the body: first over the **raw bytes**; if that
//!   fails, over the body's **compact re-serialization** (`serde_json::from_slice::<Value>` then
//!   `to_vec`, key order preserved), because eBay's own SDKs verify over
//!   `JSON.stringify(JSON.parse(body))` / Jackson's re-serialization, and eBay's published test
//!   vector only verifies that way. So a pretty-printed body whose compact form was signed is
//!   accepted. The re-serialization can differ from JavaScript's for some numbers (`1.0` stays
//!   `1.0` in serde_json, JS writes `1`; integers beyond 2^53 keep their digits here): such a
//!   body is then checked over its raw bytes only;
//! * a header that is not base64, not the JSON object, names another algorithm or digest, or
//!   carries a signature that is not DER is `Malformed`; a valid-looking signature that does not
//!   verify is `Mismatch`; an empty body is `EmptyBody`.
//!
//! Constant-time comparison does not apply here: ECDSA verification involves only public
//! values. `sign()` returns no headers: signing needs eBay's private key.
//!
//! Must never: fetch anything over the network itself (the cache in `ebay_keys` does, before
//! `verify`), accept a kid it has no key for, or treat the re-serialization as anything but
//! a second chance for bytes that came from eBay.

use super::{for_log, header, src, Incoming, Verifier, VerifyError, B64};
use base64::Engine;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use sha1::{Digest, Sha1};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::sync::Arc;
use stockhook_shared::config::SourceConfig;

pub const SIGNATURE_HEADER: &str = "X-EBAY-SIGNATURE";

/// Where public keys come from, by kid. `None`: this store has no key for that kid.
pub trait KeyStore: Send + Sync {
    fn public_key(&self, kid: &str) -> Option<VerifyingKey>;
}

impl<F> KeyStore for F
where
    F: Fn(&str) -> Option<VerifyingKey> + Send + Sync,
{
    fn public_key(&self, kid: &str) -> Option<VerifyingKey> {
        self(kid)
    }
}

/// The keys configured under `[sources.public_keys]`.
pub struct StaticKeys(BTreeMap<String, VerifyingKey>);

impl StaticKeys {
    /// Parses every PEM; `Err` names the kid whose PEM is bad.
    pub fn from_pems(pems: &BTreeMap<String, String>) -> Result<StaticKeys, String> {
        let mut keys = BTreeMap::new();
        for (kid, pem) in pems {
            let key = parse_public_key(pem).map_err(|e| format!("public_keys.{kid:?}: {e}"))?;
            keys.insert(kid.clone(), key);
        }
        Ok(StaticKeys(keys))
    }
}

impl KeyStore for StaticKeys {
    fn public_key(&self, kid: &str) -> Option<VerifyingKey> {
        self.0.get(kid).copied()
    }
}

/// Parses a P-256 public key from PEM (`-----BEGIN PUBLIC KEY-----` SubjectPublicKeyInfo), with
/// or without line breaks (eBay's API returns it on one line), with literal `\n` escapes as
/// pasted from JSON, or as bare base64 DER.
pub fn parse_public_key(pem: &str) -> Result<VerifyingKey, String> {
    const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
    const END: &str = "-----END PUBLIC KEY-----";
    let text = pem.replace("\\n", "\n").replace("\\r", "\r");
    let text = text.trim();
    let body = match (text.find(BEGIN), text.find(END)) {
        (Some(b), Some(e)) if b + BEGIN.len() <= e => &text[b + BEGIN.len()..e],
        (None, None) if !text.contains("-----") => text,
        _ => {
            return Err(format!(
                "expected {BEGIN}<base64>{END} (a P-256 SubjectPublicKeyInfo, as eBay's \
                 getPublicKey returns it)"
            ))
        }
    };
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = B64
        .decode(b64)
        .map_err(|_| "the PEM body is not base64".to_string())?;
    VerifyingKey::from_public_key_der(&der)
        .map_err(|_| "not a P-256 (secp256r1) public key".to_string())
}

/// `hex(SHA-256(challenge_code + verification_token + endpoint_url))`: the `challengeResponse`
/// eBay expects from `GET <endpoint>?challenge_code=...`. `endpoint_url` must be exactly the URL
/// registered with eBay.
pub fn challenge_response(code: &str, verification_token: &str, endpoint_url: &str) -> String {
    let mut h = Sha256::new();
    h.update(code.as_bytes());
    h.update(verification_token.as_bytes());
    h.update(endpoint_url.as_bytes());
    hex::encode(h.finalize())
}

/// The decoded `X-EBAY-SIGNATURE` header.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct SignatureHeader {
    pub alg: String,
    pub kid: String,
    pub signature: String,
    pub digest: String,
}

impl SignatureHeader {
    pub fn parse(value: &str) -> Result<SignatureHeader, VerifyError> {
        let json = B64
            .decode(value)
            .map_err(|_| VerifyError::malformed(SIGNATURE_HEADER, "not base64"))?;
        let parsed: SignatureHeader = serde_json::from_slice(&json).map_err(|_| {
            VerifyError::malformed(
                SIGNATURE_HEADER,
                "not a JSON object with alg, kid, signature and digest",
            )
        })?;
        // The one algorithm and digest eBay signs with; `shown` is how the error names it.
        let supported = |what: &str, value: &str, expected: &str, shown: &str| {
            if value.eq_ignore_ascii_case(expected) {
                return Ok(());
            }
            let reason = format!("unsupported {what} {:?} (expected {shown})", for_log(value));
            Err(VerifyError::malformed(SIGNATURE_HEADER, reason))
        };
        supported("alg", &parsed.alg, "ecdsa", "ecdsa")?;
        supported("digest", &parsed.digest, "sha1", "SHA1")?;
        Ok(parsed)
    }
}

/// The kid a request's signature names, if its header parses: lets a fetching key cache get the
/// key before [`Verifier::verify`] runs.
pub fn signature_kid(headers: &http::HeaderMap) -> Option<String> {
    let value = header(headers, "x-ebay-signature", SIGNATURE_HEADER).ok()?;
    SignatureHeader::parse(value).ok().map(|h| h.kid)
}

/// True when `signature` is `key`'s ECDSA P-256 signature of SHA-1(`bytes`).
fn verifies(key: &VerifyingKey, signature: &Signature, bytes: &[u8]) -> bool {
    let digest = Sha1::digest(bytes);
    key.verify_prehash(&digest, signature).is_ok()
}

/// The compact re-serialization eBay's SDKs verify over, when the body is JSON.
fn compact(body: &[u8]) -> Option<Vec<u8>> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    serde_json::to_vec(&value).ok()
}

pub struct Ebay {
    keys: Arc<dyn KeyStore>,
}

impl Ebay {
    pub fn new(keys: Arc<dyn KeyStore>) -> Ebay {
        Ebay { keys }
    }

    /// The verifier with the source's pinned keys. A source that fetches keys
    /// (`client_id` + client secret) may pin none: [`super::build`] is then given its
    /// [`KeyCache`](crate::ebay_keys::KeyCache) instead (pinned keys first, then fetched ones).
    pub(crate) fn from_source(source: &SourceConfig) -> Result<Ebay, String> {
        let fetches = source.client_id.is_some() && source.client_secret.is_some();
        if source.public_keys.is_empty() && !fetches {
            let why = match (&source.client_id, &source.client_secret_env) {
                (Some(_), Some(var)) => format!(
                    "client_id is set but its secret is missing (environment variable {var} is \
                     unset or empty)"
                ),
                (Some(_), None) => {
                    "client_id is set but its secret is missing: set client_secret_env".to_string()
                }
                (None, _) => "no public key configured".to_string(),
            };
            return Err(format!(
                "{}: {why}: set client_id and client_secret_env (the app's keyset) to fetch eBay's \
                 keys by kid, or add each key eBay signs with under [sources.public_keys] as \
                 \"<kid>\" = \"-----BEGIN PUBLIC KEY-----...-----END PUBLIC KEY-----\" (the `key` \
                 field of GET /commerce/notification/v1/public_key/<kid>)",
                src(source)
            ));
        }
        let keys = StaticKeys::from_pems(&source.public_keys)
            .map_err(|e| format!("{}: {e}", src(source)))?;
        Ok(Ebay::new(Arc::new(keys)))
    }
}

impl Verifier for Ebay {
    fn verify(&self, req: &Incoming<'_>) -> Result<(), VerifyError> {
        if req.body.is_empty() {
            return Err(VerifyError::EmptyBody);
        }
        let value = header(req.headers, "x-ebay-signature", SIGNATURE_HEADER)?;
        let parsed = SignatureHeader::parse(value)?;
        let key = self
            .keys
            .public_key(&parsed.kid)
            .ok_or_else(|| VerifyError::UnknownKey(for_log(&parsed.kid)))?;
        let der = B64
            .decode(&parsed.signature)
            .map_err(|_| VerifyError::malformed(SIGNATURE_HEADER, "signature is not base64"))?;
        let signature = Signature::from_der(&der).map_err(|_| {
            VerifyError::malformed(SIGNATURE_HEADER, "signature is not a DER ECDSA signature")
        })?;
        if verifies(&key, &signature, req.body) {
            return Ok(());
        }
        match compact(req.body) {
            Some(bytes) if bytes != req.body && verifies(&key, &signature, &bytes) => Ok(()),
            _ => Err(VerifyError::Mismatch),
        }
    }

    /// Always empty: only eBay holds the private key.
    fn sign(&self, _body: &[u8], _now_unix: i64, _delivery_id: &str) -> Vec<(String, String)> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    const FIXTURE: &str = "ebay_signature.json";
    const KID: &str = "9936261a-7d7b-4621-a0f1-96ccb428af49";

    fn pem() -> String {
        let r = fixture("payloads/ebay/getPublicKey_response.json");
        r["key"].as_str().unwrap().to_string()
    }

    fn verifier() -> Ebay {
        let mut pems = BTreeMap::new();
        pems.insert(KID.to_string(), pem());
        Ebay::new(Arc::new(StaticKeys::from_pems(&pems).unwrap()))
    }

    fn case(id: &str) -> (http::HeaderMap, Vec<u8>) {
        let v = vector(FIXTURE, id);
        (
            vector_headers(&v),
            v["signed_bytes_utf8"].as_str().unwrap().as_bytes().to_vec(),
        )
    }

    fn valid_header() -> String {
        vector(FIXTURE, "ebay-valid")["headers"]["X-EBAY-SIGNATURE"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn encode_header(json: &serde_json::Value) -> String {
        super::super::b64_encode(json.to_string().as_bytes())
    }

    published_test!(valid_vector_verifies, {
        let (h, body) = case("ebay-valid");
        assert_eq!(verify(&verifier(), &h, &body, 0), Ok(()));
    });

    published_test!(valid_vector_verifies_built_from_config, {
        let v = vector(FIXTURE, "ebay-valid");
        let s = source(serde_json::json!({
            "scheme": "ebay", "platform": "ebay",
            "public_keys": {KID: v["public_key_response"]["key"]}
        }));
        let built = super::super::build(&s, None).unwrap();
        let (h, body) = case("ebay-valid");
        assert_eq!(verify(built.as_ref(), &h, &body, 0), Ok(()));
        assert!(built.sign(&body, 0, "id").is_empty());
    });

    published_test!(header_decodes_as_the_fixture_says, {
        let v = vector(FIXTURE, "ebay-valid");
        let parsed = SignatureHeader::parse(&valid_header()).unwrap();
        let want: SignatureHeader =
            serde_json::from_value(v["decoded_signature_header"].clone()).unwrap();
        assert_eq!(parsed, want);
        assert_eq!(signature_kid(&vector_headers(&v)).as_deref(), Some(KID));
    });

    published_test!(
        signed_compact_payload_file_verifies_and_matches_the_vector,
        {
            let body =
                fixture_text("payloads/ebay/marketplace_account_deletion.signed_compact.json");
            let v = vector(FIXTURE, "ebay-valid");
            assert_eq!(body, v["signed_bytes_utf8"].as_str().unwrap());
            let digest = hex::encode(Sha256::digest(body.as_bytes()));
            assert_eq!(digest, v["signed_bytes_sha256"].as_str().unwrap());
            assert_eq!(
                verify(&verifier(), &vector_headers(&v), body.as_bytes(), 0),
                Ok(())
            );
        }
    );

    // The pretty-printed message (as the Java SDK's test data has it) does not verify over its
    // raw bytes; it verifies only through the compact re-serialization, as eBay's SDKs do.
    published_test!(pretty_body_verifies_only_through_reserialization, {
        let pretty = fixture_text("payloads/ebay/marketplace_account_deletion.json");
        let sig = SignatureHeader::parse(&valid_header()).unwrap();
        let der = B64.decode(&sig.signature).unwrap();
        let signature = Signature::from_der(&der).unwrap();
        let key = parse_public_key(&pem()).unwrap();
        assert!(
            !verifies(&key, &signature, pretty.as_bytes()),
            "raw pretty bytes must fail"
        );
        let re = compact(pretty.as_bytes()).unwrap();
        assert_eq!(
            re,
            fixture_text("payloads/ebay/marketplace_account_deletion.signed_compact.json")
                .into_bytes()
        );
        assert!(verifies(&key, &signature, &re));
        let h = headers(&[("X-EBAY-SIGNATURE", &valid_header())]);
        assert_eq!(verify(&verifier(), &h, pretty.as_bytes(), 0), Ok(()));
    });

    published_test!(mismatch_vectors_are_refused, {
        for id in [
            "ebay-signature-mismatch",
            "ebay-tampered-message (java sdk)",
            "ebay-invalid (node sdk)",
        ] {
            let v = vector(FIXTURE, id);
            assert_eq!(v["expected_valid"], false);
            let (h, body) = case(id);
            assert_eq!(
                verify(&verifier(), &h, &body, 0),
                Err(VerifyError::Mismatch),
                "{id}"
            );
        }
    });

    published_test!(key_fetch_error_case_is_unknown_key, {
        // The SDKs' ERROR case: the key lookup yields nothing.
        let v = Ebay::new(Arc::new(|_: &str| None::<VerifyingKey>));
        let (h, body) = case("ebay-valid");
        assert_eq!(
            verify(&v, &h, &body, 0),
            Err(VerifyError::UnknownKey(KID.to_string()))
        );
    });

    published_test!(closure_key_store_works, {
        let key = parse_public_key(&pem()).unwrap();
        let v = Ebay::new(Arc::new(move |kid: &str| (kid == KID).then_some(key)));
        let (h, body) = case("ebay-valid");
        assert_eq!(verify(&v, &h, &body, 0), Ok(()));
    });

    published_test!(unknown_kid_is_unknown_key, {
        let mut pems = BTreeMap::new();
        pems.insert("another-kid".to_string(), pem());
        let v = Ebay::new(Arc::new(StaticKeys::from_pems(&pems).unwrap()));
        let (h, body) = case("ebay-valid");
        let e = verify(&v, &h, &body, 0).unwrap_err();
        assert_eq!(e, VerifyError::UnknownKey(KID.to_string()));
        assert_eq!(e.code(), "unknown_key");
    });

    published_test!(changed_body_byte_is_a_mismatch, {
        let (h, mut body) = case("ebay-valid");
        let at = body.iter().position(|&b| b == b't').unwrap();
        body[at] = b'T';
        assert_eq!(
            verify(&verifier(), &h, &body, 0),
            Err(VerifyError::Mismatch)
        );
        // Not JSON at all: no second chance either.
        assert_eq!(
            verify(&verifier(), &h, b"not json", 0),
            Err(VerifyError::Mismatch)
        );
    });

    published_test!(changed_signature_is_a_mismatch, {
        let (_, body) = case("ebay-valid");
        let mut sig: serde_json::Value =
            serde_json::from_slice(&B64.decode(valid_header()).unwrap()).unwrap();
        // Flip a character inside r (DER: 30 46 02 21 00 <r>): still DER, no longer valid.
        let s = sig["signature"].as_str().unwrap().to_string();
        sig["signature"] = serde_json::Value::String(flip_char(&s, 20));
        let h = headers(&[("X-EBAY-SIGNATURE", &encode_header(&sig))]);
        assert_eq!(
            verify(&verifier(), &h, &body, 0),
            Err(VerifyError::Mismatch)
        );
    });

    published_test!(wrong_key_is_a_mismatch, {
        // Same kid, another P-256 key (the "wrong secret" of a public-key scheme).
        let other = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let other_vk = *other.verifying_key();
        let v = Ebay::new(Arc::new(move |_: &str| Some(other_vk)));
        let (h, body) = case("ebay-valid");
        assert_eq!(verify(&v, &h, &body, 0), Err(VerifyError::Mismatch));
    });

    published_test!(rotation_second_key_in_config_matches, {
        // Two configured kids (eBay rotates keys by kid): the request's kid picks its key.
        let other = p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).unwrap();
        use p256::pkcs8::EncodePublicKey;
        let other_pem = other
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap();
        let s = source(serde_json::json!({
            "scheme": "ebay",
            "public_keys": {"00000000-old-kid": other_pem, KID: pem()}
        }));
        let built = super::super::build(&s, None).unwrap();
        let (h, body) = case("ebay-valid");
        assert_eq!(verify(built.as_ref(), &h, &body, 0), Ok(()));
    });

    published_test!(missing_and_empty_header, {
        let (_, body) = case("ebay-valid");
        let want = Err(VerifyError::MissingHeader(SIGNATURE_HEADER.into()));
        assert_eq!(verify(&verifier(), &headers(&[]), &body, 0), want);
        assert_eq!(
            verify(&verifier(), &headers(&[("x-ebay-signature", "")]), &body, 0),
            want
        );
    });

    published_test!(empty_body_is_refused, {
        let (h, _) = case("ebay-valid");
        assert_eq!(verify(&verifier(), &h, b"", 0), Err(VerifyError::EmptyBody));
    });

    published_test!(garbage_headers_are_malformed, {
        let (_, body) = case("ebay-valid");
        let check = |value: &str, reason: &str| {
            let h = headers(&[("X-EBAY-SIGNATURE", value)]);
            assert_eq!(
                verify(&verifier(), &h, &body, 0),
                Err(VerifyError::malformed(SIGNATURE_HEADER, reason)),
                "{value}"
            );
        };
        check("***", "not base64");
        check(
            &super::super::b64_encode(b"[1,2]"),
            "not a JSON object with alg, kid, signature and digest",
        );
        let base: serde_json::Value =
            serde_json::from_slice(&B64.decode(valid_header()).unwrap()).unwrap();
        // One field of the valid header changed, and what the error says of it.
        for (field, value, reason) in [
            ("alg", "rsa", "unsupported alg \"rsa\" (expected ecdsa)"),
            (
                "digest",
                "SHA256",
                "unsupported digest \"SHA256\" (expected SHA1)",
            ),
            ("signature", "%%%", "signature is not base64"),
            (
                "signature",
                "AAAA",
                "signature is not a DER ECDSA signature",
            ),
        ] {
            let mut changed = base.clone();
            changed[field] = value.into();
            check(&encode_header(&changed), reason);
        }
        let mut no_kid = base.clone();
        no_kid.as_object_mut().unwrap().remove("kid");
        check(
            &encode_header(&no_kid),
            "not a JSON object with alg, kid, signature and digest",
        );
    });

    published_test!(pem_parsing_is_robust, {
        let one_line = pem();
        let key = parse_public_key(&one_line).unwrap();
        let b64 = one_line
            .trim_start_matches("-----BEGIN PUBLIC KEY-----")
            .trim_end_matches("-----END PUBLIC KEY-----")
            .to_string();
        let wrapped = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n{}\n-----END PUBLIC KEY-----\n",
            &b64[..64],
            &b64[64..]
        );
        let escaped = wrapped.replace('\n', "\\n");
        for text in [wrapped.as_str(), escaped.as_str(), b64.as_str()] {
            assert_eq!(parse_public_key(text).unwrap(), key, "{text}");
        }
        assert!(parse_public_key("-----BEGIN PUBLIC KEY-----AAAA").is_err());
        assert!(parse_public_key("-----BEGIN PUBLIC KEY-----!!!-----END PUBLIC KEY-----").is_err());
        assert!(
            parse_public_key("-----BEGIN PUBLIC KEY-----AAAA-----END PUBLIC KEY-----").is_err()
        );
    });

    published_test!(config_errors_say_what_to_set, {
        let e = Ebay::from_source(&source(serde_json::json!({"scheme": "ebay"})))
            .err()
            .unwrap();
        assert!(e.contains("[sources.public_keys]"), "{e}");
        assert!(e.contains("client_secret_env"), "{e}");
        let e = Ebay::from_source(&source(serde_json::json!({
            "scheme": "ebay", "client_id": "app-id", "client_secret_env": "EBAY_CLIENT_SECRET"
        })))
        .err()
        .unwrap();
        assert!(
            e.contains("EBAY_CLIENT_SECRET is unset") && e.contains("[sources.public_keys]"),
            "{e}"
        );
        // With the secret resolved, no pinned key is needed: keys are fetched by kid.
        let mut fetching = source(serde_json::json!({
            "scheme": "ebay", "client_id": "app-id", "client_secret_env": "EBAY_CLIENT_SECRET"
        }));
        fetching.client_secret = Some(stockhook_shared::secret::Secret::new("s"));
        let v = Ebay::from_source(&fetching).ok().unwrap();
        let (h, body) = case("ebay-valid");
        assert_eq!(
            verify(&v, &h, &body, 0),
            Err(VerifyError::UnknownKey(KID.to_string()))
        );
        let e = Ebay::from_source(&source(
            serde_json::json!({"scheme": "ebay", "public_keys": {"k1": "garbage"}}),
        ))
        .err()
        .unwrap();
        assert!(e.contains("public_keys.\"k1\""), "{e}");
    });

    published_test!(challenge_response_matches_independent_values, {
        // The fixture's vector (computed there with python3 hashlib).
        let c = &fixture(FIXTURE)["challenge_vectors"][0];
        assert_eq!(
            challenge_response(
                c["challengeCode"].as_str().unwrap(),
                c["verificationToken"].as_str().unwrap(),
                c["endpoint"].as_str().unwrap()
            ),
            c["expected_response_body"]["challengeResponse"]
                .as_str()
                .unwrap()
        );
        // Literal from `python3 -c 'import hashlib; print(hashlib.sha256(("a1b2c3" +
        // "my-verification-token_0123456789abcdef" +
        // "https://hooks.example.com/webhooks/ebay-main").encode()).hexdigest())'`.
        assert_eq!(
            challenge_response(
                "a1b2c3",
                "my-verification-token_0123456789abcdef",
                "https://hooks.example.com/webhooks/ebay-main"
            ),
            "d6541b3ad8b8352cee80366e6f146a272037887d7e34f11c6f26dde7fc7c0870"
        );
        // Order matters.
        assert_ne!(
            challenge_response("b", "a", "c"),
            challenge_response("a", "b", "c")
        );
    });
}

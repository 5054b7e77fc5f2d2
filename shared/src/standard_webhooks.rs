//! The Standard Webhooks v1 symmetric signature, written once for both directions: the receiver
//! verifies it on what platforms send (`receiver/src/schemes/standard_webhooks.rs`), the worker's
//! webhook channel signs what it sends.
//!
//! Signed content: `{webhook-id}.{webhook-timestamp}.{raw body}`; key: the base64 decoding of
//! the secret after an optional `whsec_` prefix; signature header: `v1,<base64 HMAC-SHA256>`.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// The prefix Standard Webhooks secrets carry; optional, as in the reference libraries.
pub const SECRET_PREFIX: &str = "whsec_";

/// Standard base64, padding optional (secrets are pasted with or without it).
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The HMAC key of a secret as senders show it (`whsec_<base64>` or bare base64). `None` when
/// it is not base64 or decodes to nothing.
pub fn decode_key(secret: &str) -> Option<Vec<u8>> {
    let secret = secret.trim();
    let b64 = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    B64.decode(b64).ok().filter(|k| !k.is_empty())
}

/// HMAC-SHA256 of `id.timestamp.body` under `key`.
pub fn signature(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .expect("HMAC accepts keys of any length: new_from_slice never fails for Hmac<Sha256>");
    for part in [id.as_bytes(), b".", timestamp.as_bytes(), b".", body] {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The three headers for `body` sent as message `id` at `now_unix`.
pub fn sign_headers(key: &[u8], id: &str, now_unix: i64, body: &[u8]) -> Vec<(String, String)> {
    let ts = now_unix.to_string();
    let sig = signature(key, id, &ts, body);
    vec![
        (ID_HEADER.to_string(), id.to_string()),
        (TIMESTAMP_HEADER.to_string(), ts),
        (
            SIGNATURE_HEADER.to_string(),
            format!("v1,{}", STANDARD.encode(sig)),
        ),
    ]
}

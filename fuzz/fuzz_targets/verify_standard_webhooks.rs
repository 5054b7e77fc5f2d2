//! `standard-webhooks` verification. Checks: no panic; a request that verifies is within 300 s
//! of the clock and one of its `v1,` entries is the HMAC of `id.timestamp.body`, recomputed here.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use stockhook_fuzz::*;

/// The source this target verifies against.
fn source() -> serde_json::Value {
    serde_json::json!({"scheme": "standard-webhooks", "secrets": [WHSEC]})
}

fuzz_target!(|data: &[u8]| {
    if let Some(r) = verified(source, data, SW_NOW) {
        let (id, ts, list) = (
            first(&r.headers, "webhook-id").expect("verified without webhook-id"),
            first(&r.headers, "webhook-timestamp").expect("verified without a timestamp"),
            first(&r.headers, "webhook-signature").expect("verified without a signature"),
        );
        let t: i64 = ts.parse().expect("verified with a non-integer timestamp");
        assert!(
            (i128::from(r.now) - i128::from(t)).abs() <= 300,
            "stale timestamp verified"
        );
        let want = hmac_sha256(
            &whsec_key(WHSEC),
            &[id.as_bytes(), b".", ts.as_bytes(), b".", &r.body],
        );
        assert!(
            list.split_ascii_whitespace()
                .filter_map(|e| e.strip_prefix("v1,"))
                .any(|s| B64.decode(s).is_ok_and(|d| d == want)),
            "verified without a valid v1 signature"
        );
    }
});

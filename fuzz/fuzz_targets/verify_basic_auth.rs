//! `basic-auth`. Checks: no panic; a request that verifies carries `Basic base64(user:pass)`.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use stockhook_fuzz::*;

/// The source this target verifies against.
fn source() -> serde_json::Value {
    serde_json::json!({"scheme": "basic-auth", "platform": "amazon", "secrets": [BASIC]})
}

fuzz_target!(|data: &[u8]| {
    if let Some(r) = verified(source, data, 0) {
        let v = first(&r.headers, "authorization").expect("verified without Authorization");
        let (scheme, cred) = v.split_once(' ').expect("verified without a scheme");
        assert!(scheme.eq_ignore_ascii_case("basic"));
        assert_eq!(
            B64.decode(cred.trim()).ok(),
            Some(BASIC.as_bytes().to_vec())
        );
    }
});

//! `api-key`. Checks: no panic; a request that verifies carries the key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stockhook_fuzz::*;

/// The source this target verifies against.
fn source() -> serde_json::Value {
    serde_json::json!({"scheme": "api-key", "platform": "amazon", "secrets": [API_KEY]})
}

fuzz_target!(|data: &[u8]| {
    if let Some(r) = verified(source, data, 0) {
        assert_eq!(first(&r.headers, "x-api-key").as_deref(), Some(API_KEY));
    }
});

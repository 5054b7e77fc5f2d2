//! `basic-auth`. Checks: no panic; a request that verifies carries `Basic base64(user:pass)`.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use stockhook_fuzz::*;
use stockhook_receiver::schemes::Verifier;

fn verifier() -> &'static dyn Verifier {
    static V: OnceLock<Box<dyn Verifier>> = OnceLock::new();
    V.get_or_init(|| {
        build(serde_json::json!({"scheme": "basic-auth", "platform": "amazon", "secrets": [BASIC]}))
    })
    .as_ref()
}

fuzz_target!(|data: &[u8]| {
    let r = verify(verifier(), data, 0);
    if r.result.is_ok() {
        let v = first(&r.headers, "authorization").expect("verified without Authorization");
        let (scheme, cred) = v.split_once(' ').expect("verified without a scheme");
        assert!(scheme.eq_ignore_ascii_case("basic"));
        assert_eq!(
            B64.decode(cred.trim()).ok(),
            Some(BASIC.as_bytes().to_vec())
        );
    }
});

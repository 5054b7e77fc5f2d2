//! `hmac-sha256`, WooCommerce form (base64, empty secret) or GitHub form (hex, `sha256=`),
//! picked by the body's first byte. Checks: no panic; a request that verifies carries the HMAC
//! of the body, recomputed here.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use stockhook_fuzz::*;
use stockhook_receiver::schemes::Verifier;

fn verifiers() -> &'static [Box<dyn Verifier>; 2] {
    static V: OnceLock<[Box<dyn Verifier>; 2]> = OnceLock::new();
    V.get_or_init(|| {
        [
            build(serde_json::json!({"scheme": "hmac-sha256", "secrets": [WC_SECRET], "signature_header": "X-WC-Webhook-Signature"})),
            build(serde_json::json!({"scheme": "hmac-sha256", "secrets": [GITHUB_SECRET], "signature_header": "X-Hub-Signature-256", "signature_encoding": "hex", "signature_prefix": "sha256="})),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let (_, _, body) = split(data);
    let github = body.first().is_some_and(|c| c % 2 == 1);
    let r = verify(verifiers()[usize::from(github)].as_ref(), data, 0);
    if r.result.is_ok() {
        if github {
            let v = first(&r.headers, "x-hub-signature-256").expect("verified without header");
            let hex_part = v.get(7..).expect("verified without the prefix");
            assert!(
                v[..7].eq_ignore_ascii_case("sha256="),
                "verified without the prefix"
            );
            let want = hmac_sha256(GITHUB_SECRET.as_bytes(), &[&r.body]);
            assert_eq!(
                hex::decode(hex_part).ok(),
                Some(want.to_vec()),
                "bad HMAC verified"
            );
        } else {
            let v = first(&r.headers, "x-wc-webhook-signature").expect("verified without header");
            let want = hmac_sha256(WC_SECRET.as_bytes(), &[&r.body]);
            assert_eq!(B64.decode(v).ok(), Some(want.to_vec()), "bad HMAC verified");
        }
    }
});

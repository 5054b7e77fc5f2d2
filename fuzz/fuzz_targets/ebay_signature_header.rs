//! `X-EBAY-SIGNATURE` parsing: `SignatureHeader::parse` on the raw text and `signature_kid` on a
//! header map. Checks: no panic; what parses names alg ecdsa and digest SHA1.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stockhook_receiver::schemes::ebay;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(h) = ebay::SignatureHeader::parse(&text) {
        assert!(h.alg.eq_ignore_ascii_case("ecdsa"));
        assert!(h.digest.eq_ignore_ascii_case("sha1"));
    }
    if let Ok(v) = http::HeaderValue::from_bytes(data) {
        let mut m = http::HeaderMap::new();
        m.insert("x-ebay-signature", v);
        let _ = ebay::signature_kid(&m);
    }
});

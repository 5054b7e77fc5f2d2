//! `ebay-legacy` (SOAP `NotificationSignature` = base64 MD5 of Timestamp + keyset). Checks: no
//! panic; a request that verifies carries the signature of the timestamp the reader found.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use stockhook_fuzz::*;
use stockhook_receiver::schemes::ebay_legacy;

/// The source this target verifies against.
fn source() -> serde_json::Value {
    serde_json::json!({
        "scheme": "ebay-legacy", "platform": "ebay", "dev_id": LEGACY_DEV,
        "app_id": LEGACY_APP, "cert_id": LEGACY_CERT, "tolerance_secs": 300
    })
}

fuzz_target!(|data: &[u8]| {
    if let Some(r) = verified(source, data, LEGACY_NOW) {
        let f = ebay_legacy::read_soap(&r.body).expect("verified a body read_soap refuses");
        let sig = f.signature.expect("verified without a signature");
        let ts = f.timestamp.expect("verified without a timestamp");
        let want = ebay_legacy::legacy_signature(&ts, LEGACY_DEV, LEGACY_APP, LEGACY_CERT);
        assert_eq!(
            B64.decode(sig.trim()).ok(),
            B64.decode(want).ok(),
            "verified a signature that is not the MD5 of the timestamp"
        );
    }
});

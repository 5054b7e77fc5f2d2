//! The SOAP reader of `ebay-legacy` on arbitrary bytes. Checks: no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stockhook_receiver::schemes::ebay_legacy;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = ebay_legacy::read_soap(data) {
        let _ = e.to_string();
    }
});

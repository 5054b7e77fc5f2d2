//! `adapters::parse_time` on arbitrary text. Checks: no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = stockhook_worker::adapters::parse_time(&String::from_utf8_lossy(data));
});

//! The shopify adapter (`adapters::normalize`, `payload_dedup_key`, `ebay_deleted_user`) on an
//! envelope whose headers and body come from the input. Checks: no panic; normalizing twice gives
//! the same answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stockhook_shared::config::Platform;

fuzz_target!(|data: &[u8]| {
    stockhook_fuzz::normalize(Platform::Shopify, data);
});

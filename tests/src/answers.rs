//! What the end-to-end tests assert about the receiver's answers, written once: an accepted
//! event's id, a refusal's status and code, a metric's value; plus unique delivery ids and the lock
//! that keeps timing assertions away from the test that loads the machine.

use crate::http::Resp;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use stockhook_shared::envelope::EventId;

static LOAD: RwLock<()> = RwLock::new(());

/// Held by tests that assert how long something took.
pub fn timing() -> RwLockReadGuard<'static, ()> {
    LOAD.read().unwrap_or_else(|p| p.into_inner())
}

/// Held by a test that loads the machine (no timing test runs meanwhile).
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    LOAD.write().unwrap_or_else(|p| p.into_inner())
}

/// A delivery id no other request in this test run uses.
pub fn delivery_id(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Asserts a `200 {"status":"accepted","id":"evt_..."}` and returns the id.
pub fn accepted(r: &Resp) -> EventId {
    assert_eq!(r.status, 200, "{r:?}");
    let j = r.json();
    assert_eq!(j["status"], "accepted", "{r:?}");
    let id = j["id"].as_str().unwrap_or_else(|| panic!("no id: {r:?}"));
    assert!(id.starts_with("evt_") && id.len() == 20, "id {id:?}");
    EventId::parse(id).unwrap_or_else(|| panic!("unparsable id {id:?}"))
}

/// Asserts a JSON error answer with `status` and `error` code.
pub fn refused(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{r:?}");
    let j = r.json();
    assert_eq!(j["status"], "error", "{r:?}");
    assert_eq!(j["error"], code, "{r:?}");
}

/// The value of one series in a Prometheus text exposition, e.g.
/// `stockhook_requests_total{source="shop",status="200"}`.
pub fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(series))
        .find_map(|rest| rest.trim().parse().ok())
}

//! Waiting for a condition with a deadline: the only way tests here wait for something to happen.

use std::time::{Duration, Instant};

/// `Instant::now() + d`.
pub fn deadline_in(d: Duration) -> Instant {
    Instant::now() + d
}

/// Calls `f` until it returns `Some`, every 20 ms, until `deadline`; `None` if it never did.
/// `f` runs at least once, even when the deadline has passed.
pub fn poll_until<T>(deadline: Instant, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

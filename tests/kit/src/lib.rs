//! What every stockhook crate's tests need and none should write again: a free loopback port
//! ([`free_port`]), the test data in the repository and the published vectors beside it with
//! the rule for skipping ([`fixtures`]), a `nats-server` process per test ([`nats`]), a seeded
//! RNG whose seed is printed ([`rng`]), and a child process that dies with its test
//! ([`proc::KillOnDrop`]), eBay's SOAP notification template ([`ebay_soap`]), and the check
//! that a message says every part it must ([`assert_contains`]).
//!
//! Only a dev-dependency (`publish = false`): it depends on no stockhook crate, so the shared,
//! receiver and worker crates can all use it without a cycle. It panics where a test should
//! fail (a harness that cannot do its job fails the test, naming what it was doing).

pub mod ebay_soap;
pub mod fixtures;
pub mod nats;
pub mod proc;
pub mod rng;
pub mod skip;

/// A loopback port nobody listens on right now (bound to port 0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a free loopback port")
        .port()
}

/// Asserts `text` (an email, an error message, a log) contains every one of `parts`; the
/// failure names the first one missing and shows the text.
#[track_caller]
pub fn assert_contains(text: &str, parts: &[&str]) {
    if let Some(missing) = parts.iter().find(|p| !text.contains(*p)) {
        panic!("{missing:?} is not in:\n{text}");
    }
}

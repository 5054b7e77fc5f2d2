//! The end-to-end test harness: start the real `stockhook-receiver` and `stockhook-worker`
//! binaries on loopback ports in a temporary directory, and talk to them the way platforms (signed
//! HTTP requests, also malformed or slow ones) and operators (the queue socket, the CLI) do.
//!
//! What it owns: locating and building the binaries once per test run ([`bins`]), a temporary
//! directory per test ([`TestDir`]), config files ([`ConfigBuilder`]), child processes that are
//! killed on drop and dump their output when the test fails ([`Proc`]), a raw blocking HTTP/1.1
//! client ([`http`]), signers written independently of the receiver's own ([`sign`]), a blocking
//! queue socket client ([`queue`]), and polling with a deadline ([`poll_until`]).
//!
//! Rules it keeps, and tests built on it should keep: never sleep to wait for something to happen
//! (poll a condition with a deadline instead; a pause is fine only as the *input* of a test, such
//! as a slowloris client dribbling bytes); every I/O failure in the harness panics with what it
//! was doing; everything a test asserts is an exact value.

pub mod answers;
pub mod bins;
pub mod cdp;
pub mod chromium;
pub mod clients;
pub mod config;
pub mod fake_shopify;
pub mod hooks;
pub mod http;
pub mod nats_node;
pub mod payloads;
pub mod poll;
pub mod proc;
pub mod queue;
pub mod request;
pub mod sign;
pub mod smtp;
pub mod smtp_tls;
pub mod stack;

pub use config::{ConfigBuilder, SourceSpec};
pub use poll::{deadline_in, poll_until};
pub use proc::{Proc, TestDir};
/// Test data: the suite's own (`tests/data/`) and the published vectors beside the repository.
pub use stockhook_test_kit::fixtures;

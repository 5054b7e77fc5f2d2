//! How a test that cannot run here says so: one loud line on the process's stderr (not through
//! `eprintln!`, which the test harness captures for passing tests), or a failure when the
//! variable that makes it mandatory is `1` (CI sets them).

use std::io::Write as _;

/// The name of the test running on this thread: libtest runs each test on a thread named after
/// it, so a skip line can name its test without the test spelling its own name again.
pub fn current_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("a test on an unnamed thread")
        .to_string()
}

/// Whether `var` is set to `1`.
pub fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v.trim() == "1")
}

/// Skips `test` because `why` (with `how` to get it running), unless `required_var=1`, where it
/// panics instead. Returns so the caller can `return` from the test.
pub fn skip(test: &str, why: &str, how: &str, required_var: &str) {
    if required(required_var) {
        panic!("{test}: {why}, and {required_var}=1 makes this a failure: {how}");
    }
    let bar = "!".repeat(78);
    let _ = write!(
        std::io::stderr(),
        "\n{bar}\n!!! SKIPPED {test}: {why};\n!!! {how}; {required_var}=1 makes this a failure\n{bar}\n\n"
    );
}

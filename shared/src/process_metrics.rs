//! The metrics every Prometheus target is expected to have, the same in both processes:
//! `stockhook_build_info` (version and git commit, value 1) and the standard `process_*` family
//! (CPU seconds, resident memory, open file descriptors, start time) read from `/proc/self`.
//!
//! Why not a client library: these are five numbers read at scrape time; nothing is kept
//! between scrapes. On a system without `/proc` the `process_*` lines are left out, never made up.

use crate::metrics::{counter, gauge};
use std::fmt::Write as _;

/// The package version (`0.1.0`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the binary was built from (short hash), or `unknown`.
pub const GIT_COMMIT: &str = env!("BUILD_GIT_COMMIT");
/// What `--version` prints after the binary's name: `0.1.0 (commit 0123abcd4567)`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BUILD_GIT_COMMIT"),
    ")"
);

/// Appends `stockhook_build_info` and the `process_*` metrics.
pub fn render(out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP stockhook_build_info The running build: version and git commit (value 1).\n\
         # TYPE stockhook_build_info gauge\n\
         stockhook_build_info{{version=\"{VERSION}\",commit=\"{GIT_COMMIT}\"}} 1"
    );
    let Some(p) = read_proc() else { return };
    counter(
        out,
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        p.cpu_seconds,
    );
    gauge(
        out,
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        p.resident_bytes as f64,
    );
    gauge(
        out,
        "process_open_fds",
        "Number of open file descriptors.",
        p.open_fds as f64,
    );
    gauge(
        out,
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch in seconds.",
        p.start_time_seconds,
    );
}

struct ProcStats {
    cpu_seconds: f64,
    resident_bytes: u64,
    open_fds: usize,
    start_time_seconds: f64,
}

fn read_proc() -> Option<ProcStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: fields after it are
    // counted from the last ')'. Field 3 (state) is index 0 of `rest`.
    let rest: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let field = |n: usize| -> Option<f64> { rest.get(n - 3)?.parse().ok() };
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    if ticks <= 0.0 {
        return None;
    }
    let cpu_seconds = (field(14)? + field(15)?) / ticks;
    let start_ticks = field(22)?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let boot_time: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
    Some(ProcStats {
        cpu_seconds,
        resident_bytes: resident_pages * page,
        open_fds,
        start_time_seconds: boot_time + start_ticks / ticks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_build_info_and_process_metrics() {
        let mut s = String::new();
        render(&mut s);
        assert!(
            s.contains(&format!("stockhook_build_info{{version=\"{VERSION}\"")),
            "{s}"
        );
        let value = |name: &str| -> f64 {
            s.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no {name} in {s}"))
                .parse()
                .unwrap()
        };
        assert!(value("process_resident_memory_bytes") > 1e5);
        assert!(value("process_open_fds") >= 3.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = value("process_start_time_seconds");
        assert!(
            started <= now + 1.0 && started > now - 3600.0,
            "{started} vs {now}"
        );
        assert!(value("process_cpu_seconds_total") >= 0.0);
    }
}

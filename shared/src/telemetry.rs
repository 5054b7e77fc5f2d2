//! Logging setup shared by both binaries, and the few process-wide measurements the queue takes.
//!
//! Logs go to stderr: human-readable on a terminal, JSON lines otherwise (systemd's journal) or
//! when `log_format = "json"`. The level comes from `RUST_LOG` if set, else `log_level`. Nothing
//! in stockhook logs a payload body or customer data: ids, sources, topics, sizes and errors only.
//!
//! Under systemd (`$JOURNAL_STREAM` names our stderr) every line starts with its syslog priority
//! (`<3>` error, `<4>` warn, `<6>` info, `<7>` debug and trace), which journald strips and
//! records as `PRIORITY=`, so `journalctl -p warning` shows warnings and errors; the JSON line
//! after the prefix carries the event's fields.

use crate::config::LogFormat;
use crate::metrics::Histogram;
use std::io::IsTerminal;
use std::sync::{LazyLock, OnceLock};
use tracing_subscriber::fmt::format::{Format, Json, JsonFields};
use tracing_subscriber::fmt::{MakeWriter, SubscriberBuilder};
use tracing_subscriber::EnvFilter;

/// Events per group commit (one flush + fdatasync each).
pub static COMMIT_BATCH: LazyLock<Histogram> = LazyLock::new(|| {
    Histogram::new(&[
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
    ])
});

pub fn record_group_commit(events: usize) {
    COMMIT_BATCH.observe(events as f64);
}

/// Installs the global subscriber. Call once, first thing after the config is loaded.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let journal = stderr_is_journal();
    // A second init (tests starting two servers in one process) keeps the first subscriber.
    if json {
        if json_builder(filter, Stderr { journal }).try_init().is_ok() {
            let _ = JSON_LINES.set(JsonLines { journal });
        }
    } else {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(Stderr { journal })
            .with_target(false)
            .try_init();
    }
}

/// The JSON-lines subscriber [`init`] installs, writing to `writer`: one object per event,
/// `timestamp`, `level`, then the event's fields (`message` first), no target, no spans.
/// [`crate::log_line`] writes the same shape by hand.
pub fn json_builder<W>(
    filter: EnvFilter,
    writer: W,
) -> SubscriberBuilder<JsonFields, Format<Json>, EnvFilter, W>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        .json()
        .flatten_event(true)
        .with_current_span(false)
}

/// Set by [`init`] once it installed the JSON-lines subscriber.
static JSON_LINES: OnceLock<JsonLines> = OnceLock::new();

/// Where [`init`]'s JSON lines go (stderr, prefixed for the journal), for lines written by hand
/// ([`crate::log_line`]) beside the subscriber's.
#[derive(Clone, Copy, Debug)]
pub struct JsonLines {
    journal: bool,
}

/// The JSON-lines output, if that is what [`init`] installed.
pub fn json_lines() -> Option<JsonLines> {
    JSON_LINES.get().copied()
}

impl JsonLines {
    /// What a line at `level` starts with: the journal's priority, or nothing.
    pub fn prefix(&self, level: &tracing::Level) -> &'static [u8] {
        if self.journal {
            priority(level)
        } else {
            b""
        }
    }

    /// Writes complete lines (prefixed and ending in `\n`) in one call, as the subscriber does.
    pub fn write(&self, lines: &[u8]) {
        write_stderr(lines);
    }
}

fn write_stderr(b: &[u8]) {
    use std::io::Write as _;
    let _ = std::io::stderr().lock().write_all(b);
}

/// Whether stderr is the journal stream systemd set up (`$JOURNAL_STREAM` = `<dev>:<inode>` of
/// our stderr; a redirected stderr, e.g. in a pipe to a file, does not match).
fn stderr_is_journal() -> bool {
    std::env::var("JOURNAL_STREAM")
        .ok()
        .is_some_and(|v| journal_stream_matches(&v, 2))
}

fn journal_stream_matches(value: &str, fd: i32) -> bool {
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat fills the struct we own; an invalid fd is reported as an error.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    st.st_dev as u64 == dev && st.st_ino as u64 == ino
}

/// The syslog priority prefix journald understands, for a tracing level.
fn priority(level: &tracing::Level) -> &'static [u8] {
    match *level {
        tracing::Level::ERROR => b"<3>",
        tracing::Level::WARN => b"<4>",
        tracing::Level::INFO => b"<6>",
        _ => b"<7>",
    }
}

/// stderr, with each line prefixed by its priority when it is the journal.
#[derive(Clone, Copy)]
struct Stderr {
    journal: bool,
}

/// One event's output: buffered, then written to stderr in one call, each line with `prefix`.
struct EventWriter {
    prefix: Option<&'static [u8]>,
    buf: Vec<u8>,
}

impl std::io::Write for EventWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let out = match self.prefix {
            None => std::mem::take(&mut self.buf),
            Some(p) => {
                let mut out = Vec::with_capacity(self.buf.len() + 8);
                for line in self.buf.split_inclusive(|b| *b == b'\n') {
                    out.extend_from_slice(p);
                    out.extend_from_slice(line);
                }
                out
            }
        };
        write_stderr(&out);
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = EventWriter;
    fn make_writer(&'a self) -> EventWriter {
        EventWriter {
            prefix: self.journal.then_some(b"<6>".as_slice()),
            buf: Vec::new(),
        }
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> EventWriter {
        EventWriter {
            prefix: self.journal.then(|| priority(meta.level())),
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn journal_stream_is_matched_by_device_and_inode() {
        let f = tempfile::tempfile().unwrap();
        let m = f.metadata().unwrap();
        use std::os::unix::io::AsRawFd;
        let fd = f.as_raw_fd();
        assert!(journal_stream_matches(
            &format!("{}:{}", m.dev(), m.ino()),
            fd
        ));
        assert!(!journal_stream_matches(
            &format!("{}:{}", m.dev(), m.ino() + 1),
            fd
        ));
        assert!(!journal_stream_matches("garbage", fd));
    }

    #[test]
    fn every_line_gets_the_priority() {
        assert_eq!(priority(&tracing::Level::ERROR), b"<3>");
        assert_eq!(priority(&tracing::Level::WARN), b"<4>");
        assert_eq!(priority(&tracing::Level::DEBUG), b"<7>");
    }
}

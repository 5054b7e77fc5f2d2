//! Hand-written JSON log lines, for the one line that runs on every request (the receiver's
//! request line): the same object tracing-subscriber's JSON formatter writes for an event
//! (`timestamp`, `level`, `message`, then the fields in the order given; the time in RFC 3339,
//! UTC, microseconds), written in one `write` to stderr from a reused buffer, with the date and
//! time of day formatted once per second per thread.
//!
//! Why: tracing's formatter builds a map of `serde_json::Value`s per event and formats the time
//! from scratch; for the request line that was the largest cost left on the receiver's path
//! after the queue (docs/PERFORMANCE.md section 10). [`emit`] writes only when
//! [`crate::telemetry::init`] installed JSON output; otherwise it returns false and the caller
//! logs through tracing, as every other line does. The caller checks the level is enabled
//! (`tracing::enabled!`), so `RUST_LOG` and `log_level` filter this line like any other.
//! Nothing here knows what the fields are: the caller is responsible for never passing a body,
//! a token or customer data.

use std::cell::RefCell;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::Level;

/// The fields of one line, after `timestamp`, `level` and `message`.
pub struct Fields<'a> {
    buf: &'a mut Vec<u8>,
}

impl Fields<'_> {
    fn key(&mut self, name: &str) {
        self.buf.push(b',');
        string(self.buf, name);
        self.buf.push(b':');
    }
    /// A string field, escaped as JSON.
    pub fn str(&mut self, name: &str, value: &str) -> &mut Self {
        self.key(name);
        string(self.buf, value);
        self
    }
    pub fn u64(&mut self, name: &str, value: u64) -> &mut Self {
        self.key(name);
        let _ = write!(self.buf, "{value}");
        self
    }
    /// A number as serde_json writes it (shortest round-trip form; `null` when not finite).
    pub fn f64(&mut self, name: &str, value: f64) -> &mut Self {
        self.key(name);
        let _ = serde_json::to_writer(&mut *self.buf, &value);
        self
    }
}

fn string(buf: &mut Vec<u8>, s: &str) {
    // serde_json's escaping, as tracing's formatter uses: writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

/// The second the cached text is for, and `YYYY-MM-DDTHH:MM:SS` of it.
struct Clock {
    secs: u64,
    text: [u8; 19],
}

impl Clock {
    /// Appends `now` as tracing's default timer writes it: `2026-12-01T07:02:50.123456Z`.
    fn write(&mut self, now: SystemTime, out: &mut Vec<u8>) {
        let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        if d.as_secs() != self.secs || self.text[0] == 0 {
            self.secs = d.as_secs();
            self.text = date_time(self.secs);
        }
        out.extend_from_slice(&self.text);
        out.push(b'.');
        let micros = d.subsec_micros();
        let mut digits = [b'0'; 6];
        let mut n = micros;
        for slot in digits.iter_mut().rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend_from_slice(&digits);
        out.push(b'Z');
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time (UTC).
fn date_time(secs: u64) -> [u8; 19] {
    let mut text = [0u8; 19];
    let t = time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut w = &mut text[..];
    let _ = write!(
        w,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    text
}

thread_local! {
    static LINE: RefCell<(Vec<u8>, Clock)> = const {
        RefCell::new((Vec::new(), Clock { secs: 0, text: [0; 19] }))
    };
}

/// Writes one line at `level` with `message` and the fields `fields` adds, when the log is JSON
/// lines; returns false, writing nothing, otherwise (log it through tracing then).
pub fn emit(level: Level, message: &str, fields: impl FnOnce(&mut Fields<'_>)) -> bool {
    emit_with(level, message, fields, |out, line| out.write(line))
}

/// [`emit`], except that the finished line (prefix and `\n` included) goes to `write` with the
/// output it is meant for, instead of being written: for a caller that batches lines (the
/// receiver's request line). False, calling nothing, when the log is not JSON lines.
pub fn emit_with(
    level: Level,
    message: &str,
    fields: impl FnOnce(&mut Fields<'_>),
    write: impl FnOnce(crate::telemetry::JsonLines, &[u8]),
) -> bool {
    let Some(out) = crate::telemetry::json_lines() else {
        return false;
    };
    LINE.with(|cell| {
        let Ok(mut guard) = cell.try_borrow_mut() else {
            // Re-entered (a field logging while it is written): let tracing write this one.
            return false;
        };
        let (buf, clock) = &mut *guard;
        buf.clear();
        buf.extend_from_slice(out.prefix(&level));
        line(buf, clock, level, message, SystemTime::now(), fields);
        write(out, buf);
        true
    })
}

/// Appends the line (ending in `\n`) as [`emit`] writes it, at time `now`, to `buf`.
pub fn format(
    buf: &mut Vec<u8>,
    level: Level,
    message: &str,
    now: SystemTime,
    fields: impl FnOnce(&mut Fields<'_>),
) {
    let mut clock = Clock {
        secs: 0,
        text: [0; 19],
    };
    line(buf, &mut clock, level, message, now, fields);
}

fn line(
    buf: &mut Vec<u8>,
    clock: &mut Clock,
    level: Level,
    message: &str,
    now: SystemTime,
    fields: impl FnOnce(&mut Fields<'_>),
) {
    buf.extend_from_slice(br#"{"timestamp":""#);
    clock.write(now, buf);
    buf.extend_from_slice(br#"","level":""#);
    buf.extend_from_slice(level.as_str().as_bytes());
    buf.extend_from_slice(br#"","message":"#);
    string(buf, message);
    fields(&mut Fields { buf });
    buf.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_time_is_written_as_tracing_writes_it_and_the_cache_follows_the_second() {
        let mut clock = Clock {
            secs: 0,
            text: [0; 19],
        };
        let mut out = Vec::new();
        let t = UNIX_EPOCH + Duration::new(1_764_572_570, 123_456_789);
        clock.write(t, &mut out);
        assert_eq!(out, b"2025-12-01T07:02:50.123456Z");
        out.clear();
        clock.write(t + Duration::from_millis(900), &mut out);
        assert_eq!(out, b"2025-12-01T07:02:51.023456Z");
        out.clear();
        clock.write(UNIX_EPOCH + Duration::new(951_782_400, 7_000), &mut out);
        assert_eq!(out, b"2000-02-29T00:00:00.000007Z", "a leap day");
    }

    #[test]
    fn fields_are_valid_json_in_order() {
        let mut buf = Vec::new();
        Fields { buf: &mut buf }
            .str("source", "a\"b\\c\n")
            .u64("status", 200)
            .f64("latency_ms", 0.25)
            .f64("nan", f64::NAN);
        buf.remove(0);
        let v: serde_json::Value =
            serde_json::from_slice(&[b"{", &buf[..], b"}"].concat()).unwrap();
        assert_eq!(v["source"], "a\"b\\c\n");
        assert_eq!(v["status"], 200);
        assert_eq!(v["latency_ms"], 0.25);
        assert!(v["nan"].is_null());
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["source", "status", "latency_ms", "nan"]);
    }
}

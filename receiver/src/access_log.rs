//! The request line: one log line per webhook request, with the source, status, body size,
//! latency and the event id (or the refusal's reason). Never a body, a header value or a token:
//! the fields are [`Outcome`]'s, which carries none.
//!
//! Why its own module: the line runs on every request. With JSON logs (production: the journal,
//! or `log_format = "json"`) it is written by [`stockhook_shared::log_line`] rather than by
//! tracing's JSON formatter: the same object for a fraction of the instructions
//! (docs/PERFORMANCE.md section 10), and not by the handler either: the handler formats it and
//! hands it to a [`Batcher`] whose thread writes the lines that gathered in one `write`
//! (docs/PERFORMANCE.md section 13); a line that finds the batcher's buffer full is dropped and
//! counted (`stockhook_access_log_dropped_total`, and a warning), never waited for. [`finish`]
//! writes what is left at shutdown. On a terminal the line goes through tracing as before, and
//! `RUST_LOG` / `log_level` filter it like any other line.

use crate::log_batch::{Batcher, Pushed};
use crate::refusal::Outcome;
use std::sync::OnceLock;
use std::time::Duration;
use stockhook_shared::envelope::EventId;
use stockhook_shared::log_line::{self, Fields};
use stockhook_shared::telemetry::JsonLines;
use tracing::Level;

/// Bytes of request lines that may wait for the writer (~6,000 lines, a fifth of a second at
/// 30,000 requests per second); beyond that, lines are dropped.
const PENDING_BYTES: usize = 1 << 20;

/// The writer of the JSON request lines, started by the first one; `None` when its thread could
/// not be started (lines are then written by the handler, as before).
static BATCH: OnceLock<Option<Batcher>> = OnceLock::new();

fn batcher(out: JsonLines) -> Option<&'static Batcher> {
    BATCH
        .get_or_init(|| {
            let started = Batcher::start(
                "access-log",
                PENDING_BYTES,
                move |lines| out.write(lines),
                |dropped| {
                    tracing::warn!(
                        dropped,
                        "request log lines dropped: the log output did not keep up"
                    )
                },
            );
            match started {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the request log writer; writing request lines directly");
                    None
                }
            }
        })
        .as_ref()
}

/// Logs the request that ended in `o`, answered after `elapsed`.
pub fn request(o: &Outcome, elapsed: Duration) {
    let line = Line::of(o, elapsed);
    let enabled = if line.accepted() {
        tracing::enabled!(Level::INFO)
    } else {
        tracing::enabled!(Level::WARN)
    };
    let queue = |out: JsonLines, bytes: &[u8]| match batcher(out).map(|b| b.push(bytes)) {
        Some(Pushed::Queued | Pushed::Dropped) => {}
        None | Some(Pushed::Closed) => out.write(bytes),
    };
    if enabled && !log_line::emit_with(line.level(), line.message(), |f| line.fields(f), queue) {
        line.trace();
    }
}

/// Request lines dropped because the log output did not keep up, since the start.
pub fn dropped() -> u64 {
    BATCH
        .get()
        .and_then(Option::as_ref)
        .map_or(0, Batcher::dropped)
}

/// Writes the request lines still waiting and stops their writer (shutdown; any later line is
/// written directly). Call once the server stopped answering.
pub fn finish() {
    if let Some(Some(b)) = BATCH.get() {
        b.close();
    }
}

/// One request line's content.
struct Line<'a> {
    o: &'a Outcome,
    latency_ms: f64,
}

impl<'a> Line<'a> {
    fn of(o: &'a Outcome, elapsed: Duration) -> Line<'a> {
        Line {
            o,
            latency_ms: elapsed.as_secs_f64() * 1000.0,
        }
    }
    /// A 2xx: logged at info as `webhook`; anything else at warn as `webhook refused`.
    fn accepted(&self) -> bool {
        self.o.status.is_success()
    }
    fn level(&self) -> Level {
        if self.accepted() {
            Level::INFO
        } else {
            Level::WARN
        }
    }
    fn message(&self) -> &'static str {
        if self.accepted() {
            "webhook"
        } else {
            "webhook refused"
        }
    }
    /// The fields, in the order [`Line::trace`] gives them.
    fn fields(&self, f: &mut Fields<'_>) {
        let o = self.o;
        f.str("source", &o.source)
            .u64("status", o.status.as_u16().into())
            .u64("bytes", o.bytes as u64)
            .f64("latency_ms", self.latency_ms);
        if self.accepted() {
            let id = o.event_id.map(EventId::text);
            f.str("event_id", id.as_ref().map_or("", event_id_str));
        } else {
            f.str("reason", o.reason.unwrap_or(""));
        }
    }
    /// The line through tracing (text logs, or before the JSON output is installed).
    fn trace(&self) {
        let (o, latency_ms) = (self.o, self.latency_ms);
        let (source, status, bytes) = (&*o.source, o.status.as_u16(), o.bytes);
        if self.accepted() {
            let id = o.event_id.map(EventId::text);
            let event_id = id.as_ref().map_or("", event_id_str);
            tracing::info!(source, status, bytes, latency_ms, event_id, "webhook");
        } else {
            let reason = o.reason.unwrap_or("");
            tracing::warn!(source, status, bytes, latency_ms, reason, "webhook refused");
        }
    }
}

/// [`EventId::text`] as a `&str` (it is ASCII).
fn event_id_str(text: &[u8; 20]) -> &str {
    std::str::from_utf8(text).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::EnvFilter;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// The line as tracing's JSON subscriber (the one `telemetry::init` installs) writes it.
    fn traced(line: &Line<'_>) -> serde_json::Value {
        let out = Captured::default();
        let sub =
            stockhook_shared::telemetry::json_builder(EnvFilter::new("info"), out.clone()).finish();
        tracing::subscriber::with_default(sub, || line.trace());
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    fn by_hand(line: &Line<'_>) -> serde_json::Value {
        let mut buf = Vec::new();
        log_line::format(
            &mut buf,
            line.level(),
            line.message(),
            std::time::SystemTime::now(),
            |f| line.fields(f),
        );
        assert_eq!(buf.last(), Some(&b'\n'));
        serde_json::from_slice(&buf).unwrap()
    }

    #[test]
    fn the_hand_written_line_is_the_object_tracing_writes() {
        let outcomes = [
            Outcome::new("shop", StatusCode::OK, 1536, Some(EventId(0xff)), None),
            Outcome::new("shop \"x\"\n", StatusCode::OK, 0, None, Some("duplicate")),
            Outcome::new(
                "<unknown>",
                StatusCode::UNAUTHORIZED,
                12,
                None,
                Some("signature_mismatch"),
            ),
        ];
        for o in &outcomes {
            let line = Line::of(o, Duration::from_micros(1234));
            let (mut t, mut h) = (traced(&line), by_hand(&line));
            let (tt, ht) = (t["timestamp"].take(), h["timestamp"].take());
            assert_eq!(h, t, "same fields, same values");
            if o.event_id.is_some() {
                assert_eq!(h["event_id"], "evt_00000000000000ff", "the id as answered");
            }
            let keys =
                |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(&h), keys(&t), "same order");
            let (tt, ht) = (tt.as_str().unwrap(), ht.as_str().unwrap());
            assert_eq!(
                (ht.len(), &ht[19..20], &ht[26..]),
                (tt.len(), ".", "Z"),
                "{ht} / {tt}"
            );
            let parse = |t: &str| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .unwrap()
            };
            assert!((parse(ht) - parse(tt)).abs() < time::Duration::seconds(5));
        }
    }
}

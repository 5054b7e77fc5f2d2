//! A bounded, batched line writer: request handlers hand it finished log lines, one thread
//! writes whatever has gathered in one call.
//!
//! Why: the request line ([`crate::access_log`]) runs on every request, and writing it from the
//! handler cost one `write` system call per request on the hot path. Here a handler only copies
//! its line into a shared buffer (one short lock); the writer thread takes the whole buffer and
//! writes it at once. Woken by the first line after it went idle, the thread lingers up to
//! [`LINGER`] (or until half the buffer is used) before it writes, so the lines of those
//! milliseconds share one `write` and one wake-up: waking it for every line cost two `futex`
//! calls and a `write` per request (docs/PERFORMANCE.md section 13). An idle thread sleeps
//! without a timer.
//!
//! Bounded: at most `cap` bytes wait. A line that does not fit is dropped and counted, never
//! waited for: a stalled log output (a full pipe to journald) must not stall the webhooks. The
//! writer reports drops through `on_drop` after its next batch. [`Batcher::close`] writes what
//! is left and joins the thread (shutdown); lines pushed after it are the caller's to write.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the writer waits, once woken, for more lines to join a batch.
pub const LINGER: Duration = Duration::from_millis(5);

/// What [`Batcher::push`] did with a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued; the writer thread writes it.
    Queued,
    /// The buffer was full: dropped and counted.
    Dropped,
    /// [`Batcher::close`] ran: nothing was queued, the caller writes the line itself.
    Closed,
}

pub struct Batcher {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    cap: usize,
    dropped_total: AtomicU64,
    /// Drops since the writer last reported them.
    unreported: AtomicU64,
}

struct State {
    pending: Vec<u8>,
    /// The writer waits on `wake` (a push must notify it).
    parked: bool,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Batcher {
    /// Starts the writer thread (`name`): `out` writes one batch of whole lines, `on_drop` is
    /// told how many lines were dropped since its last call.
    pub fn start(
        name: &str,
        cap: usize,
        mut out: impl FnMut(&[u8]) + Send + 'static,
        mut on_drop: impl FnMut(u64) + Send + 'static,
    ) -> std::io::Result<Batcher> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pending: Vec::new(),
                parked: false,
                closed: false,
            }),
            wake: Condvar::new(),
            cap,
            dropped_total: AtomicU64::new(0),
            unreported: AtomicU64::new(0),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut batch = Vec::new();
                loop {
                    {
                        let mut st = s.lock();
                        while st.pending.is_empty() && !st.closed {
                            st.parked = true;
                            st = s.wake.wait(st).unwrap_or_else(|p| p.into_inner());
                        }
                        st.parked = false;
                        if st.pending.is_empty() {
                            break; // closed, and everything written
                        }
                        let until = Instant::now() + LINGER;
                        while !st.closed && st.pending.len() < s.cap / 2 {
                            let left = until.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                break;
                            }
                            st = s
                                .wake
                                .wait_timeout(st, left)
                                .unwrap_or_else(|p| p.into_inner())
                                .0;
                        }
                        std::mem::swap(&mut st.pending, &mut batch);
                    }
                    out(&batch);
                    batch.clear();
                    let n = s.unreported.swap(0, Ordering::Relaxed);
                    if n > 0 {
                        on_drop(n);
                    }
                }
                let n = s.unreported.swap(0, Ordering::Relaxed);
                if n > 0 {
                    on_drop(n);
                }
            })?;
        Ok(Batcher {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `line` (whole lines, ending in `\n`) for the writer, without waiting for it.
    pub fn push(&self, line: &[u8]) -> Pushed {
        let mut st = self.shared.lock();
        if st.closed {
            return Pushed::Closed;
        }
        if st.pending.len() + line.len() > self.shared.cap {
            drop(st);
            self.shared.dropped_total.fetch_add(1, Ordering::Relaxed);
            self.shared.unreported.fetch_add(1, Ordering::Relaxed);
            return Pushed::Dropped;
        }
        let half = self.shared.cap / 2;
        let crossed_half = st.pending.len() < half && st.pending.len() + line.len() >= half;
        st.pending.extend_from_slice(line);
        // Wake the writer when it sleeps, or cut its linger short when the buffer fills up.
        if st.parked || crossed_half {
            st.parked = false;
            drop(st);
            self.shared.wake.notify_one();
        }
        Pushed::Queued
    }

    /// Lines dropped since the start.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped_total.load(Ordering::Relaxed)
    }

    /// Writes everything queued, stops the thread and waits for it. Later pushes get
    /// [`Pushed::Closed`]. A second call does nothing.
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    type Written = Arc<Mutex<Vec<u8>>>;

    fn collecting(cap: usize) -> (Batcher, Written, Arc<AtomicU64>) {
        let written = Written::default();
        let reported = Arc::new(AtomicU64::new(0));
        let (w, r) = (written.clone(), reported.clone());
        let b = Batcher::start(
            "test-log",
            cap,
            move |batch| w.lock().unwrap().extend_from_slice(batch),
            move |n| {
                r.fetch_add(n, Ordering::Relaxed);
            },
        )
        .unwrap();
        (b, written, reported)
    }

    #[test]
    fn every_line_is_written_once_in_order_and_close_flushes() {
        let (b, written, reported) = collecting(1 << 20);
        let mut want = Vec::new();
        for i in 0..5000 {
            let line = format!("{{\"n\":{i}}}\n");
            assert_eq!(b.push(line.as_bytes()), Pushed::Queued);
            want.extend_from_slice(line.as_bytes());
        }
        b.close();
        assert_eq!(*written.lock().unwrap(), want);
        assert_eq!((b.dropped(), reported.load(Ordering::Relaxed)), (0, 0));
        assert_eq!(b.push(b"late\n"), Pushed::Closed);
        b.close();
    }

    #[test]
    fn a_full_buffer_drops_and_counts_instead_of_waiting() {
        // The writer blocks inside its first batch until released: nothing drains meanwhile.
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let written = Written::default();
        let reported = Arc::new(AtomicU64::new(0));
        let (w, r) = (written.clone(), reported.clone());
        let b = Batcher::start(
            "test-log",
            10,
            move |batch| {
                let _ = entered_tx.send(());
                let _ = release_rx.recv();
                w.lock().unwrap().extend_from_slice(batch);
            },
            move |n| {
                r.fetch_add(n, Ordering::Relaxed);
            },
        )
        .unwrap();
        assert_eq!(b.push(b"first\n"), Pushed::Queued);
        entered_rx.recv().unwrap();
        assert_eq!(b.push(b"12345\n"), Pushed::Queued);
        assert_eq!(b.push(b"123456\n"), Pushed::Dropped, "6 + 7 bytes > 10");
        assert_eq!(b.push(b"abc\n"), Pushed::Queued, "6 + 4 bytes fit");
        assert_eq!(b.dropped(), 1);
        drop(release_tx);
        b.close();
        assert_eq!(*written.lock().unwrap(), b"first\n12345\nabc\n");
        assert_eq!(reported.load(Ordering::Relaxed), 1, "the drop was reported");
    }
}

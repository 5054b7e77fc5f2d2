//! Client threads sharing out a list of items, for the suites that post under load while they
//! kill things (`tests/crash.rs`, `tests/nats_faults.rs`): thread `t` of `n` takes items `t`,
//! `t + n`, ..., and the count of items done can be read while they run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

pub struct Clients {
    threads: Vec<JoinHandle<()>>,
    done: Arc<AtomicUsize>,
}

impl Clients {
    /// `threads` threads calling `deliver(item)` on their share of `items`; an item counts as
    /// done when `deliver` returns true.
    pub fn start(
        items: &[u64],
        threads: usize,
        deliver: impl Fn(u64) -> bool + Send + Sync + 'static,
    ) -> Clients {
        let done = Arc::new(AtomicUsize::new(0));
        let deliver = Arc::new(deliver);
        let threads = (0..threads)
            .map(|t| {
                let mine: Vec<u64> = items.iter().copied().skip(t).step_by(threads).collect();
                let (deliver, done) = (deliver.clone(), done.clone());
                std::thread::spawn(move || {
                    for item in mine {
                        if deliver(item) {
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        Clients { threads, done }
    }

    /// How many items are done so far.
    pub fn done(&self) -> usize {
        self.done.load(Ordering::SeqCst)
    }

    /// Waits for every thread (panicking if one did); returns how many items were done.
    pub fn join(self) -> usize {
        for t in self.threads {
            t.join().expect("a client thread panicked");
        }
        self.done.load(Ordering::SeqCst)
    }
}

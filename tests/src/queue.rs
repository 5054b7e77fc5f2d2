//! The queue socket, as the worker and the ops CLI use it: a blocking wrapper ([`Queue`]) around
//! `stockhook_shared::queue::client::QueueClient` with its own single-threaded tokio runtime, so
//! tests stay plain synchronous code. One [`Queue`] per thread.
//!
//! Every call panics with the operation and the socket path on error; use [`Queue::client`] and
//! [`Queue::block_on`] to see an error as a value.

use std::future::Future;
use std::path::{Path, PathBuf};
use stockhook_shared::envelope::EventId;
use stockhook_shared::queue::client::QueueClient;
use stockhook_shared::queue::{DeadFilter, DeadLetter, Failure, Leased, QueueOps, QueueStats};

/// `<data_dir>/queue.sock`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("queue.sock")
}

/// A connected queue client with its own runtime.
pub struct Queue {
    rt: tokio::runtime::Runtime,
    client: QueueClient,
    path: PathBuf,
}

impl Queue {
    /// Connects to `<data_dir>/queue.sock` (the receiver must be running).
    pub fn connect(data_dir: &Path) -> Queue {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building a tokio runtime for the queue client");
        let path = socket_path(data_dir);
        let client = rt
            .block_on(QueueClient::connect(&path))
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", path.display()));
        Queue { rt, client, path }
    }

    pub fn client(&self) -> &QueueClient {
        &self.client
    }

    /// Runs a future on this client's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    fn expect<T, E: std::fmt::Display>(&self, what: &str, r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("queue {what} over {}: {e}", self.path.display()))
    }

    pub fn stats(&self) -> QueueStats {
        self.expect("stats", self.block_on(self.client.stats()))
    }

    /// Up to `max` events, waiting up to `wait_ms` for the first, leased for `lease_ms`.
    pub fn lease(&self, max: usize, wait_ms: u64, lease_ms: u64) -> Vec<Leased> {
        self.expect(
            "lease",
            self.block_on(self.client.lease(max, wait_ms, lease_ms)),
        )
    }

    /// Leases until nothing is left (no waiting), `lease_ms` each; in delivery order.
    pub fn lease_all(&self, lease_ms: u64) -> Vec<Leased> {
        let mut all = Vec::new();
        loop {
            let batch = self.lease(1000, 0, lease_ms);
            if batch.is_empty() {
                return all;
            }
            all.extend(batch);
        }
    }

    pub fn ack(&self, ids: Vec<EventId>) {
        self.expect("ack", self.block_on(self.client.ack(ids)))
    }

    pub fn fail(&self, id: EventId, failure: Failure) {
        self.expect("fail", self.block_on(self.client.fail(id, failure)))
    }

    pub fn dead_list(&self, filter: DeadFilter) -> Vec<DeadLetter> {
        self.expect("dead_list", self.block_on(self.client.dead_list(filter)))
    }
}

/// The queue's stats over the socket of the receiver serving `data_dir`.
pub fn queue_stats(data_dir: &Path) -> QueueStats {
    Queue::connect(data_dir).stats()
}

/// Leases everything deliverable now from the receiver serving `data_dir` (for `lease_ms`).
pub fn lease_all(data_dir: &Path, lease_ms: u64) -> Vec<Leased> {
    Queue::connect(data_dir).lease_all(lease_ms)
}

/// Each leased event's id and how many deliveries it has had, in lease order.
pub fn attempts(leased: &[Leased]) -> Vec<(EventId, u32)> {
    leased.iter().map(|l| (l.envelope.id, l.attempts)).collect()
}

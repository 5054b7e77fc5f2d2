//! Group commit: many concurrent appends, one flush and one fdatasync.
//!
//! Request handlers send their event over a bounded channel and await a oneshot answer; one
//! dedicated thread takes whatever has queued up (up to `max_batch`), writes it, syncs once, and
//! answers every sender. Under light load a batch is one event and costs one sync; under heavy
//! load batches grow by themselves, so the sync cost is shared. No lock is held across the sync
//! that a request handler would wait on, and no answer is sent before the sync returns.

use super::sled_store::SledStore;
use super::{AppendOutcome, EventSink, NewEvent, QueueError, QueueStats};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The longest a request waits for its append before answering 503.
const APPEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

type Job = (NewEvent, oneshot::Sender<Result<AppendOutcome, QueueError>>);

/// The receiver's [`EventSink`] on sled.
#[derive(Clone)]
pub struct GroupCommitter {
    tx: mpsc::Sender<Job>,
    store: Arc<SledStore>,
}

/// Joins the commit thread on shutdown: every event sent before the last sender was dropped is
/// committed and answered before `join` returns.
pub struct CommitThread(Option<std::thread::JoinHandle<()>>);

impl CommitThread {
    pub fn join(mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}

impl GroupCommitter {
    /// Starts the commit thread. `queue_depth` bounds how many appends may wait for it.
    pub fn start(
        store: Arc<SledStore>,
        max_batch: usize,
        queue_depth: usize,
    ) -> (GroupCommitter, CommitThread) {
        let (tx, mut rx) = mpsc::channel::<Job>(queue_depth.max(1));
        let thread_store = store.clone();
        let handle = std::thread::Builder::new()
            .name("queue-commit".into())
            .spawn(move || {
                let mut events = Vec::with_capacity(max_batch);
                let mut replies = Vec::with_capacity(max_batch);
                while let Some((ev, reply)) = rx.blocking_recv() {
                    events.push(ev);
                    replies.push(reply);
                    while events.len() < max_batch {
                        match rx.try_recv() {
                            Ok((ev, reply)) => {
                                events.push(ev);
                                replies.push(reply);
                            }
                            Err(_) => break,
                        }
                    }
                    let outcomes = thread_store.append_batch(&events);
                    crate::telemetry::record_group_commit(events.len());
                    for (reply, outcome) in replies.drain(..).zip(outcomes) {
                        // The requester may have gone (client hung up); the event is stored anyway.
                        let _ = reply.send(outcome);
                    }
                    events.clear();
                }
            })
            .expect("spawning the queue commit thread");
        (GroupCommitter { tx, store }, CommitThread(Some(handle)))
    }

    pub fn store(&self) -> &Arc<SledStore> {
        &self.store
    }
}

impl EventSink for GroupCommitter {
    async fn append(&self, ev: NewEvent) -> Result<AppendOutcome, QueueError> {
        let (reply, answer) = oneshot::channel();
        let wait = async {
            self.tx
                .send((ev, reply))
                .await
                .map_err(|_| QueueError::ShuttingDown)?;
            answer.await.map_err(|_| QueueError::ShuttingDown)?
        };
        // A storage that stopped answering must not hold requests (and their connections)
        // forever: answer 503 so the platform retries, and mark the store failed.
        match tokio::time::timeout(APPEND_TIMEOUT, wait).await {
            Ok(r) => r,
            Err(_) => {
                self.store.mark_failed("an append took longer than 10 s");
                Err(QueueError::storage("append", "timed out after 10 s"))
            }
        }
    }

    fn ready(&self) -> Result<(), QueueError> {
        self.store.check_budget()
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        Ok(self.store.stats())
    }
}

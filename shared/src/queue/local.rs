//! [`QueueOps`] on a sled database this process holds: what the socket server dispatches to, and
//! what the ops CLI uses directly when the receiver is stopped.
//!
//! Blocking sled calls run on tokio's blocking pool so a long poll or a flush never stalls the
//! runtime's worker threads.

use super::protocol::MAX_LEASE_BYTES;
use super::sled_store::SledStore;
use super::{now_ms, DeadFilter, DeadLetter, Failure, Leased, QueueError, QueueOps, QueueStats};
use crate::envelope::{Envelope, EventId};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct LocalQueue {
    store: Arc<SledStore>,
}

impl LocalQueue {
    pub fn new(store: Arc<SledStore>) -> LocalQueue {
        LocalQueue { store }
    }

    pub fn store(&self) -> &Arc<SledStore> {
        &self.store
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SledStore) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| QueueError::storage("queue task", e))?
    }
}

impl QueueOps for LocalQueue {
    async fn lease(
        &self,
        max: usize,
        wait_ms: u64,
        lease_ms: u64,
    ) -> Result<Vec<Leased>, QueueError> {
        let deadline = now_ms() + wait_ms as i64;
        loop {
            // Register interest before looking, so an append between the look and the wait
            // still wakes us.
            let notified = self.store.arrivals.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = now_ms();
            self.store.expire_leases(now);
            let got = self
                .blocking(move |s| s.lease_bytes(max, MAX_LEASE_BYTES, lease_ms, now))
                .await?;
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            let wake_at = self
                .store
                .next_wakeup()
                .map_or(deadline, |t| t.min(deadline));
            let nap = Duration::from_millis((wake_at - now).clamp(1, 60_000) as u64);
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn ack(&self, ids: Vec<EventId>) -> Result<(), QueueError> {
        self.blocking(move |s| s.ack(&ids, now_ms())).await
    }

    async fn fail(&self, id: EventId, failure: Failure) -> Result<(), QueueError> {
        let r = self.blocking(move |s| s.fail(id, &failure, now_ms())).await;
        // A retry time may now be the earliest wake-up of a waiting lease.
        self.store.arrivals.notify_waiters();
        r
    }

    async fn dead_list(&self, filter: DeadFilter) -> Result<Vec<DeadLetter>, QueueError> {
        self.blocking(move |s| s.dead_list(&filter)).await
    }

    async fn dead_show(&self, id: EventId) -> Result<(DeadLetter, Envelope), QueueError> {
        self.blocking(move |s| s.dead_show(id)).await
    }

    async fn dead_replay(
        &self,
        filter: DeadFilter,
        dry_run: bool,
    ) -> Result<Vec<EventId>, QueueError> {
        self.blocking(move |s| s.dead_replay(&filter, dry_run))
            .await
    }

    async fn dead_purge(
        &self,
        filter: DeadFilter,
        dry_run: bool,
    ) -> Result<Vec<EventId>, QueueError> {
        self.blocking(move |s| s.dead_purge(&filter, dry_run)).await
    }

    async fn get(&self, id: EventId) -> Result<Envelope, QueueError> {
        self.blocking(move |s| s.get(id)).await
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        Ok(self.store.stats())
    }

    async fn purge_matching(&self, source: String, needle: String) -> Result<usize, QueueError> {
        self.blocking(move |s| {
            let n = s.purge_matching(&source, needle.as_bytes())?;
            s.flush_all()?;
            Ok(n)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Platform;
    use crate::queue::sled_store::StoreOptions;
    use crate::queue::NewEvent;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_is_capped_by_bytes_and_carries_at_least_one_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(
            &dir.path().join("queue"),
            StoreOptions {
                min_free_bytes: 0,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let mib = |i: i64, n: usize| NewEvent {
            source: "s".into(),
            platform: Platform::Shopify,
            received_at_ms: i,
            headers: Vec::new(),
            body: vec![b'x'; n].into(),
            dedup_key: None,
        };
        // 40 MiB of bodies: more than one lease may carry, and one body larger than that cap.
        let mut batch: Vec<NewEvent> = (0..40).map(|i| mib(i, 1 << 20)).collect();
        batch.push(mib(40, MAX_LEASE_BYTES + 1));
        assert!(store.append_batch(&batch).iter().all(|o| o.is_ok()));
        let q = LocalQueue::new(Arc::new(store));
        let mut sizes = Vec::new();
        loop {
            let got = q.lease(256, 0, 60_000).await.unwrap();
            if got.is_empty() {
                break;
            }
            let bytes: usize = got.iter().map(|l| l.envelope.body.len()).sum();
            assert!(
                got.len() == 1 || bytes <= MAX_LEASE_BYTES,
                "{} events, {bytes} bytes in one lease",
                got.len()
            );
            sizes.push(got.len());
        }
        assert_eq!(sizes.iter().sum::<usize>(), 41, "{sizes:?}");
        assert!(sizes.len() >= 3, "{sizes:?}");
        assert_eq!(
            sizes.last(),
            Some(&1),
            "the oversized body alone: {sizes:?}"
        );
    }
}

//! The queue as the worker's drain loop sees it: the receiver's socket (sled) or JetStream
//! (`[queue] backend = "nats"`), chosen here once from the config; the pipeline only knows
//! [`QueueOps`].

use stockhook_shared::config::Config;
use stockhook_shared::envelope::{Envelope, EventId};
use stockhook_shared::queue::client::QueueClient;
use stockhook_shared::queue::nats::{NatsOptions, NatsQueue};
use stockhook_shared::queue::{
    DeadFilter, DeadLetter, Failure, Leased, QueueError, QueueOps, QueueStats,
};

pub enum WorkerQueue {
    /// `<data_dir>/queue.sock`, served by the receiver that owns the sled queue.
    Socket(QueueClient),
    /// The `STOCKHOOK_EVENTS` stream's durable pull consumer.
    Nats(Box<NatsQueue>),
}

macro_rules! each {
    ($self:ident, $q:ident => $e:expr) => {
        match $self {
            WorkerQueue::Socket($q) => $e,
            WorkerQueue::Nats($q) => $e,
        }
    };
}

impl WorkerQueue {
    pub async fn connect(config: &Config) -> Result<WorkerQueue, QueueError> {
        if config.queue.backend == "nats" {
            let opts = NatsOptions::from_config(config, "stockhook-worker");
            return Ok(WorkerQueue::Nats(Box::new(NatsQueue::connect(opts).await?)));
        }
        Ok(WorkerQueue::Socket(
            QueueClient::connect(&config.data_dir.join("queue.sock")).await?,
        ))
    }

    /// What it is connected to, for logs.
    pub fn describe(&self) -> String {
        match self {
            WorkerQueue::Socket(c) => c.path().display().to_string(),
            WorkerQueue::Nats(_) => "nats".into(),
        }
    }
}

impl QueueOps for WorkerQueue {
    async fn lease(
        &self,
        max: usize,
        wait_ms: u64,
        lease_ms: u64,
    ) -> Result<Vec<Leased>, QueueError> {
        each!(self, q => q.lease(max, wait_ms, lease_ms).await)
    }
    async fn ack(&self, ids: Vec<EventId>) -> Result<(), QueueError> {
        each!(self, q => q.ack(ids).await)
    }
    async fn fail(&self, id: EventId, failure: Failure) -> Result<(), QueueError> {
        each!(self, q => q.fail(id, failure).await)
    }
    async fn dead_list(&self, filter: DeadFilter) -> Result<Vec<DeadLetter>, QueueError> {
        each!(self, q => q.dead_list(filter).await)
    }
    async fn dead_show(&self, id: EventId) -> Result<(DeadLetter, Envelope), QueueError> {
        each!(self, q => q.dead_show(id).await)
    }
    async fn dead_replay(
        &self,
        filter: DeadFilter,
        dry_run: bool,
    ) -> Result<Vec<EventId>, QueueError> {
        each!(self, q => q.dead_replay(filter, dry_run).await)
    }
    async fn dead_purge(
        &self,
        filter: DeadFilter,
        dry_run: bool,
    ) -> Result<Vec<EventId>, QueueError> {
        each!(self, q => q.dead_purge(filter, dry_run).await)
    }
    async fn get(&self, id: EventId) -> Result<Envelope, QueueError> {
        each!(self, q => q.get(id).await)
    }
    async fn stats(&self) -> Result<QueueStats, QueueError> {
        each!(self, q => q.stats().await)
    }
    async fn purge_matching(&self, source: String, needle: String) -> Result<usize, QueueError> {
        each!(self, q => q.purge_matching(source, needle).await)
    }
}

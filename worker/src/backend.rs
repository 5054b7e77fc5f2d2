//! Where the queue and the worker's state live, opened here for the configured
//! [`Backend`]: the receiver's socket or its sled database, or NATS JetStream. The pipeline, the
//! control API and the operator's commands only know [`QueueOps`]; the state is opened for the
//! backend by `pipeline::run` and `Control::open_for`.

use std::sync::Arc;
use stockhook_shared::config::{Backend, Config};
use stockhook_shared::envelope::{Envelope, EventId};
use stockhook_shared::queue::client::QueueClient;
use stockhook_shared::queue::local::LocalQueue;
use stockhook_shared::queue::nats::{NatsOptions, NatsQueue};
use stockhook_shared::queue::sled_store::{SledStore, StoreOptions};
use stockhook_shared::queue::{
    DeadFilter, DeadLetter, Failure, Leased, QueueError, QueueOps, QueueStats,
};

/// The queue as the worker and the operator reach it.
pub enum Queue {
    /// `<data_dir>/queue.sock`, served by the receiver that owns the sled queue.
    Socket(QueueClient),
    /// The sled queue database itself, for the operator while the receiver is stopped.
    Direct(LocalQueue),
    /// The `STOCKHOOK_EVENTS` stream's durable pull consumer.
    Nats(Box<NatsQueue>),
}

macro_rules! each {
    ($self:ident, $q:ident => $e:expr) => {
        match $self {
            Queue::Socket($q) => $e,
            Queue::Direct($q) => $e,
            Queue::Nats($q) => $e,
        }
    };
}

impl Queue {
    /// The worker's queue: the receiver's socket, or JetStream.
    pub async fn connect(config: &Config) -> Result<Queue, QueueError> {
        match config.backend() {
            Backend::Nats => {
                let opts = NatsOptions::from_config(config, "stockhook-worker");
                Ok(Queue::Nats(Box::new(NatsQueue::connect(opts).await?)))
            }
            Backend::Sled => Ok(Queue::Socket(
                QueueClient::connect(&config.data_dir.join("queue.sock")).await?,
            )),
        }
    }

    /// The operator's queue: as [`Queue::connect`], but with sled and the receiver stopped,
    /// the queue database directly.
    pub async fn open(config: &Config) -> Result<Queue, QueueError> {
        if config.backend() == Backend::Nats {
            let opts = NatsOptions::from_config(config, "stockhook-worker-cli");
            return Ok(Queue::Nats(Box::new(NatsQueue::connect(opts).await?)));
        }
        let sock = config.data_dir.join("queue.sock");
        let sock_err = match QueueClient::connect(&sock).await {
            Ok(c) => return Ok(Queue::Socket(c)),
            Err(e) => e,
        };
        let path = config.data_dir.join("queue");
        if !path.exists() {
            return Err(QueueError::Socket {
                path: sock.display().to_string(),
                message: format!(
                    "{sock_err}; and there is no queue database at {} (is data_dir right?)",
                    path.display()
                ),
            });
        }
        let opts = StoreOptions {
            max_attempts: config.queue.max_attempts,
            segment_log: config.queue.sled_segments,
            ..StoreOptions::default()
        };
        Ok(Queue::Direct(LocalQueue::new(Arc::new(SledStore::open(
            &path, opts,
        )?))))
    }

    /// Whether the worker should lease its next batch while it processes this one. Yes from
    /// the receiver's socket (the receiver reads and leases on its own core meanwhile). Not
    /// from JetStream: workers share its consumer, and a worker that always holds the next
    /// batch takes what an idle worker's waiting fetch would have got (one of two workers
    /// applied 297 of 300 events so); its fetch costs a round trip, not a disk read.
    pub fn leases_ahead(&self) -> bool {
        !matches!(self, Queue::Nats(_))
    }

    /// What it is connected to, for logs.
    pub fn describe(&self) -> String {
        match self {
            Queue::Socket(c) => c.path().display().to_string(),
            Queue::Direct(_) => "queue database".into(),
            Queue::Nats(_) => "nats".into(),
        }
    }
}

/// `impl QueueOps for Queue`: each operation, as the trait names it, forwarded to the backend
/// at hand.
macro_rules! forward {
    ($(fn $op:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        impl QueueOps for Queue {
            $(
                async fn $op(&self, $($arg: $ty),*) -> Result<$ret, QueueError> {
                    each!(self, q => q.$op($($arg),*).await)
                }
            )*
        }
    };
}

forward! {
    fn lease(max: usize, wait_ms: u64, lease_ms: u64) -> Vec<Leased>;
    fn ack(ids: Vec<EventId>) -> ();
    fn fail(id: EventId, failure: Failure) -> ();
    fn dead_list(filter: DeadFilter) -> Vec<DeadLetter>;
    fn dead_show(id: EventId) -> (DeadLetter, Envelope);
    fn dead_replay(filter: DeadFilter, dry_run: bool) -> Vec<EventId>;
    fn dead_purge(filter: DeadFilter, dry_run: bool) -> Vec<EventId>;
    fn get(id: EventId) -> Envelope;
    fn stats() -> QueueStats;
    fn purge_matching(source: String, needle: String) -> usize;
}

//! The durable event queue between the receiver and the worker.
//!
//! The receiver owns the one sled database (`<data_dir>/queue`; sled locks it to one process) and
//! serves the socket API of [`protocol`] on `<data_dir>/queue.sock`; the worker and the ops CLI
//! are [`client`]s of it. When the receiver is not running, the ops CLI opens the database
//! directly through the same [`QueueOps`] trait.
//!
//! Semantics (DESIGN.md "The queue"):
//! * an append is on disk (flushed and fdatasync'd) before [`EventSink::append`] returns;
//!   concurrent appends share one flush ([`committer`]);
//! * delivery is at least once, in arrival order; a lease not acked by its deadline is delivered
//!   again; attempts are persisted;
//! * a permanent failure, or `max_attempts` transient ones, moves the event to the dead letters,
//!   which stay until replayed or purged; acked events are kept for `retention`, then purged.

pub mod client;
pub mod committer;
pub mod dedup_index;
pub mod local;
pub mod nats;
pub mod protocol;
pub mod ready;
pub mod segments;
pub mod server;
pub mod sled_store;

use crate::config::Platform;
use crate::envelope::{Envelope, EventId};
use serde::{Deserialize, Serialize};
use std::future::Future;

/// A verified event on its way in: the envelope minus the id, which the queue assigns.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The source's name, shared with the receiver's configured source (no copy per event).
    pub source: std::sync::Arc<str>,
    pub platform: Platform,
    pub received_at_ms: i64,
    /// The kept headers (`crate::envelope::KEPT_HEADERS`): the receiver's values are slices of
    /// one buffer per event, not an allocation per name and value. Values are visible ASCII.
    pub headers: Vec<(&'static str, bytes::Bytes)>,
    /// The body as received, shared with the request's buffer (no copy until the record is written).
    pub body: bytes::Bytes,
    /// The platform's delivery id, scoped by source; a repeat inside the dedup window is not stored.
    pub dedup_key: Option<String>,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendOutcome {
    /// Stored and on disk.
    Accepted(EventId),
    /// The delivery id was seen before: nothing stored; the first event's id.
    Duplicate(EventId),
}

/// One leased event.
#[derive(Debug, Clone)]
pub struct Leased {
    pub envelope: Envelope,
    /// Deliveries so far, this one included.
    pub attempts: u32,
}

/// How processing an event failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Failure {
    /// Try again, not before `retry_at_ms`; dead-lettered once attempts reach `max_attempts`.
    Transient { error: String, retry_at_ms: i64 },
    /// The same bytes will fail the same way: dead-letter now.
    Permanent { error: String },
}

/// A dead-lettered event as the operator sees it (no body unless asked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: EventId,
    pub source: String,
    pub platform: Platform,
    pub topic: Option<String>,
    pub error: String,
    pub attempts: u32,
    pub received_at_ms: i64,
    pub dead_at_ms: i64,
    pub size: usize,
}

/// Which dead letters an operation is about.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeadFilter {
    pub ids: Vec<EventId>,
    pub source: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: Option<usize>,
}

impl DeadFilter {
    pub fn matches(&self, d: &DeadLetter) -> bool {
        (self.ids.is_empty() || self.ids.contains(&d.id))
            && self.source.as_ref().is_none_or(|s| *s == d.source)
            && self.since_ms.is_none_or(|t| d.dead_at_ms >= t)
            && self.until_ms.is_none_or(|t| d.dead_at_ms < t)
    }
}

/// Counts for `stats`, `/healthz` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Waiting for delivery (ready now or waiting for a retry time).
    pub pending: u64,
    /// Delivered and not yet acked.
    pub leased: u64,
    pub dead: u64,
    /// Acked and kept for `retention`.
    pub acked_retained: u64,
    /// Bytes the database occupies on disk.
    pub disk_bytes: u64,
    /// Unix ms of the newest accepted event, if any since the database was created.
    pub last_event_at_ms: Option<i64>,
    /// Pending events per source.
    pub pending_by_source: Vec<(String, u64)>,
    pub dead_by_source: Vec<(String, u64)>,
}

/// Errors of the queue, by what a caller does about them.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The database is locked by another process (the receiver is running).
    #[error("cannot open queue at {path}: it is locked by another process (is stockhook-receiver running? stop it, or use its socket {path}.sock)")]
    Locked { path: String },
    /// Disk or database failure: the event is not stored; the caller answers 503.
    #[error("queue storage error ({context}): {message}")]
    Storage { context: String, message: String },
    /// Over `max_queue_bytes` or the disk is nearly full.
    #[error("queue is over its disk budget ({used} of {budget} bytes): drain it, raise receiver.max_queue_bytes, or run `stockhook-receiver compact`")]
    OverBudget { used: u64, budget: u64 },
    /// The socket peer is gone or spoke nonsense.
    #[error("queue socket {path}: {message}")]
    Socket { path: String, message: String },
    /// An id the operator named does not exist.
    #[error("no such event: {0}")]
    NotFound(EventId),
    /// The receiver is shutting down; retry later.
    #[error("queue is shutting down")]
    ShuttingDown,
}

impl QueueError {
    pub fn storage(context: impl Into<String>, e: impl std::fmt::Display) -> Self {
        QueueError::Storage {
            context: context.into(),
            message: e.to_string(),
        }
    }
    /// True where retrying the same call later can succeed.
    pub fn is_transient(&self) -> bool {
        !matches!(self, QueueError::NotFound(_))
    }
}

/// The receiver's side: durable appends. Implemented by the sled committer (and, at scale, by a
/// JetStream publisher), so the request path never knows which.
pub trait EventSink: Send + Sync + 'static {
    /// Returns once the event is on disk (or known to be a duplicate).
    fn append(
        &self,
        ev: NewEvent,
    ) -> impl Future<Output = Result<AppendOutcome, QueueError>> + Send;
    /// Cheap readiness: database open and under its disk budget.
    fn ready(&self) -> Result<(), QueueError>;
    fn stats(&self) -> impl Future<Output = Result<QueueStats, QueueError>> + Send;
}

/// The worker's and the operator's side. Implemented by the socket client and by the database
/// opened directly (receiver stopped).
pub trait QueueOps: Send + Sync {
    /// Up to `max` events, waiting up to `wait_ms` for the first one. Each is leased for
    /// `lease_ms`; unacked by then, it is delivered again.
    fn lease(
        &self,
        max: usize,
        wait_ms: u64,
        lease_ms: u64,
    ) -> impl Future<Output = Result<Vec<Leased>, QueueError>> + Send;
    fn ack(&self, ids: Vec<EventId>) -> impl Future<Output = Result<(), QueueError>> + Send;
    fn fail(
        &self,
        id: EventId,
        failure: Failure,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
    fn dead_list(
        &self,
        filter: DeadFilter,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, QueueError>> + Send;
    fn dead_show(
        &self,
        id: EventId,
    ) -> impl Future<Output = Result<(DeadLetter, Envelope), QueueError>> + Send;
    /// Moves matching dead letters back to pending (attempts reset); returns their ids.
    fn dead_replay(
        &self,
        filter: DeadFilter,
        dry_run: bool,
    ) -> impl Future<Output = Result<Vec<EventId>, QueueError>> + Send;
    fn dead_purge(
        &self,
        filter: DeadFilter,
        dry_run: bool,
    ) -> impl Future<Output = Result<Vec<EventId>, QueueError>> + Send;
    /// A retained (acked or dead) event by id, body included: to re-run it after a rule change.
    fn get(&self, id: EventId) -> impl Future<Output = Result<Envelope, QueueError>> + Send;
    fn stats(&self) -> impl Future<Output = Result<QueueStats, QueueError>> + Send;
    /// Deletes every retained event of `source` whose body contains `needle` (not those waiting
    /// for delivery): an eBay account deletion. Returns how many.
    fn purge_matching(
        &self,
        source: String,
        needle: String,
    ) -> impl Future<Output = Result<usize, QueueError>> + Send;
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

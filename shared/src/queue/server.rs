//! The receiver's side of the queue socket: the [`protocol`] operations answered from a
//! [`LocalQueue`], served by [`crate::rpc`] on `<data_dir>/queue.sock` (bound 0600).
//!
//! [`protocol`]: super::protocol

use super::local::LocalQueue;
use super::protocol::{refusal, Op, WireDeadShow, WireEnvelope, WireLeased};
use super::{QueueError, QueueOps};
use crate::rpc::{self, Response, Service, VERSION};
use std::path::Path;
use std::sync::Arc;
use tokio::net::UnixListener;
use tokio::sync::watch;

/// Binds the socket with mode 0600 ([`rpc::bind_private`]).
pub fn bind(path: &Path) -> Result<UnixListener, QueueError> {
    rpc::bind_private(path).map_err(|e| QueueError::Socket {
        path: e.path,
        message: format!("{}: {}", e.step, e.source),
    })
}

/// Serves until `shutdown` turns true. Open long polls are answered (empty) at shutdown.
pub async fn serve(listener: UnixListener, queue: LocalQueue, shutdown: watch::Receiver<bool>) {
    rpc::serve(listener, Arc::new(QueueService(queue)), shutdown).await
}

struct QueueService(LocalQueue);

impl Service for QueueService {
    type Op = Op;
    const NAME: &'static str = "receiver";

    async fn call(&self, op: Op) -> Response {
        dispatch(&self.0, op).await
    }

    /// A long poll must not hold shutdown up: answer it empty instead.
    fn at_shutdown(&self, op: &Op) -> Option<Response> {
        matches!(op, Op::Lease { .. }).then(|| Response::ok(Vec::<WireLeased>::new()))
    }
}

async fn dispatch(q: &LocalQueue, op: Op) -> Response {
    fn answer<T, U: serde::Serialize>(
        r: Result<T, QueueError>,
        f: impl FnOnce(T) -> U,
    ) -> Response {
        match r {
            Ok(v) => Response::ok(f(v)),
            Err(e) => refusal(&e),
        }
    }
    match op {
        Op::Hello => Response::ok(serde_json::json!({
            "server": concat!("stockhook-receiver ", env!("CARGO_PKG_VERSION")),
            "versions": [VERSION],
        })),
        Op::Lease {
            max,
            wait_ms,
            lease_ms,
        } => answer(q.lease(max, wait_ms.min(60_000), lease_ms).await, |v| {
            v.iter().map(WireLeased::from).collect::<Vec<_>>()
        }),
        Op::Ack { ids } => answer(q.ack(ids).await, |_| ()),
        Op::Fail { id, failure } => answer(q.fail(id, failure).await, |_| ()),
        Op::DeadList { filter } => answer(q.dead_list(filter).await, |v| v),
        Op::DeadShow { id } => answer(q.dead_show(id).await, |(dead, env)| WireDeadShow {
            dead,
            event: WireEnvelope::from(&env),
        }),
        Op::DeadReplay { filter, dry_run } => answer(q.dead_replay(filter, dry_run).await, |v| v),
        Op::DeadPurge { filter, dry_run } => answer(q.dead_purge(filter, dry_run).await, |v| v),
        Op::Get { id } => answer(q.get(id).await, |e| WireEnvelope::from(&e)),
        Op::Stats => answer(q.stats().await, |s| s),
        Op::PurgeMatching { source, needle } => {
            answer(q.purge_matching(source, needle).await, |n| n)
        }
    }
}

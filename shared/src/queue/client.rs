//! The worker's and the ops CLI's side of the queue socket: [`QueueOps`] over
//! `<data_dir>/queue.sock`. One request at a time per client; on any I/O error the connection is
//! dropped and the next call reconnects, so a receiver restart costs the caller one error.

use super::protocol::{Op, WireDeadShow, WireEnvelope, WireLeased};
use super::{DeadFilter, DeadLetter, Failure, Leased, QueueError, QueueOps, QueueStats};
use crate::envelope::{Envelope, EventId};
use crate::rpc::{RpcClient, RpcError};
use serde::de::DeserializeOwned;
use std::path::Path;

pub struct QueueClient(RpcClient);

impl QueueClient {
    /// Connects and checks that the receiver speaks our protocol version.
    pub async fn connect(path: &Path) -> Result<QueueClient, QueueError> {
        let c = RpcClient::connect(path)
            .await
            .map(QueueClient)
            .map_err(|e| socket_error(path, e))?;
        let _: serde_json::Value = c.call(Op::Hello).await?;
        Ok(c)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    async fn call<T: DeserializeOwned>(&self, op: Op) -> Result<T, QueueError> {
        self.0
            .call(op)
            .await
            .map_err(|e| socket_error(self.path(), e))
    }
}

/// An RPC failure as the queue's error, saying what to check.
fn socket_error(path: &Path, e: RpcError) -> QueueError {
    let message = match e {
        RpcError::Refused {
            not_found: Some(id),
            message,
        } => match EventId::parse(&id) {
            Some(id) => return QueueError::NotFound(id),
            None => message,
        },
        RpcError::Connect(e) => {
            format!("cannot connect ({e}): is stockhook-receiver running with the same data_dir?")
        }
        RpcError::Closed => "the receiver closed the connection (restarting?)".into(),
        e => e.to_string(),
    };
    QueueError::Socket {
        path: path.display().to_string(),
        message,
    }
}

fn envelope(w: WireEnvelope, path: &Path) -> Result<Envelope, QueueError> {
    w.into_envelope().map_err(|message| QueueError::Socket {
        path: path.display().to_string(),
        message,
    })
}

impl QueueOps for QueueClient {
    async fn lease(
        &self,
        max: usize,
        wait_ms: u64,
        lease_ms: u64,
    ) -> Result<Vec<Leased>, QueueError> {
        let wire: Vec<WireLeased> = self
            .call(Op::Lease {
                max,
                wait_ms,
                lease_ms,
            })
            .await?;
        wire.into_iter()
            .map(|w| {
                Ok(Leased {
                    envelope: envelope(w.event, self.path())?,
                    attempts: w.attempts,
                })
            })
            .collect()
    }

    async fn ack(&self, ids: Vec<EventId>) -> Result<(), QueueError> {
        self.call::<()>(Op::Ack { ids }).await
    }

    async fn fail(&self, id: EventId, failure: Failure) -> Result<(), QueueError> {
        self.call::<()>(Op::Fail { id, failure }).await
    }

    async fn dead_list(&self, filter: DeadFilter) -> Result<Vec<DeadLetter>, QueueError> {
        self.call(Op::DeadList { filter }).await
    }

    async fn dead_show(&self, id: EventId) -> Result<(DeadLetter, Envelope), QueueError> {
        let w: WireDeadShow = self.call(Op::DeadShow { id }).await?;
        Ok((w.dead, envelope(w.event, self.path())?))
    }

    async fn dead_replay(
        &self,
        filter: DeadFilter,
        dry_run: bool,
    ) -> Result<Vec<EventId>, QueueError> {
        self.call(Op::DeadReplay { filter, dry_run }).await
    }

    async fn dead_purge(
        &self,
        filter: DeadFilter,
        dry_run: bool,
    ) -> Result<Vec<EventId>, QueueError> {
        self.call(Op::DeadPurge { filter, dry_run }).await
    }

    async fn get(&self, id: EventId) -> Result<Envelope, QueueError> {
        let w: WireEnvelope = self.call(Op::Get { id }).await?;
        envelope(w, self.path())
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.call(Op::Stats).await
    }

    async fn purge_matching(&self, source: String, needle: String) -> Result<usize, QueueError> {
        self.call(Op::PurgeMatching { source, needle }).await
    }
}

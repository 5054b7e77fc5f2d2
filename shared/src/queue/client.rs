//! The worker's and the ops CLI's side of the queue socket: [`QueueOps`] over
//! `<data_dir>/queue.sock`. One request at a time per client; on any I/O error the connection is
//! dropped and the next call reconnects, so a receiver restart costs the caller one error.

use super::protocol::{
    read_frame, write_frame, Op, Request, Response, WireDeadShow, WireEnvelope, WireLeased, VERSION,
};
use super::{DeadFilter, DeadLetter, Failure, Leased, QueueError, QueueOps, QueueStats};
use crate::envelope::{Envelope, EventId};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use tokio::net::UnixStream;
use tokio::sync::Mutex;

pub struct QueueClient {
    path: PathBuf,
    conn: Mutex<Option<UnixStream>>,
}

impl QueueClient {
    /// Connects and checks that the receiver speaks our protocol version.
    pub async fn connect(path: &Path) -> Result<QueueClient, QueueError> {
        let c = QueueClient {
            path: path.to_path_buf(),
            conn: Mutex::new(None),
        };
        let _: serde_json::Value = c.call(Op::Hello).await?;
        Ok(c)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sock_err(&self, message: impl Into<String>) -> QueueError {
        QueueError::Socket {
            path: self.path.display().to_string(),
            message: message.into(),
        }
    }

    async fn call<T: DeserializeOwned>(&self, op: Op) -> Result<T, QueueError> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            let s = UnixStream::connect(&self.path).await.map_err(|e| {
                self.sock_err(format!(
                    "cannot connect ({e}): is stockhook-receiver running with the same data_dir?"
                ))
            })?;
            *guard = Some(s);
        }
        let stream = guard.as_mut().expect("connected just above");
        let req = Request { v: VERSION, op };
        let result: std::io::Result<Option<Response>> = async {
            write_frame(stream, &req).await?;
            read_frame(stream).await
        }
        .await;
        let resp = match result {
            Ok(Some(r)) => r,
            Ok(None) => {
                *guard = None;
                return Err(self.sock_err("the receiver closed the connection (restarting?)"));
            }
            Err(e) => {
                *guard = None;
                return Err(self.sock_err(e.to_string()));
            }
        };
        if !resp.ok {
            if let Some(id) = resp.not_found {
                return Err(QueueError::NotFound(id));
            }
            return Err(self.sock_err(
                resp.error
                    .unwrap_or_else(|| "error without a message".into()),
            ));
        }
        serde_json::from_value(resp.result.unwrap_or(serde_json::Value::Null))
            .map_err(|e| self.sock_err(format!("unexpected answer: {e}")))
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
                    envelope: envelope(w.event, &self.path)?,
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
        Ok((w.dead, envelope(w.event, &self.path)?))
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
        envelope(w, &self.path)
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.call(Op::Stats).await
    }

    async fn purge_matching(&self, source: String, needle: String) -> Result<usize, QueueError> {
        self.call(Op::PurgeMatching { source, needle }).await
    }
}

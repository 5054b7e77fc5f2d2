//! The queue socket's wire protocol, version 1.
//!
//! Transport: a Unix stream socket at `<data_dir>/queue.sock` (mode 0600: only the service user
//! may talk to it). Each message is a frame: a 4-byte big-endian length, then that many bytes of
//! JSON. The client sends one [`Request`] and reads one [`Response`], in turn; one connection
//! carries any number of them. Every request carries `"v": 1`; a server that does not speak the
//! version answers an error naming the versions it does. Event bodies travel base64-encoded.
//!
//! | op | request fields | result |
//! |---|---|---|
//! | `hello` | | `{"server": "...", "versions": [1]}` |
//! | `lease` | `max`, `wait_ms` (long poll), `lease_ms` | `[WireLeased]` |
//! | `ack` | `ids` | `null` |
//! | `fail` | `id`, `failure` (`{"kind":"transient","error","retry_at_ms"}` or `{"kind":"permanent","error"}`) | `null` |
//! | `dead_list` | `filter` | `[DeadLetter]` |
//! | `dead_show` | `id` | `{"dead": DeadLetter, "event": WireEnvelope}` |
//! | `dead_replay`, `dead_purge` | `filter`, `dry_run` | `[id]` |
//! | `get` | `id` | `WireEnvelope` |
//! | `stats` | | `QueueStats` |
//! | `purge_matching` | `source`, `needle` | count of events deleted |
//!
//! Errors: `{"ok": false, "error": "...", "not_found": "evt_..."?}`.

use super::{DeadFilter, DeadLetter, Failure, Leased, QueueError, QueueStats};
use crate::config::Platform;
use crate::envelope::{Envelope, EventId};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const VERSION: u32 = 1;
/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 512 << 20;

/// Bodies one lease answer carries at most (one event more only when the first alone is larger):
/// base64 and JSON make the frame ~1.4x this, far below [`MAX_FRAME`], whatever `max` asks.
pub const MAX_LEASE_BYTES: usize = 32 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    #[serde(flatten)]
    pub op: Op,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Hello,
    Lease {
        max: usize,
        wait_ms: u64,
        lease_ms: u64,
    },
    Ack {
        ids: Vec<EventId>,
    },
    Fail {
        id: EventId,
        failure: Failure,
    },
    DeadList {
        filter: DeadFilter,
    },
    DeadShow {
        id: EventId,
    },
    DeadReplay {
        filter: DeadFilter,
        dry_run: bool,
    },
    DeadPurge {
        filter: DeadFilter,
        dry_run: bool,
    },
    Get {
        id: EventId,
    },
    Stats,
    PurgeMatching {
        source: String,
        needle: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_found: Option<EventId>,
}

impl Response {
    pub fn ok(result: impl Serialize) -> Response {
        Response {
            ok: true,
            result: Some(serde_json::to_value(result).unwrap_or(serde_json::Value::Null)),
            error: None,
            not_found: None,
        }
    }
    pub fn err(e: &QueueError) -> Response {
        Response {
            ok: false,
            result: None,
            error: Some(e.to_string()),
            not_found: match e {
                QueueError::NotFound(id) => Some(*id),
                _ => None,
            },
        }
    }
}

/// An envelope on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireEnvelope {
    pub id: EventId,
    pub source: String,
    pub platform: Platform,
    pub received_at_ms: i64,
    pub headers: Vec<(String, String)>,
    pub body_b64: String,
}

impl From<&Envelope> for WireEnvelope {
    fn from(e: &Envelope) -> Self {
        WireEnvelope {
            id: e.id,
            source: e.source.clone(),
            platform: e.platform,
            received_at_ms: e.received_at_ms,
            headers: e.headers.clone(),
            body_b64: base64::engine::general_purpose::STANDARD.encode(&e.body),
        }
    }
}

impl WireEnvelope {
    pub fn into_envelope(self) -> Result<Envelope, String> {
        let body = base64::engine::general_purpose::STANDARD
            .decode(self.body_b64.as_bytes())
            .map_err(|e| format!("event {} body is not base64: {e}", self.id))?;
        Ok(Envelope {
            id: self.id,
            source: self.source,
            platform: self.platform,
            received_at_ms: self.received_at_ms,
            headers: self.headers,
            body,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireLeased {
    pub event: WireEnvelope,
    pub attempts: u32,
}

impl From<&Leased> for WireLeased {
    fn from(l: &Leased) -> Self {
        WireLeased {
            event: WireEnvelope::from(&l.envelope),
            attempts: l.attempts,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireDeadShow {
    pub dead: DeadLetter,
    pub event: WireEnvelope,
}

/// Stats as sent (kept as its own name so the table above stays true if fields grow).
pub type WireStats = QueueStats;

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    value: &impl Serialize,
) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    w.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    w.write_all(&bytes).await?;
    w.flush().await
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame starts.
pub async fn read_frame<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
) -> std::io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {n} bytes exceeds the {MAX_FRAME}-byte limit"),
        ));
    }
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf).await?;
    serde_json::from_slice(&buf).map(Some).map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad frame: {e}"))
    })
}

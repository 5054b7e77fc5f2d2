//! The queue socket's operations, version 1, over the framing and versioning of
//! [`crate::rpc`], at `<data_dir>/queue.sock` (mode 0600: only the service user may talk to it).
//! Event bodies travel base64-encoded.
//!
//! | op | request fields | result |
//! |---|---|---|
//! | `hello` | | `{"server": "...", "versions": [1]}` |
//! | `lease` | `max`, `wait_ms` (long poll), `lease_ms` | `[WireLeased]`, at most [`MAX_LEASE_BYTES`] of events (always at least one) |
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

use super::{DeadFilter, DeadLetter, Failure, Leased, QueueError};
use crate::config::Platform;
use crate::envelope::{Envelope, EventId};
use crate::rpc::Response;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The most a lease answer carries, in encoded envelopes (bodies and headers): the queue takes
/// events until the next would pass this, but always the first one. On the wire (base64 in
/// JSON) that is about 1.4x, far below [`crate::rpc::MAX_FRAME`] whatever `max` asks; 256
/// bodies of 2 MiB would not be (issue 12). One event alone is bounded by
/// `receiver.max_body_bytes`.
pub const MAX_LEASE_BYTES: usize = 32 << 20;

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

/// The answer for a queue error: its message, and the id when it names a missing event.
pub fn refusal(e: &QueueError) -> Response {
    let not_found = match e {
        QueueError::NotFound(id) => Some(id.to_string()),
        _ => None,
    };
    Response::err(e.to_string(), not_found)
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

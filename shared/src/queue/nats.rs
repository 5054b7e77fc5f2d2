//! The queue on NATS JetStream (`[queue] backend = "nats"`): the same [`EventSink`] and
//! [`QueueOps`] as the sled store, so the receiver's request path and the worker's pipeline do
//! not know which one they run on.
//!
//! Layout (created or updated at connect, so every process converges on the configured
//! replicas and dedup window):
//! * stream `STOCKHOOK_EVENTS`, subjects `stockhook.events.<source>`, retention WorkQueue, file
//!   storage, `duplicate_window` = `receiver.dedup_window`. One message per accepted event: the
//!   envelope's [`Envelope::encode`] bytes (its id field 0), headers `Nats-Msg-Id` =
//!   `<source>:<delivery id>` when the platform sent one (JetStream's dedup replaces the sled
//!   store's window) and `Stockhook-Source`. The event id is the stream sequence.
//! * stream `STOCKHOOK_DEAD`, subjects `stockhook.dead.<source>`, retention Limits: dead letters,
//!   the envelope bytes with `Stockhook-Event-Id`, `Stockhook-Error`, `Stockhook-Attempts`,
//!   `Stockhook-Dead-At` headers; they stay until replayed or purged.
//! * durable pull consumer `stockhook-worker` on the events stream, explicit acks, `ack_wait` =
//!   `queue.lease_timeout` capped at [`MAX_ACK_WAIT`] (10 s), `max_deliver` = `queue.max_attempts` + 1 (the extra delivery is the
//!   one on which the worker dead-letters an event that was never acked, e.g. because it crashed
//!   the worker every time); transient failures are NAKed with the worker's retry delay.
//!
//! Leases are kept alive, not long: while a worker holds delivered events (processing a batch,
//! however long it takes) it sends JetStream in-progress acks (`+WPI`) for each of them every
//! third of `ack_wait`, so a live worker never loses its lease, and the events of a worker that
//! died (or is paused, SIGSTOP) are delivered to another worker within `ack_wait` of its last
//! heartbeat, not after a minute.
//!
//! Differences from sled, by design of JetStream work queues: an acked event is deleted at
//! once, so [`QueueOps::get`] finds only events still waiting (or dead letters) and
//! `queue.retention` does not apply; the lease time is the consumer's `ack_wait`, not the
//! `lease_ms` argument; `acked_retained` is always 0; the disk budget is the server's JetStream
//! limits (a full stream refuses publishes, which the receiver answers 503).

use super::{
    now_ms, AppendOutcome, DeadFilter, DeadLetter, EventSink, Failure, Leased, NewEvent,
    QueueError, QueueOps, QueueStats,
};
use crate::config::Config;
use crate::envelope::{encode_parts, Envelope, EventId};
use async_nats::jetstream::{self, consumer, stream, AckKind};
use async_nats::{HeaderMap, ServerAddr};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

pub const EVENTS_STREAM: &str = "STOCKHOOK_EVENTS";
pub const DEAD_STREAM: &str = "STOCKHOOK_DEAD";
pub const EVENTS_PREFIX: &str = "stockhook.events";
pub const DEAD_PREFIX: &str = "stockhook.dead";
pub const CONSUMER: &str = "stockhook-worker";

pub const H_SOURCE: &str = "Stockhook-Source";
pub const H_EVENT_ID: &str = "Stockhook-Event-Id";
pub const H_ERROR: &str = "Stockhook-Error";
pub const H_ATTEMPTS: &str = "Stockhook-Attempts";
pub const H_DEAD_AT: &str = "Stockhook-Dead-At";
pub const H_MSG_ID: &str = "Nats-Msg-Id";

/// The longest `ack_wait` of the worker consumer: how long the events a dead worker had leased
/// wait before another worker gets them. A live worker renews its leases (in-progress acks), so
/// this bounds recovery, not how long a batch may take.
pub const MAX_ACK_WAIT: Duration = Duration::from_secs(10);

/// How long a delivery is kept (and heartbeated) without being acked or failed before this
/// process forgets it: a batch longer than this is redelivered.
const HOLD_LIMIT: Duration = Duration::from_secs(15 * 60);

/// Everything needed to reach the JetStream server(s), from `[queue]`.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    pub urls: Vec<String>,
    pub credentials: Option<PathBuf>,
    /// A file holding an NKey user seed: the client signs the server's nonce with it.
    pub nkey_seed_file: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub replicas: usize,
    pub dedup_window: Duration,
    pub ack_wait: Duration,
    pub max_attempts: u32,
    /// The connection's name, as `nats-server` shows it (`stockhook-receiver`, ...).
    pub name: String,
}

impl NatsOptions {
    pub fn from_config(c: &Config, name: &str) -> NatsOptions {
        let q = &c.queue;
        NatsOptions {
            urls: q
                .nats_url
                .as_ref()
                .map(|u| u.names().iter().map(|s| s.trim().to_string()).collect())
                .unwrap_or_default(),
            credentials: q.nats_credentials.clone(),
            nkey_seed_file: q.nats_nkey_seed_file.clone(),
            tls_ca: q.nats_tls_ca.clone(),
            tls_cert: q.nats_tls_cert.clone(),
            tls_key: q.nats_tls_key.clone(),
            replicas: q.nats_replicas.max(1),
            dedup_window: c.receiver.dedup_window.get(),
            ack_wait: q.lease_timeout.get().min(MAX_ACK_WAIT),
            max_attempts: q.max_attempts.max(1),
            name: name.to_string(),
        }
    }

    /// Options for a test or a tool: one server, R1, defaults elsewhere.
    pub fn new(url: &str, name: &str) -> NatsOptions {
        NatsOptions {
            urls: vec![url.to_string()],
            credentials: None,
            nkey_seed_file: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            replicas: 1,
            dedup_window: Duration::from_secs(48 * 3600),
            ack_wait: MAX_ACK_WAIT,
            max_attempts: 10,
            name: name.to_string(),
        }
    }

    fn urls_text(&self) -> String {
        self.display_urls()
    }

    /// The URLs for logs and errors: a password in one (`nats://user:pass@host`) shows as `***`.
    pub fn display_urls(&self) -> String {
        self.urls
            .iter()
            .map(|u| redact_password(u))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn err(&self, context: &str, e: impl std::fmt::Display) -> QueueError {
        QueueError::Storage {
            context: format!("nats {} ({context})", self.urls_text()),
            message: e.to_string(),
        }
    }
}

/// Connects (all URLs given; the client also learns the cluster's other nodes and reconnects
/// to them forever).
pub async fn connect(o: &NatsOptions) -> Result<async_nats::Client, QueueError> {
    let addrs: Vec<ServerAddr> = o
        .urls
        .iter()
        .map(|u| {
            u.parse::<ServerAddr>().map_err(|e| QueueError::Storage {
                context: "queue.nats_url".into(),
                message: format!("`{u}`: {e}"),
            })
        })
        .collect::<Result<_, _>>()?;
    let mut opts = async_nats::ConnectOptions::new()
        .name(&o.name)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(10)));
    // async-nats ignores a user and password in the URL: hand them over explicitly.
    if let Some((user, pass)) = addrs
        .iter()
        .find_map(|a| a.username().map(|u| (u.to_string(), a.password())))
    {
        opts = opts.user_and_password(user, pass.unwrap_or_default().to_string());
    }
    if let Some(creds) = &o.credentials {
        opts = opts.credentials_file(creds).await.map_err(|e| {
            o.err(
                &format!("reading credentials {}", creds.display()),
                e.to_string(),
            )
        })?;
    }
    if let Some(path) = &o.nkey_seed_file {
        opts = opts.nkey(
            read_nkey_seed(path)
                .map_err(|e| o.err(&format!("reading nkey seed {}", path.display()), e))?,
        );
    }
    if let Some(ca) = &o.tls_ca {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&o.tls_cert, &o.tls_key) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    opts.connect(addrs).await.map_err(|e| {
        let hint = match e.kind() {
            async_nats::ConnectErrorKind::AuthorizationViolation => {
                "check the user, nats_credentials or nats_nkey_seed_file against the server's authorization"
            }
            _ => "is nats-server running with JetStream (-js)?",
        };
        o.err("connecting", format!("{e}: {hint}"))
    })
}

/// The NKey user seed in `path` (its first non-empty line), checked to be one. Errors never
/// carry the file's text: it is a private key.
fn read_nkey_seed(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let seed = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    match nkeys::KeyPair::from_seed(seed) {
        Ok(kp) if kp.public_key().starts_with('U') => Ok(seed.to_string()),
        Ok(_) => Err(
            "the seed is not a user's (SU...); the server lists a user's public key (U...)".into(),
        ),
        Err(_) => Err(
            "not an NKey seed (expected one line starting with SU, as `nk -gen user` writes)"
                .into(),
        ),
    }
}

/// `scheme://user:pass@host` as `scheme://user:***@host`; anything else as it is.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let shown = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_string()
            };
            format!("{scheme}://{shown}@{host}{}", &rest[authority_end..])
        }
        None => url.to_string(),
    }
}

/// The JetStream context stockhook uses: publishes wait for room instead of failing when many
/// are in flight.
pub fn context(client: async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .backpressure_on_inflight(true)
        .build(client)
}

/// A stream both of stockhook's are: on file, on the configured replicas, read with direct gets.
fn file_stream(o: &NatsOptions, name: &str, description: &str, prefix: &str) -> stream::Config {
    stream::Config {
        name: name.into(),
        description: Some(description.into()),
        subjects: vec![format!("{prefix}.>")],
        storage: stream::StorageType::File,
        num_replicas: o.replicas,
        allow_direct: true,
        ..Default::default()
    }
}

/// The events stream: a work queue (an acked event is gone), deduplicated over the window.
fn events_config(o: &NatsOptions) -> stream::Config {
    let description = "stockhook: verified webhooks waiting for the worker";
    stream::Config {
        retention: stream::RetentionPolicy::WorkQueue,
        duplicate_window: o.dedup_window,
        ..file_stream(o, EVENTS_STREAM, description, EVENTS_PREFIX)
    }
}

/// The dead-letter stream: kept until replayed or purged.
fn dead_config(o: &NatsOptions) -> stream::Config {
    let description = "stockhook: dead-lettered events, until replayed or purged";
    stream::Config {
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: Duration::from_secs(3600),
        ..file_stream(o, DEAD_STREAM, description, DEAD_PREFIX)
    }
}

/// Creates the two streams, or updates them to the configured replicas and dedup window.
pub async fn ensure_streams(
    js: &jetstream::Context,
    o: &NatsOptions,
) -> Result<(stream::Stream, stream::Stream), QueueError> {
    let mut out = Vec::new();
    for cfg in [events_config(o), dead_config(o)] {
        let name = cfg.name.clone();
        let s = match js.get_stream(&name).await {
            Ok(mut s) => {
                let info = s.info().await.map_err(|e| o.err(&name, e))?;
                let cur = &info.config;
                if cur.num_replicas != cfg.num_replicas
                    || cur.duplicate_window != cfg.duplicate_window
                    || cur.subjects != cfg.subjects
                {
                    tracing::info!(stream = %name, replicas = cfg.num_replicas, "updating stream configuration");
                    js.update_stream(cfg.clone())
                        .await
                        .map_err(|e| o.err(&format!("updating stream {name}"), e))?;
                }
                s
            }
            Err(_) => match js.create_stream(cfg.clone()).await {
                Ok(s) => s,
                // Another process created it between our look and our create.
                Err(e) => js
                    .get_stream(&name)
                    .await
                    .map_err(|_| o.err(&format!("creating stream {name}"), e))?,
            },
        };
        out.push(s);
    }
    let dead = out.pop().expect("two streams");
    let events = out.pop().expect("two streams");
    Ok((events, dead))
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).map(|v| v.as_str().to_string())
}

/// A header value cannot hold CR or LF; errors are one line, bounded.
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .take(1024)
        .collect()
}

/// `Nats-Msg-Id` from the receiver's dedup key (`<source>\0<delivery id>`).
pub fn msg_id(dedup_key: &str) -> String {
    header_safe(&dedup_key.replace('\0', ":"))
}

// ---------------------------------------------------------------------------------------------
// The receiver's side.

/// The receiver's [`EventSink`] on JetStream: publish, then answer once the server acked (the
/// stream's replicas have it).
#[derive(Clone)]
pub struct NatsSink {
    client: async_nats::Client,
    js: jetstream::Context,
    opts: NatsOptions,
}

impl NatsSink {
    pub async fn connect(opts: NatsOptions) -> Result<NatsSink, QueueError> {
        let client = connect(&opts).await?;
        let js = context(client.clone());
        ensure_streams(&js, &opts).await?;
        Ok(NatsSink { client, js, opts })
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

impl EventSink for NatsSink {
    async fn append(&self, ev: NewEvent) -> Result<AppendOutcome, QueueError> {
        let body = encode_parts(
            EventId(0),
            &ev.source,
            ev.platform,
            ev.received_at_ms,
            &ev.headers,
            &ev.body,
        );
        let mut headers = HeaderMap::new();
        headers.insert(H_SOURCE, &*ev.source);
        if let Some(k) = &ev.dedup_key {
            headers.insert(H_MSG_ID, msg_id(k).as_str());
        }
        let ack = self
            .js
            .publish_with_headers(
                format!("{EVENTS_PREFIX}.{}", ev.source),
                headers,
                Bytes::from(body),
            )
            .await
            .map_err(|e| self.opts.err("publishing", e))?
            .await
            .map_err(|e| self.opts.err("waiting for the publish ack", e))?;
        let id = EventId(ack.sequence);
        Ok(if ack.duplicate {
            AppendOutcome::Duplicate(id)
        } else {
            AppendOutcome::Accepted(id)
        })
    }

    fn ready(&self) -> Result<(), QueueError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            other => Err(self
                .opts
                .err("connection", format!("not connected ({other})"))),
        }
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        stats(&self.js, &self.opts).await
    }
}

async fn by_subject(
    s: &stream::Stream,
    prefix: &str,
) -> Result<Vec<(String, u64)>, async_nats::Error> {
    let mut out = BTreeMap::new();
    let mut subjects = s.info_with_subjects(format!("{prefix}.>")).await?;
    while let Some(r) = subjects.next().await {
        let (subject, n) = r?;
        let source = subject
            .strip_prefix(prefix)
            .and_then(|s| s.strip_prefix('.'))
            .unwrap_or(&subject)
            .to_string();
        *out.entry(source).or_insert(0) += n as u64;
    }
    Ok(out.into_iter().collect())
}

/// Counts from the two streams' and the consumer's info.
pub async fn stats(js: &jetstream::Context, o: &NatsOptions) -> Result<QueueStats, QueueError> {
    let events = js
        .get_stream(EVENTS_STREAM)
        .await
        .map_err(|e| o.err("stream info", e))?;
    let dead = js
        .get_stream(DEAD_STREAM)
        .await
        .map_err(|e| o.err("stream info", e))?;
    let ei = events.cached_info().clone();
    let di = dead.cached_info().clone();
    let leased = match events.consumer_info(CONSUMER).await {
        Ok(c) => c.num_ack_pending as u64,
        Err(_) => 0,
    };
    let last = (ei.state.last_sequence > 0)
        .then(|| (ei.state.last_timestamp.unix_timestamp_nanos() / 1_000_000) as i64)
        .filter(|t| *t > 0);
    Ok(QueueStats {
        pending: ei.state.messages.saturating_sub(leased),
        leased,
        dead: di.state.messages,
        acked_retained: 0,
        disk_bytes: ei.state.bytes + di.state.bytes,
        last_event_at_ms: last,
        pending_by_source: by_subject(&events, EVENTS_PREFIX)
            .await
            .map_err(|e| o.err("stream subjects", e))?,
        dead_by_source: by_subject(&dead, DEAD_PREFIX)
            .await
            .map_err(|e| o.err("stream subjects", e))?,
    })
}

// The worker's and the operator's side: [`NatsQueue`].
mod pull_queue;
pub use pull_queue::NatsQueue;

/// Reads every message of `stream` under `filter` with an ordered consumer: (stream sequence,
/// subject, headers, payload), oldest first. For the dead letters, which are few.
pub async fn scan_stream(
    stream: &stream::Stream,
    filter: &str,
) -> Result<Vec<(u64, HeaderMap, Bytes)>, async_nats::Error> {
    Ok(scan(stream, filter, consumer::DeliverPolicy::All)
        .await?
        .into_iter()
        .map(|(seq, _, h, p)| (seq, h, p))
        .collect())
}

/// The newest message of every subject under `filter` (a KV bucket's current values, delete
/// markers included): (stream sequence, subject, headers, payload).
pub async fn scan_last_per_subject(
    stream: &stream::Stream,
    filter: &str,
) -> Result<Vec<(u64, String, HeaderMap, Bytes)>, async_nats::Error> {
    scan(stream, filter, consumer::DeliverPolicy::LastPerSubject).await
}

/// Every message under `filter` from stream sequence `start` on, oldest first (what changed in
/// a KV bucket since a sequence already read, delete markers included): (stream sequence,
/// subject, headers, payload).
pub async fn scan_from(
    stream: &stream::Stream,
    filter: &str,
    start: u64,
) -> Result<Vec<(u64, String, HeaderMap, Bytes)>, async_nats::Error> {
    let policy = consumer::DeliverPolicy::ByStartSequence {
        start_sequence: start,
    };
    scan(stream, filter, policy).await
}

/// How long a scan waits for the next message before taking the snapshot as complete.
const SCAN_IDLE: Duration = Duration::from_secs(2);

async fn scan(
    stream: &stream::Stream,
    filter: &str,
    deliver_policy: consumer::DeliverPolicy,
) -> Result<Vec<(u64, String, HeaderMap, Bytes)>, async_nats::Error> {
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter.to_string(),
            deliver_policy,
            ..Default::default()
        })
        .await?;
    let mut out = Vec::new();
    if consumer.cached_info().num_pending == 0 {
        return Ok(out);
    }
    let mut msgs = consumer.messages().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        // An ordered consumer delivers what exists at once; a silence means the snapshot is
        // complete even when a concurrent write kept `pending` from reaching 0 (seen with two
        // workers scanning and updating one bucket).
        let idle = (tokio::time::Instant::now() + SCAN_IDLE).min(deadline);
        let next = match tokio::time::timeout_at(idle, msgs.next()).await {
            Ok(next) => next,
            Err(_) if idle < deadline => break,
            Err(_) => return Err("timed out reading the stream".into()),
        };
        let Some(m) = next else { break };
        let m = m?;
        let info = m.info()?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        out.push((
            seq,
            m.message.subject.to_string(),
            m.message.headers.clone().unwrap_or_default(),
            m.message.payload.clone(),
        ));
        if pending == 0 {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod redact_tests {
    #[test]
    fn passwords_in_urls_are_not_shown() {
        assert_eq!(
            super::redact_password("tls://u:secret@h:4222"),
            "tls://u:***@h:4222"
        );
        assert_eq!(super::redact_password("nats://tok@h"), "nats://***@h");
        assert_eq!(super::redact_password("nats://h:4222"), "nats://h:4222");
    }
}

//! The worker's and the operator's side of the JetStream queue: [`NatsQueue`], the durable pull
//! consumer (leases capped by count and by bytes, kept alive by in-progress acks) and the dead
//! letters. Split from [`super`] (connection, streams, the receiver's sink) so each reads on its
//! own; the layout and semantics are described there.

use super::super::protocol::MAX_LEASE_BYTES;
use super::*;
use futures_util::FutureExt;

/// The shortest expiry a fetch asks for. nats-server 2.9 drops an expired pull request without
/// answering it when a message arrives between its expiry and the server's expiry timer: the
/// shorter the expiry, the likelier that is while events flow.
const MIN_FETCH_EXPIRES_MS: u64 = 100;

/// How long after a fetch's expiry the lease stops waiting for the server's answer. The server
/// never delivers to a request past its expiry, so nothing is lost by ending there; without it,
/// a request the server forgot (above) holds the worker for the client library's own timeout,
/// five seconds past the expiry, while events wait (measured: one of two workers stalled for a
/// whole burst of 300 events).
const FETCH_REPLY_GRACE: Duration = Duration::from_millis(1000);

struct Held {
    msg: jetstream::Message,
    attempts: u32,
    envelope_bytes: Bytes,
    at: Instant,
}

/// [`QueueOps`] on JetStream: the worker's pull consumer and the operator's dead letters.
pub struct NatsQueue {
    client: async_nats::Client,
    js: jetstream::Context,
    events: stream::Stream,
    dead: stream::Stream,
    consumer: consumer::PullConsumer,
    opts: NatsOptions,
    /// Delivered and not yet acked or failed, by event id (stream sequence); the heartbeat
    /// ([`heartbeat`]) keeps their leases alive.
    held: Arc<Mutex<HashMap<u64, Held>>>,
}

/// One dead letter as stored: where it sits in the dead stream, and what it says.
struct DeadRecord {
    dead_seq: u64,
    letter: DeadLetter,
    envelope: Envelope,
}

impl NatsQueue {
    /// Connects, makes sure the streams and the durable consumer exist with the configured
    /// settings.
    pub async fn connect(opts: NatsOptions) -> Result<NatsQueue, QueueError> {
        let client = connect(&opts).await?;
        let js = context(client.clone());
        let (events, dead) = ensure_streams(&js, &opts).await?;
        let cfg = consumer::pull::Config {
            durable_name: Some(CONSUMER.into()),
            description: Some("stockhook workers".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: opts.ack_wait,
            max_deliver: opts.max_attempts as i64 + 1,
            deliver_policy: consumer::DeliverPolicy::All,
            max_ack_pending: 20_000,
            num_replicas: 0,
            // No `backoff`: with one set, nats-server 2.9 redelivers NAKed messages on the
            // backoff schedule and disregards the NAK's delay (measured against 2.9.10), and the
            // worker's retry times must hold. Unacked deliveries come back after `ack_wait`.
            ..Default::default()
        };
        let consumer = events
            .create_consumer(cfg)
            .await
            .map_err(|e| opts.err("creating the worker consumer", e))?;
        let held = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(heartbeat(
            Arc::downgrade(&held),
            client.clone(),
            opts.ack_wait / 3,
        ));
        Ok(NatsQueue {
            client,
            js,
            events,
            dead,
            consumer,
            opts,
            held,
        })
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    fn err(&self, context: &str, e: impl std::fmt::Display) -> QueueError {
        self.opts.err(context, e)
    }

    /// The byte cap of one fetch: [`MAX_LEASE_BYTES`], raised to what one message may be (the
    /// server's `max_payload`, plus room for its subject and headers) so a lease always carries
    /// at least one event; the server answers a fetch whose first message is over the cap with
    /// an error, not with that message.
    fn lease_bytes(&self) -> usize {
        let one = self.client.server_info().max_payload + (64 << 10);
        MAX_LEASE_BYTES.max(one)
    }

    fn take(&self, id: EventId) -> Option<Held> {
        self.held.lock().expect("held lock").remove(&id.0)
    }

    /// Publishes the event to the dead stream (deduplicated on its event id, so a repeat after a
    /// lost ack is one dead letter), then acks the original so it leaves the work queue.
    async fn dead_letter(
        &self,
        id: EventId,
        held: Held,
        error: &str,
        attempts: u32,
    ) -> Result<(), QueueError> {
        let source = header(
            held.msg.headers.as_ref().unwrap_or(&HeaderMap::new()),
            H_SOURCE,
        )
        .or_else(|| {
            held.msg
                .subject
                .as_str()
                .strip_prefix(EVENTS_PREFIX)
                .map(|s| s.trim_start_matches('.').to_string())
        })
        .unwrap_or_else(|| "unknown".into());
        let mut h = HeaderMap::new();
        h.insert(H_MSG_ID, format!("dead:{}", id.0).as_str());
        h.insert(H_SOURCE, source.as_str());
        h.insert(H_EVENT_ID, id.to_string().as_str());
        h.insert(H_ERROR, header_safe(error).as_str());
        h.insert(H_ATTEMPTS, attempts.to_string().as_str());
        h.insert(H_DEAD_AT, now_ms().to_string().as_str());
        self.js
            .publish_with_headers(
                format!("{DEAD_PREFIX}.{source}"),
                h,
                held.envelope_bytes.clone(),
            )
            .await
            .map_err(|e| self.err("publishing a dead letter", e))?
            .await
            .map_err(|e| self.err("waiting for the dead letter's ack", e))?;
        held.msg
            .double_ack_with(AckKind::Ack)
            .await
            .map_err(|e| self.err("removing a dead-lettered event", e))?;
        tracing::warn!(event_id = %id, source = %source, attempts, error, "event dead-lettered");
        Ok(())
    }

    /// Every dead letter, oldest first.
    async fn dead_records(&self) -> Result<Vec<DeadRecord>, QueueError> {
        let msgs = scan_stream(&self.dead, &format!("{DEAD_PREFIX}.>"))
            .await
            .map_err(|e| self.err("reading dead letters", e))?;
        let mut out = Vec::with_capacity(msgs.len());
        for (seq, headers, payload) in msgs {
            let get = |n: &str| header(&headers, n);
            let mut env = match Envelope::decode(&payload) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(dead_seq = seq, error = %e, "unreadable dead letter skipped");
                    continue;
                }
            };
            let id = get(H_EVENT_ID)
                .and_then(|s| EventId::parse(&s))
                .unwrap_or(EventId(0));
            env.id = id;
            let letter = DeadLetter {
                id,
                source: env.source.clone(),
                platform: env.platform,
                topic: env.topic().map(str::to_string),
                error: get(H_ERROR).unwrap_or_default(),
                attempts: get(H_ATTEMPTS).and_then(|s| s.parse().ok()).unwrap_or(0),
                received_at_ms: env.received_at_ms,
                dead_at_ms: get(H_DEAD_AT).and_then(|s| s.parse().ok()).unwrap_or(0),
                size: env.body.len(),
            };
            out.push(DeadRecord {
                dead_seq: seq,
                letter,
                envelope: env,
            });
        }
        Ok(out)
    }

    async fn matching(&self, filter: &DeadFilter) -> Result<Vec<DeadRecord>, QueueError> {
        let mut v: Vec<DeadRecord> = self
            .dead_records()
            .await?
            .into_iter()
            .filter(|r| filter.matches(&r.letter))
            .collect();
        if let Some(l) = filter.limit {
            v.truncate(l);
        }
        for id in &filter.ids {
            if !v.iter().any(|r| r.letter.id == *id) {
                return Err(QueueError::NotFound(*id));
            }
        }
        Ok(v)
    }

    async fn delete_dead(&self, seq: u64) -> Result<(), QueueError> {
        self.dead
            .delete_message(seq)
            .await
            .map(|_| ())
            .map_err(|e| self.err("deleting a dead letter", e))
    }

    /// Forgets deliveries held longer than [`HOLD_LIMIT`] (the heartbeat stops renewing them,
    /// and the server redelivers them).
    fn forget_stale(&self) {
        let limit = HOLD_LIMIT.max(self.opts.ack_wait * 2);
        self.held
            .lock()
            .expect("held lock")
            .retain(|_, h| h.at.elapsed() < limit);
    }
}

/// Every `every`, an in-progress ack for each delivery still held, so the server does not
/// redeliver it while this worker works on it. Ends when the queue is dropped.
async fn heartbeat(
    held: Weak<Mutex<HashMap<u64, Held>>>,
    client: async_nats::Client,
    every: Duration,
) {
    let every = every.max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let Some(held) = held.upgrade() else { return };
        let msgs: Vec<jetstream::Message> = held
            .lock()
            .expect("held lock")
            .values()
            .map(|h| h.msg.clone())
            .collect();
        drop(held);
        if msgs.is_empty() {
            continue;
        }
        for m in &msgs {
            // A lost heartbeat costs at most a redelivery, which the processed marks absorb.
            if let Err(e) = m.ack_with(AckKind::Progress).await {
                tracing::debug!(error = %e, "in-progress ack not sent");
            }
        }
        if let Err(e) = client.flush().await {
            tracing::debug!(error = %e, "in-progress acks not flushed");
        }
    }
}

impl QueueOps for NatsQueue {
    async fn lease(
        &self,
        max: usize,
        wait_ms: u64,
        _lease_ms: u64,
    ) -> Result<Vec<Leased>, QueueError> {
        self.forget_stale();
        let expires = Duration::from_millis(wait_ms.max(MIN_FETCH_EXPIRES_MS));
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(max.max(1))
            .max_bytes(self.lease_bytes())
            .expires(expires)
            .messages()
            .await
            .map_err(|e| self.err("fetching", e))?;
        let deadline = tokio::time::Instant::now() + expires + FETCH_REPLY_GRACE;
        let mut got = Vec::new();
        let mut exhausted = Vec::new();
        loop {
            let m = match tokio::time::timeout_at(deadline, batch.next()).await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(_) => {
                    // The server forgot the request without answering it (see
                    // [`FETCH_REPLY_GRACE`]): it delivers nothing to it any more, so whatever
                    // reached the subscription already is this lease.
                    match batch.next().now_or_never() {
                        Some(Some(m)) => m,
                        _ => {
                            tracing::debug!(
                                events = got.len(),
                                "fetch not answered by its expiry; ended here"
                            );
                            break;
                        }
                    }
                }
            };
            let m = match m {
                Ok(m) => m,
                // The server ends a fetch with a status when the next message would pass the
                // byte cap: what came before it is this lease.
                Err(e) if !got.is_empty() || !exhausted.is_empty() => {
                    tracing::debug!(error = %e, events = got.len(), "fetch ended early");
                    break;
                }
                Err(e) => return Err(self.err("fetching", e)),
            };
            let (seq, delivered) = {
                let info = m.info().map_err(|e| self.err("message info", e))?;
                (info.stream_sequence, info.delivered.max(1) as u32)
            };
            let payload = m.message.payload.clone();
            let mut env = match Envelope::decode(&payload) {
                Ok(e) => e,
                Err(e) => {
                    // Not written by a receiver: nothing can read it. Drop it with a trace.
                    tracing::error!(stream_seq = seq, error = %e, "unreadable message in the events stream: terminated");
                    let _ = m.ack_with(AckKind::Term).await;
                    continue;
                }
            };
            env.id = EventId(seq);
            let held = Held {
                msg: m,
                attempts: delivered,
                envelope_bytes: payload,
                at: Instant::now(),
            };
            if delivered > self.opts.max_attempts {
                exhausted.push((EventId(seq), held));
                continue;
            }
            self.held.lock().expect("held lock").insert(seq, held);
            got.push(Leased {
                envelope: env,
                attempts: delivered,
            });
        }
        for (id, held) in exhausted {
            let attempts = held.attempts;
            self.dead_letter(
                id,
                held,
                &format!("delivered {attempts} times without being acked (worker crashed or timed out on it each time)"),
                attempts,
            )
            .await?;
        }
        Ok(got)
    }

    async fn ack(&self, ids: Vec<EventId>) -> Result<(), QueueError> {
        let held: Vec<Held> = {
            let mut map = self.held.lock().expect("held lock");
            ids.iter().filter_map(|id| map.remove(&id.0)).collect()
        };
        for h in &held {
            h.msg.ack().await.map_err(|e| self.err("acking", e))?;
        }
        // Acks are fire-and-forget; a lost one only means a redelivery, which the worker's
        // processed marks turn into a no-op. Flushing bounds how long they sit in our buffer.
        self.client
            .flush()
            .await
            .map_err(|e| self.err("flushing acks", e))
    }

    async fn fail(&self, id: EventId, failure: Failure) -> Result<(), QueueError> {
        let Some(held) = self.take(id) else {
            tracing::debug!(event_id = %id, "fail for an event this worker does not hold (redelivered meanwhile)");
            return Ok(());
        };
        match failure {
            Failure::Permanent { error } => {
                let attempts = held.attempts;
                self.dead_letter(id, held, &error, attempts).await
            }
            Failure::Transient { error, retry_at_ms } => {
                if held.attempts >= self.opts.max_attempts {
                    let attempts = held.attempts;
                    return self
                        .dead_letter(
                            id,
                            held,
                            &format!("gave up after {attempts} attempts: {error}"),
                            attempts,
                        )
                        .await;
                }
                // At least 1 ms: a zero delay would let the consumer's backoff (meant for
                // deliveries never acked) decide instead.
                let delay = Duration::from_millis((retry_at_ms - now_ms()).max(1) as u64);
                held.msg
                    .ack_with(AckKind::Nak(Some(delay)))
                    .await
                    .map_err(|e| self.err("nak", e))
            }
        }
    }

    async fn dead_list(&self, filter: DeadFilter) -> Result<Vec<DeadLetter>, QueueError> {
        Ok(self
            .matching(&filter)
            .await?
            .into_iter()
            .map(|r| r.letter)
            .collect())
    }

    async fn dead_show(&self, id: EventId) -> Result<(DeadLetter, Envelope), QueueError> {
        self.dead_records()
            .await?
            .into_iter()
            .find(|r| r.letter.id == id)
            .map(|r| (r.letter, r.envelope))
            .ok_or(QueueError::NotFound(id))
    }

    async fn dead_replay(
        &self,
        filter: DeadFilter,
        dry_run: bool,
    ) -> Result<Vec<EventId>, QueueError> {
        let recs = self.matching(&filter).await?;
        let ids = recs.iter().map(|r| r.letter.id).collect();
        if dry_run {
            return Ok(ids);
        }
        for r in recs {
            let mut env = r.envelope;
            env.id = EventId(0);
            let mut h = HeaderMap::new();
            h.insert(H_SOURCE, env.source.as_str());
            h.insert("Stockhook-Replay-Of", r.letter.id.to_string().as_str());
            self.js
                .publish_with_headers(
                    format!("{EVENTS_PREFIX}.{}", env.source),
                    h,
                    Bytes::from(env.encode()),
                )
                .await
                .map_err(|e| self.err("replaying", e))?
                .await
                .map_err(|e| self.err("waiting for the replay's ack", e))?;
            self.delete_dead(r.dead_seq).await?;
        }
        Ok(ids)
    }

    async fn dead_purge(
        &self,
        filter: DeadFilter,
        dry_run: bool,
    ) -> Result<Vec<EventId>, QueueError> {
        let recs = self.matching(&filter).await?;
        let ids = recs.iter().map(|r| r.letter.id).collect();
        if !dry_run {
            for r in recs {
                self.delete_dead(r.dead_seq).await?;
            }
        }
        Ok(ids)
    }

    async fn get(&self, id: EventId) -> Result<Envelope, QueueError> {
        match self.events.get_raw_message(id.0).await {
            Ok(m) => {
                let mut env =
                    Envelope::decode(&m.payload).map_err(|e| self.err("decoding an event", e))?;
                env.id = id;
                Ok(env)
            }
            // Acked events are gone from a work queue; a dead one may still be here.
            Err(_) => self.dead_show(id).await.map(|(_, e)| e),
        }
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        stats(&self.js, &self.opts).await
    }

    async fn purge_matching(&self, source: String, needle: String) -> Result<usize, QueueError> {
        let needle = needle.as_bytes();
        let mut n = 0;
        for r in self.dead_records().await? {
            if r.letter.source == source
                && !needle.is_empty()
                && r.envelope.body.windows(needle.len()).any(|w| w == needle)
            {
                self.delete_dead(r.dead_seq).await?;
                n += 1;
            }
        }
        Ok(n)
    }
}

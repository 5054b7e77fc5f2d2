//! The worker's state in JetStream KV buckets (`[queue] backend = "nats"`), shared by any number
//! of workers:
//!
//! * `stockhook_items`: `i.<source,item>` an item ([`ItemState`] plus its guard, below),
//!   `a.<source,alias>` alias -> item, `k.<sku>` the (source, item)s carrying a SKU,
//!   `c.<sku>` cross-channel arming;
//! * `stockhook_outbox`: `<alert id>` an outbox entry plus the claim of the worker sending it;
//! * `stockhook_marks`: `p.<event id>` processed, `q.<source,payload key>` payload dedup,
//!   `r.<event id>` facts refused,
//!   `s.<source,order,line>` sale counted (kept 90 days);
//! * `stockhook_counters`: `<name>` a counter.
//!
//! (`<a,b>` is the URL-safe base64 of the parts joined by NUL: KV keys allow few characters.)
//!
//! There are no multi-key transactions, so exactly-once effects come from making every step
//! idempotent and doing them in an order where a crash anywhere is repaired by the redelivery:
//! 1. each fact updates its record with compare-and-set (`update(key, value, revision)`, retried
//!    on conflict); the record's *guard* lists the (event id, fact index) tokens already applied
//!    to it and the alerts each one raised, so a redelivered fact changes nothing and hands back
//!    the same alerts;
//! 2. alerts go to the outbox with `create` (alert ids are derived from rule, item and arming
//!    episode), so the same alert can never be enqueued twice, by any worker;
//! 3. sale marks and payload-dedup marks are claimed with `create`, the value naming the claiming
//!    event, so a redelivery of that same event goes on while any other event stops;
//! 4. the processed mark is created last, and only then is the event acked.
//!
//! Sending: a worker claims each due entry by CAS (its owner id and a deadline [`CLAIM_MS`]
//! ahead) before sending; only the claimer sends; marking it sent releases the claim. While a
//! send is in progress (a slow SMTP server) the sender renews its claims every
//! [`CLAIM_RENEW_MS`] by CAS on the entry's revision, so a live worker keeps them and a dead
//! one's lapse within [`CLAIM_MS`] of its last renewal: then another worker takes them over. At
//! least once towards the mail server, exactly as a crash between send and mark-sent is on
//! sled. A claim keeps the `planned` set already written: a later channel, or another worker
//! planning from an older snapshot, never changes the email a crash would resend.
//!
//! Counters are added once per batch by CAS; a crash between the processed marks and the
//! counter update can under-count them (they are statistics; nothing depends on them).

mod view;

use super::backend::{ItemChanges, ItemRead, ItemsCursor};
use super::engine;
use crate::alert::{Alert, OutboxEntry, OutboxStatus};
use crate::facts::Fact;
use crate::state::{
    counters, planned_sets, Applied, ItemState, Prepared, RuleConfig, StateBackend, StateError,
};
use async_nats::jetstream::{self, kv, stream};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::stream::{self as futures_stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stockhook_shared::config::Config;
use stockhook_shared::queue::nats::{self as qnats, NatsOptions};
use stockhook_shared::queue::now_ms;
use view::{independent_groups, ItemRec, View, APPLY_CONCURRENCY};

pub const ITEMS: &str = "stockhook_items";
pub const OUTBOX: &str = "stockhook_outbox";
pub const MARKS: &str = "stockhook_marks";
pub const COUNTERS: &str = "stockhook_counters";

const MARKS_MAX_AGE: Duration = Duration::from_secs(90 * 86_400);
/// How long a claim to send an outbox entry holds without being renewed: how long the alerts
/// of a worker that died mid-send wait before another worker sends them.
pub const CLAIM_MS: i64 = 15_000;
/// How often a sender renews its claims while a delivery is in progress (a third of
/// [`CLAIM_MS`]: two renewals may be late before the claim lapses).
pub const CLAIM_RENEW_MS: i64 = CLAIM_MS / 3;
const CAS_RETRIES: usize = 200;

/// Keys of planned sets in the outbox bucket (alert ids are hex: no alert key starts so).
const SET_PREFIX: &str = "set.";

/// A planned set's key in the outbox bucket ([`planned_sets`]).
fn set_key(set: &str) -> String {
    format!("{SET_PREFIX}{set}")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claim {
    owner: String,
    until_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OutboxRec {
    entry: OutboxEntry,
    #[serde(default)]
    claim: Option<Claim>,
}

impl OutboxRec {
    fn claimed_by_other(&self, owner: &str, now: i64) -> bool {
        self.claim
            .as_ref()
            .is_some_and(|c| c.owner != owner && c.until_ms > now)
    }
}

fn enc(parts: &[&str]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(parts.join("\0"))
}

fn dec(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(key)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|_| key.to_string())
}

fn item_key(source: &str, item: &str) -> String {
    format!("i.{}", enc(&[source, item]))
}

fn err(context: &str, e: impl std::fmt::Display) -> StateError {
    StateError::Storage {
        context: format!("nats kv ({context})"),
        message: e.to_string(),
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<Bytes, StateError> {
    serde_json::to_vec(v)
        .map(Bytes::from)
        .map_err(|e| err("encoding", e))
}

fn from_json<T: DeserializeOwned>(key: &str, b: &[u8]) -> Result<T, StateError> {
    serde_json::from_slice(b).map_err(|e| err(&format!("decoding {key}"), e))
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum B {
    Items,
    Outbox,
    Marks,
    Counters,
}

/// The four buckets, and who this process is when it claims outbox entries.
pub struct NatsState {
    items: kv::Store,
    outbox: kv::Store,
    marks: kv::Store,
    counters: kv::Store,
    owner: String,
    urls: String,
    /// The open (pending, failed) outbox entries, kept current by a watch on the bucket
    /// (started by the sender's first look), so finding what is due does not read every entry
    /// ever sent.
    pending: tokio::sync::OnceCell<Arc<PendingCache>>,
}

/// Open (pending and failed) outbox entries by alert id, as the watch last saw them. A hint:
/// whoever sends claims the entry by compare-and-set on its current revision first.
#[derive(Default)]
struct PendingCache {
    entries: Mutex<HashMap<String, OutboxRec>>,
    /// The watch has delivered every entry that existed when it started.
    synced: std::sync::atomic::AtomicBool,
}

impl PendingCache {
    fn apply(&self, key: &str, value: Option<&[u8]>) {
        let rec = value.and_then(|v| serde_json::from_slice::<OutboxRec>(v).ok());
        let mut m = self.entries.lock().expect("pending cache");
        match rec {
            Some(r) if matches!(r.entry.status, OutboxStatus::Pending | OutboxStatus::Failed) => {
                m.insert(key.to_string(), r);
            }
            _ => {
                m.remove(key);
            }
        }
    }

    fn snapshot(&self) -> Vec<OutboxRec> {
        let mut v: Vec<OutboxRec> = self
            .entries
            .lock()
            .expect("pending cache")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| {
            (a.entry.alert.created_at, &a.entry.alert.id)
                .cmp(&(b.entry.alert.created_at, &b.entry.alert.id))
        });
        v
    }
}

/// Follows the outbox bucket forever (restarting the watch after an error).
async fn watch_outbox(kv: kv::Store, cache: Arc<PendingCache>) {
    use std::sync::atomic::Ordering;
    loop {
        cache.synced.store(false, Ordering::SeqCst);
        let empty = kv
            .stream
            .get_info()
            .await
            .map(|i| i.state.messages == 0)
            .unwrap_or(false);
        match kv.watch_with_history(">").await {
            Ok(mut w) => {
                cache.entries.lock().expect("pending cache").clear();
                if empty {
                    cache.synced.store(true, Ordering::SeqCst);
                }
                while let Some(e) = w.next().await {
                    let Ok(e) = e else { break };
                    let value = (e.operation == kv::Operation::Put).then_some(&e.value[..]);
                    cache.apply(&e.key, value);
                    if e.delta == 0 {
                        cache.synced.store(true, Ordering::SeqCst);
                    }
                }
                tracing::warn!("outbox watch ended; restarting it");
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch the outbox; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn ensure_bucket(
    js: &jetstream::Context,
    o: &NatsOptions,
    bucket: &str,
    max_age: Duration,
) -> Result<kv::Store, StateError> {
    let cfg = stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(format!("stockhook worker state: {bucket}")),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: stream::StorageType::File,
        num_replicas: o.replicas,
        allow_rollup: true,
        deny_delete: true,
        // Reads go to the stream leader: a compare-and-set never starts from a stale replica.
        allow_direct: false,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    match js.get_stream(&cfg.name).await {
        Ok(mut s) => {
            let info = s.info().await.map_err(|e| err(bucket, e))?;
            if info.config.num_replicas != cfg.num_replicas {
                js.update_stream(cfg.clone())
                    .await
                    .map_err(|e| err(&format!("updating bucket {bucket}"), e))?;
            }
        }
        Err(_) => {
            if let Err(e) = js.create_stream(cfg.clone()).await {
                js.get_stream(&cfg.name)
                    .await
                    .map_err(|_| err(&format!("creating bucket {bucket}"), e))?;
            }
        }
    }
    js.get_key_value(bucket)
        .await
        .map_err(|e| err(&format!("opening bucket {bucket}"), e))
}

impl NatsState {
    /// Connects and creates the buckets (replicas from `queue.nats_replicas`).
    pub async fn connect(config: &Config) -> Result<NatsState, StateError> {
        let o = NatsOptions::from_config(config, "stockhook-worker");
        let client = qnats::connect(&o).await.map_err(|e| err("connecting", e))?;
        let js = qnats::context(client);
        let zero = Duration::ZERO;
        Ok(NatsState {
            items: ensure_bucket(&js, &o, ITEMS, zero).await?,
            outbox: ensure_bucket(&js, &o, OUTBOX, zero).await?,
            marks: ensure_bucket(&js, &o, MARKS, MARKS_MAX_AGE).await?,
            counters: ensure_bucket(&js, &o, COUNTERS, zero).await?,
            owner: format!("{}-{:016x}", std::process::id(), rand::random::<u64>()),
            urls: o.display_urls(),
            pending: tokio::sync::OnceCell::new(),
        })
    }

    /// The pending entries: from the watch once it caught up, else by reading the bucket.
    async fn pending_entries(&self) -> Result<Vec<OutboxRec>, StateError> {
        Ok(self
            .open_entries()
            .await?
            .into_iter()
            .filter(|r| r.entry.status == OutboxStatus::Pending)
            .collect())
    }

    /// The open (pending, failed) entries: from the watch once it caught up, else by reading
    /// the bucket.
    async fn open_entries(&self) -> Result<Vec<OutboxRec>, StateError> {
        let cache = self
            .pending
            .get_or_init(|| async {
                let cache = Arc::new(PendingCache::default());
                tokio::spawn(watch_outbox(self.outbox.clone(), cache.clone()));
                cache
            })
            .await;
        if cache.synced.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(cache.snapshot());
        }
        Ok(self
            .outbox_all()
            .await?
            .into_iter()
            .filter(|r| matches!(r.entry.status, OutboxStatus::Pending | OutboxStatus::Failed))
            .collect())
    }

    fn bucket(&self, b: B) -> &kv::Store {
        match b {
            B::Items => &self.items,
            B::Outbox => &self.outbox,
            B::Marks => &self.marks,
            B::Counters => &self.counters,
        }
    }

    async fn get(&self, b: B, key: &str) -> Result<(Option<Bytes>, u64), StateError> {
        match self.bucket(b).entry(key).await {
            Ok(Some(e)) if e.operation == kv::Operation::Put => Ok((Some(e.value), e.revision)),
            Ok(Some(e)) => Ok((None, e.revision)),
            Ok(None) => Ok((None, 0)),
            Err(e) => Err(err(&format!("get {key}"), e)),
        }
    }

    async fn cas(&self, b: B, key: &str, v: Bytes, rev: u64) -> Result<bool, StateError> {
        match self.bucket(b).update(key, v, rev).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(err(&format!("update {key}"), e)),
        }
    }

    async fn create(&self, b: B, key: &str, v: Bytes) -> Result<bool, StateError> {
        match self.bucket(b).create(key, v).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(err(&format!("create {key}"), e)),
        }
    }

    /// Current values under `prefix` (`""` = the whole bucket): (key, value, revision).
    async fn scan(&self, b: B, prefix: &str) -> Result<Vec<(String, Bytes, u64)>, StateError> {
        Ok(self
            .scan_records(b, prefix, None)
            .await?
            .into_iter()
            .filter_map(|(seq, key, payload)| Some((key, payload?, seq)))
            .collect())
    }

    /// The records under `prefix` (keys stripped of the bucket's subject): with `from`, every
    /// write from that stream sequence on, oldest first; without, the newest of each key.
    /// (stream sequence, key, payload; `None`: deleted).
    async fn scan_records(
        &self,
        b: B,
        prefix: &str,
        from: Option<u64>,
    ) -> Result<Vec<(u64, String, Option<Bytes>)>, StateError> {
        let kv = self.bucket(b);
        let filter = format!("$KV.{}.{prefix}>", kv.name);
        let strip = format!("$KV.{}.", kv.name);
        let msgs = match from {
            Some(start) => qnats::scan_from(&kv.stream, &filter, start).await,
            None => qnats::scan_last_per_subject(&kv.stream, &filter).await,
        }
        .map_err(|e| err(&format!("scanning {}", kv.name), e))?;
        Ok(msgs
            .into_iter()
            .map(|(seq, subject, h, payload)| {
                let deleted = h
                    .get("KV-Operation")
                    .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
                (
                    seq,
                    subject.strip_prefix(&strip).unwrap_or(&subject).to_string(),
                    (!deleted).then_some(payload),
                )
            })
            .collect())
    }

    async fn add_counters(&self, deltas: &BTreeMap<String, i64>) -> Result<(), StateError> {
        for (name, n) in deltas {
            if *n == 0 {
                continue;
            }
            let key = enc(&[name]);
            for attempt in 0.. {
                let (cur, rev) = self.get(B::Counters, &key).await?;
                let v = cur
                    .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<i64>().ok())
                    .unwrap_or(0);
                if self
                    .cas(B::Counters, &key, Bytes::from((v + n).to_string()), rev)
                    .await?
                {
                    break;
                }
                conflict_pause(attempt, &key).await?;
            }
        }
        Ok(())
    }

    /// Replaces a stored reference to a planned set by its members (`sets`: those read so far
    /// in this call).
    async fn resolve(
        &self,
        e: &mut OutboxEntry,
        sets: &mut HashMap<String, crate::alert::PlannedSet>,
    ) -> Result<(), StateError> {
        let Some(set) = planned_sets::to_read(e, sets) else {
            return Ok(());
        };
        let key = set_key(&set);
        let (Some(v), _) = self.get(B::Outbox, &key).await? else {
            return Err(err(
                &format!("reading planned set {set} of alert {}", e.alert.id),
                "missing",
            ));
        };
        let rec: planned_sets::SetRecord = from_json(&key, &v)?;
        planned_sets::resolved(e, sets, set, rec);
        Ok(())
    }

    /// Turns `e` into its stored form, storing its planned set once (`known`: the sets read in
    /// this call; `written`: the sets known stored in it).
    async fn store_set(
        &self,
        e: &mut OutboxEntry,
        known: &HashMap<String, crate::alert::PlannedSet>,
        written: &mut std::collections::HashSet<String>,
    ) -> Result<(), StateError> {
        if let Some((set, rec)) = planned_sets::split(e, now_ms(), known) {
            if written.insert(set.clone()) {
                // Created once; the same members under the same id if it exists.
                self.create(B::Outbox, &set_key(&set), to_json(&rec)?)
                    .await?;
            }
        }
        Ok(())
    }

    async fn outbox_all(&self) -> Result<Vec<OutboxRec>, StateError> {
        let mut v = Vec::new();
        let mut sets = HashMap::new();
        for (key, bytes, _) in self.scan(B::Outbox, "").await? {
            if key.starts_with(SET_PREFIX) {
                continue;
            }
            match from_json::<OutboxRec>(&key, &bytes) {
                Ok(mut r) => match self.resolve(&mut r.entry, &mut sets).await {
                    Ok(()) => v.push(r),
                    Err(e) => {
                        tracing::warn!(alert = %key, error = %e, "outbox entry skipped: its planned set cannot be read")
                    }
                },
                Err(e) => {
                    tracing::warn!(alert = %key, error = %e, "unreadable outbox entry skipped")
                }
            }
        }
        v.sort_by(|a, b| {
            (a.entry.alert.created_at, &a.entry.alert.id)
                .cmp(&(b.entry.alert.created_at, &b.entry.alert.id))
        });
        Ok(v)
    }
}

/// After a lost compare-and-set: a short pause that grows, then an error.
async fn conflict_pause(attempt: usize, key: &str) -> Result<(), StateError> {
    if attempt >= CAS_RETRIES {
        return Err(err(
            &format!("updating {key}"),
            format!("still conflicting after {CAS_RETRIES} attempts"),
        ));
    }
    if attempt > 2 {
        let ms = (attempt as u64).min(50) + rand::random::<u64>() % 5;
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(())
}

impl StateBackend for NatsState {
    fn describe(&self) -> String {
        format!(
            "nats {} (KV {ITEMS}, {OUTBOX}, {MARKS}, {COUNTERS})",
            self.urls
        )
    }

    async fn apply_batch(
        &self,
        events: Vec<Prepared>,
        rules: Arc<RuleConfig>,
        now: i64,
        dry_run: bool,
    ) -> Result<Vec<Applied>, StateError> {
        let view = View {
            st: self,
            dry: dry_run.then(|| Mutex::new(HashMap::new())),
            deltas: Mutex::new(BTreeMap::new()),
        };
        // Events that share no item (nor alias, nor payload key) are independent: their
        // groups run concurrently, each group in arrival order. The cross-channel rule reads
        // other items, so with it on the batch runs in order.
        // So does a product's variant list, which removes the variants it no longer names.
        let products = events.iter().any(|e| {
            e.normalized
                .facts
                .iter()
                .any(|f| matches!(f, Fact::ProductVariants { .. }))
        });
        let groups = if rules.combine_channels || products {
            vec![(0..events.len()).collect()]
        } else {
            independent_groups(&events)
        };
        let view = &view;
        let rules = &rules;
        let events = &events;
        let mut results = futures_stream::iter(groups)
            .map(|group: Vec<usize>| async move {
                let mut out = Vec::with_capacity(group.len());
                for i in group {
                    out.push((i, engine::apply_event(view, &events[i], rules, now).await?));
                }
                Ok::<_, StateError>(out)
            })
            .buffer_unordered(APPLY_CONCURRENCY);
        let mut applied: Vec<Option<Applied>> = vec![None; events.len()];
        let mut first_err = None;
        while let Some(r) = results.next().await {
            match r {
                Ok(out) => {
                    for (i, a) in out {
                        applied[i] = Some(a);
                    }
                }
                // Let the other groups finish: what they applied is counted, and the failed
                // batch is retried (re-applying is a no-op).
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        drop(results);
        if !dry_run {
            let deltas = std::mem::take(&mut *view.deltas.lock().expect("counter deltas"));
            self.add_counters(&deltas).await?;
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        let applied: Option<Vec<Applied>> = applied.into_iter().collect();
        applied.ok_or_else(|| err("applying", "an event of the batch was not applied"))
    }

    async fn run_no_sales(
        &self,
        rules: Arc<RuleConfig>,
        now: i64,
        dry_run: bool,
    ) -> Result<Vec<Alert>, StateError> {
        let mut raised = Vec::new();
        let mut created = 0;
        for (key, bytes, rev) in self.scan(B::Items, "i.").await? {
            let Ok(mut rec) = from_json::<ItemRec>(&key, &bytes) else {
                continue;
            };
            let mut rev = rev;
            for attempt in 0.. {
                let due = rec.state.take_scheduled(&rules, now);
                if due.is_empty() {
                    break;
                }
                if dry_run {
                    // Would they be new? An alert already in the outbox is not raised again.
                    for alert in due {
                        if self.get(B::Outbox, &alert.id).await?.0.is_none() {
                            raised.push(alert);
                        }
                    }
                    break;
                }
                // Enqueue first (the ids are the same for every worker and every retry), then
                // mark the item's rules done: a crash in between repeats only the enqueue.
                let mut new = Vec::new();
                for alert in due {
                    let entry = OutboxRec {
                        entry: OutboxEntry::new(alert.clone(), now + rules.digest_window_ms),
                        claim: None,
                    };
                    if self.create(B::Outbox, &alert.id, to_json(&entry)?).await? {
                        new.push(alert);
                    }
                }
                if self.cas(B::Items, &key, to_json(&rec)?, rev).await? {
                    created += new.len() as i64;
                    raised.extend(new);
                    break;
                }
                conflict_pause(attempt, &key).await?;
                let (cur, r) = self.get(B::Items, &key).await?;
                let Some(cur) = cur else { break };
                rec = from_json(&key, &cur)?;
                rev = r;
            }
        }
        if created > 0 {
            self.add_counters(&BTreeMap::from([(
                counters::ALERTS_CREATED.to_string(),
                created,
            )]))
            .await?;
        }
        Ok(raised)
    }

    async fn due_alerts(&self, now: i64) -> Result<Vec<OutboxEntry>, StateError> {
        let mut out = Vec::new();
        let mut sets = HashMap::new();
        for r in self.pending_entries().await? {
            if r.entry.status == OutboxStatus::Pending
                && r.entry.next_attempt_at <= now
                && !r.claimed_by_other(&self.owner, now)
            {
                let mut e = r.entry;
                match self.resolve(&mut e, &mut sets).await {
                    Ok(()) => out.push(e),
                    Err(err) => {
                        tracing::warn!(alert = %e.alert.id, error = %err, "due alert skipped: its planned set cannot be read")
                    }
                }
            }
        }
        Ok(out)
    }

    async fn next_due(&self) -> Result<Option<i64>, StateError> {
        Ok(self
            .pending_entries()
            .await?
            .iter()
            .map(|r| {
                let claim = r.claim.as_ref().map_or(0, |c| c.until_ms);
                r.entry.next_attempt_at.max(claim)
            })
            .min())
    }

    async fn outbox<F>(&self, keep: F) -> Result<Vec<OutboxEntry>, StateError>
    where
        F: Fn(&OutboxEntry) -> bool + Send + Sync + 'static,
    {
        Ok(self
            .outbox_all()
            .await?
            .into_iter()
            .map(|r| r.entry)
            .filter(|e| keep(e))
            .collect())
    }

    /// From the watch's cache of open entries: the sent ones are not read.
    async fn open_alerts(&self) -> Result<Vec<OutboxEntry>, StateError> {
        let mut out = Vec::new();
        let mut sets = HashMap::new();
        for r in self.open_entries().await? {
            let mut e = r.entry;
            if self.resolve(&mut e, &mut sets).await.is_ok() {
                out.push(e);
            }
        }
        Ok(out)
    }

    async fn alerts(&self, ids: Vec<String>) -> Result<Vec<OutboxEntry>, StateError> {
        let mut out = Vec::with_capacity(ids.len());
        let mut sets = HashMap::new();
        for id in &ids {
            if let (Some(cur), _) = self.get(B::Outbox, id).await? {
                let mut e = from_json::<OutboxRec>(id, &cur)?.entry;
                self.resolve(&mut e, &mut sets).await?;
                out.push(e);
            }
        }
        Ok(out)
    }

    async fn claim_alerts(
        &self,
        entries: Vec<OutboxEntry>,
        until_ms: i64,
    ) -> Result<Vec<OutboxEntry>, StateError> {
        let now = now_ms();
        let mut mine = Vec::new();
        let (mut sets, mut written) = (HashMap::new(), std::collections::HashSet::new());
        for e in entries {
            let key = e.alert.id.clone();
            let (cur, rev) = self.get(B::Outbox, &key).await?;
            let Some(cur) = cur else { continue };
            let mut rec: OutboxRec = from_json(&key, &cur)?;
            self.resolve(&mut rec.entry, &mut sets).await?;
            // Another worker is sending this one: it claims the entries in the same order, so
            // it is taking this set; leave it the rest (two workers each holding part of one
            // set would both wait for the other).
            if rec.claimed_by_other(&self.owner, now) {
                break;
            }
            if rec.entry.status != OutboxStatus::Pending || rec.entry.next_attempt_at > now {
                continue;
            }
            rec.claim = Some(Claim {
                owner: self.owner.clone(),
                until_ms,
            });
            // The email this entry is planned into is written down with the claim, before the
            // send: a crash mid-send resends exactly that set. A set already written stays: the
            // caller may plan from an older snapshot, or for a later channel.
            if rec.entry.planned.is_empty() && !e.planned.is_empty() {
                rec.entry.planned = e.planned.clone();
            }
            // One compare-and-set: if another worker got there first, it sends, not us (and
            // the rest of the set, as above).
            let entry = rec.entry.clone();
            self.store_set(&mut rec.entry, &sets, &mut written).await?;
            if !self.cas(B::Outbox, &key, to_json(&rec)?, rev).await? {
                break;
            }
            mine.push(entry);
        }
        Ok(mine)
    }

    async fn renew_claims(&self, ids: Vec<String>, until_ms: i64) -> Result<bool, StateError> {
        let mut all = true;
        for id in &ids {
            for attempt in 0.. {
                let (cur, rev) = self.get(B::Outbox, id).await?;
                let Some(cur) = cur else {
                    all = false;
                    break;
                };
                let mut rec: OutboxRec = from_json(id, &cur)?;
                match &mut rec.claim {
                    Some(c) if c.owner == self.owner => c.until_ms = c.until_ms.max(until_ms),
                    // Released (delivered and written down) or taken over: not ours any more.
                    _ => {
                        all = false;
                        break;
                    }
                }
                if self.cas(B::Outbox, id, to_json(&rec)?, rev).await? {
                    break;
                }
                conflict_pause(attempt, id).await?;
            }
        }
        Ok(all)
    }

    async fn update_alerts<F>(
        &self,
        ids: Vec<String>,
        f: F,
        counters: Vec<(String, i64)>,
    ) -> Result<(), StateError>
    where
        F: Fn(&mut OutboxEntry) + Clone + Send + Sync + 'static,
    {
        let (mut sets, mut written) = (HashMap::new(), std::collections::HashSet::new());
        for id in &ids {
            for attempt in 0.. {
                let (cur, rev) = self.get(B::Outbox, id).await?;
                let Some(cur) = cur else { break };
                let mut rec: OutboxRec = from_json(id, &cur)?;
                self.resolve(&mut rec.entry, &mut sets).await?;
                f(&mut rec.entry);
                self.store_set(&mut rec.entry, &sets, &mut written).await?;
                // Our claim (or a lapsed one) is released; another worker's live claim stays
                // (this one was paused past its claim and the other took over).
                if !rec.claimed_by_other(&self.owner, now_ms()) {
                    rec.claim = None;
                }
                if self.cas(B::Outbox, id, to_json(&rec)?, rev).await? {
                    break;
                }
                conflict_pause(attempt, id).await?;
            }
        }
        if !counters.is_empty() {
            let mut deltas = BTreeMap::new();
            for (name, n) in counters {
                *deltas.entry(name).or_insert(0) += n;
            }
            self.add_counters(&deltas).await?;
        }
        Ok(())
    }

    async fn purge_alerts(&self, ids: Vec<String>) -> Result<(), StateError> {
        for id in &ids {
            self.outbox
                .delete(id)
                .await
                .map_err(|e| err(&format!("delete {id}"), e))?;
        }
        Ok(())
    }

    async fn counters(&self) -> Result<BTreeMap<String, i64>, StateError> {
        let mut out = BTreeMap::new();
        for (key, bytes, _) in self.scan(B::Counters, "").await? {
            if let Some(v) = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.parse().ok())
            {
                out.insert(dec(&key), v);
            }
        }
        Ok(out)
    }

    /// The buckets expire marks and sent alerts by themselves; the hourly event counters are
    /// forgotten here.
    async fn housekeeping(&self, _cutoff: i64) -> Result<usize, StateError> {
        let cutoff = stockhook_shared::queue::now_ms() - counters::HOURLY_KEEP_MS;
        let mut n = 0;
        for (key, _, _) in self.scan(B::Counters, "").await? {
            if counters::is_stale_hour(&dec(&key), cutoff) {
                self.counters
                    .delete(&key)
                    .await
                    .map_err(|e| err(&format!("delete counter {key}"), e))?;
                n += 1;
            }
        }
        Ok(n)
    }

    async fn items(&self) -> Result<Vec<ItemState>, StateError> {
        let mut out: Vec<ItemState> = Vec::new();
        for (key, bytes, _) in self.scan(B::Items, "i.").await? {
            if let Ok(r) = from_json::<ItemRec>(&key, &bytes) {
                out.push(r.state);
            }
        }
        out.sort_by(|a, b| (&a.source, &a.item).cmp(&(&b.source, &b.item)));
        Ok(out)
    }

    /// From the items bucket's stream: without a cursor the newest record of every item, with
    /// one every write after the stream sequence it names (the last one per item counts). A
    /// write after the read's consumer started may be missed by this read; its sequence is past
    /// the cursor returned, so the next read has it.
    async fn item_changes(&self, since: Option<ItemsCursor>) -> Result<ItemRead, StateError> {
        let records = self
            .scan_records(B::Items, "i.", since.map(|c| c.0 + 1))
            .await?;
        let mut last = since.map_or(0, |c| c.0);
        let mut newest: HashMap<String, Option<Bytes>> = HashMap::new();
        for (seq, key, payload) in records {
            last = last.max(seq);
            newest.insert(key, payload);
        }
        let (mut items, mut gone) = (Vec::new(), Vec::new());
        for (key, payload) in newest {
            match payload.and_then(|b| from_json::<ItemRec>(&key, &b).ok()) {
                Some(r) => items.push(r.state),
                None => gone.extend(
                    dec(key.strip_prefix("i.").unwrap_or(&key))
                        .split_once('\0')
                        .map(|(source, item)| (source.to_string(), item.to_string())),
                ),
            }
        }
        Ok(ItemRead {
            changes: match since {
                Some(_) => ItemChanges::Changed { items, gone },
                None => ItemChanges::All(items),
            },
            cursor: Some(ItemsCursor(last)),
        })
    }

    async fn live_item_ids(&self, source: String) -> Result<Vec<String>, StateError> {
        /// An item record with only what the scan needs decoded.
        #[derive(serde::Deserialize)]
        struct Head {
            state: crate::state::ItemHead,
        }
        let mut out = Vec::new();
        for (key, bytes, _) in self.scan(B::Items, "i.").await? {
            if let Ok(h) = from_json::<Head>(&key, &bytes) {
                if h.state.source == source && h.state.removed.is_none() {
                    out.push(h.state.item);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn sync(&self) -> Result<(), StateError> {
        // Every write above returned after JetStream acked it: nothing is buffered here.
        Ok(())
    }
}

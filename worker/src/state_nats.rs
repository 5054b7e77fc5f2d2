//! The worker's state in JetStream KV buckets (`[queue] backend = "nats"`), shared by any number
//! of workers:
//!
//! * `stockhook_items`: `i.<source,item>` an item ([`ItemState`] plus its guard, below),
//!   `a.<source,alias>` alias -> item, `k.<sku>` the (source, item)s carrying a SKU,
//!   `c.<sku>` cross-channel arming;
//! * `stockhook_outbox`: `<alert id>` an outbox entry plus the claim of the worker sending it;
//! * `stockhook_marks`: `p.<event id>` processed, `q.<source,payload key>` payload dedup,
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
//! Sending: a worker claims each due entry by CAS (its owner id and a deadline) before sending;
//! only the claimer sends; marking it sent releases the claim. A claim whose deadline passed
//! (the worker died mid-send) may be taken by another worker: at least once towards the mail
//! server, exactly as a crash between send and mark-sent is on sled.
//!
//! Counters are added once per batch by CAS; a crash between the processed marks and the
//! counter update can under-count them (they are statistics; nothing depends on them).

use crate::alert::{Alert, OutboxEntry, OutboxStatus, Rule};
use crate::facts::Fact;
use crate::rules::{self, Arming};
use crate::state::{counters, Applied, ItemState, Prepared, RuleConfig, StateError};
use crate::state_backend::StateBackend;
use async_nats::jetstream::{self, kv, stream};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::stream::{self as futures_stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stockhook_shared::config::Config;
use stockhook_shared::queue::nats::{self as qnats, NatsOptions};
use stockhook_shared::queue::now_ms;

pub const ITEMS: &str = "stockhook_items";
pub const OUTBOX: &str = "stockhook_outbox";
pub const MARKS: &str = "stockhook_marks";
pub const COUNTERS: &str = "stockhook_counters";

/// Tokens remembered per record: a fact redelivered after more than this many later facts
/// touched the same record would apply twice (redeliveries come within minutes).
const GUARD_KEEP: usize = 512;
const MARKS_MAX_AGE: Duration = Duration::from_secs(90 * 86_400);
/// How long a claim to send an outbox entry holds.
pub const CLAIM_MS: i64 = 5 * 60_000;
const CAS_RETRIES: usize = 200;

/// (event id, fact index): one fact of one event.
type Token = (u64, u32);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Guard {
    applied: VecDeque<Token>,
    #[serde(default)]
    pending: Vec<(Token, Vec<Alert>)>,
}

impl Guard {
    fn has(&self, t: Token) -> bool {
        self.applied.contains(&t)
    }
    fn alerts_of(&self, t: Token) -> Vec<Alert> {
        self.pending
            .iter()
            .filter(|(k, _)| *k == t)
            .flat_map(|(_, a)| a.clone())
            .collect()
    }
    fn record(&mut self, t: Token, alerts: &[Alert]) {
        self.applied.push_back(t);
        while self.applied.len() > GUARD_KEEP {
            self.applied.pop_front();
        }
        if !alerts.is_empty() {
            self.pending.push((t, alerts.to_vec()));
        }
        let applied = &self.applied;
        self.pending.retain(|(k, _)| applied.contains(k));
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ItemRec {
    state: ItemState,
    #[serde(default)]
    guard: Guard,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CombinedRec {
    arming: Arming,
    #[serde(default)]
    guard: Guard,
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
    /// The pending outbox entries, kept current by a watch on the bucket (started by the
    /// sender's first look), so finding what is due does not read every entry ever sent.
    pending: tokio::sync::OnceCell<Arc<PendingCache>>,
}

/// Pending outbox entries by alert id, as the watch last saw them. A hint: whoever sends claims
/// the entry by compare-and-set on its current revision first.
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
            Some(r) if r.entry.status == OutboxStatus::Pending => {
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

/// A dry run's writes, by bucket and key (`None` = deleted).
type Overlay = Mutex<HashMap<(B, String), Option<Bytes>>>;

/// Reads and writes of one `apply_batch`: straight to the buckets, or (dry run) into an overlay
/// that is thrown away.
struct View<'a> {
    st: &'a NatsState,
    dry: Option<Overlay>,
}

impl View<'_> {
    fn overlay(&self, b: B, key: &str) -> Option<Option<Bytes>> {
        self.dry.as_ref().and_then(|m| {
            m.lock()
                .expect("overlay")
                .get(&(b, key.to_string()))
                .cloned()
        })
    }

    fn stage(&self, b: B, key: &str, v: Option<Bytes>) -> bool {
        match &self.dry {
            Some(m) => {
                m.lock().expect("overlay").insert((b, key.to_string()), v);
                true
            }
            None => false,
        }
    }

    async fn get(&self, b: B, key: &str) -> Result<(Option<Bytes>, u64), StateError> {
        if let Some(v) = self.overlay(b, key) {
            return Ok((v, 0));
        }
        self.st.get(b, key).await
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        b: B,
        key: &str,
    ) -> Result<(Option<T>, u64), StateError> {
        let (v, rev) = self.get(b, key).await?;
        Ok((v.map(|v| from_json(key, &v)).transpose()?, rev))
    }

    /// Compare-and-set: false when someone else wrote first (re-read and try again).
    async fn cas<T: Serialize>(
        &self,
        b: B,
        key: &str,
        v: &T,
        rev: u64,
    ) -> Result<bool, StateError> {
        let bytes = to_json(v)?;
        if self.stage(b, key, Some(bytes.clone())) {
            return Ok(true);
        }
        self.st.cas(b, key, bytes, rev).await
    }

    /// Create-only: false when the key exists.
    async fn create(&self, b: B, key: &str, v: Bytes) -> Result<bool, StateError> {
        if self.dry.is_some() {
            if self.get(b, key).await?.0.is_some() {
                return Ok(false);
            }
            return Ok(self.stage(b, key, Some(v)));
        }
        self.st.create(b, key, v).await
    }

    async fn put(&self, b: B, key: &str, v: Bytes) -> Result<(), StateError> {
        if self.stage(b, key, Some(v.clone())) {
            return Ok(());
        }
        self.st
            .bucket(b)
            .put(key, v)
            .await
            .map(|_| ())
            .map_err(|e| err(&format!("put {key}"), e))
    }

    async fn delete(&self, b: B, key: &str) -> Result<(), StateError> {
        if self.stage(b, key, None) {
            return Ok(());
        }
        self.st
            .bucket(b)
            .delete(key)
            .await
            .map_err(|e| err(&format!("delete {key}"), e))
    }

    /// Claims a mark for `id` (create-only); returns the event that holds it.
    async fn claim_mark(&self, key: &str, id: u64) -> Result<u64, StateError> {
        if self
            .create(B::Marks, key, Bytes::from(id.to_string()))
            .await?
        {
            return Ok(id);
        }
        let (v, _) = self.get(B::Marks, key).await?;
        Ok(v.and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
            .unwrap_or(u64::MAX))
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
            urls: o.urls.join(","),
            pending: tokio::sync::OnceCell::new(),
        })
    }

    /// The pending entries: from the watch once it caught up, else by reading the bucket.
    async fn pending_entries(&self) -> Result<Vec<OutboxRec>, StateError> {
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
            .filter(|r| r.entry.status == OutboxStatus::Pending)
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
        let kv = self.bucket(b);
        let filter = format!("$KV.{}.{prefix}>", kv.name);
        let strip = format!("$KV.{}.", kv.name);
        let msgs = qnats::scan_last_per_subject(&kv.stream, &filter)
            .await
            .map_err(|e| err(&format!("scanning {}", kv.name), e))?;
        Ok(msgs
            .into_iter()
            .filter(|(_, _, h, _)| {
                !h.get("KV-Operation")
                    .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE")
            })
            .map(|(seq, subject, _, payload)| {
                (
                    subject.strip_prefix(&strip).unwrap_or(&subject).to_string(),
                    payload,
                    seq,
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

    async fn outbox_all(&self) -> Result<Vec<OutboxRec>, StateError> {
        let mut v = Vec::new();
        for (key, bytes, _) in self.scan(B::Outbox, "").await? {
            match from_json::<OutboxRec>(&key, &bytes) {
                Ok(r) => v.push(r),
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

    async fn apply_one(
        &self,
        view: &View<'_>,
        ev: &Prepared,
        rules: &RuleConfig,
        now: i64,
        deltas: &mut BTreeMap<String, i64>,
    ) -> Result<Applied, StateError> {
        let pkey = format!("p.{}", ev.id.0);
        if view.get(B::Marks, &pkey).await?.0.is_some() {
            return Ok(Applied::AlreadyProcessed);
        }
        let now_bytes = Bytes::from(now.to_string());
        if let Some(k) = &ev.payload_key {
            let qkey = format!("q.{}", enc(&[&ev.source, k]));
            if view.claim_mark(&qkey, ev.id.0).await? != ev.id.0 {
                if view.create(B::Marks, &pkey, now_bytes).await? {
                    *deltas
                        .entry(counters::EVENTS_DUPLICATE.to_string())
                        .or_default() += 1;
                }
                return Ok(Applied::AlreadyProcessed);
            }
        }
        let mut alerts = Vec::new();
        for (i, fact) in ev.normalized.facts.iter().enumerate() {
            self.apply_fact(
                view,
                ev,
                (ev.id.0, i as u32),
                fact,
                rules,
                now,
                &mut alerts,
                deltas,
            )
            .await?;
        }
        for a in &alerts {
            let entry = OutboxRec {
                entry: OutboxEntry::new(a.clone(), a.created_at + rules.digest_window_ms),
                claim: None,
            };
            if view.create(B::Outbox, &a.id, to_json(&entry)?).await? {
                *deltas
                    .entry(counters::ALERTS_CREATED.to_string())
                    .or_default() += 1;
            }
        }
        if view.create(B::Marks, &pkey, now_bytes).await? {
            let name = if ev.normalized.ignored {
                counters::EVENTS_IGNORED
            } else {
                counters::EVENTS_PROCESSED
            };
            *deltas.entry(name.to_string()).or_default() += 1;
            *deltas
                .entry(counters::source_processed(&ev.source))
                .or_default() += 1;
        }
        Ok(Applied::Done { alerts })
    }

    async fn resolve(
        &self,
        view: &View<'_>,
        source: &str,
        item: &str,
    ) -> Result<String, StateError> {
        Ok(
            match view
                .get(B::Items, &format!("a.{}", enc(&[source, item])))
                .await?
                .0
            {
                Some(v) => String::from_utf8_lossy(&v).into_owned(),
                None => item.to_string(),
            },
        )
    }

    #[allow(clippy::too_many_arguments)]
    async fn apply_fact(
        &self,
        view: &View<'_>,
        ev: &Prepared,
        tok: Token,
        fact: &Fact,
        rules: &RuleConfig,
        now: i64,
        alerts: &mut Vec<Alert>,
        deltas: &mut BTreeMap<String, i64>,
    ) -> Result<(), StateError> {
        let new_item = |item: &str, at: i64| ItemRec {
            state: ItemState::new(&ev.source, &ev.platform, item, at),
            guard: Guard::default(),
        };
        match fact {
            Fact::CatalogEntry {
                item,
                aliases,
                sku,
                title,
                at,
            } => {
                let aliases: Vec<&String> = aliases.iter().filter(|a| *a != item).collect();
                for alias in &aliases {
                    view.put(
                        B::Items,
                        &format!("a.{}", enc(&[&ev.source, alias])),
                        Bytes::from(item.clone()),
                    )
                    .await?;
                }
                let key = item_key(&ev.source, item);
                let mut old_sku = None;
                for attempt in 0.. {
                    let (cur, rev) = view.get_json::<ItemRec>(B::Items, &key).await?;
                    if cur.as_ref().is_some_and(|r| r.guard.has(tok)) {
                        break;
                    }
                    let mut rec = match cur {
                        Some(mut r) => {
                            r.state.first_seen_at = r.state.first_seen_at.min(*at);
                            r
                        }
                        None => new_item(item, *at),
                    };
                    old_sku = rec.state.sku.clone();
                    if let Some(new) = sku {
                        rec.state.sku = Some(new.clone());
                    }
                    if title.is_some() {
                        rec.state.title = title.clone();
                    }
                    // Sales recorded under an alias before the catalog knew it belong here.
                    for alias in &aliases {
                        let ak = item_key(&ev.source, alias);
                        if let (Some(orphan), _) = view.get_json::<ItemRec>(B::Items, &ak).await? {
                            let o = orphan.state;
                            rec.state.last_sale_at = rec.state.last_sale_at.max(o.last_sale_at);
                            rec.state.units_sold += o.units_sold;
                            rec.state.first_seen_at = rec.state.first_seen_at.min(o.first_seen_at);
                        }
                    }
                    rec.guard.record(tok, &[]);
                    if view.cas(B::Items, &key, &rec, rev).await? {
                        break;
                    }
                    conflict_pause(attempt, &key).await?;
                }
                // Idempotent follow-ups, also redone when the record was already applied.
                for alias in &aliases {
                    let ak = item_key(&ev.source, alias);
                    if view.get(B::Items, &ak).await?.0.is_some() {
                        view.delete(B::Items, &ak).await?;
                    }
                }
                if let Some(new) = sku {
                    let member = (ev.source.clone(), item.clone());
                    if let Some(old) = old_sku.filter(|o| o != new) {
                        self.update_members(view, &old, |m| m.retain(|x| *x != member))
                            .await?;
                    }
                    self.update_members(view, new, |m| {
                        if !m.contains(&member) {
                            m.push(member.clone())
                        }
                    })
                    .await?;
                }
            }
            Fact::InventoryLevel {
                item,
                location,
                available,
                at,
            } => {
                let item = self.resolve(view, &ev.source, item).await?;
                let key = item_key(&ev.source, &item);
                let mut sku = None;
                for attempt in 0.. {
                    let (cur, rev) = view.get_json::<ItemRec>(B::Items, &key).await?;
                    if let Some(r) = cur.as_ref().filter(|r| r.guard.has(tok)) {
                        alerts.extend(r.guard.alerts_of(tok));
                        sku = r.state.sku.clone();
                        break;
                    }
                    let mut rec = match cur {
                        Some(mut r) => {
                            r.state.first_seen_at = r.state.first_seen_at.min(*at);
                            r
                        }
                        None => new_item(&item, *at),
                    };
                    let st = &mut rec.state;
                    if st.is_stale(location, *at) {
                        rec.guard.record(tok, &[]);
                        if view.cas(B::Items, &key, &rec, rev).await? {
                            *deltas
                                .entry(counters::LEVELS_STALE.to_string())
                                .or_default() += 1;
                            return Ok(());
                        }
                        conflict_pause(attempt, &key).await?;
                        continue;
                    }
                    let raised: Vec<Alert> = st
                        .record_level(location, *available, *at, rules, now)
                        .into_iter()
                        .collect();
                    let this_sku = st.sku.clone();
                    rec.guard.record(tok, &raised);
                    if view.cas(B::Items, &key, &rec, rev).await? {
                        alerts.extend(raised);
                        sku = this_sku;
                        break;
                    }
                    conflict_pause(attempt, &key).await?;
                }
                if rules.combine_channels {
                    if let Some(sku) = sku {
                        self.combined_level(view, tok, &sku, location, *at, rules, now, alerts)
                            .await?;
                    }
                }
            }
            Fact::Sale {
                item,
                quantity,
                order,
                line,
                at,
            } => {
                let skey = format!("s.{}", enc(&[&ev.source, order, line]));
                if view.claim_mark(&skey, ev.id.0).await? != ev.id.0 {
                    return Ok(());
                }
                let item = self.resolve(view, &ev.source, item).await?;
                let key = item_key(&ev.source, &item);
                for attempt in 0.. {
                    let (cur, rev) = view.get_json::<ItemRec>(B::Items, &key).await?;
                    if cur.as_ref().is_some_and(|r| r.guard.has(tok)) {
                        break;
                    }
                    let mut rec = match cur {
                        Some(mut r) => {
                            r.state.first_seen_at = r.state.first_seen_at.min(*at);
                            r
                        }
                        None => new_item(&item, *at),
                    };
                    rec.state.add_sold(*quantity);
                    if *quantity > 0 {
                        rec.state.last_sale_at =
                            Some(rec.state.last_sale_at.map_or(*at, |t| t.max(*at)));
                    }
                    rec.guard.record(tok, &[]);
                    if view.cas(B::Items, &key, &rec, rev).await? {
                        break;
                    }
                    conflict_pause(attempt, &key).await?;
                }
            }
        }
        Ok(())
    }

    async fn update_members(
        &self,
        view: &View<'_>,
        sku: &str,
        f: impl Fn(&mut Vec<(String, String)>),
    ) -> Result<(), StateError> {
        let key = format!("k.{}", enc(&[sku]));
        for attempt in 0.. {
            let (cur, rev) = view
                .get_json::<Vec<(String, String)>>(B::Items, &key)
                .await?;
            let mut members = cur.clone().unwrap_or_default();
            f(&mut members);
            if Some(&members) == cur.as_ref() || (cur.is_none() && members.is_empty()) {
                return Ok(());
            }
            if view.cas(B::Items, &key, &members, rev).await? {
                return Ok(());
            }
            conflict_pause(attempt, &key).await?;
        }
        Ok(())
    }

    /// The cross-channel rule on the sum over every source's item carrying `sku`.
    #[allow(clippy::too_many_arguments)]
    async fn combined_level(
        &self,
        view: &View<'_>,
        tok: Token,
        sku: &str,
        location: &str,
        at: i64,
        rules: &RuleConfig,
        now: i64,
        alerts: &mut Vec<Alert>,
    ) -> Result<(), StateError> {
        let key = format!("c.{}", enc(&[sku]));
        for attempt in 0.. {
            let (cur, rev) = view.get_json::<CombinedRec>(B::Items, &key).await?;
            if let Some(r) = cur.as_ref().filter(|r| r.guard.has(tok)) {
                alerts.extend(r.guard.alerts_of(tok));
                return Ok(());
            }
            let (members, _) = view
                .get_json::<Vec<(String, String)>>(B::Items, &format!("k.{}", enc(&[sku])))
                .await?;
            let mut total: Option<i64> = None;
            let mut sources: Vec<String> = Vec::new();
            for (source, item) in members.unwrap_or_default() {
                let (rec, _) = view
                    .get_json::<ItemRec>(B::Items, &item_key(&source, &item))
                    .await?;
                // A member left behind by a SKU change that crashed midway is not counted.
                if let Some(rec) = rec.filter(|r| r.state.sku.as_deref() == Some(sku)) {
                    if let Some(t) = rec.state.total() {
                        total = Some(total.unwrap_or(0) + t);
                    }
                    if !sources.contains(&source) {
                        sources.push(source);
                    }
                }
            }
            if sources.len() < 2 {
                return Ok(());
            }
            let mut rec = cur.unwrap_or_default();
            let threshold = rules.combined_threshold(sku);
            let fired = rules::evaluate_level(total, threshold, &mut rec.arming);
            let raised: Vec<Alert> = fired
                .map(|_| {
                    crate::state::combined_alert(
                        sku,
                        &sources,
                        location,
                        total,
                        threshold,
                        rec.arming.episode,
                        at,
                        now,
                        rules,
                    )
                })
                .into_iter()
                .collect();
            rec.guard.record(tok, &raised);
            if view.cas(B::Items, &key, &rec, rev).await? {
                alerts.extend(raised);
                return Ok(());
            }
            conflict_pause(attempt, &key).await?;
        }
        Ok(())
    }
}

/// How many independent groups of a batch are applied at once.
const APPLY_CONCURRENCY: usize = 32;

/// Splits a batch into groups of events that touch common records (same item id, alias or
/// payload dedup key of the same source), each group in arrival order.
fn independent_groups(events: &[Prepared]) -> Vec<Vec<usize>> {
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut parent: Vec<usize> = (0..events.len()).collect();
    let mut owner: HashMap<String, usize> = HashMap::new();
    for (i, ev) in events.iter().enumerate() {
        let mut keys: Vec<String> = Vec::new();
        if let Some(k) = &ev.payload_key {
            keys.push(format!("q\0{}\0{k}", ev.source));
        }
        for f in &ev.normalized.facts {
            match f {
                Fact::CatalogEntry { item, aliases, .. } => {
                    keys.push(format!("i\0{}\0{item}", ev.source));
                    keys.extend(aliases.iter().map(|a| format!("i\0{}\0{a}", ev.source)));
                }
                Fact::InventoryLevel { item, .. } | Fact::Sale { item, .. } => {
                    keys.push(format!("i\0{}\0{item}", ev.source))
                }
            }
        }
        for k in keys {
            match owner.get(&k) {
                Some(&j) => {
                    let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                    if a != b {
                        parent[a.max(b)] = a.min(b);
                    }
                }
                None => {
                    owner.insert(k, i);
                }
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..events.len() {
        let root = find(&mut parent, i);
        groups.entry(root).or_default().push(i);
    }
    groups.into_values().collect()
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
        };
        // Events that share no item (nor alias, nor payload key) are independent: their
        // groups run concurrently, each group in arrival order. The cross-channel rule reads
        // other items, so with it on the batch runs in order.
        let groups = if rules.combine_channels {
            vec![(0..events.len()).collect()]
        } else {
            independent_groups(&events)
        };
        let view = &view;
        let rules = &rules;
        let events = &events;
        let mut results = futures_stream::iter(groups)
            .map(|group: Vec<usize>| async move {
                let mut deltas = BTreeMap::new();
                let mut out = Vec::with_capacity(group.len());
                for i in group {
                    out.push((
                        i,
                        self.apply_one(view, &events[i], rules, now, &mut deltas)
                            .await?,
                    ));
                }
                Ok::<_, StateError>((out, deltas))
            })
            .buffer_unordered(APPLY_CONCURRENCY);
        let mut applied: Vec<Option<Applied>> = vec![None; events.len()];
        let mut deltas: BTreeMap<String, i64> = BTreeMap::new();
        let mut first_err = None;
        while let Some(r) = results.next().await {
            match r {
                Ok((out, d)) => {
                    for (i, a) in out {
                        applied[i] = Some(a);
                    }
                    for (k, v) in d {
                        *deltas.entry(k).or_default() += v;
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
            self.add_counters(&deltas).await?;
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        Ok(applied
            .into_iter()
            .map(|a| a.expect("every event of the batch was applied"))
            .collect())
    }

    async fn run_no_sales(
        &self,
        rules: Arc<RuleConfig>,
        now: i64,
    ) -> Result<Vec<Alert>, StateError> {
        let mut raised = Vec::new();
        let mut created = 0;
        for (key, bytes, rev) in self.scan(B::Items, "i.").await? {
            let Ok(mut rec) = from_json::<ItemRec>(&key, &bytes) else {
                continue;
            };
            let mut rev = rev;
            for attempt in 0.. {
                let st = &rec.state;
                let since = st.quiet_since();
                if !rules::no_sales_due(
                    st.total(),
                    since,
                    now,
                    rules.no_sales_days,
                    st.no_sales_fired_for,
                ) {
                    break;
                }
                let alert = st.no_sales_alert(since, &rules, now);
                // Enqueue first (the id is the same for every worker and every retry), then
                // mark the quiet period done: a crash in between repeats only the enqueue.
                let entry = OutboxRec {
                    entry: OutboxEntry::new(alert.clone(), now + rules.digest_window_ms),
                    claim: None,
                };
                let new = self.create(B::Outbox, &alert.id, to_json(&entry)?).await?;
                rec.state.no_sales_fired_for = Some(since);
                rec.state.last_alert = Some((Rule::NoSales, now));
                if self.cas(B::Items, &key, to_json(&rec)?, rev).await? {
                    if new {
                        created += 1;
                        raised.push(alert);
                    }
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
        Ok(self
            .pending_entries()
            .await?
            .into_iter()
            .filter(|r| {
                r.entry.status == OutboxStatus::Pending
                    && r.entry.next_attempt_at <= now
                    && !r.claimed_by_other(&self.owner, now)
            })
            .map(|r| r.entry)
            .collect())
    }

    async fn next_due(&self) -> Result<Option<i64>, StateError> {
        Ok(self
            .pending_entries()
            .await?
            .iter()
            .filter(|r| r.entry.status == OutboxStatus::Pending)
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

    async fn claim_alerts(
        &self,
        entries: Vec<OutboxEntry>,
        until_ms: i64,
    ) -> Result<Vec<OutboxEntry>, StateError> {
        let now = now_ms();
        let mut mine = Vec::new();
        for e in entries {
            let key = e.alert.id.clone();
            let (cur, rev) = self.get(B::Outbox, &key).await?;
            let Some(cur) = cur else { continue };
            let mut rec: OutboxRec = from_json(&key, &cur)?;
            if rec.entry.status != OutboxStatus::Pending
                || rec.entry.next_attempt_at > now
                || rec.claimed_by_other(&self.owner, now)
            {
                continue;
            }
            rec.claim = Some(Claim {
                owner: self.owner.clone(),
                until_ms,
            });
            // The email this entry is planned into is written down with the claim, before the
            // send: a crash mid-send resends exactly that set.
            if !e.planned.is_empty() {
                rec.entry.planned = e.planned.clone();
            }
            // One compare-and-set: if another worker got there first, it sends, not us.
            if self.cas(B::Outbox, &key, to_json(&rec)?, rev).await? {
                mine.push(rec.entry);
            }
        }
        Ok(mine)
    }

    async fn update_alerts<F>(
        &self,
        ids: Vec<String>,
        f: F,
        counter: Option<(String, i64)>,
    ) -> Result<(), StateError>
    where
        F: Fn(&mut OutboxEntry) + Clone + Send + Sync + 'static,
    {
        for id in &ids {
            for attempt in 0.. {
                let (cur, rev) = self.get(B::Outbox, id).await?;
                let Some(cur) = cur else { break };
                let mut rec: OutboxRec = from_json(id, &cur)?;
                f(&mut rec.entry);
                rec.claim = None;
                if self.cas(B::Outbox, id, to_json(&rec)?, rev).await? {
                    break;
                }
                conflict_pause(attempt, id).await?;
            }
        }
        if let Some((name, n)) = counter {
            self.add_counters(&BTreeMap::from([(name, n)])).await?;
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

    async fn sync(&self) -> Result<(), StateError> {
        // Every write above returned after JetStream acked it: nothing is buffered here.
        Ok(())
    }
}

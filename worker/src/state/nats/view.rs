//! One `apply_batch` on the KV buckets: the records the engine reads and writes (items with
//! their guards, aliases, SKU members, cross-channel arming, marks, the outbox), made exactly
//! once without multi-key transactions (see the parent module for the order of effects), and the
//! split of a batch into groups that touch no common record.

use super::{conflict_pause, enc, err, from_json, item_key, to_json, NatsState, OutboxRec, B};
use crate::alert::{Alert, OutboxEntry, OutboxStatus};
use crate::facts::Fact;
use crate::rules::Arming;
use crate::state::engine::{Mark, Member, Once, Step, Store, Token};
use crate::state::{ItemState, Prepared, StateError};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

/// Tokens remembered per record: a fact redelivered after more than this many later facts
/// touched the same record would apply twice (redeliveries come within minutes).
const GUARD_KEEP: usize = 512;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Guard {
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
pub(super) struct ItemRec {
    pub(super) state: ItemState,
    #[serde(default)]
    pub(super) guard: Guard,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CombinedRec {
    arming: Arming,
    #[serde(default)]
    guard: Guard,
}

/// A dry run's writes, by bucket and key (`None` = deleted).
pub(super) type Overlay = Mutex<HashMap<(B, String), Option<Bytes>>>;

/// Reads and writes of one `apply_batch`: straight to the buckets, or (dry run) into an overlay
/// that is thrown away.
pub(super) struct View<'a> {
    pub(super) st: &'a NatsState,
    pub(super) dry: Option<Overlay>,
    /// Counter changes, added once at the end of the batch.
    pub(super) deltas: Mutex<BTreeMap<String, i64>>,
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

    /// Claims a mark for `holder` (create-only): true when `holder` holds it.
    async fn claim_mark(&self, key: &str, holder: String) -> Result<bool, StateError> {
        if self
            .create(B::Marks, key, Bytes::from(holder.clone()))
            .await?
        {
            return Ok(true);
        }
        let (v, _) = self.get(B::Marks, key).await?;
        Ok(v.is_some_and(|v| v[..] == *holder.as_bytes()))
    }

    /// Updates a guarded record once per token (compare-and-set, retried on conflict).
    async fn update_once<R: Guarded>(
        &self,
        key: &str,
        tok: Token,
        f: &mut (dyn FnMut(Option<R::Value>) -> Step<R::Value> + Send),
    ) -> Result<Once<R::Value>, StateError> {
        for attempt in 0.. {
            let (cur, rev) = self.get_json::<R>(B::Items, key).await?;
            if let Some(r) = cur.as_ref().filter(|r| r.guard().has(tok)) {
                return Ok(Once {
                    current: Some(r.value().clone()),
                    alerts: r.guard().alerts_of(tok),
                    fresh: false,
                });
            }
            let step = f(cur.as_ref().map(|r| r.value().clone()));
            let mut rec = match (cur, step.next) {
                (None, None) => {
                    return Ok(Once {
                        current: None,
                        alerts: step.alerts,
                        fresh: true,
                    })
                }
                (Some(r), None) => r,
                (Some(mut r), Some(v)) => {
                    r.set(v);
                    r
                }
                (None, Some(v)) => R::new(v),
            };
            rec.guard_mut().record(tok, &step.alerts);
            if self.cas(B::Items, key, &rec, rev).await? {
                return Ok(Once {
                    current: Some(rec.value().clone()),
                    alerts: step.alerts,
                    fresh: true,
                });
            }
            conflict_pause(attempt, key).await?;
        }
        unreachable!("conflict_pause ends the loop")
    }
}

/// A record stored with its guard.
trait Guarded: Serialize + DeserializeOwned {
    type Value: Clone;
    fn new(v: Self::Value) -> Self;
    fn value(&self) -> &Self::Value;
    fn set(&mut self, v: Self::Value);
    fn guard(&self) -> &Guard;
    fn guard_mut(&mut self) -> &mut Guard;
}

impl Guarded for ItemRec {
    type Value = ItemState;
    fn new(state: ItemState) -> Self {
        ItemRec {
            state,
            guard: Guard::default(),
        }
    }
    fn value(&self) -> &ItemState {
        &self.state
    }
    fn set(&mut self, v: ItemState) {
        self.state = v;
    }
    fn guard(&self) -> &Guard {
        &self.guard
    }
    fn guard_mut(&mut self) -> &mut Guard {
        &mut self.guard
    }
}

impl Guarded for CombinedRec {
    type Value = Arming;
    fn new(arming: Arming) -> Self {
        CombinedRec {
            arming,
            guard: Guard::default(),
        }
    }
    fn value(&self) -> &Arming {
        &self.arming
    }
    fn set(&mut self, v: Arming) {
        self.arming = v;
    }
    fn guard(&self) -> &Guard {
        &self.guard
    }
    fn guard_mut(&mut self) -> &mut Guard {
        &mut self.guard
    }
}

fn members_key(sku: &str) -> String {
    format!("k.{}", enc(&[sku]))
}

impl Store for View<'_> {
    type Error = StateError;

    async fn processed(&self, id: u64) -> Result<bool, StateError> {
        Ok(self.get(B::Marks, &format!("p.{id}")).await?.0.is_some())
    }

    async fn mark_processed(&self, id: u64, now: i64) -> Result<bool, StateError> {
        let v = Bytes::from(now.to_string());
        self.create(B::Marks, &format!("p.{id}"), v).await
    }

    async fn refused(&self, id: u64) -> Result<Vec<u32>, StateError> {
        let (v, _) = self.get_json(B::Marks, &format!("r.{id}")).await?;
        Ok(v.unwrap_or_default())
    }

    async fn set_refused(&self, id: u64, facts: &[u32]) -> Result<(), StateError> {
        let key = format!("r.{id}");
        if facts.is_empty() {
            if self.get(B::Marks, &key).await?.0.is_some() {
                self.delete(B::Marks, &key).await?;
            }
            return Ok(());
        }
        self.put(B::Marks, &key, to_json(&facts)?).await
    }

    async fn claim(&self, mark: Mark<'_>, tok: Token, _now: i64) -> Result<bool, StateError> {
        // The value names the claimer, so a redelivery of the same event goes on.
        let (key, holder) = match mark {
            Mark::Payload { source, key } => {
                (format!("q.{}", enc(&[source, key])), tok.0.to_string())
            }
            Mark::Sale {
                source,
                order,
                line,
            } => (
                format!("s.{}", enc(&[source, order, line])),
                format!("{}:{}", tok.0, tok.1),
            ),
        };
        self.claim_mark(&key, holder).await
    }

    async fn alias(&self, source: &str, alias: &str) -> Result<Option<String>, StateError> {
        let key = format!("a.{}", enc(&[source, alias]));
        Ok(self
            .get(B::Items, &key)
            .await?
            .0
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    async fn set_alias(&self, source: &str, alias: &str, item: &str) -> Result<(), StateError> {
        let key = format!("a.{}", enc(&[source, alias]));
        self.put(B::Items, &key, Bytes::from(item.to_string()))
            .await
    }

    async fn item(&self, source: &str, item: &str) -> Result<Option<ItemState>, StateError> {
        let (rec, _) = self
            .get_json::<ItemRec>(B::Items, &item_key(source, item))
            .await?;
        Ok(rec.map(|r| r.state))
    }

    async fn remove_item(&self, source: &str, item: &str) -> Result<(), StateError> {
        let key = item_key(source, item);
        if self.get(B::Items, &key).await?.0.is_some() {
            self.delete(B::Items, &key).await?;
        }
        Ok(())
    }

    async fn update_item(
        &self,
        source: &str,
        item: &str,
        tok: Token,
        f: &mut (dyn FnMut(Option<ItemState>) -> Step<ItemState> + Send),
    ) -> Result<Once<ItemState>, StateError> {
        self.update_once::<ItemRec>(&item_key(source, item), tok, f)
            .await
    }

    async fn members(&self, sku: &str) -> Result<Vec<Member>, StateError> {
        let (m, _) = self.get_json(B::Items, &members_key(sku)).await?;
        Ok(m.unwrap_or_default())
    }

    async fn update_members(
        &self,
        sku: &str,
        f: &mut (dyn FnMut(&mut Vec<Member>) + Send),
    ) -> Result<(), StateError> {
        let key = members_key(sku);
        for attempt in 0.. {
            let (cur, rev) = self.get_json::<Vec<Member>>(B::Items, &key).await?;
            let mut members = cur.clone().unwrap_or_default();
            f(&mut members);
            if Some(&members) == cur.as_ref() || (cur.is_none() && members.is_empty()) {
                return Ok(());
            }
            if self.cas(B::Items, &key, &members, rev).await? {
                return Ok(());
            }
            conflict_pause(attempt, &key).await?;
        }
        Ok(())
    }

    async fn update_combined(
        &self,
        sku: &str,
        tok: Token,
        f: &mut (dyn FnMut(Arming) -> Step<Arming> + Send),
    ) -> Result<Once<Arming>, StateError> {
        let key = format!("c.{}", enc(&[sku]));
        self.update_once::<CombinedRec>(&key, tok, &mut |cur| f(cur.unwrap_or_default()))
            .await
    }

    async fn cancel(&self, alert_id: &str) -> Result<bool, StateError> {
        for attempt in 0.. {
            let (cur, rev) = self.get_json::<OutboxRec>(B::Outbox, alert_id).await?;
            let Some(mut rec) = cur else {
                return Ok(false);
            };
            // Claimed or planned: a worker is sending it; too late to cancel.
            if rec.entry.status != OutboxStatus::Pending
                || rec.claim.is_some()
                || !rec.entry.planned.is_empty()
            {
                return Ok(false);
            }
            rec.entry.status = OutboxStatus::Cancelled;
            rec.entry.last_error = Some("cancelled: the item left the catalog".into());
            if self.cas(B::Outbox, alert_id, &rec, rev).await? {
                return Ok(true);
            }
            conflict_pause(attempt, alert_id).await?;
        }
        unreachable!("conflict_pause ends the loop")
    }

    async fn enqueue(&self, entry: OutboxEntry) -> Result<bool, StateError> {
        let id = entry.alert.id.clone();
        let rec = OutboxRec { entry, claim: None };
        self.create(B::Outbox, &id, to_json(&rec)?).await
    }

    async fn count(&self, name: &str, n: i64) -> Result<(), StateError> {
        *self
            .deltas
            .lock()
            .expect("counter deltas")
            .entry(name.to_string())
            .or_default() += n;
        Ok(())
    }
}

/// How many independent groups of a batch are applied at once.
pub(super) const APPLY_CONCURRENCY: usize = 32;

/// Splits a batch into groups of events that touch common records (same item id, alias or
/// payload dedup key of the same source), each group in arrival order.
pub(super) fn independent_groups(events: &[Prepared]) -> Vec<Vec<usize>> {
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
                Fact::InventoryLevel { item, .. }
                | Fact::Sale { item, .. }
                | Fact::Removed { item, .. }
                | Fact::StockedAt { item, .. }
                | Fact::LocationName { item, .. } => keys.push(format!("i\0{}\0{item}", ev.source)),
                // Touches items it does not name: the batch runs in order (see apply_batch).
                Fact::ProductVariants { .. } => {}
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

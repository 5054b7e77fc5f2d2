//! The worker's own sled database (`<data_dir>/state`): catalog, inventory levels, alert arming,
//! last sales, processed event ids and the email outbox, all in one tree under key prefixes so a
//! single sled transaction covers everything one event changes.
//!
//! Invariant (exactly-once effects): [`StateStore::apply_batch`] records each event id as
//! processed in the same transaction that writes its state changes and outbox entries, then
//! flushes and fdatasyncs, and only then may the caller ack the events. A redelivered event finds
//! its id and changes nothing. Levels are ordered by the platform's event time: an older level
//! never overwrites a newer one.
//!
//! Key layout: `i/<source>\0<item>` item, `a/<source>\0<alias>` alias -> item,
//! `s/<source>\0<order>\0<line>` sale seen, `K/<sku>` items carrying a SKU, `c/<sku>`
//! cross-channel arming, `p/<event id>` processed, `q/<source>\0<payload key>`
//! payload dedup, `o/<alert id>` outbox entry to send (or failed), `d/<alert id>` sent entry,
//! `m/<name>` counter.

use crate::alert::{Alert, OutboxEntry, OutboxStatus, Rule};
use crate::facts::{Fact, Normalized};
use crate::rules::{self, Arming};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use stockhook_shared::config::Config;
use stockhook_shared::durable::SledFiles;
use stockhook_shared::envelope::EventId;

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open worker state at {path}: it is locked by another process (is stockhook-worker running? use its socket, or stop it)")]
    Locked { path: String },
    #[error("worker state storage error ({context}): {message}")]
    Storage { context: String, message: String },
    #[error("no such alert: {0}")]
    NotFound(String),
}

fn storage(ctx: &str) -> impl Fn(sled::Error) -> StateError + '_ {
    move |e| StateError::Storage {
        context: ctx.to_string(),
        message: e.to_string(),
    }
}

/// One level report, kept per location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelRec {
    pub available: Option<i64>,
    pub at: i64,
}

/// Everything known about one item of one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemState {
    pub source: String,
    pub platform: String,
    pub item: String,
    pub sku: Option<String>,
    pub title: Option<String>,
    pub levels: BTreeMap<String, LevelRec>,
    pub first_seen_at: i64,
    pub last_sale_at: Option<i64>,
    /// Net units sold (returns subtract).
    pub units_sold: i64,
    pub arming: Arming,
    /// The quiet period (its start) the no-sales alert last fired for.
    pub no_sales_fired_for: Option<i64>,
    /// The last alert raised for this item: rule and when.
    pub last_alert: Option<(Rule, i64)>,
    /// The location of the newest level report.
    pub last_location: Option<String>,
}

impl ItemState {
    pub(crate) fn new(source: &str, platform: &str, item: &str, at: i64) -> ItemState {
        ItemState {
            source: source.into(),
            platform: platform.into(),
            item: item.into(),
            sku: None,
            title: None,
            levels: BTreeMap::new(),
            first_seen_at: at,
            last_sale_at: None,
            units_sold: 0,
            arming: Arming::default(),
            no_sales_fired_for: None,
            last_alert: None,
            last_location: None,
        }
    }

    /// The item's available total. Product-level reports (`all`) and per-location reports are
    /// never added together: whichever is newer wins. Untracked (`None`) everywhere -> `None`.
    pub fn total(&self) -> Option<i64> {
        let all = self.levels.get("all");
        let per: Vec<&LevelRec> = self
            .levels
            .iter()
            .filter(|(k, _)| *k != "all")
            .map(|(_, v)| v)
            .collect();
        let per_newest = per.iter().map(|l| l.at).max();
        match (all, per_newest) {
            (Some(a), Some(p)) if a.at >= p => a.available,
            (Some(a), None) => a.available,
            (_, Some(_)) => {
                let tracked: Vec<i64> = per.iter().filter_map(|l| l.available).collect();
                // Saturating: a hostile or broken payload's huge quantity must not overflow.
                (!tracked.is_empty())
                    .then(|| tracked.iter().fold(0i64, |a, b| a.saturating_add(*b)))
            }
            (None, None) => None,
        }
    }

    /// When its current quiet period began: the last sale, else first seen.
    pub fn quiet_since(&self) -> i64 {
        self.last_sale_at.unwrap_or(self.first_seen_at)
    }

    /// The no-sales alert for the quiet period that began at `since` (its id is the same for
    /// every run and every worker that raises it).
    pub fn no_sales_alert(&self, since: i64, rules: &RuleConfig, now: i64) -> Alert {
        Alert {
            id: Alert::make_id(Rule::NoSales, &self.source, &self.item, since as u64),
            rule: Rule::NoSales,
            source: self.source.clone(),
            platform: self.platform.clone(),
            item: self.item.clone(),
            sku: self.sku.clone(),
            title: self.title.clone(),
            location: self.last_location.clone(),
            available: self.total(),
            threshold: None,
            quiet_since: Some(since),
            quiet_days: Some(rules.no_sales_days),
            at: now,
            created_at: now,
            recipients: rules.recipients(&self.source),
        }
    }

    /// True when a level for `location` at `at` is older than the one held: it is ignored.
    pub fn is_stale(&self, location: &str, at: i64) -> bool {
        self.levels.get(location).is_some_and(|prev| prev.at > at)
    }

    /// Records a (not stale) level report and evaluates the stock rules: the alert it raises, if
    /// any. Shared by every state backend, so the rules' effect on an item is written once.
    pub fn record_level(
        &mut self,
        location: &str,
        available: Option<i64>,
        at: i64,
        rules: &RuleConfig,
        now: i64,
    ) -> Option<Alert> {
        self.levels
            .insert(location.to_string(), LevelRec { available, at });
        self.last_location = Some(location.to_string());
        let threshold = rules.threshold(&self.source, self.sku.as_deref());
        let total = self.total();
        let rule = rules::evaluate_level(total, threshold, &mut self.arming)?;
        self.last_alert = Some((rule, at));
        Some(Alert {
            id: Alert::make_id(rule, &self.source, &self.item, self.arming.episode),
            rule,
            source: self.source.clone(),
            platform: self.platform.clone(),
            item: self.item.clone(),
            sku: self.sku.clone(),
            title: self.title.clone(),
            location: Some(location.to_string()),
            available: total,
            threshold: Some(threshold),
            quiet_since: None,
            quiet_days: None,
            at,
            created_at: now,
            recipients: rules.recipients(&self.source),
        })
    }
}

/// What the rules need to know per source.
#[derive(Debug, Clone)]
pub struct RuleConfig {
    pub default_threshold: i64,
    pub source_threshold: BTreeMap<String, i64>,
    pub sku_thresholds: BTreeMap<String, i64>,
    pub default_recipients: Vec<String>,
    pub source_recipients: BTreeMap<String, Vec<String>>,
    pub no_sales_days: u32,
    pub digest_window_ms: i64,
    /// Also alert on the sum of `available` across sources sharing a SKU.
    pub combine_channels: bool,
}

impl RuleConfig {
    pub fn from_config(c: &Config) -> RuleConfig {
        RuleConfig {
            default_threshold: c.alerts.low_stock_threshold,
            source_threshold: c
                .sources
                .iter()
                .filter_map(|s| s.low_stock_threshold.map(|t| (s.name.clone(), t)))
                .collect(),
            sku_thresholds: c.alerts.sku_thresholds.clone(),
            default_recipients: c.alerts.recipients.clone(),
            source_recipients: c
                .sources
                .iter()
                .filter(|s| !s.recipients.is_empty())
                .map(|s| (s.name.clone(), s.recipients.clone()))
                .collect(),
            no_sales_days: c.alerts.no_sales_days,
            digest_window_ms: c.alerts.digest_window.get().as_millis() as i64,
            combine_channels: c.alerts.combine_channels,
        }
    }

    pub fn threshold(&self, source: &str, sku: Option<&str>) -> i64 {
        sku.and_then(|s| self.sku_thresholds.get(s))
            .or_else(|| self.source_threshold.get(source))
            .copied()
            .unwrap_or(self.default_threshold)
    }

    /// The cross-channel threshold for a SKU: its own, else the global one.
    pub fn combined_threshold(&self, sku: &str) -> i64 {
        self.sku_thresholds
            .get(sku)
            .copied()
            .unwrap_or(self.default_threshold)
    }

    pub fn recipients(&self, source: &str) -> Vec<String> {
        self.source_recipients
            .get(source)
            .cloned()
            .unwrap_or_else(|| self.default_recipients.clone())
    }
}

/// One event ready to apply: its id, source, platform, and what the adapter read.
pub struct Prepared {
    pub id: EventId,
    pub source: String,
    pub platform: String,
    pub payload_key: Option<String>,
    pub normalized: Normalized,
}

/// What applying one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// State changed (or not), these alerts were created.
    Done { alerts: Vec<Alert> },
    /// Seen before (same event id, or the platform's notification id): nothing changed.
    AlreadyProcessed,
}

/// Counter names kept under `m/`.
pub mod counters {
    pub const EVENTS_PROCESSED: &str = "events.processed";
    pub const EVENTS_IGNORED: &str = "events.ignored";
    pub const EVENTS_DUPLICATE: &str = "events.duplicate";
    pub const LEVELS_STALE: &str = "levels.stale";
    pub const ALERTS_CREATED: &str = "alerts.created";
    pub const ALERTS_SENT: &str = "alerts.sent";
    /// Sent alerts forgotten by housekeeping (`stats` adds them to those still in the outbox).
    pub const ALERTS_SWEPT: &str = "alerts.swept";
    pub const ALERTS_FAILED: &str = "alerts.failed";
    pub const EMAILS_SENT: &str = "emails.sent";
    /// eBay MARKETPLACE_ACCOUNT_DELETION notices applied.
    pub const EBAY_ACCOUNT_DELETIONS: &str = "ebay.account_deletions";
    /// Per source: `source.<name>.processed`.
    pub fn source_processed(source: &str) -> String {
        format!("source.{source}.processed")
    }
}

pub struct StateStore {
    path: PathBuf,
    db: sled::Db,
    tree: sled::Tree,
    data_file: File,
    /// Blob files, `conf` and directory entries sled never syncs itself.
    files: SledFiles,
}

type Tx = ConflictableTransactionError<String>;

fn abort(e: impl std::fmt::Display) -> Tx {
    ConflictableTransactionError::Abort(e.to_string())
}

fn tx_get<T: for<'de> Deserialize<'de>>(
    tx: &TransactionalTree,
    key: &[u8],
) -> Result<Option<T>, Tx> {
    match tx.get(key)? {
        Some(v) => serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| abort(format!("corrupt record: {e}"))),
        None => Ok(None),
    }
}

fn tx_put<T: Serialize>(tx: &TransactionalTree, key: &[u8], v: &T) -> Result<(), Tx> {
    let bytes = serde_json::to_vec(v).map_err(abort)?;
    tx.insert(key, bytes)?;
    Ok(())
}

fn tx_add(tx: &TransactionalTree, name: &str, n: i64) -> Result<(), Tx> {
    let key = [b"m/", name.as_bytes()].concat();
    let cur = tx
        .get(&key)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(i64::from_be_bytes)
        .unwrap_or(0);
    tx.insert(key, &(cur + n).to_be_bytes()[..])?;
    Ok(())
}

fn key2(prefix: &str, a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + a.len() + b.len() + 1);
    k.extend_from_slice(prefix.as_bytes());
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

fn item_key(source: &str, item: &str) -> Vec<u8> {
    key2("i/", source, item)
}

/// Active outbox entries (pending or failed): what the sender scans.
fn outbox_key(id: &str) -> Vec<u8> {
    [b"o/", id.as_bytes()].concat()
}

/// Sent entries move here, so the sender's scan stays the size of what is still to do.
fn sent_key(id: &str) -> Vec<u8> {
    [b"d/", id.as_bytes()].concat()
}

fn tx_err(e: TransactionError<String>) -> StateError {
    match e {
        TransactionError::Abort(m) => StateError::Storage {
            context: "applying events".into(),
            message: m,
        },
        TransactionError::Storage(e) => StateError::Storage {
            context: "applying events".into(),
            message: e.to_string(),
        },
    }
}

impl StateStore {
    pub fn open(path: &Path) -> Result<StateStore, StateError> {
        stockhook_shared::durable::create_dir_all(path).map_err(|e| StateError::Storage {
            context: format!("creating {}", path.display()),
            message: e.to_string(),
        })?;
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(Some(200))
            // sled's default page cache is 1 GiB; the worker's working set is far smaller.
            .cache_capacity(32 * 1024 * 1024)
            .open()
            .map_err(|e| {
                let text = e.to_string();
                if text.contains("lock")
                    || text.contains("WouldBlock")
                    || text.contains("Resource temporarily unavailable")
                {
                    StateError::Locked {
                        path: path.display().to_string(),
                    }
                } else {
                    StateError::Storage {
                        context: format!("opening {}", path.display()),
                        message: text,
                    }
                }
            })?;
        let files = SledFiles::after_open(path).map_err(|e| StateError::Storage {
            context: "syncing the state database's files".into(),
            message: e.to_string(),
        })?;
        let tree = db
            .open_tree("state")
            .map_err(storage("opening state tree"))?;
        let data_file = File::open(path.join("db")).map_err(|e| StateError::Storage {
            context: format!("opening {} for fdatasync", path.join("db").display()),
            message: e.to_string(),
        })?;
        Ok(StateStore {
            path: path.to_path_buf(),
            db,
            tree,
            data_file,
            files,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flush and fdatasync: after this, what was applied survives a crash or power loss.
    pub fn sync(&self) -> Result<(), StateError> {
        self.db.flush().map_err(storage("flushing state"))?;
        self.files.sync_new().map_err(|e| StateError::Storage {
            context: "syncing state files".into(),
            message: e.to_string(),
        })?;
        self.data_file.sync_data().map_err(|e| StateError::Storage {
            context: format!("fdatasync {}", self.path.join("db").display()),
            message: e.to_string(),
        })
    }

    /// Applies a batch of events in one transaction, then syncs. `dry_run` computes the same
    /// result and writes nothing (for `failed replay --dry-run`).
    pub fn apply_batch(
        &self,
        events: &[Prepared],
        rules: &RuleConfig,
        now: i64,
        dry_run: bool,
    ) -> Result<Vec<Applied>, StateError> {
        let result = self.tree.transaction(|tx| {
            let mut out = Vec::with_capacity(events.len());
            for ev in events {
                out.push(apply_one(tx, ev, rules, now)?);
            }
            if dry_run {
                // Abort to discard every write, carrying the result out.
                return Err(ConflictableTransactionError::Abort(
                    serde_json::to_string(&DryRun(summarize(&out))).unwrap_or_default(),
                ));
            }
            Ok(out)
        });
        match result {
            Ok(out) => {
                self.sync()?;
                Ok(out)
            }
            Err(TransactionError::Abort(m)) if dry_run => {
                let DryRun(alerts) = serde_json::from_str(&m).map_err(|e| StateError::Storage {
                    context: "dry run".into(),
                    message: e.to_string(),
                })?;
                Ok(alerts
                    .into_iter()
                    .map(|a| match a {
                        Some(alerts) => Applied::Done { alerts },
                        None => Applied::AlreadyProcessed,
                    })
                    .collect())
            }
            Err(e) => Err(tx_err(e)),
        }
    }

    /// Evaluates the no-sales rule for every item; new alerts go to the outbox.
    pub fn run_no_sales(&self, rules: &RuleConfig, now: i64) -> Result<Vec<Alert>, StateError> {
        let mut due = Vec::new();
        for item in self.tree.scan_prefix(b"i/") {
            let (k, v) = item.map_err(storage("scanning items"))?;
            let Ok(st) = serde_json::from_slice::<ItemState>(&v) else {
                continue;
            };
            if rules::no_sales_due(
                st.total(),
                st.quiet_since(),
                now,
                rules.no_sales_days,
                st.no_sales_fired_for,
            ) {
                due.push(k);
            }
        }
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let alerts = self
            .tree
            .transaction(|tx| {
                let mut alerts = Vec::new();
                for k in &due {
                    let Some(mut st): Option<ItemState> = tx_get(tx, k)? else {
                        continue;
                    };
                    let since = st.quiet_since();
                    if !rules::no_sales_due(
                        st.total(),
                        since,
                        now,
                        rules.no_sales_days,
                        st.no_sales_fired_for,
                    ) {
                        continue;
                    }
                    st.no_sales_fired_for = Some(since);
                    let alert = st.no_sales_alert(since, rules, now);
                    st.last_alert = Some((Rule::NoSales, now));
                    tx_put(tx, k, &st)?;
                    if enqueue(tx, &alert, rules)? {
                        alerts.push(alert);
                    }
                }
                Ok(alerts)
            })
            .map_err(tx_err)?;
        self.sync()?;
        Ok(alerts)
    }

    /// Pending outbox entries due at `now`, oldest first.
    pub fn due_alerts(&self, now: i64) -> Result<Vec<OutboxEntry>, StateError> {
        self.scan_outbox(&[b"o/"], |e| {
            e.status == OutboxStatus::Pending && e.next_attempt_at <= now
        })
    }

    /// The earliest `next_attempt_at` of a pending entry.
    pub fn next_due(&self) -> Result<Option<i64>, StateError> {
        Ok(self
            .scan_outbox(&[b"o/"], |e| e.status == OutboxStatus::Pending)?
            .iter()
            .map(|e| e.next_attempt_at)
            .min())
    }

    /// Every outbox entry matching `keep` (sent ones included), ordered by creation.
    pub fn outbox(
        &self,
        keep: impl Fn(&OutboxEntry) -> bool,
    ) -> Result<Vec<OutboxEntry>, StateError> {
        self.scan_outbox(&[b"o/", b"d/"], keep)
    }

    fn scan_outbox(
        &self,
        prefixes: &[&[u8]],
        keep: impl Fn(&OutboxEntry) -> bool,
    ) -> Result<Vec<OutboxEntry>, StateError> {
        let mut out = Vec::new();
        for prefix in prefixes {
            for item in self.tree.scan_prefix(prefix) {
                let (_, v) = item.map_err(storage("scanning outbox"))?;
                if let Ok(e) = serde_json::from_slice::<OutboxEntry>(&v) {
                    if keep(&e) {
                        out.push(e);
                    }
                }
            }
        }
        out.sort_by(|a, b| {
            (a.alert.created_at, &a.alert.id).cmp(&(b.alert.created_at, &b.alert.id))
        });
        Ok(out)
    }

    /// Forgets sent alerts older than `cutoff` (their ids can no longer recur: the events that
    /// raised them are past the queue's retention too).
    pub fn sweep_sent(&self, cutoff: i64) -> Result<usize, StateError> {
        let mut stale = Vec::new();
        for item in self.tree.scan_prefix(b"d/") {
            let (k, v) = item.map_err(storage("scanning sent alerts"))?;
            if serde_json::from_slice::<OutboxEntry>(&v)
                .is_ok_and(|e| e.sent_at.unwrap_or(0) < cutoff)
            {
                stale.push(k);
            }
        }
        for k in &stale {
            self.tree
                .remove(k)
                .map_err(storage("sweeping sent alerts"))?;
        }
        Ok(stale.len())
    }

    pub fn alert(&self, id: &str) -> Result<OutboxEntry, StateError> {
        let v = match self
            .tree
            .get(outbox_key(id))
            .map_err(storage("reading alert"))?
        {
            Some(v) => Some(v),
            None => self
                .tree
                .get(sent_key(id))
                .map_err(storage("reading alert"))?,
        };
        let v = v.ok_or_else(|| StateError::NotFound(id.to_string()))?;
        serde_json::from_slice(&v).map_err(|e| StateError::Storage {
            context: format!("decoding alert {id}"),
            message: e.to_string(),
        })
    }

    /// Updates outbox entries (and counters) in one transaction, then syncs.
    pub fn update_alerts(
        &self,
        ids: &[String],
        f: impl Fn(&mut OutboxEntry) + Clone,
        counter: Option<(&str, i64)>,
    ) -> Result<(), StateError> {
        self.tree
            .transaction(|tx| {
                for id in ids {
                    let (active, sent) = (outbox_key(id), sent_key(id));
                    let found = match tx_get::<OutboxEntry>(tx, &active)? {
                        Some(e) => Some(e),
                        None => tx_get::<OutboxEntry>(tx, &sent)?,
                    };
                    if let Some(mut e) = found {
                        (f.clone())(&mut e);
                        // Sent entries live under d/, the rest under o/.
                        if e.status == OutboxStatus::Sent {
                            tx.remove(active)?;
                            tx_put(tx, &sent, &e)?;
                        } else {
                            tx.remove(sent)?;
                            tx_put(tx, &active, &e)?;
                        }
                    }
                }
                if let Some((name, n)) = counter {
                    tx_add(tx, name, n)?;
                }
                Ok(())
            })
            .map_err(tx_err)?;
        self.sync()
    }

    /// Removes outbox entries.
    pub fn purge_alerts(&self, ids: &[String]) -> Result<(), StateError> {
        for id in ids {
            for k in [outbox_key(id), sent_key(id)] {
                self.tree.remove(k).map_err(storage("purging alert"))?;
            }
        }
        self.sync()
    }

    pub fn counter(&self, name: &str) -> Result<i64, StateError> {
        Ok(self
            .tree
            .get([b"m/", name.as_bytes()].concat())
            .map_err(storage("reading counter"))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(i64::from_be_bytes)
            .unwrap_or(0))
    }

    /// Every counter, by name.
    pub fn counters(&self) -> Result<BTreeMap<String, i64>, StateError> {
        let mut out = BTreeMap::new();
        for item in self.tree.scan_prefix(b"m/") {
            let (k, v) = item.map_err(storage("reading counters"))?;
            if let Ok(a) = <[u8; 8]>::try_from(v.as_ref()) {
                out.insert(
                    String::from_utf8_lossy(&k[2..]).into_owned(),
                    i64::from_be_bytes(a),
                );
            }
        }
        Ok(out)
    }

    /// Every item, ordered by source and item id.
    pub fn items(&self) -> Result<Vec<ItemState>, StateError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(b"i/") {
            let (_, v) = item.map_err(storage("scanning items"))?;
            if let Ok(st) = serde_json::from_slice::<ItemState>(&v) {
                out.push(st);
            }
        }
        Ok(out)
    }

    /// Deletes every item (and its aliases and sales marks) of `source` that `matches`; for an
    /// eBay account deletion. Returns how many items.
    pub fn purge_items(
        &self,
        source: &str,
        matches: impl Fn(&ItemState) -> bool,
    ) -> Result<usize, StateError> {
        let mut n = 0;
        for item in self.items()? {
            if item.source == source && matches(&item) {
                self.tree
                    .remove(item_key(source, &item.item))
                    .map_err(storage("purging item"))?;
                n += 1;
            }
        }
        self.sync()?;
        Ok(n)
    }

    /// Forgets processed-event marks older than `cutoff` (they can no longer be redelivered).
    pub fn sweep_processed(&self, cutoff: i64) -> Result<usize, StateError> {
        let mut stale = Vec::new();
        for prefix in [&b"p/"[..], &b"q/"[..]] {
            for item in self.tree.scan_prefix(prefix) {
                let (k, v) = item.map_err(storage("scanning processed ids"))?;
                let at = <[u8; 8]>::try_from(v.as_ref())
                    .map(i64::from_be_bytes)
                    .unwrap_or(0);
                if at < cutoff {
                    stale.push(k);
                }
            }
        }
        for k in &stale {
            self.tree
                .remove(k)
                .map_err(storage("sweeping processed ids"))?;
        }
        Ok(stale.len())
    }
}

#[derive(Serialize, Deserialize)]
struct DryRun(Vec<Option<Vec<Alert>>>);

fn summarize(out: &[Applied]) -> Vec<Option<Vec<Alert>>> {
    out.iter()
        .map(|a| match a {
            Applied::Done { alerts } => Some(alerts.clone()),
            Applied::AlreadyProcessed => None,
        })
        .collect()
}

/// Puts an alert in the outbox unless an entry with its id exists. True when it was new.
fn enqueue(tx: &TransactionalTree, alert: &Alert, rules: &RuleConfig) -> Result<bool, Tx> {
    let k = outbox_key(&alert.id);
    if tx.get(&k)?.is_some() || tx.get(sent_key(&alert.id))?.is_some() {
        return Ok(false);
    }
    let entry = OutboxEntry::new(alert.clone(), alert.created_at + rules.digest_window_ms);
    tx_put(tx, &k, &entry)?;
    tx_add(tx, counters::ALERTS_CREATED, 1)?;
    Ok(true)
}

fn apply_one(
    tx: &TransactionalTree,
    ev: &Prepared,
    rules: &RuleConfig,
    now: i64,
) -> Result<Applied, Tx> {
    let pkey = [b"p/".as_slice(), &ev.id.to_be_bytes()].concat();
    if tx.get(&pkey)?.is_some() {
        return Ok(Applied::AlreadyProcessed);
    }
    if let Some(k) = &ev.payload_key {
        let qkey = key2("q/", &ev.source, k);
        if tx.get(&qkey)?.is_some() {
            tx.insert(pkey, &now.to_be_bytes()[..])?;
            tx_add(tx, counters::EVENTS_DUPLICATE, 1)?;
            return Ok(Applied::AlreadyProcessed);
        }
        tx.insert(qkey, &now.to_be_bytes()[..])?;
    }
    let mut alerts = Vec::new();
    for fact in &ev.normalized.facts {
        apply_fact(tx, ev, fact, rules, now, &mut alerts)?;
    }
    for a in &alerts {
        enqueue(tx, a, rules)?;
    }
    tx.insert(pkey, &now.to_be_bytes()[..])?;
    tx_add(
        tx,
        if ev.normalized.ignored {
            counters::EVENTS_IGNORED
        } else {
            counters::EVENTS_PROCESSED
        },
        1,
    )?;
    tx_add(tx, &counters::source_processed(&ev.source), 1)?;
    Ok(Applied::Done { alerts })
}

/// The item a platform id refers to: itself, or the item an alias names.
fn resolve(tx: &TransactionalTree, source: &str, item: &str) -> Result<String, Tx> {
    Ok(match tx.get(key2("a/", source, item))? {
        Some(v) => String::from_utf8_lossy(&v).into_owned(),
        None => item.to_string(),
    })
}

fn load_item(tx: &TransactionalTree, ev: &Prepared, item: &str, at: i64) -> Result<ItemState, Tx> {
    Ok(
        match tx_get::<ItemState>(tx, &item_key(&ev.source, item))? {
            Some(mut st) => {
                st.first_seen_at = st.first_seen_at.min(at);
                st
            }
            None => ItemState::new(&ev.source, &ev.platform, item, at),
        },
    )
}

fn apply_fact(
    tx: &TransactionalTree,
    ev: &Prepared,
    fact: &Fact,
    rules: &RuleConfig,
    now: i64,
    alerts: &mut Vec<Alert>,
) -> Result<(), Tx> {
    match fact {
        Fact::CatalogEntry {
            item,
            aliases,
            sku,
            title,
            at,
        } => {
            let mut st = load_item(tx, ev, item, *at)?;
            if let Some(new) = sku {
                let member = (ev.source.clone(), item.clone());
                if let Some(old) = st.sku.as_ref().filter(|o| *o != new) {
                    update_members(tx, old, |m| m.retain(|x| *x != member))?;
                }
                update_members(tx, new, |m| {
                    if !m.contains(&member) {
                        m.push(member.clone())
                    }
                })?;
                st.sku = Some(new.clone());
            }
            if title.is_some() {
                st.title = title.clone();
            }
            for alias in aliases {
                if alias == item {
                    continue;
                }
                tx.insert(key2("a/", &ev.source, alias), item.as_bytes())?;
                // Sales recorded under the alias before the catalog knew it belong here.
                let ak = item_key(&ev.source, alias);
                if let Some(orphan) = tx_get::<ItemState>(tx, &ak)? {
                    st.last_sale_at = st.last_sale_at.max(orphan.last_sale_at);
                    st.units_sold += orphan.units_sold;
                    st.first_seen_at = st.first_seen_at.min(orphan.first_seen_at);
                    tx.remove(ak)?;
                }
            }
            tx_put(tx, &item_key(&ev.source, item), &st)?;
        }
        Fact::InventoryLevel {
            item,
            location,
            available,
            at,
        } => {
            let item = resolve(tx, &ev.source, item)?;
            let mut st = load_item(tx, ev, &item, *at)?;
            if st.is_stale(location, *at) {
                tx_add(tx, counters::LEVELS_STALE, 1)?;
                return Ok(());
            }
            alerts.extend(st.record_level(location, *available, *at, rules, now));
            tx_put(tx, &item_key(&ev.source, &item), &st)?;
            if rules.combine_channels {
                if let Some(sku) = &st.sku {
                    if let Some(a) = combined_level(tx, sku, location, *at, rules, now)? {
                        alerts.push(a);
                    }
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
            let seen = [
                key2("s/", &ev.source, order).as_slice(),
                b"\0",
                line.as_bytes(),
            ]
            .concat();
            if tx.get(&seen)?.is_some() {
                return Ok(());
            }
            tx.insert(seen, &at.to_be_bytes()[..])?;
            let item = resolve(tx, &ev.source, item)?;
            let mut st = load_item(tx, ev, &item, *at)?;
            st.units_sold += quantity;
            if *quantity > 0 {
                st.last_sale_at = Some(st.last_sale_at.map_or(*at, |t| t.max(*at)));
            }
            tx_put(tx, &item_key(&ev.source, &item), &st)?;
        }
    }
    Ok(())
}

/// `K/<sku>`: every (source, item) that carries this SKU, for the cross-channel rule (sled
/// transactions cannot scan, so the members are one record).
fn members_key(sku: &str) -> Vec<u8> {
    [b"K/", sku.as_bytes()].concat()
}

fn update_members(
    tx: &TransactionalTree,
    sku: &str,
    f: impl FnOnce(&mut Vec<(String, String)>),
) -> Result<(), Tx> {
    let k = members_key(sku);
    let mut members: Vec<(String, String)> = tx_get(tx, &k)?.unwrap_or_default();
    f(&mut members);
    if members.is_empty() {
        tx.remove(k)?;
    } else {
        tx_put(tx, &k, &members)?;
    }
    Ok(())
}

/// The cross-channel rule: the sum over every source's item with this SKU, with its own arming.
/// Fires only when at least two channels carry the SKU (one alone is the per-channel rule).
fn combined_level(
    tx: &TransactionalTree,
    sku: &str,
    location: &str,
    at: i64,
    rules: &RuleConfig,
    now: i64,
) -> Result<Option<Alert>, Tx> {
    let members: Vec<(String, String)> = tx_get(tx, &members_key(sku))?.unwrap_or_default();
    let mut total: Option<i64> = None;
    let mut sources = Vec::new();
    for (source, item) in &members {
        if let Some(st) = tx_get::<ItemState>(tx, &item_key(source, item))? {
            if let Some(t) = st.total() {
                total = Some(total.unwrap_or(0).saturating_add(t));
            }
            if !sources.contains(source) {
                sources.push(source.clone());
            }
        }
    }
    if sources.len() < 2 {
        // One channel alone is covered by the per-channel rule.
        return Ok(None);
    }
    let arm_key = [b"c/", sku.as_bytes()].concat();
    let mut arming: Arming = tx_get(tx, &arm_key)?.unwrap_or_default();
    let threshold = rules.combined_threshold(sku);
    let fired = rules::evaluate_level(total, threshold, &mut arming);
    tx_put(tx, &arm_key, &arming)?;
    Ok(fired.map(|_| {
        combined_alert(
            sku,
            &sources,
            location,
            total,
            threshold,
            arming.episode,
            at,
            now,
            rules,
        )
    }))
}

/// The cross-channel alert for `sku` (shared by every state backend).
#[allow(clippy::too_many_arguments)]
pub(crate) fn combined_alert(
    sku: &str,
    sources: &[String],
    location: &str,
    total: Option<i64>,
    threshold: i64,
    episode: u64,
    at: i64,
    now: i64,
    rules: &RuleConfig,
) -> Alert {
    Alert {
        id: Alert::make_id(Rule::CombinedLowStock, "*", sku, episode),
        rule: Rule::CombinedLowStock,
        source: sources.join("+"),
        platform: "all".into(),
        item: sku.to_string(),
        sku: Some(sku.to_string()),
        title: None,
        location: Some(location.to_string()),
        available: total,
        threshold: Some(threshold),
        quiet_since: None,
        quiet_days: None,
        at,
        created_at: now,
        recipients: rules.default_recipients.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RuleConfig {
        RuleConfig {
            default_threshold: 5,
            source_threshold: BTreeMap::new(),
            sku_thresholds: [("SKU-BIG".to_string(), 50)].into_iter().collect(),
            default_recipients: vec!["seller@example.com".into()],
            source_recipients: BTreeMap::new(),
            no_sales_days: 60,
            digest_window_ms: 0,
            combine_channels: false,
        }
    }

    fn ev(id: u64, facts: Vec<Fact>) -> Prepared {
        Prepared {
            id: EventId(id),
            source: "shop".into(),
            platform: "shopify".into(),
            payload_key: None,
            normalized: Normalized {
                topic: "t".into(),
                facts,
                ignored: false,
            },
        }
    }

    fn level(item: &str, loc: &str, n: i64, at: i64) -> Fact {
        Fact::InventoryLevel {
            item: item.into(),
            location: loc.into(),
            available: Some(n),
            at,
        }
    }

    fn alerts(a: &[Applied]) -> Vec<(Rule, String, Option<i64>)> {
        a.iter()
            .flat_map(|x| match x {
                Applied::Done { alerts } => alerts
                    .iter()
                    .map(|a| (a.rule, a.item.clone(), a.available))
                    .collect(),
                Applied::AlreadyProcessed => vec![],
            })
            .collect()
    }

    #[test]
    fn low_stock_once_and_redelivery_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(&dir.path().join("state")).unwrap();
        let catalog = Fact::CatalogEntry {
            item: "100".into(),
            aliases: vec!["variant:7".into()],
            sku: Some("SKU-1".into()),
            title: Some("Blue mug".into()),
            at: 1,
        };
        let r = s
            .apply_batch(
                &[ev(1, vec![catalog, level("100", "loc1", 3, 2)])],
                &rules(),
                10,
                false,
            )
            .unwrap();
        assert_eq!(alerts(&r), vec![(Rule::LowStock, "100".into(), Some(3))]);
        let due = s.due_alerts(10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].alert.title.as_deref(), Some("Blue mug"));
        assert_eq!(due[0].alert.sku.as_deref(), Some("SKU-1"));
        // The same event again: nothing.
        let r = s
            .apply_batch(
                &[ev(1, vec![level("100", "loc1", 1, 3)])],
                &rules(),
                11,
                false,
            )
            .unwrap();
        assert_eq!(r, vec![Applied::AlreadyProcessed]);
        // A new event still below: armed off, nothing.
        let r = s
            .apply_batch(
                &[ev(2, vec![level("100", "loc1", 2, 4)])],
                &rules(),
                12,
                false,
            )
            .unwrap();
        assert!(alerts(&r).is_empty());
        assert_eq!(s.due_alerts(100).unwrap().len(), 1);
        assert_eq!(s.counter(counters::EVENTS_PROCESSED).unwrap(), 2);
    }

    #[test]
    fn recovery_rearms_and_late_levels_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(&dir.path().join("state")).unwrap();
        let r = rules();
        let mut got = Vec::new();
        for (i, (n, at)) in [(3, 10), (9, 20), (1, 15), (2, 30)].iter().enumerate() {
            got.extend(alerts(
                &s.apply_batch(
                    &[ev(i as u64, vec![level("x", "l", *n, *at)])],
                    &r,
                    0,
                    false,
                )
                .unwrap(),
            ));
        }
        // 3 fires; 9 re-arms; 1 at t=15 is older than 9 at t=20: ignored; 2 fires again.
        assert_eq!(
            got,
            vec![
                (Rule::LowStock, "x".into(), Some(3)),
                (Rule::LowStock, "x".into(), Some(2))
            ]
        );
        assert_eq!(s.counter(counters::LEVELS_STALE).unwrap(), 1);
        let ids: Vec<String> = s
            .due_alerts(0)
            .unwrap()
            .into_iter()
            .map(|e| e.alert.id)
            .collect();
        assert_eq!(ids.len(), 2);
        assert_ne!(ids[0], ids[1], "each crossing is its own alert");
    }

    #[test]
    fn per_location_levels_sum_and_product_totals_do_not_double_count() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(&dir.path().join("state")).unwrap();
        let r = rules();
        s.apply_batch(&[ev(1, vec![level("x", "all", 10, 1)])], &r, 0, false)
            .unwrap();
        // Newer per-location reports replace the product total; they add up.
        let a = s
            .apply_batch(&[ev(2, vec![level("x", "b", 6, 2)])], &r, 0, false)
            .unwrap();
        assert!(alerts(&a).is_empty(), "6 at b alone is not low");
        let a = s
            .apply_batch(&[ev(3, vec![level("x", "a", -2, 2)])], &r, 0, false)
            .unwrap();
        assert_eq!(alerts(&a), vec![(Rule::LowStock, "x".into(), Some(4))]);
        let items = s.items().unwrap();
        assert_eq!(items[0].total(), Some(4));
        // A newer product-level total wins over the older per-location reports.
        s.apply_batch(&[ev(4, vec![level("x", "all", 30, 3)])], &r, 0, false)
            .unwrap();
        assert_eq!(s.items().unwrap()[0].total(), Some(30));
    }

    #[test]
    fn sku_threshold_untracked_and_sales_via_alias_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(&dir.path().join("state")).unwrap();
        let r = rules();
        let sale = Fact::Sale {
            item: "variant:7".into(),
            quantity: 2,
            order: "o1".into(),
            line: "l1".into(),
            at: 50,
        };
        // Sale before the catalog knows the variant.
        s.apply_batch(&[ev(1, vec![sale.clone()])], &r, 0, false)
            .unwrap();
        let catalog = Fact::CatalogEntry {
            item: "100".into(),
            aliases: vec!["variant:7".into()],
            sku: Some("SKU-BIG".into()),
            title: None,
            at: 40,
        };
        let a = s
            .apply_batch(
                &[ev(2, vec![catalog, level("100", "all", 20, 60)])],
                &r,
                0,
                false,
            )
            .unwrap();
        assert_eq!(
            alerts(&a),
            vec![(Rule::LowStock, "100".into(), Some(20))],
            "SKU-BIG threshold is 50"
        );
        // The same sale in a later event (an order status change) counts once.
        s.apply_batch(&[ev(3, vec![sale])], &r, 0, false).unwrap();
        let items = s.items().unwrap();
        assert_eq!(items.len(), 1, "the orphan alias item was merged");
        assert_eq!(items[0].units_sold, 2);
        assert_eq!(items[0].last_sale_at, Some(50));
        let untracked = Fact::InventoryLevel {
            item: "200".into(),
            location: "l".into(),
            available: None,
            at: 1,
        };
        assert!(alerts(
            &s.apply_batch(&[ev(4, vec![untracked])], &r, 0, false)
                .unwrap()
        )
        .is_empty());
    }

    #[test]
    fn no_sales_fires_once_per_quiet_period() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(&dir.path().join("state")).unwrap();
        let r = rules();
        let day = 86_400_000;
        s.apply_batch(&[ev(1, vec![level("x", "l", 10, 0)])], &r, 0, false)
            .unwrap();
        assert!(s.run_no_sales(&r, 59 * day).unwrap().is_empty());
        let fired = s.run_no_sales(&r, 61 * day).unwrap();
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].rule, Rule::NoSales);
        assert!(s.run_no_sales(&r, 70 * day).unwrap().is_empty());
    }

    #[test]
    fn dry_run_writes_nothing_and_payload_keys_dedup() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(&dir.path().join("state")).unwrap();
        let r = rules();
        let a = s
            .apply_batch(&[ev(1, vec![level("x", "l", 1, 1)])], &r, 0, true)
            .unwrap();
        assert_eq!(alerts(&a), vec![(Rule::LowStock, "x".into(), Some(1))]);
        assert!(s.items().unwrap().is_empty());
        assert!(s.due_alerts(10).unwrap().is_empty());
        let mut e1 = ev(2, vec![level("x", "l", 1, 1)]);
        e1.payload_key = Some("notif-1".into());
        let mut e2 = ev(3, vec![level("x", "l", 1, 1)]);
        e2.payload_key = Some("notif-1".into());
        let out = s.apply_batch(&[e1, e2], &r, 0, false).unwrap();
        assert!(matches!(out[1], Applied::AlreadyProcessed));
        assert_eq!(s.counter(counters::EVENTS_DUPLICATE).unwrap(), 1);
    }

    #[test]
    fn combined_channels_alert_on_the_sum() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(&dir.path().join("state")).unwrap();
        let r = RuleConfig {
            combine_channels: true,
            ..rules()
        };
        let on = |source: &str, id: u64, item: &str, n: i64, at: i64| Prepared {
            source: source.into(),
            ..ev(
                id,
                vec![
                    Fact::CatalogEntry {
                        item: item.into(),
                        aliases: vec![],
                        sku: Some("MUG".into()),
                        title: None,
                        at,
                    },
                    level(item, "l", n, at),
                ],
            )
        };
        // Amazon low on its own (per-channel alert), Shopify full: the sum is fine.
        let a = s
            .apply_batch(&[on("amazon", 1, "MUG", 2, 1)], &r, 0, false)
            .unwrap();
        assert_eq!(alerts(&a), vec![(Rule::LowStock, "MUG".into(), Some(2))]);
        let a = s
            .apply_batch(&[on("shopify", 2, "991", 40, 2)], &r, 0, false)
            .unwrap();
        assert!(alerts(&a).is_empty(), "2 + 40 is not low");
        // Shopify drops: the per-channel rule and the combined one both speak.
        let a = s
            .apply_batch(&[on("shopify", 3, "991", 1, 3)], &r, 0, false)
            .unwrap();
        assert_eq!(
            alerts(&a),
            vec![
                (Rule::LowStock, "991".into(), Some(1)),
                (Rule::CombinedLowStock, "MUG".into(), Some(3))
            ]
        );
        let a = s
            .apply_batch(&[on("shopify", 4, "991", 0, 4)], &r, 0, false)
            .unwrap();
        assert_eq!(
            alerts(&a),
            vec![(Rule::OutOfStock, "991".into(), Some(0))],
            "the combined rule already fired"
        );
    }

    #[test]
    fn sent_alerts_leave_the_active_outbox_and_never_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(&dir.path().join("state")).unwrap();
        let r = rules();
        s.apply_batch(&[ev(1, vec![level("x", "l", 1, 1)])], &r, 100, false)
            .unwrap();
        let id = s.due_alerts(100).unwrap()[0].alert.id.clone();
        s.update_alerts(
            std::slice::from_ref(&id),
            |e| {
                e.status = OutboxStatus::Sent;
                e.sent_at = Some(200);
            },
            Some((counters::ALERTS_SENT, 1)),
        )
        .unwrap();
        assert!(s.due_alerts(1_000).unwrap().is_empty());
        assert_eq!(s.next_due().unwrap(), None);
        assert_eq!(s.alert(&id).unwrap().status, OutboxStatus::Sent);
        assert_eq!(
            s.outbox(|_| true).unwrap().len(),
            1,
            "the full view still lists it"
        );
        // The same alert id cannot be enqueued again once sent.
        let alert = s.alert(&id).unwrap().alert;
        let again: Result<bool, TransactionError<String>> =
            s.tree.transaction(|tx| enqueue(tx, &alert, &r));
        assert!(!again.unwrap(), "already sent: not enqueued");
        assert!(s.due_alerts(1_000).unwrap().is_empty());
        assert_eq!(s.sweep_sent(150).unwrap(), 0);
        assert_eq!(s.sweep_sent(201).unwrap(), 1);
        assert!(matches!(s.alert(&id), Err(StateError::NotFound(_))));
    }
}

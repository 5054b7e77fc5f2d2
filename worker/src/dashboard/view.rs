//! What the dashboard shows, computed from a snapshot of the state: one row per item with its
//! status, the inventory filters and sort, and what a user may see (their sources only).
//!
//! Pure functions of the snapshot, so the pages, the JSON API, the CSV download and the
//! benchmark all read the same thing, and none of them touches the state store.
//!
//! Everything that does not depend on the request is worked out once per snapshot, in the
//! background: each item's status, cover and search text, the row order for every sort key,
//! and the overview's figures per source. A request then only filters the precomputed order
//! and renders its own rows.

use crate::alert::OutboxEntry;
use crate::cover::CoverView;
use crate::state::{ItemState, RuleConfig};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Everything a page reads, taken at once; shared by every request until the next refresh.
pub struct Snapshot {
    pub taken_at: i64,
    /// Ordered by (source, item). Shared with the dashboard's copy of the state's items (and
    /// the next snapshot), not cloned per snapshot.
    pub items: Vec<Arc<ItemState>>,
    /// The outbox entries still open (pending, failed): the overview's counts. Sent ones are
    /// never in a snapshot (they grow with every alert); the alerts pages read them by key
    /// range from the state ([`crate::state::StateBackend::recent_alerts`]).
    pub open: Vec<OutboxEntry>,
    pub counters: BTreeMap<String, i64>,
    pub rules: Arc<RuleConfig>,
    /// Per item (same index as `items`): what every inventory page filters and sorts on,
    /// computed once per snapshot rather than per request (the cover rule's velocity and the
    /// lowercased text are most of a 50,000-item page's cost).
    derived: Vec<Derived>,
    /// Per sort key (index [`Sort::ix`]): the items in ascending order.
    orders: [Order; 4],
    /// The overview's figures of every source that has items, alerts or counters.
    figures: BTreeMap<String, SourceFigures>,
    /// The selections already made on this snapshot ([`select`]).
    selections: Mutex<Selections>,
}

/// Most bytes of row indices one snapshot keeps selected ([`Selections`]): 20 selections of
/// every row at 50,000 items.
pub const SELECTIONS_MAX_BYTES: usize = 4 << 20;

/// The rows each (scope, filter) selected on one snapshot, kept until the next one, so that a
/// page of the same view (the next page of a table, the CSV of what is on screen, a reload)
/// does not walk every row again.
///
/// Why: a walk over 50,000 rows in sort order touches each row's item and derived record in
/// that order, a few megabytes read at random, and pages loaded back to back walked again and
/// again. That work runs in the idle class, but what it reads evicts event processing's data
/// from the caches of the core they share (docs/PERFORMANCE.md, section 23).
#[derive(Default)]
struct Selections {
    by: std::collections::HashMap<SelectionKey, Arc<[u32]>>,
    bytes: usize,
}

/// What a selection depends on: the scope and the filter but its page.
#[derive(PartialEq, Eq, Hash)]
struct SelectionKey {
    /// `None`: every source.
    scope: Option<Vec<String>>,
    q: String,
    source: Option<String>,
    status: Option<String>,
    sort: Sort,
    desc: bool,
}

impl SelectionKey {
    fn new(scope: &Scope, f: &Filter) -> SelectionKey {
        SelectionKey {
            scope: match scope {
                Scope::All => None,
                Scope::Only(v) => Some(v.clone()),
            },
            q: f.q.clone(),
            source: f.source.clone(),
            status: f.status.clone(),
            sort: f.sort,
            desc: f.desc,
        }
    }
}

/// Item indices sorted ascending by one key: those with the key first, then those without.
struct Order {
    ix: Vec<u32>,
    /// How many of `ix`, from the start, have the key (the rest stay last in either direction).
    known: usize,
}

impl Order {
    /// Sorts by `key` (stable: ties keep the snapshot's source/item order).
    fn by<K: PartialOrd>(n: usize, key: impl Fn(usize) -> Option<K>) -> Order {
        let mut with: Vec<(K, u32)> = Vec::with_capacity(n);
        let mut without = Vec::new();
        for i in 0..n {
            match key(i) {
                Some(k) => with.push((k, i as u32)),
                None => without.push(i as u32),
            }
        }
        with.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        let known = with.len();
        let mut ix: Vec<u32> = with.into_iter().map(|(_, i)| i).collect();
        ix.extend(without);
        Order { ix, known }
    }

    /// The indices in the order asked for; unknowns last either way.
    fn iter(&self, desc: bool) -> Box<dyn Iterator<Item = u32> + '_> {
        let (known, rest) = self.ix.split_at(self.known);
        if desc {
            Box::new(known.iter().rev().chain(rest).copied())
        } else {
            Box::new(self.ix.iter().copied())
        }
    }
}

/// What the inventory table needs of one item beyond the item itself.
struct Derived {
    status: Status,
    cover: Option<CoverView>,
    /// Id, SKU and title, lowercased, for the search.
    hay: String,
    /// [`name`], lowercased, for the sort by name.
    name_key: String,
}

impl Snapshot {
    /// A snapshot of these records at `taken_at`, with each item's status, cover and search
    /// text worked out once.
    pub fn new(
        taken_at: i64,
        items: Vec<Arc<ItemState>>,
        open: Vec<OutboxEntry>,
        counters: BTreeMap<String, i64>,
        rules: Arc<RuleConfig>,
    ) -> Snapshot {
        let derived = items
            .iter()
            .map(|st| Derived {
                status: status(st, &rules, taken_at),
                cover: cover(st, &rules, taken_at),
                hay: [
                    st.item.as_str(),
                    st.sku.as_deref().unwrap_or(""),
                    st.title.as_deref().unwrap_or(""),
                ]
                .join("\n")
                .to_lowercase(),
                name_key: name(st).to_lowercase(),
            })
            .collect::<Vec<Derived>>();
        let n = items.len();
        let d = &derived;
        let orders = [
            Order::by(n, |i| items[i].total()),
            Order::by(n, |i| d[i].cover.as_ref().map(|c| c.days_of_cover)),
            Order::by(n, |i| items[i].last_sale_at),
            Order::by(n, |i| Some(d[i].name_key.as_str())),
        ];
        let figures = all_figures(taken_at, &items, &derived, &open, &counters);
        Snapshot {
            taken_at,
            items,
            open,
            counters,
            rules,
            derived,
            orders,
            figures,
            selections: Mutex::default(),
        }
    }

    /// The selections made so far (a map of finished ones: one left by a panic elsewhere is
    /// still valid).
    fn selections(&self) -> std::sync::MutexGuard<'_, Selections> {
        self.selections.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Row `i` of the snapshot.
    pub fn row(&self, i: u32) -> Row<'_> {
        let i = i as usize;
        let st = &self.items[i];
        Row {
            item: st,
            available: st.total(),
            status: self.derived[i].status,
            cover: self.derived[i].cover.clone(),
        }
    }
}

/// An item's status, as the inventory filter names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Out,
    Low,
    NoSales,
    Ok,
    /// Not tracked by the platform, or out of the catalog.
    Untracked,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Out => "out",
            Status::Low => "low",
            Status::NoSales => "no_sales",
            Status::Ok => "ok",
            Status::Untracked => "untracked",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Status::Out => "Out of stock",
            Status::Low => "Low",
            Status::NoSales => "No sales",
            Status::Ok => "OK",
            Status::Untracked => "Not tracked",
        }
    }
}

/// Which sources a user sees: all, or these.
#[derive(Debug, Clone)]
pub enum Scope {
    All,
    Only(Vec<String>),
}

impl Scope {
    pub fn allows(&self, source: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(s) => s.iter().any(|x| x == source),
        }
    }
}

/// An item's id in URLs and the API: `<source>:<item>` (a source name has no ':').
pub fn item_id(st: &ItemState) -> String {
    format!("{}:{}", st.source, st.item)
}

/// `<source>:<item>` split back.
pub fn split_id(id: &str) -> Option<(&str, &str)> {
    id.split_once(':')
        .filter(|(s, i)| !s.is_empty() && !i.is_empty())
}

/// One inventory row.
#[derive(Debug, Clone)]
pub struct Row<'a> {
    pub item: &'a ItemState,
    pub available: Option<i64>,
    pub status: Status,
    /// Sales velocity, days of cover and reorder quantity (issue 15); `None` without enough
    /// sales history.
    pub cover: Option<CoverView>,
}

impl Row<'_> {
    pub fn id(&self) -> String {
        item_id(self.item)
    }
}

/// The status of one item under the rules.
pub fn status(st: &ItemState, rules: &RuleConfig, now: i64) -> Status {
    if st.removed.is_some() {
        return Status::Untracked;
    }
    let Some(total) = st.total() else {
        return Status::Untracked;
    };
    let threshold = rules.threshold(&st.source, st.sku.as_deref());
    if total <= 0 {
        Status::Out
    } else if total < threshold {
        Status::Low
    } else if now.saturating_sub(st.quiet_since()) >= i64::from(rules.no_sales_days) * 86_400_000 {
        Status::NoSales
    } else {
        Status::Ok
    }
}

/// An item's days of cover, velocity and reorder quantity, as the cover rule computes them.
pub fn cover(st: &ItemState, rules: &RuleConfig, now: i64) -> Option<CoverView> {
    crate::cover::cover(st, rules, now)
}

/// How the inventory table is sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Sort {
    #[default]
    Available,
    Cover,
    LastSale,
    Name,
}

impl Sort {
    pub fn parse(s: &str) -> Option<Sort> {
        Some(match s {
            "available" => Sort::Available,
            "cover" => Sort::Cover,
            "last_sale" => Sort::LastSale,
            "name" => Sort::Name,
            _ => return None,
        })
    }
    /// Its place in [`Snapshot`]'s precomputed orders.
    fn ix(self) -> usize {
        match self {
            Sort::Available => 0,
            Sort::Cover => 1,
            Sort::LastSale => 2,
            Sort::Name => 3,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Sort::Available => "available",
            Sort::Cover => "cover",
            Sort::LastSale => "last_sale",
            Sort::Name => "name",
        }
    }
}

/// The inventory filters, from the query string (the same for the page, the CSV and the API).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Matches title, SKU or item id, case-insensitively.
    pub q: String,
    pub source: Option<String>,
    /// `ok`, `low`, `out`, `no_sales`, `untracked`, or `cover` (fewer days of cover than the
    /// item's lead time, `cover_days`).
    pub status: Option<String>,
    pub sort: Sort,
    pub desc: bool,
    /// 0-based page of [`PAGE_SIZE`] rows (the HTML table only).
    pub page: usize,
    /// Matches nothing (a source the user does not see was asked for).
    pub none: bool,
}

/// Rows per page of the HTML table.
pub const PAGE_SIZE: usize = 100;

impl Filter {
    /// The filter of `query` for a user of `scope`: a source the user does not see matches
    /// nothing and is not echoed back in the page's links.
    pub fn for_scope(query: &str, scope: &Scope) -> Filter {
        let mut f = Filter::from_query(query);
        if f.source.as_ref().is_some_and(|s| !scope.allows(s)) {
            f.source = None;
            f.none = true;
        }
        f
    }

    pub fn from_query(query: &str) -> Filter {
        let mut f = Filter::default();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let v = v.trim().to_string();
            match k.as_ref() {
                "q" => f.q = v,
                "source" if !v.is_empty() => f.source = Some(v),
                "status" if !v.is_empty() => f.status = Some(v),
                "sort" => f.sort = Sort::parse(&v).unwrap_or_default(),
                "dir" => f.desc = v == "desc",
                "page" => f.page = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        f
    }

    /// The query string that gives this filter (for links: sort headers, pages, CSV).
    pub fn to_query(&self, page: Option<usize>) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if !self.q.is_empty() {
            q.append_pair("q", &self.q);
        }
        if let Some(s) = &self.source {
            q.append_pair("source", s);
        }
        if let Some(s) = &self.status {
            q.append_pair("status", s);
        }
        q.append_pair("sort", self.sort.as_str());
        if self.desc {
            q.append_pair("dir", "desc");
        }
        if let Some(p) = page.filter(|p| *p > 0) {
            q.append_pair("page", &p.to_string());
        }
        q.finish()
    }

    /// Whether item `d` of `st` passes (the search's `needle` already lowercased).
    fn keep(&self, st: &ItemState, d: &Derived, needle: &str) -> bool {
        if self.source.as_ref().is_some_and(|s| *s != st.source) {
            return false;
        }
        let status_ok = match self.status.as_deref() {
            None => true,
            Some("cover") => d
                .cover
                .as_ref()
                .is_some_and(|c| c.days_of_cover < f64::from(c.cover_days)),
            Some(s) => d.status.as_str() == s,
        };
        status_ok && (needle.is_empty() || d.hay.contains(needle))
    }
}

/// The indices (into `snap.items`) of the rows `scope` may see that pass `filter`, sorted: a
/// walk over the snapshot's precomputed order, no sorting per request, made once per
/// snapshot for each (scope, filter) while [`SELECTIONS_MAX_BYTES`] allow ([`Selections`]).
pub fn select(snap: &Snapshot, scope: &Scope, filter: &Filter) -> Arc<[u32]> {
    if filter.none {
        return Arc::from([]);
    }
    let key = SelectionKey::new(scope, filter);
    if let Some(v) = snap.selections().by.get(&key) {
        return v.clone();
    }
    let needle = filter.q.to_lowercase();
    let v: Arc<[u32]> = snap.orders[filter.sort.ix()]
        .iter(filter.desc)
        .filter(|&i| {
            let st = &snap.items[i as usize];
            scope.allows(&st.source) && filter.keep(st, &snap.derived[i as usize], &needle)
        })
        .collect();
    let mut kept = snap.selections();
    let bytes = std::mem::size_of_val(&*v);
    if kept.bytes + bytes <= SELECTIONS_MAX_BYTES && !kept.by.contains_key(&key) {
        kept.bytes += bytes;
        kept.by.insert(key, v.clone());
    }
    v
}

/// The rows `scope` may see that pass `filter`, sorted (the CSV and the API: every row).
pub fn rows<'a>(snap: &'a Snapshot, scope: &Scope, filter: &Filter) -> Vec<Row<'a>> {
    select(snap, scope, filter)
        .iter()
        .map(|&i| snap.row(i))
        .collect()
}

/// What an item is called on the pages: its title, else its SKU, else its id.
pub fn name(st: &ItemState) -> String {
    st.title
        .clone()
        .or_else(|| st.sku.clone())
        .unwrap_or_else(|| st.item.clone())
}

/// The configured sources a user sees, in order.
pub fn sources(scope: &Scope, configured: &[String]) -> Vec<String> {
    configured
        .iter()
        .filter(|s| scope.allows(s))
        .cloned()
        .collect()
}

/// One source's figures for the overview.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceFigures {
    pub source: String,
    pub items: usize,
    pub low: usize,
    pub out: usize,
    /// The newest level or sale time an item of this source holds.
    pub last_event_at: Option<i64>,
    /// Events processed per hour over the last 24 clock hours (the last one so far), oldest
    /// first: the worker's per-source hourly counters, not the items' history points.
    pub per_hour: Vec<u32>,
    pub processed: i64,
    pub alerts_pending: usize,
    pub alerts_failed: usize,
}

/// Figures per source for the overview (and `stats` in the API), from the snapshot's.
pub fn figures(snap: &Snapshot, sources: &[String]) -> Vec<SourceFigures> {
    sources
        .iter()
        .map(|s| {
            snap.figures
                .get(s)
                .cloned()
                .unwrap_or_else(|| SourceFigures {
                    source: s.clone(),
                    per_hour: vec![0; 24],
                    ..SourceFigures::default()
                })
        })
        .collect()
}

/// Every source's figures, once per snapshot.
fn all_figures(
    now: i64,
    items: &[Arc<ItemState>],
    derived: &[Derived],
    outbox: &[OutboxEntry],
    counters: &BTreeMap<String, i64>,
) -> BTreeMap<String, SourceFigures> {
    let mut by: BTreeMap<String, SourceFigures> = BTreeMap::new();
    fn entry<'m>(
        by: &'m mut BTreeMap<String, SourceFigures>,
        s: &str,
        now: i64,
        counters: &BTreeMap<String, i64>,
    ) -> &'m mut SourceFigures {
        by.entry(s.to_string()).or_insert_with(|| SourceFigures {
            source: s.to_string(),
            per_hour: per_hour(counters, s, now),
            processed: counters
                .get(&crate::state::counters::source_processed(s))
                .copied()
                .unwrap_or(0),
            ..SourceFigures::default()
        })
    }
    for (st, d) in items.iter().zip(derived) {
        let f = entry(&mut by, &st.source, now, counters);
        f.items += 1;
        match d.status {
            Status::Low => f.low += 1,
            Status::Out => f.out += 1,
            _ => {}
        }
        let newest = st
            .levels
            .values()
            .map(|l| l.at)
            .max()
            .max(st.last_sale_at)
            .max(st.history.levels.iter().map(|p| p.at).max())
            .max(st.history.sales.iter().map(|(t, _)| *t).max());
        f.last_event_at = f.last_event_at.max(newest);
    }
    for e in outbox {
        // A combined alert (`a+b`) counts for none of its parts, as before.
        let f = entry(&mut by, &e.alert.source, now, counters);
        match e.status {
            crate::alert::OutboxStatus::Pending => f.alerts_pending += 1,
            crate::alert::OutboxStatus::Failed => f.alerts_failed += 1,
            _ => {}
        }
    }
    for name in counters.keys() {
        if let Some(s) = name
            .strip_prefix("source.")
            .and_then(|r| r.strip_suffix(".processed"))
        {
            entry(&mut by, s, now, counters);
        }
    }
    by
}

/// Events processed per hour over the 24 hours up to `now`, oldest first, from the
/// per-source hourly counters the worker keeps ([`crate::state::counters::source_hour`]).
pub fn per_hour(counters: &BTreeMap<String, i64>, source: &str, now: i64) -> Vec<u32> {
    let this_hour = now.div_euclid(crate::state::counters::HOUR_MS);
    (this_hour - 23..=this_hour)
        .map(|h| {
            counters
                .get(&crate::state::counters::source_hour(source, h))
                .map_or(0, |n| u32::try_from(*n).unwrap_or(0))
        })
        .collect()
}

/// The item `id` if `scope` may see it (else `None`, the same as no such item: a 404).
pub fn find<'a>(snap: &'a Snapshot, scope: &Scope, id: &str) -> Option<&'a ItemState> {
    let (source, item) = split_id(id)?;
    if !scope.allows(source) {
        return None;
    }
    snap.items
        .binary_search_by(|st| (st.source.as_str(), st.item.as_str()).cmp(&(source, item)))
        .ok()
        .map(|i| &*snap.items[i])
}

/// The ids an item's alerts may have had: the stock rules' of its last
/// [`ITEM_EPISODES_SHOWN`] arming episodes, the cover rule's likewise, and the no-sales one of
/// its last quiet period. Read by id, so the item page never walks the outbox.
pub fn item_alert_ids(st: &ItemState) -> Vec<String> {
    use crate::alert::{Alert, Rule};
    let episodes = |last: u64| last.saturating_sub(ITEM_EPISODES_SHOWN - 1).max(1)..=last;
    let mut ids = st.alert_ids();
    for e in episodes(st.arming.episode) {
        for r in [Rule::LowStock, Rule::OutOfStock] {
            ids.push(Alert::make_id(r, &st.source, &st.item, e));
        }
    }
    for e in episodes(st.cover_arming.episode) {
        ids.push(Alert::make_id(Rule::Cover, &st.source, &st.item, e));
    }
    ids.sort();
    ids.dedup();
    ids
}

/// How many of an item's last arming episodes its page lists alerts of.
pub const ITEM_EPISODES_SHOWN: u64 = 20;

/// Entries newest first (by creation, then id).
pub fn newest_first(v: &mut [OutboxEntry]) {
    v.sort_by(|a, b| (b.alert.created_at, &b.alert.id).cmp(&(a.alert.created_at, &a.alert.id)));
}

/// A combined alert's source is `a+b`: visible only when every part is.
pub fn alert_visible(scope: &Scope, source: &str) -> bool {
    source.split('+').all(|s| scope.allows(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{counters, LevelRec};

    const NOW: i64 = 1_800_000_000_000;

    fn item(
        source: &str,
        id: &str,
        title: &str,
        available: Option<i64>,
        sale: Option<i64>,
    ) -> ItemState {
        let mut st = ItemState::new(source, "shopify", id, NOW - 86_400_000);
        st.title = Some(title.to_string());
        st.sku = Some(format!("SKU-{id}"));
        if let Some(a) = available {
            st.levels.insert(
                "all".into(),
                LevelRec {
                    available: Some(a),
                    at: NOW - 3_600_000,
                },
            );
        }
        st.last_sale_at = sale;
        st
    }

    fn snap(counters: BTreeMap<String, i64>) -> Snapshot {
        let mut items = vec![
            item("a", "1", "Blue mug", Some(7), Some(NOW - 5)),
            item("a", "2", "red Mug", Some(2), None),
            item("b", "3", "Apron", None, Some(NOW - 9)),
            item("b", "4", "candle", Some(0), Some(NOW - 1)),
            item("a", "5", "Zebra", Some(7), None),
        ];
        items.sort_by(|a, b| (&a.source, &a.item).cmp(&(&b.source, &b.item)));
        Snapshot::new(
            NOW,
            items.into_iter().map(Arc::new).collect(),
            Vec::new(),
            counters,
            Arc::new(RuleConfig::example()),
        )
    }

    fn ids(snap: &Snapshot, scope: &Scope, query: &str) -> Vec<String> {
        rows(snap, scope, &Filter::for_scope(query, scope))
            .iter()
            .map(|r| r.item.item.clone())
            .collect()
    }

    #[test]
    fn each_sort_key_orders_both_ways_with_unknowns_last() {
        let s = snap(BTreeMap::new());
        let all = Scope::All;
        // Ties (1 and 5 both hold 7) keep the snapshot's order ascending, reversed descending.
        assert_eq!(ids(&s, &all, "sort=available"), ["4", "2", "1", "5", "3"]);
        assert_eq!(
            ids(&s, &all, "sort=available&dir=desc"),
            ["5", "1", "2", "4", "3"]
        );
        assert_eq!(ids(&s, &all, "sort=last_sale"), ["3", "1", "4", "2", "5"]);
        assert_eq!(
            ids(&s, &all, "sort=last_sale&dir=desc"),
            ["4", "1", "3", "2", "5"]
        );
        // By name, case-insensitively.
        assert_eq!(ids(&s, &all, "sort=name"), ["3", "1", "4", "2", "5"]);
        assert_eq!(
            ids(&s, &all, "sort=name&dir=desc"),
            ["5", "2", "4", "1", "3"]
        );
    }

    #[test]
    fn filters_and_scope_apply_on_the_precomputed_order() {
        let s = snap(BTreeMap::new());
        let all = Scope::All;
        assert_eq!(ids(&s, &all, "q=MUG&sort=name"), ["1", "2"]);
        assert_eq!(ids(&s, &all, "q=sku-4"), ["4"]);
        assert_eq!(ids(&s, &all, "status=out"), ["4"]);
        assert_eq!(ids(&s, &all, "status=low"), ["2"]);
        assert_eq!(ids(&s, &all, "source=b&sort=name"), ["3", "4"]);
        let only_b = Scope::Only(vec!["b".into()]);
        assert_eq!(ids(&s, &only_b, "sort=name"), ["3", "4"]);
        // Another source's filter matches nothing for a scoped user.
        assert!(ids(&s, &only_b, "source=a").is_empty());
        assert!(ids(&s, &only_b, "q=mug").is_empty());
    }

    /// A selection is made once per snapshot and (scope, filter): asked again, in any order,
    /// the same rows come back without a walk; a scoped user is never handed a selection made
    /// for another scope, nor one made for all sources; the page is not part of it.
    #[test]
    fn a_selection_is_kept_per_scope_and_filter_for_the_snapshots_life() {
        let s = snap(BTreeMap::new());
        let only_a = Scope::Only(vec!["a".into()]);
        let only_b = Scope::Only(vec!["b".into()]);
        let f = |q: &str, scope: &Scope| Filter::for_scope(q, scope);
        let all_first = select(&s, &Scope::All, &f("sort=name", &Scope::All));
        let b = select(&s, &only_b, &f("sort=name", &only_b));
        let a = select(&s, &only_a, &f("sort=name", &only_a));
        let named = |v: &[u32]| {
            v.iter()
                .map(|&i| s.items[i as usize].item.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(named(&all_first), ["3", "1", "4", "2", "5"]);
        assert_eq!(named(&b), ["3", "4"]);
        assert_eq!(named(&a), ["1", "2", "5"]);
        // Asked again (another page of the same view): the kept selection, not a new walk.
        let again = select(&s, &only_b, &f("sort=name&page=3", &only_b));
        assert!(Arc::ptr_eq(&again, &b));
        assert!(Arc::ptr_eq(
            &select(&s, &Scope::All, &f("sort=name", &Scope::All)),
            &all_first
        ));
        // Another filter is another selection.
        let desc = select(&s, &only_b, &f("sort=name&dir=desc", &only_b));
        assert_eq!(named(&desc), ["4", "3"]);
        assert_eq!(
            named(&select(&s, &only_a, &f("q=mug", &only_a))),
            ["2", "1"]
        );
        // A fresh snapshot starts with none kept.
        let fresh = snap(BTreeMap::new());
        assert!(!Arc::ptr_eq(
            &select(&fresh, &only_b, &f("sort=name", &only_b)),
            &b
        ));
        // Kept within the bound: a selection that would pass it is walked and not kept.
        let full = snap(BTreeMap::new());
        full.selections().bytes = SELECTIONS_MAX_BYTES;
        let one = select(&full, &Scope::All, &f("sort=name", &Scope::All));
        let two = select(&full, &Scope::All, &f("sort=name", &Scope::All));
        assert_eq!(one, two);
        assert!(!Arc::ptr_eq(&one, &two));
    }

    #[test]
    fn overview_figures_come_from_the_snapshot_and_the_hourly_counters() {
        let hour = NOW.div_euclid(counters::HOUR_MS);
        let c = BTreeMap::from([
            (counters::source_hour("a", hour), 5),
            (counters::source_hour("a", hour - 23), 2),
            // Older than the chart's 24 hours, and another source's: not counted.
            (counters::source_hour("a", hour - 24), 100),
            (counters::source_hour("b", hour), 40),
            (counters::source_processed("a"), 107),
        ]);
        let s = snap(c);
        let figs = figures(&s, &["a".to_string(), "b".to_string(), "c".to_string()]);
        let a = &figs[0];
        assert_eq!((a.items, a.low, a.out, a.processed), (3, 1, 0, 107));
        assert_eq!(a.per_hour.len(), 24);
        assert_eq!((a.per_hour[0], a.per_hour[23]), (2, 5));
        assert_eq!(a.per_hour.iter().sum::<u32>(), 7);
        assert_eq!(a.last_event_at, Some(NOW - 5));
        let b = &figs[1];
        assert_eq!((b.items, b.out), (2, 1));
        assert_eq!(b.per_hour[23], 40);
        // A configured source with nothing yet.
        assert_eq!((figs[2].source.as_str(), figs[2].items), ("c", 0));
        assert_eq!(figs[2].per_hour, vec![0; 24]);
    }

    #[test]
    fn hourly_counter_names_round_trip_and_age() {
        let name = counters::source_hour("shop.eu", 500_000);
        assert_eq!(counters::hour_of(&name), Some(500_000));
        assert_eq!(counters::hour_of("source.a.processed"), None);
        assert!(counters::is_stale_hour(&name, 500_001 * counters::HOUR_MS));
        assert!(!counters::is_stale_hour(
            &name,
            500_001 * counters::HOUR_MS - 1
        ));
    }
}

//! What the dashboard shows, computed from a snapshot of the state: one row per item with its
//! status, the inventory filters and sort, and what a user may see (their sources only).
//!
//! Pure functions of the snapshot, so the pages, the JSON API, the CSV download and the
//! benchmark all read the same thing, and none of them touches the state store.

use crate::alert::OutboxEntry;
use crate::cover::CoverView;
use crate::state::{ItemState, RuleConfig};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Everything a page reads, taken at once; shared by every request until the next refresh.
pub struct Snapshot {
    pub taken_at: i64,
    pub items: Vec<ItemState>,
    pub outbox: Vec<OutboxEntry>,
    pub counters: BTreeMap<String, i64>,
    pub rules: Arc<RuleConfig>,
    /// Per item (same index as `items`): what every inventory page filters and sorts on,
    /// computed once per snapshot rather than per request (the cover rule's velocity and the
    /// lowercased text are most of a 50,000-item page's cost).
    derived: Vec<Derived>,
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
        items: Vec<ItemState>,
        outbox: Vec<OutboxEntry>,
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
            .collect();
        Snapshot {
            taken_at,
            items,
            outbox,
            counters,
            rules,
            derived,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

    fn keep(&self, row: &Row, needle: &str, hay: &str) -> bool {
        let st = row.item;
        if self.none {
            return false;
        }
        if self.source.as_ref().is_some_and(|s| *s != st.source) {
            return false;
        }
        let status_ok = match self.status.as_deref() {
            None => true,
            Some("cover") => row
                .cover
                .as_ref()
                .is_some_and(|c| c.days_of_cover < f64::from(c.cover_days)),
            Some(s) => row.status.as_str() == s,
        };
        if !status_ok {
            return false;
        }
        if needle.is_empty() {
            return true;
        }
        hay.contains(needle)
    }
}

/// The rows `scope` may see that pass `filter`, sorted.
pub fn rows<'a>(snap: &'a Snapshot, scope: &Scope, filter: &Filter) -> Vec<Row<'a>> {
    let needle = filter.q.to_lowercase();
    let mut rows: Vec<(&str, Row)> = snap
        .items
        .iter()
        .zip(&snap.derived)
        .filter(|(st, _)| scope.allows(&st.source))
        .map(|(st, d)| {
            let row = Row {
                item: st,
                available: st.total(),
                status: d.status,
                cover: d.cover.clone(),
            };
            (d, row)
        })
        .filter(|(d, r)| filter.keep(r, &needle, &d.hay))
        .map(|(d, r)| (d.name_key.as_str(), r))
        .collect();
    // Unknowns last in either direction.
    let key_i = |v: Option<i64>| v.map_or((1, 0), |x| (0, x));
    match filter.sort {
        Sort::Available => rows.sort_by_key(|(_, r)| key_i(r.available)),
        Sort::LastSale => rows.sort_by_key(|(_, r)| key_i(r.item.last_sale_at)),
        Sort::Cover => rows.sort_by(|(_, a), (_, b)| {
            let k = |r: &Row| r.cover.as_ref().map_or((1, 0.0), |c| (0, c.days_of_cover));
            k(a).partial_cmp(&k(b)).unwrap_or(std::cmp::Ordering::Equal)
        }),
        Sort::Name => rows.sort_by_key(|(k, _)| *k),
    }
    if filter.desc {
        rows.reverse();
    }
    rows.into_iter().map(|(_, r)| r).collect()
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
    /// Level reports and sales per hour over the last 24 hours, oldest first.
    pub per_hour: Vec<u32>,
    pub processed: i64,
    pub alerts_pending: usize,
    pub alerts_failed: usize,
}

/// Figures per source for the overview (and `stats` in the API).
pub fn figures(snap: &Snapshot, sources: &[String]) -> Vec<SourceFigures> {
    let now = snap.taken_at;
    let hour = 3_600_000;
    let start = now - 24 * hour;
    let mut by: BTreeMap<&str, SourceFigures> = sources
        .iter()
        .map(|s| {
            (
                s.as_str(),
                SourceFigures {
                    source: s.clone(),
                    per_hour: vec![0; 24],
                    processed: snap
                        .counters
                        .get(&crate::state::counters::source_processed(s))
                        .copied()
                        .unwrap_or(0),
                    ..SourceFigures::default()
                },
            )
        })
        .collect();
    for st in &snap.items {
        let Some(f) = by.get_mut(st.source.as_str()) else {
            continue;
        };
        f.items += 1;
        match status(st, &snap.rules, now) {
            Status::Low => f.low += 1,
            Status::Out => f.out += 1,
            _ => {}
        }
        let times = st
            .history
            .levels
            .iter()
            .map(|p| p.at)
            .chain(st.history.sales.iter().map(|(t, _)| *t));
        for t in times {
            f.last_event_at = f.last_event_at.max(Some(t));
            if t >= start && t < now + hour {
                let i = (((t - start) / hour) as usize).min(23);
                f.per_hour[i] += 1;
            }
        }
        let newest = st.levels.values().map(|l| l.at).max().max(st.last_sale_at);
        f.last_event_at = f.last_event_at.max(newest);
    }
    for e in &snap.outbox {
        if let Some(f) = by.get_mut(e.alert.source.as_str()) {
            match e.status {
                crate::alert::OutboxStatus::Pending => f.alerts_pending += 1,
                crate::alert::OutboxStatus::Failed => f.alerts_failed += 1,
                _ => {}
            }
        }
    }
    sources
        .iter()
        .filter_map(|s| by.remove(s.as_str()))
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
        .map(|i| &snap.items[i])
}

/// The outbox entries `scope` may see, newest first.
pub fn alerts<'a>(snap: &'a Snapshot, scope: &Scope) -> Vec<&'a OutboxEntry> {
    let mut v: Vec<&OutboxEntry> = snap
        .outbox
        .iter()
        .filter(|e| alert_visible(scope, &e.alert.source))
        .collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.alert.created_at));
    v
}

/// A combined alert's source is `a+b`: visible only when every part is.
pub fn alert_visible(scope: &Scope, source: &str) -> bool {
    source.split('+').all(|s| scope.allows(s))
}

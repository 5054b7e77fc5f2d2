//! What stockhook knows of a source's catalog without a webhook: a [`CatalogBatch`] read from a
//! file the seller exported (`import`) or pulled from the platform's API (`sync`), and the one
//! way it enters state, [`apply`]: as events through the same rules as every webhook.
//!
//! A batch becomes synthetic events (chunks of [`CHUNK`] items) whose ids are derived from the
//! batch's [`Origin`], so the same batch applied twice is deduplicated by the state's
//! processed-event marks exactly like a redelivered webhook: it changes nothing and sends
//! nothing twice. Levels carry the batch's `taken_at`, so the event-time order keeps a newer
//! webhook winning over an older snapshot.

pub mod files;
pub mod import;

use crate::facts::Fact;
use crate::state::{Applied, Prepared, RuleConfig, StateBackend, StateError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use stockhook_shared::envelope::EventId;

/// Items per synthetic event: small enough for one sled transaction and one NATS round of
/// compare-and-sets, large enough that a 50,000-variant catalog is 100 events.
pub const CHUNK: usize = 500;

/// One source's catalog as read at `taken_at` (Unix ms, as event times are).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CatalogBatch {
    pub source: String,
    /// The platform name as adapters give it (`shopify`, `amazon`, `ebay`, ...).
    pub platform: String,
    /// When the snapshot was taken (import: the import time; sync: when the fetch began).
    pub taken_at: i64,
    pub items: Vec<CatalogItem>,
    /// Location ids and their names, where the source has them.
    pub locations: Vec<Location>,
    /// Order lines, for last-sale dates and sales velocity.
    pub sales: Vec<SaleLine>,
    /// True when `items` is the whole catalog of the source: a live item it does not list is
    /// gone from the platform (marked removed, never deleted).
    pub complete: bool,
    /// With `complete`: each item's levels in `items` are all its stock, so a level held at a
    /// location they do not list is stale ([`Fact::StockedAt`]). The platform's sync module
    /// says so where its API reads every location ([`crate::sync::amazon`]); an import never.
    #[serde(default)]
    pub levels_are_all_stock: bool,
}

/// One item (variant, listing, SKU) as the catalog knows it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CatalogItem {
    /// The id webhooks name the item by (Shopify: the inventory item id; Amazon: the seller
    /// SKU; eBay: the ItemID, or `ItemID:SKU` for a variation).
    pub item: String,
    /// Other ids the platform uses for the same item (Shopify: the variant id).
    pub aliases: Vec<String>,
    pub sku: Option<String>,
    pub title: Option<String>,
    /// The product (listing) it belongs to, where the platform groups items.
    pub product: Option<String>,
    /// Available per location id. `None`: untracked or not stocked there, catalog only,
    /// never a 0. An empty list: catalog only.
    pub levels: Vec<(String, Option<i64>)>,
}

/// A location id and its name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Location {
    pub id: String,
    pub name: String,
}

/// One order line.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SaleLine {
    pub item: String,
    pub quantity: i64,
    pub order: String,
    pub line: String,
    pub at: i64,
}

/// Where a batch came from; it names the batch's synthetic events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// A file, named by the SHA-256 of its bytes: the same file imported twice is one import.
    Import { sha256: [u8; 32] },
    /// One sync run of a source, named by when it began.
    Sync { run_started_at: i64 },
    /// One unknown item looked up on the platform before its alert went out
    /// ([`crate::sync::lookup`]), named by the item and when.
    Lookup { item: String, at: i64 },
}

impl Origin {
    /// The id of chunk `n` of this batch for `source`. The top bit is set, so it never equals
    /// a queue id (those count up from the receiver's clock in ms).
    pub fn event_id(&self, source: &str, n: usize) -> EventId {
        let mut h = Sha256::new();
        h.update(source.as_bytes());
        h.update([0]);
        match self {
            Origin::Import { sha256 } => {
                h.update(b"import");
                h.update(sha256);
            }
            Origin::Sync { run_started_at } => {
                h.update(b"sync");
                h.update(run_started_at.to_be_bytes());
            }
            Origin::Lookup { item, at } => {
                h.update(b"lookup");
                h.update(item.as_bytes());
                h.update([0]);
                h.update(at.to_be_bytes());
            }
        }
        h.update((n as u64).to_be_bytes());
        let d = h.finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        EventId(u64::from_be_bytes(b) | (1 << 63))
    }

    fn topic(&self) -> &'static str {
        match self {
            Origin::Import { .. } => IMPORT_TOPIC,
            Origin::Sync { .. } | Origin::Lookup { .. } => SYNC_TOPIC,
        }
    }
}

/// The topic of an import's synthetic events.
pub const IMPORT_TOPIC: &str = "stockhook/import";
/// The topic of a sync's synthetic events.
pub const SYNC_TOPIC: &str = "stockhook/sync";

/// True for the synthetic events of a catalog snapshot (import or sync): a level they carry
/// that differs from an older one held is a correction of what the webhooks left.
pub fn is_snapshot_topic(topic: &str) -> bool {
    topic == IMPORT_TOPIC || topic == SYNC_TOPIC
}

/// The facts of one catalog item, stamped with the batch time: its entry, the names of the
/// locations it is listed at (where the batch names them), its tracked levels.
fn item_facts(
    it: &CatalogItem,
    locations: &HashMap<&str, &str>,
    at: i64,
    replaces_levels: bool,
) -> Vec<Fact> {
    let mut facts = vec![Fact::CatalogEntry {
        item: it.item.clone(),
        aliases: it.aliases.clone(),
        sku: it.sku.clone(),
        title: it.title.clone(),
        at,
    }];
    for (location, _) in &it.levels {
        if let Some(name) = locations.get(location.as_str()) {
            facts.push(Fact::LocationName {
                item: it.item.clone(),
                location: location.clone(),
                name: name.to_string(),
                at,
            });
        }
    }
    for (location, available) in &it.levels {
        if available.is_some() {
            facts.push(Fact::InventoryLevel {
                item: it.item.clone(),
                location: location.clone(),
                available: *available,
                at,
            });
        }
    }
    if replaces_levels {
        facts.push(Fact::StockedAt {
            item: it.item.clone(),
            locations: it
                .levels
                .iter()
                .filter(|(_, n)| n.is_some())
                .map(|(l, _)| l.clone())
                .collect(),
            at,
        });
    }
    facts
}

/// True when a level `batch` does not list is stale: see [`CatalogBatch::levels_are_all_stock`].
fn replaces_levels(batch: &CatalogBatch) -> bool {
    batch.complete && batch.levels_are_all_stock
}

/// The batch as events, in order: items in chunks, then sales in chunks.
pub fn to_events<'a>(
    batch: &'a CatalogBatch,
    origin: &'a Origin,
) -> impl Iterator<Item = Prepared> + 'a {
    // Built one chunk at a time as the caller applies them: a 50,000-item catalog never has
    // all its events in memory at once.
    let locations: HashMap<&str, &str> = batch
        .locations
        .iter()
        .filter(|l| !l.name.trim().is_empty())
        .map(|l| (l.id.as_str(), l.name.as_str()))
        .collect();
    let items = batch.items.chunks(CHUNK).map(move |c| {
        c.iter()
            .flat_map(|it| item_facts(it, &locations, batch.taken_at, replaces_levels(batch)))
            .collect::<Vec<Fact>>()
    });
    let sales = batch.sales.chunks(CHUNK).map(|c| {
        c.iter()
            .map(|s| Fact::Sale {
                item: s.item.clone(),
                quantity: s.quantity,
                order: s.order.clone(),
                line: s.line.clone(),
                at: s.at,
            })
            .collect::<Vec<Fact>>()
    });
    items
        .chain(sales)
        .enumerate()
        .map(move |(n, facts)| event(batch, origin, n, facts))
}

/// Synthetic event `n` of a batch.
fn event(batch: &CatalogBatch, origin: &Origin, n: usize, facts: Vec<Fact>) -> Prepared {
    Prepared::synthetic(
        origin.event_id(&batch.source, n),
        batch.taken_at,
        &batch.source,
        &batch.platform,
        origin.topic(),
        facts,
    )
}

/// Why a complete batch's missing items are marked removed.
pub const GONE_REASON: &str = "sync: gone from the platform";

/// The removals a complete batch implies: every live item of the source (`live`, its ids) that
/// the batch does not list (by item id or alias), as events numbered after the batch's own
/// (`first`), so they are deduplicated like them. The engine's removal rule keeps an item a
/// webhook reported after the snapshot.
pub fn gone_events(
    batch: &CatalogBatch,
    origin: &Origin,
    live: &[String],
    first: usize,
) -> Vec<Prepared> {
    if !batch.complete {
        return Vec::new();
    }
    let listed: HashSet<&str> = batch
        .items
        .iter()
        .flat_map(|it| {
            std::iter::once(it.item.as_str()).chain(it.aliases.iter().map(|a| a.as_str()))
        })
        // An item the batch's own orders name is not gone: its sales made it an item of the
        // source (applying the same batch twice must change nothing the second time).
        .chain(batch.sales.iter().map(|s| s.item.as_str()))
        .collect();
    let gone: Vec<Fact> = live
        .iter()
        .filter(|item| !listed.contains(item.as_str()))
        .map(|item| Fact::Removed {
            item: item.clone(),
            reason: GONE_REASON.into(),
            at: batch.taken_at,
        })
        .collect();
    gone.chunks(CHUNK)
        .enumerate()
        .map(|(n, c)| event(batch, origin, first + n, c.to_vec()))
        .collect()
}

/// Applies a batch through the rules, one chunk per state transaction so event processing is
/// never held up for long. `dry_run` computes the alerts and writes nothing.
pub async fn apply<B: StateBackend>(
    state: &B,
    rules: Arc<RuleConfig>,
    batch: &CatalogBatch,
    origin: &Origin,
    now: i64,
    dry_run: bool,
) -> Result<Vec<Applied>, StateError> {
    let mut out = Vec::new();
    let first = batch.items.len().div_ceil(CHUNK) + batch.sales.len().div_ceil(CHUNK);
    // What the state holds before the batch: a complete batch removes the items it misses.
    let gone = if batch.complete {
        let live = state.live_item_ids(batch.source.clone()).await?;
        gone_events(batch, origin, &live, first)
    } else {
        Vec::new()
    };
    for ev in to_events(batch, origin).chain(gone) {
        out.extend(
            state
                .apply_batch(vec![ev], rules.clone(), now, dry_run)
                .await?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> CatalogBatch {
        CatalogBatch {
            source: "shop".into(),
            platform: "shopify".into(),
            taken_at: 1_700_000_000_000,
            items: (0..n)
                .map(|i| CatalogItem {
                    item: format!("i{i}"),
                    sku: Some(format!("SKU-{i}")),
                    levels: vec![("loc".into(), Some(3)), ("other".into(), None)],
                    ..CatalogItem::default()
                })
                .collect(),
            ..CatalogBatch::default()
        }
    }

    #[test]
    fn same_origin_same_ids_and_never_a_queue_id() {
        let o = Origin::Import { sha256: [7; 32] };
        let a: Vec<_> = to_events(&batch(CHUNK + 1), &o).collect();
        let b: Vec<_> = to_events(&batch(CHUNK + 1), &o).collect();
        assert_eq!(a.len(), 2);
        assert_eq!(
            a.iter().map(|e| e.id).collect::<Vec<_>>(),
            b.iter().map(|e| e.id).collect::<Vec<_>>()
        );
        assert_ne!(a[0].id, a[1].id);
        assert!(a.iter().all(|e| e.id.0 >> 63 == 1));
        let other: Vec<_> = to_events(&batch(1), &Origin::Sync { run_started_at: 1 }).collect();
        assert_ne!(other[0].id, a[0].id);
    }

    #[test]
    fn only_a_complete_batch_of_all_stock_replaces_levels() {
        let stocked_at = |complete, levels_are_all_stock| {
            let b = CatalogBatch {
                complete,
                levels_are_all_stock,
                ..batch(1)
            };
            let ev: Vec<_> = to_events(&b, &Origin::Sync { run_started_at: 1 }).collect();
            ev[0]
                .normalized
                .facts
                .iter()
                .filter_map(|f| match f {
                    Fact::StockedAt { locations, .. } => Some(locations.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        // Only the tracked location: the untracked one holds no stock to keep.
        assert_eq!(stocked_at(true, true), vec![vec!["loc".to_string()]]);
        assert!(stocked_at(true, false).is_empty());
        assert!(stocked_at(false, true).is_empty());
    }

    #[test]
    fn untracked_cells_are_catalog_only() {
        let ev: Vec<_> = to_events(&batch(1), &Origin::Sync { run_started_at: 1 }).collect();
        let levels: Vec<_> = ev[0]
            .normalized
            .facts
            .iter()
            .filter(|f| matches!(f, Fact::InventoryLevel { .. }))
            .collect();
        assert_eq!(levels.len(), 1, "{:?}", ev[0].normalized.facts);
    }
}

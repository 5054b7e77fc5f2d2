//! The normalized facts every platform adapter produces: the one vocabulary the state store and
//! the rules understand, so adding a platform never touches them.
//!
//! Item ids are the platform's own ids as text (Shopify's 64-bit integers are printed exactly,
//! never through a float). Times are Unix milliseconds of the platform's event time.

use serde::{Deserialize, Serialize};

/// What one payload says about stock, catalog and sales.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fact {
    /// `available` units of `item` at `location` as of `at`. `available: None` means the
    /// platform does not track this item's quantity (Shopify's `available: null`): not zero.
    InventoryLevel {
        item: String,
        location: String,
        available: Option<i64>,
        at: i64,
    },
    /// What the catalog knows about `item`. `aliases` are other ids the platform uses for the same
    /// item in other payloads (Shopify orders name the variant id, levels the inventory item id).
    CatalogEntry {
        item: String,
        aliases: Vec<String>,
        sku: Option<String>,
        title: Option<String>,
        at: i64,
    },
    /// `item` left the catalog at `at` (deleted, listing closed, tracking turned off; `reason`
    /// says which): it raises no alert until the platform reports it again with a newer event
    /// time. Its history stays.
    Removed {
        item: String,
        reason: String,
        at: i64,
    },
    /// The items (variants) of `product` as of `at`: those it had before and no longer lists
    /// were removed from the catalog. An empty list: the product was deleted.
    ProductVariants {
        product: String,
        items: Vec<String>,
        at: i64,
    },
    /// The name the seller gave `location` where `item` is stocked (catalog import and sync),
    /// so its alerts name the place, not an id.
    LocationName {
        item: String,
        location: String,
        name: String,
        at: i64,
    },
    /// A complete snapshot (catalog sync) lists every location holding `item`'s stock as of `at`:
    /// a level held at any other location and older than `at` is no longer counted (kept as
    /// `None`, history intact). It clears a level left under a key the platform no longer
    /// reports (an FBA pool now counted at another marketplace, a channel since recoded).
    StockedAt {
        item: String,
        locations: Vec<String>,
        at: i64,
    },
    /// `quantity` units of `item` sold in `order` (line `line`) at `at`. A negative quantity is a
    /// return.
    Sale {
        item: String,
        quantity: i64,
        order: String,
        line: String,
        at: i64,
    },
}

/// `$body` with `$at` bound to the event time of whichever variant `$fact` is: the one list of
/// the variants that carry it (all of them).
macro_rules! with_at {
    ($fact:expr, $at:ident => $body:expr) => {
        match $fact {
            Fact::InventoryLevel { $at, .. }
            | Fact::CatalogEntry { $at, .. }
            | Fact::Sale { $at, .. }
            | Fact::Removed { $at, .. }
            | Fact::ProductVariants { $at, .. }
            | Fact::StockedAt { $at, .. }
            | Fact::LocationName { $at, .. } => $body,
        }
    };
}

impl Fact {
    /// The platform's event time.
    pub fn at(&self) -> i64 {
        with_at!(self, at => *at)
    }

    /// The event time, to correct (a clock far in the future: [`crate::plausible`]).
    pub fn at_mut(&mut self) -> &mut i64 {
        with_at!(self, at => at)
    }
}

/// The adapter's reading of one event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Normalized {
    /// The topic as the platform names it (`products/update`, `ORDER_CHANGE`, ...).
    pub topic: String,
    pub facts: Vec<Fact>,
    /// True when the topic is one stockhook does not act on: acknowledged and counted, not failed.
    pub ignored: bool,
}

/// Why a payload could not be read. Every variant is permanent: the same bytes will fail the same
/// way, so the event is dead-lettered at once with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body is not valid XML: {0}")]
    NotXml(String),
    #[error("topic {topic}: missing required field `{field}`")]
    MissingField { topic: String, field: String },
    #[error("topic {topic}: field `{field}` {problem}")]
    BadField {
        topic: String,
        field: String,
        problem: String,
    },
    #[error("no topic: {0}")]
    NoTopic(String),
}

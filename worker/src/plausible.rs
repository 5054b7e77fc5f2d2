//! What an event's facts may claim, checked before the rules see them, so that one wrong
//! timestamp or quantity can never silence an item (issue 20):
//!
//! * an event time later than the moment the receiver accepted the event, beyond
//!   `[events] future_tolerance`, is a wrong clock: the fact is applied at the accepted time
//!   (the original stays in the stored payload), and the event is counted and logged;
//! * a quantity outside `[events] min_quantity ..= max_quantity` is refused, that fact alone:
//!   the rest of the event applies and the event is dead-lettered naming the field.
//!
//! Pure functions: the state engine applies what [`check`] keeps (on both backends, in dry runs
//! too) and the pipeline dead-letters what it refused, from the same answer.

use crate::facts::Fact;
use std::collections::HashMap;
use std::sync::Mutex;
use stockhook_shared::config::EventsConfig;

/// The limits from `[events]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLimits {
    pub future_tolerance_ms: i64,
    pub max_quantity: i64,
    pub min_quantity: i64,
}

impl Default for EventLimits {
    fn default() -> Self {
        EventLimits::from_config(&EventsConfig::default())
    }
}

impl EventLimits {
    pub fn from_config(c: &EventsConfig) -> EventLimits {
        EventLimits {
            future_tolerance_ms: c.future_tolerance.get().as_millis() as i64,
            max_quantity: c.max_quantity,
            min_quantity: c.min_quantity,
        }
    }
}

/// What checking one event's facts found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// The facts to apply, by their index in the event, times clamped.
    pub facts: Vec<(u32, Fact)>,
    /// How far the furthest event time was ahead of the accepted time, when it was clamped.
    pub future_by_ms: Option<i64>,
    /// The refused facts, by index, each with a message naming the field, value and limit.
    pub refused: Vec<(u32, String)>,
}

/// Checks an event's facts against the time the receiver accepted it (`accepted_at`, Unix ms).
pub fn check(facts: &[Fact], accepted_at: i64, limits: &EventLimits) -> Checked {
    let mut out = Checked::default();
    let latest = accepted_at.saturating_add(limits.future_tolerance_ms);
    for (i, fact) in facts.iter().enumerate() {
        if let Some(why) = refusal(fact, limits) {
            let why = format!("fact {} ({}): {why}", i + 1, describe(fact));
            out.refused.push((i as u32, why));
            continue;
        }
        let mut fact = fact.clone();
        let at = fact.at_mut();
        if *at > latest {
            let ahead = *at - accepted_at;
            out.future_by_ms = Some(out.future_by_ms.map_or(ahead, |a: i64| a.max(ahead)));
            *at = accepted_at;
        }
        out.facts.push((i as u32, fact));
    }
    out
}

fn refusal(fact: &Fact, l: &EventLimits) -> Option<String> {
    let (field, value) = match fact {
        Fact::InventoryLevel {
            available: Some(n), ..
        } => ("available", *n),
        Fact::Sale { quantity, .. } => ("quantity", *quantity),
        _ => return None,
    };
    if value > l.max_quantity {
        Some(format!(
            "field `{field}` = {value} is above the plausible ceiling {} ([events] max_quantity)",
            l.max_quantity
        ))
    } else if value < l.min_quantity {
        Some(format!(
            "field `{field}` = {value} is below the plausible floor {} ([events] min_quantity)",
            l.min_quantity
        ))
    } else {
        None
    }
}

/// The fact's kind and item id: ids only, never customer data.
fn describe(fact: &Fact) -> String {
    match fact {
        Fact::InventoryLevel { item, .. } => format!("level of item {item}"),
        Fact::CatalogEntry { item, .. } => format!("catalog entry of item {item}"),
        Fact::Sale { item, order, .. } => format!("sale of item {item} in order {order}"),
        Fact::Removed { item, .. } => format!("removal of item {item}"),
        Fact::ProductVariants { product, .. } => format!("variants of product {product}"),
        Fact::StockedAt { item, .. } => format!("locations of item {item}"),
        Fact::LocationName { item, location, .. } => {
            format!("name of location {location} of item {item}")
        }
    }
}

/// How long a platform keeps retrying a delivery (docs in /work/shared/PLATFORMS.md): an event
/// time older than an item's first sighting by more than this is history being replayed.
pub fn retry_window_ms(platform: &str) -> i64 {
    const HOUR: i64 = 3_600_000;
    match platform {
        // 8 retries over 4 hours since 2024-09.
        "shopify" => 4 * HOUR,
        // EventBridge API destinations retry for 24 hours.
        "amazon" => 24 * HOUR,
        // eBay and the others publish no window: two days.
        _ => 48 * HOUR,
    }
}

/// Logs a clamped future timestamp at most once per source per hour: the source and the offset,
/// nothing else.
pub fn log_future(source: &str, ahead_by_ms: i64, now_ms: i64) {
    static LAST: Mutex<Option<HashMap<String, i64>>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let seen = last.get_or_insert_with(HashMap::new);
    if seen
        .get(source)
        .is_some_and(|t| now_ms - t < 3_600_000 && now_ms >= *t)
    {
        return;
    }
    seen.insert(source.to_string(), now_ms);
    tracing::warn!(
        source,
        ahead_by_s = ahead_by_ms / 1000,
        "event time ahead of the time the receiver accepted it: using the accepted time (a sender's clock or time zone is wrong; counted in events.future_timestamps)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(n: i64, at: i64) -> Fact {
        Fact::InventoryLevel {
            item: "1".into(),
            location: "l".into(),
            available: Some(n),
            at,
        }
    }

    #[test]
    fn future_times_are_clamped_beyond_the_tolerance_only() {
        let l = EventLimits::default();
        let now = 1_000_000_000;
        let c = check(
            &[level(1, now + 60_000), level(2, now + 3_600_000)],
            now,
            &l,
        );
        assert_eq!(
            c.facts[0].1.at(),
            now + 60_000,
            "one minute of skew is ordinary"
        );
        assert_eq!(c.facts[1].1.at(), now);
        assert_eq!(c.future_by_ms, Some(3_600_000));
        assert!(c.refused.is_empty());
    }

    #[test]
    fn absurd_quantities_are_refused_naming_the_field_and_the_rest_kept() {
        let l = EventLimits::default();
        let sale = Fact::Sale {
            item: "9".into(),
            quantity: -5_000_000_000,
            order: "o".into(),
            line: "1".into(),
            at: 1,
        };
        let c = check(&[level(5_000_000_000, 1), level(3, 1), sale], 10, &l);
        assert_eq!(c.facts.len(), 1);
        assert_eq!(c.facts[0].0, 1, "indices stay those of the event");
        assert_eq!(c.refused.len(), 2);
        assert_eq!((c.refused[0].0, c.refused[1].0), (0, 2));
        assert!(
            c.refused[0].1.contains("`available` = 5000000000"),
            "{:?}",
            c.refused
        );
        assert!(
            c.refused[1].1.contains("`quantity` = -5000000000"),
            "{:?}",
            c.refused
        );
    }
}

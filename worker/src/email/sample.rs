//! The three-item digest the README's screenshot shows (docs/email-digest.png), also rendered in
//! headless Chromium by the tests: one item per rule a seller meets most, across two platforms,
//! with one untitled item, and one item whose drop raised two alerts (shown once).

use super::Stores;
use crate::alert::{Alert, Rule};

/// Wed 1 May 2024, 12:00 UTC.
const AT: i64 = 1_714_564_800_000;

fn alert(rule: Rule, source: &str, platform: &str, item: &str) -> Alert {
    Alert {
        id: Alert::make_id(rule, source, item, 1),
        rule,
        source: source.into(),
        platform: platform.into(),
        item: item.into(),
        sku: None,
        title: None,
        location: Some("all".into()),
        location_name: None,
        available: None,
        previous: None,
        threshold: Some(5),
        quiet_since: None,
        quiet_days: None,
        at: AT,
        created_at: AT + 60_000,
        recipients: vec!["seller@example.com".into()],
        cover: None,
    }
}

/// `a` for a titled item whose level at `location` dropped from `previous` to `available`.
fn dropped(
    mut a: Alert,
    (title, sku): (&str, &str),
    location: &str,
    (previous, available): (i64, i64),
) -> Alert {
    a.title = Some(title.into());
    a.sku = Some(sku.into());
    a.location = Some(location.into());
    a.previous = Some(previous);
    a.available = Some(available);
    a
}

/// Out of stock (Shopify), low stock and reorder soon (one Amazon FBA item, UK) and an untitled
/// low-stock item (Shopify): four alerts, three items.
pub fn digest() -> Vec<Alert> {
    let tee = dropped(
        alert(Rule::OutOfStock, "acme-shop", "shopify", "46208873541698"),
        ("Organic Cotton T-Shirt - Blue / L", "TS-BLU-L"),
        "24826418",
        (3, 0),
    );
    let mut mug = dropped(
        alert(Rule::LowStock, "acme-amazon", "amazon", "MUG-11OZ-WHT"),
        ("Enamel Camp Mug 11oz - White", "MUG-11OZ-WHT"),
        "fba:A1F83G8C2ARO7P",
        (9, 2),
    );
    mug.at = AT - 3 * 3_600_000;
    // The same drop (9 to 2) also took it below its reorder point: one line, one card.
    let mut mug_cover = mug.clone();
    mug_cover.rule = Rule::Cover;
    mug_cover.id = Alert::make_id(Rule::Cover, "acme-amazon", "MUG-11OZ-WHT", 1);
    mug_cover.threshold = None;
    mug_cover.cover = Some(crate::cover::CoverView {
        velocity_per_day: 1.5,
        days_of_cover: 1.3,
        stockout_date: mug.at + 31 * 3_600_000,
        reorder_qty: 30,
        cover_days: 14,
        reorder_point: 27,
    });

    let mut untitled = alert(Rule::LowStock, "acme-shop", "shopify", "46208873541699");
    untitled.available = Some(4);
    untitled.previous = Some(6);
    untitled.at = AT - 25 * 60_000;

    vec![mug, mug_cover, untitled, tee]
}

/// A cover alert (issue 15): 38 wraps left selling 4.2 a day, lead time 14 days.
pub fn cover() -> Alert {
    let mut wraps = alert(Rule::Cover, "acme-shop", "shopify", "46208873541700");
    wraps.title = Some("Beeswax Food Wraps - 3 Pack".into());
    wraps.sku = Some("WRAP-3PK".into());
    wraps.available = Some(38);
    wraps.threshold = None;
    wraps.cover = Some(crate::cover::CoverView {
        velocity_per_day: 4.2,
        days_of_cover: 9.0,
        stockout_date: AT + 9 * 86_400_000 + 3_600_000,
        reorder_qty: 51,
        cover_days: 14,
        reorder_point: 66,
    });
    wraps
}

/// The store address the sample's links use, and its warehouse's name.
pub fn stores() -> Stores {
    Stores::default()
        .with("acme-shop", "acme-shop.myshopify.com")
        .with_location("acme-shop", "24826418", "Main warehouse")
}

//! What an alert email says: its subject, the facts shown for each item, and both bodies.
//!
//! Why it exists: the email is read by a seller on a phone, who must see at once what ran low,
//! where, how far it fell, and where to tap to act. The plain-text part is the reference: the
//! HTML part shows the same facts from the same [`facts`] list, laid out as tables with inline
//! styles and no external images, so common mail clients render it alike.
//!
//! Items are shown most urgent first: out of stock, then low stock (fewest left first), then
//! reorder soon, then low stock across channels, then no sales. One level change can raise
//! several alerts for one item (a sharp drop: out of stock, low stock and reorder soon): the
//! email shows that item once ([`Item`]), led by its most severe state, with the other alerts'
//! facts on the same line and card. The subject counts items; the alert ids (exactly-once
//! bookkeeping) stay one per alert. Rendering is pure: the same alerts give the same text.

use super::admin_links::{self, NextStep, Stores};
use crate::alert::{Alert, Rule};
use std::collections::{BTreeMap, BTreeSet};

/// The subject, plain-text part and HTML part for `alerts` (in any order, duplicates dropped).
pub fn bodies(alerts: &[Alert], stores: &Stores) -> (String, String, String) {
    let v = items(&order(alerts));
    let s = subject(&v);
    let text = text(&v, &s, stores);
    let html = html(&v, &s, stores);
    (s, text, html)
}

/// One item's alerts in one email, most severe first (never empty): shown as one line and one
/// card.
#[derive(Debug, Clone)]
pub struct Item<'a> {
    alerts: Vec<&'a Alert>,
}

impl<'a> Item<'a> {
    /// The most severe alert: it names the state, the headline and the next step.
    pub fn lead(&self) -> &'a Alert {
        self.alerts[0]
    }

    /// Every alert about the item, most severe first.
    pub fn alerts(&self) -> &[&'a Alert] {
        &self.alerts
    }

    /// The lead alert with what only the others know filled in (the cover figures, a
    /// threshold, the quiet days, a title or SKU the catalog added later).
    fn merged(&self) -> Alert {
        let mut m = self.lead().clone();
        for o in &self.alerts[1..] {
            m.title = m.title.or_else(|| o.title.clone());
            m.sku = m.sku.or_else(|| o.sku.clone());
            m.location_name = m.location_name.or_else(|| o.location_name.clone());
            m.threshold = m.threshold.or(o.threshold);
            m.quiet_since = m.quiet_since.or(o.quiet_since);
            m.quiet_days = m.quiet_days.or(o.quiet_days);
            m.cover = m.cover.or_else(|| o.cover.clone());
        }
        m
    }

    fn has(&self, rule: Rule) -> bool {
        self.alerts.iter().any(|a| a.rule == rule)
    }
}

/// `ordered` (from [`order`]) grouped by item (source and platform id): each item at its most
/// severe alert's place, its alerts in the same order.
pub fn items<'a>(ordered: &[&'a Alert]) -> Vec<Item<'a>> {
    let mut at: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut out: Vec<Item<'a>> = Vec::new();
    for a in ordered {
        match at.get(&(a.source.as_str(), a.item.as_str())) {
            Some(&i) => out[i].alerts.push(a),
            None => {
                at.insert((a.source.as_str(), a.item.as_str()), out.len());
                out.push(Item { alerts: vec![a] });
            }
        }
    }
    out
}

/// Lower is more urgent.
fn urgency(rule: Rule) -> u8 {
    match rule {
        Rule::OutOfStock => 0,
        Rule::LowStock => 1,
        Rule::Cover => 2,
        Rule::CombinedLowStock => 3,
        Rule::NoSales => 4,
    }
}

/// Unique by id, most urgent first (rule, then fewest available, then source, name, item, id).
pub fn order(alerts: &[Alert]) -> Vec<&Alert> {
    let mut by_id: BTreeMap<&str, &Alert> = BTreeMap::new();
    for a in alerts {
        by_id.entry(a.id.as_str()).or_insert(a);
    }
    let mut v: Vec<(String, &Alert)> = by_id.into_values().map(|a| (name(a), a)).collect();
    v.sort_by(|(na, a), (nb, b)| {
        let key = |a: &Alert| (urgency(a.rule), a.available.unwrap_or(i64::MAX));
        (key(a), &a.source, na, &a.item, &a.id).cmp(&(key(b), &b.source, nb, &b.item, &b.id))
    });
    v.into_iter().map(|(_, a)| a).collect()
}

/// The item as a seller knows it: its title, else described in words (never a bare id).
pub fn name(a: &Alert) -> String {
    match a.title.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => t.to_string(),
        None => admin_links::untitled(a),
    }
}

fn days_quiet(a: &Alert) -> Option<i64> {
    match a.quiet_since {
        Some(since) if a.at >= since => Some((a.at - since) / 86_400_000),
        _ => a.quiet_days.map(i64::from),
    }
}

fn plural(n: i64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// One item's headline: "Low stock: Organic Cotton T-Shirt - Blue / L, 2 left".
pub fn headline(a: &Alert) -> String {
    let n = name(a);
    match a.rule {
        Rule::OutOfStock => format!("Out of stock: {n}"),
        Rule::LowStock | Rule::CombinedLowStock => match a.available {
            Some(left) => format!("{}: {n}, {left} left", a.rule.title()),
            None => format!("{}: {n}", a.rule.title()),
        },
        Rule::NoSales => match days_quiet(a) {
            Some(d) => format!("No sales in {}: {n}", plural(d, "day", "days")),
            None => format!("No sales: {n}"),
        },
        Rule::Cover => match &a.cover {
            Some(c) => format!("Reorder soon: {n}, {} left", days_words(c.days_of_cover)),
            None => format!("Reorder soon: {n}"),
        },
    }
}

/// An item's line: the lead alert's headline, then what the other alerts add, e.g.
/// "Low stock: Tee, 3 left, about 2 days of cover, reorder 40".
pub fn item_headline(item: &Item) -> String {
    let lead = item.lead();
    let mut line = headline(&item.merged());
    for o in &item.alerts()[1..] {
        let extra = match o.rule {
            // Out of stock and low stock say the same thing as the lead, louder.
            Rule::OutOfStock | Rule::LowStock => None,
            Rule::Cover => o.cover.as_ref().and_then(|c| {
                // Out of stock, there is no cover left to speak of: only what to order.
                let cover = (lead.rule != Rule::OutOfStock)
                    .then(|| format!("{} of cover, ", days_words(c.days_of_cover)));
                (lead.rule != Rule::Cover)
                    .then(|| format!("{}reorder {}", cover.unwrap_or_default(), c.reorder_qty))
            }),
            Rule::CombinedLowStock => Some("low across channels".to_string()),
            Rule::NoSales => Some(match days_quiet(o) {
                Some(d) => format!("no sales in {}", plural(d, "day", "days")),
                None => "no sales".to_string(),
            }),
        };
        if let Some(extra) = extra.filter(|_| o.rule != lead.rule) {
            line.push_str(", ");
            line.push_str(&extra);
        }
    }
    line
}

/// "about 9 days", "less than a day".
fn days_words(days: f64) -> String {
    if days < 1.0 {
        return "less than a day".into();
    }
    format!("about {}", plural(days.floor() as i64, "day", "days"))
}

/// "2.5 a day", "1 a day", "0.14 a day".
fn rate_words(per_day: f64) -> String {
    let s = format!("{per_day:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s} a day")
}

/// One item: its headline and store. Several: how many items, and the most urgent one.
pub fn subject(alerts: &[Item]) -> String {
    let sources: BTreeSet<&str> = alerts.iter().map(|a| a.lead().source.as_str()).collect();
    let place = match sources.iter().next() {
        Some(only) if sources.len() == 1 => only.to_string(),
        _ => format!("{} stores", sources.len()),
    };
    match alerts {
        [] => format!("Stock alerts ({place})"),
        [one] => format!("{} ({place})", item_headline(one)),
        [first, rest @ ..] => format!(
            "{} stock alerts ({place}): {} and {} more",
            alerts.len(),
            item_headline(first),
            rest.len()
        ),
    }
}

/// A readable time with its timezone: "Wed 1 May 2024, 12:00 UTC".
pub fn readable_time(ms: i64) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short] [day padding:none] [month repr:short] [year], [hour]:[minute] UTC"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| super::rfc3339(ms))
}

fn date_only(ms: i64) -> String {
    let format = time::macros::format_description!("[day padding:none] [month repr:short] [year]");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| super::rfc3339(ms))
}

/// The label/value lines shown for one item (every alert's facts, once), in order, shared by
/// both bodies.
pub fn facts(item: &Item, stores: &Stores) -> Vec<(&'static str, String)> {
    let merged = item.merged();
    let a = &merged;
    let mut f = Vec::new();
    if let Some(sku) = &a.sku {
        f.push(("SKU", sku.clone()));
    }
    f.push(("Store", admin_links::store_words(a)));
    if let Some(loc) = admin_links::location_words(a, stores) {
        f.push(("Location", loc));
    }
    if let Some(n) = a.available {
        f.push(("Available", n.to_string()));
    }
    match (a.rule, a.previous) {
        (_, Some(p)) => f.push(("Before", p.to_string())),
        // The item's first level report (or an outbox entry written before levels were kept).
        (Rule::LowStock | Rule::OutOfStock, None) => {
            f.push(("Before", "not reported before".into()))
        }
        _ => {}
    }
    if let Some(t) = a.threshold {
        f.push(("Threshold", t.to_string()));
    }
    // Days of cover (issue 15): what sells, when it runs out, what to order.
    if let Some(c) = &a.cover {
        f.push(("Selling", rate_words(c.velocity_per_day)));
        f.push((
            "Runs out",
            format!(
                "{} ({})",
                date_only(c.stockout_date),
                days_words(c.days_of_cover)
            ),
        ));
        f.push(("Lead time", plural(i64::from(c.cover_days), "day", "days")));
        f.push(("Reorder", format!("{} units", c.reorder_qty)));
    }
    if item.has(Rule::NoSales) {
        let since = match a.quiet_since {
            Some(since) => format!("no sale since {}", date_only(since)),
            None => "no sale".into(),
        };
        let days = days_quiet(a)
            .map(|d| format!(" ({})", plural(d, "day", "days")))
            .unwrap_or_default();
        f.push(("Sales", format!("{since}{days}")));
    }
    f.push(("When", readable_time(a.at)));
    // The platform's own id, for support and the operator's CLI (never the item's name).
    f.push(("Item id", format!("{} ({})", a.item, a.platform)));
    f
}

const LABEL_WIDTH: usize = 11;

/// The plain-text part: the reference every other rendering follows.
pub fn text(alerts: &[Item], subject: &str, stores: &Stores) -> String {
    let mut out = format!("{subject}\n\n");
    for (i, item) in alerts.iter().enumerate() {
        let merged = item.merged();
        let a = &merged;
        out.push_str(&format!("{}. {}\n", i + 1, item_headline(item)));
        for (label, value) in facts(item, stores) {
            out.push_str(&format!(
                "   {:<LABEL_WIDTH$} {value}\n",
                format!("{label}:")
            ));
        }
        let NextStep { text, link } = admin_links::next_step(a, stores);
        out.push_str(&format!("   {:<LABEL_WIDTH$} {text}\n", "Next step:"));
        if let Some(link) = link {
            out.push_str(&format!("   {:<LABEL_WIDTH$} {link}\n", ""));
        }
        out.push('\n');
    }
    out.push_str("-- \nSent by stockhook.\nAlert ids: ");
    out.push_str(&alert_ids(alerts).join(" "));
    out.push('\n');
    out
}

/// Every alert's id, item by item: one per alert, as the outbox counts them.
fn alert_ids<'a>(alerts: &[Item<'a>]) -> Vec<&'a str> {
    alerts
        .iter()
        .flat_map(|i| i.alerts().iter().map(|a| a.id.as_str()))
        .collect()
}

pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The HTML part's heading: the one item's headline, or how many items need attention.
fn heading(alerts: &[Item]) -> String {
    match alerts {
        [one] => item_headline(one),
        _ => format!("{} items need attention", alerts.len()),
    }
}

/// The badge colour (background, text) for a rule.
fn colours(rule: Rule) -> (&'static str, &'static str) {
    match rule {
        Rule::OutOfStock => ("#b42318", "#ffffff"),
        Rule::LowStock | Rule::CombinedLowStock => ("#b54708", "#ffffff"),
        Rule::NoSales => ("#475467", "#ffffff"),
        Rule::Cover => ("#175cd3", "#ffffff"),
    }
}

const FONT: &str = "font-family: -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif";

/// The HTML part: one card per item, tables and inline styles only, fits a 320 px screen.
pub fn html(alerts: &[Item], subject: &str, stores: &Stores) -> String {
    let e = escape_html;
    let mut out = format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n</head>\n\
         <body style=\"margin: 0; padding: 0; background: #f2f4f7; {FONT}\">\n\
         <table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" \
         style=\"background: #f2f4f7\">\n<tr><td align=\"center\" style=\"padding: 12px 8px\">\n\
         <table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" \
         style=\"max-width: 600px\">\n",
        e(subject)
    );
    out.push_str(&format!(
        "<tr><td style=\"padding: 4px 4px 12px; font-size: 18px; line-height: 24px; \
         font-weight: bold; color: #101828\">{}</td></tr>\n",
        e(&heading(alerts))
    ));
    for item in alerts {
        let merged = item.merged();
        let a = &merged;
        out.push_str(
            "<tr><td style=\"padding: 0 0 12px\">\n\
             <table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" \
             style=\"background: #ffffff; border: 1px solid #d0d5dd; border-radius: 8px\">\n",
        );
        // One badge per state, the most severe first.
        let badges: Vec<String> = item
            .alerts()
            .iter()
            .map(|o| {
                let (bg, fg) = colours(o.rule);
                format!(
                    "<span style=\"display: inline-block; background: {bg}; color: {fg}; \
                     font-size: 12px; font-weight: bold; padding: 2px 8px; margin: 0 4px 4px 0; \
                     border-radius: 10px\">{}</span>",
                    e(o.rule.title())
                )
            })
            .collect();
        out.push_str(&format!(
            "<tr><td colspan=\"2\" style=\"padding: 12px 12px 0\">{}</td></tr>\n\
             <tr><td colspan=\"2\" style=\"padding: 4px 12px 8px; font-size: 17px; \
             line-height: 22px; font-weight: bold; color: #101828\">{}</td></tr>\n",
            badges.join(""),
            e(&name(a))
        ));
        for (label, value) in facts(item, stores) {
            // The level is what the seller came for: it stands out.
            let weight = if label == "Available" {
                "font-weight: bold; "
            } else {
                ""
            };
            out.push_str(&format!(
                "<tr><td style=\"padding: 3px 8px 3px 12px; font-size: 14px; color: #667085; \
                 white-space: nowrap; vertical-align: top; width: 1%\">{}</td>\
                 <td style=\"padding: 3px 12px 3px 0; font-size: 14px; color: #101828; \
                 {weight}word-break: break-word\">{}</td></tr>\n",
                e(label),
                e(&value)
            ));
        }
        let NextStep { text, link } = admin_links::next_step(a, stores);
        match link {
            Some(url) => out.push_str(&format!(
                "<tr><td colspan=\"2\" style=\"padding: 10px 12px 14px\">\
                 <table role=\"presentation\" cellpadding=\"0\" cellspacing=\"0\"><tr>\
                 <td style=\"background: #1570ef; border-radius: 6px\">\
                 <a href=\"{}\" style=\"display: inline-block; padding: 10px 16px; \
                 font-size: 15px; font-weight: bold; color: #ffffff; text-decoration: none\">{} \
                 &rarr;</a></td></tr></table></td></tr>\n",
                e(&url),
                e(&text)
            )),
            None => out.push_str(&format!(
                "<tr><td colspan=\"2\" style=\"padding: 8px 12px 14px; font-size: 14px; \
                 color: #101828\"><b>Next step:</b> {}</td></tr>\n",
                e(&text)
            )),
        }
        out.push_str("</table>\n</td></tr>\n");
    }
    let ids: Vec<String> = alert_ids(alerts).into_iter().map(e).collect();
    out.push_str(&format!(
        "<tr><td style=\"padding: 4px; font-size: 12px; color: #667085\">Sent by stockhook. \
         Alert ids: {}</td></tr>\n",
        ids.join(" ")
    ));
    out.push_str("</table>\n</td></tr>\n</table>\n</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wed 1 May 2024, 12:00 UTC.
    const AT: i64 = 1_714_564_800_000;

    fn tshirt() -> Alert {
        let mut a = crate::alert::test_alert(Rule::LowStock, "acme-shop", "46208873541699");
        a.title = Some("Organic Cotton T-Shirt – Blue / L".into());
        a.sku = Some("TS-BLU-L".into());
        a.location = Some("24826418".into());
        a.available = Some(2);
        a.previous = Some(7);
        a.at = AT;
        a
    }

    fn stores() -> Stores {
        Stores::default().with("acme-shop", "acme-shop.myshopify.com")
    }

    fn bodies(alerts: &[Alert]) -> (String, String, String) {
        let v = items(&order(alerts));
        let s = subject(&v);
        (text(&v, &s, &stores()), html(&v, &s, &stores()), s)
    }

    #[test]
    fn one_item_subject_names_the_product() {
        let a = tshirt();
        assert_eq!(
            subject(&items(&[&a])),
            "Low stock: Organic Cotton T-Shirt – Blue / L, 2 left (acme-shop)"
        );
        let mut out = a.clone();
        out.rule = Rule::OutOfStock;
        out.available = Some(0);
        assert_eq!(
            subject(&items(&[&out])),
            "Out of stock: Organic Cotton T-Shirt – Blue / L (acme-shop)"
        );
        let mut quiet = a.clone();
        quiet.rule = Rule::NoSales;
        quiet.quiet_since = Some(AT - 61 * 86_400_000);
        assert_eq!(
            subject(&items(&[&quiet])),
            "No sales in 61 days: Organic Cotton T-Shirt – Blue / L (acme-shop)"
        );
    }

    #[test]
    fn several_items_subject_counts_and_leads_with_the_most_urgent() {
        let mut quiet = tshirt();
        quiet.id = "q".into();
        quiet.rule = Rule::NoSales;
        quiet.title = Some("Mug".into());
        quiet.item = "mug".into();
        let mut low = tshirt();
        low.id = "l".into();
        let mut out = tshirt();
        out.id = "o".into();
        out.item = "tote".into();
        out.rule = Rule::OutOfStock;
        out.title = Some("Canvas Tote".into());
        out.available = Some(0);
        // Whatever the input order: out of stock before low stock before no sales.
        let all = [quiet.clone(), low.clone(), out.clone()];
        let v = order(&all);
        assert_eq!(
            v.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["o", "l", "q"]
        );
        assert_eq!(
            subject(&items(&v)),
            "3 stock alerts (acme-shop): Out of stock: Canvas Tote and 2 more"
        );
        let two = [quiet.clone(), low.clone()];
        let v = order(&two);
        assert_eq!(
            subject(&items(&v)),
            "2 stock alerts (acme-shop): Low stock: Organic Cotton T-Shirt – Blue / L, 2 left and 1 more"
        );
        quiet.source = "acme-amazon".into();
        let two = [quiet, low];
        assert!(subject(&items(&order(&two))).starts_with("2 stock alerts (2 stores): Low stock"));
    }

    #[test]
    fn each_item_shows_every_fact_in_both_bodies() {
        let a = tshirt();
        let (text, html, _) = bodies(std::slice::from_ref(&a));
        for needle in [
            "Organic Cotton T-Shirt – Blue / L",
            "TS-BLU-L",
            "acme-shop (Shopify)",
            "Shopify location 24826418",
            "Available",
            "Before",
            "Threshold",
            "Wed 1 May 2024, 12:00 UTC",
            "Open it in Shopify admin",
            "https://acme-shop.myshopify.com/admin/products/inventory?query=TS-BLU-L",
            &a.id,
        ] {
            assert!(
                text.contains(needle),
                "plain text lacks {needle:?}:\n{text}"
            );
            assert!(html.contains(needle), "HTML lacks {needle:?}:\n{html}");
        }
        assert!(text.contains("   Available:  2\n"), "{text}");
        assert!(text.contains("   Before:     7\n"), "{text}");
        assert!(text.contains("   Threshold:  5\n"), "{text}");
        assert!(
            text.contains("   Item id:    46208873541699 (shopify)\n"),
            "{text}"
        );
        assert!(
            html.contains(
                "href=\"https://acme-shop.myshopify.com/admin/products/inventory?query=TS-BLU-L\""
            ),
            "{html}"
        );
        // A level with no earlier report says so, rather than a number it does not know.
        let mut first = a.clone();
        first.previous = None;
        let (text, _, _) = bodies(&[first]);
        assert!(text.contains("Before:     not reported before"), "{text}");
    }

    #[test]
    fn html_is_phone_ready_with_no_external_resources() {
        let (_, html, _) = bodies(&[tshirt()]);
        assert!(html.contains("name=\"viewport\""), "{html}");
        assert!(html.contains("max-width: 600px"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<style"), "inline styles only: {html}");
        assert!(!html.contains("<link"), "{html}");
        assert!(!html.contains("src="), "{html}");
        assert_eq!(
            html.matches("<table").count(),
            html.matches("</table>").count()
        );
    }

    #[test]
    fn an_untitled_item_is_described_in_words() {
        let mut a = tshirt();
        a.title = None;
        a.sku = None;
        let (text, html, subject) = bodies(&[a]);
        let words = "untitled item (Shopify inventory item 46208873541699)";
        assert_eq!(subject, format!("Low stock: {words}, 2 left (acme-shop)"));
        assert!(
            text.contains(&format!("1. Low stock: {words}, 2 left")),
            "{text}"
        );
        assert!(html.contains(words), "{html}");
    }

    #[test]
    fn no_sales_shows_since_and_days() {
        let mut a = tshirt();
        a.rule = Rule::NoSales;
        a.available = Some(12);
        a.previous = None;
        a.threshold = None;
        a.quiet_since = Some(AT - 61 * 86_400_000); // 1 Mar 2024
        a.quiet_days = Some(60);
        let (text, html, _) = bodies(&[a.clone()]);
        for body in [&text, &html] {
            assert!(
                body.contains("no sale since 1 Mar 2024 (61 days)"),
                "{body}"
            );
            assert!(!body.contains("Threshold"), "{body}");
            assert!(!body.contains("Before"), "{body}");
        }
        a.quiet_since = None;
        let (text, _, _) = bodies(&[a]);
        assert!(text.contains("no sale (60 days)"), "{text}");
    }

    #[test]
    fn cover_shows_rate_stockout_date_and_what_to_order() {
        let a = super::super::sample::cover();
        let (text, html, subject) = bodies(&[a]);
        assert_eq!(
            subject,
            "Reorder soon: Beeswax Food Wraps - 3 Pack, about 9 days left (acme-shop)"
        );
        for line in [
            "Available:  38",
            "Selling:    4.2 a day",
            "Runs out:   10 May 2024 (about 9 days)",
            "Lead time:  14 days",
            "Reorder:    51 units",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(!text.contains("Threshold"), "{text}");
        assert!(
            html.contains("51 units") && html.contains("10 May 2024"),
            "{html}"
        );
        assert_eq!(days_words(0.4), "less than a day");
        assert_eq!(rate_words(0.5), "0.5 a day");
        assert_eq!(rate_words(3.0), "3 a day");
    }

    /// A sharp drop (7 to 3) raised low stock and reorder soon for the tee: one alert each.
    fn sharp_drop() -> [Alert; 2] {
        let mut low = tshirt();
        low.available = Some(3);
        let mut cover = super::super::sample::cover();
        cover.source = low.source.clone();
        cover.item = low.item.clone();
        cover.id = crate::alert::Alert::make_id(Rule::Cover, &low.source, &low.item, 1);
        cover.available = Some(3);
        cover.previous = Some(7);
        cover.title = None; // the catalog named it after the cover alert was made
        cover.cover = Some(crate::cover::CoverView {
            velocity_per_day: 1.6,
            days_of_cover: 2.1,
            stockout_date: AT + 2 * 86_400_000,
            reorder_qty: 40,
            cover_days: 14,
            reorder_point: 30,
        });
        [cover, low]
    }

    #[test]
    fn one_item_with_several_alerts_is_one_line_led_by_the_most_severe() {
        let [cover, low] = sharp_drop();
        let (text, html, subject) = bodies(&[cover.clone(), low.clone()]);
        let line = "Low stock: Organic Cotton T-Shirt – Blue / L, 3 left, about 2 days of cover, reorder 40";
        assert_eq!(subject, format!("{line} (acme-shop)"));
        assert!(text.contains(&format!("1. {line}\n")), "{text}");
        assert!(!text.contains("2. "), "one item, one entry: {text}");
        // Every fact once, from both alerts: the threshold and the cover figures.
        for fact in [
            "   Available:  3\n",
            "   Before:     7\n",
            "   Threshold:  5\n",
            "   Selling:    1.6 a day\n",
            "   Reorder:    40 units\n",
        ] {
            assert_eq!(text.matches(fact).count(), 1, "{fact:?} once in {text}");
        }
        assert_eq!(
            text.matches("Organic Cotton").count(),
            2,
            "subject and line: {text}"
        );
        // Both alert ids stay listed: each is delivered (and counted) once.
        for body in [&text, &html] {
            assert!(body.contains(&low.id) && body.contains(&cover.id), "{body}");
        }
        assert_eq!(
            html.matches("Organic Cotton").count(),
            3,
            "title, heading, card: {html}"
        );
        assert!(
            html.find(">Low stock<").unwrap() < html.find(">Reorder soon<").unwrap(),
            "both badges, the most severe first: {html}"
        );
        assert_eq!(
            html.matches("Open it in Shopify admin").count(),
            1,
            "{html}"
        );

        // It went on to zero: out of stock leads, and what to order stays on its line.
        let mut out = tshirt();
        out.rule = Rule::OutOfStock;
        out.id = "o".into();
        out.available = Some(0);
        let mut other = tshirt();
        other.item = "2".into();
        other.id = "x".into();
        other.title = Some("Mug".into());
        let all = [low, cover, out, other];
        let (text, _, subject) = bodies(&all);
        assert_eq!(
            subject,
            "2 stock alerts (acme-shop): Out of stock: Organic Cotton T-Shirt – Blue / L, \
             reorder 40 and 1 more"
        );
        assert!(text.contains("   Available:  0\n"), "{text}");
        assert!(text.contains("2. Low stock: Mug, 2 left\n"), "{text}");
        assert!(!text.contains("3. "), "{text}");
        let ids = text.rsplit("Alert ids: ").next().unwrap();
        assert_eq!(ids.split_whitespace().count(), 4, "{ids}");
    }

    #[test]
    fn a_sum_across_channels_has_no_before_it_does_not_know() {
        let mut a = tshirt();
        a.rule = Rule::CombinedLowStock;
        a.platform = "all".into();
        a.previous = None;
        let (text, _, subject) = bodies(&[a]);
        assert!(!text.contains("Before:"), "{text}");
        assert!(
            subject.starts_with("Low stock across channels: "),
            "{subject}"
        );
    }

    #[test]
    fn html_escapes_every_value() {
        let mut a = tshirt();
        a.title = Some("<script>alert('x')</script> & \"co\"".into());
        a.sku = Some("<b>sku</b>".into());
        let (_, html, _) = bodies(&[a]);
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<b>sku"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;co&quot;"),
            "{html}"
        );
        // The SKU in the link is percent-encoded, then escaped.
        assert!(html.contains("query=%3Cb%3Esku%3C%2Fb%3E"), "{html}");
    }
}

//! Charts drawn on the server as inline SVG (no script, no external file): an item's stock over
//! time with its sales as bars, and a source's events per hour as a sparkline.
//!
//! Built with maud like the pages, so every value is escaped; coordinates are numbers only.
//!
//! The item chart's SVG holds shapes only and is stretched to the box the stylesheet gives it
//! (`preserveAspectRatio="none"`, strokes that do not scale): its axis values and dates are
//! HTML beside it, so they stay at the page's text size on a phone instead of shrinking with
//! the drawing.

use crate::state::history::History;
use maud::{html, Markup};

/// The plot's size in SVG units: the top edge is the highest value, the bottom edge 0, the
/// left and right edges the first and last times (the HTML labels sit at those edges).
const W: f64 = 640.0;
const H: f64 = 200.0;

/// Stock (a step line) and sales (bars) of one item over the span its history covers; `title`
/// starts its accessible description, which goes on with the span, the stock and the sales.
pub fn item_chart(h: &History, title: &str) -> Markup {
    let totals: Vec<(i64, i64)> = h
        .totals()
        .into_iter()
        .filter_map(|(t, v)| v.map(|v| (t, v)))
        .collect();
    let times = totals
        .iter()
        .map(|(t, _)| *t)
        .chain(h.sales.iter().map(|(t, _)| *t));
    let (Some(t0), Some(t1)) = (times.clone().min(), times.max()) else {
        return html! { p.muted { "No level reports or sales recorded yet." } };
    };
    let span = ((t1 - t0) as f64).max(1.0);
    let vmax = totals
        .iter()
        .map(|(_, v)| *v)
        .chain(h.sales.iter().map(|(_, u)| *u))
        .max()
        .unwrap_or(1)
        .max(1);
    let x = |t: i64| (t - t0) as f64 / span * W;
    let y = |v: i64| H - (v.max(0) as f64) / vmax as f64 * H;
    let mut path = String::new();
    for (i, (t, v)) in totals.iter().enumerate() {
        if i == 0 {
            path.push_str(&format!("M{:.1} {:.1}", x(*t), y(*v)));
        } else {
            path.push_str(&format!(" H{:.1} V{:.1}", x(*t), y(*v)));
        }
    }
    if let Some((_, v)) = totals.last() {
        path.push_str(&format!(" H{W:.1} V{:.1}", y(*v)));
    }
    let bar = (W / (h.sales.len().max(1) as f64 * 2.0)).clamp(2.0, 10.0);
    let (from, to) = (super::pages::date(t0), super::pages::date(t1));
    html! {
        figure.stock-chart {
            div.y-axis aria-hidden="true" { span { (vmax) } span { "0" } }
            svg.chart role="img" viewBox={"0 0 " (W) " " (H)} preserveAspectRatio="none" aria-labelledby="chart-title" {
                title #chart-title { (summary(title, &from, &to, &totals, h)) }
                line.axis x1="0" y1=(H) x2=(W) y2=(H) vector-effect="non-scaling-stroke" {}
                line.axis x1="0" y1="0" x2="0" y2=(H) vector-effect="non-scaling-stroke" {}
                @for (t, u) in &h.sales {
                    @if *u > 0 {
                        rect.sale x=(format!("{:.1}", x(*t) - bar / 2.0)) y=(format!("{:.1}", y(*u)))
                            width=(format!("{bar:.1}")) height=(format!("{:.1}", H - y(*u))) {}
                    }
                }
                path.stock d=(path) vector-effect="non-scaling-stroke" {}
            }
            div.x-axis aria-hidden="true" { span { (from) } span { (to) } }
        }
        p.legend { span.key-stock { "Stock available" } " " span.key-sale { "Units sold" } }
    }
}

/// The chart in words, for a screen reader: its span, the stock at the end and at most, the
/// units sold.
fn summary(title: &str, from: &str, to: &str, totals: &[(i64, i64)], h: &History) -> String {
    let sold: i64 = h.sales.iter().map(|(_, u)| *u).sum();
    let stock = match (totals.last(), totals.iter().map(|(_, v)| *v).max()) {
        (Some((_, now)), Some(most)) => format!("{now} available at the end (at most {most})"),
        _ => "no stock level reported".to_string(),
    };
    format!("{title}, {from} to {to}: {stock}, {sold} units sold.")
}

/// Counts per hour as a small bar sparkline (24 bars), with a text equivalent.
pub fn sparkline(per_hour: &[u32], label: &str) -> Markup {
    let max = per_hour.iter().copied().max().unwrap_or(0).max(1) as f64;
    let total: u32 = per_hour.iter().sum();
    let w = 4.0;
    html! {
        svg.spark role="img" viewBox={"0 0 " (per_hour.len() as f64 * (w + 1.0)) " 24"} {
            title { (label) ": " (total) " in 24 h" }
            @for (i, n) in per_hour.iter().enumerate() {
                @let hgt = (*n as f64) / max * 22.0;
                rect x=(i as f64 * (w + 1.0)) y=(format!("{:.1}", 24.0 - hgt)) width=(w) height=(format!("{hgt:.1}")) {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;
    const HOUR: i64 = 3_600_000;

    fn history() -> History {
        let mut h = History::default();
        h.record_level(T0, "all", Some(17));
        h.record_level(T0 + HOUR, "all", Some(9));
        h.record_level(T0 + 2 * HOUR, "all", Some(2));
        h.record_sale(T0 + HOUR, 4);
        h.record_sale(T0 + 3 * HOUR, 2);
        h
    }

    #[test]
    fn labels_are_html_beside_a_drawing_without_text() {
        let html = item_chart(&history(), "Stock and sales of Red mug").into_string();
        let (before, rest) = html.split_once("<svg").expect("an svg");
        let (svg, after) = rest.split_once("</svg>").expect("a closed svg");
        // No text in the stretched drawing: it would shrink (or stretch) with it.
        assert!(!svg.contains("<text"), "{svg}");
        assert!(svg.contains(r#"preserveAspectRatio="none""#), "{svg}");
        // The highest value and 0 before it, the first and last dates after it.
        assert!(before.contains("<span>17</span><span>0</span>"), "{before}");
        let from = super::super::pages::date(T0);
        let to = super::super::pages::date(T0 + 3 * HOUR);
        assert!(
            after.contains(&format!("<span>{from}</span><span>{to}</span>")),
            "{after}"
        );
        // Two bars, the step line ending at the right edge at the last level.
        assert_eq!(svg.matches("<rect").count(), 2, "{svg}");
        assert!(svg.contains("H640.0 V176.5"), "{svg}");
    }

    #[test]
    fn the_accessible_description_says_span_stock_and_sales() {
        let html = item_chart(&history(), "Stock and sales of Red mug").into_string();
        let from = super::super::pages::date(T0);
        let to = super::super::pages::date(T0 + 3 * HOUR);
        let want = format!(
            r#"<title id="chart-title">Stock and sales of Red mug, {from} to {to}: 2 available at the end (at most 17), 6 units sold.</title>"#
        );
        assert!(html.contains(&want), "{html}");
        assert!(
            html.contains(r#"role="img""#) && html.contains(r#"aria-labelledby="chart-title""#)
        );

        let mut sales_only = History::default();
        sales_only.record_sale(T0, 3);
        let html = item_chart(&sales_only, "T").into_string();
        assert!(
            html.contains("no stock level reported, 3 units sold."),
            "{html}"
        );
    }
}

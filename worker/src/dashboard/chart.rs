//! Charts drawn on the server as inline SVG (no script, no external file): an item's stock over
//! time with its sales as bars, and a source's events per hour as a sparkline.
//!
//! Built with maud like the pages, so every value is escaped; coordinates are numbers only.

use crate::state::history::History;
use maud::{html, Markup};

const W: f64 = 640.0;
const H: f64 = 200.0;
const PAD: f64 = 28.0;

/// Stock (a step line) and sales (bars) of one item over the span its history covers.
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
        .max(1) as f64;
    let x = |t: i64| PAD + (t - t0) as f64 / span * (W - 2.0 * PAD);
    let y = |v: i64| H - PAD - (v.max(0) as f64) / vmax * (H - 2.0 * PAD);
    let mut path = String::new();
    for (i, (t, v)) in totals.iter().enumerate() {
        if i == 0 {
            path.push_str(&format!("M{:.1} {:.1}", x(*t), y(*v)));
        } else {
            path.push_str(&format!(" H{:.1} V{:.1}", x(*t), y(*v)));
        }
    }
    if let Some((_, v)) = totals.last() {
        path.push_str(&format!(" H{:.1} V{:.1}", W - PAD, y(*v)));
    }
    let bar = ((W - 2.0 * PAD) / (h.sales.len().max(1) as f64 * 2.0)).clamp(2.0, 10.0);
    html! {
        svg.chart role="img" viewBox={"0 0 " (W) " " (H)} aria-labelledby="chart-title" {
            title #chart-title { (title) }
            line.axis x1=(PAD) y1=(H - PAD) x2=(W - PAD) y2=(H - PAD) {}
            line.axis x1=(PAD) y1=(PAD) x2=(PAD) y2=(H - PAD) {}
            text.tick x="2" y=(PAD + 4.0) { (vmax as i64) }
            text.tick x="2" y=(H - PAD + 4.0) { "0" }
            @for (t, u) in &h.sales {
                @if *u > 0 {
                    rect.sale x=(format!("{:.1}", x(*t) - bar / 2.0)) y=(format!("{:.1}", y(*u)))
                        width=(format!("{bar:.1}")) height=(format!("{:.1}", H - PAD - y(*u))) {}
                }
            }
            path.stock d=(path) {}
            text.tick x=(PAD) y=(H - 6.0) { (super::pages::date(t0)) }
            text.tick x=(W - PAD) y=(H - 6.0) text-anchor="end" { (super::pages::date(t1)) }
        }
        p.legend { span.key-stock { "Stock available" } " " span.key-sale { "Units sold" } }
    }
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

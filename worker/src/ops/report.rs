//! The read-only reports: `stats`, `preview` (what each item would alert on at a time) and
//! `export` (items as CSV, formulas defused).

use super::{control, fmt_time, OpsError};
use crate::alert::OutboxStatus;
use crate::backend::Queue;
use crate::control::{AlertFilter, Control};
use crate::state::{counters, RuleConfig};
use serde_json::json;
use std::fmt::Write as _;
use stockhook_shared::config::Config;
use stockhook_shared::queue::{now_ms, QueueOps};

/// How many outbox entries have `status`.
async fn alerts_in(c: &Control, status: OutboxStatus) -> Result<usize, OpsError> {
    let filter = AlertFilter {
        status: Some(status),
        ..Default::default()
    };
    Ok(c.alerts(filter).await?.len())
}

/// `stats`.
pub async fn stats(config: &Config, as_json: bool) -> Result<String, OpsError> {
    let queue = match Queue::open(config).await {
        Ok(q) => q.stats().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let c = control(config).await?;
    let counters = c.counters().await?;
    let pending = alerts_in(&c, OutboxStatus::Pending).await?;
    let failed = alerts_in(&c, OutboxStatus::Failed).await?;
    // Sent alerts are counted from the outbox itself (plus those swept after 30 days), so the
    // figure always agrees with what `failed show` says, whatever a crash interrupted.
    let sent_now = alerts_in(&c, OutboxStatus::Sent).await? as i64;
    let get = |k: &str| counters.get(k).copied().unwrap_or(0);
    // Items in the catalog now (live: removed ones are counted in catalog.removed).
    let catalog_items = c
        .items()
        .await?
        .iter()
        .filter(|it| it.removed.is_none())
        .count();
    let sent = sent_now + get(counters::ALERTS_SWEPT);
    let mut sources = serde_json::Map::new();
    for s in &config.sources {
        let (p, d) = match &queue {
            Ok(q) => (
                q.pending_by_source
                    .iter()
                    .find(|(n, _)| *n == s.name)
                    .map_or(0, |x| x.1),
                q.dead_by_source
                    .iter()
                    .find(|(n, _)| *n == s.name)
                    .map_or(0, |x| x.1),
            ),
            Err(_) => (0, 0),
        };
        sources.insert(
            s.name.clone(),
            json!({"processed": get(&counters::source_processed(&s.name)), "pending": p, "dead": d, "future_timestamps": get(&counters::source_future(&s.name)), "corrections": get(&counters::source_corrections(&s.name))}),
        );
    }
    let v = json!({
        "queue": match &queue {
            Ok(q) => json!({"pending": q.pending, "leased": q.leased, "dead": q.dead, "acked_retained": q.acked_retained, "disk_bytes": q.disk_bytes}),
            Err(e) => json!({"error": e}),
        },
        "events": {"processed": get(counters::EVENTS_PROCESSED), "ignored": get(counters::EVENTS_IGNORED), "duplicate": get(counters::EVENTS_DUPLICATE), "stale_levels": get(counters::LEVELS_STALE), "future_timestamps": get(counters::FUTURE_TIMESTAMPS), "old_timestamps": get(counters::OLD_TIMESTAMPS)},
        "facts": {"refused": get(counters::FACTS_REFUSED)},
        "catalog": {"removed": get(counters::CATALOG_REMOVED), "items": catalog_items},
        "alerts": {"created": get(counters::ALERTS_CREATED), "sent": sent, "pending": pending, "failed": failed, "cancelled": get(counters::ALERTS_CANCELLED)},
        "emails": {"sent": get(counters::EMAILS_SENT)},
        "ebay": {"account_deletions": get(counters::EBAY_ACCOUNT_DELETIONS)},
        "sources": sources,
        "sync": crate::sync::runner::stats_json(config, &counters),
    });
    if as_json {
        return Ok(serde_json::to_string_pretty(&v).map_err(anyhow::Error::from)? + "\n");
    }
    let mut out = String::new();
    flatten(&v, "", &mut out);
    Ok(out)
}

/// `preview --at`: the scheduled pass in dry run at `at`: the time-based alerts it would raise.
pub async fn preview(config: &Config, at: i64, as_json: bool) -> Result<String, OpsError> {
    let alerts = control(config).await?.preview(at).await?;
    if as_json {
        return Ok(serde_json::to_string_pretty(&alerts).map_err(anyhow::Error::from)? + "\n");
    }
    let mut out = format!(
        "{} time-based alert(s) would fire at {} (nothing sent, nothing written)\n",
        alerts.len(),
        fmt_time(at)
    );
    for a in &alerts {
        // What the rule is about: the quiet period, or the days of cover and what to order.
        let why = match (&a.cover, a.quiet_since) {
            (Some(c), _) => format!(
                "{:.1} days of cover, runs out {}, reorder {}",
                c.days_of_cover,
                fmt_time(c.stockout_date),
                c.reorder_qty
            ),
            (None, Some(since)) => format!("quiet since {}", fmt_time(since)),
            (None, None) => String::new(),
        };
        let _ = writeln!(
            out,
            "{}\t{}\t{}\tsku={}\tavailable={}\t{why}",
            a.rule.as_str(),
            a.source,
            a.item,
            a.sku.as_deref().unwrap_or("-"),
            a.available.map_or("-".to_string(), |n| n.to_string()),
        );
    }
    Ok(out)
}

fn flatten(v: &serde_json::Value, prefix: &str, out: &mut String) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, val) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(val, &p, out);
            }
        }
        other => {
            let _ = writeln!(
                out,
                "{prefix} {}",
                other
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| other.to_string())
            );
        }
    }
}

/// `export --csv`: current inventory state per item with last sale, alert state and days of
/// cover (velocity, days, stock-out date, reorder quantity; empty without a velocity). Items
/// removed from their catalog are left out unless `all` (then with removal time and reason).
pub async fn export_csv(
    config: &Config,
    since_ms: Option<i64>,
    all: bool,
) -> Result<String, OpsError> {
    let c = control(config).await?;
    let mut out = String::from("source,platform,item,sku,title,available,locations,first_seen,last_sale_at,units_sold,low_stock_armed,out_of_stock_armed,last_alert,last_alert_at,removed_at,removed_reason,velocity_per_day,days_of_cover,stockout_date,reorder_qty,location_names\n");
    let rules = RuleConfig::from_config(config);
    let now = now_ms();
    for it in c.items().await? {
        if it.removed.is_some() && !all {
            continue;
        }
        let latest = it
            .levels
            .values()
            .map(|l| l.at)
            .chain(it.last_sale_at)
            .max()
            .unwrap_or(it.first_seen_at);
        if since_ms.is_some_and(|s| latest < s) {
            continue;
        }
        let locations: Vec<String> = it
            .levels
            .iter()
            .map(|(k, l)| {
                format!(
                    "{k}={}",
                    l.available
                        .map_or("untracked".to_string(), |a| a.to_string())
                )
            })
            .collect();
        let cover = crate::cover::cover(&it, &rules, now);
        let fields = [
            it.source.clone(),
            it.platform.clone(),
            it.item.clone(),
            it.sku.clone().unwrap_or_default(),
            it.title.clone().unwrap_or_default(),
            it.total().map_or(String::new(), |a| a.to_string()),
            locations.join(";"),
            fmt_time(it.first_seen_at),
            it.last_sale_at.map(fmt_time).unwrap_or_default(),
            it.sold().to_string(),
            it.arming.low_armed.to_string(),
            it.arming.out_armed.to_string(),
            it.last_alert
                .map(|(r, _)| r.as_str().to_string())
                .unwrap_or_default(),
            it.last_alert.map(|(_, t)| fmt_time(t)).unwrap_or_default(),
            it.removed
                .as_ref()
                .map(|r| fmt_time(r.at))
                .unwrap_or_default(),
            it.removed
                .as_ref()
                .map(|r| r.reason.clone())
                .unwrap_or_default(),
            cover
                .as_ref()
                .map(|c| c.velocity_per_day.to_string())
                .unwrap_or_default(),
            cover
                .as_ref()
                .map(|c| c.days_of_cover.to_string())
                .unwrap_or_default(),
            cover
                .as_ref()
                .map(|c| fmt_time(c.stockout_date))
                .unwrap_or_default(),
            cover
                .as_ref()
                .map(|c| c.reorder_qty.to_string())
                .unwrap_or_default(),
            // What `import` reads back: the catalog's names of the item's locations.
            it.location_names
                .iter()
                .map(|(id, name)| format!("{id}={name}"))
                .collect::<Vec<_>>()
                .join(";"),
        ];
        let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    Ok(out)
}

pub(super) fn csv_field(s: &str) -> String {
    // Quote when needed; neutralize spreadsheet formulas (a title can start with '=').
    let s = if s.starts_with(['=', '+', '-', '@']) && s.parse::<f64>().is_err() {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

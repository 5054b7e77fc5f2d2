//! `stockhook-worker import --source NAME FILE`: a catalog file the seller already has, read
//! ([`super::files`]), matched to the items the source holds, and applied through the rules as
//! one [`CatalogBatch`] named by the file's SHA-256, so the same file imported twice changes
//! nothing and sends nothing twice.
//!
//! It goes through the worker's control socket while the worker runs and straight to the state
//! when it is stopped (or to JetStream KV), like every other operator command. Output names
//! counts, the format and alert rules only: never titles or other cell contents.

use super::files::{self, Parsed};
use super::{CatalogBatch, Origin};
use crate::control::ImportOutcome;
use crate::ops::{self, OpsError};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use stockhook_shared::config::Config;
use stockhook_shared::queue::now_ms;

/// What the command was asked.
#[derive(Debug, Clone)]
pub struct ImportArgs<'a> {
    pub source: &'a str,
    pub file: &'a Path,
    pub dry_run: bool,
    pub json: bool,
    pub skip_bad_rows: bool,
}

/// Runs the import; the text (or JSON) to print.
pub async fn run(config: &Config, args: ImportArgs<'_>) -> Result<String, OpsError> {
    let Some(source) = config.sources.iter().find(|s| s.name == args.source) else {
        let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
        return Err(OpsError::Usage(format!(
            "no source named `{}` in the config; configured sources: {}",
            args.source,
            if names.is_empty() {
                "(none)".to_string()
            } else {
                names.join(", ")
            }
        )));
    };
    let bytes = std::fs::read(args.file)
        .map_err(|e| OpsError::Failed(anyhow::anyhow!("reading {}: {e}", args.file.display())))?;
    let name = args.file.display().to_string();
    let mut parsed = files::parse(&name, &bytes, args.skip_bad_rows, &source.location_names)
        .map_err(|e| OpsError::Failed(e.into()))?;
    let control = ops::control(config).await?;
    // Row matching: by platform id where the file has one, else by SKU within the source.
    let held: BTreeMap<String, String> = control.sku_index(&source.name).await?;
    parsed.resolve_skus(&held);
    let sha256: [u8; 32] = Sha256::digest(&bytes).into();
    let batch = CatalogBatch {
        source: source.name.clone(),
        platform: source.platform.as_str().to_string(),
        taken_at: now_ms(),
        items: std::mem::take(&mut parsed.items),
        locations: std::mem::take(&mut parsed.locations),
        sales: Vec::new(),
        // A file may be a filtered export: what it does not list is not gone.
        complete: false,
        levels_are_all_stock: false,
    };
    let summary = Summary::of(&batch);
    let outcome = control
        .import(batch, Origin::Import { sha256 }, args.dry_run)
        .await?;
    Ok(render(&args, &name, &parsed, &summary, &outcome))
}

/// Counts of what a batch holds.
struct Summary {
    items: usize,
    levels: usize,
    catalog_only: usize,
    locations: usize,
}

impl Summary {
    fn of(b: &CatalogBatch) -> Summary {
        let cells = b.items.iter().flat_map(|i| i.levels.iter());
        Summary {
            items: b.items.len(),
            levels: cells.clone().filter(|(_, n)| n.is_some()).count(),
            catalog_only: cells.filter(|(_, n)| n.is_none()).count(),
            locations: b.locations.len(),
        }
    }
}

fn render(
    args: &ImportArgs,
    file: &str,
    parsed: &Parsed,
    s: &Summary,
    o: &ImportOutcome,
) -> String {
    let format = parsed.format.map_or("unknown", |f| f.as_str());
    let again = o.events > 0 && o.already == o.events;
    let mut by_rule: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &o.alerts {
        *by_rule.entry(a.rule.as_str()).or_default() += 1;
    }
    if args.json {
        let v = json!({
            "file": file,
            "source": args.source,
            "format": format,
            "dry_run": args.dry_run,
            "rows": parsed.rows,
            "items": s.items,
            "levels": s.levels,
            "catalog_only": s.catalog_only,
            "locations": s.locations,
            "skipped": parsed.skipped,
            "already_imported": again,
            "alerts": o.alerts.iter().map(|a| json!({
                "id": a.id, "rule": a.rule.as_str(), "item": a.item, "sku": a.sku,
                "location": a.location, "available": a.available,
            })).collect::<Vec<_>>(),
        });
        return serde_json::to_string_pretty(&v).unwrap_or_default() + "\n";
    }
    let mut out = String::new();
    let verb = if args.dry_run {
        "would import"
    } else {
        "imported"
    };
    let _ = writeln!(
        out,
        "{verb} {file} ({format}) into source {}: {} rows, {} items, {} levels, {} catalog-only (untracked or not stocked), {} locations",
        args.source, parsed.rows, s.items, s.levels, s.catalog_only, s.locations
    );
    for k in &parsed.skipped {
        let _ = writeln!(
            out,
            "skipped line {}: column `{}` {}",
            k.line, k.column, k.problem
        );
    }
    if again {
        let _ = writeln!(
            out,
            "this file was imported before: nothing changed, nothing sent"
        );
    }
    let rules: Vec<String> = by_rule.iter().map(|(r, n)| format!("{n} {r}")).collect();
    let _ = writeln!(
        out,
        "alerts{}: {}",
        if args.dry_run { " it would raise" } else { "" },
        if rules.is_empty() {
            "none".to_string()
        } else {
            rules.join(", ")
        }
    );
    if args.dry_run {
        let _ = writeln!(out, "dry run: nothing was written");
    }
    out
}

//! Reading the catalog files sellers already have into [`CatalogItem`]s: the format is told
//! from the header row, never from the file name, and every cell is checked before anything
//! is imported (an import is all or nothing).
//!
//! Formats (quirks in `docs/CATALOG_FORMATS.md`): Shopify's product CSV (2021 and 2024
//! templates and exports), Shopify's inventory export in its three layouts (a column per
//! location; 2023 plain headers; 2024 `(not editable)`/`(current)` headers), Amazon's All
//! Listings Report (tab-separated) and stockhook's own `export --csv`.
//!
//! What a row becomes: an item with its titles, SKU and the platform id where the file has one
//! (else a key made of the row's identity, matched later by SKU, see [`Parsed::match_by_sku`]);
//! a level per location, `None` (catalog only, never 0) for an untracked variant or a
//! `not stocked` cell. Errors name the file, the line and the column; cell contents are never
//! put in an error (they can be customer data), only the column and what was wrong.

use super::{CatalogItem, Location};
use serde::Serialize;
use std::collections::BTreeMap;

/// A format stockhook reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    ShopifyProducts,
    ShopifyInventoryPerLocation,
    ShopifyInventory2023,
    ShopifyInventory2024,
    AmazonAllListings,
    Stockhook,
}

impl Format {
    /// Every format, for the "unknown format" message.
    pub const ALL: [Format; 6] = [
        Format::ShopifyProducts,
        Format::ShopifyInventoryPerLocation,
        Format::ShopifyInventory2023,
        Format::ShopifyInventory2024,
        Format::AmazonAllListings,
        Format::Stockhook,
    ];

    /// What the format is and the header columns that identify it.
    pub fn describe(self) -> &'static str {
        match self {
            Format::ShopifyProducts => {
                "Shopify product CSV (template or export): Handle, Title, Variant SKU, Variant Inventory Tracker, Variant Inventory Qty"
            }
            Format::ShopifyInventoryPerLocation => {
                "Shopify inventory export, one column per location: Handle, Title, Option1 Name..Option3 Value, SKU, HS Code, COO, <location>..."
            }
            Format::ShopifyInventory2023 => {
                "Shopify inventory export (2023): Handle, Title, ..., SKU, Location, Incoming, Unavailable, Committed, Available, On hand"
            }
            Format::ShopifyInventory2024 => {
                "Shopify inventory export (2024): Handle, Title, ..., SKU, Location, Bin name, Available (not editable), On hand (current), On hand (new)"
            }
            Format::AmazonAllListings => {
                "Amazon All Listings Report (tab-separated): item-name, listing-id, seller-sku, quantity, fulfillment-channel, status"
            }
            Format::Stockhook => {
                "stockhook export --csv: source, platform, item, sku, title, available, locations, ..."
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::ShopifyProducts => "shopify_products",
            Format::ShopifyInventoryPerLocation => "shopify_inventory_per_location",
            Format::ShopifyInventory2023 => "shopify_inventory_2023",
            Format::ShopifyInventory2024 => "shopify_inventory_2024",
            Format::AmazonAllListings => "amazon_all_listings",
            Format::Stockhook => "stockhook",
        }
    }
}

/// Why a file cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("{file}: not a catalog format stockhook knows. The header row read was:\n  {header}\nKnown formats:\n{known}")]
    UnknownFormat {
        file: String,
        header: String,
        known: String,
    },
    #[error("{file}: line {line}, column `{column}`: {problem}; nothing was imported (--skip-bad-rows imports the other rows)")]
    BadRow {
        file: String,
        line: u64,
        column: String,
        problem: String,
    },
    #[error("{file}: line {line}: {problem}; nothing was imported")]
    Unreadable {
        file: String,
        line: u64,
        problem: String,
    },
}

/// A row left out by `--skip-bad-rows`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub line: u64,
    pub column: String,
    pub problem: String,
}

/// What a file holds.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub format: Option<Format>,
    /// Data rows read (not counting the header).
    pub rows: usize,
    pub items: Vec<CatalogItem>,
    pub locations: Vec<Location>,
    /// Indexes into `items` whose `item` is made from the row (the file has no platform id):
    /// an item the source already holds with the same SKU is the same item.
    pub match_by_sku: Vec<usize>,
    pub skipped: Vec<Skipped>,
}

impl Parsed {
    /// Row matching: an item the file names without a platform id takes the id of the item
    /// of the source that carries its SKU (`held`: SKU -> item id within the source).
    pub fn resolve_skus(&mut self, held: &BTreeMap<String, String>) {
        for &i in &self.match_by_sku {
            let it = &mut self.items[i];
            if let Some(id) = it.sku.as_ref().and_then(|s| held.get(s)) {
                it.item = id.clone();
            }
        }
    }
}

/// One bad cell, before it is given the file and line.
struct Bad {
    column: String,
    problem: String,
}

fn bad(column: &str, problem: impl Into<String>) -> Bad {
    Bad {
        column: column.to_string(),
        problem: problem.into(),
    }
}

/// The header's columns by name.
struct Columns {
    names: Vec<String>,
}

impl Columns {
    fn idx(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }
    fn has(&self, name: &str) -> bool {
        self.idx(name).is_some()
    }
}

/// One data row with its header.
struct Row<'a> {
    cols: &'a Columns,
    rec: &'a csv::StringRecord,
}

impl Row<'_> {
    /// The trimmed cell, `""` when the column is absent or the row short.
    fn get(&self, name: &str) -> &str {
        self.cols
            .idx(name)
            .and_then(|i| self.rec.get(i))
            .map(str::trim)
            .unwrap_or("")
    }
    fn opt(&self, name: &str) -> Option<String> {
        Some(self.get(name))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }
}

/// A quantity cell: a whole number (negative allowed: Shopify's oversold `available`), or
/// `None` for `not stocked` or an empty cell (catalog only, never 0).
fn quantity(column: &str, cell: &str) -> Result<Option<i64>, Bad> {
    let c = cell.trim();
    if c.is_empty() || c.eq_ignore_ascii_case("not stocked") {
        return Ok(None);
    }
    c.parse::<i64>()
        .map(Some)
        .map_err(|_| bad(column, "is not a whole number or `not stocked`"))
}

/// Tells the format from the header row.
fn detect(cols: &Columns) -> Option<Format> {
    let h = |n: &str| cols.has(n);
    if cols.names.iter().take(7).map(String::as_str).eq([
        "source",
        "platform",
        "item",
        "sku",
        "title",
        "available",
        "locations",
    ]) {
        return Some(Format::Stockhook);
    }
    if h("seller-sku") && h("item-name") && h("quantity") {
        return Some(Format::AmazonAllListings);
    }
    if !h("Handle") {
        return None;
    }
    if h("Variant SKU") && h("Variant Inventory Qty") {
        return Some(Format::ShopifyProducts);
    }
    if h("Location") && h("Available (not editable)") {
        return Some(Format::ShopifyInventory2024);
    }
    if h("Location") && h("Available") {
        return Some(Format::ShopifyInventory2023);
    }
    if h("SKU") && h("COO") && cols.idx("COO").is_some_and(|i| i + 1 < cols.names.len()) {
        return Some(Format::ShopifyInventoryPerLocation);
    }
    None
}

/// Reads `bytes` (the file `file`). `skip_bad_rows`: a bad row is listed in
/// [`Parsed::skipped`] instead of failing the whole file. `location_ids`: the source's
/// configured location names (id -> name), so a file that names a location by its name only
/// puts its levels under the configured id.
pub fn parse(
    file: &str,
    bytes: &[u8],
    skip_bad_rows: bool,
    location_ids: &BTreeMap<String, String>,
) -> Result<Parsed, FileError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let first_line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let delimiter = if first_line.contains(&b'\t') && !first_line.contains(&b',') {
        b'\t'
    } else {
        b','
    };
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let unreadable = |line: u64, e: &csv::Error| FileError::Unreadable {
        file: file.to_string(),
        line,
        problem: match e.kind() {
            csv::ErrorKind::Utf8 { .. } => "not UTF-8 text (save the file as UTF-8 CSV)".into(),
            _ => "cannot be read as CSV".into(),
        },
    };
    let mut records = rdr.records();
    let header = match records.next() {
        Some(Ok(r)) => r,
        Some(Err(e)) => return Err(unreadable(1, &e)),
        None => {
            return Err(FileError::UnknownFormat {
                file: file.into(),
                header: "(the file is empty)".into(),
                known: known(),
            })
        }
    };
    let cols = Columns {
        names: header.iter().map(|s| s.trim().to_string()).collect(),
    };
    let Some(format) = detect(&cols) else {
        let sep = if delimiter == b'\t' { "\t" } else { "," };
        return Err(FileError::UnknownFormat {
            file: file.into(),
            header: cols.names.join(sep),
            known: known(),
        });
    };
    let mut b = Builder {
        format,
        parsed: Parsed {
            format: Some(format),
            ..Parsed::default()
        },
        by_key: BTreeMap::new(),
        names_to_ids: location_ids
            .iter()
            .map(|(id, name)| (name.clone(), id.clone()))
            .collect(),
        product_title: BTreeMap::new(),
    };
    let mut lines = LineCounter::new(bytes);
    for rec in records {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| lines.line_at(p.byte()));
                return Err(unreadable(line, &e));
            }
        };
        // The line the record starts on, counted in the bytes (1-based).
        let line = rec.position().map_or(0, |p| lines.line_at(p.byte()));
        if rec.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        b.parsed.rows += 1;
        let row = Row {
            cols: &cols,
            rec: &rec,
        };
        if let Err(e) = b.row(&row) {
            if !skip_bad_rows {
                return Err(FileError::BadRow {
                    file: file.into(),
                    line,
                    column: e.column,
                    problem: e.problem,
                });
            }
            b.parsed.skipped.push(Skipped {
                line,
                column: e.column,
                problem: e.problem,
            });
        }
    }
    Ok(b.parsed)
}

/// The 1-based line a record starts on, from its position. With CRLF endings the csv crate
/// puts a record's start on the `\n` that ends the previous one (it ended the record at the
/// `\r`), so that byte counts as before the record.
///
/// Records come in file order: the newlines are counted once, from where the last record's
/// count stopped (counting from the start for every row made a 50,000-row import spend most of
/// its time here).
struct LineCounter<'a> {
    bytes: &'a [u8],
    counted_to: usize,
    newlines: u64,
}

impl<'a> LineCounter<'a> {
    fn new(bytes: &'a [u8]) -> LineCounter<'a> {
        LineCounter {
            bytes,
            counted_to: 0,
            newlines: 0,
        }
    }

    fn line_at(&mut self, at: u64) -> u64 {
        let at = (at as usize + 1).min(self.bytes.len());
        if at < self.counted_to {
            // Not expected (positions only grow): count from the start.
            return self.bytes[..at].iter().filter(|b| **b == b'\n').count() as u64 + 1;
        }
        self.newlines += self.bytes[self.counted_to..at]
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64;
        self.counted_to = at;
        self.newlines + 1
    }
}

fn known() -> String {
    Format::ALL
        .iter()
        .map(|f| format!("  - {}", f.describe()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Accumulates rows into items (several rows can be one item: one per location).
struct Builder {
    format: Format,
    parsed: Parsed,
    /// Item key -> index in `parsed.items`.
    by_key: BTreeMap<String, usize>,
    /// Configured location name -> id.
    names_to_ids: BTreeMap<String, String>,
    /// Shopify product CSV: the product title by handle (only its first row carries it).
    product_title: BTreeMap<String, String>,
}

impl Builder {
    fn row(&mut self, r: &Row) -> Result<(), Bad> {
        match self.format {
            Format::Stockhook => self.stockhook(r),
            Format::AmazonAllListings => self.amazon(r),
            Format::ShopifyProducts => self.shopify_products(r),
            Format::ShopifyInventoryPerLocation => self.shopify_per_location(r),
            Format::ShopifyInventory2023 => self.shopify_inventory(r, "Available"),
            Format::ShopifyInventory2024 => self.shopify_inventory(r, "Available (not editable)"),
        }
    }

    /// Adds an item, or the levels of a row to the item already read under `key` (its item id:
    /// rows of one SKU are one item, as a SKU names one item within a source).
    fn add(&mut self, key: String, item: CatalogItem, by_sku: bool) {
        match self.by_key.get(&key) {
            Some(&i) => {
                let held = &mut self.parsed.items[i];
                for (loc, n) in item.levels {
                    match held.levels.iter_mut().find(|(l, _)| *l == loc) {
                        Some(slot) => slot.1 = n,
                        None => held.levels.push((loc, n)),
                    }
                }
            }
            None => {
                let i = self.parsed.items.len();
                self.parsed.items.push(item);
                self.by_key.insert(key, i);
                if by_sku {
                    self.parsed.match_by_sku.push(i);
                }
            }
        }
    }

    /// A location named in the file: its configured id if the source names it so, else the
    /// name itself; recorded with its name.
    fn location(&mut self, name: &str) -> String {
        let id = self
            .names_to_ids
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string());
        if !self.parsed.locations.iter().any(|l| l.id == id) {
            self.parsed.locations.push(Location {
                id: id.clone(),
                name: name.to_string(),
            });
        }
        id
    }

    fn stockhook(&mut self, r: &Row) -> Result<(), Bad> {
        let item = r.opt("item").ok_or_else(|| bad("item", "is empty"))?;
        let mut levels = Vec::new();
        for part in r.get("locations").split(';').filter(|p| !p.is_empty()) {
            let (loc, n) = part
                .rsplit_once('=')
                .ok_or_else(|| bad("locations", "is not a list of location=available"))?;
            let n = if n == "untracked" {
                None
            } else {
                quantity("locations", n)?
            };
            levels.push((loc.to_string(), n));
        }
        if let Some(names) = r.opt("location_names") {
            for part in names.split(';').filter(|p| !p.is_empty()) {
                let (id, name) = part
                    .split_once('=')
                    .ok_or_else(|| bad("location_names", "is not a list of location=name"))?;
                if !self.parsed.locations.iter().any(|l| l.id == id) {
                    self.parsed.locations.push(Location {
                        id: id.to_string(),
                        name: name.to_string(),
                    });
                }
            }
        }
        let it = CatalogItem {
            item: item.clone(),
            sku: r.opt("sku"),
            title: r.opt("title").map(|t| undefuse(&t)),
            levels,
            ..CatalogItem::default()
        };
        self.add(item, it, false);
        Ok(())
    }

    fn amazon(&mut self, r: &Row) -> Result<(), Bad> {
        let sku = r
            .opt("seller-sku")
            .ok_or_else(|| bad("seller-sku", "is empty"))?;
        let channel = r.get("fulfillment-channel");
        // Merchant-fulfilled (DEFAULT) quantities are the seller's own stock; an FBA row's
        // quantity is blank in this report (FBA stock comes from the FBA inventory API).
        let levels = if channel.is_empty() || channel.eq_ignore_ascii_case("DEFAULT") {
            vec![("mfn".to_string(), quantity("quantity", r.get("quantity"))?)]
        } else {
            Vec::new()
        };
        let it = CatalogItem {
            item: sku.clone(),
            aliases: r.opt("asin1").into_iter().collect(),
            sku: Some(sku.clone()),
            title: r.opt("item-name"),
            levels,
            ..CatalogItem::default()
        };
        // The seller SKU is Amazon's own id for the listing (webhooks name items by it).
        self.add(sku, it, false);
        Ok(())
    }

    /// The variant part of a Shopify row: `Red / L`, or `None` for a single-variant product.
    fn variant_title(r: &Row) -> Option<String> {
        let opts: Vec<&str> = ["Option1 Value", "Option2 Value", "Option3 Value"]
            .into_iter()
            .map(|c| r.get(c))
            .filter(|v| !v.is_empty() && *v != "Default Title")
            .collect();
        (!opts.is_empty()).then(|| opts.join(" / "))
    }

    /// The row's identity when the file has no platform id: handle and option values.
    fn shopify_key(r: &Row) -> String {
        format!(
            "{}/{}/{}/{}",
            r.get("Handle"),
            r.get("Option1 Value"),
            r.get("Option2 Value"),
            r.get("Option3 Value")
        )
    }

    fn shopify_title(&mut self, r: &Row) -> Option<String> {
        let handle = r.get("Handle").to_string();
        if let Some(t) = r.opt("Title") {
            self.product_title.insert(handle.clone(), t);
        }
        let product = self.product_title.get(&handle).cloned();
        match (product, Self::variant_title(r)) {
            (Some(p), Some(v)) => Some(format!("{p} - {v}")),
            (p, v) => p.or(v),
        }
    }

    /// The item id: the SKU when there is one (matched to a held item by SKU), else the row's
    /// identity.
    fn shopify_item(r: &Row, sku: &Option<String>) -> String {
        match sku {
            Some(s) => format!("sku:{s}"),
            None => format!("row:{}", Self::shopify_key(r)),
        }
    }

    fn shopify_products(&mut self, r: &Row) -> Result<(), Bad> {
        if r.opt("Handle").is_none() {
            return Err(bad("Handle", "is empty"));
        }
        let title = self.shopify_title(r);
        let sku = r.opt("Variant SKU");
        // Image-only rows (more images of a product) carry no variant.
        if sku.is_none()
            && r.get("Option1 Value").is_empty()
            && r.get("Variant Price").is_empty()
            && r.get("Variant Inventory Qty").is_empty()
        {
            return Ok(());
        }
        let tracked = !r.get("Variant Inventory Tracker").is_empty();
        let qty = quantity("Variant Inventory Qty", r.get("Variant Inventory Qty"))?;
        let it = CatalogItem {
            item: Self::shopify_item(r, &sku),
            sku: sku.clone(),
            title,
            product: r.opt("Handle"),
            // Untracked (blank tracker): catalog only, whatever the quantity cell says.
            levels: vec![("all".to_string(), if tracked { qty } else { None })],
            ..CatalogItem::default()
        };
        self.add(it.item.clone(), it, sku.is_some());
        Ok(())
    }

    fn shopify_inventory(&mut self, r: &Row, available: &str) -> Result<(), Bad> {
        if r.opt("Handle").is_none() {
            return Err(bad("Handle", "is empty"));
        }
        let name = r
            .opt("Location")
            .ok_or_else(|| bad("Location", "is empty"))?;
        let n = quantity(available, r.get(available))?;
        let loc = self.location(&name);
        self.add_inventory_row(r, vec![(loc, n)]);
        Ok(())
    }

    /// An inventory export row (SKU in `SKU`) with its levels.
    fn add_inventory_row(&mut self, r: &Row, levels: Vec<(String, Option<i64>)>) {
        let sku = r.opt("SKU");
        let it = CatalogItem {
            item: Self::shopify_item(r, &sku),
            sku: sku.clone(),
            title: self.shopify_title(r),
            product: r.opt("Handle"),
            levels,
            ..CatalogItem::default()
        };
        self.add(it.item.clone(), it, sku.is_some());
    }

    fn shopify_per_location(&mut self, r: &Row) -> Result<(), Bad> {
        if r.opt("Handle").is_none() {
            return Err(bad("Handle", "is empty"));
        }
        let first = r.cols.idx("COO").map_or(r.cols.names.len(), |i| i + 1);
        let mut levels = Vec::new();
        for i in first..r.cols.names.len() {
            let name = r.cols.names[i].clone();
            let n = quantity(&name, r.rec.get(i).unwrap_or(""))?;
            levels.push((self.location(&name), n));
        }
        self.add_inventory_row(r, levels);
        Ok(())
    }
}

/// `export --csv` puts a `'` before a cell that a spreadsheet would run as a formula; reading
/// it back takes it off.
fn undefuse(s: &str) -> String {
    match s.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@']) => rest.to_string(),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Parsed {
        parse("f.csv", text.as_bytes(), false, &BTreeMap::new()).unwrap()
    }

    #[test]
    fn a_bad_cell_names_line_and_column_and_skipping_lists_it() {
        let text = "Handle,Title,Option1 Name,Option1 Value,Option2 Name,Option2 Value,Option3 Name,Option3 Value,SKU,HS Code,COO,Location,Incoming,Unavailable,Committed,Available,On hand\r\n\
                    a,A,Title,Default Title,,,,,A1,,,Main,0,0,0,3,3\r\n\
                    b,B,Title,Default Title,,,,,B1,,,Main,0,0,0,lots,3\r\n";
        let e = parse("inv.csv", text.as_bytes(), false, &BTreeMap::new()).unwrap_err();
        assert_eq!(
            e,
            FileError::BadRow {
                file: "inv.csv".into(),
                line: 3,
                column: "Available".into(),
                problem: "is not a whole number or `not stocked`".into()
            }
        );
        let p = parse("inv.csv", text.as_bytes(), true, &BTreeMap::new()).unwrap();
        assert_eq!(p.items.len(), 1);
        assert_eq!(p.skipped.len(), 1);
        assert_eq!(p.skipped[0].line, 3);
    }

    #[test]
    fn unknown_format_lists_the_known_ones_and_the_header() {
        let e = parse(
            "x.csv",
            b"\xEF\xBB\xBFfoo,bar\n1,2\n",
            false,
            &BTreeMap::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("foo,bar"), "{e}");
        for f in Format::ALL {
            assert!(e.contains(f.describe()), "{e}");
        }
    }

    #[test]
    fn stockhook_export_reads_back_with_untracked_and_defused_titles() {
        let p = parse_ok(
            "source,platform,item,sku,title,available,locations,first_seen\n\
             shop,shopify,42,S-1,'=SUM,3,77=3;78=untracked,2026-01-01T00:00:00Z\n",
        );
        assert_eq!(p.items[0].item, "42");
        assert_eq!(p.items[0].title.as_deref(), Some("=SUM"));
        assert_eq!(
            p.items[0].levels,
            vec![("77".to_string(), Some(3)), ("78".to_string(), None)]
        );
        assert!(p.match_by_sku.is_empty());
    }

    #[test]
    fn configured_location_names_give_the_id() {
        let names = BTreeMap::from([("53716844710".to_string(), "Main".to_string())]);
        let text = "Handle,Title,Option1 Name,Option1 Value,Option2 Name,Option2 Value,Option3 Name,Option3 Value,SKU,HS Code,COO,Location,Incoming,Unavailable,Committed,Available,On hand\n\
                    a,A,Title,Default Title,,,,,A1,,,Main,0,0,0,3,3\n";
        let p = parse("f.csv", text.as_bytes(), false, &names).unwrap();
        assert_eq!(
            p.items[0].levels,
            vec![("53716844710".to_string(), Some(3))]
        );
        assert_eq!(p.locations[0].name, "Main");
    }

    /// The published samples (worker/tests/data/catalog/README.md names their sources).
    fn sample(name: &str) -> Parsed {
        let path = format!("{}/tests/data/catalog/{name}", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap();
        parse(name, &bytes, false, &BTreeMap::new()).unwrap()
    }

    fn level(p: &Parsed, sku: &str) -> Vec<(String, Option<i64>)> {
        p.items
            .iter()
            .find(|i| i.sku.as_deref() == Some(sku))
            .unwrap_or_else(|| panic!("no item with SKU {sku}"))
            .levels
            .clone()
    }

    #[test]
    fn shopify_product_templates_2021_and_2024() {
        let p = sample("shopify_product_template__2024-format.csv");
        assert_eq!(p.format, Some(Format::ShopifyProducts));
        // 17 data rows; image-only rows are not items.
        assert_eq!(p.rows, 17);
        let shirt = p
            .items
            .iter()
            .find(|i| i.sku.as_deref() == Some("SRT_COT_111"))
            .unwrap();
        assert_eq!(shirt.title.as_deref(), Some("Example T-Shirt - Green / S"));
        assert_eq!(shirt.item, "sku:SRT_COT_111");
        // Blank tracker (the T-shirts): untracked, catalog only, never 0.
        assert_eq!(shirt.levels, vec![("all".to_string(), None)]);
        assert_eq!(
            level(&p, "PNT_DEN_305"),
            vec![("all".to_string(), Some(15))]
        );
        assert!(p.items.iter().all(|i| i.sku.is_some()));
        assert_eq!(p.match_by_sku.len(), p.items.len());

        let old = sample("shopify_product_template__2021-format.csv");
        assert_eq!(old.format, Some(Format::ShopifyProducts));
        assert!(!old.items.is_empty());
    }

    #[test]
    fn shopify_inventory_exports_in_all_three_layouts() {
        let p = sample("shopify_inventory_export__2024-format__nsls.csv");
        assert_eq!(p.format, Some(Format::ShopifyInventory2024));
        assert_eq!(p.rows, 1732);
        assert_eq!(p.locations.len(), 1);
        assert_eq!(p.locations[0].name, "Underground Sports Shop");
        assert_eq!(
            level(&p, "book-McConaughey-Poems-Prayers"),
            vec![("Underground Sports Shop".to_string(), Some(609))]
        );
        // `not stocked`: catalog only.
        assert_eq!(
            level(&p, "General-Awareness-Brochure"),
            vec![("Underground Sports Shop".to_string(), None)]
        );
        let not_stocked = p
            .items
            .iter()
            .flat_map(|i| i.levels.iter())
            .filter(|(_, n)| n.is_none())
            .count();
        assert_eq!(not_stocked, 194);
        // Negative available is kept (oversold).
        assert!(p
            .items
            .iter()
            .flat_map(|i| i.levels.iter())
            .any(|(_, n)| n.is_some_and(|n| n < 0)));

        let p = sample("shopify_inventory_export__2023-format__olt.csv");
        assert_eq!(p.format, Some(Format::ShopifyInventory2023));
        assert_eq!(p.rows, 884);
        assert_eq!(
            level(&p, "235G"),
            vec![("Once-Loved Treasures".to_string(), Some(1))]
        );
        // Empty SKUs (`""`): the row's handle names the item, nothing to match by SKU.
        assert!(p
            .items
            .iter()
            .any(|i| i.sku.is_none() && i.item.starts_with("row:")));

        let p = sample(
            "shopify_inventory_export__legacy-per-location-column__poptoys__first25lines.csv",
        );
        assert_eq!(p.format, Some(Format::ShopifyInventoryPerLocation));
        assert_eq!(p.rows, 24);
        assert_eq!(level(&p, "198880"), vec![("POPTOYS".to_string(), Some(23))]);
        assert_eq!(p.locations.len(), 1);
    }

    #[test]
    fn amazon_all_listings_report() {
        let p = sample("amazon_all_listings_report__zynk_docs_sample.txt");
        assert_eq!(p.format, Some(Format::AmazonAllListings));
        assert_eq!(p.items.len(), 3);
        let vest = &p.items[0];
        assert_eq!(vest.item, "1234567");
        assert_eq!(vest.title.as_deref(), Some("Vest"));
        assert_eq!(vest.levels, vec![("mfn".to_string(), Some(1))]);
        assert_eq!(vest.aliases, vec!["B01I53BE4O".to_string()]);
        // The seller SKU is the platform id: nothing to match by SKU.
        assert!(p.match_by_sku.is_empty());
    }
}

//! Where an alert's next step points, and how its location reads: the platform-specific words of
//! the alert email.
//!
//! Why it exists: a seller reading on a phone should tap once to reach the item in the
//! platform's own admin, and never have to decode an internal id (`fba:A1F83G8C2ARO7P`,
//! Shopify's numeric location ids). Links are built only from what is known: a Shopify or
//! WooCommerce store's address comes from the source's `store_url`; without it the next step is
//! said in words. Every value put into a URL is percent-encoded.

use crate::alert::Alert;
use std::collections::BTreeMap;
use stockhook_shared::config::Config;

/// Each source's store address (`[[sources]] store_url`) and location names
/// (`[[sources]] location_names`), by source name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stores {
    urls: BTreeMap<String, String>,
    /// (source, location id) -> the name the seller gave it.
    locations: BTreeMap<(String, String), String>,
}

impl Stores {
    pub fn from_config(c: &Config) -> Stores {
        let mut stores = Stores::default();
        for s in &c.sources {
            if let Some(url) = s
                .store_url
                .as_deref()
                .map(str::trim)
                .filter(|u| !u.is_empty())
            {
                stores = stores.with(&s.name, url);
            }
            for (id, name) in &s.location_names {
                stores = stores.with_location(&s.name, id, name);
            }
        }
        stores
    }

    /// One source's store address (tests and the example renderer).
    pub fn with(mut self, source: &str, url: &str) -> Stores {
        self.urls.insert(source.to_string(), url.to_string());
        self
    }

    /// The name of one of a source's locations.
    pub fn with_location(mut self, source: &str, location: &str, name: &str) -> Stores {
        self.locations
            .insert((source.to_string(), location.to_string()), name.to_string());
        self
    }

    fn get(&self, source: &str) -> Option<&str> {
        self.urls.get(source).map(String::as_str)
    }

    fn location(&self, source: &str, location: &str) -> Option<&str> {
        self.locations
            .get(&(source.to_string(), location.to_string()))
            .map(String::as_str)
    }
}

/// The next step for one item: what to do, and the link that does it when one can be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextStep {
    /// e.g. "Open it in Shopify admin", or the way there in words when there is no link.
    pub text: String,
    pub link: Option<String>,
}

/// The platform's name as a seller knows it.
pub fn platform_name(platform: &str) -> &str {
    match platform {
        "shopify" => "Shopify",
        "amazon" => "Amazon",
        "ebay" => "eBay",
        "woocommerce" => "WooCommerce",
        "all" => "every channel",
        _ => "your store",
    }
}

/// The store: the source's name, and its platform's when it has one ("acme-shop (Shopify)").
pub fn store_words(a: &Alert) -> String {
    match a.platform.as_str() {
        "shopify" | "amazon" | "ebay" | "woocommerce" => {
            format!("{} ({})", a.source, platform_name(&a.platform))
        }
        _ => a.source.clone(),
    }
}

/// How an item with no title is named: the platform's own id in words, never bare.
pub fn untitled(a: &Alert) -> String {
    let item = a.item.as_str();
    if let Some(sku) = item.strip_prefix("sku:") {
        return format!("untitled item (SKU {sku})");
    }
    if let Some(name) = item.strip_prefix("title:") {
        return name.to_string();
    }
    let what = match a.platform.as_str() {
        "shopify" => format!("Shopify inventory item {item}"),
        "amazon" => format!("Amazon SKU {item}"),
        "ebay" => match item.split_once(':') {
            Some((listing, variation)) => format!("eBay listing {listing}, variation {variation}"),
            None => format!("eBay listing {item}"),
        },
        "woocommerce" => format!("WooCommerce product {item}"),
        "all" => format!("SKU {item}"),
        _ => format!("item {item}"),
    };
    match &a.sku {
        Some(sku) if a.platform != "amazon" && a.platform != "all" => {
            format!("untitled item (SKU {sku}, {what})")
        }
        _ => format!("untitled item ({what})"),
    }
}

/// Amazon marketplace ids: the Seller Central host and the marketplace's name.
fn marketplace(id: &str) -> Option<(&'static str, &'static str)> {
    Some(match id {
        "ATVPDKIKX0DER" => ("sellercentral.amazon.com", "amazon.com (US)"),
        "A2EUQ1WTGCTBG2" => ("sellercentral.amazon.ca", "amazon.ca (Canada)"),
        "A1AM78C64UM0Y8" => ("sellercentral.amazon.com.mx", "amazon.com.mx (Mexico)"),
        "A2Q3Y263D00KWC" => ("sellercentral.amazon.com.br", "amazon.com.br (Brazil)"),
        "A1F83G8C2ARO7P" => ("sellercentral.amazon.co.uk", "amazon.co.uk (UK)"),
        "A1PA6795UKMFR9" => ("sellercentral.amazon.de", "amazon.de (Germany)"),
        "A13V1IB3VIYZZH" => ("sellercentral.amazon.fr", "amazon.fr (France)"),
        "APJ6JRA9NG5V4" => ("sellercentral.amazon.it", "amazon.it (Italy)"),
        "A1RKKUPIHCS9HS" => ("sellercentral.amazon.es", "amazon.es (Spain)"),
        "A1805IZSGTT6HS" => ("sellercentral.amazon.nl", "amazon.nl (Netherlands)"),
        "A2NODRKZP88ZB9" => ("sellercentral.amazon.se", "amazon.se (Sweden)"),
        "A1C3SOZRARQ6R3" => ("sellercentral.amazon.pl", "amazon.pl (Poland)"),
        "A1VC38T7YXB528" => ("sellercentral.amazon.co.jp", "amazon.co.jp (Japan)"),
        "A39IBJ37TRP1C6" => ("sellercentral.amazon.com.au", "amazon.com.au (Australia)"),
        "A21TJRUUN4KGV" => ("sellercentral.amazon.in", "amazon.in (India)"),
        _ => return None,
    })
}

/// The location: its name when the source's config names it, else the catalog's name for it
/// (import, sync), else in words ("all locations", "Amazon
/// FBA, amazon.co.uk (UK)", "Shopify location 24826418"), never a bare id.
pub fn location_words(a: &Alert, stores: &Stores) -> Option<String> {
    let loc = a.location.as_deref()?;
    if let Some(name) = stores.location(&a.source, loc) {
        return Some(name.to_string());
    }
    if let Some(name) = a.location_name.as_deref().filter(|n| !n.trim().is_empty()) {
        return Some(name.to_string());
    }
    Some(match loc {
        "all" => "all locations".into(),
        "ebay" => "eBay listing quantity".into(),
        "mfn" => "your own stock (merchant-fulfilled)".into(),
        _ => {
            if let Some(m) = loc.strip_prefix("fba:") {
                match marketplace(m) {
                    Some((_, name)) => format!("Amazon FBA, {name}"),
                    None => format!("Amazon FBA, marketplace {m}"),
                }
            } else if let Some(region) = loc.strip_prefix("mfn:") {
                format!("your own stock (merchant-fulfilled, {region})")
            } else if a.platform == "shopify" {
                format!("Shopify location {loc}")
            } else {
                format!("location {loc}")
            }
        }
    })
}

/// What to search the admin for: the SKU, else the title.
fn search_term(a: &Alert) -> Option<&str> {
    a.sku.as_deref().or(a.title.as_deref())
}

/// The next step for `a`: a link into the platform's admin where one can be built.
pub fn next_step(a: &Alert, stores: &Stores) -> NextStep {
    let store = stores.get(&a.source);
    let words = |text: String| NextStep { text, link: None };
    let link = |text: &str, url: String| NextStep {
        text: text.to_string(),
        link: Some(url),
    };
    match a.platform.as_str() {
        "shopify" => match (store.map(shopify_host), search_term(a)) {
            (Some(host), Some(term)) => link(
                "Open it in Shopify admin",
                format!(
                    "https://{host}/admin/products/inventory?query={}",
                    enc(term)
                ),
            ),
            // Shopify's admin search does not find an inventory item id: the list, then.
            (Some(host), None) => link(
                "Open Shopify inventory",
                format!("https://{host}/admin/products/inventory"),
            ),
            (None, term) => words(format!(
                "In Shopify admin, open Products > Inventory and search for {} (set store_url \
                 for this source to get a direct link)",
                term.unwrap_or("the item")
            )),
        },
        "amazon" => {
            let sku = a.sku.as_deref().unwrap_or(&a.item);
            let host = a
                .location
                .as_deref()
                .and_then(|l| l.strip_prefix("fba:"))
                .and_then(marketplace)
                .map_or("sellercentral.amazon.com", |(h, _)| h);
            link(
                "Open it in Seller Central inventory",
                format!(
                    "https://{host}/myinventory/inventory?searchField=all&searchTerm={}",
                    enc(sku)
                ),
            )
        }
        "ebay" => {
            let listing = a.item.split_once(':').map_or(a.item.as_str(), |(l, _)| l);
            if listing.chars().all(|c| c.is_ascii_digit()) && !listing.is_empty() {
                link(
                    "Open the eBay listing",
                    format!("https://www.ebay.com/itm/{listing}"),
                )
            } else {
                words("In eBay Seller Hub, open Listings and search for it".into())
            }
        }
        "woocommerce" => match store {
            Some(base) => {
                let base = woo_base(base);
                match (a.sku.as_deref(), a.item.parse::<u64>()) {
                    (Some(sku), _) => link(
                        "Open it in WooCommerce",
                        format!("{base}/wp-admin/edit.php?post_type=product&s={}", enc(sku)),
                    ),
                    (None, Ok(id)) => link(
                        "Edit it in WooCommerce",
                        format!("{base}/wp-admin/post.php?post={id}&action=edit"),
                    ),
                    (None, Err(_)) => words("In WordPress, open Products and search for it".into()),
                }
            }
            None => words(
                "In WordPress, open Products and search for it (set store_url for this source \
                 to get a direct link)"
                    .into(),
            ),
        },
        _ => words("Restock it, or check the level in each channel's admin".into()),
    }
}

/// `acme-shop.myshopify.com` from `acme-shop`, `https://acme-shop.myshopify.com/`, or the
/// domain itself.
fn shopify_host(store: &str) -> String {
    let host = strip_scheme(store);
    if host.contains('.') {
        host.to_string()
    } else {
        format!("{host}.myshopify.com")
    }
}

/// The WooCommerce site's base URL, `https://` added when missing, no trailing slash.
fn woo_base(store: &str) -> String {
    let s = store.trim().trim_end_matches('/');
    if s.starts_with("http://") || s.starts_with("https://") {
        s.to_string()
    } else {
        format!("https://{s}")
    }
}

fn strip_scheme(s: &str) -> &str {
    let s = s.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    s.split('/').next().unwrap_or(s)
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{test_alert, Rule};

    fn alert(platform: &str, item: &str, sku: Option<&str>, loc: &str) -> Alert {
        let mut a = test_alert(Rule::LowStock, "acme-shop", item);
        a.platform = platform.into();
        a.sku = sku.map(Into::into);
        a.location = Some(loc.into());
        a
    }

    fn url(a: &Alert, stores: &Stores) -> Option<String> {
        next_step(a, stores).link
    }

    #[test]
    fn links_go_to_the_item_in_each_admin() {
        let stores = Stores::default().with("acme-shop", "acme-shop.myshopify.com");
        let a = alert("shopify", "46208873541699", Some("TS-BLU-L"), "all");
        assert_eq!(
            url(&a, &stores).as_deref(),
            Some("https://acme-shop.myshopify.com/admin/products/inventory?query=TS-BLU-L")
        );
        // A bare handle or a full URL name the same store.
        for s in ["acme-shop", "https://acme-shop.myshopify.com/admin"] {
            let st = Stores::default().with("acme-shop", s);
            assert_eq!(url(&a, &st), url(&a, &stores), "{s}");
        }
        // No SKU or title: the inventory list (its search does not find an inventory item id).
        let mut bare = a.clone();
        bare.sku = None;
        bare.title = None;
        assert_eq!(
            url(&bare, &stores).as_deref(),
            Some("https://acme-shop.myshopify.com/admin/products/inventory")
        );
        // Unknown store: the way there in words, with the SKU.
        let n = next_step(&a, &Stores::default());
        assert_eq!(n.link, None);
        assert!(n.text.contains("search for TS-BLU-L"), "{}", n.text);

        let az = alert("amazon", "MUG 11oz/W", None, "fba:A1F83G8C2ARO7P");
        assert_eq!(
            url(&az, &stores).as_deref(),
            Some(
                "https://sellercentral.amazon.co.uk/myinventory/inventory?searchField=all&searchTerm=MUG%2011oz%2FW"
            )
        );
        let mfn = alert("amazon", "MUG-1", None, "mfn");
        assert!(url(&mfn, &stores)
            .unwrap()
            .starts_with("https://sellercentral.amazon.com/"));

        let eb = alert("ebay", "110554019341:RED-M", Some("RED-M"), "ebay");
        assert_eq!(
            url(&eb, &stores).as_deref(),
            Some("https://www.ebay.com/itm/110554019341")
        );

        let woo = Stores::default().with("acme-shop", "https://shop.example.com/");
        let w = alert("woocommerce", "794", None, "all");
        assert_eq!(
            url(&w, &woo).as_deref(),
            Some("https://shop.example.com/wp-admin/post.php?post=794&action=edit")
        );
        let w = alert("woocommerce", "733", Some("woo-hoodie-blue"), "all");
        assert_eq!(
            url(&w, &woo).as_deref(),
            Some("https://shop.example.com/wp-admin/edit.php?post_type=product&s=woo-hoodie-blue")
        );
        assert_eq!(url(&w, &Stores::default()), None);
    }

    #[test]
    fn the_catalogs_location_name_is_shown_unless_the_config_names_it() {
        let mut a = alert("shopify", "1", None, "24826418");
        a.location_name = Some("Back room".into());
        assert_eq!(
            location_words(&a, &Stores::default()).as_deref(),
            Some("Back room")
        );
        let named = Stores::default().with_location("acme-shop", "24826418", "Main warehouse");
        assert_eq!(
            location_words(&a, &named).as_deref(),
            Some("Main warehouse")
        );
    }

    #[test]
    fn locations_and_untitled_items_read_as_words() {
        let words = |platform: &str, loc: &str| {
            location_words(&alert(platform, "1", None, loc), &Stores::default()).unwrap()
        };
        let named = Stores::default().with_location("acme-shop", "24826418", "Main warehouse");
        assert_eq!(
            location_words(&alert("shopify", "1", None, "24826418"), &named).as_deref(),
            Some("Main warehouse")
        );
        assert_eq!(words("shopify", "all"), "all locations");
        assert_eq!(words("shopify", "24826418"), "Shopify location 24826418");
        assert_eq!(
            words("amazon", "fba:A1PA6795UKMFR9"),
            "Amazon FBA, amazon.de (Germany)"
        );
        assert_eq!(words("amazon", "fba:XYZ"), "Amazon FBA, marketplace XYZ");
        assert_eq!(
            words("amazon", "mfn"),
            "your own stock (merchant-fulfilled)"
        );
        assert_eq!(words("ebay", "ebay"), "eBay listing quantity");

        let name = |platform: &str, item: &str, sku: Option<&str>| {
            untitled(&alert(platform, item, sku, "all"))
        };
        assert_eq!(
            name("shopify", "46208873541699", None),
            "untitled item (Shopify inventory item 46208873541699)"
        );
        assert_eq!(
            name("shopify", "46208873541699", Some("TS-1")),
            "untitled item (SKU TS-1, Shopify inventory item 46208873541699)"
        );
        assert_eq!(
            name("amazon", "MUG-1", Some("MUG-1")),
            "untitled item (Amazon SKU MUG-1)"
        );
        assert_eq!(
            name("ebay", "110554019341:RED-M", None),
            "untitled item (eBay listing 110554019341, variation RED-M)"
        );
        assert_eq!(
            name("shopify", "sku:CUSTOM-9", None),
            "untitled item (SKU CUSTOM-9)"
        );
        assert_eq!(
            name("woocommerce", "794", None),
            "untitled item (WooCommerce product 794)"
        );
    }
}

//! Alerts: what the rules decide to tell a seller, and their life in the durable outbox.
//!
//! An alert's id is derived from (rule, source, item, arming episode), so the same crossing yields
//! the same id on every redelivery and the outbox can never hold it twice.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// `available < threshold` (and above zero).
    LowStock,
    /// `available <= 0`.
    OutOfStock,
    /// Stock on hand and no sale for `no_sales_days`.
    NoSales,
    /// The sum across channels sharing a SKU is below the threshold (`combine_channels`).
    CombinedLowStock,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::LowStock => "low_stock",
            Rule::OutOfStock => "out_of_stock",
            Rule::NoSales => "no_sales",
            Rule::CombinedLowStock => "combined_low_stock",
        }
    }
    /// How a subject line names it: "Low stock", "Out of stock", ...
    pub fn title(self) -> &'static str {
        match self {
            Rule::LowStock => "Low stock",
            Rule::OutOfStock => "Out of stock",
            Rule::NoSales => "No sales",
            Rule::CombinedLowStock => "Low stock across channels",
        }
    }
}

/// One alert about one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable id: hex of SHA-256(rule, source, item, episode), 32 characters.
    pub id: String,
    pub rule: Rule,
    pub source: String,
    pub platform: String,
    /// The platform's item id (Shopify inventory item id, Amazon seller SKU, eBay ItemID).
    pub item: String,
    pub sku: Option<String>,
    pub title: Option<String>,
    /// Where the level was reported (Shopify location id, `fba:<marketplace>`, `all`, ...).
    pub location: Option<String>,
    pub available: Option<i64>,
    pub threshold: Option<i64>,
    /// No-sales alerts: the last sale (or first seen) and the configured quiet days.
    pub quiet_since: Option<i64>,
    pub quiet_days: Option<u32>,
    /// Unix ms of the platform event that caused it (or of the schedule run for no-sales).
    pub at: i64,
    /// Unix ms when the worker created it.
    pub created_at: i64,
    pub recipients: Vec<String>,
}

impl Alert {
    pub fn make_id(rule: Rule, source: &str, item: &str, episode: u64) -> String {
        let mut h = Sha256::new();
        for part in [
            rule.as_str().as_bytes(),
            source.as_bytes(),
            item.as_bytes(),
            &episode.to_be_bytes(),
        ] {
            h.update((part.len() as u32).to_be_bytes());
            h.update(part);
        }
        hex::encode(&h.finalize()[..16])
    }

    /// The name a seller recognises: title, else sku, else the platform id.
    pub fn display_name(&self) -> String {
        match (&self.title, &self.sku) {
            (Some(t), _) => t.clone(),
            (None, Some(s)) => s.clone(),
            (None, None) => format!("item {}", self.item),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxStatus {
    Pending,
    Sent,
    Failed,
    /// Not sent: its item left the catalog before the email went out.
    Cancelled,
}

/// An alert in the outbox with its delivery state (persisted, so a restart resumes the schedule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub alert: Alert,
    pub status: OutboxStatus,
    pub attempts: u32,
    /// Not sent before this (digest window, then the retry schedule).
    pub next_attempt_at: i64,
    pub first_attempt_at: Option<i64>,
    pub last_error: Option<String>,
    pub sent_at: Option<i64>,
    pub message_id: Option<String>,
    /// The alert ids of the email this alert was planned into, written before that email is
    /// sent: after a crash mid-send, exactly that set is sent again (same Message-ID, same
    /// file), never regrouped into a different email.
    #[serde(default)]
    pub planned: Vec<String>,
}

impl OutboxEntry {
    pub fn new(alert: Alert, due_at: i64) -> OutboxEntry {
        OutboxEntry {
            alert,
            status: OutboxStatus::Pending,
            attempts: 0,
            next_attempt_at: due_at,
            first_attempt_at: None,
            last_error: None,
            sent_at: None,
            message_id: None,
            planned: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = Alert::make_id(Rule::LowStock, "shop", "123", 1);
        assert_eq!(a, Alert::make_id(Rule::LowStock, "shop", "123", 1));
        assert_eq!(a.len(), 32);
        assert_ne!(a, Alert::make_id(Rule::LowStock, "shop", "123", 2));
        assert_ne!(a, Alert::make_id(Rule::OutOfStock, "shop", "123", 1));
        // Length-prefixed parts: ("ab","c") and ("a","bc") differ.
        assert_ne!(
            Alert::make_id(Rule::LowStock, "ab", "c", 1),
            Alert::make_id(Rule::LowStock, "a", "bc", 1)
        );
    }
}

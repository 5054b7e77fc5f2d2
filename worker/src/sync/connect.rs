//! `stockhook-worker connect`: registers the Shopify webhook subscriptions stockhook reads
//! (`webhookSubscriptionCreate`), idempotently, and `connect --check` compares them with those
//! registered.
//!
//! A topic already subscribed at the URL is kept; one subscribed only at another URL is
//! reported (never deleted: it may be another install's) and the right one is created beside
//! it. The mutation's shape follows the pinned API version: `callbackUrl` (and
//! `endpoint { ... on WebhookHttpEndpoint { callbackUrl } }` when listing) before 2026-07, `uri`
//! from 2026-07 on, as Shopify's docs of each version publish it.

use super::http::{ApiClient, SyncError};
use super::shopify::Graphql;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stockhook_shared::config::ShopifyApiConfig;

/// The topics the Shopify adapter reads (`crate::adapters::shopify`).
pub const TOPICS: &[&str] = &[
    "PRODUCTS_CREATE",
    "PRODUCTS_UPDATE",
    "PRODUCTS_DELETE",
    "INVENTORY_LEVELS_UPDATE",
    "INVENTORY_LEVELS_CONNECT",
    "INVENTORY_ITEMS_UPDATE",
    "INVENTORY_ITEMS_DELETE",
    "ORDERS_CREATE",
    "REFUNDS_CREATE",
];

/// The first API version whose webhook subscription takes and shows `uri`.
const URI_SINCE: &str = "2026-07";

const LIST_URI: &str = "query Subs($first: Int!, $after: String) {
  webhookSubscriptions(first: $first, after: $after) {
    pageInfo { hasNextPage endCursor }
    nodes { id topic uri }
  }
}";

const LIST_CALLBACK: &str = "query Subs($first: Int!, $after: String) {
  webhookSubscriptions(first: $first, after: $after) {
    pageInfo { hasNextPage endCursor }
    nodes { id topic endpoint { __typename ... on WebhookHttpEndpoint { callbackUrl } } }
  }
}";

const CREATE: &str = "mutation Create($topic: WebhookSubscriptionTopic!, $webhookSubscription: WebhookSubscriptionInput!) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: $webhookSubscription) {
    userErrors { field message }
    webhookSubscription { id }
  }
}";

/// One needed topic against what is registered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicState {
    pub topic: String,
    /// `ok` (registered at the URL), `created`, `would_create` (dry run), `missing` (check),
    /// `registered` (check without a URL to compare with).
    pub status: String,
    /// Where else it is registered (a wrong URL), reported and left alone.
    pub other_urls: Vec<String>,
}

fn uses_uri(version: &str) -> bool {
    version >= URI_SINCE
}

/// Compares (and unless `check`/`dry_run`, creates) the subscriptions for `url`.
pub async fn connect(
    cfg: &ShopifyApiConfig,
    api: &ApiClient,
    url: Option<&str>,
    check: bool,
    dry_run: bool,
) -> Result<Vec<TopicState>, SyncError> {
    let mut gql = Graphql::new(cfg, api)?;
    let by_uri = uses_uri(&cfg.api_version);
    let mut registered: Vec<(String, String)> = Vec::new();
    gql.each_node(
        "Shopify webhook subscriptions page",
        if by_uri { LIST_URI } else { LIST_CALLBACK },
        json!({ "first": 100 }),
        &["webhookSubscriptions"],
        |n| {
            let topic = n["topic"].as_str().unwrap_or_default().to_string();
            let at = if by_uri {
                n["uri"].as_str()
            } else {
                n["endpoint"]["callbackUrl"].as_str()
            };
            registered.push((topic, at.unwrap_or_default().to_string()));
            Ok(())
        },
    )
    .await?;
    let mut out = Vec::new();
    for topic in TOPICS {
        let here: Vec<&String> = registered
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, u)| u)
            .collect();
        let other_urls: Vec<String> = here
            .iter()
            .filter(|u| url.is_some_and(|want| want != u.as_str()))
            .map(|u| u.to_string())
            .collect();
        let status = match url {
            None if here.is_empty() => "missing",
            None => "registered",
            Some(want) if here.iter().any(|u| u.as_str() == want) => "ok",
            Some(_) if check => "missing",
            Some(_) if dry_run => "would_create",
            Some(want) => {
                let input = if by_uri {
                    json!({ "uri": want, "format": "JSON" })
                } else {
                    json!({ "callbackUrl": want, "format": "JSON" })
                };
                let data = gql
                    .query(
                        "Shopify webhookSubscriptionCreate",
                        CREATE,
                        json!({ "topic": topic, "webhookSubscription": input }),
                    )
                    .await?;
                let errors = user_errors(&data["webhookSubscriptionCreate"]["userErrors"]);
                if !errors.is_empty() {
                    return Err(SyncError::Refused {
                        what: format!("Shopify webhookSubscriptionCreate {topic}"),
                        status: 200,
                        body: errors,
                    });
                }
                "created"
            }
        };
        out.push(TopicState {
            topic: topic.to_string(),
            status: status.into(),
            other_urls,
        });
    }
    Ok(out)
}

fn user_errors(v: &Value) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{}: {}",
                e["field"]
                    .as_array()
                    .map(|f| f
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("."))
                    .unwrap_or_default(),
                e["message"].as_str().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The text `connect` prints: one line per topic, then the wrong URLs.
pub fn render(states: &[TopicState]) -> String {
    let mut out = String::new();
    for s in states {
        out.push_str(&format!("{:<26} {}\n", s.topic, s.status.replace('_', " ")));
        for u in &s.other_urls {
            out.push_str(&format!(
                "{:<26} also registered at another URL (left alone; delete it in Shopify if it is stale): {u}\n",
                ""
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mutation_shape_follows_the_pinned_version() {
        assert!(!uses_uri("2025-10"));
        assert!(!uses_uri("2026-04"));
        assert!(uses_uri("2026-07"));
        assert!(uses_uri("2026-10"));
        assert!(uses_uri("unstable"));
    }

    #[test]
    fn user_errors_read() {
        let v = json!([{"field": ["webhookSubscription", "callbackUrl"], "message": "Address for this topic has already been taken"}]);
        assert_eq!(
            user_errors(&v),
            "webhookSubscription.callbackUrl: Address for this topic has already been taken"
        );
    }
}

//! Which channels an alert goes to.
//!
//! Why it exists: an agency sends out-of-stock to the store's Slack and the no-sales digest by
//! email; a source may have its own. The most specific setting wins: the source's route for the
//! alert's rule (`[[sources]] routes`), then the source's `channels`, then the rule's route
//! (`[alerts.routes]`), then `[alerts] channels`, then email alone (the default, exactly as
//! before channels existed). The result is sorted and unique, so alerts with the same route
//! group into the same sets.

use crate::alert::{Alert, EMAIL};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use stockhook_shared::config::Config;

/// The routing table, resolved once from the config.
#[derive(Debug, Clone)]
pub struct Router {
    default: Vec<String>,
    by_rule: BTreeMap<String, Vec<String>>,
    sources: HashMap<String, SourceRoutes>,
}

#[derive(Debug, Clone, Default)]
struct SourceRoutes {
    channels: Option<Vec<String>>,
    by_rule: BTreeMap<String, Vec<String>>,
}

impl Router {
    pub fn from_config(c: &Config) -> Router {
        Router {
            default: c
                .alerts
                .channels
                .clone()
                .unwrap_or_else(|| vec![EMAIL.to_string()]),
            by_rule: c.alerts.routes.clone(),
            sources: c
                .sources
                .iter()
                .map(|s| {
                    (
                        s.name.clone(),
                        SourceRoutes {
                            channels: s.channels.clone(),
                            by_rule: s.routes.clone(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// The channels for `alert`, sorted and unique; never empty (the loader refuses empty
    /// routes; an empty one here falls back to email).
    pub fn route(&self, alert: &Alert) -> Vec<String> {
        let rule = alert.rule.as_str();
        let source = self.sources.get(&alert.source);
        let chosen = source
            .and_then(|s| s.by_rule.get(rule))
            .or_else(|| source.and_then(|s| s.channels.as_ref()))
            .or_else(|| self.by_rule.get(rule))
            .unwrap_or(&self.default);
        let set: BTreeSet<String> = chosen.iter().cloned().collect();
        if set.is_empty() {
            vec![EMAIL.to_string()]
        } else {
            set.into_iter().collect()
        }
    }

    /// Every channel name some route uses.
    pub fn used(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.default.iter().cloned().collect();
        for v in self.by_rule.values() {
            out.extend(v.iter().cloned());
        }
        for s in self.sources.values() {
            out.extend(s.channels.iter().flatten().cloned());
            for v in s.by_rule.values() {
                out.extend(v.iter().cloned());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Rule;
    use std::path::Path;
    use stockhook_tests::config::{ConfigBuilder, SourceSpec};

    fn alert(rule: Rule, source: &str) -> Alert {
        crate::alert::test_alert(rule, source, "1")
    }

    #[test]
    fn default_is_email_only() {
        let r = Router::from_config(&Config::default());
        assert_eq!(r.route(&alert(Rule::LowStock, "any")), ["email"]);
        assert_eq!(r.used().into_iter().collect::<Vec<_>>(), ["email"]);
    }

    #[test]
    fn the_most_specific_setting_wins() {
        let text = ConfigBuilder::new(Path::new("/nonexistent"))
            .alerts("channels", r#"["email", "hook"]"#)
            .alerts(
                "routes",
                r#"{ out_of_stock = ["slack"], no_sales = ["email"] }"#,
            )
            .source(
                SourceSpec::new("agency-client", "shopify", "shopify-hmac", &[])
                    .with("channels", r#"["client-slack"]"#)
                    .with(
                        "routes",
                        r#"{ no_sales = ["email", "client-slack", "email"] }"#,
                    ),
            )
            .render();
        let r = Router::from_config(&toml::from_str(&text).unwrap());
        assert_eq!(r.route(&alert(Rule::LowStock, "other")), ["email", "hook"]);
        assert_eq!(r.route(&alert(Rule::OutOfStock, "other")), ["slack"]);
        assert_eq!(r.route(&alert(Rule::NoSales, "other")), ["email"]);
        assert_eq!(
            r.route(&alert(Rule::OutOfStock, "agency-client")),
            ["client-slack"]
        );
        assert_eq!(
            r.route(&alert(Rule::NoSales, "agency-client")),
            ["client-slack", "email"]
        );
        assert_eq!(
            r.used().into_iter().collect::<Vec<_>>(),
            ["client-slack", "email", "hook", "slack"]
        );
    }
}

//! Reading a source's platform sync table (`[sources.amazon_sync]`, `[sources.ebay_sync]`) into
//! a client's settings: the checks every client makes first, and the errors saying why a source
//! cannot sync, worded once for all of them.

use super::http::SyncError;

/// The source's `[sources.<table>]` sync table, or why it cannot sync: the table is absent, or
/// the loader could not read one of its secrets (`problem`).
pub(crate) fn sync_table<'a, T>(
    source: &str,
    table: &str,
    found: Option<&'a T>,
    problem: impl FnOnce(&T) -> Option<&String>,
) -> Result<&'a T, SyncError> {
    let t = found.ok_or_else(|| {
        SyncError::Config(format!("source {source} has no [sources.{table}] section"))
    })?;
    match problem(t) {
        Some(p) => Err(SyncError::Config(format!("source {source}: {p}"))),
        None => Ok(t),
    }
}

/// A required value of a sync table (a secret: by value, `<key>_env` or `<key>_file`), or the
/// error naming what the source did not set.
pub(crate) fn required<T: Clone>(
    v: &Option<T>,
    source: &str,
    table: &str,
    key: &str,
) -> Result<T, SyncError> {
    v.clone().ok_or_else(|| {
        SyncError::Config(format!(
            "source {source}: {table}.{key} is not set (by value, {key}_env or {key}_file)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Table {
        problem: Option<String>,
    }

    fn problem(t: &Table) -> Option<&String> {
        t.problem.as_ref()
    }

    fn config(m: &str) -> Option<SyncError> {
        Some(SyncError::Config(m.into()))
    }

    #[test]
    fn an_absent_table_or_its_problem_is_a_config_error() {
        let absent = sync_table::<Table>("shop", "ebay_sync", None, problem);
        assert_eq!(
            absent.err(),
            config("source shop has no [sources.ebay_sync] section")
        );
        let broken = Table {
            problem: Some("refresh_token_file: not readable".into()),
        };
        assert_eq!(
            sync_table("shop", "ebay_sync", Some(&broken), problem).err(),
            config("source shop: refresh_token_file: not readable")
        );
        let fine = Table { problem: None };
        assert!(sync_table("shop", "ebay_sync", Some(&fine), problem).is_ok());
    }

    #[test]
    fn a_missing_value_names_its_three_spellings() {
        assert_eq!(
            required::<String>(&None, "shop", "amazon_sync", "refresh_token").err(),
            config("source shop: amazon_sync.refresh_token is not set (by value, refresh_token_env or refresh_token_file)")
        );
        assert_eq!(required(&Some(7), "shop", "amazon_sync", "x"), Ok(7));
    }
}

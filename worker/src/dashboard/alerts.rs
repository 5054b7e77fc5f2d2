//! The alerts the pages and the API show, read bounded: never the whole outbox, which grows by
//! every alert ever sent (2,000 a second at full load) and which a snapshot used to hold.
//!
//! Open alerts (pending, failed) come from the snapshot ([`super::view::Snapshot::open`], the
//! size of what is owed). Sent ones are read one page at a time, newest first, from the state's
//! creation-order index ([`StateBackend::recent_alerts`]); an item's by their ids.

use super::view::{self, Scope, Snapshot};
use crate::alert::OutboxEntry;
use crate::state::backend::{AlertCursor, AlertPage};
use crate::state::{ItemState, StateBackend};

/// Most alerts one page (or API call) lists.
pub const PAGE_MAX: usize = 500;

/// One page of the alerts `scope` sees with status word `status` (all when `None`), newest
/// first, created before `before`.
pub async fn page<S: StateBackend>(
    state: &S,
    snap: &Snapshot,
    scope: &Scope,
    status: Option<&str>,
    before: Option<AlertCursor>,
    limit: usize,
) -> Result<AlertPage, crate::state::StateError> {
    let limit = limit.clamp(1, PAGE_MAX);
    if let Some(s @ ("pending" | "failed")) = status {
        return Ok(open_page(snap, scope, s, before.as_ref(), limit));
    }
    let scope = scope.clone();
    let status = status.map(str::to_string);
    state
        .recent_alerts(
            before,
            limit,
            move |source| view::alert_visible(&scope, source),
            move |e| {
                status
                    .as_deref()
                    .is_none_or(|s| super::pages::status_word(e.status) == s)
            },
        )
        .await
}

/// The snapshot's open alerts with status word `status`, as one page.
fn open_page(
    snap: &Snapshot,
    scope: &Scope,
    status: &str,
    before: Option<&AlertCursor>,
    limit: usize,
) -> AlertPage {
    let mut v: Vec<OutboxEntry> = snap
        .open
        .iter()
        .filter(|e| {
            view::alert_visible(scope, &e.alert.source)
                && super::pages::status_word(e.status) == status
                && before.is_none_or(|c| {
                    (e.alert.created_at, e.alert.id.as_str()) < (c.created_at, c.id.as_str())
                })
        })
        .cloned()
        .collect();
    view::newest_first(&mut v);
    let next = (v.len() > limit).then(|| AlertCursor {
        created_at: v[limit - 1].alert.created_at,
        id: v[limit - 1].alert.id.clone(),
    });
    v.truncate(limit);
    AlertPage { entries: v, next }
}

/// The alerts of item `st` that `scope` sees, newest first, read by id
/// ([`view::item_alert_ids`]).
pub async fn of_item<S: StateBackend>(
    state: &S,
    scope: &Scope,
    st: &ItemState,
) -> Result<Vec<OutboxEntry>, crate::state::StateError> {
    let mut v: Vec<OutboxEntry> = state
        .alerts(view::item_alert_ids(st))
        .await?
        .into_iter()
        .filter(|e| {
            view::alert_visible(scope, &e.alert.source)
                && e.alert.source == st.source
                && e.alert.item == st.item
        })
        .collect();
    view::newest_first(&mut v);
    Ok(v)
}

/// The alert `id` if `scope` sees it.
pub async fn one<S: StateBackend>(
    state: &S,
    scope: &Scope,
    id: &str,
) -> Result<Option<OutboxEntry>, crate::state::StateError> {
    Ok(state
        .alerts(vec![id.to_string()])
        .await?
        .into_iter()
        .find(|e| view::alert_visible(scope, &e.alert.source)))
}

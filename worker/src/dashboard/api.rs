//! `/api/v1/`: the same data as the pages, as JSON, for scripts and other tools. Versioned by
//! path; described by `/api/v1/openapi.json`. Bearer tokens only (no cookies, so no CSRF):
//! no token or a wrong one is 401, a viewer asking for a change 403, another source's item
//! 404 for a scoped user.

use super::server::{
    bearer, change_dead, dead_list, dead_one, query_param, resend, respond, Req, Resp,
};
use super::view::{self, Filter, Row};
use super::Dashboard;
use crate::state::backend::AlertCursor;
use crate::state::StateBackend;
use http::{header, Method, StatusCode};
use serde_json::{json, Value};
use stockhook_shared::envelope::EventId;

/// `GET /api/v1/alerts` without `limit`: alerts per page.
const ALERTS_LIMIT: usize = 100;

fn json_resp(status: StatusCode, v: &Value) -> Resp {
    respond(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn error(status: StatusCode, message: &str) -> Resp {
    json_resp(status, &json!({ "error": message }))
}

/// One item as the API shows it.
pub fn item_json(r: &Row) -> Value {
    let st = r.item;
    json!({
        "id": r.id(), "source": st.source, "platform": st.platform, "item": st.item,
        "sku": st.sku, "title": st.title, "available": r.available, "status": r.status.as_str(),
        "days_of_cover": r.cover.as_ref().map(|c| c.days_of_cover),
        "velocity_per_day": r.cover.as_ref().map(|c| c.velocity_per_day),
        "stockout_date": r.cover.as_ref().map(|c| c.stockout_date),
        "reorder_qty": r.cover.as_ref().map(|c| c.reorder_qty),
        "last_sale_at": st.last_sale_at, "units_sold": st.sold(),
        "removed": st.removed.is_some(),
    })
}

/// The rows as CSV (the inventory's filtered view).
pub fn csv(rows: &[Row]) -> String {
    fn cell(s: &str) -> String {
        // Quoted, and a leading formula character defused (a spreadsheet would run it).
        let s = if s.starts_with(['=', '+', '-', '@']) {
            format!("'{s}")
        } else {
            s.to_string()
        };
        format!("\"{}\"", s.replace('"', "\"\""))
    }
    let mut out = String::from("id,source,sku,title,available,status,days_of_cover,last_sale_at\n");
    for r in rows {
        let st = r.item;
        out.push_str(
            &[
                cell(&r.id()),
                cell(&st.source),
                cell(st.sku.as_deref().unwrap_or("")),
                cell(st.title.as_deref().unwrap_or("")),
                r.available.map(|v| v.to_string()).unwrap_or_default(),
                r.status.as_str().to_string(),
                r.cover
                    .as_ref()
                    .map(|c| format!("{:.1}", c.days_of_cover))
                    .unwrap_or_default(),
                st.last_sale_at.map(super::pages::date).unwrap_or_default(),
            ]
            .join(","),
        );
        out.push('\n');
    }
    out
}

pub async fn handle<S: StateBackend>(dash: &Dashboard<S>, req: Req) -> (Resp, Option<String>) {
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let method = req.method().clone();
    if path == "/api/v1/openapi.json" {
        return (json_resp(StatusCode::OK, &openapi()), None);
    }
    let Some(user) = bearer(dash, &req) else {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "a valid `Authorization: Bearer <token>` is needed",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return (r, None);
    };
    let who = Some(user.name.clone());
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let segs = segs.get(2..).unwrap_or(&[]);
    if method == Method::POST && !user.is_admin() {
        return (
            error(StatusCode::FORBIDDEN, "viewers cannot change anything"),
            who,
        );
    }
    let unavailable = |e: anyhow::Error| {
        tracing::warn!(error = %e, "dashboard API could not read the state");
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the worker's state or queue could not be read",
        )
    };
    let r = match (&method, segs) {
        (&Method::GET, ["items"]) => match dash.snapshot().await {
            Ok(snap) => {
                let f = Filter::for_scope(query.as_deref().unwrap_or(""), &user.scope);
                let selected = view::select(&snap, &user.scope, &f);
                let limit = query_param(query.as_deref(), "limit")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(usize::MAX);
                let offset = query_param(query.as_deref(), "offset")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
                let items: Vec<Value> = selected
                    .iter()
                    .skip(offset)
                    .take(limit)
                    .map(|&i| item_json(&snap.row(i)))
                    .collect();
                json_resp(
                    StatusCode::OK,
                    &json!({ "total": selected.len(), "items": items }),
                )
            }
            Err(e) => unavailable(e),
        },
        (&Method::GET, ["items", id]) => match dash.snapshot().await {
            Ok(snap) => {
                let id = percent_encoding::percent_decode_str(id)
                    .decode_utf8_lossy()
                    .to_string();
                match view::find(&snap, &user.scope, &id) {
                    Some(st) => {
                        let row = Row {
                            item: st,
                            available: st.total(),
                            status: view::status(st, &snap.rules, snap.taken_at),
                            cover: view::cover(st, &snap.rules, snap.taken_at),
                        };
                        let mut v = item_json(&row);
                        v["history"] = json!({
                            "stock": st.history.totals().into_iter().map(|(t, a)| json!({"at": t, "available": a})).collect::<Vec<_>>(),
                            "sales": st.history.sales.iter().map(|(t, u)| json!({"at": t, "units": u})).collect::<Vec<_>>(),
                        });
                        match super::alerts::of_item(dash.state.as_ref(), &user.scope, st).await {
                            Ok(a) => {
                                v["alerts"] = json!(a.iter().map(alert_json).collect::<Vec<_>>());
                                json_resp(StatusCode::OK, &v)
                            }
                            Err(e) => unavailable(e.into()),
                        }
                    }
                    None => error(StatusCode::NOT_FOUND, "no such item"),
                }
            }
            Err(e) => unavailable(e),
        },
        (&Method::GET, ["alerts"]) => match dash.snapshot().await {
            Ok(snap) => {
                let q = query.as_deref();
                let status = query_param(q, "status").filter(|s| !s.is_empty());
                let before = query_param(q, "before").and_then(|c| AlertCursor::parse(&c));
                let limit = query_param(q, "limit")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(ALERTS_LIMIT);
                match super::alerts::page(
                    dash.state.as_ref(),
                    &snap,
                    &user.scope,
                    status.as_deref(),
                    before,
                    limit,
                )
                .await
                {
                    Ok(page) => json_resp(
                        StatusCode::OK,
                        &json!({
                            "alerts": page.entries.iter().map(alert_json).collect::<Vec<_>>(),
                            "next": page.next.map(|c| c.to_param()),
                        }),
                    ),
                    Err(e) => unavailable(e.into()),
                }
            }
            Err(e) => unavailable(e),
        },
        (&Method::POST, ["alerts", id, "resend"]) => match resend(dash, &user.scope, id).await {
            Ok(0) => error(StatusCode::NOT_FOUND, "no such failed alert"),
            Ok(_) => json_resp(StatusCode::OK, &json!({ "resent": [id] })),
            Err(e) => unavailable(e),
        },
        (&Method::GET, ["failed"]) => match dead_list(dash, &user.scope).await {
            Ok(v) => json_resp(
                StatusCode::OK,
                &json!({ "failed": v.iter().map(dead_json).collect::<Vec<_>>() }),
            ),
            Err(e) => unavailable(e),
        },
        (&Method::GET, ["failed", id]) => match EventId::parse(id) {
            None => error(StatusCode::NOT_FOUND, "no such failed event"),
            Some(eid) => match dead_one(dash, &user.scope, eid, false).await {
                Ok(Some((d, payload, _))) => {
                    let mut v = dead_json(&d);
                    if query_param(query.as_deref(), "payload")
                        .is_some_and(|p| p == "true" || p == "1")
                    {
                        v["payload"] = json!(payload);
                    }
                    json_resp(StatusCode::OK, &v)
                }
                Ok(None) => error(StatusCode::NOT_FOUND, "no such failed event"),
                Err(e) => unavailable(e),
            },
        },
        (&Method::POST, ["failed", id, verb @ ("replay" | "purge")]) => match EventId::parse(id) {
            None => error(StatusCode::NOT_FOUND, "no such failed event"),
            Some(eid) => {
                let dry = query_param(query.as_deref(), "dry_run")
                    .is_some_and(|p| p == "true" || p == "1");
                if dry {
                    match dead_one(dash, &user.scope, eid, *verb == "replay").await {
                        Ok(Some((_, _, sims))) => json_resp(
                            StatusCode::OK,
                            &json!({
                                "dry_run": true, "id": eid.to_string(),
                                "outcome": sims.unwrap_or_default().iter().map(|s| json!({
                                    "error": s.error, "already_processed": s.already_processed,
                                    "alerts": s.alerts.iter().map(|a| json!({"rule": a.rule.as_str(), "source": a.source, "item": a.item, "available": a.available})).collect::<Vec<_>>(),
                                    "summary": super::pages::preview_words(s),
                                })).collect::<Vec<_>>(),
                            }),
                        ),
                        Ok(None) => error(StatusCode::NOT_FOUND, "no such failed event"),
                        Err(e) => unavailable(e),
                    }
                } else {
                    match change_dead(dash, &user.scope, eid, *verb == "replay").await {
                        Ok(true) => json_resp(
                            StatusCode::OK,
                            &json!({ if *verb == "replay" { "replayed" } else { "purged" }: [eid.to_string()] }),
                        ),
                        Ok(false) => error(StatusCode::NOT_FOUND, "no such failed event"),
                        Err(e) => unavailable(e),
                    }
                }
            }
        },
        (&Method::GET, ["stats"]) => match dash.snapshot().await {
            Ok(snap) => {
                let sources = view::sources(&user.scope, &dash.sources);
                let figs = view::figures(&snap, &sources);
                let mut v = json!({ "taken_at": snap.taken_at, "sources": figs });
                if matches!(user.scope, view::Scope::All) {
                    v["counters"] = json!(snap.counters);
                } else {
                    v["counters"] = json!(snap
                        .counters
                        .iter()
                        .filter(|(k, _)| k.starts_with("sync."))
                        .collect::<std::collections::BTreeMap<_, _>>());
                }
                json_resp(StatusCode::OK, &v)
            }
            Err(e) => unavailable(e),
        },
        (&Method::GET | &Method::POST, _) => error(
            StatusCode::NOT_FOUND,
            "no such endpoint (see /api/v1/openapi.json)",
        ),
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    };
    (r, who)
}

fn alert_json(e: &crate::alert::OutboxEntry) -> Value {
    json!({
        "id": e.alert.id, "rule": e.alert.rule.as_str(), "source": e.alert.source, "item": e.alert.item,
        "sku": e.alert.sku, "title": e.alert.title, "available": e.alert.available,
        "status": super::pages::status_word(e.status), "recipients": e.alert.recipients,
        "message_id": e.message_id, "error": e.last_error, "attempts": e.attempts,
        "created_at": e.alert.created_at, "sent_at": e.sent_at,
    })
}

fn dead_json(d: &stockhook_shared::queue::DeadLetter) -> Value {
    json!({
        "id": d.id.to_string(), "source": d.source, "platform": d.platform.as_str(), "topic": d.topic,
        "error": d.error, "attempts": d.attempts, "received_at": d.received_at_ms, "dead_at": d.dead_at_ms, "size": d.size,
    })
}

/// The OpenAPI 3.0 description of `/api/v1/`.
pub fn openapi() -> Value {
    let p = |name: &str, desc: &str| json!({"name": name, "in": "query", "required": false, "schema": {"type": "string"}, "description": desc});
    let id = |desc: &str| json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": desc});
    let ok = |desc: &str| json!({"200": {"description": desc, "content": {"application/json": {}}}, "401": {"description": "no or wrong bearer token"}});
    let change = |desc: &str| json!({"200": {"description": desc}, "401": {"description": "no or wrong bearer token"}, "403": {"description": "viewers cannot change anything"}, "404": {"description": "no such (visible) failed event or alert"}});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "stockhook dashboard API", "version": "1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Item": {"type": "object", "required": ["id", "source", "sku", "title", "available", "status"], "properties": {
                "id": {"type": "string", "description": "<source>:<item>"}, "source": {"type": "string"}, "platform": {"type": "string"},
                "item": {"type": "string"}, "sku": {"type": "string", "nullable": true}, "title": {"type": "string", "nullable": true},
                "available": {"type": "integer", "nullable": true},
                "status": {"type": "string", "enum": ["ok", "low", "out", "no_sales", "untracked"]},
                "days_of_cover": {"type": "number", "nullable": true}, "velocity_per_day": {"type": "number", "nullable": true}, "stockout_date": {"type": "integer", "nullable": true, "description": "Unix ms"}, "reorder_qty": {"type": "integer", "nullable": true}, "last_sale_at": {"type": "integer", "nullable": true, "description": "Unix ms"},
                "units_sold": {"type": "integer"}, "removed": {"type": "boolean"}
            }}}
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/items": {"get": {"summary": "Items, filtered and sorted as the inventory page", "parameters": [
                p("q", "search in title, SKU and id"), p("source", "one source"), p("status", "ok, low, out, no_sales, untracked or cover"),
                p("sort", "available, cover, last_sale or name"), p("dir", "asc or desc"), p("limit", "at most this many"), p("offset", "skip this many")],
                "responses": ok("{total, items: [Item]}")}},
            "/api/v1/items/{id}": {"get": {"summary": "One item with its history and alerts", "parameters": [id("<source>:<item>, percent-encoded")],
                "responses": {"200": {"description": "Item, history {stock, sales}, alerts"}, "401": {"description": "no or wrong bearer token"}, "404": {"description": "no such item (or another source's, for a scoped user)"}}}},
            "/api/v1/alerts": {"get": {"summary": "Alerts: sent, pending, failed; newest first, one page at a time", "parameters": [p("status", "sent, pending, failed or cancelled"), p("limit", "alerts per page (default 100, at most 500)"), p("before", "the `next` of the previous page")], "responses": ok("{alerts: [...] with recipients, message_id, error; next: the cursor of the next page, or null}")}},
            "/api/v1/alerts/{id}/resend": {"post": {"summary": "Send a failed alert again (admin)", "parameters": [id("alert id")], "responses": change("{resent: [id]}")}},
            "/api/v1/failed": {"get": {"summary": "Failed events (dead letters)", "responses": ok("{failed: [...]}")}},
            "/api/v1/failed/{id}": {"get": {"summary": "One failed event; its payload only with payload=true", "parameters": [id("event id"), p("payload", "true: include the payload")], "responses": ok("the failed event")}},
            "/api/v1/failed/{id}/replay": {"post": {"summary": "Replay a failed event (admin); dry_run=true previews the alerts it would raise", "parameters": [id("event id"), p("dry_run", "true: change nothing, say what would happen")], "responses": change("{replayed: [id]} or {dry_run: true, outcome}")}},
            "/api/v1/failed/{id}/purge": {"post": {"summary": "Delete a failed event (admin)", "parameters": [id("event id")], "responses": change("{purged: [id]}")}},
            "/api/v1/stats": {"get": {"summary": "Per-source figures and counters (sync.* included)", "responses": ok("{taken_at, sources, counters}")}}
        }
    })
}

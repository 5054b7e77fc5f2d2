//! The dashboard's HTTP side: the accept loop (optional TLS, built the receiver's way), the
//! routes, who may do what (401/403/404), and the headers every answer carries (a strict
//! Content-Security-Policy, no caching, no sniffing, no framing).
//!
//! Logs name the route, the user and the status: never a query string, a body or a token.

use super::auth::{self, User};
use super::pages::{self, Ctx};
use super::view::{self, Filter, Scope};
use super::{alerts, api, Dashboard};
use crate::alert::OutboxStatus;
use crate::state::backend::AlertCursor;
use crate::state::StateBackend;
use bytes::Bytes;
use http::{header, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use maud::Markup;
use std::sync::Arc;
use std::time::Duration;
use stockhook_shared::config::Config;
use stockhook_shared::envelope::EventId;
use stockhook_shared::queue::{DeadFilter, QueueOps};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

pub type Resp = Response<Full<Bytes>>;
pub type Req = http::Request<Incoming>;

/// The alerts page shows the newest this many, with a link to the next (older) page: as many
/// rows as an inventory page. (It was 500: each load then decoded, rendered and sent 500
/// alerts, about 200 KB, the largest of the dashboard's costs while pages load back to back:
/// docs/PERFORMANCE.md, section 23.)
pub const ALERTS_SHOWN: usize = view::PAGE_SIZE;

/// Largest form or API body read.
const MAX_BODY: usize = 16 * 1024;

/// No script, no inline style, nothing from elsewhere; images only ours or `data:` (the logo).
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The TLS acceptor for `[dashboard] tls_cert` + `tls_key` (the receiver's rustls setup).
pub fn tls_acceptor(config: &Config) -> anyhow::Result<Option<TlsAcceptor>> {
    let d = &config.dashboard;
    match (&d.tls_cert, &d.tls_key) {
        (Some(c), Some(k)) => Ok(Some(TlsAcceptor::from(Arc::new(
            stockhook_shared::tls::server_config(c, k, "dashboard")?,
        )))),
        _ => Ok(None),
    }
}

/// Serves until `stop`; in-flight requests finish.
pub async fn serve<S: StateBackend>(
    listener: TcpListener,
    dash: Arc<Dashboard<S>>,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "dashboard accept failed");
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let dash = dash.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_conn(TokioIo::new(stream), dash, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => serve_conn(TokioIo::new(s), dash, stop).await,
                        _ => tracing::debug!("dashboard TLS handshake failed"),
                    }
                }
            }
        });
    }
}

async fn serve_conn<S, IO>(
    io: TokioIo<IO>,
    dash: Arc<Dashboard<S>>,
    mut stop: watch::Receiver<bool>,
) where
    S: StateBackend,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let dash = dash.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(dash, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(io, svc);
    tokio::pin!(conn);
    let _ = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
}

/// Adds the headers every answer carries.
fn secured(mut r: Resp) -> Resp {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(header::HeaderValue::from_static("no-store"));
    r
}

pub fn respond(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn html(status: StatusCode, m: Markup) -> Resp {
    respond(status, "text/html; charset=utf-8", m.into_string())
}

fn redirect(to: &str) -> Resp {
    let mut r = respond(StatusCode::SEE_OTHER, "text/plain", "");
    if let Ok(v) = header::HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Every request: route, answer, log (route kind, user, status).
pub async fn handle<S: StateBackend>(dash: Arc<Dashboard<S>>, req: Req) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let (resp, who) = if path.starts_with("/api/") {
        api::handle(&dash, req).await
    } else {
        pages_route(&dash, req).await
    };
    let kind = route_kind(&path);
    tracing::info!(%method, route = kind, user = who.as_deref().unwrap_or("-"), status = resp.status().as_u16(), "dashboard request");
    secured(resp)
}

/// The route's shape for logs (ids left out: they are not secrets, but a log needs no more).
fn route_kind(path: &str) -> &'static str {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        [] => "overview",
        ["api", "v1", "openapi.json"] => "api.openapi",
        ["api", "v1", "items"] => "api.items",
        ["api", "v1", "items", _] => "api.item",
        ["api", "v1", "alerts", ..] => "api.alerts",
        ["api", "v1", "failed", ..] => "api.failed",
        ["api", "v1", "stats"] => "api.stats",
        ["api", ..] => "api.other",
        ["assets", ..] => "asset",
        ["login"] => "login",
        ["logout"] => "logout",
        ["inventory"] => "inventory",
        ["inventory.csv"] => "inventory.csv",
        ["items", ..] => "item",
        ["alerts", ..] => "alerts",
        ["failed", ..] => "failed",
        _ => "other",
    }
}

/// The form fields of a POST body.
pub async fn form(req: Req) -> Option<Vec<(String, String)>> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .ok()?
        .to_bytes();
    Some(
        url::form_urlencoded::parse(&body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    )
}

fn field<'a>(f: &'a [(String, String)], name: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `?name=...` of a query string.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn pages_route<S: StateBackend>(dash: &Dashboard<S>, req: Req) -> (Resp, Option<String>) {
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let method = req.method().clone();
    if path == "/assets/style.css" {
        let mut r = respond(
            StatusCode::OK,
            "text/css; charset=utf-8",
            super::assets::STYLE_CSS,
        );
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("max-age=3600"),
        );
        return (r, None);
    }
    if path == "/login" {
        return match method {
            Method::POST => {
                let token = form(req)
                    .await
                    .and_then(|f| field(&f, "token").map(str::to_string));
                match token.and_then(|t| dash.auth.login(&t)) {
                    Some((id, ttl)) => {
                        let mut r = redirect("/");
                        if let Ok(v) =
                            header::HeaderValue::from_str(&auth::set_cookie(&id, ttl, dash.secure))
                        {
                            r.headers_mut().insert(header::SET_COOKIE, v);
                        }
                        (r, None)
                    }
                    None => (
                        html(
                            StatusCode::UNAUTHORIZED,
                            pages::login(Some("That token is not valid.")),
                        ),
                        None,
                    ),
                }
            }
            _ => (html(StatusCode::OK, pages::login(None)), None),
        };
    }
    let sid = req
        .headers()
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::session_cookie)
        .map(str::to_string);
    let Some((user, csrf)) = sid.as_deref().and_then(|s| dash.auth.session(s)) else {
        return (redirect("/login"), None);
    };
    let who = Some(user.name.clone());
    let ctx = Ctx { user, csrf: &csrf };
    if method == Method::POST {
        let f = form(req).await.unwrap_or_default();
        if field(&f, "csrf") != Some(csrf.as_str()) {
            return (
                html(
                    StatusCode::FORBIDDEN,
                    pages::message(
                        Some(&ctx),
                        "Refused",
                        "The form expired (CSRF check failed): reload the page and try again.",
                    ),
                ),
                who,
            );
        }
        if path == "/logout" {
            if let Some(s) = &sid {
                dash.auth.logout(s);
            }
            let mut r = redirect("/login");
            if let Ok(v) = header::HeaderValue::from_str(&auth::clear_cookie(dash.secure)) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            return (r, who);
        }
        if !user.is_admin() {
            return (
                html(
                    StatusCode::FORBIDDEN,
                    pages::message(Some(&ctx), "Not allowed", "Only an admin can do that."),
                ),
                who,
            );
        }
        return (post_action(dash, &ctx, &path).await, who);
    }
    if method != Method::GET && method != Method::HEAD {
        return (
            respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "method not allowed",
            ),
            who,
        );
    }
    (get_page(dash, &ctx, &path, query.as_deref()).await, who)
}

fn unavailable(ctx: &Ctx, e: &anyhow::Error) -> Resp {
    tracing::warn!(error = %e, "dashboard could not read the state");
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        pages::message(
            Some(ctx),
            "Unavailable",
            "The worker's state could not be read; try again shortly.",
        ),
    )
}

fn not_found(ctx: &Ctx) -> Resp {
    html(
        StatusCode::NOT_FOUND,
        pages::message(Some(ctx), "Not found", "There is no such page or item."),
    )
}

pub async fn get_page<S: StateBackend>(
    dash: &Dashboard<S>,
    ctx: &Ctx<'_>,
    path: &str,
    query: Option<&str>,
) -> Resp {
    let user = ctx.user;
    if path == "/assets/brand.css" {
        return respond(
            StatusCode::OK,
            "text/css; charset=utf-8",
            super::assets::brand_css(&user.brand.accent),
        );
    }
    let snap = match dash.snapshot().await {
        Ok(s) => s,
        Err(e) => return unavailable(ctx, &e),
    };
    let sources = view::sources(&user.scope, &dash.sources);
    match path {
        "/" => {
            let figs = view::figures(&snap, &sources);
            let queue = queue_figures(dash, &user.scope).await;
            let sync: Vec<(String, i64)> = snap
                .counters
                .iter()
                .filter(|(k, _)| k.starts_with("sync."))
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            html(
                StatusCode::OK,
                pages::overview(ctx, &figs, queue.as_ref(), &sync),
            )
        }
        "/inventory" => {
            let filter = Filter::for_scope(query.unwrap_or(""), &user.scope);
            let selected = view::select(&snap, &user.scope, &filter);
            html(
                StatusCode::OK,
                pages::inventory(ctx, &snap, &selected, &filter, &sources),
            )
        }
        "/inventory.csv" => {
            let filter = Filter::for_scope(query.unwrap_or(""), &user.scope);
            let rows = view::rows(&snap, &user.scope, &filter);
            let mut r = respond(StatusCode::OK, "text/csv; charset=utf-8", api::csv(&rows));
            r.headers_mut().insert(
                header::CONTENT_DISPOSITION,
                header::HeaderValue::from_static("attachment; filename=\"inventory.csv\""),
            );
            r
        }
        "/alerts" => {
            let status = query_param(query, "status").filter(|s| !s.is_empty());
            let before = query_param(query, "before").and_then(|c| AlertCursor::parse(&c));
            // A later page links back to the first (the newest alerts, same status filter).
            let newest = before.is_some().then(|| match &status {
                Some(s) => {
                    let mut q = url::form_urlencoded::Serializer::new(String::new());
                    format!("/alerts?{}", q.append_pair("status", s).finish())
                }
                None => "/alerts".to_string(),
            });
            let page = match alerts::page(
                dash.state.as_ref(),
                &snap,
                &user.scope,
                status.as_deref(),
                before,
                ALERTS_SHOWN,
            )
            .await
            {
                Ok(p) => p,
                Err(e) => return unavailable(ctx, &e.into()),
            };
            let shown: Vec<_> = page.entries.iter().collect();
            let older = page.next.map(|c| {
                let mut q = url::form_urlencoded::Serializer::new(String::new());
                if let Some(s) = &status {
                    q.append_pair("status", s);
                }
                q.append_pair("before", &c.to_param());
                format!("/alerts?{}", q.finish())
            });
            let note = query_param(query, "note");
            html(
                StatusCode::OK,
                pages::alerts(
                    ctx,
                    &shown,
                    status.as_deref(),
                    note.as_deref(),
                    pages::Pager {
                        newest: newest.as_deref(),
                        older: older.as_deref(),
                    },
                ),
            )
        }
        "/failed" => match dead_list(dash, &user.scope).await {
            Ok(dead) => html(
                StatusCode::OK,
                pages::failed_list(ctx, &dead, query_param(query, "note").as_deref()),
            ),
            Err(e) => unavailable(ctx, &e),
        },
        _ => {
            if let Some(id) = path.strip_prefix("/items/") {
                let id = percent_encoding::percent_decode_str(id)
                    .decode_utf8_lossy()
                    .to_string();
                let Some(st) = view::find(&snap, &user.scope, &id) else {
                    return not_found(ctx);
                };
                let alerts = match alerts::of_item(dash.state.as_ref(), &user.scope, st).await {
                    Ok(a) => a,
                    Err(e) => return unavailable(ctx, &e.into()),
                };
                let alerts: Vec<_> = alerts.iter().collect();
                let probe = st.no_sales_alert(st.quiet_since(), &snap.rules, snap.taken_at);
                let next = crate::email::admin_links::next_step(&probe, &dash.stores);
                let status = view::status(st, &snap.rules, snap.taken_at);
                let cover = view::cover(st, &snap.rules, snap.taken_at);
                return html(
                    StatusCode::OK,
                    pages::item(ctx, st, status, cover.as_ref(), &alerts, &next),
                );
            }
            if let Some(id) = path.strip_prefix("/failed/") {
                let Some(eid) = EventId::parse(id) else {
                    return not_found(ctx);
                };
                let want_payload = query_param(query, "payload").is_some();
                let want_preview = query_param(query, "preview").is_some() && user.is_admin();
                return match dead_one(dash, &user.scope, eid, want_preview).await {
                    Ok(Some((d, payload, preview))) => html(
                        StatusCode::OK,
                        pages::failed_detail(
                            ctx,
                            &d,
                            payload.as_deref().filter(|_| want_payload),
                            preview.as_deref(),
                        ),
                    ),
                    Ok(None) => not_found(ctx),
                    Err(e) => unavailable(ctx, &e),
                };
            }
            not_found(ctx)
        }
    }
}

async fn post_action<S: StateBackend>(dash: &Dashboard<S>, ctx: &Ctx<'_>, path: &str) -> Resp {
    let user = ctx.user;
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let out = match segs.as_slice() {
        ["alerts", id, "resend"] => {
            let id = percent_encoding::percent_decode_str(id)
                .decode_utf8_lossy()
                .to_string();
            resend(dash, &user.scope, &id).await.map(|n| {
                redirect(&format!(
                    "/alerts?note={}",
                    pages::enc(&format!("{n} alert(s) queued to be sent again"))
                ))
            })
        }
        ["failed", id, verb @ ("replay" | "purge")] => {
            let Some(eid) = EventId::parse(id) else {
                return not_found(ctx);
            };
            change_dead(dash, &user.scope, eid, *verb == "replay")
                .await
                .map(|done| {
                    let note = if done {
                        format!(
                            "event {eid} {}",
                            if *verb == "replay" {
                                "replayed: the worker reads it again"
                            } else {
                                "purged"
                            }
                        )
                    } else {
                        format!("event {eid} is no longer a failed event")
                    };
                    redirect(&format!("/failed?note={}", pages::enc(&note)))
                })
        }
        _ => return not_found(ctx),
    };
    out.unwrap_or_else(|e| unavailable(ctx, &e))
}

/// The queue's figures for the sources `scope` sees.
async fn queue_figures<S: StateBackend>(
    dash: &Dashboard<S>,
    scope: &Scope,
) -> Option<pages::QueueFigures> {
    let q = dash.queue().await.ok()?;
    match q.stats().await {
        Ok(s) => {
            let mine = |v: Vec<(String, u64)>| -> Vec<(String, u64)> {
                v.into_iter().filter(|(k, _)| scope.allows(k)).collect()
            };
            let pending_by_source = mine(s.pending_by_source);
            let dead_by_source = mine(s.dead_by_source);
            let (pending, dead) = match scope {
                Scope::All => (s.pending, s.dead),
                Scope::Only(_) => (
                    pending_by_source.iter().map(|x| x.1).sum(),
                    dead_by_source.iter().map(|x| x.1).sum(),
                ),
            };
            Some(pages::QueueFigures {
                pending,
                dead,
                pending_by_source,
                dead_by_source,
            })
        }
        Err(_) => {
            dash.queue_failed().await;
            None
        }
    }
}

/// The dead letters `scope` sees, newest first.
pub async fn dead_list<S: StateBackend>(
    dash: &Dashboard<S>,
    scope: &Scope,
) -> anyhow::Result<Vec<stockhook_shared::queue::DeadLetter>> {
    let q = dash.queue().await?;
    let mut v = match q.dead_list(DeadFilter::default()).await {
        Ok(v) => v,
        Err(e) => {
            dash.queue_failed().await;
            return Err(e.into());
        }
    };
    v.retain(|d| scope.allows(&d.source));
    v.sort_by_key(|d| std::cmp::Reverse(d.dead_at_ms));
    Ok(v)
}

/// One dead letter `scope` sees: (it, its payload as text, the dry run when asked).
pub async fn dead_one<S: StateBackend>(
    dash: &Dashboard<S>,
    scope: &Scope,
    id: EventId,
    preview: bool,
) -> anyhow::Result<
    Option<(
        stockhook_shared::queue::DeadLetter,
        Option<String>,
        Option<Vec<crate::control::Simulated>>,
    )>,
> {
    let q = dash.queue().await?;
    let (d, mut env) = match q.dead_show(id).await {
        Ok(x) => x,
        Err(stockhook_shared::queue::QueueError::NotFound(_)) => return Ok(None),
        Err(e) => {
            dash.queue_failed().await;
            return Err(e.into());
        }
    };
    if !scope.allows(&d.source) {
        return Ok(None);
    }
    let payload = Some(String::from_utf8_lossy(&env.body).into_owned());
    let sims = if preview {
        crate::pipeline::read_as_configured(&dash.config, &mut env);
        Some(crate::control::simulate(dash.state.as_ref(), &dash.rules.current(), &[env]).await?)
    } else {
        None
    };
    Ok(Some((d, payload, sims)))
}

/// Replays or purges one dead letter `scope` sees; false when it is not (or no longer) one.
pub async fn change_dead<S: StateBackend>(
    dash: &Dashboard<S>,
    scope: &Scope,
    id: EventId,
    replay: bool,
) -> anyhow::Result<bool> {
    if dead_one(dash, scope, id, false).await?.is_none() {
        return Ok(false);
    }
    let q = dash.queue().await?;
    let f = DeadFilter {
        ids: vec![id],
        ..DeadFilter::default()
    };
    let done = if replay {
        q.dead_replay(f, false).await
    } else {
        q.dead_purge(f, false).await
    };
    match done {
        Ok(ids) => Ok(!ids.is_empty()),
        Err(stockhook_shared::queue::QueueError::NotFound(_)) => Ok(false),
        Err(e) => {
            dash.queue_failed().await;
            Err(e.into())
        }
    }
}

/// Sends a failed alert `scope` sees again; how many were queued (0: not a failed alert).
pub async fn resend<S: StateBackend>(
    dash: &Dashboard<S>,
    scope: &Scope,
    id: &str,
) -> anyhow::Result<usize> {
    let ok = alerts::one(dash.state.as_ref(), scope, id)
        .await?
        .is_some_and(|e| e.status == OutboxStatus::Failed);
    if !ok {
        return Ok(0);
    }
    let now = stockhook_shared::queue::now_ms();
    dash.state
        .update_alerts(vec![id.to_string()], move |e| e.replay(now), vec![])
        .await?;
    dash.wake.notify_one();
    dash.invalidate().await;
    Ok(1)
}

/// The user of a bearer token (`Authorization: Bearer <token>`).
pub fn bearer<'a, S>(dash: &'a Dashboard<S>, req: &Req) -> Option<&'a User> {
    let h = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let t = h
        .strip_prefix("Bearer ")
        .or_else(|| h.strip_prefix("bearer "))?;
    dash.auth.by_token(t)
}

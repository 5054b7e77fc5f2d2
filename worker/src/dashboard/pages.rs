//! The HTML pages, as maud templates (checked when the worker compiles; every value escaped):
//! the layout, login, overview, inventory, item, alerts and failed events.
//!
//! Reading needs no JavaScript. Forms that change something are POSTs carrying the session's
//! CSRF token, and are shown to admins only (the server refuses viewers anyway).

use super::auth::User;
use super::chart;
use super::view::{self, Filter, Row, Sort, SourceFigures, Status};
use crate::alert::{OutboxEntry, OutboxStatus};
use crate::control::Simulated;
use crate::email::admin_links::NextStep;
use crate::state::ItemState;
use maud::{html, Markup, DOCTYPE};
use stockhook_shared::queue::DeadLetter;

/// What every page needs: who is looking and their form token.
pub struct Ctx<'a> {
    pub user: &'a User,
    pub csrf: &'a str,
}

/// Unix ms as `2026-12-01 14:05 UTC`.
pub fn date(ms: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return ms.to_string();
    };
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    t.format(&f).unwrap_or_else(|_| ms.to_string())
}

fn opt_date(ms: Option<i64>) -> String {
    ms.map_or_else(|| "—".to_string(), date)
}

fn num(v: Option<i64>) -> String {
    v.map_or_else(|| "—".to_string(), |n| n.to_string())
}

/// The page frame: brand, navigation, logout.
pub fn layout(ctx: Option<&Ctx>, title: &str, nav: &str, body: Markup) -> Markup {
    let brand = ctx.map(|c| &c.user.brand);
    let brand_name = brand.map_or("stockhook", |b| b.name.as_str());
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (brand_name) }
                link rel="stylesheet" href="/assets/style.css";
                @if ctx.is_some() { link rel="stylesheet" href="/assets/brand.css"; }
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    div.brand {
                        @if let Some(logo) = brand.and_then(|b| b.logo.as_deref()) {
                            img src=(logo) alt="" height="28";
                        }
                        span { (brand_name) }
                    }
                    @if let Some(c) = ctx {
                        nav aria-label="Main" {
                            ul {
                                @for (href, label) in [("/", "Overview"), ("/inventory", "Inventory"), ("/alerts", "Alerts"), ("/failed", "Failed events")] {
                                    li { a href=(href) aria-current=[(nav == href).then_some("page")] { (label) } }
                                }
                            }
                        }
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(c.csrf);
                            span.who { (c.user.name) }
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main #main { h1 { (title) } (body) }
            }
        }
    }
}

pub fn login(error: Option<&str>) -> Markup {
    layout(
        None,
        "Log in",
        "",
        html! {
            form.card method="post" action="/login" {
                @if let Some(e) = error { p.error role="alert" { (e) } }
                label for="token" { "Access token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                button type="submit" { "Log in" }
            }
        },
    )
}

pub fn overview(
    ctx: &Ctx,
    figs: &[SourceFigures],
    queue: Option<&QueueFigures>,
    sync: &[(String, i64)],
) -> Markup {
    layout(
        Some(ctx),
        "Overview",
        "/",
        html! {
            @if let Some(q) = queue {
                p.summary { "Queue: " strong { (q.pending) } " waiting, " strong { (q.dead) } " failed events (dead letters)." }
            } @else {
                p.muted { "Queue figures unavailable (is the receiver running?)." }
            }
            div.cards {
                @for f in figs {
                    section.card aria-labelledby={"src-" (f.source)} {
                        h2 #{"src-" (f.source)} { a href={"/inventory?source=" (f.source)} { (f.source) } }
                        dl.figs {
                            dt { "Last event" } dd { (opt_date(f.last_event_at)) }
                            dt { "Events processed" } dd { (f.processed) }
                            dt { "Items" } dd { (f.items) " (" (f.low) " low, " (f.out) " out)" }
                            dt { "Alerts pending" } dd { (f.alerts_pending) }
                            dt { "Alerts failed" } dd.bad[f.alerts_failed > 0] { (f.alerts_failed) }
                            dt { "Failed events" } dd { (queue.map_or(0, |q| q.dead_of(&f.source))) }
                            dt { "Queued" } dd { (queue.map_or(0, |q| q.pending_of(&f.source))) }
                            }
                        p.spark-label { "Events per hour, last 24 h" }
                        (chart::sparkline(&f.per_hour, &f.source))
                    }
                }
            }
            p.muted { "Verification failures are counted by the receiver: stockhook_verification_failures_total on its /metrics." }
        @if !sync.is_empty() {
                section {
                    h2 { "Catalog sync" }
                    table { thead { tr { th scope="col" { "Counter" } th scope="col" { "Value" } } }
                        tbody { @for (k, v) in sync { tr { td { (k) } td { (v) } } } } }
                }
            }
        },
    )
}

/// The queue's figures the overview shows.
pub struct QueueFigures {
    pub pending: u64,
    pub dead: u64,
    pub pending_by_source: Vec<(String, u64)>,
    pub dead_by_source: Vec<(String, u64)>,
}

impl QueueFigures {
    fn of(v: &[(String, u64)], s: &str) -> u64 {
        v.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n)
    }
    pub fn dead_of(&self, s: &str) -> u64 {
        Self::of(&self.dead_by_source, s)
    }
    pub fn pending_of(&self, s: &str) -> u64 {
        Self::of(&self.pending_by_source, s)
    }
}

fn status_badge(s: Status) -> Markup {
    html! { span class={"badge s-" (s.as_str())} { (s.label()) } }
}

/// The inventory table: `selected` are the filtered, sorted indices into `snap`'s items; only
/// the page's [`view::PAGE_SIZE`] rows are built and rendered.
pub fn inventory(
    ctx: &Ctx,
    snap: &view::Snapshot,
    selected: &[u32],
    filter: &Filter,
    sources: &[String],
) -> Markup {
    let pages = selected.len().div_ceil(view::PAGE_SIZE).max(1);
    let page = filter.page.min(pages - 1);
    let shown: Vec<Row> = selected
        .iter()
        .skip(page * view::PAGE_SIZE)
        .take(view::PAGE_SIZE)
        .map(|&i| snap.row(i))
        .collect();
    let sort_link = |s: Sort| {
        let mut f = filter.clone();
        f.desc = f.sort == s && !f.desc;
        f.sort = s;
        format!("/inventory?{}", f.to_query(None))
    };
    let aria_sort = |s: Sort| {
        (filter.sort == s).then_some(if filter.desc {
            "descending"
        } else {
            "ascending"
        })
    };
    layout(
        Some(ctx),
        "Inventory",
        "/inventory",
        html! {
            form.filters method="get" action="/inventory" role="search" {
                div { label for="q" { "Search" } input #q type="search" name="q" value=(filter.q) placeholder="Title, SKU or id"; }
                div { label for="source" { "Source" }
                    select #source name="source" {
                        option value="" { "All sources" }
                        @for s in sources { option value=(s) selected[filter.source.as_deref() == Some(s.as_str())] { (s) } }
                    }
                }
                div { label for="status" { "Status" }
                    select #status name="status" {
                        option value="" { "Any status" }
                        @for (v, l) in [("ok", "OK"), ("low", "Low"), ("out", "Out of stock"), ("no_sales", "No sales"), ("cover", "Low days of cover"), ("untracked", "Not tracked")] {
                            option value=(v) selected[filter.status.as_deref() == Some(v)] { (l) }
                        }
                    }
                }
                input type="hidden" name="sort" value=(filter.sort.as_str());
                button type="submit" { "Apply" }
                a.button href={"/inventory.csv?" (filter.to_query(None))} download { "Download CSV" }
            }
            p.count role="status" { (selected.len()) " items" @if pages > 1 { ", page " (page + 1) " of " (pages) } }
            div.table-wrap {
                table #inventory {
                    thead { tr {
                        th scope="col" aria-sort=[aria_sort(Sort::Name)] { a href=(sort_link(Sort::Name)) { "Item" } }
                        th.wide scope="col" { "Source" }
                        th.wide scope="col" { "SKU" }
                        th.n scope="col" aria-sort=[aria_sort(Sort::Available)] { a href=(sort_link(Sort::Available)) { "Available" } }
                        th scope="col" { "Status" }
                        th.n scope="col" aria-sort=[aria_sort(Sort::Cover)] { a href=(sort_link(Sort::Cover)) { "Days of cover" } }
                        th.wide scope="col" aria-sort=[aria_sort(Sort::LastSale)] { a href=(sort_link(Sort::LastSale)) { "Last sale" } }
                    } }
                    tbody {
                        @for r in &shown {
                            tr data-source=(r.item.source) {
                                th scope="row" { a href={"/items/" (enc(&r.id()))} { (view::name(r.item)) } }
                                td.wide { (r.item.source) }
                                td.wide { (r.item.sku.as_deref().unwrap_or("—")) }
                                td.n { (num(r.available)) }
                                td {
                                    (status_badge(r.status))
                                    @if let Some(c) = r.cover.as_ref().filter(|c| c.days_of_cover < f64::from(c.cover_days) && r.status != Status::Out) {
                                        " " span.badge.s-cover title={"Fewer days of cover than the " (c.cover_days) "-day lead time: reorder " (c.reorder_qty)} { "Low cover" }
                                    }
                                }
                                td.n { @match r.cover.as_ref() { Some(c) => (format!("{:.1}", c.days_of_cover)), None => "—" } }
                                td.wide { (opt_date(r.item.last_sale_at)) }
                            }
                        }
                    }
                }
            }
            @if pages > 1 {
                nav.pager aria-label="Pages" {
                    @if page > 0 { a href={"/inventory?" (filter.to_query(Some(page - 1)))} rel="prev" { "← Previous" } }
                    @if page + 1 < pages { a href={"/inventory?" (filter.to_query(Some(page + 1)))} rel="next" { "Next →" } }
                }
            }
        },
    )
}

/// What a path segment or query value keeps as it is: RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a path segment.
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

pub fn item(
    ctx: &Ctx,
    st: &ItemState,
    status: Status,
    cover: Option<&crate::cover::CoverView>,
    alerts: &[&OutboxEntry],
    next: &NextStep,
) -> Markup {
    let name = view::name(st);
    layout(
        Some(ctx),
        &name,
        "/inventory",
        html! {
            dl.figs {
                dt { "Source" } dd { (st.source) " (" (st.platform) ")" }
                dt { "Item id" } dd { code { (st.item) } }
                dt { "SKU" } dd { (st.sku.as_deref().unwrap_or("—")) }
                dt { "Available" } dd { (num(st.total())) " " (status_badge(status)) }
                dt { "Units sold" } dd { (st.sold()) }
                @if let Some(c) = cover {
                    dt { "Sells per day" } dd { (format!("{:.2}", c.velocity_per_day)) }
                    dt { "Days of cover" } dd {
                        (format!("{:.1}", c.days_of_cover)) " (lead time " (c.cover_days) " days)"
                        @if c.days_of_cover < f64::from(c.cover_days) { " " span.badge.s-cover { "Low cover" } }
                    }
                    dt { "Runs out" } dd { (date(c.stockout_date)) }
                    dt { "Reorder" } dd { (c.reorder_qty) " units" }
                }
                dt { "Last sale" } dd { (opt_date(st.last_sale_at)) }
                dt { "First seen" } dd { (date(st.first_seen_at)) }
                @if let Some(r) = &st.removed { dt { "Removed" } dd { (date(r.at)) " (" (r.reason) ")" } }
            }
            p { @match &next.link { Some(l) => a.button href=(l) rel="noopener noreferrer" { (next.text) }, None => (next.text) } }
            section aria-labelledby="h-chart" {
                h2 #h-chart { "Stock and sales" }
                (chart::item_chart(&st.history, &format!("Stock and sales of {name}")))
            }
            section aria-labelledby="h-alerts" {
                h2 #h-alerts { "Alert history" }
                (alert_table(ctx, alerts))
            }
        },
    )
}

fn alert_table(ctx: &Ctx, alerts: &[&OutboxEntry]) -> Markup {
    html! {
        @if alerts.is_empty() { p.muted { "No alerts." } } @else {
            div.table-wrap { table.alerts.stack {
                thead { tr {
                    th scope="col" { "Created" } th scope="col" { "Alert" } th scope="col" { "Item" }
                    th scope="col" { "Status" } th scope="col" { "Recipients" } th scope="col" { "Message-ID" } th scope="col" { "Error" }
                    @if ctx.user.is_admin() { th scope="col" { span.sr { "Actions" } } }
                } }
                tbody { @for e in alerts {
                    tr {
                        td data-label="Created" { (date(e.alert.created_at)) }
                        td data-label="Alert" { (e.alert.rule.title()) }
                        td data-label="Item" { (e.alert.display_name()) }
                        td data-label="Status" { span class={"badge a-" (status_word(e.status))} { (status_word(e.status)) } }
                        td data-label="Recipients" { (e.alert.recipients.join(", ")) }
                        td data-label="Message-ID" { code { (e.message_id.as_deref().unwrap_or("—")) } }
                        td data-label="Error" { (e.last_error.as_deref().unwrap_or("")) }
                        @if ctx.user.is_admin() { td {
                            @if e.status == OutboxStatus::Failed {
                                form method="post" action={"/alerts/" (enc(&e.alert.id)) "/resend"} {
                                    input type="hidden" name="csrf" value=(ctx.csrf);
                                    button type="submit" { "Resend" }
                                }
                            }
                        } }
                    }
                } }
            } }
        }
    }
}

pub fn status_word(s: OutboxStatus) -> &'static str {
    match s {
        OutboxStatus::Pending => "pending",
        OutboxStatus::Sent => "sent",
        OutboxStatus::Failed => "failed",
        OutboxStatus::Cancelled => "cancelled",
    }
}

/// The links between pages of alerts.
pub struct Pager<'a> {
    /// Back to the first page (shown on every later page).
    pub newest: Option<&'a str>,
    /// The next page, older alerts.
    pub older: Option<&'a str>,
}

/// The alerts page: one page of `alerts`, newest first, with the links of `pager`.
pub fn alerts(
    ctx: &Ctx,
    alerts: &[&OutboxEntry],
    status: Option<&str>,
    note: Option<&str>,
    pager: Pager<'_>,
) -> Markup {
    layout(
        Some(ctx),
        "Alerts",
        "/alerts",
        html! {
            @if let Some(n) = note { p.note role="status" { (n) } }
            nav.tabs aria-label="Alert status" { ul {
                @for (v, l) in [("", "All"), ("sent", "Sent"), ("pending", "Pending"), ("failed", "Failed")] {
                    li { a href={"/alerts" @if !v.is_empty() { "?status=" (v) }} aria-current=[(status.unwrap_or("") == v).then_some("page")] { (l) } }
                }
            } }
            (alert_table(ctx, alerts))
            @if pager.newest.is_some() || pager.older.is_some() {
                nav.pager aria-label="Pages of alerts" {
                    @if let Some(href) = pager.newest { a rel="first" href=(href) { "Newest alerts" } }
                    @if let Some(href) = pager.older { a rel="next" href=(href) { "Older alerts" } }
                }
            }
        },
    )
}

pub fn failed_list(ctx: &Ctx, dead: &[DeadLetter], note: Option<&str>) -> Markup {
    layout(
        Some(ctx),
        "Failed events",
        "/failed",
        html! {
            @if let Some(n) = note { p.note role="status" { (n) } }
            @if dead.is_empty() { p.muted { "No failed events." } } @else {
                div.table-wrap { table.stack #failed {
                    thead { tr { th scope="col" { "Event" } th scope="col" { "Source" } th scope="col" { "Topic" } th scope="col" { "Failed" } th.n scope="col" { "Attempts" } th scope="col" { "Error" } } }
                    tbody { @for d in dead { tr {
                        th scope="row" data-label="Event" { a href={"/failed/" (d.id)} { code { (d.id) } } }
                        td data-label="Source" { (d.source) } td data-label="Topic" { (d.topic.as_deref().unwrap_or("—")) }
                        td data-label="Failed" { (date(d.dead_at_ms)) }
                        td.n data-label="Attempts" { (d.attempts) } td data-label="Error" { (d.error) }
                    } } }
                } }
            }
        },
    )
}

/// One dead letter; its payload only when asked for, the dry-run preview when asked for.
pub fn failed_detail(
    ctx: &Ctx,
    d: &DeadLetter,
    payload: Option<&str>,
    preview: Option<&[Simulated]>,
) -> Markup {
    let base = format!("/failed/{}", d.id);
    layout(
        Some(ctx),
        &format!("Failed event {}", d.id),
        "/failed",
        html! {
            dl.figs {
                dt { "Source" } dd { (d.source) " (" (d.platform.as_str()) ")" }
                dt { "Topic" } dd { (d.topic.as_deref().unwrap_or("—")) }
                dt { "Received" } dd { (date(d.received_at_ms)) }
                dt { "Failed" } dd { (date(d.dead_at_ms)) " after " (d.attempts) " attempts" }
                dt { "Size" } dd { (d.size) " bytes" }
                dt { "Error" } dd.bad { (d.error) }
            }
            section aria-labelledby="h-payload" {
                h2 #h-payload { "Payload" }
                @match payload {
                    Some(p) => pre #payload tabindex="0" { (p) },
                    None => p { a.button #show-payload href={(base) "?payload=1"} { "Show payload" } " It may hold customer data." },
                }
            }
            @if ctx.user.is_admin() {
                section aria-labelledby="h-replay" {
                    h2 #h-replay { "Replay" }
                    @match preview {
                        None => p { a.button #preview href={(base) "?preview=1"} { "Preview replay (dry run)" } },
                        Some(sims) => div #dry-run role="status" {
                            @for s in sims { p { (preview_words(s)) } }
                        },
                    }
                    div.actions {
                        form method="post" action={(base) "/replay"} {
                            input type="hidden" name="csrf" value=(ctx.csrf);
                            button #replay type="submit" { "Replay now" }
                        }
                        form method="post" action={(base) "/purge"} {
                            input type="hidden" name="csrf" value=(ctx.csrf);
                            button.danger #purge type="submit" { "Purge" }
                        }
                    }
                }
            }
        },
    )
}

/// A dry-run outcome in words, as `failed replay --dry-run` says it.
pub fn preview_words(s: &Simulated) -> String {
    format!("Dry run: {}.", s.summary())
}

pub fn message(ctx: Option<&Ctx>, title: &str, text: &str) -> Markup {
    layout(
        ctx,
        title,
        "",
        html! { p { (text) } p { a href="/" { "Back to the overview" } } },
    )
}

//! The dashboard's static assets, compiled into the binary (nothing loads from a CDN): one
//! stylesheet, plus a per-user one for the brand's accent colour (so the strict CSP needs no
//! inline styles).

/// The stylesheet: readable on a 390 px phone, visible focus, AA contrast.
pub const STYLE_CSS: &str = r#":root{--accent:#0b6e4f;--fg:#1a1a1a;--muted:#595959;--bg:#fff;--line:#d0d0d0;--bad:#a40000}
*{box-sizing:border-box}
body{margin:0;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
a{color:var(--accent)}
a:focus,button:focus,input:focus,select:focus,pre:focus{outline:3px solid #1d4ed8;outline-offset:2px}
.skip{position:absolute;left:-999px}.skip:focus{left:8px;top:8px;background:#fff;padding:8px;z-index:2}
header.top{display:flex;flex-wrap:wrap;align-items:center;gap:8px 16px;padding:8px 16px;border-bottom:4px solid var(--accent)}
.brand{display:flex;align-items:center;gap:8px;font-weight:700;font-size:1.15rem}
header nav ul{display:flex;flex-wrap:wrap;gap:4px 12px;list-style:none;margin:0;padding:0}
header nav a{display:inline-block;padding:6px 2px;text-decoration:none}
header nav a[aria-current=page]{font-weight:700;border-bottom:2px solid var(--accent)}
form.logout{margin-left:auto;display:flex;gap:8px;align-items:center}.who{color:var(--muted)}
main{padding:8px 16px 32px;max-width:1200px}
h1{font-size:1.5rem;margin:12px 0;overflow-wrap:anywhere}h2{font-size:1.15rem}
button,.button{display:inline-block;font:inherit;padding:8px 14px;min-height:44px;border:1px solid var(--accent);border-radius:6px;background:var(--accent);color:#fff;text-decoration:none;cursor:pointer}
.button{background:#fff;color:var(--accent)}
button.danger{background:var(--bad);border-color:var(--bad)}
input,select{font:inherit;padding:8px;min-height:44px;border:1px solid #767676;border-radius:6px;max-width:100%}
label{display:block;font-weight:600;margin-bottom:4px}
.filters{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-end;margin-bottom:8px}
.card{border:1px solid var(--line);border-radius:8px;padding:12px 16px;margin-bottom:12px}
form.card{max-width:420px;display:flex;flex-direction:column;gap:12px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:12px}
dl.figs{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:4px 16px;margin:0}
dl.figs dt{color:var(--muted)}dl.figs dd{margin:0;min-width:0;overflow-wrap:anywhere}
.muted{color:var(--muted)}.bad{color:var(--bad);font-weight:600}.error{color:var(--bad);font-weight:600}
.note{background:#eef6f2;border-left:4px solid var(--accent);padding:8px 12px}
.table-wrap{overflow-x:auto;background:linear-gradient(to right,#fff 30%,#fff0) left/32px 100% no-repeat local,linear-gradient(to left,#fff 30%,#fff0) right/32px 100% no-repeat local,radial-gradient(farthest-side at 0 50%,#0003,#0000) left/12px 100% no-repeat scroll,radial-gradient(farthest-side at 100% 50%,#0003,#0000) right/12px 100% no-repeat scroll}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:8px;border-bottom:1px solid var(--line);vertical-align:top}
thead th{white-space:nowrap}th.n,td.n{text-align:right}
th[aria-sort] a::after{content:" ▲"}th[aria-sort=descending] a::after{content:" ▼"}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:.85rem;border:1px solid currentColor;white-space:nowrap}
.s-out,.a-failed{color:var(--bad)}.s-low{color:#8a4b00}.s-no_sales{color:#5b3f99}.s-ok,.a-sent{color:#0b6e4f}.s-cover{color:#9a3412}
.tabs ul{display:flex;gap:12px;list-style:none;padding:0}.tabs a[aria-current=page]{font-weight:700}
.pager{display:flex;gap:16px;margin-top:12px}
.actions{display:flex;flex-wrap:wrap;gap:12px}
pre{white-space:pre-wrap;word-break:break-all;background:#f5f5f5;padding:12px;border-radius:6px;max-height:60vh;overflow:auto}
figure.stock-chart{display:grid;grid-template-columns:auto minmax(0,1fr);gap:4px 8px;max-width:640px;margin:0;padding:14px 16px 8px 8px;border:1px solid var(--line);border-radius:6px}
.stock-chart .y-axis{display:flex;flex-direction:column;justify-content:space-between;text-align:right}
.stock-chart .y-axis span{line-height:1;margin:-.5em 0}
.stock-chart .x-axis{grid-column:2;display:flex;flex-wrap:wrap;justify-content:space-between;gap:0 12px}
.stock-chart .y-axis,.stock-chart .x-axis{font-size:.8125rem;color:var(--muted);font-variant-numeric:tabular-nums}
svg.chart{display:block;width:100%;height:180px;overflow:visible}
svg.chart .axis{stroke:#767676}svg.chart .stock{fill:none;stroke:var(--accent);stroke-width:2.5}
svg.chart .sale{fill:#d97706}
.legend span::before{content:"";display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}
.key-stock::before{background:var(--accent)}.key-sale::before{background:#d97706}
svg.spark{width:100%;max-width:240px;height:32px}svg.spark rect{fill:var(--accent)}
.spark-label{margin:8px 0 0;color:var(--muted);font-size:.9rem}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
@media (max-width:600px){main{padding:8px}header.top{padding:8px}header nav ul{gap:0 10px}header nav a{padding:10px 2px}th,td{padding:6px 4px;vertical-align:baseline}form.logout{margin-left:0}.wide{display:none}thead th{white-space:normal}
svg.chart{height:140px}
.tabs a,.pager a,p>a:only-child:not(.button){display:inline-block;padding:10px 0}table a{display:block;padding:10px 0}
table.stack thead{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
table.stack,table.stack tbody,table.stack tr{display:block}
table.stack tr{border:1px solid var(--line);border-radius:8px;padding:4px 12px;margin-bottom:8px}
table.stack tbody th,table.stack td{display:grid;grid-template-columns:6.5em minmax(0,1fr);gap:8px;align-items:baseline;justify-items:start;padding:4px 0;border:0;overflow-wrap:anywhere;text-align:left}
table.stack tbody th::before,table.stack td::before{content:attr(data-label);color:var(--muted);font-weight:400}
table.stack td:empty{display:none}}
"#;

/// The per-user stylesheet: the brand's accent colour (validated `#rrggbb`).
pub fn brand_css(accent: &str) -> String {
    format!(":root{{--accent:{accent}}}\n")
}

//! The review report as one self-contained HTML page (no external script, style or font: it
//! opens from a USB stick in an air-gapped browser): per bundle a summary, bar charts by
//! top-level prefix and by detected type, the largest objects, and a table of every object that
//! sorts by any column and filters as you type (a few lines of inline script; without script
//! the table is all there, unsorted).

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::{BundleReview, Group};

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d2430;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:2px solid #d8dee8;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}.muted{color:#5b6677}.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
table{border-collapse:collapse;margin:4px 0 12px}th,td{padding:4px 10px;border-bottom:1px solid #e3e8ef;text-align:left;vertical-align:top}
th{background:#f3f6fa;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:28px}.chart td{border:0;padding:2px 8px}
.bar{height:14px;background:#3b7dd8;border-radius:2px;min-width:1px}.bad{color:#b3261e;font-weight:600}.ok{color:#1e7a34}
.pill{display:inline-block;padding:1px 8px;border-radius:10px;background:#eef2f7;margin-right:6px}
.pill.warn{background:#fde8e6;color:#8c1d18}input.filter{padding:6px 10px;width:320px;border:1px solid #c5cdd8;border-radius:4px}
table.objects th{cursor:pointer;user-select:none}table.objects th:after{content:" \2195";color:#9aa5b4}
"#;

const SCRIPT: &str = r#"
document.querySelectorAll('input.filter').forEach(function(f){
  var t=document.getElementById(f.dataset.table);
  f.addEventListener('input',function(){var q=f.value.toLowerCase();
    t.querySelectorAll('tbody tr').forEach(function(r){r.style.display=r.textContent.toLowerCase().indexOf(q)<0?'none':'';});});});
document.querySelectorAll('table.objects th').forEach(function(th,i){
  th.addEventListener('click',function(){var t=th.closest('table'),b=t.tBodies[0],rows=[].slice.call(b.rows);
    var asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
    rows.sort(function(x,y){var a=x.cells[i].dataset.v||x.cells[i].textContent,c=y.cells[i].dataset.v||y.cells[i].textContent;
      var n=parseFloat(a)-parseFloat(c);var r=isNaN(n)?a.localeCompare(c):n;return asc?r:-r;});
    rows.forEach(function(r){b.appendChild(r);});});});
"#;

/// Bytes as a person reads them.
fn human(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}

fn chart(title: &str, groups: &[Group]) -> Markup {
    let max = groups.iter().map(|g| g.bytes.max(1)).max().unwrap_or(1);
    html! {
        div {
            h3 { (title) }
            table.chart {
                @for g in groups {
                    tr {
                        td { (g.name) }
                        td.n { (g.objects) }
                        td.n { (human(g.bytes)) }
                        td style="width:240px" {
                            div.bar style={ "width:" (g.bytes.max(1) * 240 / max) "px" } {}
                        }
                    }
                }
            }
        }
    }
}

fn bundle(b: &BundleReview, n: usize) -> Markup {
    let table = format!("objects-{n}");
    html! {
        h2 { "Bundle " (b.sequence) " of job " span.mono { (b.job) } @if b.baseline { " (baseline)" } }
        p {
            @match &b.signer {
                Some(k) if b.signature_verified => span.pill.ok { "signed by a trusted key " span.mono { (&k[..k.len().min(16)]) } },
                Some(k) => span.pill.warn { "signed by " span.mono { (&k[..k.len().min(16)]) } ", not checked (no --trust)" },
                None => span.pill.warn { "unsigned" },
            }
            @if b.sealed { span.pill { "sealed (age)" } } @else { span.pill.warn { "not sealed" } }
            @match &b.policy_digest {
                Some(d) => span.pill { "export policy " span.mono { (&d[..d.len().min(16)]) } },
                None => span.pill.warn { "no export policy" },
            }
            @if b.review_policy.is_some() {
                @if b.refused > 0 { span.pill.warn { (b.refused) " refused by the review policy" } }
                @else { span.pill.ok { "all pass the review policy" } }
            }
        }
        p.muted.mono { (b.location) br; "digest " (b.bundle_digest) }
        h3 { "Approvals (" (b.approvals.iter().filter(|a| a.status == "valid").count()) " valid)" }
        @if b.approvals.is_empty() { p.muted { "No approval file beside this bundle." } }
        @else {
            table {
                tr { th { "approver key" } th { "time" } th { "note" } th { "status" } }
                @for a in &b.approvals {
                    tr {
                        td.mono { (a.key.as_deref().map_or("-", |k| &k[..k.len().min(16)])) }
                        td { (a.time.as_deref().unwrap_or("-")) }
                        td { (a.note.as_deref().unwrap_or("")) }
                        @if a.status == "valid" { td { span.pill.ok { "valid" } } } @else { td { span.pill.warn { (a.status) } } }
                    }
                }
            }
        }
        div.grid {
            div {
                h3 { "By operation" }
                table {
                    tr { th { "operation" } th { "objects" } th { "bytes" } }
                    @for g in &b.by_op { tr { td { (g.name) } td.n { (g.objects) } td.n { (human(g.bytes)) } } }
                }
            }
            (chart("By top-level prefix", &b.by_prefix))
            (chart("By detected type", &b.by_type))
        }
        h3 { "Largest objects" }
        table {
            tr { th { "key" } th { "size" } th { "detected type" } }
            @for o in &b.largest { tr { td.mono { (o.key) } td.n { (human(o.size)) } td { (o.detected_type) } } }
        }
        h3 { "Every object (" (b.objects.len()) ")" }
        input.filter type="search" placeholder="filter: key, type, tag, verdict…" data-table=(table);
        table.objects id=(table) {
            thead { tr {
                th { "key" } th { "op" } th { "size" } th { "detected type" } th { "declared type" }
                th { "tags" } th { "metadata" } th { "verdict" } th { "sha256" }
            } }
            tbody {
                @for o in &b.objects {
                    tr {
                        td.mono { (o.key) @if let Some(f) = &o.from { br; span.muted { "from " (f) } } }
                        td { (o.op) }
                        td.n data-v=(o.size) { (human(o.size)) }
                        td { (o.detected_type) }
                        td { (o.content_type.as_deref().unwrap_or("-")) }
                        td.mono { @for (k, v) in &o.tags { (k) "=" (v) br; } }
                        td.mono { @for (k, v) in &o.metadata { (k) ": " (v) br; } }
                        @match o.verdict.as_deref() {
                            Some("ok") => td.ok { "ok" },
                            Some(v) => td.bad { (v) },
                            None => td { "-" },
                        }
                        td.mono { (&o.sha256[..o.sha256.len().min(16)]) }
                    }
                }
            }
        }
    }
}

/// The whole page.
pub fn page(bundles: &[BundleReview]) -> String {
    let objects: usize = bundles.iter().map(|b| b.objects.len()).sum();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "s3-ferry review: " (bundles.len()) " bundle(s)" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "s3-ferry review" }
                p.muted { (bundles.len()) " bundle(s), " (objects) " entries. Every byte was verified against its manifest while this report was made; types are detected from the bytes, not the names." }
                @for (i, b) in bundles.iter().enumerate() { (bundle(b, i)) }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
    .into_string()
}

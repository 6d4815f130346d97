"""``index.html``: the static, self-contained page of a neuron report (inline CSS/JS, images by relative path).

:func:`write_index` reads ``neurons.jsonl`` and ``report.json`` of a run folder, plus ``labels.jsonl`` and
``line/summary.jsonl`` when later stages have written them, and (re)writes the page; every stage that adds
something calls it again. The summary is rendered here; the latent list and cards by a small inline script from
the data embedded in the page (no fetch, so it works opened from ``file://``).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from sae_lab.report import writer

LABELS = "labels.jsonl"
LINE_SUMMARY = "line/summary.jsonl"
_METRICS = ("fvu", "l0", "dead_frac", "acc_orig", "acc_spliced", "acc_mean_ablated", "acc_recovered", "kl")


def write_index(run_dir: str | Path, extras_dir: str | Path | None = None) -> Path:
    """(Re)write ``run_dir/index.html`` from the report files there.

    Args:
        run_dir: a folder holding ``neurons.jsonl`` and ``report.json``.
        extras_dir: where ``labels.jsonl`` and ``line/summary.jsonl`` are read from (default: ``run_dir``).

    Returns:
        The page's path.

    Raises:
        FileNotFoundError: ``run_dir`` holds no report.
    """
    run_dir = Path(run_dir)
    extras = Path(extras_dir) if extras_dir is not None else run_dir
    if not (run_dir / writer.NEURONS).is_file() or not (run_dir / writer.REPORT).is_file():
        raise FileNotFoundError(f"{run_dir} holds no neuron report (run `python -m sae_lab report` first)")
    report = json.loads((run_dir / writer.REPORT).read_text(encoding="utf-8"))
    neurons = writer.read_jsonl(run_dir / writer.NEURONS)
    labels: dict[str, list[dict[str, Any]]] = {}
    for row in writer.read_jsonl(extras / LABELS):
        if isinstance(row.get("latent"), int) and row.get("label"):
            entry = {k: row.get(k) for k in ("label", "evidence", "source")}
            labels.setdefault(str(row["latent"]), []).append(entry)
    line = {
        str(row["latent"]): {"best_concept": row.get("best_concept"), "best_score": row.get("best_score")}
        for row in writer.read_jsonl(extras / LINE_SUMMARY)
        if isinstance(row.get("latent"), int)
    }
    path = run_dir / writer.INDEX
    writer.write_text(path, render_index(report, neurons, labels, line))
    return path


def render_index(
    report: dict[str, Any],
    neurons: list[dict[str, Any]],
    labels: dict[str, list[dict[str, Any]]] | None = None,
    line: dict[str, dict[str, Any]] | None = None,
) -> str:
    """The page as a string (see :func:`write_index`)."""
    slim = [{k: v for k, v in n.items() if k != "stats_block"} for n in neurons]
    data = {"report": report, "neurons": slim, "labels": labels or {}, "line": line or {}}
    # "</" inside a <script> would end it; JSON allows the escaped form.
    blob = json.dumps(writer.plain(data), separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")
    title = f"Neuron report — {report.get('run', '')}"
    return (
        _PAGE.replace("%TITLE%", html.escape(title))
        .replace("%SUMMARY%", _summary(report, labels or {}, line or {}))
        .replace("%DATA%", blob)
    )


def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, bool) or isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.1e}" if x != 0 and abs(x) < 10 ** (-digits) else f"{x:.{digits}f}"
    return html.escape(str(x))


def _tile(name: str, value: str, title: str = "") -> str:
    return (
        f'<div class="tile" title="{html.escape(title)}"><div class="v">{value}</div><div class="k">{name}</div></div>'
    )


def _summary(report: dict[str, Any], labels: dict, line: dict) -> str:
    data, sae = report.get("data", {}), report.get("sae", {})
    metrics = sae.get("metrics") or {}
    ko = report.get("knockout") or {}
    tiles = [
        _tile("images", _num(report.get("num_images")), f"split {data.get('split')} of {data.get('source')}"),
        _tile("latents", f"{report.get('live_latents')} live / {report.get('num_latents')}"),
        _tile("dead", _num(report.get("dead_frac")), "share of latents never in the Top-K code on this split"),
    ]
    if report.get("primitives_total"):
        tiles.append(_tile("primitives recovered", f"{report['primitives_recovered']} / {report['primitives_total']}",
                           "some live latent has image-level AUC ≥ 0.9 for the primitive"))  # fmt: skip
        tiles.append(_tile("latents matched", _num(report.get("latents_matched")),
                           "live latents whose best primitive has image-level AUC ≥ 0.9"))  # fmt: skip
    tiles.append(_tile("knockout r", _num(ko.get("corr")), f"closed form vs measured Δ⁻ over {ko.get('pairs')} pairs"))
    tiles.append(_tile("labelled", str(len(labels)), "latents with a label in labels.jsonl"))
    if line:
        tiles.append(_tile("LINE", str(len(line)), "latents explained by LINE"))
    metric_rows = "".join(f"<tr><th>{k}</th><td>{_num(metrics.get(k), 4)}</td></tr>" for k in _METRICS if k in metrics)
    parts = [
        f'<p class="meta">SAE <code>{html.escape(str(sae.get("dir")))}</code> (layer {html.escape(str(sae.get("layer")))}, '
        f"M = {sae.get('num_latents')}, K = {sae.get('k')}) on classifier <code>{html.escape(str(report.get('classifier', {}).get('checkpoint')))}</code>; "
        f"split <b>{html.escape(str(data.get('split')))}</b> of <code>{html.escape(str(data.get('source')))}</code>, "
        f"{report.get('num_images')} images, grid {data.get('grid')}; {report.get('seconds')} s.</p>",
        f'<div class="tiles">{"".join(tiles)}</div>',
        '<div class="cols">',
        f'<div><h3>SAE metrics (validation)</h3><table class="kv">{metric_rows or "<tr><td>none recorded</td></tr>"}</table></div>',
        f"<div><h3>Latent frequencies</h3>{_histogram_svg(report.get('frequency_histogram') or {})}</div>",
        "</div>",
    ]
    if report.get("primitives"):
        rows = "".join(
            f'<tr class="{"ok" if p["recovered"] else "miss"}"><td>{html.escape(p["primitive"])}</td>'
            f"<td>{_latent_link(p['latent'])}</td><td>{_num(p['image_auc'])}</td><td>{_num(p['token_auc'])}</td>"
            f"<td>{'✓' if p['recovered'] else '✗'}</td></tr>"
            for p in report["primitives"]
        )
        parts.append(
            '<h3>Recovered primitives <span class="hint">(best live latent by image-level AUC; recovered at ≥ 0.9)</span></h3>'
            '<table id="primitives" class="grid"><thead><tr><th>primitive</th><th>latent</th><th>image AUC</th>'
            f"<th>token AUC</th><th>recovered</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    dead = report.get("dead_latents") or []
    links = " ".join(_latent_link(i) for i in dead)
    parts.append(
        f'<details id="dead"><summary><h3>Dead latents ({len(dead)})</h3></summary><p>{links or "none"}</p></details>'
    )
    return "\n".join(parts)


def _latent_link(i: Any) -> str:
    return "–" if i is None else f'<a href="#latent-{int(i)}">#{int(i)}</a>'


def _histogram_svg(hist: dict[str, Any], width: int = 420, height: int = 160) -> str:
    """An inline SVG bar chart of log10(frequency) of the live latents."""
    edges, counts = hist.get("log10_edges") or [], hist.get("counts") or []
    if not counts:
        return "<p>no live latents</p>"
    pad_l, pad_b, pad_t = 34, 28, 8
    w, h = width - pad_l - 16, height - pad_b - pad_t
    top = max(max(counts), 1)
    bw = w / len(counts)
    bars = []
    for j, c in enumerate(counts):
        bh = h * c / top
        x, y = pad_l + j * bw, pad_t + h - bh
        bars.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bw - 1, 1):.1f}" height="{bh:.1f}">'
                    f"<title>10^{edges[j]:.2f}–10^{edges[j + 1]:.2f}: {c} latents</title></rect>")  # fmt: skip
    ticks = []
    for j, e in enumerate(edges):
        if abs(e - round(e)) < 1e-6:
            x = pad_l + j * bw
            ticks.append(f'<text x="{x:.1f}" y="{height - 10}" text-anchor="middle">1e{int(round(e))}</text>')
    axis = (f'<text x="4" y="{pad_t + 10}">{top}</text><text x="4" y="{pad_t + h}">0</text>'
            f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" />')  # fmt: skip
    return (
        f'<svg id="freq-hist" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="histogram of latent frequencies">{"".join(bars)}{"".join(ticks)}{axis}</svg>'
        f'<div class="hint">fraction of tokens on which a live latent is in the Top-K code (log scale); '
        f"{hist.get('dead', 0)} dead latents not shown</div>"
    )


_PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%TITLE%</title>
<style>
:root { --fg:#1d2330; --muted:#6b7280; --line:#e5e7eb; --bg:#fafafa; --accent:#7c2d92; --good:#15803d; --bad:#b91c1c; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color:var(--fg); background:var(--bg); }
header { padding:16px 24px; background:#fff; border-bottom:1px solid var(--line); }
h1 { margin:0; font-size:20px; } h2 { font-size:17px; margin:24px 0 8px; } h3 { font-size:15px; margin:16px 0 6px; }
details summary h3 { display:inline-block; }
main { padding:0 24px 48px; max-width:1400px; }
code { font-size:12px; background:#f1f1f4; padding:1px 4px; border-radius:3px; }
.meta, .hint { color:var(--muted); font-size:12px; font-weight:normal; }
.tiles { display:flex; flex-wrap:wrap; gap:8px; margin:8px 0; }
.tile { background:#fff; border:1px solid var(--line); border-radius:6px; padding:8px 12px; min-width:120px; }
.tile .v { font-size:18px; font-weight:600; } .tile .k { color:var(--muted); font-size:12px; }
.cols { display:flex; flex-wrap:wrap; gap:32px; }
table { border-collapse:collapse; background:#fff; }
table.kv th { text-align:left; font-weight:normal; color:var(--muted); padding:2px 12px 2px 0; }
table.grid th, table.grid td, #latent-list th, #latent-list td { border-bottom:1px solid var(--line); padding:4px 8px; text-align:left; }
tr.miss td { color:var(--bad); } tr.ok td:last-child { color:var(--good); }
#freq-hist rect { fill:var(--accent); } #freq-hist text { font-size:10px; fill:var(--muted); } #freq-hist line { stroke:#999; }
details#dead summary { cursor:pointer; } details#dead a { margin-right:4px; }
.controls { display:flex; flex-wrap:wrap; gap:12px; align-items:center; margin:8px 0; position:sticky; top:0; background:var(--bg); padding:8px 0; z-index:1; }
#filter { width:320px; padding:6px 8px; border:1px solid #bbb; border-radius:4px; }
#latent-list { width:100%; } #latent-list th { cursor:pointer; user-select:none; white-space:nowrap; }
#latent-list th.sorted::after { content:" ▾"; } #latent-list th.sorted.asc::after { content:" ▴"; }
#latent-list tbody tr { cursor:pointer; } #latent-list tbody tr:hover { background:#f3eef7; }
#latent-list tr.is-dead { color:var(--muted); }
img.thumb { width:40px; height:40px; image-rendering:auto; border:1px solid var(--line); display:block; }
.tag { display:inline-block; padding:0 6px; border-radius:8px; font-size:11px; background:#eee; margin-left:4px; }
.tag.dead { background:#fde2e2; color:var(--bad); } .tag.gt { background:#dcfce7; color:var(--good); }
#card { position:fixed; top:0; right:0; bottom:0; width:min(640px, 100%); background:#fff; border-left:1px solid var(--line);
        box-shadow:-4px 0 16px rgba(0,0,0,.08); overflow-y:auto; padding:16px 20px 40px; z-index:5; }
#card[hidden] { display:none; }
#card .close { float:right; font-size:20px; border:none; background:none; cursor:pointer; }
.exemplars { display:grid; grid-template-columns:repeat(auto-fill, 96px); gap:6px; }
.exemplars figure { margin:0; font-size:11px; color:var(--muted); text-align:center; }
.exemplars img { width:96px; height:96px; display:block; border:1px solid var(--line); }
.bars { width:100%; } .bars td { padding:2px 6px; font-size:12px; white-space:nowrap; }
.bar { height:10px; background:var(--good); border-radius:2px; } .bar.neg { background:var(--bad); } .bar.gt { background:var(--accent); }
.labels li { margin-bottom:4px; } .labels .src { color:var(--muted); font-size:11px; }
.empty { color:var(--muted); font-style:italic; }
</style>
</head>
<body>
<header><h1>%TITLE%</h1></header>
<main>
<section id="summary">
<h2>Summary</h2>
%SUMMARY%
</section>
<section id="latents">
<h2>Latents</h2>
<div class="controls">
  <input id="filter" type="search" placeholder="filter: id, class, primitive, label…" aria-label="filter latents">
  <label>sort by <select id="sort">
    <option value="frequency">frequency</option><option value="monosemanticity">monosemanticity</option>
    <option value="gt_auc">ground-truth AUC</option><option value="id">id</option></select></label>
  <button id="order" type="button">descending</button>
  <label><input id="live-only" type="checkbox"> live only</label>
  <span id="count" class="hint"></span>
</div>
<table id="latent-list">
<thead><tr><th data-sort="id">latent</th><th>exemplar</th><th>label</th><th>top classes</th>
<th data-sort="frequency">frequency</th><th data-sort="monosemanticity">monosemanticity</th><th data-sort="gt_auc">ground truth</th></tr></thead>
<tbody></tbody>
</table>
</section>
</main>
<aside id="card" hidden></aside>
<script id="report-data" type="application/json">%DATA%</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("report-data").textContent);
const NEURONS = DATA.neurons, LABELS = DATA.labels, LINE = DATA.line;
const BY_ID = new Map(NEURONS.map(n => [n.id, n]));
const state = { sort: "frequency", desc: true, filter: "", liveOnly: false };
const KEYS = {
  id: n => n.id,
  frequency: n => n.frequency ?? -1,
  monosemanticity: n => n.monosemanticity ?? -1,
  gt_auc: n => (n.ground_truth && n.ground_truth.image_auc != null) ? n.ground_truth.image_auc : -1,
};
function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function fmt(x, d = 3) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  if (typeof x !== "number") return esc(x);
  if (x !== 0 && Math.abs(x) < Math.pow(10, -d)) return x.toExponential(1);
  return Number.isInteger(x) ? String(x) : x.toFixed(d);
}
function labelsOf(n) { return LABELS[String(n.id)] || []; }
function firstLabel(n) {
  const l = labelsOf(n);
  if (l.length) return l[0].label;
  const line = LINE[String(n.id)];
  return line ? line.best_concept : "";
}
const SEARCH = new Map(NEURONS.map(n => [n.id, [
  "#" + n.id, String(n.id), n.dead ? "dead" : "live",
  ...(n.top_classes || []).map(c => c.class),
  n.ground_truth ? n.ground_truth.primitive : "",
  ...labelsOf(n).map(l => l.label), (LINE[String(n.id)] || {}).best_concept || "",
].join(" ").toLowerCase()]));

function visible() {
  const words = state.filter.toLowerCase().split(/\s+/).filter(Boolean);
  const key = KEYS[state.sort];
  const rows = NEURONS.filter(n => (!state.liveOnly || !n.dead) && words.every(w => SEARCH.get(n.id).includes(w)));
  rows.sort((a, b) => (key(a) - key(b)) * (state.desc ? -1 : 1) || a.id - b.id);
  return rows;
}
function rowHtml(n) {
  const ex = (n.exemplars || []).find(e => e.image);
  const img = ex ? `<img class="thumb" src="${esc(ex.image)}" alt="top exemplar of latent ${n.id}" loading="lazy">` : "";
  const top = (n.top_classes || []).slice(0, 3).map(c => esc(c.class)).join(", ");
  const gt = n.ground_truth ? `${esc(n.ground_truth.primitive)} ${fmt(n.ground_truth.image_auc, 2)}` : "–";
  const tags = (n.dead ? '<span class="tag dead">dead</span>' : "") +
    (n.ground_truth && n.ground_truth.image_auc >= 0.9 && !n.dead ? '<span class="tag gt">GT</span>' : "");
  return `<tr class="latent-row${n.dead ? " is-dead" : ""}" data-id="${n.id}"><td>#${n.id}${tags}</td><td>${img}</td>` +
    `<td>${esc(firstLabel(n))}</td><td>${top}</td><td>${fmt(n.frequency, 4)}</td><td>${fmt(n.monosemanticity, 2)}</td><td>${gt}</td></tr>`;
}
function renderList() {
  const rows = visible();
  document.querySelector("#latent-list tbody").innerHTML = rows.map(rowHtml).join("");
  document.getElementById("count").textContent = `${rows.length} of ${NEURONS.length} latents`;
  document.querySelectorAll("#latent-list th[data-sort]").forEach(th => {
    th.classList.toggle("sorted", th.dataset.sort === state.sort);
    th.classList.toggle("asc", th.dataset.sort === state.sort && !state.desc);
  });
  document.getElementById("sort").value = state.sort;
  document.getElementById("order").textContent = state.desc ? "descending" : "ascending";
}

function classBars(list, scale, neg) {
  if (!list || !list.length) return '<p class="empty">none</p>';
  const rows = list.map(c => {
    const w = Math.min(100, 100 * Math.abs(c.S ?? 0) / scale);
    return `<tr><td>${esc(c.class)}</td><td style="width:40%"><div class="bar${neg ? " neg" : ""}" style="width:${w}%"></div></td>` +
      `<td>S ${fmt(c.S, 2)}</td><td>PMI ${fmt(c.pmi, 2)}</td><td>Δ⁻ ${fmt(c.delta, 3)}</td>` +
      `<td>meas. ${fmt(c.delta_measured, 3)}</td><td>w ${fmt(c.w, 3)}</td><td>n ${fmt(c.n_on)}</td></tr>`;
  });
  return `<table class="bars">${rows.join("")}</table>`;
}
function cardHtml(n) {
  const labels = labelsOf(n), line = LINE[String(n.id)];
  const scale = Math.max(1e-9, ...[...(n.top_classes || []), ...(n.anti_classes || [])].map(c => Math.abs(c.S ?? 0)));
  const ex = (n.exemplars || []).filter(e => e.image).map(e =>
    `<figure><img src="${esc(e.image)}" alt="exemplar ${e.id}"><figcaption>${esc(e.class)} · ${fmt(e.z_max, 2)}</figcaption></figure>`).join("");
  let labelHtml = labels.map(l => `<li><b>${esc(l.label)}</b> <span class="src">${esc(l.source || "")}</span>` +
    (l.evidence ? `<div class="hint">${esc(typeof l.evidence === "string" ? l.evidence : JSON.stringify(l.evidence))}</div>` : "") + "</li>").join("");
  if (line) labelHtml += `<li><b>${esc(line.best_concept)}</b> <span class="src">LINE, score ${fmt(line.best_score, 3)}</span></li>`;
  let gt = '<p class="empty">no ground truth for this data</p>';
  if (n.ground_truth) {
    const all = Object.entries(n.ground_truth.all || {}).sort((a, b) => (b[1] ?? 0) - (a[1] ?? 0));
    gt = `<p>best: <b>${esc(n.ground_truth.primitive)}</b>, image AUC ${fmt(n.ground_truth.image_auc)}, token AUC ${fmt(n.ground_truth.token_auc)}</p>` +
      `<table class="bars">${all.map(([p, a]) => `<tr><td>${esc(p)}</td><td style="width:60%"><div class="bar gt" style="width:${100 * (a ?? 0)}%"></div></td><td>${fmt(a, 3)}</td></tr>`).join("")}</table>`;
  }
  const stats = [["frequency (Top-K tokens)", fmt(n.frequency, 5)], ["image frequency", fmt(n.image_frequency, 4)],
    ["dense frequency", fmt(n.dense_frequency, 4)], ["τ (q-quantile of z_max)", fmt(n.tau)], ["on-images", fmt(n.n_on)],
    ["mean z_avg on", fmt(n.mean_on_zavg)], ["mean activation", fmt(n.mean_act)], ["monosemanticity", fmt(n.monosemanticity)]];
  return `<button class="close" type="button" aria-label="close">×</button>` +
    `<h2 id="card-title">Latent #${n.id}${n.dead ? ' <span class="tag dead">dead</span>' : ""}</h2>` +
    `<h3>Labels</h3><ul class="labels">${labelHtml || '<li class="empty">no labels yet (python -m sae_lab label)</li>'}</ul>` +
    `<h3>Exemplars</h3>${ex ? `<div class="exemplars">${ex}</div>` : `<p class="empty">${n.dead ? "dead: never in the Top-K code, no pictures drawn" : "never active"}</p>`}` +
    `<h3>Top classes</h3>${classBars(n.top_classes, scale, false)}` +
    `<h3>Anti-classes</h3>${classBars(n.anti_classes, scale, true)}` +
    `<h3>Statistics</h3><table class="kv">${stats.map(([k, v]) => `<tr><th>${k}</th><td>${v}</td></tr>`).join("")}</table>` +
    `<h3>Ground truth</h3>${gt}`;
}
function openCard(id) {
  const n = BY_ID.get(id), card = document.getElementById("card");
  if (!n) return;
  card.innerHTML = cardHtml(n);
  card.hidden = false;
  card.dataset.id = String(id);
  card.scrollTop = 0;
  card.querySelector(".close").addEventListener("click", closeCard);
}
function closeCard() {
  document.getElementById("card").hidden = true;
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
}
function fromHash() {
  const m = /^#latent-(\d+)$/.exec(location.hash);
  if (m) openCard(Number(m[1]));
}

document.getElementById("filter").addEventListener("input", e => { state.filter = e.target.value; renderList(); });
document.getElementById("sort").addEventListener("change", e => { state.sort = e.target.value; state.desc = state.sort !== "id"; renderList(); });
document.getElementById("order").addEventListener("click", () => { state.desc = !state.desc; renderList(); });
document.getElementById("live-only").addEventListener("change", e => { state.liveOnly = e.target.checked; renderList(); });
document.querySelectorAll("#latent-list th[data-sort]").forEach(th => th.addEventListener("click", () => {
  if (state.sort === th.dataset.sort) state.desc = !state.desc; else { state.sort = th.dataset.sort; state.desc = state.sort !== "id"; }
  renderList();
}));
document.querySelector("#latent-list tbody").addEventListener("click", e => {
  const tr = e.target.closest("tr[data-id]");
  if (tr) location.hash = "latent-" + tr.dataset.id;
});
document.addEventListener("keydown", e => { if (e.key === "Escape") closeCard(); });
window.addEventListener("hashchange", fromHash);
renderList();
fromHash();
</script>
</body>
</html>
"""

"use strict";
// The latent list and cards of index.html, drawn from the JSON in #report-data. Every number arrives formatted
// (sae_lab.report.pages.num) and every threshold applied (`matched`); this script only lays things out.
const DATA = JSON.parse(document.getElementById("report-data").textContent);
const LATENTS = DATA.latents;
const BY_ID = new Map(LATENTS.map(n => [n.latent, n]));
const state = { sort: "frequency", desc: true, filter: "", liveOnly: false };
const KEYS = {
  id: n => n.latent,
  frequency: n => n.key.frequency,
  monosemanticity: n => n.key.monosemanticity,
  gt_auc: n => n.key.gt_auc,
};
function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function visible() {
  const words = state.filter.toLowerCase().split(/\s+/).filter(Boolean);
  const key = KEYS[state.sort];
  const rows = LATENTS.filter(n => (!state.liveOnly || !n.dead) && words.every(w => n.search.includes(w)));
  rows.sort((a, b) => (key(a) - key(b)) * (state.desc ? -1 : 1) || a.latent - b.latent);
  return rows;
}
function tags(n) {
  return (n.dead ? '<span class="tag dead">dead</span>' : "") + (n.matched ? '<span class="tag gt">GT</span>' : "");
}
function rowHtml(n) {
  const img = n.thumb ? `<img class="thumb" src="${esc(n.thumb)}" alt="top exemplar of latent ${n.latent}" loading="lazy">` : "";
  const label = n.label ? `${esc(n.label)} <span class="hint">${esc(n.label_method)}</span>` : "";
  return `<tr class="latent-row${n.dead ? " is-dead" : ""}" data-id="${n.latent}"><td>#${n.latent}${tags(n)}</td><td>${img}</td>` +
    `<td>${label}</td><td>${esc(n.top)}</td><td>${n.freq}</td><td>${n.mono}</td><td>${esc(n.gt)}</td></tr>`;
}
function renderList() {
  const rows = visible();
  document.querySelector("#latent-list tbody").innerHTML = rows.map(rowHtml).join("");
  document.getElementById("count").textContent = `${rows.length} of ${LATENTS.length} latents`;
  document.querySelectorAll("#latent-list th[data-sort]").forEach(th => {
    th.classList.toggle("sorted", th.dataset.sort === state.sort);
    th.classList.toggle("asc", th.dataset.sort === state.sort && !state.desc);
  });
  document.getElementById("sort").value = state.sort;
  document.getElementById("order").textContent = state.desc ? "descending" : "ascending";
}

function classBars(list, neg) {
  if (!list.length) return '<p class="empty">none</p>';
  const head = "<tr><th>class</th><th></th><th>S</th><th>PMI</th><th>Δ⁻</th><th>measured</th><th>w</th><th>n</th></tr>";
  const rows = list.map(c => `<tr><td>${esc(c.name)}</td><td style="width:40%"><div class="bar${neg ? " neg" : ""}" ` +
    `style="width:${c.width}%"></div></td>${c.cells.map(v => `<td class="num">${esc(v)}</td>`).join("")}</tr>`);
  return `<table class="bars">${head}${rows.join("")}</table>`;
}
function thumbs(images) {
  if (!images.length) return "";
  return `<div class="thumbs">${images.map(i => `<figure><img src="${esc(i.src)}" alt="${esc(i.caption)}" loading="lazy">` +
    `<figcaption>${esc(i.caption)}</figcaption></figure>`).join("")}</div>`;
}
function termBars(e) {
  if (!e.terms.length) return "";
  const rows = e.terms.map(t => `<tr><td>${esc(t.concept)}</td><td style="width:45%"><div class="track">` +
    `<div class="bar${t.neg ? " neg" : ""}" style="width:${t.width}%"></div></div></td><td class="num">${esc(t.weight)}</td></tr>`);
  if (e.bias !== null) rows.push(`<tr><td class="hint">bias</td><td></td><td class="num">${esc(e.bias)}</td></tr>`);
  return `<table class="bars terms">${rows.join("")}</table>`;
}
function explanationHtml(e) {
  const text = e.text ? `<div class="text">${esc(e.text)}</div>` : `<div class="empty">no explanation: ${esc(e.reason || "no reason given")}</div>`;
  const cands = e.candidates.length ? `<div class="cands">candidates: ${e.candidates.map(c =>
    `${esc(c.concept)} <span class="num">${esc(c.score)}</span>`).join(" · ")}</div>` : "";
  const facts = e.facts.length ? `<div class="hint">${e.facts.map(([k, v]) => `${esc(k)}: ${esc(v)}`).join(" · ")}</div>` : "";
  const page = e.page ? ` · <a href="${esc(e.page)}">details</a>` : "";
  return `<div class="explanation" data-method="${esc(e.method)}"><div class="method"><a href="#${esc(e.anchor)}">${esc(e.method)}</a>` +
    `${e.preferred ? ' <span class="tag gt">shown in list</span>' : ""}</div>${text}${termBars(e)}${cands}${thumbs(e.images)}${facts}` +
    `<div class="hint">cost: ${esc(e.cost)}${page}</div></div>`;
}
function cardHtml(n) {
  const c = n.card;
  const ex = c.exemplars.map(e => `<figure><img src="${esc(e.src)}" alt="exemplar of latent ${n.latent}">` +
    `<figcaption>${esc(e.caption)}</figcaption></figure>`).join("");
  const sprite = c.sprite ? `<p class="hint"><a href="${esc(c.sprite)}">all exemplars as one image</a></p>` : "";
  let gt = '<p class="empty">no ground truth for this data</p>';
  if (c.gt) {
    gt = `<p>best: <b>${esc(c.gt.primitive)}</b>, image AUC ${esc(c.gt.image_auc)}, token AUC ${esc(c.gt.token_auc)}</p>` +
      `<table class="bars">${c.gt.all.map(([p, w, a]) => `<tr><td>${esc(p)}</td><td style="width:60%"><div class="bar gt" ` +
      `style="width:${w}%"></div></td><td class="num">${esc(a)}</td></tr>`).join("")}</table>`;
  }
  const expl = c.explanations.map(explanationHtml).join("") ||
    '<p class="empty">no explanations yet (python -m sae_lab explain METHOD)</p>';
  return `<button class="close" type="button" aria-label="close">×</button>` +
    `<h2 id="card-title">Latent #${n.latent}${tags(n)}</h2>` +
    `<h3>Explanations</h3>${expl}` +
    `<h3>Exemplars</h3>${ex ? `<div class="exemplars">${ex}</div>${sprite}` : `<p class="empty">${n.dead ? "dead: never in the Top-K code, no pictures drawn" : "never active"}</p>`}` +
    `<h3>Top classes</h3>${classBars(c.top_classes, false)}` +
    `<h3>Anti-classes</h3>${classBars(c.anti_classes, true)}` +
    `<h3>Statistics</h3><table class="kv">${c.stats.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`).join("")}</table>` +
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
  if (/^#latent-/.test(location.hash)) history.replaceState(null, "", location.pathname + location.search);
}
function fromHash() {
  const m = /^#latent-(\d+)$/.exec(location.hash);
  if (m) openCard(Number(m[1])); else document.getElementById("card").hidden = true;
}
function setFilter(text) {
  state.filter = text;
  document.getElementById("filter").value = text;
  renderList();
}

document.getElementById("filter").addEventListener("input", e => setFilter(e.target.value));
document.getElementById("sort").addEventListener("change", e => { state.sort = e.target.value; state.desc = state.sort !== "id"; renderList(); });
document.getElementById("order").addEventListener("click", () => { state.desc = !state.desc; renderList(); });
document.getElementById("live-only").addEventListener("change", e => { state.liveOnly = e.target.checked; renderList(); });
document.querySelectorAll("#latent-list th[data-sort]").forEach(th => th.addEventListener("click", () => {
  if (state.sort === th.dataset.sort) state.desc = !state.desc; else { state.sort = th.dataset.sort; state.desc = state.sort !== "id"; }
  renderList();
}));
document.querySelectorAll("button[data-filter]").forEach(b => b.addEventListener("click", () => {
  setFilter(b.dataset.filter);
  document.getElementById("latents").scrollIntoView();
}));
document.querySelector("#latent-list tbody").addEventListener("click", e => {
  const tr = e.target.closest("tr[data-id]");
  if (tr) location.hash = "latent-" + tr.dataset.id;
});
document.addEventListener("keydown", e => { if (e.key === "Escape") closeCard(); });
window.addEventListener("hashchange", fromHash);
renderList();
fromHash();

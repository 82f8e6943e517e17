# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The viewer's single page: HTML, CSS and plain JavaScript, all inline
(nothing is fetched from anywhere but the viewer's own server)."""

__all__ = ['PAGE']

PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>cnnfind viewer</title>
<style>
body{font:14px sans-serif;margin:12px;background:#f4f4f4;color:#222}
#bar{display:flex;flex-wrap:wrap;gap:14px;align-items:center;margin:8px 0}
#main{display:flex;gap:16px;align-items:flex-start}
#stack{position:relative;background:#000;flex:none}
#stack img,#stack svg{position:absolute;left:0;top:0;width:100%;height:100%;
 image-rendering:pixelated}
circle{fill:none;stroke:#00e5ff;stroke-width:1.5px;vector-effect:non-scaling-stroke}
#side{width:330px}
#hist{background:#fff;border:1px solid #ccc}
.note{color:#a33}
#info td{padding:1px 6px}
</style></head><body>
<h3 id="title">cnnfind viewer</h3>
<div id="bar">
 <label>stretch <select id="stretch"><option>zscale</option>
  <option>asinh</option></select></label>
 <label><input type="checkbox" id="heat" checked> heatmap</label>
 <label>min_probability <input type="range" id="slider" min="0" max="1"
  step="0.01" value="0.3"> <b id="pval"></b></label>
 <span>detections: <b id="count">-</b></span>
 <button id="save">Save catalogue</button> <span id="saved"></span>
</div>
<div id="main">
 <div id="stack"><img id="image" alt="image"><img id="heatimg" alt="heatmap">
  <svg id="marks" preserveAspectRatio="none"></svg></div>
 <div id="side">
  <div>Probabilities of the <span id="ncand"></span> candidates
   (heatmap peaks above the threshold; log counts); the cut is red.</div>
  <svg id="hist" width="330" height="170"></svg>
  <table id="info"></table>
  <div id="fwhmnote" class="note"></div>
  <div>Slider history (cut: detections):</div>
  <ol id="log"></ol>
 </div>
</div>
<script>
"use strict";
const $ = id => document.getElementById(id);
const NS = 'http://www.w3.org/2000/svg';
let info = null, seq = 0, pending = Promise.resolve();

function svgEl(tag, attrs) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  return e;
}
async function getJSON(url, opts) {
  const r = await fetch(url, opts);
  const d = await r.json();
  if (!r.ok) throw new Error(d.error || r.statusText);
  return d;
}
function drawHist(p) {
  const h = $('hist'), probs = info.candidates.probability, nb = 50;
  const counts = new Array(nb).fill(0);
  for (const v of probs) counts[Math.min(nb - 1, Math.floor(v * nb))]++;
  const top = Math.log1p(Math.max(1, ...counts)), W = 310, H = 140, x0 = 10;
  h.replaceChildren();
  counts.forEach((c, i) => {
    const bh = H * Math.log1p(c) / top;
    h.appendChild(svgEl('rect', {x: x0 + i * W / nb, y: 10 + H - bh,
      width: W / nb - 1, height: bh, fill: (i + 1) / nb > p ? '#3a7' : '#bbb'}));
  });
  h.appendChild(svgEl('line', {x1: x0 + p * W, x2: x0 + p * W, y1: 5,
    y2: H + 12, stroke: 'red', 'stroke-width': 2}));
  for (const t of [0, 0.5, 1]) {
    const lab = svgEl('text', {x: x0 + t * W - 6, y: H + 26, 'font-size': 11});
    lab.textContent = t; h.appendChild(lab);
  }
}
function drawMarks(d) {
  const m = $('marks'), r = 1.5 * info.fwhm;
  m.replaceChildren();
  for (let i = 0; i < d.count; i++)
    m.appendChild(svgEl('circle', {cx: d.x[i] + 0.5,
      cy: info.ny - 0.5 - d.y[i], r: r}));
}
// The slider's input handler; ?p=... uses it too.
function setThreshold(p) {
  const my = ++seq;
  $('pval').textContent = p.toFixed(2);
  $('count').textContent = '...';
  drawHist(p);
  pending = getJSON('api/detections?p=' + p).then(d => {
    if (my !== seq) return;  // a newer value is on its way
    drawMarks(d);
    $('count').textContent = d.count;
    const li = document.createElement('li');
    li.dataset.p = p; li.dataset.count = d.count;
    li.textContent = p.toFixed(2) + ': ' + d.count;
    $('log').appendChild(li);
  }).catch(e => { $('count').textContent = 'error: ' + e.message; });
  return pending;
}
async function save() {
  const p = Number($('slider').value);
  $('saved').textContent = 'saving...';
  try {
    const d = await getJSON('api/save', {method: 'POST',
      headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({min_probability: p})});
    $('saved').textContent = 'wrote ' + d.rows + ' rows to ' + d.path;
    $('saved').dataset.rows = d.rows; $('saved').dataset.path = d.path;
    $('saved').dataset.p = d.min_probability;
  } catch (e) { $('saved').textContent = 'error: ' + e.message; }
}
function showImage() {
  $('image').src = 'image.png?stretch=' + $('stretch').value;
}
async function start() {
  info = await getJSON('api/info');
  document.title = 'cnnfind viewer - ' + info.name;
  $('title').textContent = info.name + ' (' + info.nx + ' x ' + info.ny + ')';
  const zoom = Math.min(8, 760 / Math.max(info.nx, info.ny));
  $('stack').style.width = info.nx * zoom + 'px';
  $('stack').style.height = info.ny * zoom + 'px';
  $('marks').setAttribute('viewBox', '0 0 ' + info.nx + ' ' + info.ny);
  $('ncand').textContent = info.candidates.count;
  const rows = [['FWHM', info.fwhm.toFixed(2) + ' px' +
      (info.fwhm_estimated ? ' (estimated from the image)' : ' (given)')],
    ['threshold', info.threshold_sigma + ' sigma = ' + info.threshold.toPrecision(4)],
    ['background', info.background.toPrecision(5) + ' +- ' +
      info.background_std.toPrecision(3)],
    ['model', info.model], ['catalogue', info.out]];
  for (const [k, v] of rows) {
    const tr = $('info').insertRow();
    tr.insertCell().textContent = k; tr.insertCell().textContent = v;
  }
  if (info.fwhm_note) $('fwhmnote').textContent = info.fwhm_note;
  $('heatimg').src = 'heatmap.png';
  showImage();
  $('stretch').addEventListener('change', showImage);
  $('heat').addEventListener('change',
    () => { $('heatimg').style.display = $('heat').checked ? '' : 'none'; });
  const slider = $('slider');
  slider.addEventListener('input', () => setThreshold(Number(slider.value)));
  $('save').addEventListener('click', save);
  const q = new URLSearchParams(location.search);
  if (q.get('stretch')) { $('stretch').value = q.get('stretch'); showImage(); }
  if (q.get('heatmap') === '0') $('heat').click();
  slider.value = info.default_min_probability;
  await setThreshold(Number(slider.value));
  // ?p=0.2,0.8 moves the slider to each value in turn (as a user would).
  for (const v of (q.get('p') || '').split(',').filter(s => s !== '')) {
    slider.value = v;
    slider.dispatchEvent(new Event('input'));
    await pending;
  }
  if (q.get('autosave') === '1') await save();
  document.body.dataset.done = '1';
}
start().catch(e => { $('title').textContent = 'error: ' + e.message; });
</script></body></html>
"""

// console.js — focald's review console: one page, hash routes, the JSON API through fetch().
//
// Pages: #/ (overview), #/map/<ds> (the data map), #/hard/<ds> (hardest examples), #/sample/<ds>/<id>,
// #/queues/<ds>, #/queue/<ds>/<name> (queue mode) and #/relabels/<ds> (the relabel feed). Query parameters of a page follow its path after '?'.
// Everything the page shows is built as DOM nodes with textContent: nothing from the API is parsed as HTML.
// The bearer token (asked for on a 401) and the reviewer's name live in sessionStorage: this tab only.
'use strict';

const STATES = ['open', 'queued', 'in_review', 'relabelled', 'confirmed', 'dismissed'];
const UNDECIDED = ['open', 'queued', 'in_review'];
const FIELDS = ['seen', 'last_loss', 'mean_loss', 'max_loss', 'ema_loss', 'confidence', 'variability', 'correctness',
  'forgetting', 'forgetting_events', 'aum', 'el2n', 'label_issue_score',
  'early_label_issue_score', 'grand'];
const MAP_BINS = 64;
const MAP_POINTS = 2000; // points are drawn when the view holds at most this many samples
const BRUSH_LIST = 500;  // a brushed region lists its samples when it holds at most this many

// ------------------------------------------------------------------ small helpers

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const $ = (sel) => document.querySelector(sel);
const enc = encodeURIComponent;

function fmt(v, digits = 4) {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toPrecision(digits);
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

function toast(msg, bad) {
  const t = $('#toast');
  t.textContent = msg;
  t.className = bad ? 'show bad' : 'show';
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.className = ''; }, 4000);
}

function reviewer() {
  return sessionStorage.getItem('focald.reviewer') || '';
}

// ------------------------------------------------------------------ the API, and the token

class ApiError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? problem.detail : 'HTTP ' + status);
    this.status = status;
    this.problem = problem || {};
  }
}

let tokenWaiters = null;

// Shows the token dialog; resolves when the user gives one.
function askToken() {
  if (!tokenWaiters) {
    tokenWaiters = [];
    const dlg = $('#token-dialog');
    dlg.hidden = false;
    const input = $('#token-input');
    input.value = '';
    input.focus();
  }
  return new Promise((resolve) => tokenWaiters.push(resolve));
}

function tokenGiven(ev) {
  ev.preventDefault();
  const t = $('#token-input').value.trim();
  if (!t) return;
  sessionStorage.setItem('focald.token', t);
  $('#token-dialog').hidden = true;
  const waiters = tokenWaiters || [];
  tokenWaiters = null;
  for (const w of waiters) w();
}

async function api(path, { method = 'GET', body, extra = {} } = {}) {
  for (;;) {
    const headers = { Accept: 'application/json', ...extra };
    const token = sessionStorage.getItem('focald.token');
    if (token) headers.Authorization = 'Bearer ' + token;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store' });
    if (res.status === 401) {
      sessionStorage.removeItem('focald.token');
      await askToken();
      continue;
    }
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!res.ok) throw new ApiError(res.status, data);
    return data;
  }
}

const dsPath = (ds) => '/v1/datasets/' + enc(ds);
// A sample's API path: the id goes in the query (/sample?id=...), never in the path, because fetch() removes
// "." and ".." path segments (and %2e, %2E%2e, ...) before sending, so a sample with such an id would not be
// reached. sub is '' or '/review', '/reviews', '/media'; q holds other query parameters.
const samplePath = (ds, id, sub = '', q = {}) => `${dsPath(ds)}/sample${sub}?` + new URLSearchParams({ id, ...q });

// ------------------------------------------------------------------ routing

// The page, its path arguments and its query; throws when a path segment's percent-encoding is broken
// (typed by hand or mangled on the way): the page says so rather than guess what was meant.
function parseHash() {
  const h = location.hash.replace(/^#\/?/, '');
  const [path, query] = h.split('?');
  const parts = path ? path.split('/').map((p) => {
    try {
      return decodeURIComponent(p);
    } catch (e) {
      throw new Error(`not a valid console address: "${p}" is not percent-encoded text`);
    }
  }) : [];
  return { page: parts[0] || '', args: parts.slice(1), q: new URLSearchParams(query || '') };
}

function go(page, args, q) {
  const qs = q ? new URLSearchParams(Object.entries(q).filter(([, v]) => v !== '' && v !== null && v !== undefined)).toString() : '';
  location.hash = '#/' + [page, ...args.map(enc)].join('/') + (qs ? '?' + qs : '');
}

let keyHandler = null; // the current page's keyboard shortcuts
let leavePage = null;  // undoes what the current page attached outside its own nodes
// Renders are numbered: a page loads asynchronously, and when the address changes again before it is
// ready, a newer render owns the screen and the keys. The older page, finishing later, shows nothing and
// takes no keys (else the keys could decide on a sample other than the one shown).
let renderGen = 0;

// Gives the keys to the page of render gen, unless a newer render has begun since.
function takeKeys(gen, handler) {
  if (gen === renderGen) keyHandler = handler;
}

// Registers what undoes the page's attachments outside its nodes; an overtaken page undoes them at once.
function onLeave(gen, undo) {
  if (gen === renderGen) leavePage = undo;
  else undo();
}

async function render() {
  const gen = ++renderGen;
  keyHandler = null;
  if (leavePage) leavePage();
  leavePage = null;
  const main = $('#main');
  main.replaceChildren(el('p', { class: 'muted', text: 'Loading…' }));
  try {
    const { page, args, q } = parseHash();
    for (const a of document.querySelectorAll('header nav a')) a.classList.toggle('active', a.dataset.page === (page || 'overview'));
    let view;
    if (page === 'map') view = await pageMap(args[0], q);
    else if (page === 'hard') view = await pageHard(args[0], q);
    else if (page === 'sample') view = await pageSample(args[0], args[1], q);
    else if (page === 'queues') view = await pageQueues(args[0]);
    else if (page === 'queue') view = await pageQueue(args[0], args[1]);
    else if (page === 'relabels') view = await pageRelabels(args[0]);
    else view = await pageOverview();
    if (gen !== renderGen) return; // the address changed while this page loaded: the newer page shows
    main.replaceChildren(view);
  } catch (e) {
    if (gen === renderGen) main.replaceChildren(el('p', { class: 'error', text: 'Error: ' + e.message }));
  }
}

// The dataset a page shows: the one in its path, else the first there is.
async function pickDataset(ds) {
  if (ds) return ds;
  const list = await api('/v1/datasets');
  if (!list.datasets.length) throw new Error('no datasets yet: post a batch first');
  return list.datasets[0].name;
}

function datasetSelect(current, onChange) {
  const sel = el('select', { id: 'dataset', 'aria-label': 'dataset' });
  api('/v1/datasets').then((list) => {
    for (const d of list.datasets) sel.append(el('option', { value: d.name, selected: d.name === current }, d.name));
  }).catch(() => {});
  sel.addEventListener('change', () => onChange(sel.value));
  return sel;
}

function runSelect(detail, current) {
  const sel = el('select', { id: 'run', 'aria-label': 'run' }, el('option', { value: '*' }, 'all runs (mean)'));
  for (const r of detail.runs) sel.append(el('option', { value: r.name, selected: r.name === current }, r.name));
  return sel;
}

function classCount(detail) {
  return Math.max(0, ...detail.runs.map((r) => r.classes));
}

// ------------------------------------------------------------------ overview

async function pageOverview() {
  const list = await api('/v1/datasets');
  const view = el('section', {}, el('h2', { text: 'Datasets' }));
  if (!list.datasets.length) {
    view.append(el('p', { text: 'No datasets yet. A training job creates one with its first batch.' }));
    return view;
  }
  for (const d of list.datasets) {
    let detail, queues;
    try {
      [detail, queues] = await Promise.all([api(dsPath(d.name)), api(dsPath(d.name) + '/queues')]);
    } catch (e) {
      if (e.status === 404) continue; // deleted since the list was read: the others still show
      throw e;
    }
    const nav = el('p', { class: 'links' },
      el('a', { href: '#/map/' + enc(d.name) }, 'data map'), ' · ',
      el('a', { href: '#/hard/' + enc(d.name) }, 'hardest examples'), ' · ',
      el('a', { href: '#/queues/' + enc(d.name) }, 'queues'), ' · ',
      el('a', { href: '#/relabels/' + enc(d.name) }, 'relabel feed'));
    const runs = el('table', { class: 'runs' },
      el('thead', {}, el('tr', {}, ['run', 'samples', 'observations', 'classes', 'last step', 'loss p50', 'p90', 'p99', 'max']
        .map((h) => el('th', { text: h })))),
      el('tbody', {}, detail.runs.map((r) => el('tr', {},
        el('td', { text: r.name }), el('td', { text: r.samples }), el('td', { text: r.observations }),
        el('td', { text: r.classes }), el('td', { text: fmt(r.last_step) }),
        ['p50', 'p90', 'p99', 'max'].map((k) => el('td', { text: fmt(r.loss_quantiles[k]) }))))));
    const qs = queues.queues.length
      ? el('ul', { class: 'queues' }, queues.queues.map((qu) => el('li', {},
        el('a', { href: '#/queue/' + enc(d.name) + '/' + enc(qu.name) }, qu.name), ' ',
        progressBar(qu.reviewed, qu.size), ` ${qu.reviewed} / ${qu.size} reviewed`)))
      : el('p', { class: 'muted', text: 'No review queues.' });
    const decided = ['relabelled', 'confirmed', 'dismissed'].reduce((n, k) => n + detail.review[k], 0);
    const review = el('p', { class: 'review' }, progressBar(decided, detail.samples), ` ${decided} / ${detail.samples} decided · `,
      STATES.map((k) => `${k} ${detail.review[k]}`).join(' · '));
    view.append(el('article', { class: 'dataset', 'data-dataset': d.name },
      el('h3', { text: d.name }),
      el('p', {}, `${d.samples} samples, ${d.observations} observations, ${d.runs} run${d.runs === 1 ? '' : 's'}, created ${d.created_at}`),
      nav, runs, el('h4', { text: 'Review progress' }), review, qs));
  }
  return view;
}

function progressBar(done, total) {
  return el('progress', { value: done, max: Math.max(total, 1) });
}

// ------------------------------------------------------------------ the data map

// Colour of a correctness in [0, 1]: red (never right) through amber to green (always right).
function corrColour(c, alpha) {
  const r = Math.round(220 * (1 - c) + 30 * c), g = Math.round(50 * (1 - c) + 170 * c), b = Math.round(60 * (1 - c) + 80 * c);
  return `rgba(${r},${g},${b},${alpha})`;
}

async function pageMap(dsArg, q) {
  const gen = renderGen;
  const ds = await pickDataset(dsArg);
  const detail = await api(dsPath(ds));
  const run = q.get('run') || '*';
  const full = { x0: 0, x1: 0.5, y0: 0, y1: 1 };
  let view = { ...full };
  for (const k of Object.keys(full)) if (q.has(k) && Number.isFinite(parseFloat(q.get(k)))) view[k] = parseFloat(q.get(k));
  if (!(view.x1 > view.x0 && view.y1 > view.y0)) view = { ...full };

  const W = 560, H = 560, PAD = 44;
  const canvas = el('canvas', { id: 'datamap', width: W + PAD + 10, height: H + PAD + 10, tabindex: 0 });
  const info = el('p', { id: 'map-info', class: 'muted' });
  const list = el('div', { id: 'brush-list' });
  const runSel = runSelect(detail, run);
  const zoomBtn = el('button', { id: 'zoom', disabled: true }, 'Zoom to selection');
  const resetBtn = el('button', { id: 'reset-zoom' }, 'Whole map');
  runSel.addEventListener('change', () => go('map', [ds], { run: runSel.value }));
  const root = el('section', {},
    el('h2', {}, 'Data map of ', datasetSelect(ds, (v) => go('map', [v], {}))),
    el('p', { class: 'controls' }, el('label', {}, 'run ', runSel), ' ', zoomBtn, ' ', resetBtn),
    el('p', { class: 'muted' }, 'x: variability (std of p_t), y: confidence (mean p_t), colour: correctness. Drag to select a region.'),
    el('div', { class: 'map-wrap' }, canvas, el('div', { class: 'legend' }, legend())),
    info, list);

  const ctx = canvas.getContext('2d');
  const px = (x) => PAD + (x - view.x0) / (view.x1 - view.x0) * W;
  const py = (y) => 10 + H - (y - view.y0) / (view.y1 - view.y0) * H;
  const fromPx = (cx, cy) => ({ x: view.x0 + (cx - PAD) / W * (view.x1 - view.x0), y: view.y0 + (10 + H - cy) / H * (view.y1 - view.y0) });

  let map = null;
  let brush = null; // {a: {x, y}, b: {x, y}} in data coordinates
  const query = (rect, limit) => api(`${dsPath(ds)}/datamap?run=${enc(run)}&bins=${MAP_BINS}&limit=${limit}` +
    `&x0=${rect.x0}&x1=${rect.x1}&y0=${rect.y0}&y1=${rect.y1}`);

  function draw() {
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.strokeStyle = '#888';
    ctx.strokeRect(PAD, 10, W, H);
    ctx.fillStyle = '#333';
    ctx.font = '11px sans-serif';
    for (let i = 0; i <= 4; i++) {
      const x = view.x0 + (view.x1 - view.x0) * i / 4, y = view.y0 + (view.y1 - view.y0) * i / 4;
      ctx.textAlign = 'center';
      ctx.fillText(x.toPrecision(2), px(x), 10 + H + 14);
      ctx.textAlign = 'right';
      ctx.fillText(y.toPrecision(2), PAD - 4, py(y) + 4);
    }
    ctx.textAlign = 'left';
    ctx.fillText('variability', PAD + W / 2 - 25, 10 + H + 30);
    ctx.save();
    ctx.translate(11, 10 + H / 2 + 25);
    ctx.rotate(-Math.PI / 2);
    ctx.fillText('confidence', 0, 0);
    ctx.restore();
    if (!map) return;
    if (map.points) {
      for (const p of map.points) {
        ctx.fillStyle = corrColour(p.correctness, 0.85);
        ctx.beginPath();
        ctx.arc(px(p.x), py(p.y), 3, 0, 2 * Math.PI);
        ctx.fill();
      }
    } else {
      const n = map.bins, cw = W / n, ch = H / n;
      const maxc = Math.max(1, ...map.counts);
      for (let j = 0; j < n; j++) {
        for (let i = 0; i < n; i++) {
          const c = map.counts[j * n + i];
          if (!c) continue;
          const a = 0.25 + 0.75 * Math.log(1 + c) / Math.log(1 + maxc);
          ctx.fillStyle = corrColour(map.correctness[j * n + i], a);
          ctx.fillRect(PAD + i * cw, 10 + H - (j + 1) * ch, Math.ceil(cw), Math.ceil(ch));
        }
      }
    }
    if (brush) {
      const xa = px(brush.a.x), ya = py(brush.a.y), xb = px(brush.b.x), yb = py(brush.b.y);
      ctx.strokeStyle = '#1a56db';
      ctx.lineWidth = 1.5;
      ctx.setLineDash([5, 3]);
      ctx.strokeRect(Math.min(xa, xb), Math.min(ya, yb), Math.abs(xb - xa), Math.abs(yb - ya));
      ctx.setLineDash([]);
      ctx.lineWidth = 1;
    }
  }

  async function load() {
    map = await query(view, MAP_POINTS);
    info.textContent = `${map.total} samples in view` + (map.points ? ' (points)' : ` (binned ${map.bins} × ${map.bins})`);
    canvas.dataset.total = map.total;
    canvas.dataset.mode = map.points ? 'points' : 'bins';
    draw();
  }

  function brushRect() {
    return { x0: Math.min(brush.a.x, brush.b.x), x1: Math.max(brush.a.x, brush.b.x),
      y0: Math.min(brush.a.y, brush.b.y), y1: Math.max(brush.a.y, brush.b.y) };
  }

  async function listBrushed() {
    const r = brushRect();
    if (!(r.x1 > r.x0 && r.y1 > r.y0)) return;
    const m = await query(r, BRUSH_LIST);
    const head = el('h3', { text: `${m.total} samples selected` });
    if (!m.points) {
      list.replaceChildren(head, el('p', { class: 'muted', text: `More than ${BRUSH_LIST}: select a smaller region or zoom in.` }));
      return;
    }
    const rows = m.points.slice().sort((a, b) => a.y - b.y || a.x - b.x).map((p) => el('tr', { 'data-id': p.id },
      el('td', {}, el('a', { href: '#/sample/' + enc(ds) + '/' + enc(p.id) + (run !== '*' ? '?run=' + enc(run) : '') }, p.id)),
      el('td', { text: fmt(p.x) }), el('td', { text: fmt(p.y) }), el('td', { text: fmt(p.correctness) }),
      el('td', { text: fmt(p.label) }), el('td', { text: p.status })));
    list.replaceChildren(head, el('table', { id: 'brushed' },
      el('thead', {}, el('tr', {}, ['id', 'variability', 'confidence', 'correctness', 'label', 'status'].map((h) => el('th', { text: h })))),
      el('tbody', {}, rows)));
  }

  function canvasPoint(ev) {
    const b = canvas.getBoundingClientRect(); // the border box: the drawing starts inside the border
    const cx = (ev.clientX - b.left - canvas.clientLeft) * canvas.width / canvas.clientWidth;
    const cy = (ev.clientY - b.top - canvas.clientTop) * canvas.height / canvas.clientHeight;
    const p = fromPx(Math.min(Math.max(cx, PAD), PAD + W), Math.min(Math.max(cy, 10), 10 + H));
    return p;
  }
  let dragging = false;
  canvas.addEventListener('mousedown', (ev) => {
    dragging = true;
    brush = { a: canvasPoint(ev), b: canvasPoint(ev) };
    draw();
  });
  canvas.addEventListener('mousemove', (ev) => {
    if (!dragging) return;
    brush.b = canvasPoint(ev);
    draw();
  });
  const onUp = (ev) => {
    if (!dragging) return;
    dragging = false;
    brush.b = canvasPoint(ev);
    draw();
    const r = brushRect();
    zoomBtn.disabled = !(r.x1 > r.x0 && r.y1 > r.y0);
    listBrushed().catch((e) => toast(e.message, true));
  };
  window.addEventListener('mouseup', onUp); // a drag may end outside the canvas
  onLeave(gen, () => window.removeEventListener('mouseup', onUp));
  zoomBtn.addEventListener('click', () => {
    const r = brushRect();
    go('map', [ds], { run, ...r });
  });
  resetBtn.addEventListener('click', () => go('map', [ds], { run }));
  await load();
  return root;
}

function legend() {
  return [0, 0.5, 1].map((c) => el('span', { class: 'swatch-wrap' },
    el('span', { class: 'swatch', 'data-c': c }), ` correctness ${c}`));
}

// ------------------------------------------------------------------ hardest examples

async function pageHard(dsArg, q) {
  const gen = renderGen;
  const ds = await pickDataset(dsArg);
  const detail = await api(dsPath(ds));
  const params = { by: q.get('by') || 'mean_loss', order: q.get('order') || '', run: q.get('run') || '*',
    label: q.get('label') || '', status: q.get('status') || '', label_issue: q.get('label_issue') || '',
    k: q.get('k') || '50' };
  const form = el('form', { id: 'hard-form', class: 'controls' });
  const by = el('select', { name: 'by', 'aria-label': 'by' }, FIELDS.map((f) => el('option', { value: f, selected: f === params.by }, f)));
  const order = el('select', { name: 'order', 'aria-label': 'order' }, ['', 'desc', 'asc'].map((o) =>
    el('option', { value: o, selected: o === params.order }, o || 'hardest first')));
  const run = runSelect(detail, params.run);
  run.name = 'run';
  const label = el('input', { name: 'label', size: 4, value: params.label, placeholder: 'any', 'aria-label': 'label' });
  const status = el('select', { name: 'status', 'aria-label': 'status' },
    el('option', { value: '' }, 'waiting for a decision'), STATES.map((s) => el('option', { value: s, selected: s === params.status }, s)),
    el('option', { value: STATES.join(','), selected: params.status === STATES.join(',') }, 'any'));
  const issue = el('select', { name: 'label_issue', 'aria-label': 'label issue' },
    [['', 'any'], ['true', 'flagged'], ['false', 'not flagged']].map(([v, t]) => el('option', { value: v, selected: v === params.label_issue }, t)));
  form.append(el('label', {}, 'by ', by), ' ', el('label', {}, 'order ', order), ' ', el('label', {}, 'run ', run), ' ',
    el('label', {}, 'label ', label), ' ', el('label', {}, 'status ', status), ' ', el('label', {}, 'label issue ', issue), ' ',
    el('button', { type: 'submit' }, 'Show'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    go('hard', [ds], { by: by.value, order: order.value, run: run.value, label: label.value.trim(), status: status.value,
      label_issue: issue.value, k: params.k });
  });
  const tbody = el('tbody');
  const more = el('button', { id: 'more', hidden: true }, 'Next page');
  const table = el('table', { id: 'hard' },
    el('thead', {}, el('tr', {}, ['rank', 'id', 'score', 'label', 'status', 'seen', 'mean_loss', 'confidence', 'variability', 'label issue']
      .map((h) => el('th', { text: h })))), tbody);
  let cursor = null;
  let selected = -1; // the row the decision keys act on (j/k move it)
  const rowsOf = () => [...tbody.querySelectorAll('tr')];
  function select(i) {
    const rows = rowsOf();
    if (!rows.length) return;
    selected = Math.min(Math.max(i, 0), rows.length - 1);
    rows.forEach((tr, k) => tr.classList.toggle('selected', k === selected));
    rows[selected].scrollIntoView({ block: 'nearest' });
  }
  const classes = classCount(detail);
  takeKeys(gen, (k) => {
    if (k === 'j') { select(selected + 1); return true; }
    if (k === 'k') { select(selected - 1); return true; }
    const what = { c: 'confirmed', r: 'relabel', d: 'dismissed', u: 'open' }[k];
    const tr = rowsOf()[selected];
    if (!what || !tr) return false;
    decideRow(tr, what).catch((e) => {
      toast(e.message, true);
      if (e.status === 409) refreshRow(tr).catch(() => {});
    });
    return true;
  });
  async function decideRow(tr, what) {
    const id = tr.dataset.id;
    let change;
    if (what === 'relabel') {
      const k = await pickClass(classes, Number(tr.dataset.label));
      if (k === null) return;
      change = await decide(ds, id, 'relabelled', k);
    } else {
      change = await decide(ds, id, what);
    }
    tr.querySelector('.status').textContent = change.status;
    toast(`${id}: ${change.from} → ${change.status}`);
  }
  // After a 409 (decided elsewhere meanwhile): the row shows the sample's state as it is now.
  async function refreshRow(tr) {
    const s = await api(samplePath(ds, tr.dataset.id));
    tr.querySelector('.status').textContent = s.status;
  }
  async function page() {
    const qs = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== ''));
    if (cursor) qs.set('cursor', cursor);
    const r = await api(`${dsPath(ds)}/hard-examples?${qs}`);
    for (const it of r.items) {
      tbody.append(el('tr', { 'data-id': it.id, 'data-label': it.label ?? -1 },
        el('td', { text: it.rank }),
        el('td', {}, el('a', { href: '#/sample/' + enc(ds) + '/' + enc(it.id) + (params.run !== '*' ? '?run=' + enc(params.run) : '') }, it.id)),
        el('td', { text: fmt(it.score) }), el('td', { text: fmt(it.label) }), el('td', { class: 'status', text: it.status }),
        el('td', { text: fmt(it.seen) }), el('td', { text: fmt(it.mean_loss) }), el('td', { text: fmt(it.confidence) }),
        el('td', { text: fmt(it.variability) }), el('td', { text: it.label_issue ? 'yes' : '' })));
    }
    cursor = r.next_cursor;
    more.hidden = !cursor;
  }
  more.addEventListener('click', () => page().catch((e) => toast(e.message, true)));
  await page();
  tbody.addEventListener('click', (ev) => {
    const tr = ev.target.closest('tr');
    if (tr && ev.target.tagName !== 'A') select(rowsOf().indexOf(tr));
  });
  return el('section', {}, el('h2', {}, 'Hardest examples of ', datasetSelect(ds, (v) => go('hard', [v], {}))), form,
    el('p', { class: 'muted', text: 'j/k select a row; c confirm, r relabel, d dismiss, u reopen the selected sample.' }), table, more);
}

// ------------------------------------------------------------------ one sample, and decisions

// A fresh Idempotency-Key: a UUID where the page may make one (a secure context), else 128 random bits.
function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

// Posts a review change under an Idempotency-Key of its own; resolves with the change as recorded. When the
// answer is lost (the network failed) or focald is briefly unavailable (503), it is sent again with the
// same key, twice at most: focald records the decision once and answers a repeat as it answered the first.
async function decide(ds, id, status, label) {
  const body = { status };
  if (label !== undefined) body.label = label;
  if (reviewer()) body.reviewer = reviewer();
  const extra = { 'Idempotency-Key': '"' + newKey() + '"' };
  for (let attempt = 0; ; attempt++) {
    try {
      return await api(samplePath(ds, id, '/review'), { method: 'POST', body, extra });
    } catch (e) {
      const retry = e instanceof TypeError || (e instanceof ApiError && e.status === 503);
      if (!retry || attempt >= 2) throw e;
      await new Promise((resolve) => setTimeout(resolve, 300 * (attempt + 1)));
    }
  }
}

// The class picker: resolves with a class index, or null when cancelled. Digits pick, Escape cancels.
function pickClass(count, current) {
  return new Promise((resolve) => {
    const box = el('div', { id: 'class-picker', class: 'modal', role: 'dialog' });
    const done = (v) => {
      document.removeEventListener('keydown', onKey, true);
      box.remove();
      resolve(v);
    };
    const onKey = (ev) => {
      if (ev.key === 'Escape') { ev.preventDefault(); ev.stopPropagation(); done(null); }
      else if (/^[0-9]$/.test(ev.key) && Number(ev.key) < count) { ev.preventDefault(); ev.stopPropagation(); done(Number(ev.key)); }
    };
    document.addEventListener('keydown', onKey, true);
    const buttons = [];
    for (let k = 0; k < count; k++) {
      buttons.push(el('button', { class: k === current ? 'current' : '', 'data-class': k, onclick: () => done(k) },
        k < 10 ? `${k}` : String(k)));
    }
    box.append(el('div', { class: 'panel' }, el('p', { text: 'Relabel as class (type its digit; Escape cancels):' }),
      el('div', { class: 'classes' }, buttons), el('button', { onclick: () => done(null) }, 'Cancel')));
    document.body.append(box);
  });
}

// The decision buttons and keys for one sample. after(change) runs when a change is recorded; stale()
// when focald refuses it with 409 because the sample has changed since it was shown (another tab or
// reviewer decided it), so the page can show it as it is now.
function decisionBar(ds, sample, classes, after, stale) {
  const act = async (what) => {
    try {
      let change;
      if (what === 'relabel') {
        const cur = sample.corrected_label ?? (sample.runs[0] ? sample.runs[0].label : null);
        const k = await pickClass(classes, typeof cur === 'number' ? cur : -1);
        if (k === null) return;
        change = await decide(ds, sample.id, 'relabelled', k);
      } else {
        change = await decide(ds, sample.id, what);
      }
      toast(`${sample.id}: ${change.from} → ${change.status}` + (change.label !== null && change.label !== undefined ? ` (label ${fmt(change.label)})` : ''));
      await after(change);
    } catch (e) {
      toast(e.message, true);
      if (e.status === 409 && stale) await stale().catch(() => {});
    }
  };
  const bar = el('p', { class: 'decisions' },
    el('button', { 'data-key': 'c', onclick: () => act('confirmed') }, 'Confirm (c)'), ' ',
    el('button', { 'data-key': 'r', onclick: () => act('relabel'), disabled: classes < 1 }, 'Relabel (r)'), ' ',
    el('button', { 'data-key': 'd', onclick: () => act('dismissed') }, 'Dismiss (d)'), ' ',
    el('button', { 'data-key': 'u', onclick: () => act('open') }, 'Reopen (u)'));
  const keys = { c: 'confirmed', r: 'relabel', d: 'dismissed', u: 'open' };
  return { bar, key: (k) => (keys[k] ? (act(keys[k]), true) : false) };
}

// The run's series (loss and p_t over the whole of training, down-sampled by focald) as a chart: x is the
// step when every point has one, else the observation's index; loss on the left axis from 0, p_t on the
// right from 0 to 1. The canvas carries what it drew in data-points and data-x.
const SERIES_W = 560, SERIES_H = 200, SERIES_PAD = { l: 48, r: 40, t: 12, b: 30 };
const SERIES_LOSS = '#1a56db', SERIES_PT = '#d97706';

function seriesChart(r) {
  const pts = (r.series && r.series.points) || [];
  const byStep = pts.length > 0 && pts.every((p) => p.step !== null);
  const canvas = el('canvas', { class: 'series-chart', width: SERIES_W, height: SERIES_H, 'data-run': r.run,
    'data-points': pts.length, 'data-x': byStep ? 'step' : 'observation' });
  const ctx = canvas.getContext('2d');
  const { l, r: rp, t, b } = SERIES_PAD;
  const w = SERIES_W - l - rp, h = SERIES_H - t - b;
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, SERIES_W, SERIES_H);
  ctx.strokeStyle = '#888';
  ctx.strokeRect(l, t, w, h);
  ctx.font = '11px sans-serif';
  ctx.fillStyle = '#333';
  if (!pts.length) {
    ctx.textAlign = 'center';
    ctx.fillText('no series kept', l + w / 2, t + h / 2);
    return canvas;
  }
  const xs = pts.map((p) => (byStep ? p.step : p.observation));
  const x0 = Math.min(...xs), x1 = Math.max(...xs), xspan = x1 > x0 ? x1 - x0 : 1;
  const lmax = Math.max(...pts.map((p) => p.loss)) || 1;
  const px = (x) => l + (pts.length > 1 ? (x - x0) / xspan * w : w / 2);
  const pyLoss = (v) => t + h - v / lmax * h;
  const pyPt = (v) => t + h - v * h;
  let lastTick = null;
  for (let i = 0; i <= 4; i++) {
    ctx.textAlign = 'right';
    ctx.fillText((lmax * i / 4).toPrecision(2), l - 4, pyLoss(lmax * i / 4) + 4);
    ctx.textAlign = 'left';
    ctx.fillText((i / 4).toFixed(2), l + w + 4, pyPt(i / 4) + 4);
    // steps and observations are integers: each tick at a whole value, each value once
    const tick = Math.round(x0 + xspan * i / 4);
    if (pts.length > 1 && tick !== lastTick) {
      ctx.textAlign = 'center';
      ctx.fillText(String(tick), px(tick), t + h + 14);
    }
    lastTick = tick;
  }
  if (pts.length === 1) {
    ctx.textAlign = 'center';
    ctx.fillText(String(x0), px(x0), t + h + 14);
  }
  ctx.fillText(byStep ? 'step' : 'observation', l + w / 2, t + h + 27);
  function line(colour, val, y) {
    ctx.strokeStyle = colour;
    ctx.fillStyle = colour;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    let open = false;
    pts.forEach((p, i) => {
      const v = val(p);
      if (v === null) { open = false; return; } // a gap where nothing was scored
      if (open) ctx.lineTo(px(xs[i]), y(v));
      else ctx.moveTo(px(xs[i]), y(v));
      open = true;
    });
    ctx.stroke();
    pts.forEach((p, i) => {
      const v = val(p);
      if (v === null) return;
      ctx.beginPath();
      ctx.arc(px(xs[i]), y(v), 2.5, 0, 2 * Math.PI);
      ctx.fill();
    });
    ctx.lineWidth = 1;
  }
  line(SERIES_LOSS, (p) => p.loss, pyLoss);
  line(SERIES_PT, (p) => p.p_t, pyPt);
  return canvas;
}

function seriesLegend(r) {
  const s = r.series || { stride: 1, points: [] };
  return el('p', { class: 'muted series-legend' },
    el('span', { class: 'swatch', 'data-series': 'loss' }), ' loss (left axis) ',
    el('span', { class: 'swatch', 'data-series': 'p_t' }), ' p_t (right axis) · ',
    `${s.points.length} points, one every ${s.stride} observation${s.stride === 1 ? '' : 's'} of ${fmt(r.seen)}`);
}

// u when it is an absolute http(s) URL, else null: the only URLs from the data (a meta uri, a viewer link) the
// console puts in a link or an image. A javascript:, data: or vbscript: URL, or one a browser would read as
// one after stripping leading blanks and control characters, is shown as text at most.
function httpUrl(u) {
  return typeof u === 'string' && /^https?:\/\/[^\s\/?#]/i.test(u) ? u : null;
}

function sampleDetails(ds, s) {
  const meta = s.meta || {};
  const parts = [];
  parts.push(el('p', {}, 'status ', el('strong', { id: 'sample-status', text: s.status }),
    s.corrected_label !== null ? ` · corrected label ${fmt(s.corrected_label)}` : '', s.reconsider ? ' · due for reconsideration' : ''));
  if (httpUrl(meta.uri)) {
    parts.push(el('figure', { class: 'preview' }, el('img', { src: httpUrl(meta.uri), alt: 'preview of ' + s.id, referrerpolicy: 'no-referrer' }),
      el('figcaption', { text: meta.uri })));
  } else if (typeof meta.uri === 'string') {
    // a local file: focald serves it when it is an image under its --media-root (fetched with the token)
    const fig = el('figure', { class: 'preview' }, el('figcaption', { text: meta.uri }));
    parts.push(fig);
    localPreview(ds, s.id).then((url) => {
      if (url) fig.prepend(el('img', { src: url, alt: 'preview of ' + s.id, id: 'local-preview' }));
      else fig.append(el('p', { class: 'muted', text: 'no preview (not an image under focald\'s --media-root)' }));
    });
  }
  if (httpUrl(s.viewer_url)) {
    parts.push(el('p', {}, el('a', { id: 'ohif-link', href: httpUrl(s.viewer_url), target: '_blank', rel: 'noopener noreferrer' }, 'Open the study in OHIF')));
  }
  for (const r of s.runs) {
    parts.push(el('h4', { text: 'run ' + r.run }));
    parts.push(el('table', { class: 'history' }, el('tbody', {},
      [...FIELDS, 'label', 'label_issue', 'first_step', 'last_step', 'stale_labels'].map((f) => el('tr', {}, el('th', { text: f }), el('td', { text: fmt(r[f]) }))))));
    parts.push(el('figure', { class: 'series' }, seriesChart(r), seriesLegend(r)));
    if (r.recent.length) {
      parts.push(el('table', { class: 'recent' },
        el('thead', {}, el('tr', {}, ['step', 'epoch', 'loss', 'p_t', 'correct'].map((h) => el('th', { text: h })))),
        el('tbody', {}, r.recent.map((o) => el('tr', {}, [o.step, o.epoch, o.loss, o.p_t, o.correct ? 'yes' : 'no'].map((v) => el('td', { text: fmt(v) })))))));
    }
  }
  parts.push(el('h4', { text: 'meta' }), el('pre', { class: 'meta', text: JSON.stringify(meta, null, 2) }));
  return parts;
}

// An object URL of the sample's local image, or null when focald does not serve one.
async function localPreview(ds, id) {
  const headers = {};
  const token = sessionStorage.getItem('focald.token');
  if (token) headers.Authorization = 'Bearer ' + token;
  try {
    const res = await fetch(samplePath(ds, id, '/media'), { headers, cache: 'no-store' });
    if (!res.ok || !/^image\//.test(res.headers.get('Content-Type') || '')) return null;
    return URL.createObjectURL(await res.blob());
  } catch (e) {
    return null;
  }
}

async function pageSample(ds, id, q) {
  const gen = renderGen;
  const run = q.get('run');
  const [s, detail] = await Promise.all([api(samplePath(ds, id, '', run ? { run } : {})), api(dsPath(ds))]);
  const root = el('section', { id: 'sample', 'data-id': s.id });
  const bar = decisionBar(ds, s, classCount(detail), async () => { await render(); }, render);
  takeKeys(gen, bar.key);
  root.append(el('h2', {}, el('a', { href: '#/hard/' + enc(ds) }, ds), ' / ', s.id), bar.bar, ...sampleDetails(ds, s));
  return root;
}

// ------------------------------------------------------------------ the relabel feed

async function pageRelabels(dsArg) {
  const ds = await pickDataset(dsArg);
  const tbody = el('tbody');
  const more = el('button', { id: 'more-relabels', hidden: true }, 'Newer entries');
  let since = null;
  async function page() {
    const r = await api(`${dsPath(ds)}/relabels?limit=200${since ? '&since=' + enc(since) : ''}`);
    for (const e of r.relabels) {
      tbody.append(el('tr', { 'data-id': e.id },
        el('td', {}, el('a', { href: '#/sample/' + enc(ds) + '/' + enc(e.id) }, e.id)),
        el('td', { text: e.withdrawn ? 'withdrawn' : fmt(e.label) }), el('td', { text: fmt(e.previous_label) }),
        el('td', { text: e.reviewer || '' }), el('td', { text: e.note || '' }), el('td', { text: e.at })));
    }
    since = r.next_cursor;
    more.hidden = r.relabels.length === 0;
  }
  more.addEventListener('click', () => page().catch((e) => toast(e.message, true)));
  await page();
  return el('section', {}, el('h2', {}, 'Relabel feed of ', datasetSelect(ds, (v) => go('relabels', [v]))),
    el('p', { class: 'muted', text: 'Corrected labels in commit order, as a training pipeline pulls them.' }),
    el('table', { id: 'relabels' }, el('thead', {}, el('tr', {}, ['id', 'label', 'previous', 'reviewer', 'note', 'at'].map((h) => el('th', { text: h })))), tbody),
    more);
}

// ------------------------------------------------------------------ queues

async function pageQueues(dsArg) {
  const ds = await pickDataset(dsArg);
  const list = await api(`${dsPath(ds)}/queues`);
  const name = el('input', { name: 'name', required: true, pattern: '[A-Za-z0-9._-]{1,64}', 'aria-label': 'queue name', placeholder: 'name' });
  const by = el('select', { name: 'by', 'aria-label': 'by' }, FIELDS.map((f) => el('option', { value: f, selected: f === 'mean_loss' }, f)));
  const size = el('input', { name: 'size', type: 'number', min: 1, max: 10000, value: 50, 'aria-label': 'size' });
  const form = el('form', { id: 'queue-form', class: 'controls' }, 'New queue: ', name, ' ', el('label', {}, 'by ', by), ' ',
    el('label', {}, 'size ', size), ' ', el('button', { type: 'submit' }, 'Build'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      await api(`${dsPath(ds)}/queues`, { method: 'POST', body: { name: name.value, by: by.value, size: Number(size.value) } });
      go('queue', [ds, name.value]);
    } catch (e) {
      toast(e.message, true);
    }
  });
  return el('section', {}, el('h2', {}, 'Review queues of ', datasetSelect(ds, (v) => go('queues', [v]))),
    list.queues.length ? el('ul', { class: 'queues' }, list.queues.map((qu) => el('li', {},
      el('a', { href: '#/queue/' + enc(ds) + '/' + enc(qu.name) }, qu.name), ' ', progressBar(qu.reviewed, qu.size),
      ` ${qu.reviewed} / ${qu.size} reviewed · built ${qu.created_at}`))) : el('p', { class: 'muted', text: 'No queues yet.' }),
    form);
}

// Queue mode: the first sample still waiting for a decision, its decision keys, then the next.
async function pageQueue(ds, name) {
  const gen = renderGen;
  const [detail, head] = await Promise.all([api(dsPath(ds)), api(`${dsPath(ds)}/queues/${enc(name)}?limit=1`)]);
  const classes = classCount(detail);
  const items = [];
  // a page holds fewer than asked when its samples' meta is large: the next one starts after what came
  for (let offset = 0; offset < head.size;) {
    const page = await api(`${dsPath(ds)}/queues/${enc(name)}?offset=${offset}&limit=1000`);
    if (!page.items.length) break;
    items.push(...page.items);
    offset += page.items.length;
  }
  const root = el('section', { id: 'queue-mode', 'data-queue': name });
  const status = new Map(items.map((it) => [it.id, it.status]));
  const history = []; // ids decided here, newest last: u (undo) reopens the last
  let pos = items.findIndex((it) => UNDECIDED.includes(it.status));
  let shows = 0; // j held down starts a show() per key: only the newest one draws, so pos is the sample shown

  const progress = () => {
    const reviewed = items.filter((it) => !UNDECIDED.includes(status.get(it.id))).length;
    return el('p', { id: 'queue-progress' }, progressBar(reviewed, items.length), ` ${reviewed} / ${items.length} reviewed`);
  };

  // Shows the sample at pos. walking: pos was chosen as the next undecided sample, so one that another
  // tab or reviewer has decided since the queue was loaded is passed over (j and k show any sample).
  async function show(walking) {
    const seq = ++shows;
    const title = el('h2', {}, 'Queue ', name, ' of ', el('a', { href: '#/queues/' + enc(ds) }, ds));
    if (pos < 0 || pos >= items.length) {
      takeKeys(gen, (k) => (k === 'u' ? (undo(), true) : false));
      root.replaceChildren(title, progress(), el('p', { id: 'queue-done', text: 'Queue done: every sample has a decision. (u reopens the last one.)' }));
      return;
    }
    const s = await api(samplePath(ds, items[pos].id));
    if (seq !== shows) return;
    status.set(s.id, s.status);
    if (walking && !UNDECIDED.includes(s.status)) {
      next();
      return;
    }
    const bar = decisionBar(ds, s, classes, async (change) => {
      status.set(s.id, change.status);
      if (!UNDECIDED.includes(change.status)) history.push(pos);
      next();
    }, async () => {
      // decided elsewhere meanwhile: record it as it is now, and walk on when it has a decision
      const now = await api(samplePath(ds, s.id));
      status.set(s.id, now.status);
      if (UNDECIDED.includes(now.status)) await show();
      else next();
    });
    takeKeys(gen, (k) => {
      if (k === 'u') { undo(); return true; }
      if (k === 'j' || k === 'n') { pos = Math.min(items.length - 1, pos + 1); show(); return true; }
      if (k === 'k' || k === 'p') { pos = Math.max(0, pos - 1); show(); return true; }
      return bar.key(k);
    });
    root.replaceChildren(title, progress(),
      el('p', { class: 'muted', text: `sample ${pos + 1} of ${items.length} · c confirm, r relabel, d dismiss, u undo (reopen the last decision), j/k next/previous` }),
      el('h3', { id: 'queue-sample', 'data-id': s.id, text: s.id }), bar.bar, ...sampleDetails(ds, s));
  }
  function next() {
    const after = items.findIndex((it, i) => i > pos && UNDECIDED.includes(status.get(it.id)));
    pos = after >= 0 ? after : items.findIndex((it) => UNDECIDED.includes(status.get(it.id)));
    show(true).catch((e) => toast(e.message, true));
  }
  async function undo() {
    const last = history.pop();
    if (last === undefined) { toast('nothing to undo'); return; }
    const id = items[last].id;
    try {
      const change = await decide(ds, id, 'open');
      status.set(id, change.status);
      pos = last;
      toast(`${id}: reopened`);
      await show();
    } catch (e) {
      toast(e.message, true);
    }
  }
  await show(true);
  return root;
}

// ------------------------------------------------------------------ start

function start() {
  const who = $('#reviewer');
  who.value = reviewer();
  who.addEventListener('change', () => sessionStorage.setItem('focald.reviewer', who.value.trim()));
  $('#token-form').addEventListener('submit', tokenGiven);
  document.addEventListener('keydown', (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || !keyHandler) return;
    const t = ev.target;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'SELECT' || t.tagName === 'TEXTAREA')) return;
    if (document.querySelector('.modal:not([hidden])')) return;
    if (keyHandler(ev.key)) ev.preventDefault();
  });
  window.addEventListener('hashchange', render);
  render();
}

document.addEventListener('DOMContentLoaded', start);

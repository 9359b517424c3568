// kvllm's page: chat, the KV block map, time series and the planner's
// "what if", over the server's own endpoints (docs/server.md). No framework,
// no build step; charts are drawn here on canvases.
//
// What tests and scripts read is exposed as element ids and data-
// attributes (never pixels): #map[data-holders|data-used|...], #occupancy
// [data-value], #chat-usage[data-*], .msg.assistant[data-state].
//
// The page shows other clients' requests by id and size only: the map
// endpoints carry no text, and this file never asks for any.
'use strict';

const $ = (id) => document.getElementById(id);
const MAP_MS = 400; // block map: at most 2.5 polls a second
const HISTORY_MS = 1000; // time series: the server samples once a second
const WINDOW_S = 300; // the charts show the last five minutes

const state = {
  key: sessionStorage.getItem('kvllm.key') || '',
  model: null,
  session: 1 + Math.floor(Math.random() * 2 ** 40), // groups this tab's turns in the ledger
  messages: [], // this tab's conversation: {role, content}
  abort: null, // the AbortController of the answer streaming now
  samples: [], // /v1/kv/history samples, oldest first
  lastT: -1,
  mapUpdates: 0,
  map: null, // the last snapshot drawn (for the hover text)
  layout: null,
};

// ---------------------------------------------------------------- API

let keyWaiter = null;
function askKey() {
  if (!keyWaiter) {
    keyWaiter = new Promise((resolve) => {
      const dlg = $('key-dialog');
      dlg.hidden = false;
      $('key-input').focus();
      $('key-form').onsubmit = (ev) => {
        ev.preventDefault();
        state.key = $('key-input').value.trim();
        sessionStorage.setItem('kvllm.key', state.key);
        dlg.hidden = true;
        keyWaiter = null;
        resolve();
      };
    });
  }
  return keyWaiter;
}

// fetch with the API key; a 401 asks for the key and tries again
async function api(path, opts = {}) {
  for (;;) {
    const headers = Object.assign({}, opts.headers);
    if (state.key) headers.Authorization = 'Bearer ' + state.key;
    const r = await fetch(path, Object.assign({}, opts, { headers }));
    if (r.status !== 401) return r;
    await askKey();
  }
}

async function getJSON(path) {
  const r = await api(path);
  const j = await r.json().catch(() => null);
  if (!r.ok) throw new Error((j && j.error && j.error.message) || `${path}: HTTP ${r.status}`);
  return j;
}

function setConn(ok, text) {
  const c = $('conn');
  c.dataset.state = ok ? 'ok' : 'error';
  c.textContent = text;
}

// A loop that calls fn every ms milliseconds while the tab is visible,
// never two calls at once; a hidden tab makes no requests at all.
function poller(ms, fn) {
  let timer = null;
  let busy = false;
  const tick = async () => {
    timer = null;
    if (document.hidden) return;
    busy = true;
    try {
      await fn();
    } finally {
      busy = false;
      if (!document.hidden && !timer) timer = setTimeout(tick, ms);
    }
  };
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && !busy && !timer) tick();
  });
  tick();
}

// ---------------------------------------------------------------- chat

function addMessage(role, text) {
  const div = document.createElement('div');
  div.className = 'msg ' + role;
  div.textContent = text;
  $('chat-log').appendChild(div);
  $('chat-log').scrollTop = $('chat-log').scrollHeight;
  return div;
}

// Parse server-sent events out of a fetch body; onData gets each data line.
async function readSSE(body, onData) {
  const reader = body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      for (const line of ev.split('\n'))
        if (line.startsWith('data: ') && onData(line.slice(6)) === false) return;
    }
  }
}

function showUsage(u, finish) {
  const el = $('chat-usage');
  if (!u) {
    el.textContent = `finish: ${finish}; no usage came back`;
    return;
  }
  const cached = (u.prompt_tokens_details && u.prompt_tokens_details.cached_tokens) || 0;
  el.dataset.promptTokens = u.prompt_tokens;
  el.dataset.completionTokens = u.completion_tokens;
  el.dataset.cachedTokens = cached;
  el.dataset.finish = finish;
  el.textContent =
    `prompt ${u.prompt_tokens} tokens (${cached} from the prefix cache) · ` +
    `completion ${u.completion_tokens} · finish: ${finish}`;
}

function chatBody(temperature, maxTokens) {
  const body = {
    messages: state.messages.slice(),
    stream: true,
    stream_options: { include_usage: true },
    temperature,
    max_tokens: maxTokens,
    session: state.session,
  };
  if (state.model) body.model = state.model;
  return body;
}

async function sendChat(text) {
  const temperature = Number($('chat-temp').value);
  const maxTokens = Math.floor(Number($('chat-max').value));
  state.messages.push({ role: 'user', content: text });
  addMessage('user', text);
  const out = addMessage('assistant', '');
  out.dataset.state = 'streaming';
  const ctl = new AbortController();
  state.abort = ctl;
  $('chat-send').disabled = true;
  $('chat-stop').disabled = false;
  let answer = '';
  let usage = null;
  let finish = 'none';
  try {
    const r = await api('/v1/chat/completions', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(chatBody(temperature, maxTokens)),
      signal: ctl.signal,
    });
    if (!r.ok) {
      const j = await r.json().catch(() => null);
      throw new Error((j && j.error && j.error.message) || `HTTP ${r.status}`);
    }
    await readSSE(r.body, (data) => {
      if (data === '[DONE]') return false;
      const c = JSON.parse(data);
      if (c.error) throw new Error(c.error.message);
      if (c.usage) usage = c.usage;
      const ch = c.choices && c.choices[0];
      if (ch && ch.delta && ch.delta.content) {
        answer += ch.delta.content;
        out.textContent = answer;
        $('chat-log').scrollTop = $('chat-log').scrollHeight;
      }
      if (ch && ch.finish_reason) finish = ch.finish_reason;
      return true;
    });
    out.dataset.state = 'done';
    showUsage(usage, finish);
    state.messages.push({ role: 'assistant', content: answer });
  } catch (e) {
    out.dataset.state = e.name === 'AbortError' ? 'stopped' : 'error';
    if (e.name === 'AbortError') {
      $('chat-usage').textContent = 'stopped; the server cancels the request';
      state.messages.push({ role: 'assistant', content: answer }); // keep what came
    } else {
      state.messages.pop(); // the turn failed: it leaves the conversation
      addMessage('error', String(e.message || e));
    }
  } finally {
    state.abort = null;
    $('chat-send').disabled = false;
    $('chat-stop').disabled = true;
  }
}

function setupChat() {
  $('chat-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = $('chat-input').value;
    if (!text.trim() || state.abort) return;
    $('chat-input').value = '';
    sendChat(text);
  });
  $('chat-input').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey) {
      ev.preventDefault();
      $('chat-form').requestSubmit();
    }
  });
  $('chat-stop').addEventListener('click', () => state.abort && state.abort.abort());
  $('chat-clear').addEventListener('click', () => {
    if (state.abort) state.abort.abort();
    state.messages = [];
    $('chat-log').textContent = '';
  });
}

// ---------------------------------------------------------------- block map

const C_FREE = '#262c36';
const C_CACHED = '#3f6f55';
const C_TIER2 = '#6a5aa8';
const C_SHARED = '#ffffff';

// One colour per session (or per request when it has no session).
function holderColor(h) {
  const k = h.session ? h.session * 7 + 3 : h.request;
  const hue = (k * 137.508) % 360;
  return `hsl(${hue.toFixed(0)}, 70%, ${h.state === 'swapped' ? 38 : 58}%)`;
}

// Cell size for n cells in width w (CSS px), at most maxH tall.
function gridLayout(n, w, maxH) {
  let s = 24;
  while (s > 2 && Math.ceil(n / Math.max(1, Math.floor(w / s))) * s > maxH) s--;
  const cols = Math.max(1, Math.floor(w / s));
  return { s, cols, rows: Math.ceil(n / cols) };
}

function sizeCanvas(cv, cssH) {
  const dpr = window.devicePixelRatio || 1;
  const w = cv.clientWidth || 600;
  cv.style.height = cssH + 'px';
  cv.width = Math.round(w * dpr);
  cv.height = Math.round(cssH * dpr);
  const g = cv.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  return g;
}

// cells: -1 free, -2 cached-free, -3 second tier, k >= 0 holder k;
// shared: a Set of cell indices to mark; striped: holders drawn hatched.
function drawCells(cv, cells, holders, shared, striped, maxH) {
  const n = cells.length;
  const L = gridLayout(n, cv.clientWidth || 600, maxH);
  const g = sizeCanvas(cv, Math.max(L.rows * L.s, 8));
  const gap = L.s >= 5 ? 1 : 0;
  const colors = holders.map(holderColor);
  for (let i = 0; i < n; i++) {
    const v = cells[i];
    const x = (i % L.cols) * L.s;
    const y = Math.floor(i / L.cols) * L.s;
    const w = L.s - gap;
    g.fillStyle = v >= 0 ? colors[v] || '#999' : v === -2 ? C_CACHED : v === -3 ? C_TIER2 : C_FREE;
    g.fillRect(x, y, w, w);
    if (v === -2 && w >= 5) {
      g.strokeStyle = '#7ee7a0';
      g.strokeRect(x + 1.5, y + 1.5, w - 3, w - 3);
    }
    if (v >= 0 && striped && w >= 4) {
      g.strokeStyle = 'rgba(0,0,0,.55)';
      g.beginPath();
      g.moveTo(x, y + w);
      g.lineTo(x + w, y);
      g.stroke();
    }
    if (shared && shared.has(i)) {
      g.fillStyle = C_SHARED;
      const d = Math.max(2, Math.floor(w / 3));
      g.fillRect(x + w - d, y, d, d);
    }
  }
  return L;
}

function swatch(color, mark) {
  const s = document.createElement('span');
  s.className = 'sw' + (mark ? ' ' + mark : '');
  s.style.background = color;
  return s;
}

function setupLegend() {
  const items = [
    [C_FREE, '', 'free'],
    [C_CACHED, 'cached', 'cached, free (a prefix-cache hit reuses it)'],
    ['hsl(200, 70%, 58%)', 'sharedmark', 'shared (more than one reference)'],
    ['hsl(200, 70%, 38%)', 'striped', 'swapped out (swap area)'],
    [C_TIER2, '', 'second tier (demoted prefix block)'],
  ];
  const ul = $('legend');
  for (const [c, mark, label] of items) {
    const li = document.createElement('li');
    li.appendChild(swatch(c, mark));
    li.appendChild(document.createTextNode(label));
    ul.appendChild(li);
  }
  const li = document.createElement('li');
  li.textContent = 'other colours: one per session (or request)';
  ul.appendChild(li);
}

function fillHolders(holders) {
  const tb = $('holders').tBodies[0];
  tb.textContent = '';
  const shown = holders.slice(0, 64);
  for (const h of shown) {
    const tr = tb.insertRow();
    tr.dataset.request = h.request;
    tr.insertCell().appendChild(swatch(holderColor(h)));
    for (const v of [h.request, h.session || '–', h.state, h.blocks, h.shared, h.swap_blocks, h.tokens])
      tr.insertCell().textContent = v;
  }
  if (holders.length > shown.length) {
    const tr = tb.insertRow();
    const td = tr.insertCell();
    td.colSpan = 8;
    td.textContent = `… and ${holders.length - shown.length} more`;
  }
}

function showMapFigures(j) {
  const occ = $('occupancy');
  occ.textContent = (100 * j.occupancy).toFixed(1) + '%';
  occ.dataset.value = j.occupancy;
  occ.dataset.t = j.t;
  $('fig-used').textContent = j.n_used;
  $('fig-cached').textContent = j.n_cached;
  $('fig-free').textContent = j.n_free;
  $('fig-shared').textContent = j.shared.length;
  $('fig-holders').textContent = j.holders.length;
  $('map-summary').textContent =
    `${j.n_blocks} blocks of ${j.block_size} positions, ${(j.block_bytes / 1024).toFixed(0)} KiB each`;
}

function drawMap(j) {
  state.map = j;
  const shared = new Set(j.shared);
  state.layout = drawCells($('map'), j.cells, j.holders, shared, false, 320);
  const sw = j.swap || { n_blocks: 0, cells: [] };
  $('swap-wrap').hidden = !sw.n_blocks;
  if (sw.n_blocks) {
    drawCells($('swap-map'), sw.cells, j.holders, null, true, 80);
    const used = sw.cells.filter((v) => v >= 0).length;
    const tier2 = sw.cells.filter((v) => v === -3).length;
    $('swap-summary').textContent = `${sw.n_blocks} blocks: ${used} swapped, ${tier2} second tier`;
  }
  showMapFigures(j);
  fillHolders(j.holders);
  const m = $('map');
  m.dataset.nBlocks = j.n_blocks;
  m.dataset.holders = j.holders.length;
  m.dataset.holderIds = j.holders.map((h) => h.request).join(',');
  m.dataset.used = j.n_used;
  m.dataset.cached = j.n_cached;
  m.dataset.free = j.n_free;
  m.dataset.shared = j.shared.length;
  m.dataset.allFreeOrCached = j.cells.every((v) => v === -1 || v === -2) ? '1' : '0';
  m.dataset.t = j.t;
  m.dataset.updates = ++state.mapUpdates;
}

async function pollMap() {
  try {
    drawMap(await getJSON('/v1/kv/map'));
    $('map-error').hidden = true;
    setConn(true, 'live');
  } catch (e) {
    $('map-error').hidden = false;
    $('map-error').textContent = 'block map: ' + (e.message || e);
    setConn(false, 'no answer');
  }
}

// hover: which block, whose
function setupMapHover() {
  const cv = $('map');
  cv.addEventListener('mousemove', (ev) => {
    const j = state.map;
    const L = state.layout;
    if (!j || !L) return;
    const r = cv.getBoundingClientRect();
    const i = Math.floor((ev.clientY - r.top) / L.s) * L.cols + Math.floor((ev.clientX - r.left) / L.s);
    const v = j.cells[i];
    if (v === undefined) return (cv.title = '');
    const h = v >= 0 ? j.holders[v] : null;
    const who = h ? `request ${h.request}${h.session ? ', session ' + h.session : ''} (${h.state})` : v === -2 ? 'cached, free' : 'free';
    cv.title = `block ${i}: ${who}${j.shared.includes(i) ? ', shared' : ''}`;
  });
}

// ---------------------------------------------------------------- time series

// series: [{label, color, get(sample) -> number|null}]
function drawChart(cv, samples, series, opts) {
  const g = sizeCanvas(cv, 140);
  const W = cv.clientWidth || 360;
  const H = 140;
  const padL = 40;
  const padB = 16;
  const t1 = samples.length ? samples[samples.length - 1].t : 0;
  // the window grows with the data, from one minute to WINDOW_S
  const win = samples.length ? Math.min(WINDOW_S, Math.max(60, t1 - samples[0].t)) : 60;
  const t0 = t1 - win;
  let ymax = opts.max || 0;
  if (!opts.max)
    for (const s of samples)
      for (const se of series) {
        const v = se.get(s);
        if (v != null && v > ymax) ymax = v;
      }
  ymax = ymax > 0 ? niceCeil(ymax) : 1;
  g.strokeStyle = '#2e3440';
  g.fillStyle = '#8a93a3';
  g.font = '10px sans-serif';
  for (let k = 0; k <= 4; k++) {
    const y = 6 + ((H - padB - 6) * k) / 4;
    g.beginPath();
    g.moveTo(padL, y);
    g.lineTo(W, y);
    g.stroke();
    g.fillText(fmtNum(ymax * (1 - k / 4)), 2, y + 3);
  }
  g.fillText(`-${Math.round(win)} s`, padL, H - 3);
  g.fillText('now', W - 22, H - 3);
  const X = (t) => padL + ((t - t0) / win) * (W - padL);
  const Y = (v) => 6 + (H - padB - 6) * (1 - v / ymax);
  let labelX = padL + 4;
  series.forEach((se) => {
    g.strokeStyle = se.color;
    g.lineWidth = 1.5;
    g.beginPath();
    let pen = false;
    for (const s of samples) {
      const v = se.get(s);
      if (v == null) {
        pen = false;
        continue;
      }
      if (pen) g.lineTo(X(s.t), Y(v));
      else g.moveTo(X(s.t), Y(v));
      pen = true;
    }
    g.stroke();
    g.lineWidth = 1;
    g.fillStyle = se.color;
    g.fillText(se.label, labelX, 14);
    labelX += g.measureText(se.label).width + 10;
  });
}

function niceCeil(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function fmtNum(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(1) + 'M';
  if (v >= 1e4) return (v / 1e3).toFixed(0) + 'k';
  if (v >= 100) return v.toFixed(0);
  return +v.toFixed(2) + '';
}

function lastOf(samples, key) {
  for (let i = samples.length - 1; i >= 0; i--) if (samples[i][key] != null) return samples[i][key];
  return null;
}

function drawSeries() {
  const S = state.samples;
  const pct = (k) => (s) => (s[k] == null ? null : 100 * s[k]);
  const key = (k) => (s) => s[k];
  drawChart($('chart-occupancy'), S, [{ label: 'occupancy', color: '#6cb6ff', get: pct('occupancy') }], { max: 100 });
  drawChart($('chart-requests'), S, [
    { label: 'running', color: '#7ee787', get: key('running') },
    { label: 'waiting', color: '#e3b341', get: key('waiting') },
    { label: 'swapped', color: '#ff7b72', get: key('swapped') },
  ], {});
  drawChart($('chart-batch'), S, [{ label: 'tokens per step', color: '#d2a8ff', get: key('batch_tokens') }], {});
  drawChart($('chart-rate'), S, [{ label: 'generated tokens/s', color: '#6cb6ff', get: key('tokens_per_s') }], {});
  drawChart($('chart-latency'), S, [
    { label: 'TPOT', color: '#7ee787', get: key('tpot_ms') },
    { label: 'TTFT', color: '#ffa657', get: key('ttft_ms') },
  ], {});
  drawChart($('chart-prefix'), S, [{ label: 'hit rate', color: '#7ee7a0', get: pct('prefix_hit_rate') }], { max: 100 });
  const hit = lastOf(S, 'prefix_hit_rate');
  const saved = lastOf(S, 'prefix_tokens_saved');
  const tpot = lastOf(S, 'tpot_ms');
  const ttft = lastOf(S, 'ttft_ms');
  $('fig-hit-rate').textContent = hit == null ? '–' : (100 * hit).toFixed(1) + '%';
  $('fig-saved').textContent = saved == null ? '–' : saved;
  $('fig-tpot').textContent = tpot == null ? '–' : tpot.toFixed(1) + ' ms';
  $('fig-ttft').textContent = ttft == null ? '–' : ttft.toFixed(0) + ' ms';
  $('series-panel').dataset.samples = S.length;
  $('series-summary').textContent = S.length ? `${S.length} samples, one a second` : '';
}

async function pollHistory() {
  try {
    const j = await getJSON('/v1/kv/history' + (state.lastT >= 0 ? '?since=' + state.lastT : ''));
    if (j.samples.length) {
      state.samples.push(...j.samples);
      state.lastT = j.samples[j.samples.length - 1].t;
      const t0 = state.lastT - WINDOW_S;
      while (state.samples.length && state.samples[0].t < t0) state.samples.shift();
    }
    drawSeries();
    $('series-error').hidden = true;
  } catch (e) {
    $('series-error').hidden = false;
    $('series-error').textContent = 'time series: ' + (e.message || e);
  }
}

// ---------------------------------------------------------------- what if

function planText(j) {
  const parts = [];
  if (j.prompt_tokens != null) {
    const now = j.fits_now ? 'fits now' : 'does not fit now';
    parts.push(`A prompt of ${j.prompt_tokens} tokens ${now}: it needs ${j.blocks_needed} blocks, ` +
      `${j.blocks_available} are free or cached.` + (j.fits_ever ? '' : ' It never fits.'));
  }
  if (j.users_at_context != null)
    parts.push(`${j.users_at_context} users of ${j.context} positions fit in the pool ` +
      `(${j.bytes_per_token} bytes per token).`);
  if (j.reason && !j.fits_ever) parts.push(j.reason);
  return parts.join(' ');
}

function setupPlan() {
  $('plan-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if ($('plan-prompt').value) q.set('prompt_tokens', $('plan-prompt').value);
    if ($('plan-context').value) q.set('context', $('plan-context').value);
    const out = $('plan-result');
    try {
      const j = await getJSON('/v1/plan?' + q);
      out.className = '';
      out.textContent = planText(j);
      out.dataset.fitsNow = j.fits_now;
      out.dataset.users = j.users_at_context;
    } catch (e) {
      out.className = 'error';
      out.textContent = e.message || String(e);
    }
  });
}

// ---------------------------------------------------------------- start

async function loadModel() {
  try {
    const j = await getJSON('/v1/models');
    state.model = j.data && j.data[0] ? j.data[0].id : null;
    $('model').textContent = 'model: ' + (state.model || '?');
  } catch (e) {
    $('model').textContent = 'model: ' + (e.message || e);
  }
}

function start() {
  $('key-button').addEventListener('click', () => askKey());
  setupChat();
  setupLegend();
  setupMapHover();
  setupPlan();
  loadModel().then(() => {
    poller(MAP_MS, pollMap);
    poller(HISTORY_MS, pollHistory);
  });
}

start();

// medallion ui: a read-only view of the bundle's pipelines, jobs, tables and metrics.
// Plain ES2020, no build step. Globals from /vendor: dagre (graph layout), uPlot (charts).
// Every text from the API goes into the DOM through textContent or setAttribute (the
// h()/svg() builders below); nothing is parsed as HTML.
'use strict';

(() => {
  // ------------------------------------------------------------------ formatting

  const NUM = new Intl.NumberFormat('en-US');
  const DEC = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });
  const PAGE = 20;
  const ROWS_PAGE = 50;
  const TOKEN_KEY = 'medallion-ui-token';

  const fmtInt = (n) => (n == null ? '—' : NUM.format(n));
  const fmtDec = (n) => (n == null ? '—' : DEC.format(n));
  const toMs = (iso) => (iso ? Date.parse(iso) : NaN);
  const pad2 = (n) => String(n).padStart(2, '0');

  function fmtTime(iso) {
    const t = typeof iso === 'number' ? iso : toMs(iso);
    if (!Number.isFinite(t)) return '—';
    const d = new Date(t);
    return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ` +
      `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  }

  function ago(iso) {
    const t = toMs(iso);
    if (!Number.isFinite(t)) return '—';
    const s = Math.round((Date.now() - t) / 1000);
    if (s < 10) return 'just now';
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  function fmtDuration(ms) {
    if (ms == null || !Number.isFinite(ms)) return '—';
    if (ms < 0) ms = 0;
    if (ms < 1000) return `${Math.round(ms)} ms`;
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(1)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  // Short durations for axis ticks: 850 ms, 4.2 s, 38 s, 7.5 min, 2.1 h.
  function fmtTick(ms) {
    const s = ms / 1000;
    if (s < 1) return `${Math.round(ms)} ms`;
    if (s < 10) return `${s.toFixed(1)} s`;
    if (s < 120) return `${Math.round(s)} s`;
    if (s < 7200) return `${DEC.format(s / 60)} min`;
    return `${DEC.format(s / 3600)} h`;
  }

  function fmtBytes(n) {
    if (n == null) return '—';
    const units = ['B', 'KB', 'MB', 'GB', 'TB', 'PB'];
    let i = 0;
    let v = n;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return `${i === 0 ? v : v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
  }

  function fmtCompact(v) {
    if (v == null) return '';
    const a = Math.abs(v);
    if (a >= 1e9) return `${DEC.format(v / 1e9)}B`;
    if (a >= 1e6) return `${DEC.format(v / 1e6)}M`;
    if (a >= 1e3) return `${DEC.format(v / 1e3)}k`;
    return DEC.format(v);
  }

  const shortId = (id) => String(id ?? '').slice(0, 8);

  // A pass rate that never rounds a failure up to 100 %.
  function fmtRate(passed, failed) {
    const total = passed + failed;
    if (!total) return '—';
    const r = (passed / total) * 100;
    if (failed && r >= 99.9) return `${(Math.floor(r * 100) / 100).toFixed(2)} %`;
    return `${DEC.format(r)} %`;
  }

  // Span between two ISO times in ms; an open end is "now".
  function spanMs(start, end) {
    const a = toMs(start);
    if (!Number.isFinite(a)) return null;
    const b = end ? toMs(end) : Date.now();
    return Number.isFinite(b) ? b - a : null;
  }

  // Maps any state word (graph, update, flow, run, task) to a badge colour class.
  function stateClass(state) {
    const k = String(state ?? '').toLowerCase();
    if (['running', 'in_progress', 'starting', 'initializing', 'resetting', 'setting_up_tables', 'waiting_for_resources'].includes(k)) return 'running';
    if (['queued', 'pending', 'created', 'waiting'].includes(k)) return 'queued';
    if (['succeeded', 'completed', 'success', 'ok'].includes(k)) return 'ok';
    if (['failed', 'error', 'internal_error', 'timedout', 'timed_out'].includes(k)) return 'failed';
    if (['skipped', 'canceled', 'cancelled', 'excluded', 'upstream_failed'].includes(k)) return 'skipped';
    if (['interrupted', 'stopping', 'stopped'].includes(k)) return 'warn';
    if (k === 'idle') return 'idle';
    return 'neutral';
  }

  // ------------------------------------------------------------------ DOM builders

  function setAttrs(el, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }

  function appendKids(el, kids) {
    for (const k of kids.flat(Infinity)) {
      if (k == null || k === false) continue;
      el.append(k instanceof Node ? k : String(k));
    }
  }

  // h('div', {class: 'x', 'data-id': id}, 'text', child, [more]) → HTMLElement.
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    appendKids(el, kids);
    return el;
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, ...kids) {
    const el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    appendKids(el, kids);
    return el;
  }

  const badge = (state, text) => h('span', { class: `badge st-${stateClass(state)}` }, text ?? state ?? '—');
  const nullCell = () => h('span', { class: 'null' }, 'null');
  const empty = (text) => h('div', { class: 'empty' }, text);
  const tableLink = (name) => h('a', { href: `#/table/${encodeURIComponent(name)}`, class: 'mono' }, name);
  const timeEl = (iso) => h('span', { class: 'time', title: iso || '' }, fmtTime(iso));
  const agoEl = (iso) => h('span', { class: 'ago', 'data-ts': iso || '', title: iso || '' }, ago(iso));

  function errorBox(err) {
    const msg = err && err.message ? err.message : String(err);
    return h('div', { class: 'error' }, msg);
  }

  // A data table: columns [{label, cls}] and rows of cells (Node or text).
  function dataTable(columns, rows, cls) {
    return h('table', { class: `grid ${cls || ''}` },
      h('thead', null, h('tr', null, columns.map((c) => h('th', { class: c.cls || null }, c.label)))),
      h('tbody', null, rows.map((cells) => h('tr', null, cells.map((v, i) =>
        h('td', { class: columns[i] && columns[i].cls ? columns[i].cls : null }, v))))));
  }

  // A cell holding a value that may be NULL (SQL results, rows, samples).
  function valueCell(v) {
    if (v === null || v === undefined) return h('td', { class: 'v' }, nullCell());
    const s = typeof v === 'string' ? v : JSON.stringify(v);
    const num = /^-?\d+(\.\d+)?([eE][-+]?\d+)?$/.test(s);
    return h('td', { class: num ? 'v num' : 'v', title: s.length > 40 ? s : null }, s);
  }

  function valuesTable(columns, rows) {
    return h('table', { class: 'grid values' },
      h('thead', null, h('tr', null, columns.map((c) => h('th', null, c)))),
      h('tbody', null, rows.map((r) => h('tr', null, columns.map((_, i) => valueCell(r[i]))))));
  }

  // "showing 1–20 of 10,000" with Newer/Older (or Previous/Next) buttons.
  function pager({ offset, limit, total, count, noun, prev, next, onPage }) {
    const first = count ? offset + 1 : 0;
    const last = offset + count;
    const text = total === 0 ? `no ${noun || 'items'}`
      : count === 0 ? `nothing at ${fmtInt(offset + 1)} of ${fmtInt(total)}`
        : `${noun ? noun : 'showing'} ${fmtInt(first)}–${fmtInt(last)} of ${fmtInt(total)}`;
    return h('div', { class: 'pager' },
      h('span', { class: 'pager-text' }, text),
      h('button', { type: 'button', class: 'btn', disabled: offset <= 0, onclick: () => onPage(Math.max(0, offset - limit)) }, prev || 'Newer'),
      h('button', { type: 'button', class: 'btn', disabled: offset + limit >= total, onclick: () => onPage(offset + limit) }, next || 'Older'));
  }

  function panelHead(title, ...right) {
    return h('div', { class: 'panel-head' }, h('h2', null, title), h('div', { class: 'panel-tools' }, right));
  }

  let measureCtx = null;
  let families = null;
  // Width of a text in px; font is "weight size", mono picks the monospace family and
  // spacing adds a letter-spacing (canvas does not apply CSS letter-spacing).
  function textWidth(text, font, { mono = false, spacing = 0 } = {}) {
    if (!measureCtx) {
      measureCtx = document.createElement('canvas').getContext('2d');
      families = {
        sans: getComputedStyle(document.body).fontFamily,
        mono: getComputedStyle(document.documentElement).getPropertyValue('--mono').trim() || 'monospace',
      };
    }
    measureCtx.font = `${font} ${mono ? families.mono : families.sans}`;
    return measureCtx.measureText(text).width + spacing * text.length;
  }

  function clipText(text, maxPx, font, opts) {
    if (textWidth(text, font, opts) <= maxPx) return text;
    let s = text;
    while (s.length > 1 && textWidth(`${s}…`, font, opts) > maxPx) s = s.slice(0, -1);
    return `${s}…`;
  }

  // ------------------------------------------------------------------ token & API

  let memoryToken = null;
  function getToken() {
    try { return sessionStorage.getItem(TOKEN_KEY) || memoryToken; } catch (_) { return memoryToken; }
  }
  function setToken(t) {
    memoryToken = t;
    try { sessionStorage.setItem(TOKEN_KEY, t); } catch (_) { /* private mode: memory only */ }
  }

  let tokenPrompt = null;
  function askToken(rejected) {
    if (tokenPrompt) return tokenPrompt;
    tokenPrompt = new Promise((resolve) => {
      const input = h('input', { type: 'password', id: 'token-input', autocomplete: 'off', spellcheck: 'false', placeholder: 'access token' });
      const modal = h('div', { class: 'modal-backdrop', id: 'token-modal' },
        h('form', {
          class: 'modal',
          onsubmit: (e) => {
            e.preventDefault();
            const v = input.value.trim();
            if (!v) { input.focus(); return; }
            setToken(v);
            modal.remove();
            tokenPrompt = null;
            resolve(v);
            connectLive();
          },
        },
        h('h2', null, 'Access token'),
        h('p', null, 'This medallion ui needs its token: started with --token or MEDALLION_UI_TOKEN'),
        rejected ? h('p', { class: 'modal-warn' }, 'The stored token was not accepted.') : null,
        input,
        h('div', { class: 'modal-actions' }, h('button', { type: 'submit', class: 'btn primary' }, 'Continue'))));
      document.body.append(modal);
      input.focus();
    });
    return tokenPrompt;
  }

  // fetch + JSON + {"error"} bodies + the token prompt on 401.
  async function api(path, options = {}) {
    for (;;) {
      const token = getToken();
      const headers = Object.assign({ Accept: 'application/json' }, options.headers);
      if (token) headers.Authorization = `Bearer ${token}`;
      let res;
      try {
        res = await fetch(path, Object.assign({}, options, { headers, cache: 'no-store' }));
      } catch (e) {
        throw new Error(`Cannot reach the medallion ui server (${e.message}).`);
      }
      if (res.status === 401) {
        if (getToken() === token) await askToken(Boolean(token));
        continue;
      }
      const text = await res.text();
      let body = null;
      try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
      if (!res.ok) {
        const msg = body && typeof body.error === 'string' ? body.error : `${res.status} ${res.statusText}`.trim();
        const err = new Error(msg);
        err.status = res.status;
        throw err;
      }
      if (body === null) throw new Error(`${path} did not answer JSON.`);
      return body;
    }
  }

  const enc = encodeURIComponent;

  // ------------------------------------------------------------------ charts (uPlot)

  const PALETTE = ['#2563eb', '#16a34a', '#d97706', '#9333ea', '#dc2626', '#0891b2', '#db2777', '#65a30d', '#475569'];
  const charts = new Set();

  // uPlot's time axis templates, in 24-hour ISO style.
  function fmtDate(tpl) {
    return uPlot.fmtDate(tpl
      .replace(/\{h\}\{aa\}/g, '{HH}:00')
      .replace(/\{h\}/g, '{HH}')
      .replace(/\{aa\}/g, '')
      .replace(/\{M\}\/\{D\}\/\{YY\}/g, '{YYYY}-{MM}-{DD}')
      .replace(/\{M\}\/\{D\}/g, '{MM}-{DD}'));
  }

  function makeChart(container, opts, data) {
    const width = Math.max(240, container.clientWidth);
    const u = new uPlot(Object.assign({ fmtDate }, opts, { width }), data, container);
    charts.add({ u, container, height: opts.height });
    return u;
  }

  function destroyCharts(root) {
    for (const c of [...charts]) {
      if (!root || root.contains(c.container) || !c.container.isConnected) {
        c.u.destroy();
        charts.delete(c);
      }
    }
  }

  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      for (const c of charts) c.u.setSize({ width: Math.max(240, c.container.clientWidth), height: c.height });
    }, 100);
  });

  const axisStyle = { stroke: '#6b7280', grid: { stroke: '#eef0f3', width: 1 }, ticks: { stroke: '#e5e7eb', width: 1 } };
  const timeLegend = (u, v) => (v == null ? '—' : fmtTime(v * 1000));
  // A time scale; points within a minute (one update) get an hour around them, not
  // uPlot's default of years for a single point or milliseconds for a few.
  function timeScale(xs) {
    const lo = Math.min(...xs);
    const hi = Math.max(...xs);
    const mid = (lo + hi) / 2;
    return hi - lo < 60 ? { time: true, auto: false, range: [mid - 1800, mid + 1800] } : { time: true };
  }

  // ------------------------------------------------------------------ sections & pages

  const view = { gen: 0, page: null, overview: null };
  const memo = { runs: { updates: 0, runs: 0 }, tables: new Map(), sql: { text: null, last: null }, graphZoom: 'auto' };

  // A part of a page with its own fetch and render; refreshing replaces its children
  // in one step, so the scroll position and the surrounding page stay put.
  class Section {
    constructor(el, load, render, renderError) {
      this.el = el;
      this.load = load;
      this.render = render;
      this.renderError = renderError || ((box, e) => box.append(errorBox(e)));
      this.seq = 0;
      this.ok = false;
      if (!el.firstChild) el.append(h('div', { class: 'loading' }, 'Loading…'));
    }

    async refresh(quiet) {
      const seq = ++this.seq;
      const gen = view.gen;
      let data;
      try {
        data = await this.load();
      } catch (e) {
        if (seq !== this.seq || gen !== view.gen) return;
        if (quiet && this.ok) { toast(`Refresh failed: ${e.message}`); return; }
        destroyCharts(this.el);
        this.el.replaceChildren();
        this.renderError(this.el, e);
        this.ok = false;
        return;
      }
      if (seq !== this.seq || gen !== view.gen) return;
      // Hold the old height while the new content is built (charts measure the page), so
      // that the page does not shrink and lose the scroll position.
      const y = window.scrollY;
      const inner = new Map([...this.el.querySelectorAll('[data-keep-scroll]')]
        .map((e) => [e.dataset.keepScroll, [e.scrollLeft, e.scrollTop]]));
      this.el.style.minHeight = `${this.el.offsetHeight}px`;
      destroyCharts(this.el);
      this.el.replaceChildren();
      try {
        this.render(this.el, data);
        this.ok = true;
      } catch (e) {
        console.error(e);
        destroyCharts(this.el);
        this.el.replaceChildren(errorBox(new Error(`Could not show this data: ${e.message}`)));
        this.ok = false;
      }
      this.el.style.minHeight = '';
      if (!quiet) return;
      // A live refresh also keeps the scroll position of scrolled boxes (graph, rows).
      for (const e of this.el.querySelectorAll('[data-keep-scroll]')) {
        const pos = inner.get(e.dataset.keepScroll);
        if (pos) [e.scrollLeft, e.scrollTop] = pos;
      }
      if (window.scrollY !== y) window.scrollTo(window.scrollX, y);
    }
  }

  function pageHead(title, sub) {
    return h('div', { class: 'page-head' }, h('h1', null, title), sub ? h('div', { class: 'page-sub' }, sub) : null);
  }

  // --- #/graph ---------------------------------------------------------------

  const NODE_W = 216;
  const NODE_H = 84;
  const KINDS = {
    'streaming table': 'streaming-table',
    'materialized view': 'materialized-view',
    'temporary view': 'temporary-view',
    table: 'table',
    files: 'files',
    kafka: 'kafka',
    sink: 'sink',
  };
  const kindSlug = (k) => KINDS[k] || 'other';
  const isSource = (slug) => slug === 'files' || slug === 'kafka';
  const SKEW = 12;

  function mountGraph(main) {
    const el = h('div', { class: 'graph-page' });
    main.append(pageHead('Pipeline graph', overviewLine()), el);
    const sec = new Section(el, () => api('/api/graph'), renderGraph);
    return { refresh: (quiet) => sec.refresh(quiet) };
  }

  function overviewLine() {
    const o = view.overview;
    const line = h('span', { id: 'overview-line' });
    if (!o) return line;
    const names = (list) => list.map((x) => x.name || x.key).join(', ') || 'none';
    appendKids(line, [
      h('span', { class: 'muted' }, 'Pipelines: '), names(o.pipelines || []),
      h('span', { class: 'sep' }, '·'),
      h('span', { class: 'muted' }, 'Jobs: '), names(o.jobs || []),
      h('span', { class: 'sep' }, '·'),
      h('span', { class: 'muted' }, 'Catalog: '), h('span', { class: 'mono' }, o.catalog || '—'),
    ]);
    return line;
  }

  function renderGraph(el, data) {
    const nodes = data.nodes || [];
    const edges = data.edges || [];
    if (!nodes.length) { el.append(empty('No datasets or flows in this bundle yet.')); return; }

    const g = layoutGraph(nodes, edges);
    const box = g.graph();
    const W = Math.ceil(box.width);
    const H = Math.ceil(box.height);
    const root = svg('svg', {
      class: 'graph', viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img',
      'aria-label': `graph of ${nodes.length} datasets and ${edges.length} flows`,
    }, graphDefs());
    applyZoom(root, W);

    for (const id of g.nodes()) {
      const n = g.node(id);
      if (n.cluster) root.append(drawCluster(n));
    }
    for (const e of g.edges()) root.append(drawEdge(g.edge(e)));
    for (const id of g.nodes()) {
      const n = g.node(id);
      if (!n.cluster) root.append(drawNode(n.data, n.x, n.y));
    }

    el.append(h('div', { class: 'panel graph-panel' },
      h('div', { class: 'graph-summary' }, graphSummary(nodes, edges), zoomControl(root, W)),
      enablePan(h('div', { class: 'graph-wrap', 'data-keep-scroll': 'graph' }, root)),
      graphLegend()));
  }

  // auto: scale down to the page width, but not below 70 % (then scroll); fit: always
  // the page width; actual: 1:1 and scroll.
  const ZOOMS = [['auto', 'Auto'], ['fit', 'Fit'], ['actual', '100 %']];
  function applyZoom(root, W) {
    const z = memo.graphZoom;
    Object.assign(root.style, {
      width: z === 'actual' ? `${W}px` : '100%',
      maxWidth: z === 'fit' ? 'none' : `${W}px`,
      minWidth: z === 'auto' ? `${Math.round(W * 0.7)}px` : '0',
      height: 'auto',
    });
  }

  function zoomControl(root, W) {
    const box = h('div', { class: 'seg', role: 'group', 'aria-label': 'zoom' });
    for (const [key, text] of ZOOMS) {
      box.append(h('button', {
        type: 'button', class: memo.graphZoom === key ? 'active' : null, 'data-zoom': key,
        onclick: () => {
          memo.graphZoom = key;
          applyZoom(root, W);
          for (const b of box.children) b.classList.toggle('active', b.dataset.zoom === key);
        },
      }, text));
    }
    return box;
  }

  // Dragging the background scrolls a graph larger than the page.
  function enablePan(wrap) {
    let start = null;
    wrap.addEventListener('pointerdown', (e) => {
      if (e.button !== 0 || e.target.closest('a')) return;
      if (wrap.scrollWidth <= wrap.clientWidth && wrap.scrollHeight <= wrap.clientHeight) return;
      start = { x: e.clientX, y: e.clientY, left: wrap.scrollLeft, top: wrap.scrollTop };
      wrap.setPointerCapture(e.pointerId);
      wrap.classList.add('panning');
    });
    wrap.addEventListener('pointermove', (e) => {
      if (!start) return;
      wrap.scrollLeft = start.left - (e.clientX - start.x);
      wrap.scrollTop = start.top - (e.clientY - start.y);
    });
    const stop = () => { start = null; wrap.classList.remove('panning'); };
    wrap.addEventListener('pointerup', stop);
    wrap.addEventListener('pointercancel', stop);
    return wrap;
  }

  // Lays the graph out with dagre, grouped by `group` (a compound graph); should dagre
  // fail on the groups, the same graph is laid out without them.
  function layoutGraph(nodes, edges) {
    try {
      return dagreLayout(nodes, edges, true);
    } catch (e) {
      console.warn('graph layout with groups failed, laying out without them', e);
      return dagreLayout(nodes, edges, false);
    }
  }

  function dagreLayout(nodes, edges, grouped) {
    const groups = grouped ? [...new Set(nodes.map((n) => n.group).filter(Boolean))] : [];
    const g = new dagre.graphlib.Graph({ compound: groups.length > 0, multigraph: true });
    g.setGraph({ rankdir: 'LR', nodesep: 22, ranksep: 40, edgesep: 12, marginx: 12, marginy: 28 });
    g.setDefaultEdgeLabel(() => ({}));
    const groupId = (name) => `\u0000group:${name}`;
    for (const name of groups) g.setNode(groupId(name), { cluster: true, label: name });
    for (const n of nodes) {
      g.setNode(n.id, { width: NODE_W, height: NODE_H, data: n });
      if (n.group && groups.length) g.setParent(n.id, groupId(n.group));
    }
    edges.forEach((e, i) => {
      if (!g.hasNode(e.from) || !g.hasNode(e.to)) return;
      const label = e.label || '';
      g.setEdge(e.from, e.to, {
        data: e,
        weight: e.stream ? 2 : 1,
        labelpos: 'c',
        width: label ? Math.ceil(textWidth(label, '11px')) + 12 : 0,
        height: label ? 18 : 0,
      }, `e${i}`);
    });
    dagre.layout(g);
    return g;
  }

  function graphDefs() {
    const arrow = (id) => svg('marker', {
      id, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 9, markerHeight: 9,
      markerUnits: 'userSpaceOnUse', orient: 'auto-start-reverse',
    }, svg('path', { d: 'M0,0 L10,5 L0,10 z', class: `arrow ${id}` }));
    return svg('defs', null, arrow('arrow-stream'), arrow('arrow-batch'));
  }

  function drawCluster(c) {
    const x = c.x - c.width / 2;
    const y = c.y - c.height / 2 - 16;
    return svg('g', { class: 'cluster', 'data-group': c.label },
      svg('rect', { x, y, width: c.width, height: c.height + 16, rx: 10 }),
      svg('text', { x: x + 12, y: y + 16, class: 'cluster-label' }, c.label));
  }

  // A B-spline through dagre's edge points (the same curve as d3.curveBasis).
  function basisPath(pts) {
    if (pts.length < 3) return `M${pts.map((p) => `${p.x},${p.y}`).join('L')}`;
    let [x0, y0] = [pts[0].x, pts[0].y];
    let [x1, y1] = [pts[1].x, pts[1].y];
    let d = `M${x0},${y0}L${(5 * x0 + x1) / 6},${(5 * y0 + y1) / 6}`;
    const seg = (x, y) => `C${(2 * x0 + x1) / 3},${(2 * y0 + y1) / 3} ${(x0 + 2 * x1) / 3},${(y0 + 2 * y1) / 3} ${(x0 + 4 * x1 + x) / 6},${(y0 + 4 * y1 + y) / 6}`;
    for (let i = 2; i < pts.length; i++) {
      d += seg(pts[i].x, pts[i].y);
      [x0, y0, x1, y1] = [x1, y1, pts[i].x, pts[i].y];
    }
    d += seg(x1, y1);
    return `${d}L${x1},${y1}`;
  }

  function drawEdge(ed) {
    const e = ed.data;
    const kind = e.stream ? 'stream' : 'batch';
    const g = svg('g', { class: `edge ${kind}`, 'data-from': e.from, 'data-to': e.to },
      svg('title', null, `${e.from} → ${e.to} (${e.stream ? 'streaming read' : 'batch read'})${e.label ? `: ${e.label}` : ''}`),
      svg('path', { d: basisPath(ed.points), 'marker-end': `url(#arrow-${kind})` }));
    if (e.label && Number.isFinite(ed.x)) {
      const w = ed.width;
      g.append(
        svg('rect', { class: 'edge-label-bg', x: ed.x - w / 2, y: ed.y - 9, width: w, height: 18, rx: 9 }),
        svg('text', { class: 'edge-label', x: ed.x, y: ed.y + 4, 'text-anchor': 'middle' }, e.label));
    }
    return g;
  }

  function nodeShape(slug) {
    const W = NODE_W;
    const H = NODE_H;
    switch (slug) {
      case 'files':
      case 'kafka':
        return [svg('polygon', { class: 'shape', points: `${SKEW},0 ${W},0 ${W - SKEW},${H} 0,${H}` })];
      case 'sink':
        return [svg('polygon', { class: 'shape', points: `0,0 ${W - 16},0 ${W},${H / 2} ${W - 16},${H} 0,${H}` })];
      case 'materialized-view':
        return [svg('rect', { class: 'shape', width: W, height: H, rx: 7 }),
          svg('rect', { class: 'inner', x: 3.5, y: 3.5, width: W - 7, height: H - 7, rx: 4.5 })];
      case 'streaming-table':
        return [svg('rect', { class: 'shape', width: W, height: H, rx: 7 }),
          svg('path', { class: 'accent', d: `M7,0 A7,7 0 0 0 0,7 V${H - 7} A7,7 0 0 0 7,${H} Z` })];
      default:
        return [svg('rect', { class: 'shape', width: W, height: H, rx: 7 })];
    }
  }

  // Free horizontal space inside a node's shape at height y: [left inset, right inset].
  function insets(slug, y) {
    if (isSource(slug)) return [SKEW * (1 - y / NODE_H) + 10, SKEW * (y / NODE_H) + 10];
    if (slug === 'sink') return [13, 16 * (Math.abs(y - NODE_H / 2) / (NODE_H / 2)) + 10];
    return [slug === 'streaming-table' ? 15 : 13, 10];
  }

  // The label, its "schema." prefix muted when it has one and fits whole.
  function nodeLabel(label, schema, x, maxPx) {
    const text = clipText(label, maxPx, '600 13px');
    const el = svg('text', { class: 'node-label', x, y: 37 });
    if (schema && text === label && label.startsWith(`${schema}.`)) {
      el.append(svg('tspan', { class: 'node-schema' }, `${schema}.`), label.slice(schema.length + 1));
    } else el.append(text);
    return el;
  }

  function drawNode(n, cx, cy) {
    const slug = kindSlug(n.kind);
    const W = NODE_W;
    const state = n.state || 'idle';
    const kindText = String(n.kind || 'dataset');
    const schema = n.table && n.table.includes('.') ? n.table.split('.')[0] : null;
    const label = String(n.label || n.id);
    const rowsText = n.rows == null ? null : `${fmtInt(n.rows)} rows`;
    const KIND_FONT = ['600 9.5px', { spacing: 0.6 }];
    const BADGE_FONT = ['600 9.5px', { spacing: 0.5 }];

    // Line 1: kind (· schema when it fits); 2: label; 3: rows (or the detail) and the
    // state badge; 4: changed and the version.
    const [l1, r1] = insets(slug, 14);
    const [l2, r2] = insets(slug, 36);
    const [l3, r3] = insets(slug, 52);
    const [l4, r4] = insets(slug, 70);
    const kindMax = W - l1 - r1;
    const labelHasSchema = schema && label.startsWith(`${schema}.`);
    const withSchema = schema && !labelHasSchema ? `${kindText} · ${schema}`.toUpperCase() : null;
    const kindLine = withSchema && textWidth(withSchema, ...KIND_FONT) <= kindMax ? withSchema : clipText(kindText.toUpperCase(), kindMax, ...KIND_FONT);
    const stateW = Math.ceil(textWidth(state.toUpperCase(), ...BADGE_FONT)) + 14;
    const versionText = n.version != null ? `v${n.version}` : '';

    const body = [
      ...nodeShape(slug),
      svg('text', { class: 'node-kind', x: l1, y: 17 }, kindLine),
      nodeLabel(label, schema, l2, W - l2 - r2),
      rowsText ? svg('text', { class: 'node-rows', x: l3, y: 56 }, rowsText)
        : svg('text', { class: 'node-detail', x: l3, y: 56 }, clipText(n.detail || '', W - l3 - r3 - stateW - 8, '11px')),
      svg('g', { class: `node-badge st-${stateClass(state)}`, transform: `translate(${W - r3 - stateW},44)` },
        svg('rect', { width: stateW, height: 16, rx: 8 }),
        svg('text', { x: stateW / 2, y: 11.5, 'text-anchor': 'middle' }, state)),
      n.changed ? svg('text', { class: 'node-changed', x: l4, y: 73 }, 'changed ', svg('tspan', { class: 'ago', 'data-ts': n.changed }, ago(n.changed))) : null,
      versionText ? svg('text', { class: 'node-version', x: W - r4, y: 73, 'text-anchor': 'end' }, versionText) : null,
    ];
    const tip = [n.table || label, kindText, state, rowsText, n.version != null ? `version ${n.version}` : null,
      n.changed ? `changed ${fmtTime(n.changed)}` : null, n.detail, n.table ? 'click to open the table' : null].filter(Boolean).join('\n');

    const g = svg('g', {
      class: `node kind-${slug} st-${stateClass(state)}${n.table ? ' clickable' : ''}`,
      'data-id': n.id,
      'data-table': n.table || '',
      'data-state': state,
      'data-rows': n.rows == null ? '' : String(n.rows),
      transform: `translate(${cx - W / 2},${cy - NODE_H / 2})`,
    }, svg('title', null, tip));
    if (n.table) {
      const href = `#/table/${enc(n.table)}`;
      g.append(svg('a', { href, 'aria-label': `table ${n.table}` }, body));
      // A click on the node itself (not through its link) opens the table too.
      g.addEventListener('click', (e) => {
        if (!e.defaultPrevented && !(e.target.closest && e.target.closest('a'))) location.hash = href;
      });
    } else appendKids(g, body);
    return g;
  }

  function graphSummary(nodes, edges) {
    const count = (s) => nodes.filter((n) => n.state === s).length;
    const parts = [`${nodes.length} datasets`, `${edges.length} flows`];
    for (const s of ['running', 'failed']) if (count(s)) parts.push(`${count(s)} ${s}`);
    return [h('span', null, parts.join(' · ')), h('span', { class: 'muted hint' }, 'Click a table to open it.')];
  }

  function graphLegend() {
    const shape = (slug) => {
      const w = 30;
      const hgt = 16;
      let s;
      if (isSource(slug)) s = svg('polygon', { class: 'shape', points: `5,1 ${w - 1},1 ${w - 5},${hgt - 1} 1,${hgt - 1}` });
      else if (slug === 'sink') s = svg('polygon', { class: 'shape', points: `1,1 ${w - 7},1 ${w - 1},${hgt / 2} ${w - 7},${hgt - 1} 1,${hgt - 1}` });
      else s = svg('rect', { class: 'shape', x: 1, y: 1, width: w - 2, height: hgt - 2, rx: 3 });
      const extra = slug === 'materialized-view' ? svg('rect', { class: 'inner', x: 3.5, y: 3.5, width: w - 7, height: hgt - 7, rx: 1.5 })
        : slug === 'streaming-table' ? svg('rect', { class: 'accent', x: 1, y: 1, width: 3.5, height: hgt - 2 }) : null;
      return svg('svg', { class: `legend-shape kind-${slug}`, width: w, height: hgt, viewBox: `0 0 ${w} ${hgt}` }, s, extra);
    };
    const edge = (kind) => svg('svg', { class: 'legend-edge', width: 36, height: 12, viewBox: '0 0 36 12' },
      svg('g', { class: `edge ${kind}` }, svg('path', { d: 'M1,6 L27,6', 'marker-end': `url(#arrow-${kind})` })));
    const item = (icon, text) => h('span', { class: 'legend-item' }, icon, text);
    return h('div', { class: 'legend' },
      Object.entries(KINDS).map(([k, slug]) => item(shape(slug), k)),
      h('span', { class: 'legend-sep' }),
      item(edge('stream'), 'streaming read'),
      item(edge('batch'), 'batch read'),
      h('span', { class: 'legend-sep' }),
      ['running', 'succeeded', 'failed', 'skipped', 'idle'].map((s) => badge(s)));
  }

  // --- #/runs ----------------------------------------------------------------

  function mountRuns(main) {
    const updEl = h('section', { class: 'panel', id: 'updates' });
    const runEl = h('section', { class: 'panel', id: 'runs' });
    const jump = (id, text) => h('button', { type: 'button', class: 'link-btn', onclick: () => document.getElementById(id).scrollIntoView({ behavior: 'smooth' }) }, text);
    main.append(pageHead('Updates and runs', [jump('updates', 'Pipeline updates'), h('span', { class: 'sep' }, '·'), jump('runs', 'Job runs')]), updEl, runEl);

    const upd = new Section(updEl, () => api(`/api/updates?offset=${memo.runs.updates}&limit=${PAGE}`), renderUpdates);
    const runs = new Section(runEl, () => api(`/api/runs?offset=${memo.runs.runs}&limit=${PAGE}`), renderRuns);
    const page = (sec, key) => async (offset) => {
      memo.runs[key] = offset;
      await sec.refresh(false);
      if (sec.el.getBoundingClientRect().top < 0) sec.el.scrollIntoView();
    };
    upd.onPage = page(upd, 'updates');
    runs.onPage = page(runs, 'runs');
    return { refresh: (quiet) => Promise.all([upd.refresh(quiet), runs.refresh(quiet)]) };

    function renderUpdates(el, data) {
      const list = data.updates || [];
      el.append(panelHead('Pipeline updates', pager({ offset: data.offset ?? memo.runs.updates, limit: data.limit || PAGE, total: data.total || 0, count: list.length, onPage: upd.onPage })));
      if (!data.total) { el.append(empty('No pipeline updates yet.')); return; }
      for (const u of list) el.append(updateCard(u));
    }

    function renderRuns(el, data) {
      const list = data.runs || [];
      el.append(panelHead('Job runs', pager({ offset: data.offset ?? memo.runs.runs, limit: data.limit || PAGE, total: data.total || 0, count: list.length, onPage: runs.onPage })));
      if (!data.total) { el.append(empty('No job runs yet.')); return; }
      for (const r of list) el.append(runCard(r));
    }
  }

  function cardHead(state, title, idText, idTitle, start, end, extra) {
    const dur = spanMs(start, end);
    return h('div', { class: 'card-head' },
      badge(state),
      h('span', { class: 'card-title' }, title),
      h('span', { class: 'card-id mono', title: idTitle }, idText),
      h('span', { class: 'spacer' }),
      extra,
      h('span', { class: 'meta' }, h('span', { class: 'muted' }, 'started '), timeEl(start), ' (', agoEl(start), ')'),
      h('span', { class: 'meta' }, h('span', { class: 'muted' }, end ? 'took ' : 'running for '), h('span', { class: 'mono' }, fmtDuration(dur))));
  }

  function updateCard(u) {
    const flows = u.flows || [];
    const cls = `update card st-${stateClass(u.state)}`;
    return h('div', { class: cls, 'data-state': u.state, 'data-update': u.update_id },
      cardHead(u.state, u.pipeline, `update ${shortId(u.update_id)}`, u.update_id, u.start, u.end),
      u.error ? h('pre', { class: 'error' }, u.error) : null,
      timeline(u.start, u.end, flows, {
        head: ['Flow', 'Duration', 'Rows read → written', 'Dropped', 'State'],
        row: (f, bar) => h('div', { class: `flow tl-row st-${stateClass(f.state)}`, 'data-flow': f.flow, 'data-state': f.state },
          h('div', { class: 'tl-name' }, h('span', { class: 'mono strong' }, f.flow),
            f.dataset ? h('span', { class: 'tl-sub' }, f.dataset.includes('.') ? tableLink(f.dataset) : f.dataset) : null),
          bar,
          h('div', { class: 'num mono' }, fmtDuration(f.elapsed_ms ?? (f.start ? spanMs(f.start, f.end) : null))),
          h('div', { class: 'num mono' }, `${fmtInt(f.rows_read)} → ${fmtInt(f.rows_written)}`),
          h('div', { class: `num mono${f.rows_dropped ? ' warn-text' : ' muted'}` }, fmtInt(f.rows_dropped)),
          h('div', null, badge(f.state)),
          f.error ? h('pre', { class: 'error tl-error' }, f.error) : null),
      }, 'flows'),
      flows.length ? null : empty('No flows in this update.'));
  }

  function runCard(r) {
    const tasks = r.tasks || [];
    return h('div', { class: `run card st-${stateClass(r.state)}`, 'data-state': r.state, 'data-run': r.run_id },
      cardHead(r.state, r.job, `run ${r.run_id}`, String(r.run_id), r.start, r.end,
        h('span', { class: 'meta' }, h('span', { class: 'muted' }, 'rows '), h('span', { class: 'mono' }, `${fmtInt(r.rows_read)} → ${fmtInt(r.rows_written)}`))),
      r.error ? h('pre', { class: 'error' }, r.error) : null,
      timeline(r.start, r.end, tasks, {
        head: ['Task', 'Duration', 'Rows read → written', '', 'State'],
        row: (t, bar) => h('div', { class: `task tl-row st-${stateClass(t.state)}`, 'data-task': t.task, 'data-state': t.state },
          h('div', { class: 'tl-name' }, h('span', { class: 'mono strong' }, t.task)),
          bar,
          h('div', { class: 'num mono' }, fmtDuration(t.start ? spanMs(t.start, t.end) : null)),
          h('div', { class: 'num mono' }, `${fmtInt(t.rows_read)} → ${fmtInt(t.rows_written)}`),
          h('div', null),
          h('div', null, badge(t.state)),
          t.error ? h('pre', { class: 'error tl-error' }, t.error) : null),
      }, 'tasks'),
      tasks.length ? null : empty('No tasks in this run.'));
  }

  // A Gantt of items (flows or tasks) over [start, end] of their update or run: each bar
  // is placed with CSS percentages of that span.
  function timeline(start, end, items, { head, row }, cls) {
    if (!items.length) return null;
    const t0s = [toMs(start), ...items.map((i) => toMs(i.start))].filter(Number.isFinite);
    const t1s = [end ? toMs(end) : Date.now(), ...items.map((i) => (i.start ? (i.end ? toMs(i.end) : Date.now()) : NaN))].filter(Number.isFinite);
    const t0 = Math.min(...t0s);
    const t1 = Math.max(...t1s);
    const span = Math.max(1, t1 - t0);
    const pct = (t) => `${(((t - t0) / span) * 100).toFixed(3)}%`;

    const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => h('span', { class: 'tick', style: { left: `${f * 100}%` } }, f ? `+${fmtTick(f * span)}` : '0 s'));
    const header = h('div', { class: 'tl-row tl-head' },
      h('div', null, head[0]), h('div', { class: 'tl-axis' }, ticks),
      h('div', { class: 'num' }, head[1]), h('div', { class: 'num' }, head[2]), h('div', { class: 'num' }, head[3]), h('div', null, head[4]));

    const rows = items.map((it) => {
      const track = h('div', { class: 'tl-track' });
      const s = toMs(it.start);
      if (Number.isFinite(s)) {
        const e = it.end ? toMs(it.end) : Date.now();
        const bar = h('div', {
          class: `tl-bar st-${stateClass(it.state)}${it.end ? '' : ' open'}`,
          title: `${fmtTime(it.start)} → ${it.end ? fmtTime(it.end) : 'now'}`,
          style: { left: pct(s), width: `max(3px, ${(((Math.max(e, s) - s) / span) * 100).toFixed(3)}%)` },
        });
        track.append(bar);
      }
      return row(it, track);
    });
    return h('div', { class: `timeline ${cls}` }, header, rows);
  }

  // --- #/table/<schema.table> --------------------------------------------------

  function tableMemo(name) {
    if (!memo.tables.has(name)) memo.tables.set(name, { history: 0, rows: 0, open: new Set() });
    return memo.tables.get(name);
  }

  function mountTable(main, name) {
    const m = tableMemo(name);
    const base = `/api/tables/${enc(name)}`;
    const detailEl = h('div', { class: 'table-detail' });
    const histEl = h('div', { class: 'panel', id: 'history' });
    const rowsEl = h('div', { class: 'panel', id: 'rows' });
    const expEl = h('div', { class: 'panel', id: 'expectations' });
    const quarEl = h('div', { class: 'panel', id: 'quarantine' });
    main.append(detailEl, histEl, rowsEl, expEl, quarEl);

    const detail = new Section(detailEl, () => api(base), renderTableDetail, (el, e) => el.append(
      h('div', { class: 'page-head' }, h('div', { class: 'crumbs' }, h('a', { href: '#/graph' }, 'Graph'), ' / table'), h('h1', { class: 'mono' }, name)),
      errorBox(e)));
    const hist = new Section(histEl, () => api(`${base}/history?offset=${m.history}&limit=${PAGE}`), renderHistory);
    const rows = new Section(rowsEl, () => api(`${base}/rows?offset=${m.rows}&limit=${ROWS_PAGE}${m.version == null ? '' : `&version=${m.version}`}`), renderRows);
    // Shows the rows at `version` (null: the latest), from the first page.
    const rowsAt = async (version) => {
      m.version = version;
      m.rows = 0;
      await rows.refresh(false);
      rows.el.scrollIntoView();
    };
    const exps = new Section(expEl, () => api(`${base}/expectations`), renderExpectations);
    const quar = new Section(quarEl, () => api(`${base}/quarantine?samples=5`), (el, d) => renderQuarantine(el, d, m));
    const others = [hist, rows, exps, quar];
    const turn = (sec, key) => async (offset) => {
      m[key] = offset;
      await sec.refresh(false);
      if (sec.el.getBoundingClientRect().top < 0) sec.el.scrollIntoView();
    };
    hist.onPage = turn(hist, 'history');
    rows.onPage = turn(rows, 'rows');

    return {
      refresh: async (quiet) => {
        await Promise.all([detail.refresh(quiet), ...others.map((s) => s.refresh(quiet))]);
        for (const s of others) s.el.hidden = !detail.ok;
      },
    };

    function renderHistory(el, d) {
      const versions = d.versions || [];
      el.append(panelHead('History', pager({ offset: d.offset ?? m.history, limit: d.limit || PAGE, total: d.total || 0, count: versions.length, noun: 'versions', prev: 'Newer', next: 'Older', onPage: hist.onPage })));
      const cols = [{ label: 'Version', cls: 'num' }, { label: 'Timestamp' }, { label: 'Operation' }, { label: 'Rows added', cls: 'num' },
        { label: 'Files added', cls: 'num' }, { label: 'Files removed', cls: 'num' }, { label: 'Transactions (app_id → version)' }];
      el.append(h('div', { class: 'table-wrap' }, dataTable(cols, versions.map((v) => [
        h('button', { type: 'button', class: 'link-btn mono strong version-link', 'data-version': String(v.version), title: `Show the rows at version ${v.version}`, onclick: () => rowsAt(v.version) }, String(v.version)),
        h('span', null, timeEl(v.timestamp), h('span', { class: 'muted' }, ' · '), agoEl(v.timestamp)),
        h('span', { class: 'op' }, v.operation || '—'),
        h('span', { class: 'mono' }, fmtInt(v.rows_added)),
        h('span', { class: 'mono' }, fmtInt(v.files_added)),
        h('span', { class: 'mono' }, fmtInt(v.files_removed)),
        (v.txns || []).length ? h('div', { class: 'txns' }, v.txns.map((t) => h('div', { class: 'mono' }, `${t.app_id} → ${t.version}`))) : h('span', { class: 'muted' }, '—'),
      ]), 'history-table')));
    }

    function renderRows(el, d) {
      const list = d.rows || [];
      const title = m.version == null ? 'Rows' : h('span', null, `Rows at version ${m.version} `,
        h('button', { type: 'button', class: 'btn small', id: 'rows-latest', onclick: () => rowsAt(null) }, 'show the latest'));
      el.append(panelHead(title, pager({ offset: d.offset ?? m.rows, limit: d.limit || ROWS_PAGE, total: d.total || 0, count: list.length, noun: 'rows', prev: 'Previous', next: 'Next', onPage: rows.onPage })));
      el.append(h('div', { class: 'table-wrap rows-wrap', 'data-keep-scroll': 'rows' }, valuesTable(d.columns || [], list)));
      if (!list.length) el.append(empty(d.total ? 'No rows on this page.' : 'This table has no rows.'));
    }
  }

  function renderTableDetail(el, t) {
    const stat = (label, value, cls) => h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, label), h('div', { class: `stat-value ${cls || ''}` }, value));
    const jump = (id, text) => h('button', { type: 'button', class: 'tab', onclick: () => { const s = document.getElementById(id); if (s) s.scrollIntoView({ behavior: 'smooth' }); } }, text);
    el.append(
      h('div', { class: 'page-head table-head' },
        h('div', { class: 'crumbs' }, h('a', { href: '#/graph' }, 'Graph'), ' / ', h('span', null, 'table')),
        h('div', { class: 'title-row' },
          h('h1', { class: 'mono' }, t.qualified || t.name),
          t.kind ? h('span', { class: `kind-chip kind-${kindSlug(t.kind)}` }, t.kind) : null),
        h('div', { class: 'stats' },
          stat('Version', fmtInt(t.version), 'mono'),
          stat('Rows', fmtInt(t.rows), 'mono'),
          stat('Files', fmtInt(t.files), 'mono'),
          stat('Size', fmtBytes(t.bytes), 'mono'),
          stat('Changed', t.changed ? h('span', null, agoEl(t.changed)) : '—'),
          t.quarantine ? stat('Quarantine', tableLink(t.quarantine)) : null)),
      h('div', { class: 'tabs' }, jump('schema', 'Schema'), jump('history', 'History'), jump('rows', 'Rows'), jump('expectations', 'Expectations'), jump('quarantine', 'Quarantine')),
      renderSchema(t));
  }

  function renderSchema(t) {
    const cols = t.schema || [];
    const props = Object.entries(t.properties || {}).sort(([a], [b]) => a.localeCompare(b));
    const parts = t.partition_columns || [];
    return h('div', { class: 'panel', id: 'schema' },
      panelHead('Schema', h('span', { class: 'muted' }, `${cols.length} columns`)),
      h('div', { class: 'schema-grid' },
        h('div', { class: 'table-wrap' }, dataTable([{ label: 'Column' }, { label: 'Type' }, { label: 'Nullable' }],
          cols.map((c) => [h('span', { class: 'mono strong' }, c.name), h('span', { class: 'mono type' }, c.type),
            c.nullable ? h('span', { class: 'muted' }, 'yes') : h('span', { class: 'not-null' }, 'NOT NULL')]))),
        h('div', { class: 'schema-side' },
          h('h3', null, 'Partition columns'),
          parts.length ? h('div', { class: 'chips' }, parts.map((p) => h('span', { class: 'chip mono' }, p))) : h('div', { class: 'muted small' }, 'not partitioned'),
          h('h3', null, 'Properties'),
          props.length ? dataTable([{ label: 'Key' }, { label: 'Value' }], props.map(([k, v]) => [h('span', { class: 'mono' }, k), h('span', { class: 'mono prop-value' }, v)]), 'props')
            : h('div', { class: 'muted small' }, 'no properties'))));
  }

  function renderExpectations(el, d) {
    const ups = d.updates || [];
    el.append(panelHead('Expectations', ups.length ? h('span', { class: 'muted' }, `${ups.length} updates`) : null));
    const series = new Map();
    const flows = new Set(ups.map((u) => u.flow));
    for (const u of ups) {
      const t = toMs(u.timestamp) / 1000;
      for (const e of u.expectations || []) {
        const key = flows.size > 1 ? `${u.flow}: ${e.name}` : e.name;
        if (!series.has(key)) series.set(key, { name: e.name, flow: u.flow, t: [], passed: [], failed: [] });
        const s = series.get(key);
        s.t.push(t);
        s.passed.push(e.passed);
        s.failed.push(e.failed);
      }
    }
    if (!series.size) { el.append(empty('no expectations')); return; }
    const grid = h('div', { class: 'exp-grid' });
    el.append(grid);
    for (const [key, s] of series) {
      const n = s.t.length - 1;
      const passed = s.passed[n];
      const failed = s.failed[n];
      const totalFailed = s.failed.reduce((a, b) => a + b, 0);
      const chartEl = h('div', { class: 'chart' });
      grid.append(h('div', { class: 'exp-card', 'data-expectation': key },
        h('div', { class: 'exp-title' }, h('span', { class: 'mono strong' }, s.name),
          flows.size > 1 ? h('span', { class: 'muted' }, ` · ${s.flow}`) : null,
          h('span', { class: 'spacer' }),
          h('span', { class: `rate ${failed ? 'rate-bad' : 'rate-ok'}`, title: 'pass rate of the latest update' }, fmtRate(passed, failed))),
        dataTable([{ label: 'Latest update' }, { label: 'Passed', cls: 'num' }, { label: 'Failed', cls: 'num' }, { label: 'Failed (all)', cls: 'num' }],
          [[h('span', { class: 'muted' }, fmtTime(s.t[n] * 1000)), h('span', { class: 'mono' }, fmtInt(passed)),
            h('span', { class: `mono${failed ? ' bad-text' : ''}` }, fmtInt(failed)), h('span', { class: 'mono' }, fmtInt(totalFailed))]], 'compact'),
        chartEl));
      makeChart(chartEl, expectationChartOpts(s.t), [s.t, s.passed, s.failed]);
    }
  }

  function expectationChartOpts(xs) {
    const points = xs.length;
    return {
      height: 150,
      cursor: { drag: { x: false, y: false } },
      legend: { show: true },
      scales: { x: timeScale(xs), passed: { auto: true }, failed: { auto: true, range: (u, min, max) => [0, Math.max(1, max)] } },
      series: [
        { label: 'update', value: timeLegend },
        { label: 'passed', scale: 'passed', stroke: '#16a34a', width: 1.5, fill: 'rgba(22,163,74,0.08)', points: { show: points < 40 }, value: (u, v) => fmtInt(v) },
        { label: 'failed', scale: 'failed', stroke: '#dc2626', width: 1.5, points: { show: points < 40 }, value: (u, v) => fmtInt(v) },
      ],
      axes: [
        Object.assign({}, axisStyle, { size: 28 }),
        Object.assign({}, axisStyle, { scale: 'passed', size: 44, values: (u, vals) => vals.map(fmtCompact) }),
        Object.assign({}, axisStyle, { scale: 'failed', side: 1, size: 36, stroke: '#dc2626', grid: { show: false }, values: (u, vals) => vals.map(fmtCompact) }),
      ],
    };
  }

  function renderQuarantine(el, d, m) {
    const reasons = [...(d.reasons || [])].sort((a, b) => b.rows - a.rows);
    const totalRows = reasons.reduce((a, r) => a + (r.rows || 0), 0);
    el.append(panelHead('Quarantine', d.table ? h('span', null, h('span', { class: 'muted' }, 'table '), tableLink(d.table)) : null));
    if (!reasons.length) { el.append(empty('nothing quarantined')); return; }
    el.append(h('div', { class: 'muted small quarantine-sum' }, `${fmtInt(totalRows)} rows quarantined for ${reasons.length} ${reasons.length === 1 ? 'reason' : 'reasons'}, most frequent first. Click a reason for sample rows.`));
    const max = Math.max(1, ...reasons.map((r) => r.rows || 0));
    const list = h('div', { class: 'reasons' });
    for (const r of reasons) list.append(reasonRow(r, max, m));
    el.append(list);
  }

  function reasonRow(r, max, m) {
    const open = m.open.has(r.reason);
    const row = h('div', {
      class: `reason${open ? ' open' : ''}`, 'data-reason': r.reason, role: 'button', tabindex: 0, 'aria-expanded': String(open),
    },
    h('div', { class: 'reason-head' },
      h('span', { class: 'chev' }, open ? '▾' : '▸'),
      h('span', { class: 'reason-text mono' }, r.reason),
      h('span', { class: 'reason-bar' }, h('span', { style: { width: `${((r.rows || 0) / max) * 100}%` } })),
      h('span', { class: 'reason-count mono' }, `${fmtInt(r.rows)} rows`)));
    if (open) row.append(samplesBox(r.samples || []));
    const toggle = () => {
      // Selecting text in the samples is not a click on the reason.
      const sel = window.getSelection ? String(window.getSelection()) : '';
      if (sel && row.querySelector('.samples')) return;
      if (m.open.has(r.reason)) m.open.delete(r.reason); else m.open.add(r.reason);
      row.replaceWith(reasonRow(r, max, m));
    };
    row.addEventListener('click', toggle);
    row.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); toggle(); } });
    return row;
  }

  function samplesBox(samples) {
    const cols = [];
    for (const s of samples) for (const k of Object.keys(s)) if (!cols.includes(k)) cols.push(k);
    return h('div', { class: 'samples' },
      samples.length ? h('div', { class: 'table-wrap' }, valuesTable(cols, samples.map((s) => cols.map((c) => (c in s ? s[c] : null)))))
        : h('div', { class: 'muted small' }, 'no sample rows'));
  }

  // --- #/sql -------------------------------------------------------------------

  function mountSql(main) {
    const s = memo.sql;
    const ta = h('textarea', { id: 'sql', spellcheck: 'false', autocomplete: 'off', placeholder: 'SELECT … (read-only; Ctrl+Enter runs)' });
    if (s.text != null) ta.value = s.text;
    ta.addEventListener('input', () => { s.text = ta.value; });
    ta.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); runSql(); }
    });
    const runBtn = h('button', { type: 'button', id: 'run-sql', class: 'btn primary', onclick: () => runSql() }, 'Run');
    const out = h('div', { class: 'sql-out' });
    const listEl = h('div', { class: 'sql-tables-list' });

    main.append(pageHead('SQL', 'Read-only queries over the catalog’s tables.'),
      h('div', { class: 'sql-layout' },
        h('aside', { class: 'panel sql-side' }, h('h2', null, 'Tables'), listEl),
        h('div', { class: 'panel sql-main' }, ta,
          h('div', { class: 'sql-bar' }, runBtn, h('span', { class: 'muted small' }, 'Ctrl+Enter runs · the server refuses writing queries')),
          out)));
    showSqlOutcome(out, s.last);

    const tables = new Section(listEl, () => api('/api/tables'), (el, d) => {
      const list = d.tables || [];
      // Only into an empty box: never over what the user typed meanwhile.
      if (s.text == null && !ta.value && list.length) {
        s.text = `SELECT * FROM ${list[0].name} LIMIT 20`;
        ta.value = s.text;
      }
      if (!list.length) { el.append(empty('No tables yet.')); return; }
      for (const t of list) {
        el.append(h('button', {
          type: 'button', class: 'sql-table', 'data-table': t.name, title: `Insert ${t.qualified}`,
          onclick: () => {
            ta.focus();
            ta.setRangeText(t.qualified, ta.selectionStart, ta.selectionEnd, 'end');
            s.text = ta.value;
          },
        }, h('span', { class: 'mono' }, t.name), h('span', { class: 'muted mono small' }, t.rows == null ? '' : fmtCompact(t.rows))));
      }
    });

    let running = false;
    async function runSql() {
      const sql = ta.value.trim();
      if (!sql || running) return;
      const gen = view.gen;
      running = true;
      runBtn.disabled = true;
      runBtn.textContent = 'Running…';
      const t0 = performance.now();
      let outcome;
      try {
        const data = await api('/api/sql', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ sql }) });
        outcome = { data, ms: performance.now() - t0 };
      } catch (e) {
        outcome = { error: e.message };
      }
      running = false;
      runBtn.disabled = false;
      runBtn.textContent = 'Run';
      s.last = outcome;
      if (gen === view.gen) showSqlOutcome(out, outcome);
    }

    return { refresh: (quiet) => tables.refresh(quiet) };
  }

  function showSqlOutcome(out, o) {
    const result = h('div', { id: 'sql-result' });
    out.replaceChildren();
    if (o && o.error != null) out.append(h('div', { id: 'sql-error', class: 'error' }, o.error));
    out.append(result);
    if (!o || !o.data) return;
    const d = o.data;
    const rows = d.rows || [];
    result.append(h('div', { class: 'sql-meta' },
      h('span', null, `${fmtInt(rows.length)} ${rows.length === 1 ? 'row' : 'rows'}`),
      h('span', { class: 'muted' }, ` · ${fmtDuration(o.ms)}`),
      d.truncated ? h('span', { class: 'note' }, `showing first ${fmtInt(rows.length)} rows (limit reached)`) : null));
    result.append(h('div', { class: 'table-wrap sql-wrap' }, valuesTable(d.columns || [], rows)));
  }

  // --- #/charts ----------------------------------------------------------------

  function mountCharts(main) {
    const el = h('div', { class: 'charts-page' });
    main.append(pageHead('Charts', 'Throughput of each flow and freshness of the gold tables.'), el);
    const sec = new Section(el, () => api('/api/metrics'), renderCharts);
    return { refresh: (quiet) => sec.refresh(quiet) };
  }

  function renderCharts(el, d) {
    const thrEl = h('div', { class: 'chart', id: 'throughput-chart' });
    const frEl = h('div', { class: 'chart', id: 'freshness-chart' });
    const thr = (d.throughput || []).filter((s) => (s.points || []).length);
    const fresh = d.freshness || [];
    el.append(
      h('section', { class: 'panel', id: 'throughput' }, panelHead('Throughput', h('span', { class: 'muted' }, 'rows/s per flow over recent updates')),
        thr.length ? thrEl : empty('No flow has processed rows yet.')),
      h('section', { class: 'panel', id: 'freshness' }, panelHead('Freshness', h('span', { class: 'muted' }, 'landing → gold delay per landed file')),
        fresh.length ? frEl : h('div', { class: 'empty', id: 'freshness-note' }, d.freshness_note || 'No freshness measurements yet.')));
    if (thr.length) throughputChart(thrEl, thr);
    if (fresh.length) freshnessChart(frEl, fresh);
  }

  function throughputChart(el, thr) {
    const tables = thr.map((s) => {
      const pts = [...s.points].sort((a, b) => a.t - b.t);
      return [pts.map((p) => p.t), pts.map((p) => p.rows_per_second)];
    });
    const data = tables.length === 1 ? tables[0] : uPlot.join(tables);
    makeChart(el, {
      height: 300,
      cursor: { drag: { x: true, y: false } },
      scales: { x: timeScale(data[0]), y: { range: (u, min, max) => [0, max > 0 ? max * 1.08 : 1] } },
      series: [{ label: 'update', value: timeLegend }, ...thr.map((s, i) => ({
        label: s.flow, stroke: PALETTE[i % PALETTE.length], width: 1.75, spanGaps: true,
        points: { show: true, size: 4 }, value: (u, v) => (v == null ? '—' : `${fmtDec(v)} rows/s`),
      }))],
      axes: [axisStyle, Object.assign({}, axisStyle, { size: 56, label: 'rows/s', labelSize: 18, values: (u, vals) => vals.map(fmtCompact) })],
    }, data);
  }

  // Tick steps for a delay axis in seconds: whole seconds, minutes, hours and days.
  const DELAY_INCRS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800];

  function freshnessChart(el, fresh) {
    const pts = [...fresh].sort((a, b) => a.t - b.t);
    const files = pts.map((p) => p.file);
    makeChart(el, {
      height: 260,
      cursor: { drag: { x: true, y: false } },
      scales: { x: timeScale(pts.map((p) => p.t)), y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      series: [
        { label: 'landed', value: (u, v, si, idx) => (v == null ? '—' : `${fmtTime(v * 1000)}${idx != null && files[idx] ? ` · ${files[idx]}` : ''}`) },
        { label: 'delay', stroke: '#b45309', fill: 'rgba(217,119,6,0.08)', width: 1.5, points: { show: true, size: 5, fill: '#b45309' }, value: (u, v) => (v == null ? '—' : fmtDuration(v * 1000)) },
      ],
      axes: [axisStyle, Object.assign({}, axisStyle, { size: 60, label: 'delay', labelSize: 18, incrs: DELAY_INCRS, values: (u, vals) => vals.map((v) => (v === 0 ? '0' : fmtTick(v * 1000))) })],
    }, [pts.map((p) => p.t), pts.map((p) => p.seconds)]);
  }

  // --- unknown route -------------------------------------------------------------

  function mountNotFound(main, path) {
    main.append(pageHead('Page not found'),
      h('div', { class: 'error' }, `There is no page “#${path}”.`),
      h('p', null, 'Try the ', h('a', { href: '#/graph' }, 'graph'), ', the ', h('a', { href: '#/runs' }, 'updates and runs'),
        ', ', h('a', { href: '#/sql' }, 'SQL'), ' or the ', h('a', { href: '#/charts' }, 'charts'), '.'));
    return { refresh: async () => {} };
  }

  // ------------------------------------------------------------------ router

  const main = document.getElementById('main');

  function parseRoute() {
    const raw = location.hash.replace(/^#/, '');
    const [path] = raw.split('?');
    return path || '/graph';
  }

  function route() {
    const path = parseRoute();
    if (!location.hash || location.hash === '#' || location.hash === '#/') history.replaceState(null, '', '#/graph');
    const sqlBox = document.getElementById('sql');
    if (sqlBox) memo.sql.text = sqlBox.value;
    view.gen++;
    destroyCharts(null);
    main.replaceChildren();
    let navKey = null;
    let ctrl;
    let m;
    if (path === '/graph') { navKey = 'graph'; ctrl = mountGraph(main); }
    else if (path === '/runs') { navKey = 'runs'; ctrl = mountRuns(main); }
    else if (path === '/sql') { navKey = 'sql'; ctrl = mountSql(main); }
    else if (path === '/charts') { navKey = 'charts'; ctrl = mountCharts(main); }
    else if ((m = /^\/table\/(.+)$/.exec(path))) {
      let name;
      try { name = decodeURIComponent(m[1]); } catch (_) { name = m[1]; }
      document.title = `${name} · medallion ui`;
      ctrl = mountTable(main, name);
    } else ctrl = mountNotFound(main, path);
    for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.route === navKey);
    main.dataset.page = navKey || (path.startsWith('/table/') ? 'table' : 'none');
    view.page = ctrl;
    window.scrollTo(0, 0);
    ctrl.refresh(false);
  }

  // ------------------------------------------------------------------ overview & live

  async function loadOverview() {
    try {
      const o = await api('/api/overview');
      view.overview = o;
      document.getElementById('bundle').textContent = o.bundle || '—';
      const target = document.getElementById('target');
      target.textContent = o.target || '';
      target.hidden = !o.target;
      const run = document.getElementById('run-indicator');
      run.hidden = !o.run;
      run.textContent = o.run ? `run in progress: ${o.run.holder}` : '';
      run.title = o.run ? o.run.holder : '';
      if (!/^\/table\//.test(parseRoute())) document.title = `${o.bundle || 'bundle'} · medallion ui`;
      const line = document.getElementById('overview-line');
      if (line) line.replaceWith(overviewLine());
    } catch (e) {
      document.getElementById('bundle').textContent = '—';
      toast(`Overview: ${e.message}`);
    }
  }

  let refreshing = false;
  let refreshAgain = false;
  async function refreshAll() {
    if (refreshing) { refreshAgain = true; return; }
    refreshing = true;
    try {
      do {
        refreshAgain = false;
        await Promise.all([loadOverview(), view.page ? view.page.refresh(true) : null]);
      } while (refreshAgain);
    } finally {
      refreshing = false;
    }
  }

  let source = null;
  let lastFingerprint = null;
  let pollTimer = null;
  let reconnectTimer = null;

  function setLive(on) {
    const el = document.getElementById('live');
    el.textContent = on ? '● live' : '○ offline';
    el.className = `live ${on ? 'on' : 'off'}`;
    el.title = on ? 'Connected: the page follows changes as they happen' : 'Not connected to the live stream: polling every 2 s';
    // Without the stream, poll: the page and the run state are re-read every 2 s.
    if (on && pollTimer) { clearInterval(pollTimer); pollTimer = null; }
    if (!on && !pollTimer) pollTimer = setInterval(refreshAll, 2000);
  }

  function connectLive() {
    if (source) source.close();
    clearTimeout(reconnectTimer);
    const token = getToken();
    source = new EventSource(`/api/live${token ? `?token=${encodeURIComponent(token)}` : ''}`);
    const es = source;
    es.addEventListener('change', (ev) => {
      if (es !== source) return;
      setLive(true);
      let fp = ev.data;
      try { fp = JSON.parse(ev.data).fingerprint; } catch (_) { /* keep the raw text */ }
      const first = lastFingerprint === null;
      const changed = fp !== lastFingerprint;
      lastFingerprint = fp;
      if (!first && changed) refreshAll();
    });
    es.addEventListener('error', () => {
      if (es !== source) return;
      setLive(false);
      // A closed stream (e.g. refused) is not retried by the browser: try again later.
      if (es.readyState === EventSource.CLOSED) reconnectTimer = setTimeout(connectLive, 5000);
    });
  }

  // ------------------------------------------------------------------ toast & ticker

  let toastTimer = null;
  function toast(text) {
    const el = document.getElementById('toast');
    el.textContent = text;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, 5000);
  }

  // Keeps "3 min ago" texts current between refreshes.
  setInterval(() => {
    for (const el of document.querySelectorAll('.ago[data-ts]')) {
      const ts = el.getAttribute('data-ts');
      if (ts) el.textContent = ago(ts);
    }
  }, 15000);

  // ------------------------------------------------------------------ boot

  window.addEventListener('hashchange', route);
  loadOverview();
  route();
  connectLive();
})();

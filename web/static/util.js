// Shared helpers: DOM building, formatting, the API client and the chart wrapper over uPlot.
// Chart series are told apart three ways, so that no reader depends on one: a colour of the
// Okabe-Ito palette (--s1..--s7, safe for the common colour-vision deficiencies), a dash
// pattern, and a legend that draws each series' line next to its name.

let sessionP = null;
export function session() {
  if (!sessionP) sessionP = api('/api/session');
  return sessionP;
}

export async function api(url, opts) {
  const o = Object.assign({ cache: 'no-store', headers: {} }, opts || {});
  o.headers = Object.assign({ Accept: 'application/json' }, o.headers);
  if (o.method && o.method !== 'GET') {
    const s = await session();
    o.headers['X-CSRF-Token'] = s.csrf || '';
  }
  const r = await fetch(url, o);
  let body = null;
  try {
    body = await r.json();
  } catch (e) {
    body = null;
  }
  if (r.status === 401) {
    location.reload(); // the login page
    throw new Error('not logged in');
  }
  if (!r.ok) {
    const err = new Error((body && body.error) || r.status + ' ' + r.statusText);
    err.status = r.status;
    err.body = body;
    throw err;
  }
  return body;
}

export function el(tag, attrs, ...kids) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat()) if (k !== undefined && k !== null) n.append(k);
  return n;
}

export const isNum = (v) => typeof v === 'number' && isFinite(v);
export const pct = (v, d) => (isNum(v) ? (v * 100).toFixed(d === undefined ? 1 : d) + '%' : '–');
export const fixed = (v, d) => (isNum(v) ? v.toFixed(d) : '–');
export function seconds(v) {
  if (!isNum(v)) return '–';
  if (v < 60) return v.toFixed(v < 10 ? 2 : 1) + ' s';
  if (v < 3600) return Math.floor(v / 60) + ' min ' + Math.round(v % 60) + ' s';
  return Math.floor(v / 3600) + ' h ' + Math.round((v % 3600) / 60) + ' min';
}
export function when(t) {
  if (!isNum(t)) return '–';
  return new Date(t * 1000).toLocaleString(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}
export function ago(t) {
  if (!isNum(t)) return '–';
  const s = Date.now() / 1000 - t;
  return s < 90 ? Math.max(0, Math.round(s)) + ' s ago' : seconds(s) + ' ago';
}
export function bytes(n) {
  if (!isNum(n)) return '–';
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + ' ' + u[i];
}
export const badge = (status) => el('span', { class: 'badge st-' + String(status || '').replace(/[^a-z]/g, '') }, status || '?');
export function duration(run) {
  if (!run || !isNum(run.started_at)) return null;
  const end = isNum(run.ended_at) ? run.ended_at : run.status === 'running' ? Date.now() / 1000 : null;
  return end === null ? null : end - run.started_at;
}

// ---- charts -----------------------------------------------------------------------------

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
// What a running run's server is doing (runs.phase, round_phase events), in words; '' when not running.
const PHASES = {
  waiting: 'waiting for sites', training: 'training', advertise_keys: 'secure aggregation: advertise keys',
  share_keys: 'secure aggregation: share keys', masked_input: 'secure aggregation: masked input',
  unmasking: 'secure aggregation: unmasking', aggregating: 'aggregating', evaluating: 'evaluating',
  federated_evaluation: 'federated evaluation',
};
export function runPhase(r) {
  if (r.status !== 'running' || !r.phase) return '';
  return 'round ' + r.phase_round + ': ' + (PHASES[r.phase] || r.phase);
}

export const DASHES = [[], [6, 4], [2, 3], [10, 3, 2, 3], [1, 6], [14, 6]];
export const PALETTE = 7; // --s1..--s7 in style.css

// A y range that fits the data (accuracy 0.78..0.86 is not drawn on 0..1), padded by a tenth of
// the spread and kept inside [lo, hi] when the quantity has bounds.
export function fitRange(lo, hi) {
  return (u, min, max) => {
    if (!isNum(min) || !isNum(max)) return [isNum(lo) ? lo : 0, isNum(hi) ? hi : 1];
    const pad = Math.max((max - min) * 0.1, Math.abs(max) * 0.01, 1e-3);
    let a = min - pad, b = max + pad;
    if (isNum(lo)) a = Math.max(lo, a);
    if (isNum(hi)) b = Math.min(hi, b);
    return [a, b];
  };
}

const fmtValue = (v) => (!isNum(v) ? '–' : Math.abs(v) >= 100 || Number.isInteger(v) ? String(Math.round(v)) : v.toPrecision(3));

// A line chart: series = [{label, dash, color (a palette variable, e.g. '--s2'; by default the
// next one no other series of the chart names), points, stepped, width}]. yRange: [min, max] or
// a uPlot range function (fitRange); by default the scale starts at 0 so a change looks its
// size. format(v) writes a value in the legend, which shows the hovered round, else the last.
// xlabel names the x axis when it is not rounds (the NAS pages count evaluations).
export function chart(parent, { title, ylabel, xlabel, series, yRange, height, xEmpty, format }) {
  const fmt = format || fmtValue;
  const taken = new Set(series.map((s) => s.color).filter(Boolean));
  const free = [];
  for (let i = 1; i <= PALETTE; i++) if (!taken.has('--s' + i)) free.push('--s' + i);
  const colors = series.map((s, i) => s.color || free[i % free.length] || '--fg');
  const legend = el('ul', { class: 'legend' });
  const values = series.map(() => el('span', { class: 'val' }, '–'));
  const swatches = series.map((s, i) => {
    const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
    svg.setAttribute('width', '28');
    svg.setAttribute('height', '10');
    svg.setAttribute('aria-hidden', 'true');
    const line = document.createElementNS('http://www.w3.org/2000/svg', 'line');
    for (const [k, v] of Object.entries({ x1: 1, y1: 5, x2: 27, y2: 5, 'stroke-width': Math.max(2, s.width || 2) }))
      line.setAttribute(k, v);
    if (s.dash && s.dash.length) line.setAttribute('stroke-dasharray', s.dash.join(' '));
    svg.append(line);
    legend.append(el('li', { 'data-series': s.label }, svg, el('span', { class: 'name' }, s.label), values[i]));
    return line;
  });
  const box = el('figure', { class: 'chart' }, el('figcaption', {}, title), legend);
  parent.append(box);
  let plot = null;
  let data = null;
  function showValues(idx) {
    series.forEach((s, i) => {
      const ys = data ? data[i + 1] : [];
      let j = idx;
      if (j === null || j === undefined) for (j = ys.length - 1; j >= 0 && !isNum(ys[j]); j--);
      values[i].textContent = j >= 0 && ys && isNum(ys[j]) ? fmt(ys[j]) : '–';
    });
  }
  function opts() {
    const grid = css('--line'), muted = css('--muted');
    const width = Math.max(240, box.clientWidth || 600);
    const stroke = colors.map((c) => css(c));
    // The legend's lines take the colours the theme has now.
    swatches.forEach((line, i) => { line.setAttribute('stroke', stroke[i]); line.parentNode.parentNode.dataset.color = stroke[i]; });
    return {
      width,
      height: height || 220,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      hooks: {
        setCursor: [(u) => showValues(u.cursor.idx)],
        // The y scale as drawn, for tests and curious users (as data-points).
        setScale: [(u, key) => { if (key === 'y') { box.dataset.ymin = String(u.scales.y.min); box.dataset.ymax = String(u.scales.y.max); } }],
      },
      scales: {
        x: {
          time: false,
          range: (u, min, max) => (!data || !data[0].length ? xEmpty || [1, 10] : min === max ? [min - 1, max + 1] : [min, max]),
        },
        y: { range: yRange || ((u, min, max) => [Math.min(0, min), max > 0 ? max * 1.08 : 1]) },
      },
      axes: [
        { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid }, label: xlabel || 'round', labelSize: 18,
          incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000], values: (u, v) => v.map((x) => String(Math.round(x))) },
        { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid }, label: ylabel, labelSize: 18, size: 56 },
      ],
      series: [{ label: 'round' }].concat(series.map((s, i) => ({
        label: s.label,
        stroke: stroke[i],
        width: s.width || 2,
        dash: s.dash || [],
        points: { show: !!s.points, size: 7, fill: stroke[i] },
        paths: s.stepped ? window.uPlot.paths.stepped({ align: 1 }) : undefined,
        spanGaps: true,
      }))),
    };
  }
  function build() {
    if (plot) plot.destroy();
    plot = new window.uPlot(opts(), data || [[]].concat(series.map(() => [])), box);
  }
  const onTheme = () => build();
  const onResize = () => { if (plot) plot.setSize({ width: Math.max(240, box.clientWidth), height: height || 220 }); };
  window.addEventListener('themechange', onTheme);
  const mq = matchMedia('(prefers-color-scheme: dark)');
  mq.addEventListener('change', onTheme);
  const ro = new ResizeObserver(onResize);
  ro.observe(box);
  build();
  return {
    box,
    set(d) {
      data = d;
      if (plot) plot.setData(d);
      showValues(null);
      box.dataset.points = String(d[0].length); // for tests and curious users: rounds plotted
    },
    get points() { return data ? data[0].length : 0; },
    dispose() {
      window.removeEventListener('themechange', onTheme);
      mq.removeEventListener('change', onTheme);
      ro.disconnect();
      if (plot) plot.destroy();
    },
  };
}

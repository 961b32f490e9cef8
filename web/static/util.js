// Shared helpers: DOM building, formatting, the API client and the chart wrapper over uPlot.
// Colour carries meaning only (running, done, failed, best, dropped, budget); series are told
// apart by dash pattern and label, in the text colour.

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

// A line chart: series = [{label, dash, color (a CSS variable name), points, stepped}].
export function chart(parent, { title, ylabel, series, yRange, height, xEmpty }) {
  const box = el('figure', { class: 'chart' }, el('figcaption', {}, title));
  parent.append(box);
  let plot = null;
  let data = null;
  function opts() {
    const fg = css('--fg'), grid = css('--line'), muted = css('--muted');
    const width = Math.max(240, box.clientWidth || 600);
    return {
      width,
      height: height || 220,
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: {
          time: false,
          range: (u, min, max) => (!data || !data[0].length ? xEmpty || [1, 10] : min === max ? [min - 1, max + 1] : [min, max]),
        },
        // Accuracy has a fixed range; other scales start at 0 so a change looks its size.
        y: { range: yRange || ((u, min, max) => [Math.min(0, min), max > 0 ? max * 1.08 : 1]) },
      },
      axes: [
        { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid }, label: 'round', labelSize: 18,
          incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000], values: (u, v) => v.map((x) => String(Math.round(x))) },
        { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid }, label: ylabel, labelSize: 18, size: 56 },
      ],
      series: [{ label: 'round' }].concat(series.map((s) => ({
        label: s.label,
        stroke: s.color ? css(s.color) : fg,
        width: s.width || 2,
        dash: s.dash || [],
        points: { show: !!s.points, size: 7, fill: s.color ? css(s.color) : fg },
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

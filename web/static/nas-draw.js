// Drawings of the NAS pages, as SVG built element by element (never from markup, so no name a
// search recorded can become code): the Pareto scatter with its front, an architecture (the
// decoded {"type":"layers"} list as a chain of boxes; a cell space's cell as its DAG), and
// small bars. Colours come from style.css/nas.css variables so both themes work.
import { el, isNum, pct } from './util.js';

const NS = 'http://www.w3.org/2000/svg';
export function svg(tag, attrs, ...kids) {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) n.setAttribute(k, String(v));
  for (const k of kids.flat()) if (k !== undefined && k !== null) n.append(k);
  return n;
}
const text = (attrs, s) => { const t = svg('text', attrs); t.textContent = s; return t; };

// 12 345 -> "12.3k"; FLOPs and parameters span orders of magnitude.
export function si(v) {
  if (!isNum(v)) return '–';
  const a = Math.abs(v);
  const p3 = (x) => String(Number(x.toPrecision(3))); // 1.00 -> "1", 12.5 -> "12.5"
  if (a >= 1e9) return p3(v / 1e9) + 'G';
  if (a >= 1e6) return p3(v / 1e6) + 'M';
  if (a >= 1e3) return p3(v / 1e3) + 'k';
  return String(Math.round(v * 100) / 100);
}

// Ticks for [lo, hi]: powers of ten with 2 and 5 between on a log axis, round steps otherwise.
function ticks(lo, hi, log) {
  const out = [];
  if (log) {
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++)
      for (const m of [1, 2, 5]) { const v = m * 10 ** e; if (v >= lo && v <= hi) out.push(v); }
    return out.length > 8 ? out.filter((v) => /^1/.test(v.toExponential())) : out;
  }
  const raw = (hi - lo) / 5, p = 10 ** Math.floor(Math.log10(raw || 1));
  const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) || raw;
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-12; v += step) out.push(v);
  return out;
}

// Axes for accuracy (up) against a cost (right, log-scaled when it spans more than a decade and
// a half) fitted to pts [{x, val_accuracy}]: the svg element with its grid and labels, and the
// two scale functions.
function frame(W, H, pts, xlabel, cls, label) {
  const L = 58, R = 14, T = 12, B = 42;
  const xs = pts.map((p) => p.x), ys = pts.map((p) => p.val_accuracy);
  let x0 = Math.min(...xs), x1 = Math.max(...xs);
  const log = pts.length > 1 && x0 > 0 && x1 / x0 > 30;
  if (!pts.length) { x0 = 0; x1 = 1; }
  if (x0 === x1) { x0 = x0 > 0 && log ? x0 / 2 : x0 - 1; x1 = x1 + 1; }
  if (log) { x0 /= 1.3; x1 *= 1.3; } else { const pad = (x1 - x0) * 0.06; x0 -= pad; x1 += pad; }
  let y0 = pts.length ? Math.min(...ys) : 0, y1 = pts.length ? Math.max(...ys) : 1;
  const yp = Math.max((y1 - y0) * 0.08, 0.005);
  y0 = Math.max(0, y0 - yp); y1 = Math.min(1, y1 + yp);
  if (y1 <= y0) { y0 = Math.max(0, y0 - 0.05); y1 = Math.min(1, y1 + 0.05); }
  const fx = (v) => L + (W - L - R) * (log ? Math.log(v / x0) / Math.log(x1 / x0) : (v - x0) / (x1 - x0));
  const fy = (v) => T + (H - T - B) * (1 - (v - y0) / (y1 - y0));
  const root = svg('svg', { class: cls, width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'group', 'aria-label': label });
  const axes = svg('g', { class: 'axes' });
  for (const v of ticks(x0, x1, log)) {
    axes.append(svg('line', { x1: fx(v), x2: fx(v), y1: T, y2: H - B, class: 'grid' }),
      text({ x: fx(v), y: H - B + 16, 'text-anchor': 'middle' }, si(v)));
  }
  for (const v of ticks(y0, y1, false)) {
    axes.append(svg('line', { x1: L, x2: W - R, y1: fy(v), y2: fy(v), class: 'grid' }),
      text({ x: L - 6, y: fy(v) + 4, 'text-anchor': 'end' }, pct(v, (y1 - y0) < 0.05 ? 1 : 0)));
  }
  axes.append(text({ x: (L + W - R) / 2, y: H - 6, 'text-anchor': 'middle', class: 'label' }, xlabel + (log ? ' (log scale)' : '')),
    text({ x: 14, y: (T + H - B) / 2, 'text-anchor': 'middle', class: 'label', transform: `rotate(-90 14 ${(T + H - B) / 2})` }, 'validation accuracy'));
  root.append(axes);
  return { root, fx, fy };
}

// The staircase through a front's points in cost order: everything below and right of it is
// dominated.
function stairs(front, fx, fy) {
  let d = `M${fx(front[0].x)},${fy(front[0].val_accuracy)}`;
  for (const p of front.slice(1)) d += `H${fx(p.x)}V${fy(p.val_accuracy)}`;
  return d;
}
const byCost = (a, b) => a.x - b.x || b.val_accuracy - a.val_accuracy;

// The Pareto scatter of one search. points: [{seq, x, val_accuracy, front}]; the front's points
// are filled and joined by its staircase; onPick(seq) on click or Enter.
export function scatter(parent, { points, xlabel, selected, onPick }) {
  const W = Math.max(320, parent.clientWidth || 560), H = 300;
  const pts = points.filter((p) => isNum(p.x) && isNum(p.val_accuracy));
  const { root, fx, fy } = frame(W, H, pts, xlabel, 'pareto',
    `validation accuracy against ${xlabel}; ${pts.filter((p) => p.front).length} of ${pts.length} candidates on the Pareto front`);
  const L = 58, R = 14, T = 12, B = 42;
  const front = pts.filter((p) => p.front).sort(byCost);
  if (front.length) root.append(svg('path', { d: stairs(front, fx, fy), class: 'front-line' }));
  const dots = svg('g', { class: 'dots' });
  // Dominated points first, so the front is drawn over them.
  for (const p of pts.slice().sort((a, b) => Number(a.front) - Number(b.front))) {
    const c = svg('circle', { cx: fx(p.x), cy: fy(p.val_accuracy), r: p.front ? 5.5 : 4, tabindex: 0, role: 'button',
      class: 'pt' + (p.front ? ' front' : '') + (p.seq === selected ? ' sel' : ''), 'data-seq': p.seq,
      'aria-label': `candidate ${p.seq}: ${pct(p.val_accuracy, 2)}, ${xlabel} ${si(p.x)}${p.front ? ', on the front' : ''}` });
    c.append(svg('title', {}, `#${p.seq}  ${pct(p.val_accuracy, 2)}  ${xlabel} ${si(p.x)}${p.front ? '  (front)' : ''}`));
    c.addEventListener('click', () => onPick(p.seq));
    c.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); onPick(p.seq); } });
    dots.append(c);
  }
  root.append(dots);
  if (!pts.length)
    root.append(text({ x: (L + W - R) / 2, y: (T + H - B) / 2, 'text-anchor': 'middle', class: 'empty' }, 'no finished candidates yet'));
  const box = el('figure', { class: 'chart pareto-fig', 'data-points': pts.length, 'data-front': front.length },
    el('figcaption', {}, 'Pareto front: accuracy against ' + xlabel),
    el('ul', { class: 'legend' },
      el('li', {}, swatch('pt front'), ' on the front (' + front.length + ')'),
      el('li', {}, swatch('pt'), ' dominated (' + (pts.length - front.length) + ')')),
    root);
  parent.replaceChildren(box);
  return box;
}
function swatch(cls) {
  return svg('svg', { width: 14, height: 14, 'aria-hidden': 'true' }, svg('circle', { cx: 7, cy: 7, r: 5, class: cls }));
}

// Several searches' fronts on one chart: series [{label, points (the front's), dash}], each a
// staircase with its points, told apart by colour (--s1, --s2, ... in order), dash and legend.
export function fronts(parent, { series, xlabel }) {
  const W = Math.max(320, parent.clientWidth || 640), H = 320;
  const all = series.flatMap((s) => s.points).filter((p) => isNum(p.x) && isNum(p.val_accuracy));
  const { root, fx, fy } = frame(W, H, all, xlabel, 'pareto fronts', `Pareto fronts of ${series.length} searches, accuracy against ${xlabel}`);
  const legend = el('ul', { class: 'legend' });
  series.forEach((s, i) => {
    const cls = 'c' + ((i % 7) + 1);
    const pts = s.points.filter((p) => isNum(p.x) && isNum(p.val_accuracy)).sort(byCost);
    const g = svg('g', { class: 'series ' + cls, 'data-series': s.label, 'data-points': pts.length });
    if (pts.length) g.append(svg('path', { d: stairs(pts, fx, fy), class: 'fline', 'stroke-dasharray': (s.dash || []).join(' ') || null }));
    for (const p of pts) {
      const c = svg('circle', { cx: fx(p.x), cy: fy(p.val_accuracy), r: 4.5, class: 'fpt', 'data-seq': p.seq });
      c.append(svg('title', {}, `${s.label}: #${p.seq}  ${pct(p.val_accuracy, 2)}  ${xlabel} ${si(p.x)}`));
      g.append(c);
    }
    root.append(g);
    const sw = svg('svg', { width: 28, height: 10, 'aria-hidden': 'true', class: cls },
      svg('line', { x1: 1, y1: 5, x2: 27, y2: 5, class: 'fline', 'stroke-dasharray': (s.dash || []).join(' ') || null }));
    legend.append(el('li', { 'data-series': s.label }, sw, ' ' + s.label + ' (' + pts.length + ')'));
  });
  const box = el('figure', { class: 'chart fronts-fig' }, el('figcaption', {}, 'Pareto fronts compared: accuracy against ' + xlabel), legend, root);
  parent.replaceChildren(box);
  return box;
}

// ---- architectures ------------------------------------------------------------------------

const kindOf = (t) => (/conv|cell|residual/.test(t) ? 'op' : /pool/.test(t) ? 'pool' : t === 'linear' ? 'out' : 'misc');

// One box per computing layer of the decoded model; batch norm and ReLU after it are written
// into its box (they do not change the shape), so a 6-layer macro model is 8 boxes, not 20.
export function layerBoxes(arch) {
  const out = [];
  for (const l of (arch && Array.isArray(arch.layers) ? arch.layers : [])) {
    const t = String(l.type || '?');
    if ((t === 'batchnorm' || t === 'relu') && out.length && out[out.length - 1].kind !== 'out') {
      out[out.length - 1].extra.push(t === 'batchnorm' ? 'BN' : 'ReLU');
      continue;
    }
    let label = t;
    if (t === 'conv2d') label = `conv ${l.kernel}×${l.kernel}${l.groups > 1 ? ' dw' : ''}${l.stride > 1 ? ' /' + l.stride : ''} → ${l.out}`;
    else if (t === 'maxpool' || t === 'avgpool') label = `${t} ${l.kernel}×${l.kernel}${l.stride > 1 ? ' /' + l.stride : ''}`;
    else if (t === 'global_avgpool') label = 'global avg pool';
    else if (t === 'linear') label = `linear → ${l.out}`;
    else if (t === 'cell') label = `cell (${Array.isArray(l.edges) ? l.edges.length : 0} edges)`;
    else if (t === 'residual') label = 'residual block /2';
    out.push({ label, kind: kindOf(t), extra: [] });
  }
  return out;
}

export function archSvg(genome, arch) {
  const boxes = [{ label: 'input 1×28×28', kind: 'io', extra: [] }].concat(layerBoxes(arch));
  const W = 240, BH = 24, GAP = 12;
  const H = boxes.length * (BH + GAP) - GAP + 4;
  const root = svg('svg', { class: 'arch', width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img',
    'aria-label': 'layers: ' + boxes.map((b) => b.label).join(', ') });
  boxes.forEach((b, i) => {
    const y = 2 + i * (BH + GAP);
    if (i) root.append(svg('line', { x1: W / 2, x2: W / 2, y1: y - GAP, y2: y - 1, class: 'edge' }),
      svg('path', { d: `M${W / 2 - 3},${y - 5}L${W / 2},${y - 1}L${W / 2 + 3},${y - 5}`, class: 'edge' }));
    root.append(svg('rect', { x: 2, y, width: W - 4, height: BH, rx: 5, class: 'box k-' + b.kind }),
      text({ x: W / 2, y: y + BH / 2 + 4, 'text-anchor': 'middle' }, b.label + (b.extra.length ? ' + ' + b.extra.join(' + ') : '')));
  });
  const parts = [root];
  if (genome && genome.space === 'cell' && Array.isArray(genome.edges)) parts.push(cellSvg(genome));
  return el('div', { class: 'archs' }, parts);
}

// specs/nas.md's cell: nodes 0..3 (0 input, 3 output); edges in nas/config.h order.
const CELL_EDGES = [[0, 1], [0, 2], [1, 2], [0, 3], [1, 3], [2, 3]];
export function cellSvg(genome) {
  // Nodes on a line; an edge skipping k nodes arcs k-1 levels away (0->2 and 0->3 above, 1->3
  // below), so no two labels share a place.
  const W = 330, H = 192, Y = 116, px = [30, 120, 210, 300];
  const lift = { '0,1': 0, '1,2': 0, '2,3': 0, '0,2': -55, '1,3': 55, '0,3': -95 };
  const root = svg('svg', { class: 'arch cell', width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img' });
  const said = [];
  CELL_EDGES.forEach(([a, b], i) => {
    const op = String(genome.edges[i] || 'none');
    if (op === 'none') return;
    said.push(`${a}→${b} ${op}`);
    const k = lift[a + ',' + b], mx = (px[a] + px[b]) / 2;
    // A quadratic curve through its control point's half-way height: the label sits on it.
    root.append(svg('path', { d: `M${px[a]},${Y}Q${mx},${Y + 2 * k} ${px[b]},${Y}`, class: 'edge op-' + op.replace(/[^a-z0-9]/g, '') }),
      text({ x: mx, y: Y + k + (k > 0 ? 12 : -4), 'text-anchor': 'middle', class: 'elabel' }, op));
  });
  for (let n = 0; n < 4; n++) {
    root.append(svg('circle', { cx: px[n], cy: Y, r: 13, class: 'node' }),
      text({ x: px[n], y: Y + 4, 'text-anchor': 'middle' }, n === 0 ? 'in' : n === 3 ? 'out' : String(n)));
  }
  root.setAttribute('aria-label', `cell: ${said.join(', ')}; ${genome.cells_per_stage} per stage, width ${genome.width}`);
  return el('figure', { class: 'cellfig' }, root,
    el('figcaption', { class: 'muted small' }, `cell DAG · ${genome.cells_per_stage} cells per stage · stem width ${genome.width}`));
}

// A horizontal bar for a value in [0, max] (hypervolume per search).
export function bar(v, max) {
  const w = isNum(v) && max > 0 ? Math.max(0, Math.min(1, v / max)) * 120 : 0;
  return svg('svg', { width: 122, height: 10, class: 'hvbar', 'aria-hidden': 'true' },
    svg('rect', { x: 0, y: 1, width: 120, height: 8, class: 'track' }), svg('rect', { x: 0, y: 1, width: w, height: 8, class: 'fill' }));
}

// How far a search is against its budget: evaluations, or for ASHA epochs consumed (its budget
// counts epochs: specs/nas.md). finished: its done and failed candidates.
export function progress(strategy, finished) {
  const asha = strategy === 'asha';
  const n = asha ? finished.reduce((a, c) => a + (Number(c.budget) || 0), 0) : finished.length;
  return { n: Math.round(n * 100) / 100, unit: asha ? 'epochs' : 'evaluations' };
}

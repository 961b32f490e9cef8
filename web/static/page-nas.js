// NAS search (#/nas/ID): what the search has found and how it got there. The best accuracy so far
// against evaluations; the Pareto front of accuracy against parameters, FLOPs or latency (the
// server computes it: /nas/pareto); the candidates table, sorted and filtered by the server
// (/nas/candidates, the same filters as the CSV link); a clicked point or row shows that
// candidate's architecture, drawn from its decoded model, and its lineage up the parent chain;
// the retrained top-k. Live: each candidate_* event of this search updates the curve at once
// and refreshes the table and the front (debounced). Sort, filters, cost and the selected
// candidate live in the address, so a view can be bookmarked; they are written with
// replaceState, which does not re-render the page.
import { api, el, badge, pct, fixed, seconds, chart, fitRange, isNum, DASHES } from './util.js';
import { scatter, archSvg, si, progress } from './nas-draw.js';

// [sort key or null, heading, class, cell(c)]
const COLS = [
  ['seq', '#', 'num', (c) => String(c.seq)],
  ['cand_id', 'id', 'num', (c) => String(c.cand_id)],
  ['rung', 'rung', 'num', (c) => String(c.rung)],
  ['status', 'status', '', (c) => badge(c.status)],
  ['val_accuracy', 'val. acc.', 'num', (c) => pct(c.val_accuracy, 2)],
  ['params', 'params', 'num', (c) => si(c.params)],
  ['flops', 'FLOPs', 'num', (c) => si(c.flops)],
  ['latency_ms', 'latency', 'num', (c) => (isNum(c.latency_ms) ? fixed(c.latency_ms, 2) + ' ms' : '–')],
  ['seconds', 'time', 'num', (c) => seconds(c.seconds)],
  [null, 'parent', 'num', (c) => (isNum(c.parent) ? String(c.parent) : '–')],
  [null, 'mutation', 'wrap', (c) => c.mutation || (c.cached_from !== null && c.cached_from !== undefined ? 'cache of #' + c.cached_from : '–')],
  ['hash', 'hash', 'mono', (c) => String(c.hash || '').slice(0, 10)],
];
const COSTS = { params: 'parameters', flops: 'FLOPs', latency: 'latency (ms)' };
const STATUSES = [['', 'any status'], ['done', 'done'], ['done,failed', 'finished'], ['failed', 'failed'],
  ['running', 'running'], ['queued', 'queued']];

export async function render(view, [idText], { query }) {
  const id = Number(idText);
  const base = '/api/runs/' + id + '/nas';
  const [run, nas] = await Promise.all([api('/api/runs/' + id), api(base)]);
  const state = {
    sort: query.get('sort') || 'seq', order: query.get('order') || 'desc', status: query.get('status') || '',
    min_accuracy: query.get('min_accuracy') || '', max_params: query.get('max_params') || '', hash: query.get('hash') || '',
    x: COSTS[query.get('x')] ? query.get('x') : 'params', sel: isNum(Number(query.get('sel'))) && query.get('sel') ? Number(query.get('sel')) : null,
  };
  const cands = new Map(nas.candidates.map((c) => [c.seq, c]));
  let search = nas.search, finals = nas.final, runNow = run, pareto = null, liveEvents = 0;

  // ---- layout ----
  const facts = el('dl', { class: 'facts' });
  const message = el('p', { class: 'message failed', hidden: true, role: 'alert' });
  const csv = el('a', { download: '' }, 'candidates.csv');
  const grid = el('div', { class: 'charts' });
  const paretoBox = el('div', { class: 'pareto-box' });
  const xPick = el('select', { 'aria-label': 'cost axis of the Pareto front', id: 'nas-x' },
    Object.entries(COSTS).map(([k, v]) => el('option', { value: k, selected: k === state.x }, v)));
  const detail = el('section', { class: 'nas-detail', id: 'nas-detail', 'aria-live': 'polite' },
    el('p', { class: 'muted' }, 'Click a point or a row to see its architecture and lineage.'));
  const tbody = el('tbody');
  const heads = COLS.map(([key, label, cls]) => {
    const th = el('th', { scope: 'col', class: cls || null, 'data-sort': key || null });
    if (!key) { th.textContent = label; return th; }
    const b = el('button', { type: 'button', class: 'sort' }, label);
    b.addEventListener('click', () => {
      if (state.sort === key) state.order = state.order === 'asc' ? 'desc' : 'asc';
      else { state.sort = key; state.order = key === 'val_accuracy' || key === 'seq' ? 'desc' : 'asc'; }
      refreshTable();
    });
    th.append(b);
    return th;
  });
  const count = el('span', { class: 'muted small', id: 'nas-count' });
  const fStatus = el('select', { 'aria-label': 'status', name: 'status' },
    STATUSES.map(([v, l]) => el('option', { value: v, selected: v === state.status }, l)));
  const fAcc = el('input', { type: 'number', min: 0, max: 100, step: 'any', name: 'min_accuracy', placeholder: 'min acc. %',
    'aria-label': 'minimum validation accuracy in percent', value: state.min_accuracy ? String(Number(state.min_accuracy) * 100) : null });
  const fParams = el('input', { type: 'number', min: 0, step: 1, name: 'max_params', placeholder: 'max params',
    'aria-label': 'maximum parameters', value: state.max_params || null });
  const fHash = el('input', { type: 'search', name: 'hash', placeholder: 'hash prefix', 'aria-label': 'genome hash prefix',
    maxlength: 64, value: state.hash || null });
  const filters = el('form', { class: 'filters', role: 'search', 'aria-label': 'filter candidates' }, fStatus, fAcc, fParams, fHash, count);
  const finalBody = el('tbody');
  const finalBox = el('div', { hidden: true }, el('h2', {}, 'Retrained top-k'),
    el('div', { class: 'scroll' }, el('table', { class: 'data', id: 'nas-final' }, el('thead', {}, el('tr', {},
      ['rank', 'candidate', 'test acc.', 'val. acc.', 'params', 'FLOPs', 'retrained in'].map((h) => el('th', { scope: 'col' }, h)))), finalBody)));

  view.append(
    el('h1', {}, 'NAS search #' + id + ' ', el('span', { class: 'muted' }, run.experiment || '')),
    facts, message,
    el('p', { class: 'links' }, el('a', { href: '#/run/' + id }, 'Run page'), ' · ',
      el('a', { href: '#/nas?runs=' + id }, 'Compare searches'), ' · ', csv, ' · ',
      el('a', { href: base, target: '_blank', rel: 'noopener' }, 'search JSON')),
    grid,
    el('div', { class: 'nas-split' },
      el('div', {}, el('label', { class: 'muted small' }, 'cost axis ', xPick), paretoBox),
      detail),
    el('h2', {}, 'Candidates'), filters,
    el('div', { class: 'scroll' }, el('table', { class: 'data clickable', id: 'nas-candidates' },
      el('thead', {}, el('tr', {}, heads)), tbody)),
    finalBox);

  const best = chart(grid, { title: 'Best validation accuracy so far', xlabel: 'evaluation', ylabel: 'accuracy',
    yRange: fitRange(0, 1), format: (v) => pct(v, 2), xEmpty: [1, Math.max(2, search.budget || 10)], series: [
      { label: 'best so far', stepped: true, width: 2 }, { label: 'each candidate', points: true, width: 1, dash: DASHES[4] }] });
  best.box.classList.add('nas-progress');

  // ---- address ----
  function filterParams() {
    const p = new URLSearchParams();
    if (state.status) p.set('status', state.status);
    if (state.min_accuracy) p.set('min_accuracy', state.min_accuracy);
    if (state.max_params) p.set('max_params', state.max_params);
    if (state.hash) p.set('hash', state.hash);
    return p;
  }
  function saveAddress() {
    const p = filterParams();
    p.set('sort', state.sort);
    p.set('order', state.order);
    if (state.x !== 'params') p.set('x', state.x);
    if (state.sel !== null) p.set('sel', String(state.sel));
    history.replaceState(null, '', '#/nas/' + id + '?' + p.toString());
    const q = filterParams().toString();
    csv.href = base + '/candidates.csv' + (q ? '?' + q : '');
  }
  function showError(e) {
    message.textContent = String((e && e.message) || e);
    message.hidden = false;
  }

  // ---- facts and curves ----
  function finished() {
    return [...cands.values()].filter((c) => c.status === 'done' || c.status === 'failed').sort((a, b) =>
      (isNum(a.tell_seq) ? a.tell_seq : Infinity) - (isNum(b.tell_seq) ? b.tell_seq : Infinity) ||
      (a.ended_at || 0) - (b.ended_at || 0) || a.seq - b.seq);
  }
  function renderFacts() {
    const all = [...cands.values()];
    const fin = finished();
    const prog = progress(search.strategy, fin);
    const done = fin.filter((c) => c.status === 'done');
    const top = done.reduce((b, c) => (!b || c.val_accuracy > b.val_accuracy ? c : b), null);
    const n = (s) => all.filter((c) => c.status === s).length;
    const item = (k, v, attrs) => el('div', attrs || {}, el('dt', {}, k), el('dd', {}, v));
    facts.replaceChildren(
      item('status', badge(runNow.status)),
      item('strategy', String(search.strategy || '–')),
      item('evaluated', fin.length + (search.strategy === 'asha' ? ' (' + prog.n + ' / ' + search.budget + ' epochs)' : ' / ' + search.budget),
        { 'data-fact': 'evaluated' }),
      item('running', String(n('running'))),
      item('failed', String(n('failed'))),
      item('best val. acc.', top ? pct(top.val_accuracy, 2) + ' (#' + top.seq + ')' : '–', { class: 'best', 'data-fact': 'best' }),
      item('hypervolume', pareto && isNum(pareto.hypervolume) ? pareto.hypervolume.toFixed(4) : '–', { title: 'area dominated in (1 - accuracy, params / 100k) up to (1, 1); specs/nas.md' }),
      item('workers', String(search.workers) + ' · ' + String(search.device || '')));
    let b = -Infinity;
    const xs = [], bs = [], ys = [];
    fin.forEach((c, i) => {
      const a = c.status === 'done' && isNum(c.val_accuracy) ? c.val_accuracy : null;
      if (a !== null && a > b) b = a;
      xs.push(i + 1);
      bs.push(isFinite(b) ? b : null);
      ys.push(a);
    });
    best.set([xs, bs, ys]);
  }
  function renderFinal() {
    finalBox.hidden = !finals.length;
    finalBody.replaceChildren(...finals.map((f) => el('tr', {},
      el('td', {}, String(f.rank)), el('td', {}, '#' + f.seq), el('td', { class: 'num best' }, pct(f.test_accuracy, 2)),
      el('td', { class: 'num' }, pct(f.val_accuracy, 2)), el('td', { class: 'num' }, si(f.params)),
      el('td', { class: 'num' }, si(f.flops)), el('td', { class: 'num' }, seconds(f.seconds)))));
  }

  // ---- the front, the table, the selected candidate ----
  const drawPareto = () => pareto && scatter(paretoBox, { points: pareto.points, xlabel: COSTS[state.x], selected: state.sel, onPick: select });
  async function refreshPareto() {
    pareto = await api(base + '/pareto?x=' + state.x);
    drawPareto();
  }
  // The scatter is drawn at its box's width: again when that changes (a phone turned, a window resized).
  let drawnWidth = 0, resizing = 0;
  const ro = new ResizeObserver(() => {
    if (Math.abs(paretoBox.clientWidth - drawnWidth) < 8) return;
    drawnWidth = paretoBox.clientWidth;
    clearTimeout(resizing);
    resizing = setTimeout(drawPareto, 100);
  });
  ro.observe(paretoBox);
  let tableGen = 0;
  async function refreshTable() {
    const my = ++tableGen;
    saveAddress();
    heads.forEach((th) => {
      const key = th.dataset.sort;
      if (key) th.setAttribute('aria-sort', key === state.sort ? (state.order === 'asc' ? 'ascending' : 'descending') : 'none');
    });
    const p = filterParams();
    p.set('sort', state.sort);
    p.set('order', state.order);
    p.set('limit', '500');
    let r;
    try {
      r = await api(base + '/candidates?' + p.toString());
    } catch (e) {
      if (my === tableGen) showError(e);
      return;
    }
    if (my !== tableGen) return;
    message.hidden = true;
    count.textContent = r.candidates.length < r.total ? `showing ${r.candidates.length} of ${r.total}` : `${r.total} candidates`;
    tbody.replaceChildren(...r.candidates.map((c) => {
      const tr = el('tr', { tabindex: 0, 'data-seq': c.seq, class: c.seq === state.sel ? 'sel' : null },
        COLS.map(([, , cls, cell]) => el('td', { class: cls || null }, cell(c))));
      tr.addEventListener('click', () => select(c.seq));
      tr.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') select(c.seq); });
      return tr;
    }));
  }
  let selGen = 0;
  async function select(seq) {
    const my = ++selGen;
    state.sel = seq;
    saveAddress();
    tbody.querySelectorAll('tr').forEach((tr) => tr.classList.toggle('sel', Number(tr.dataset.seq) === seq));
    paretoBox.querySelectorAll('circle.pt').forEach((c) => c.classList.toggle('sel', Number(c.dataset.seq) === seq));
    let r;
    try {
      r = await api(base + '/candidate?seq=' + seq);
    } catch (e) {
      if (my === selGen) detail.replaceChildren(el('p', { class: 'error' }, String(e.message || e)));
      return;
    }
    if (my !== selGen) return;
    const c = r.candidate;
    const lineage = el('ol', { class: 'lineage', id: 'nas-lineage' },
      el('li', { class: 'self' }, el('strong', {}, '#' + c.seq), ' ' + pct(c.val_accuracy, 2) + ' · ' + si(c.params) + ' params',
        el('div', { class: 'muted small' }, c.mutation || 'random')),
      r.lineage.map((a) => el('li', {},
        el('button', { type: 'button', class: 'link', onclick: () => select(a.seq) }, '#' + a.seq),
        ' ' + pct(a.val_accuracy, 2) + ' · ' + si(a.params) + ' params',
        el('div', { class: 'muted small' }, a.mutation || 'random'))));
    detail.replaceChildren(
      el('h2', {}, 'Candidate #' + c.seq + ' ', badge(c.status)),
      el('dl', { class: 'facts' },
        [['val. acc.', pct(c.val_accuracy, 2)], ['params', si(c.params)], ['FLOPs', si(c.flops)],
          ['latency', isNum(c.latency_ms) ? fixed(c.latency_ms, 2) + ' ms' : '–'], ['epochs', String(c.budget)],
          ['worker', c.worker || '–']].map(([k, v]) => el('div', {}, el('dt', {}, k), el('dd', {}, v)))),
      c.reason ? el('p', { class: 'message failed' }, c.reason) : '',
      el('div', { class: 'arch-and-lineage' },
        el('div', {}, el('h3', {}, 'Architecture'), archSvg(c.genome, c.arch)),
        el('div', {}, el('h3', {}, 'Lineage'), lineage)),
      el('p', { class: 'muted small mono hash' }, 'hash ' + c.hash),
      el('details', {}, el('summary', {}, 'Genome and decoded model (JSON)'),
        el('pre', { class: 'config' }, JSON.stringify({ genome: c.genome, arch: c.arch }, null, 2))));
  }

  // ---- inputs ----
  let typing = 0;
  function readFilters() {
    state.status = fStatus.value;
    const a = fAcc.value.trim();
    state.min_accuracy = a === '' ? '' : String(Number(a) / 100);
    state.max_params = fParams.value.trim();
    state.hash = fHash.value.trim().toLowerCase();
    clearTimeout(typing);
    typing = setTimeout(refreshTable, 250);
  }
  filters.addEventListener('input', readFilters);
  filters.addEventListener('change', readFilters);
  filters.addEventListener('submit', (ev) => ev.preventDefault());
  xPick.addEventListener('change', () => {
    state.x = xPick.value;
    saveAddress();
    refreshPareto().catch(showError);
  });

  renderFinal();
  await Promise.all([refreshPareto(), refreshTable()]);
  renderFacts();
  if (state.sel !== null) select(state.sel);
  view.dataset.liveEvents = '0';
  const loadedAt = Date.now();

  // ---- live ----
  // Two timers: a burst of candidate events must not cancel the full refresh a run_status
  // event asked for (the last candidates and the end of the run can come in one poll).
  let t = 0, tAll = 0;
  async function refreshAll() {
    try {
      const [r, n] = await Promise.all([api('/api/runs/' + id), api(base)]);
      runNow = r;
      search = n.search;
      finals = n.final;
      for (const c of n.candidates) cands.set(c.seq, c);
      renderFinal();
      await Promise.all([refreshPareto(), refreshTable()]);
      renderFacts();
    } catch (e) {
      showError(e);
    }
  }
  return {
    onEvent(ev) {
      // A reconnected socket may have missed events: catch up (not on the first hello, which
      // comes while the page is still showing what it just loaded).
      if (ev.type === 'hello') {
        if (Date.now() - loadedAt > 3000) { clearTimeout(tAll); tAll = setTimeout(refreshAll, 100); }
        return;
      }
      if (ev.run_id !== id) return;
      if (/^candidate_/.test(ev.type) && ev.candidate) {
        view.dataset.liveEvents = String(++liveEvents);
        cands.set(ev.candidate.seq, ev.candidate);
        renderFacts();
        clearTimeout(t);
        t = setTimeout(() => Promise.all([refreshPareto(), refreshTable()]).then(renderFacts).catch(showError), 250);
      } else if (ev.type === 'run_status') {
        clearTimeout(tAll);
        tAll = setTimeout(refreshAll, 100);
      }
    },
    dispose() { clearTimeout(t); clearTimeout(tAll); clearTimeout(typing); clearTimeout(resizing); ro.disconnect(); best.dispose(); },
  };
}

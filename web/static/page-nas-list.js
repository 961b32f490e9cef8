// NAS searches (#/nas?runs=1,2): every search in the store with its strategy, progress, best
// accuracy and hypervolume (specs/nas.md: the area dominated in (1 - accuracy, params / 100k) up
// to (1, 1), the number strategies are compared by), and the chosen searches side by side: their
// best-so-far curves overlaid against evaluations and their Pareto fronts (against parameters,
// the fronts the hypervolumes measure) on one chart, told apart by dash and legend. The choice
// lives in the address. Live: a finished candidate of a shown search refreshes (debounced).
import { api, el, badge, pct, chart, fitRange, isNum, DASHES } from './util.js';
import { bar, fronts } from './nas-draw.js';

// Best validation accuracy after each finished evaluation, in the order the strategy was told.
export function bestSoFar(cands) {
  const fin = cands.filter((c) => c.status === 'done' || c.status === 'failed').sort((a, b) =>
    (isNum(a.tell_seq) ? a.tell_seq : Infinity) - (isNum(b.tell_seq) ? b.tell_seq : Infinity) ||
    (a.ended_at || 0) - (b.ended_at || 0) || a.seq - b.seq);
  let b = -Infinity;
  return fin.map((c) => {
    if (c.status === 'done' && isNum(c.val_accuracy) && c.val_accuracy > b) b = c.val_accuracy;
    return isFinite(b) ? b : null;
  });
}

export async function render(view, params, { query }) {
  const searches = await api('/api/nas/searches');
  let chosen = (query.get('runs') || '').split(',').map(Number).filter((n) => searches.some((s) => s.run_id === n));
  if (!chosen.length) chosen = searches.slice(0, 3).map((s) => s.run_id);
  chosen = chosen.slice(0, DASHES.length);
  view.append(el('h1', {}, 'Architecture searches'));
  if (!searches.length) {
    view.append(el('p', { class: 'muted' }, 'No searches yet. Start one with ', el('code', {}, 'fednas nas EXPERIMENT.json'), '.'));
    return null;
  }
  const maxHv = Math.max(...searches.map((s) => (isNum(s.hypervolume) ? s.hypervolume : 0)), 1e-9);
  const body = el('tbody', {}, searches.map((s) => {
    const box = el('input', { type: 'checkbox', value: s.run_id, checked: chosen.includes(s.run_id),
      'aria-label': 'compare search #' + s.run_id });
    const tr = el('tr', { 'data-run': s.run_id },
      el('td', {}, box),
      el('td', {}, el('a', { href: '#/nas/' + s.run_id }, '#' + s.run_id)),
      el('td', {}, s.experiment || '–'),
      el('td', {}, String(s.strategy || '–')),
      el('td', {}, badge(s.status)),
      el('td', { class: 'num' }, (s.strategy === 'asha' ? Math.round(s.epochs_done * 100) / 100 : s.done + s.failed) + ' / ' + s.budget +
        (s.strategy === 'asha' ? ' epochs' : '')),
      el('td', { class: 'num best' }, pct(s.best_val_accuracy, 2)),
      el('td', { class: 'num hv' }, isNum(s.hypervolume) ? s.hypervolume.toFixed(4) : '–'),
      el('td', {}, bar(s.hypervolume, maxHv)));
    return tr;
  }));
  body.addEventListener('change', () => {
    const ids = [...body.querySelectorAll('input:checked')].map((i) => i.value).slice(0, DASHES.length);
    location.hash = '#/nas?runs=' + ids.join(',');
  });
  view.append(
    el('p', { class: 'muted small' }, 'Hypervolume: the area dominated in (1 − validation accuracy, parameters / 100k) ' +
      'up to the reference point (1, 1); larger is better. Tick up to ' + DASHES.length + ' searches to compare them.'),
    el('div', { class: 'scroll' }, el('table', { class: 'data', id: 'nas-searches' },
      el('thead', {}, el('tr', {}, ['', 'Run', 'Experiment', 'Strategy', 'Status', 'Evaluated', 'Best val. acc.',
        'Hypervolume', ''].map((h) => el('th', { scope: 'col' }, h)))), body)));
  if (!chosen.length) return null;
  const name = (id) => { const s = searches.find((x) => x.run_id === id); return '#' + id + ' ' + (s.strategy || '') + ' ' + (s.experiment || ''); };
  const c = chart(view, { title: 'Best validation accuracy so far, searches compared', xlabel: 'evaluation', ylabel: 'accuracy',
    yRange: fitRange(0, 1), format: (v) => pct(v, 2), height: 320,
    series: chosen.map((id, i) => ({ label: name(id), dash: DASHES[i], stepped: true })) });
  c.box.classList.add('nas-progress');
  const frontBox = el('div', { class: 'fronts-box' });
  view.append(frontBox);
  async function load() {
    const [all, ps] = await Promise.all([
      Promise.all(chosen.map((id) => api('/api/runs/' + id + '/nas/candidates?status=done,failed&sort=seq&order=asc'))),
      Promise.all(chosen.map((id) => api('/api/runs/' + id + '/nas/pareto?x=params')))]);
    const curves = all.map((r) => bestSoFar(r.candidates));
    const n = Math.max(0, ...curves.map((x) => x.length));
    const xs = Array.from({ length: n }, (_, i) => i + 1);
    c.set([xs].concat(curves.map((cv) => xs.map((x) => (x <= cv.length ? cv[x - 1] : null)))));
    // The fronts the hypervolumes above measure, against parameters.
    fronts(frontBox, { xlabel: 'parameters', series: chosen.map((id, i) => ({
      label: name(id), dash: DASHES[i], points: ps[i].points.filter((p) => p.front) })) });
  }
  await load();
  let t = 0;
  return {
    onEvent(ev) {
      if (ev.type === 'candidate_finished' && chosen.includes(ev.run_id)) {
        clearTimeout(t);
        t = setTimeout(() => load().catch(() => {}), 300);
      }
    },
    dispose() { clearTimeout(t); c.dispose(); },
  };
}

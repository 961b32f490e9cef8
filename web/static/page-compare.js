// Compare: several runs' test accuracy per round on one chart. The selection lives in the
// URL (#/compare?runs=1,2,3), so a comparison can be bookmarked. Runs are told apart by dash
// pattern and legend, not colour.
import { api, el, badge, chart, fitRange, pct, DASHES } from './util.js';

export async function render(view, params, { query }) {
  const runs = await api('/api/runs');
  let chosen = (query.get('runs') || '').split(',').map(Number).filter((n) => runs.some((r) => r.id === n));
  if (!chosen.length) chosen = runs.slice(0, 3).map((r) => r.id);
  chosen = chosen.slice(0, DASHES.length);
  const list = el('fieldset', { class: 'pick' }, el('legend', {}, 'Runs (up to ' + DASHES.length + ')'),
    runs.map((r) => el('label', {}, el('input', { type: 'checkbox', value: r.id, checked: chosen.includes(r.id) }),
      ' #' + r.id + ' ' + (r.experiment || '') + ' ', badge(r.status))));
  list.addEventListener('change', () => {
    const ids = [...list.querySelectorAll('input:checked')].map((i) => i.value).slice(0, DASHES.length);
    location.hash = '#/compare?runs=' + ids.join(',');
  });
  view.append(el('h1', {}, 'Compare runs'), list);
  if (!chosen.length) {
    view.append(el('p', { class: 'muted' }, 'No runs yet.'));
    return null;
  }
  const c = chart(view, { title: 'Test accuracy per round', ylabel: 'accuracy', yRange: fitRange(0, 1), format: (v) => pct(v, 2), height: 320,
    series: chosen.map((id, i) => ({ label: '#' + id + ' ' + (runs.find((r) => r.id === id).experiment || ''), dash: DASHES[i] })) });
  async function load() {
    const all = await Promise.all(chosen.map((id) => api('/api/runs/' + id + '/rounds')));
    const xs = [...new Set(all.flatMap((rs) => rs.map((r) => r.round)))].sort((a, b) => a - b);
    c.set([xs].concat(all.map((rs) => {
      const by = new Map(rs.map((r) => [r.round, r.test_accuracy]));
      return xs.map((x) => (by.has(x) ? by.get(x) : null));
    })));
  }
  await load();
  let t = 0;
  return {
    onEvent(ev) {
      if (ev.type === 'round_finished' && chosen.includes(ev.run_id)) {
        clearTimeout(t);
        t = setTimeout(() => load().catch(() => {}), 100);
      }
    },
    dispose() { clearTimeout(t); c.dispose(); },
  };
}

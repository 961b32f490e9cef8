// Runs: every run in the store with status, progress (and, while running, the phase its server
// is in), best accuracy, epsilon spent and duration. Architecture searches are marked NAS and
// open on the NAS page (their progress is evaluations, their best the validation accuracy).
// Live: refreshed (debounced) on every round, status or finished-candidate event; a round_phase
// event only rewrites that run's phase.
import { api, el, badge, pct, fixed, seconds, when, duration, runPhase } from './util.js';

export async function render(view) {
  const body = el('tbody');
  const empty = el('p', { class: 'muted', hidden: true }, 'No runs yet. Start one with ', el('code', {}, 'fednas run EXPERIMENT.json'), '.');
  view.append(
    el('h1', {}, 'Runs'),
    el('div', { class: 'scroll' },
      el('table', { class: 'data clickable', id: 'runs' },
        el('thead', {}, el('tr', {},
          el('th', { scope: 'col' }, 'Run'), el('th', { scope: 'col' }, 'Experiment'), el('th', { scope: 'col' }, 'Status'),
          el('th', { scope: 'col' }, 'Progress'), el('th', { scope: 'col', class: 'num' }, 'Best acc.'),
          el('th', { scope: 'col', class: 'num' }, 'ε spent'), el('th', { scope: 'col', class: 'num' }, 'Duration'),
          el('th', { scope: 'col' }, 'Started'))),
        body)),
    empty);

  const eps = new Map(); // run id -> epsilon (only fetched for runs with a dp block)
  const phases = new Map(); // run id -> the element showing its phase
  async function load() {
    const runs = await api('/api/runs');
    // Architecture searches open on the NAS page and count evaluations, not rounds.
    const searches = new Map((await api('/api/nas/searches').catch(() => [])).map((x) => [x.run_id, x]));
    empty.hidden = runs.length > 0;
    await Promise.all(runs.slice(0, 50).map(async (r) => {
      if (eps.has(r.id) && r.status !== 'running') return;
      try {
        const p = await api('/api/runs/' + r.id + '/privacy');
        eps.set(r.id, p.epsilon);
      } catch (e) {
        eps.set(r.id, null);
      }
    }));
    body.replaceChildren(...runs.map((r) => {
      const nas = searches.get(r.id);
      // An ASHA search's budget is epochs (specs/nas.md), every other search's evaluations.
      const unit = nas ? (nas.strategy === 'asha' ? ' epochs' : ' evaluations') : ' rounds';
      const done = nas ? Math.round((nas.strategy === 'asha' ? nas.epochs_done : nas.done + nas.failed) * 100) / 100 : r.rounds_done || 0;
      const planned = nas ? nas.budget : r.rounds_planned || 0;
      const href = (nas ? '#/nas/' : '#/run/') + r.id;
      const phase = el('div', { class: 'muted small phase' }, runPhase(r));
      phases.set(r.id, phase);
      const tr = el('tr', { tabindex: 0, 'data-run': r.id },
        el('td', {}, el('a', { href }, '#' + r.id), nas ? el('span', { class: 'badge kind-nas', title: 'architecture search' }, 'NAS') : null),
        el('td', {}, r.experiment || '–'),
        el('td', {}, badge(r.status)),
        el('td', {}, el('progress', { max: planned || 1, value: done, 'aria-label': done + ' of ' + planned + unit }),
          el('span', { class: 'muted small' }, ' ' + done + '/' + planned),
          phase),
        el('td', { class: 'num best' }, pct(nas ? nas.best_val_accuracy : r.best_accuracy)),
        el('td', { class: 'num' }, fixed(eps.get(r.id), 2)),
        el('td', { class: 'num' }, seconds(duration(r))),
        el('td', {}, when(r.started_at)));
      const open = () => { location.hash = href; };
      tr.addEventListener('click', (ev) => { if (ev.target.tagName !== 'A') open(); });
      tr.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') open(); });
      return tr;
    }));
  }
  await load();
  let t = 0;
  const tick = setInterval(() => { if (!document.hidden) load().catch(() => {}); }, 15000);
  return {
    onEvent(ev) {
      if (ev.type === 'round_phase' && phases.has(ev.run_id)) {
        phases.get(ev.run_id).textContent = runPhase({ status: 'running', phase: ev.phase, phase_round: ev.round });
        return;
      }
      if (ev.type === 'hello' || ev.type === 'round_finished' || ev.type === 'run_status' || ev.type === 'candidate_finished') {
        clearTimeout(t);
        t = setTimeout(() => load().catch(() => {}), 150);
      }
    },
    dispose() { clearTimeout(t); clearInterval(tick); },
  };
}

// Run: accuracy and loss per round (train vs test), participants and dropouts, round time by
// phase, survivors of each secure-aggregation phase, epsilon against the budget, the config;
// admin actions. Live: the header shows the phase the server is in (round_phase events), and
// each round_finished event of this run fetches the rounds and metrics after the last one shown
// (?since=N) and extends every chart.
import { api, el, badge, pct, fixed, seconds, when, duration, chart, fitRange, DASHES, session, runPhase } from './util.js';

export async function render(view, [idText]) {
  const id = Number(idText);
  const s = await session();
  let run = await api('/api/runs/' + id);
  const head = el('div', { class: 'runhead' });
  const actions = el('div', { class: 'actions' });
  const message = el('p', { class: 'message', hidden: true });
  const grid = el('div', { class: 'charts' });
  const cfg = el('pre', { class: 'config' });
  view.append(
    el('h1', {}, 'Run #' + id + ' ', el('span', { class: 'muted' }, run.experiment || '')),
    head, actions, message, grid,
    el('details', {}, el('summary', {}, 'Config'), cfg),
    el('p', {}, el('a', { href: '#/clients/' + id }, 'Clients of this run'), ' · ',
      el('a', { href: '/api/runs/' + id + '/rounds.csv', download: '' }, 'rounds.csv'), ' · ',
      el('a', { href: '/api/runs/' + id + '/clients.csv', download: '' }, 'clients.csv')));
  cfg.textContent = JSON.stringify(run.config, null, 2);
  if (run.config && run.config.nas) head.before(el('p', {}, el('a', { href: '#/nas/' + id }, 'This run is an architecture search: open its NAS page')));

  const xEmpty = [1, Math.max(2, run.rounds_planned || 10)]; // axes before the first round
  const charts = {
    // Accuracy and loss fit their data: their changes from round to round are what matters.
    acc: chart(grid, { xEmpty, title: 'Accuracy', ylabel: 'accuracy', yRange: fitRange(0, 1), format: (v) => pct(v, 2), series: [
      { label: 'test', points: true }, { label: 'train', dash: DASHES[1] }, { label: 'best', width: 1, dash: DASHES[2] }] }),
    loss: chart(grid, { xEmpty, title: 'Loss', ylabel: 'loss', yRange: fitRange(0), series: [
      { label: 'test', points: true }, { label: 'train', dash: DASHES[1] }] }),
    // Dropped sites are vermillion (--s2) wherever they appear.
    part: chart(grid, { xEmpty, title: 'Participants per round', ylabel: 'clients', series: [
      { label: 'participants', stepped: true }, { label: 'dropped', color: '--s2', stepped: true }] }),
    time: chart(grid, { xEmpty, title: 'Round time by phase', ylabel: 'seconds', series: [
      { label: 'whole round', points: true }, { label: 'collect updates', dash: DASHES[1] },
      { label: 'aggregate', dash: DASHES[2] }, { label: 'evaluate', dash: DASHES[3] }] }),
    sa: chart(grid, { xEmpty, title: 'Secure aggregation: sites left after each phase', ylabel: 'sites', series: [
      { label: 'selected', stepped: true, dash: DASHES[4] }, { label: 'keys advertised', stepped: true },
      { label: 'shares sent', stepped: true, dash: DASHES[1] }, { label: 'masked inputs', stepped: true, dash: DASHES[2] },
      { label: 'summed', stepped: true, dash: DASHES[3] }, { label: 'dropped', color: '--s2', stepped: true }] }),
    saTime: chart(grid, { xEmpty, title: 'Secure aggregation: time per phase', ylabel: 'seconds', series: [
      { label: 'advertise keys (incl. training)' }, { label: 'share keys', dash: DASHES[1] },
      { label: 'masked input', dash: DASHES[2] }, { label: 'unmasking', dash: DASHES[3] }] }),
    eps: chart(grid, { xEmpty, title: 'Privacy: ε spent', ylabel: 'ε', series: [
      { label: 'ε', points: true }, { label: 'budget', color: '--s2', dash: DASHES[1], width: 1 }] }),
  };

  let rounds = [];
  const metrics = new Map(); // name -> Map(round -> value)
  let privacy = null;
  let last = 0;
  let busy = false, again = false, lastMetric = 0;

  const phaseText = () => runPhase(run) || '–';

  function renderHead() {
    const best = rounds.reduce((b, r) => (r.test_accuracy > (b ? b.test_accuracy : -1) ? r : b), null);
    const eps = privacy && privacy.epsilon;
    const budget = privacy && privacy.target_epsilon;
    head.replaceChildren(el('dl', { class: 'facts' },
      el('div', {}, el('dt', {}, 'status'), el('dd', {}, badge(run.status))),
      el('div', {}, el('dt', {}, 'rounds'), el('dd', {}, (rounds.length) + ' / ' + run.rounds_planned)),
      el('div', {}, el('dt', {}, 'now'), el('dd', { class: 'phase' }, phaseText())),
      el('div', {}, el('dt', {}, 'best accuracy'), el('dd', { class: 'best' }, best ? pct(best.test_accuracy, 2) + ' (round ' + best.round + ')' : '–')),
      el('div', {}, el('dt', {}, 'ε spent'), el('dd', {}, typeof eps === 'number' ? fixed(eps, 3) + (budget ? ' of ' + budget : '') : '–')),
      el('div', {}, el('dt', {}, 'clients'), el('dd', {}, String(run.clients_planned))),
      el('div', {}, el('dt', {}, 'duration'), el('dd', {}, seconds(duration(run)))),
      el('div', {}, el('dt', {}, 'started'), el('dd', {}, when(run.started_at)))));
    message.hidden = !run.message;
    message.textContent = run.message || '';
    message.className = 'message' + (run.status === 'failed' || run.status === 'interrupted' ? ' failed' : '');
    actions.replaceChildren();
    if (s.role === 'admin') {
      if (run.status === 'running') actions.append(el('button', { type: 'button', class: 'danger', onclick: () => act('stop') }, 'Stop run'));
      else if (run.status !== 'done') actions.append(el('button', { type: 'button', onclick: () => act('resume') }, 'Resume run'));
    }
  }

  async function act(what) {
    try {
      await api('/api/runs/' + id + '/' + what, { method: 'POST' });
      actions.append(el('span', { class: 'muted' }, ' ' + what + ' requested'));
    } catch (e) {
      // A server that is gone (killed) is not signalled: the run is interrupted and may be resumed.
      if (what === 'stop' && /interrupted/.test(e.message)) { run.status = 'interrupted'; run.phase = null; renderHead(); }
      actions.append(el('span', { class: 'error' }, ' ' + e.message));
    }
  }

  function draw() {
    const x = rounds.map((r) => r.round);
    let best = -1;
    const bestLine = rounds.map((r) => (best = Math.max(best, r.test_accuracy == null ? -1 : r.test_accuracy)) < 0 ? null : best);
    charts.acc.set([x, rounds.map((r) => r.test_accuracy), rounds.map((r) => r.train_accuracy), bestLine]);
    charts.loss.set([x, rounds.map((r) => r.test_loss), rounds.map((r) => r.train_loss)]);
    charts.part.set([x, rounds.map((r) => r.participants), rounds.map((r) => r.dropped)]);
    const m = (name) => { const by = metrics.get(name); return rounds.map((r) => (by && by.has(r.round) ? by.get(r.round) : null)); };
    charts.time.set([x, rounds.map((r) => r.duration), m('phase_collect_s'), m('phase_aggregate_s'), m('phase_evaluate_s')]);
    const secure = metrics.has('secagg_summed');
    charts.sa.box.hidden = charts.saTime.box.hidden = !secure;
    if (secure) {
      charts.sa.set([x, rounds.map((r) => r.selected), m('secagg_u1'), m('secagg_u2'), m('secagg_u3'), m('secagg_summed'), rounds.map((r) => r.dropped)]);
      charts.saTime.set([x, m('phase_advert_s'), m('phase_shares_s'), m('phase_masked_s'), m('phase_unmask_s')]);
    }
    const epsBy = new Map(((privacy && privacy.rounds) || []).map((p) => [p.round, p.epsilon]));
    const budget = privacy && typeof privacy.target_epsilon === 'number' ? privacy.target_epsilon : null;
    charts.eps.set([x, rounds.map((r) => (epsBy.has(r.round) ? epsBy.get(r.round) : null)), rounds.map(() => budget)]);
    charts.eps.box.hidden = !(privacy && (privacy.dp || epsBy.size));
  }

  async function update(full) {
    if (busy) { again = true; return; }
    busy = true;
    try {
      do {
        again = false;
        const fresh = await api('/api/runs/' + id + '/rounds' + (last && !full ? '?since=' + last : ''));
        if (full) rounds = [];
        for (const r of fresh) if (r.round > (rounds.length ? rounds[rounds.length - 1].round : 0)) rounds.push(r);
        last = rounds.length ? rounds[rounds.length - 1].round : 0;
        if (full) metrics.clear();
        const since = full ? 0 : lastMetric;
        for (const row of await api('/api/runs/' + id + '/metrics' + (since ? '?since=' + since : ''))) {
          if (!metrics.has(row.name)) metrics.set(row.name, new Map());
          metrics.get(row.name).set(row.round, row.value);
        }
        // A round's metrics land just after its commit: next time, ask again from its round.
        lastMetric = Math.max(0, last - 1);
        privacy = await api('/api/runs/' + id + '/privacy');
        draw();
        renderHead();
        full = false;
      } while (again);
    } finally {
      busy = false;
    }
  }
  await update(true);
  const clock = setInterval(() => { if (run.status === 'running') renderHead(); }, 5000);
  return {
    onEvent(ev) {
      if (ev.type === 'hello') update(false).catch(() => {});
      else if (ev.run_id !== id) return;
      else if (ev.type === 'round_finished') update(false).catch(() => {});
      else if (ev.type === 'round_phase') {
        // The previous round's metrics are written right after its commit: fetch them now.
        if (ev.phase === 'waiting' || ev.phase === 'training') update(false).catch(() => {});
        run.phase = ev.phase; run.phase_round = ev.round; renderHead();
      }
      else if (ev.type === 'run_status' || ev.type === 'budget_reached') {
        api('/api/runs/' + id).then((r) => { run = r; renderHead(); }).catch(() => {});
      }
    },
    dispose() {
      clearInterval(clock);
      Object.values(charts).forEach((c) => c.dispose());
    },
  };
}

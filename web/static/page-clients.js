// Clients: the sites of one run (the newest by default): status, last seen, rounds
// contributed, latency and traffic. Live: reloaded on client and round events of that run.
import { api, el, badge, ago, bytes, fixed } from './util.js';

export async function render(view, [idText]) {
  const runs = await api('/api/runs');
  const id = idText ? Number(idText) : runs.length ? runs[0].id : null;
  const pick = el('select', { id: 'client-run', 'aria-label': 'run' },
    runs.map((r) => el('option', { value: r.id, selected: r.id === id }, '#' + r.id + ' ' + (r.experiment || '') + ' (' + r.status + ')')));
  pick.addEventListener('change', () => { location.hash = '#/clients/' + pick.value; });
  const body = el('tbody');
  view.append(el('h1', {}, 'Clients'), el('p', {}, el('label', {}, 'Run ', pick)),
    el('div', { class: 'scroll' }, el('table', { class: 'data', id: 'clients' },
      el('thead', {}, el('tr', {},
        el('th', { scope: 'col' }, 'Site'), el('th', { scope: 'col' }, 'Status'), el('th', { scope: 'col' }, 'Last seen'),
        el('th', { scope: 'col', class: 'num' }, 'Rounds'), el('th', { scope: 'col', class: 'num' }, 'Latency'),
        el('th', { scope: 'col', class: 'num' }, 'Up'), el('th', { scope: 'col', class: 'num' }, 'Down'),
        el('th', { scope: 'col', class: 'num' }, 'Samples'))),
      body)));
  if (id === null) {
    view.append(el('p', { class: 'muted' }, 'No runs yet.'));
    return null;
  }
  async function load() {
    const cs = await api('/api/runs/' + id + '/clients');
    body.replaceChildren(...cs.map((c) => el('tr', {},
      el('td', {}, c.name), el('td', {}, badge(c.status)), el('td', {}, ago(c.last_seen)),
      el('td', { class: 'num' }, String(c.rounds_contributed)),
      el('td', { class: 'num' }, typeof c.last_latency === 'number' ? fixed(c.last_latency * 1000, 0) + ' ms' : '–'),
      el('td', { class: 'num' }, bytes(c.bytes_up)), el('td', { class: 'num' }, bytes(c.bytes_down)),
      el('td', { class: 'num' }, String(c.samples)))));
    if (!cs.length) body.append(el('tr', {}, el('td', { colspan: 8, class: 'muted' }, 'No client has registered yet.')));
  }
  await load();
  let t = 0;
  return {
    onEvent(ev) {
      if (ev.type === 'hello' || (ev.run_id === id && /^client_|round_finished/.test(ev.type))) {
        clearTimeout(t);
        t = setTimeout(() => load().catch(() => {}), 100);
      }
    },
    dispose() { clearTimeout(t); },
  };
}

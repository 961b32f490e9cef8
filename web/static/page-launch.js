// Launch (admin): edit an experiment config and start `fednas run` on it. The editor starts
// from the newest experiment's config; the server validates it (fednas run's own checks) and
// answers with the new run, or with fednas's error message.
import { api, el } from './util.js';

const TEMPLATE = {
  name: 'quickstart',
  seed: 42,
  rounds: 10,
  data: { dataset: 'fashion-mnist', path: '/usr/share/datasets/fashion-mnist', partition: { scheme: 'iid' } },
  model: { type: 'mlp', hidden: [128] },
  clients: { count: 8 },
  train: { epochs: 1, batch_size: 32, lr: 0.05 },
};

export async function render(view, params, { session }) {
  view.append(el('h1', {}, 'Launch a run'));
  if (session.role !== 'admin') {
    view.append(el('p', { class: 'muted' }, 'Launching needs the admin link; this session is read-only.'));
    return null;
  }
  const exps = await api('/api/experiments');
  const start = exps.length && exps[0].config ? exps[0].config : TEMPLATE;
  const text = el('textarea', { id: 'config', rows: 22, spellcheck: 'false', 'aria-label': 'experiment config (JSON)' });
  text.value = JSON.stringify(start, null, 2);
  const note = el('p', { class: 'muted', role: 'status' });
  const out = el('div', { role: 'status' });
  const go = el('button', { type: 'submit', class: 'primary' }, 'Start run');
  const form = el('form', { class: 'launch' }, el('label', { for: 'config' }, 'Experiment config (JSON)'), text, note, go, out);
  function check() {
    try {
      const v = JSON.parse(text.value);
      if (typeof v !== 'object' || Array.isArray(v) || v === null) throw new Error('the config must be a JSON object');
      note.textContent = 'valid JSON';
      note.className = 'muted';
      go.disabled = false;
    } catch (e) {
      note.textContent = e.message;
      note.className = 'error';
      go.disabled = true;
    }
  }
  text.addEventListener('input', check);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    go.disabled = true;
    out.replaceChildren(el('p', { class: 'muted' }, 'starting…'));
    try {
      const r = await api('/api/runs', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: text.value });
      out.replaceChildren(r.run_id
        ? el('p', {}, 'Started ', el('a', { href: '#/run/' + r.run_id }, 'run #' + r.run_id), ' (process ' + r.pid + ').')
        : el('p', {}, 'Started (process ' + r.pid + '); the run appears in the list once it has registered.'));
    } catch (e) {
      out.replaceChildren(el('p', { class: 'error' }, e.message), e.body && e.body.log_tail ? el('pre', { class: 'config' }, e.body.log_tail) : '');
    } finally {
      go.disabled = false;
    }
  });
  view.append(form);
  check();
  return null;
}

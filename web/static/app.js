// fednas dashboard: a hash router over page modules, the API helper (session cookie + CSRF
// header), and the live event socket. Pages are modules: render(view, params, ctx) builds the
// page and returns an object whose optional onEvent(ev) gets WebSocket events and dispose()
// runs when the page is left. Adding a page (e.g. NAS) is one module and one ROUTES line.
// No inline code anywhere: the page is served with CSP default-src 'self'.
import * as runs from './page-runs.js';
import * as run from './page-run.js';
import * as clients from './page-clients.js';
import * as compare from './page-compare.js';
import * as launch from './page-launch.js';
import * as nas from './page-nas.js';
import * as nasList from './page-nas-list.js';
import { api, session, el } from './util.js';

const ROUTES = [
  { re: /^\/?$/, page: runs, nav: 'runs' },
  { re: /^\/run\/(\d+)$/, page: run, nav: 'runs' },
  { re: /^\/clients(?:\/(\d+))?$/, page: clients, nav: 'clients' },
  { re: /^\/compare$/, page: compare, nav: 'compare' },
  { re: /^\/launch$/, page: launch, nav: 'launch' },
  { re: /^\/nas$/, page: nasList, nav: 'nas' },
  { re: /^\/nas\/(\d+)$/, page: nas, nav: 'nas' },
];

const view = document.getElementById('view');
let current = null;
let gen = 0;

function parseHash() {
  let h = location.hash.replace(/^#/, '');
  const legacy = /^run=(\d+)/.exec(h); // fednas run prints .../#run=ID
  if (legacy) h = '/run/' + legacy[1];
  const [path, query] = h.split('?');
  return { path: path || '/', query: new URLSearchParams(query || '') };
}

async function route() {
  const my = ++gen;
  if (current && current.dispose) current.dispose();
  current = null;
  const { path, query } = parseHash();
  const r = ROUTES.find((x) => x.re.test(path));
  document.querySelectorAll('[data-nav]').forEach((a) => {
    a.classList.toggle('active', r && a.dataset.nav === r.nav);
    if (r && a.dataset.nav === r.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  });
  view.replaceChildren();
  if (!r) {
    view.append(el('h1', {}, 'Not found'), el('p', { class: 'muted' }, 'No page ' + path + '.'));
    return;
  }
  const params = r.re.exec(path).slice(1);
  try {
    const page = await r.page.render(view, params, { query, session: await session() });
    if (my === gen) current = page || null;
    else if (page && page.dispose) page.dispose();
  } catch (e) {
    if (my !== gen) return;
    view.replaceChildren(el('h1', {}, 'Error'), el('p', { class: 'error' }, String(e.message || e)));
  }
}

// ---- live events ------------------------------------------------------------------------

const live = document.getElementById('live');
let socket = null;
let backoff = 500;

function connect() {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  socket = new WebSocket(proto + '//' + location.host + '/ws');
  socket.addEventListener('open', () => {
    backoff = 500;
    live.textContent = 'live';
    live.className = 'live on';
  });
  socket.addEventListener('message', (m) => {
    let ev;
    try {
      ev = JSON.parse(m.data);
    } catch (e) {
      return;
    }
    if (current && current.onEvent) current.onEvent(ev);
  });
  socket.addEventListener('close', () => {
    live.textContent = 'offline';
    live.className = 'live';
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 10000);
  });
}

// ---- theme ------------------------------------------------------------------------------

function applyTheme(t) {
  if (t) document.documentElement.dataset.theme = t;
  else delete document.documentElement.dataset.theme;
}
document.getElementById('theme').addEventListener('click', () => {
  const dark = document.documentElement.dataset.theme
    ? document.documentElement.dataset.theme === 'dark'
    : matchMedia('(prefers-color-scheme: dark)').matches;
  const t = dark ? 'light' : 'dark';
  localStorage.setItem('fednas-theme', t);
  applyTheme(t);
  window.dispatchEvent(new Event('themechange'));
});
applyTheme(localStorage.getItem('fednas-theme'));

session().then((s) => {
  document.querySelectorAll('[data-admin]').forEach((n) => { n.hidden = s.role !== 'admin'; });
});
window.addEventListener('hashchange', route);
route();
connect();
export { api };

// fednas dashboard: lists the runs, charts the selected run's test accuracy per round and
// lists its rounds. The selected run is #run=ID in the URL, else the newest run. While that
// run is "running" the page polls every 2 s, fetching only the rounds it has not seen
// (?since=last); otherwise it looks for new runs every 10 s.
// No libraries and no inline code: the page is served with a CSP of script-src 'self'.
'use strict';

(function () {
  const POLL_LIVE_MS = 2000;
  const POLL_IDLE_MS = 10000;
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const $ = (id) => document.getElementById(id);

  const state = {
    runs: [],
    selected: null, // run id shown below the list
    rounds: [], // rounds of the selected run, in order
    last: 0, // highest round number loaded
    gen: 0, // bumped on every selection change; stale responses are dropped
    timer: 0,
    busy: false,
    again: false,
  };

  // ---- formatting -------------------------------------------------------------------

  const isNum = (v) => typeof v === 'number' && isFinite(v);
  const pct = (v, d) => (isNum(v) ? (v * 100).toFixed(d === undefined ? 2 : d) + '%' : '–');
  const fixed = (v, d) => (isNum(v) ? v.toFixed(d) : '–');
  function seconds(v) {
    if (!isNum(v)) return '–';
    if (v < 60) return v.toFixed(v < 10 ? 2 : 1) + ' s';
    const m = Math.floor(v / 60);
    return m + ' min ' + Math.round(v - m * 60) + ' s';
  }
  function when(t) {
    if (!isNum(t)) return '–';
    return new Date(t * 1000).toLocaleString(undefined, {
      month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
    });
  }
  const statusClass = (s) => 'badge st-' + String(s || '').replace(/[^a-z]/g, '');

  // ---- data -------------------------------------------------------------------------

  async function getJSON(url) {
    const r = await fetch(url, { cache: 'no-store', headers: { Accept: 'application/json' } });
    let body = null;
    try {
      body = await r.json();
    } catch (e) {
      body = null;
    }
    if (!r.ok) throw new Error((body && body.error) || r.status + ' ' + r.statusText);
    return body;
  }

  function hashRun() {
    const m = /(?:^#|&)run=(\d+)(?:&|$)/.exec(location.hash);
    return m ? Number(m[1]) : null;
  }

  const currentRun = () => state.runs.find((r) => r.id === state.selected);

  function select(id) {
    if (id === state.selected) return;
    state.selected = id;
    state.rounds = [];
    state.last = 0;
    state.gen++;
  }

  async function refresh() {
    if (state.busy) {
      state.again = true;
      return;
    }
    clearTimeout(state.timer);
    if (document.hidden) {
      schedule();
      return;
    }
    state.busy = true;
    try {
      const runs = await getJSON('api/runs');
      state.runs = Array.isArray(runs) ? runs : [];
      const pinned = hashRun();
      select(pinned !== null ? pinned : state.runs.length ? state.runs[0].id : null);
      renderRuns();
      const id = state.selected;
      const gen = state.gen;
      if (id !== null && currentRun()) {
        const fresh = await getJSON('api/runs/' + id + '/rounds?since=' + state.last);
        if (gen === state.gen && Array.isArray(fresh)) {
          for (const r of fresh) {
            if (r.round > state.last) {
              state.rounds.push(r);
              state.last = r.round;
            }
          }
        }
      }
      renderRun();
      const run = currentRun();
      const live = run && run.status === 'running';
      setStatus((live ? 'live · ' : '') + 'updated ' + new Date().toLocaleTimeString(), live ? 'live' : '');
    } catch (e) {
      setStatus('cannot reach the server: ' + e.message + ' (retrying)', 'error');
    } finally {
      state.busy = false;
      if (state.again) {
        state.again = false;
        setTimeout(refresh, 0);
      } else {
        schedule();
      }
    }
  }

  function schedule() {
    clearTimeout(state.timer);
    const run = currentRun();
    state.timer = setTimeout(refresh, run && run.status === 'running' ? POLL_LIVE_MS : POLL_IDLE_MS);
  }

  function setStatus(text, cls) {
    const s = $('status');
    s.textContent = text;
    s.className = 'status' + (cls ? ' ' + cls : '');
  }

  // ---- runs list ----------------------------------------------------------------------

  function cell(tr, text, cls) {
    const td = document.createElement('td');
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function renderRuns() {
    const tbody = $('runs').tBodies[0];
    const focused = document.activeElement && document.activeElement.dataset
      ? document.activeElement.dataset.run : undefined;
    tbody.replaceChildren();
    for (const r of state.runs) {
      const tr = document.createElement('tr');
      tr.dataset.run = String(r.id);
      tr.tabIndex = 0;
      if (r.id === state.selected) {
        tr.className = 'selected';
        tr.setAttribute('aria-selected', 'true');
      }
      cell(tr, '#' + r.id);
      cell(tr, r.experiment || '–');
      const badge = document.createElement('span');
      badge.className = statusClass(r.status);
      badge.textContent = r.status || '?';
      cell(tr, '').appendChild(badge);
      cell(tr, (r.rounds_done || 0) + '/' + (r.rounds_planned || 0), 'num');
      cell(tr, pct(r.best_accuracy), 'num');
      cell(tr, when(r.started_at));
      tbody.appendChild(tr);
      if (focused === tr.dataset.run) tr.focus();
    }
    $('runs-empty').hidden = state.runs.length > 0;
  }

  function openRow(ev) {
    const tr = ev.target.closest('tr[data-run]');
    if (!tr) return;
    location.hash = 'run=' + tr.dataset.run;
  }

  // ---- selected run ---------------------------------------------------------------------

  function renderRun() {
    const section = $('run');
    const run = currentRun();
    if (state.selected === null) {
      section.hidden = true;
      return;
    }
    section.hidden = false;
    if (!run) {
      $('run-title').textContent = 'Run #' + state.selected;
      $('run-meta').textContent = 'There is no run #' + state.selected + ' in this store.';
      $('run-message').hidden = true;
      $('rounds').tBodies[0].replaceChildren();
      drawChart([]);
      return;
    }
    $('run-title').textContent = 'Run #' + run.id + ' · ' + (run.experiment || '');
    const parts = [
      run.status,
      'round ' + (run.rounds_done || 0) + ' of ' + (run.rounds_planned || 0),
      (run.clients_planned || 0) + ' clients',
      'best ' + pct(run.best_accuracy),
      'started ' + when(run.started_at),
    ];
    if (isNum(run.ended_at)) parts.push('ended ' + when(run.ended_at));
    $('run-meta').textContent = parts.join(' · ');
    const msg = $('run-message');
    msg.hidden = !run.message;
    msg.textContent = run.message || '';

    const tbody = $('rounds').tBodies[0];
    tbody.replaceChildren();
    for (let i = state.rounds.length - 1; i >= 0; i--) { // newest first
      const r = state.rounds[i];
      const tr = document.createElement('tr');
      cell(tr, String(r.round), 'num');
      cell(tr, pct(r.test_accuracy), 'num');
      cell(tr, fixed(r.test_loss, 4), 'num');
      const p = cell(tr, (r.participants ?? '–') + '/' + (r.selected ?? '–'), 'num');
      if (r.dropped) p.title = r.dropped + ' dropped';
      cell(tr, seconds(r.duration), 'num');
      tbody.appendChild(tr);
    }
    drawChart(state.rounds);
  }

  // ---- chart ------------------------------------------------------------------------------

  function svg(name, attrs, text) {
    const e = document.createElementNS(SVG_NS, name);
    for (const k of Object.keys(attrs)) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // 1, 2 or 5 times a power of ten, so that span/step is about count.
  function niceStep(span, count) {
    const raw = span / Math.max(1, count);
    if (!(raw > 0)) return 1;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
  }

  function drawChart(rounds) {
    const el = $('chart');
    const W = Math.max(260, Math.round(el.getBoundingClientRect().width) || 600);
    const H = W < 480 ? 200 : 260;
    el.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    el.setAttribute('height', String(H));
    el.replaceChildren();

    const pts = rounds.filter((r) => isNum(r.test_accuracy));
    if (!pts.length) {
      el.appendChild(svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle' },
        rounds.length ? 'no test accuracy recorded yet' : 'no rounds yet'));
      return;
    }
    const m = { l: 54, r: 14, t: 12, b: 40 };
    const pw = W - m.l - m.r;
    const ph = H - m.t - m.b;

    // x: round numbers; y: accuracy, zoomed to the data on a 1-2-5 grid.
    let x0 = rounds[0].round;
    let x1 = rounds[rounds.length - 1].round;
    if (x1 <= x0) {
      x0 -= 0.5;
      x1 += 0.5;
    }
    let lo = pts.reduce((a, r) => Math.min(a, r.test_accuracy), Infinity);
    let hi = pts.reduce((a, r) => Math.max(a, r.test_accuracy), -Infinity);
    const inUnit = lo >= 0 && hi <= 1;
    if (hi - lo < 0.01) {
      lo -= 0.005;
      hi += 0.005;
    }
    const ys = niceStep(hi - lo, 4);
    lo = Math.floor(lo / ys) * ys;
    hi = Math.ceil(hi / ys) * ys;
    if (inUnit) {
      lo = Math.max(0, lo);
      hi = Math.min(1, hi);
    }
    if (hi <= lo) hi = lo + ys;
    const X = (v) => m.l + ((v - x0) / (x1 - x0)) * pw;
    const Y = (v) => m.t + (1 - (v - lo) / (hi - lo)) * ph;

    const g = svg('g', {});
    const dec = ys * 100 >= 1 ? 0 : ys * 100 >= 0.1 ? 1 : 2;
    const ny = Math.round((hi - lo) / ys);
    for (let i = 0; i <= ny; i++) {
      const v = lo + i * ys;
      const y = Y(v).toFixed(1);
      g.appendChild(svg('line', { x1: m.l, x2: W - m.r, y1: y, y2: y, class: 'grid' }));
      g.appendChild(svg('text', { x: m.l - 6, y: y, dy: '0.32em', 'text-anchor': 'end' }, (v * 100).toFixed(dec) + '%'));
    }
    const xs = Math.max(1, Math.round(niceStep(x1 - x0, W < 480 ? 4 : 8)));
    for (let v = Math.ceil(x0 / xs) * xs; v <= x1; v += xs) {
      const x = X(v).toFixed(1);
      g.appendChild(svg('line', { x1: x, x2: x, y1: m.t + ph, y2: m.t + ph + 4, class: 'axis' }));
      g.appendChild(svg('text', { x: x, y: m.t + ph + 16, 'text-anchor': 'middle' }, String(v)));
    }
    g.appendChild(svg('line', { x1: m.l, x2: m.l, y1: m.t, y2: m.t + ph, class: 'axis' }));
    g.appendChild(svg('line', { x1: m.l, x2: W - m.r, y1: m.t + ph, y2: m.t + ph, class: 'axis' }));
    g.appendChild(svg('text', { x: m.l + pw / 2, y: H - 4, 'text-anchor': 'middle', class: 'title' }, 'round'));
    g.appendChild(svg('text', {
      x: -(m.t + ph / 2), y: 12, transform: 'rotate(-90)', 'text-anchor': 'middle', class: 'title',
    }, 'test accuracy'));

    // The line breaks where a round has no accuracy.
    let d = '';
    let pen = false;
    for (const r of rounds) {
      if (!isNum(r.test_accuracy)) {
        pen = false;
        continue;
      }
      d += (pen ? 'L' : 'M') + X(r.round).toFixed(1) + ',' + Y(r.test_accuracy).toFixed(1);
      pen = true;
    }
    g.appendChild(svg('path', { d: d, class: 'line' }));

    const best = pts.reduce((a, r) => (r.test_accuracy > a.test_accuracy ? r : a), pts[0]);
    const showDots = pts.length <= 120;
    for (const r of pts) {
      if (!showDots && r !== best) continue;
      const c = svg('circle', {
        cx: X(r.round).toFixed(1), cy: Y(r.test_accuracy).toFixed(1), r: r === best ? 4 : 2.5,
        class: r === best ? 'dot best' : 'dot',
      });
      c.appendChild(svg('title', {}, 'round ' + r.round + ': ' + pct(r.test_accuracy) + (r === best ? ' (best)' : '')));
      g.appendChild(c);
    }
    el.appendChild(g);
  }

  // ---- wiring -----------------------------------------------------------------------------

  function init() {
    const runs = $('runs');
    runs.addEventListener('click', openRow);
    runs.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' || ev.key === ' ') {
        ev.preventDefault();
        openRow(ev);
      }
    });
    window.addEventListener('hashchange', refresh);
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden) refresh();
    });
    let pending = false;
    window.addEventListener('resize', () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        if (!$('run').hidden) drawChart(state.rounds);
      });
    });
    refresh();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();

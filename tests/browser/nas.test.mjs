// Browser test of the dashboard's NAS pages: playwright-core drives Debian's /usr/bin/chromium
// against `fednas dashboard` over a store that real `fednas nas` searches write (tiny ones:
// Fashion-MNIST subsets of a few hundred images, a 3-layer macro space, 1 epoch).
//
//   node nas.test.mjs FEDNAS_BINARY OUTPUT_DIR
//
// Checks, each against the store read with sqlite3 (not against the page's own API): the Runs
// page marks the search and opens its NAS page; the candidates table sorts both ways by a
// clicked column and filters by accuracy and hash prefix (a bad filter shows the server's
// message); the Pareto chart has one point per candidate and exactly the non-dominated ones
// highlighted, against parameters and against FLOPs; clicking a point shows its architecture
// and its lineage up the parent chain; a search started while its page is open fills the table
// live (no reload); the comparison page overlays both searches' curves and fronts and shows
// each hypervolume; the NAS page weighs at most 300 KB; no console errors. Screenshots go to
// OUTPUT_DIR.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { loadPlaywright, CHROMIUM, CHROMIUM_ARGS } from './preflight.mjs';

const [fednasArg, outArg] = process.argv.slice(2);
const fednas = fednasArg && path.resolve(fednasArg);
if (!fednasArg || !outArg) {
  console.error('usage: node nas.test.mjs FEDNAS_BINARY OUTPUT_DIR');
  process.exit(2);
}
const chromium = await loadPlaywright(['/usr/bin/sqlite3']);
const out = path.resolve(outArg);
fs.mkdirSync(out, { recursive: true });
const work = fs.mkdtempSync('/tmp/fednas-browser-nas-');

const procs = [];
let failures = 0;
const t0 = Date.now();
const log = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);
function check(cond, what) {
  if (cond) log('ok  ', what);
  else { failures++; log('FAIL', what); }
}
const env = Object.assign({}, process.env, { FEDNAS_THREADS: '1' });
function start(name, args) {
  const logf = fs.openSync(path.join(work, name + '.log'), 'w');
  const p = spawn(fednas, args, { cwd: work, env, stdio: ['ignore', logf, logf] });
  procs.push(p);
  return p;
}
const sql = (q) => execFileSync('sqlite3', ['-batch', '-noheader', '-separator', '|', path.join(work, 'runs.db'), q],
  { encoding: 'utf8' }).trim();
const rows = (q) => (sql(q) ? sql(q).split('\n').map((l) => l.split('|')) : []);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function waitFor(fn, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await sleep(50);
  }
}
const sameSet = (a, b) => a.length === b.length && [...a].sort().join() === [...b].sort().join();

// The non-dominated seqs of [seq, accuracy, cost] rows (accuracy up, cost down), written here
// again so the page is checked against something it does not share.
function front(pts) {
  return pts.filter(([, a, x]) => !pts.some(([, b, y]) => b >= a && y <= x && (b > a || y < x))).map(([s]) => s);
}
// specs/nas.md's hypervolume: points (1 - acc, params / 1e5) against (1, 1).
function hypervolume(pts) {
  const p = pts.map(([, a, x]) => [1 - a, x / 1e5]).filter(([e, q]) => e < 1 && q < 1).sort((u, v) => u[0] - v[0]);
  let area = 0, low = 1;
  for (const [e, q] of p) if (q < low) { area += (1 - e) * (low - q); low = q; }
  return area;
}
// Points of a search: finished, not hash-cache copies, the longest evaluation of each id.
const points = (run, col) => rows(`SELECT seq, val_accuracy, ${col} FROM nas_candidates c WHERE run_id = ${run} AND
  status = 'done' AND cached_from IS NULL AND val_accuracy IS NOT NULL AND seq = (SELECT seq FROM nas_candidates d
  WHERE d.run_id = c.run_id AND d.cand_id = c.cand_id AND d.status = 'done' AND d.cached_from IS NULL
  ORDER BY budget DESC, seq DESC LIMIT 1)`).map(([s, a, x]) => [Number(s), Number(a), Number(x)]);

function experiment(name, seed, budget) {
  return JSON.stringify({
    name, seed,
    data: { dataset: 'fashion-mnist', train_subset: 512, val_subset: 256, test_subset: 256 },
    nas: {
      space: { type: 'macro', layers: 3, ops: ['conv3x3', 'sepconv3x3', 'maxpool3x3', 'identity'], widths: [4, 8], reductions: 1 },
      strategy: { name: 'evolution', population: 4, sample: 2 },
      budget, epochs: 1, workers: 1, retries: 0, top_k: 1, retrain_epochs: 1, batch_size: 32, lr: 0.05,
    },
  });
}

let browser;
try {
  // 1. A finished search, then the dashboard on its store.
  fs.writeFileSync(path.join(work, 'seeded.json'), experiment('nas-browser-seeded', 3, 12));
  execFileSync(fednas, ['nas', 'seeded.json', '--db', 'runs.db', '--quiet'], { cwd: work, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const run1 = Number(sql("SELECT run_id FROM nas_runs"));
  log('seeded search', run1, 'with', sql(`SELECT count(*) FROM nas_candidates WHERE run_id = ${run1}`), 'candidates');
  start('dashboard', ['dashboard', '--db', 'runs.db', '--http', '0']);
  const dashLog = path.join(work, 'dashboard.log');
  const [, loginUrl, port] = await waitFor(() =>
    /dashboard at (https:\/\/127\.0\.0\.1:(\d+)\/\?token=[0-9a-f]{64})/.exec(fs.readFileSync(dashLog, 'utf8')), 30000, 'the dashboard URL');
  const base = `https://127.0.0.1:${port}`;

  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  // 2. The NAS page as the first page of a fresh browser (nothing cached), and its weight.
  let weight = 0;
  const sizes = [];
  page.on('response', async (resp) => {
    try {
      const b = await resp.body();
      weight += b.length;
      sizes.push([new URL(resp.url()).pathname, b.length]);
    } catch (e) { /* redirects have no body */ }
  });
  await page.goto(loginUrl + '#/nas/' + run1);
  await page.waitForSelector('#nas-candidates tbody tr');
  await page.waitForSelector('#live.on', { timeout: 10000 });
  await page.waitForLoadState('networkidle');
  await waitFor(() => sizes.some(([p]) => p.endsWith('/nas/pareto')) && sizes.some(([p]) => p === '/vendor/uPlot.iife.min.js'), 5000, 'the page\'s files');
  const n1 = Number(sql(`SELECT count(*) FROM nas_candidates WHERE run_id = ${run1}`));
  const tableSeqs = () => page.$$eval('#nas-candidates tbody tr', (trs) => trs.map((t) => Number(t.dataset.seq)));
  check((await tableSeqs()).length === n1, `the table lists the ${n1} candidates`);
  fs.writeFileSync(path.join(out, 'nas-page-weight.txt'), sizes.map(([p, n]) => `${n}\t${p}`).join('\n') + `\n${weight}\ttotal\n`);
  check(weight / 1024 > 20 && weight / 1024 <= 300, `the NAS page weighs ${(weight / 1024).toFixed(1)} KB (at most 300 KB)`);

  await page.goto(base + '/#/');
  await page.waitForSelector(`#runs tr[data-run="${run1}"]`);
  const link = page.locator(`#runs tr[data-run="${run1}"] a`);
  check((await link.getAttribute('href')) === '#/nas/' + run1 && (await page.locator(`#runs tr[data-run="${run1}"] .kind-nas`).count()) === 1,
    'the Runs page marks the search NAS and links it to its NAS page');
  await page.click(`#runs tr[data-run="${run1}"] td:nth-child(2)`);
  await page.waitForSelector('#nas-candidates tbody tr');
  check(page.url().endsWith('#/nas/' + run1) || page.url().includes('#/nas/' + run1 + '?'), 'clicking the search\'s row opens its NAS page');

  // 3. Sorting: a click sorts by validation accuracy, best first; a second click reverses.
  const bySql = (dir) => sql(`SELECT seq FROM nas_candidates WHERE run_id = ${run1}
    ORDER BY val_accuracy IS NULL, val_accuracy ${dir}, seq`).split('\n').map(Number);
  await page.click('th[data-sort="val_accuracy"] button');
  await page.waitForSelector('th[data-sort="val_accuracy"][aria-sort="descending"]');
  await page.waitForFunction((w) => [...document.querySelectorAll('#nas-candidates tbody tr')].map((t) => t.dataset.seq).join() === w,
    bySql('DESC').join(), { timeout: 5000 }).catch(() => {});
  check((await tableSeqs()).join() === bySql('DESC').join(), 'a click on "val. acc." sorts best first');
  await page.click('th[data-sort="val_accuracy"] button');
  await page.waitForSelector('th[data-sort="val_accuracy"][aria-sort="ascending"]');
  await page.waitForFunction((w) => [...document.querySelectorAll('#nas-candidates tbody tr')].map((t) => t.dataset.seq).join() === w,
    bySql('ASC').join(), { timeout: 5000 }).catch(() => {});
  check((await tableSeqs()).join() === bySql('ASC').join(), 'a second click sorts worst first');
  check(page.url().includes('sort=val_accuracy') && page.url().includes('order=asc'), 'the sort is kept in the address');

  // 4. Filtering: by minimum accuracy (the median), by hash prefix; a bad prefix is refused.
  const accs = rows(`SELECT val_accuracy FROM nas_candidates WHERE run_id = ${run1} AND val_accuracy IS NOT NULL ORDER BY val_accuracy`).map((r) => Number(r[0]));
  const median = accs[Math.floor(accs.length / 2)];
  const wantAcc = Number(sql(`SELECT count(*) FROM nas_candidates WHERE run_id = ${run1} AND val_accuracy >= ${median}`));
  await page.fill('input[name=min_accuracy]', String(median * 100));
  await page.waitForFunction((n) => document.querySelectorAll('#nas-candidates tbody tr').length === n, wantAcc, { timeout: 5000 }).catch(() => {});
  const accShown = await page.$$eval('#nas-candidates tbody tr', (trs) => trs.length);
  check(accShown === wantAcc && wantAcc < n1, `min accuracy ${(median * 100).toFixed(2)}% leaves ${accShown} rows (store: ${wantAcc} of ${n1})`);
  await page.fill('input[name=min_accuracy]', '');
  const prefix = sql(`SELECT substr(hash, 1, 2) FROM nas_candidates WHERE run_id = ${run1} ORDER BY seq DESC LIMIT 1`);
  const wantHash = sql(`SELECT seq FROM nas_candidates WHERE run_id = ${run1} AND hash LIKE '${prefix}%'`).split('\n').map(Number);
  await page.fill('input[name=hash]', prefix);
  await page.waitForFunction((n) => document.querySelectorAll('#nas-candidates tbody tr').length === n, wantHash.length, { timeout: 5000 }).catch(() => {});
  check(sameSet(await tableSeqs(), wantHash), `hash prefix "${prefix}" leaves candidates ${wantHash.join(', ')}`);
  const expected = errors.length; // the browser logs the deliberate 400 below
  await page.fill('input[name=hash]', 'zz');
  await page.waitForSelector('p.message.failed:not([hidden])', { timeout: 5000 });
  check(/hash must be 1 to 64 lowercase hex digits/.test(await page.locator('p.message.failed').first().innerText()),
    'a bad hash prefix shows the server\'s 400 message');
  errors.push(...errors.splice(expected).filter((e) => !/status of 400/.test(e)));
  await page.fill('input[name=hash]', '');
  await page.waitForFunction((n) => document.querySelectorAll('#nas-candidates tbody tr').length === n, n1, { timeout: 5000 });

  // 5. The Pareto chart: every point, exactly the front filled, against params then FLOPs.
  for (const [x, col] of [['params', 'params'], ['flops', 'flops']]) {
    if (x !== 'params') await page.selectOption('#nas-x', x);
    const pts = points(run1, col), want = front(pts);
    await page.waitForFunction((c) => document.querySelector('.pareto-fig figcaption').textContent.includes(c),
      x === 'params' ? 'parameters' : 'FLOPs', { timeout: 5000 });
    const all = await page.$$eval('svg.pareto circle.pt', (cs) => cs.map((c) => Number(c.dataset.seq)));
    const lit = await page.$$eval('svg.pareto circle.pt.front', (cs) => cs.map((c) => Number(c.dataset.seq)));
    check(sameSet(all, pts.map((p) => p[0])), `Pareto (${x}): one point per evaluated candidate (${all.length})`);
    check(sameSet(lit, want) && want.length > 0 && want.length < all.length,
      `Pareto (${x}): the front ${lit.join(', ')} is highlighted (expected ${want.join(', ')})`);
    check((await page.locator('svg.pareto path.front-line').count()) === 1, `Pareto (${x}): the front line is drawn`);
  }
  await page.selectOption('#nas-x', 'params');

  // 6. A point with ancestors: its architecture and its lineage.
  // Preferably one with a grandparent, and alone at its spot on the chart.
  const child = Number(sql(`SELECT seq FROM nas_candidates c WHERE run_id = ${run1} AND status = 'done' AND cached_from IS NULL
    AND parent IS NOT NULL AND (SELECT parent FROM nas_candidates p WHERE p.run_id = c.run_id AND p.cand_id = c.parent LIMIT 1)
    IS NOT NULL ORDER BY (SELECT count(*) FROM nas_candidates o WHERE o.run_id = c.run_id AND o.status = 'done'
    AND o.cached_from IS NULL AND o.params = c.params AND o.val_accuracy = c.val_accuracy), seq LIMIT 1`) || sql(`SELECT seq FROM nas_candidates WHERE run_id = ${run1} AND status = 'done'
    AND cached_from IS NULL AND parent IS NOT NULL ORDER BY seq LIMIT 1`));
  const chain = [];
  for (let p = sql(`SELECT parent FROM nas_candidates WHERE run_id = ${run1} AND seq = ${child}`); p !== '';) {
    const [s, pp] = rows(`SELECT seq, parent FROM nas_candidates WHERE run_id = ${run1} AND cand_id = ${p} ORDER BY seq LIMIT 1`)[0];
    chain.push(Number(s));
    p = pp;
  }
  await page.waitForSelector(`svg.pareto circle.pt[data-seq="${child}"]`);
  // A real click where the point is not under another one; two candidates with the same
  // accuracy and size share a spot, and then only the top one can be hit with the mouse (the
  // table reaches the other), so the click goes to the element itself.
  try {
    await page.click(`svg.pareto circle.pt[data-seq="${child}"]`, { timeout: 3000 });
  } catch (e) {
    log('note', `point ${child} is covered by another point; clicking the element directly`);
    await page.locator(`svg.pareto circle.pt[data-seq="${child}"]`).dispatchEvent('click');
  }
  await page.waitForSelector('#nas-detail svg.arch');
  const head = await page.locator('#nas-detail h2').innerText();
  check(head.includes('#' + child), `clicking point ${child} opens candidate #${child}`);
  const arch = JSON.parse(sql(`SELECT arch FROM nas_candidates WHERE run_id = ${run1} AND seq = ${child}`));
  const computing = arch.layers.filter((l) => l.type !== 'batchnorm' && l.type !== 'relu').length;
  const boxes = await page.locator('#nas-detail svg.arch rect').count();
  const convs = arch.layers.filter((l) => l.type === 'conv2d').length;
  const label = await page.locator('#nas-detail svg.arch').getAttribute('aria-label');
  check(boxes === computing + 1 && (label.match(/conv /g) || []).length === convs && /linear → 10/.test(label),
    `the architecture is drawn: ${boxes} boxes for input + ${computing} layers (${convs} convolutions, linear → 10)`);
  const shown = await page.$$eval('#nas-lineage li button', (bs) => bs.map((b) => Number(b.textContent.slice(1))));
  check(chain.length > 0 && shown.join() === chain.join(), `the lineage of #${child} is ${shown.join(' ← ')} (store: ${chain.join(' ← ')})`);
  check((await page.locator(`#nas-candidates tr.sel[data-seq="${child}"]`).count()) === 1, 'the picked candidate is marked in the table');
  await page.screenshot({ path: path.join(out, 'nas.png'), fullPage: true });
  // An ancestor's button walks up the chain.
  await page.click('#nas-lineage li button >> nth=0');
  await page.waitForFunction((s) => document.querySelector('#nas-detail h2').textContent.includes('#' + s), chain[0], { timeout: 5000 });
  check(true, `the lineage's first button opens the parent #${chain[0]}`);

  // 7. Live: a search started now; its page fills in without a reload.
  fs.writeFileSync(path.join(work, 'live.json'), experiment('nas-browser-live', 8, 36));
  start('live', ['nas', 'live.json', '--db', 'runs.db', '--quiet']);
  const run2 = await waitFor(() => Number(sql(`SELECT max(run_id) FROM nas_runs`)) > run1 && Number(sql('SELECT max(run_id) FROM nas_runs')), 30000, 'the live search');
  await page.goto(base + '/#/nas/' + run2);
  await page.waitForSelector('.nas-progress');
  await page.evaluate(() => { window.__sameDocument = true; });
  const evaluated = () => page.locator('[data-fact=evaluated] dd').innerText().then((t) => Number(t.split('/')[0]));
  const before = await evaluated();
  await page.waitForFunction(() => Number(document.querySelector('#view').dataset.liveEvents) > 0, null, { timeout: 60000 });
  await waitFor(async () => (await evaluated()) > before, 60000, 'a candidate to finish on the open page');
  check(true, `a candidate finished while the page was open appears live (${before} -> ${await evaluated()} evaluated)`);
  await waitFor(() => sql(`SELECT status FROM runs WHERE id = ${run2}`) !== 'running', 120000, 'the live search to end');
  const fin2 = Number(sql(`SELECT count(*) FROM nas_candidates WHERE run_id = ${run2} AND status IN ('done', 'failed')`));
  await waitFor(async () => (await evaluated()) === fin2 &&
    (await page.$$eval('#nas-candidates tbody tr', (t) => t.length)) === Number(sql(`SELECT count(*) FROM nas_candidates WHERE run_id = ${run2}`)), 10000,
  'the page to show every candidate of the live search').catch(() => {});
  check((await evaluated()) === fin2, `after the search the page shows all ${fin2} evaluations, without a reload`);
  check(await page.evaluate(() => window.__sameDocument === true), 'the page was never reloaded');
  await page.waitForSelector('.facts .st-done', { timeout: 10000 }).catch(() => {});
  check((await page.locator('.facts .st-done').count()) === 1, 'the search shows done when it ends');
  check(Number(await page.locator('.pareto-fig').getAttribute('data-points')) === points(run2, 'params').length,
    'the live search\'s Pareto chart has every point');
  await page.screenshot({ path: path.join(out, 'nas-live.png'), fullPage: true });

  // 8. Both searches compared: overlaid curves and each hypervolume.
  await page.goto(base + `/#/nas?runs=${run1},${run2}`);
  await page.waitForSelector('#nas-searches tbody tr');
  await page.waitForFunction(() => Number((document.querySelector('figure.nas-progress') || {}).dataset?.points) > 0, null, { timeout: 10000 });
  const legend = await page.$$eval('figure.nas-progress ul.legend li', (ls) => ls.map((l) => l.dataset.series));
  check(legend.length === 2 && legend[0].startsWith('#' + run1) && legend[1].startsWith('#' + run2), 'the comparison overlays both searches');
  for (const r of [run1, run2]) {
    const shownHv = Number(await page.locator(`#nas-searches tr[data-run="${r}"] td.hv`).innerText());
    const want = hypervolume(points(r, 'params'));
    check(Math.abs(shownHv - want) < 1e-4, `search #${r}: hypervolume ${shownHv} (store: ${want.toFixed(4)})`);
  }
  await page.waitForSelector('figure.fronts-fig svg g.series');
  const frontSizes = await page.$$eval('figure.fronts-fig svg g.series', (gs) => gs.map((g) => Number(g.dataset.points)));
  const wantSizes = [run1, run2].map((r) => front(points(r, 'params')).length);
  check(frontSizes.join() === wantSizes.join(), `the fronts compared: ${frontSizes.join(' and ')} points (store: ${wantSizes.join(' and ')})`);
  await page.screenshot({ path: path.join(out, 'nas-compare.png'), fullPage: true });

  // 9. Dark theme and a phone.
  await page.goto(base + '/#/nas/' + run1 + '?sel=' + child);
  await page.waitForSelector('#nas-detail svg.arch');
  await page.click('#theme');
  await page.waitForTimeout(200);
  await page.screenshot({ path: path.join(out, 'nas-dark.png'), fullPage: true });
  await page.click('#theme');
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(out, 'nas-phone.png'), fullPage: true });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `the NAS page fits a phone's width (overflow ${overflow}px)`);
  check(errors.length === 0, 'no console errors' + (errors.length ? ': ' + errors.join(' | ') : ''));
  await ctx.close();
} catch (e) {
  failures++;
  log('FAIL', e.stack || String(e));
} finally {
  if (browser) await browser.close().catch(() => {});
  for (const p of procs) try { p.kill('SIGTERM'); } catch (e) { /* gone */ }
}
if (!failures) fs.rmSync(work, { recursive: true, force: true });
log(failures ? `${failures} check(s) failed (processes' files left in ${work})` : 'all checks passed', '- screenshots in', out);
process.exit(failures ? 1 : 0);

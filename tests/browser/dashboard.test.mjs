// Browser test of the fednas dashboard: playwright-core drives Debian's /usr/bin/chromium
// against a real `fednas server` (HTTPS, self-signed certificate, token login) while real
// `fednas client` agents run its rounds.
//
//   node dashboard.test.mjs FEDNAS_BINARY OUTPUT_DIR
//
// Checks: a wrong token and a missing session are refused; the printed URL logs in and the
// token leaves the address bar; the Run page's accuracy chart gains a point within 1 s of the
// round's commit (pushed over the WebSocket); every page opens without console errors; the
// Run page weighs at most 300 KB. Screenshots of every page (light, dark, phone) go to
// OUTPUT_DIR. Exit status 0 only when every check passed.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { loadPlaywright, CHROMIUM, CHROMIUM_ARGS } from './preflight.mjs';

const [fednasArg, outArg] = process.argv.slice(2);
const fednas = fednasArg && path.resolve(fednasArg);
if (!fednasArg || !outArg) {
  console.error('usage: node dashboard.test.mjs FEDNAS_BINARY OUTPUT_DIR');
  process.exit(2);
}
const chromium = await loadPlaywright();
const out = path.resolve(outArg);
// The processes work in a private folder (several builds may run this test at once); only the
// screenshots and the page-weight list go to OUTPUT_DIR.
fs.mkdirSync(out, { recursive: true });
const work = fs.mkdtempSync('/tmp/fednas-browser-');

const procs = [];
let failures = 0;
const t0 = Date.now();
const log = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);
function check(cond, what) {
  if (cond) log('ok  ', what);
  else { failures++; log('FAIL', what); }
}
function run(args, opts) {
  return execFileSync(fednas, args, Object.assign({ cwd: work, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }, opts));
}
function start(name, args) {
  const logf = fs.openSync(path.join(work, name + '.log'), 'w');
  const p = spawn(fednas, args, { cwd: work, stdio: ['ignore', logf, logf] });
  procs.push(p);
  return p;
}
const sql = (q) => execFileSync('sqlite3', ['-batch', '-noheader', path.join(work, 'runs.db'), q], { encoding: 'utf8' }).trim();
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

let browser;
try {
  // 1. A finished run with differential privacy (simulated clients), for the privacy chart,
  //    the Runs list and Compare.
  fs.writeFileSync(path.join(work, 'dp.json'), JSON.stringify({
    name: 'browser-dp', seed: 5, rounds: 4,
    data: { partition: { scheme: 'iid' } },
    model: { type: 'softmax' },
    clients: { count: 20, per_round: 10, simulate: { workers: 2 } },
    dp: { clip: 1.0, noise_multiplier: 1.0, delta: 1e-5, target_epsilon: 8 },
    train: { epochs: 1, batch_size: 10, lr: 0.1 },
  }));
  run(['run', 'dp.json', '--db', 'runs.db', '--http', 'off']);
  log('seeded a finished DP run');
  // 1b. A finished run with secure aggregation, for its survivors and phase-time charts.
  fs.writeFileSync(path.join(work, 'sa.json'), JSON.stringify({
    name: 'browser-secagg', seed: 9, rounds: 2,
    data: { partition: { scheme: 'iid' } },
    model: { type: 'softmax' },
    clients: { count: 30, per_round: 6, simulate: { workers: 2 } },
    secure_aggregation: { mode: 'secagg', clip: 10.0 },
    train: { epochs: 1, batch_size: 32, lr: 0.05 },
  }));
  run(['run', 'sa.json', '--db', 'runs.db', '--http', 'off']);
  log('seeded a finished secure-aggregation run');

  // 2. A live server that waits for two sites.
  fs.writeFileSync(path.join(work, 'live.json'), JSON.stringify({
    name: 'browser-live', seed: 3, rounds: 3,
    data: { partition: { scheme: 'iid' } },
    model: { type: 'mlp', hidden: [32] },
    clients: { count: 2 },
    train: { epochs: 1, batch_size: 32, lr: 0.05 },
    server: { round_timeout: 120, register_timeout: 120 },
  }));
  run(['keys', 'init', 'keys']);
  for (const s of ['a', 'b']) run(['keys', 'site', 'keys', 'site-' + s]);
  // The dashboard as its own process (`fednas dashboard`), so it outlives the run; the server
  // writes the same store with its own dashboard off.
  start('dashboard', ['dashboard', '--db', 'runs.db', '--http', '0']);
  const dashLog = path.join(work, 'dashboard.log');
  const [, loginUrl, port] = await waitFor(() =>
    /dashboard at (https:\/\/127\.0\.0\.1:(\d+)\/\?token=[0-9a-f]{64})/.exec(fs.readFileSync(dashLog, 'utf8')), 30000, 'the dashboard URL');
  const [, viewerUrl] = await waitFor(() =>
    /viewers: (https:\/\/127\.0\.0\.1:\d+\/\?token=[0-9a-f]{64})/.exec(fs.readFileSync(dashLog, 'utf8')), 30000, 'the viewer URL');
  start('server', ['server', 'live.json', '--keys', 'keys', '--bind', 'tcp://127.0.0.1:*', '--db', 'runs.db', '--http', 'off']);
  const serverLog = path.join(work, 'server.log');
  const runId = (await waitFor(() => /starting run (\d+)/.exec(fs.readFileSync(serverLog, 'utf8')), 30000, 'the run id'))[1];
  const ep = await waitFor(() => (/tcp:\/\/127\.0\.0\.1:\d+/.exec(fs.readFileSync(serverLog, 'utf8')) || [])[0], 30000, 'the endpoint');
  const base = `https://127.0.0.1:${port}`;
  log('dashboard', base, 'run', runId);

  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });

  // 3. Refusals, in a context of their own.
  {
    const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await ctx.newPage();
    let r = await page.goto(base + '/?token=' + '0'.repeat(64));
    check(r.status() === 401, 'a wrong token gets 401');
    check(await page.locator('input[name=token]').count() === 1, 'a wrong token shows the login form');
    check(/wrong access token/.test(await page.locator('.why').innerText()), 'the login form says the token was wrong');
    check(await page.evaluate(() => getComputedStyle(document.querySelector('main.login')).borderTopStyle === 'solid'),
      'the login page is styled (login.css is served before login)');
    check((await ctx.cookies()).length === 0, 'a wrong token sets no cookie');
    r = await page.goto(base + '/#/run/' + runId);
    check(r.status() === 401 && (await page.content()).includes('name="token"'), 'no cookie: the page is the login form');
    r = await ctx.request.get(base + '/api/runs');
    check(r.status() === 401, 'no cookie: the API answers 401');
    r = await ctx.request.post(base + '/api/runs', { data: { name: 'x' } });
    check(r.status() === 401, 'no cookie: launching answers 401');
    await page.screenshot({ path: path.join(out, 'login.png') });
    await ctx.close();
  }

  // 4. Log in with the printed URL and watch the live run.
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  let weight = 0;
  const sizes = [];
  page.on('response', async (resp) => {
    try {
      const b = await resp.body();
      weight += b.length;
      sizes.push([new URL(resp.url()).pathname, b.length]);
    } catch (e) { /* redirects have no body */ }
  });
  await page.goto(loginUrl + '#run=' + runId); // what `fednas run` prints
  await page.waitForSelector('figure.chart');
  check(!page.url().includes('token='), 'the token leaves the address bar after login');
  check(page.url().endsWith('#run=' + runId) || page.url().endsWith('#/run/' + runId), 'the login keeps the #run fragment');
  const cookies = await ctx.cookies();
  const sc = cookies.find((c) => c.name.startsWith('fednas_session_'));
  check(sc && sc.httpOnly && sc.secure && sc.sameSite === 'Strict', 'the session cookie is HttpOnly, Secure, SameSite=Strict');
  await page.waitForSelector('#live.on', { timeout: 10000 });
  check(true, 'the WebSocket is connected');
  await page.waitForTimeout(300);
  const kb = weight / 1024;
  check(kb <= 300, `the Run page weighs ${kb.toFixed(1)} KB (at most 300 KB)`);
  fs.writeFileSync(path.join(out, 'run-page-weight.txt'), sizes.map(([p, n]) => `${n}\t${p}`).join('\n') + `\n${weight}\ttotal\n`);
  const points = () => page.locator('figure.chart').first().getAttribute('data-points');
  check((await points()) === '0', 'the accuracy chart starts empty');
  await page.waitForFunction(() => /waiting for sites/.test(document.querySelector('.facts .phase').textContent), null, { timeout: 10000 });
  check(true, 'the Run page shows the server waiting for sites');
  await page.goto(base + '/#/');
  await page.waitForFunction((id) => /waiting for sites/.test((document.querySelector(`#runs tr[data-run="${id}"] .phase`) || {}).textContent),
    runId, { timeout: 10000 });
  check(true, 'the Runs page shows the live run\'s phase');
  await page.goto(base + '/#/run/' + runId);
  await page.waitForSelector('figure.chart[data-points="0"]');
  await page.screenshot({ path: path.join(out, 'run-waiting.png'), fullPage: true });

  for (const [i, s] of ['a', 'b'].entries())
    start('client-' + s, ['client', '--connect', ep, '--kit', 'keys/sites/site-' + s, '--shard', `${i}/2`, '--seed', '3']);
  // The first round's commit: its ended_at in the store against the moment the chart shows it.
  // (Rounds of this tiny model take a fraction of a second: the chart may gain two at once.)
  await page.waitForFunction(() => Number(document.querySelector('figure.chart').dataset.points) >= 1, null, { timeout: 120000, polling: 20 });
  const shownAt = Date.now() / 1000;
  const ended = Number(sql(`select ended_at from rounds where run_id = ${runId} and round = 1`));
  const lag = shownAt - ended;
  check(lag >= 0 && lag <= 1.0, `the chart gained round 1 ${lag.toFixed(3)} s after the round ended (at most 1 s)`);
  await page.waitForFunction(() => document.querySelector('figure.chart').dataset.points === '3', null, { timeout: 60000 });
  const chartByTitle = (title) => page.evaluate((t) => {
    const f = [...document.querySelectorAll('figure.chart')].find((x) => x.querySelector('figcaption').textContent === t);
    return f ? { hidden: f.hidden, points: f.dataset.points } : null;
  }, title);
  await page.waitForFunction(() => [...document.querySelectorAll('figure.chart')].some((x) =>
    x.querySelector('figcaption').textContent === 'Round time by phase' && x.dataset.points === '3'), null, { timeout: 10000 });
  check(true, 'the round-time-by-phase chart has the three rounds');
  const sa = await chartByTitle('Secure aggregation: sites left after each phase');
  check(sa && sa.hidden, 'a run without secure aggregation hides its charts');
  await waitFor(() => sql(`select status from runs where id = ${runId}`) === 'done', 30000, 'the run to finish');
  await page.waitForSelector('.facts .st-done', { timeout: 5000 });
  check(true, 'the Run page shows the run done without a reload');
  await page.screenshot({ path: path.join(out, 'run.png'), fullPage: true });

  // 5. Every page, with screenshots; no console errors anywhere.
  const dpRun = sql("select r.id from runs r join experiments e on e.id = r.experiment_id where e.name = 'browser-dp'");
  const saRun = sql("select r.id from runs r join experiments e on e.id = r.experiment_id where e.name = 'browser-secagg'");
  const pages = [
    ['runs', '#/', '#runs tbody tr'],
    ['run-dp', '#/run/' + dpRun, 'figure.chart[data-points="4"]'],
    ['run-secagg', '#/run/' + saRun, 'figure.chart[data-points="2"]'],
    ['clients', '#/clients/' + runId, '#clients tbody tr'],
    ['compare', `#/compare?runs=${runId},${dpRun}`, 'figure.chart[data-points]'],
    ['launch', '#/launch', '#config'],
  ];
  for (const [name, hash, sel] of pages) {
    await page.goto(base + '/' + hash);
    await page.waitForSelector(sel, { timeout: 10000 });
    await page.waitForTimeout(200);
    await page.screenshot({ path: path.join(out, name + '.png'), fullPage: true });
    check(true, 'page ' + name + ' opened');
  }
  await page.goto(base + '/#/');
  await page.waitForSelector('#runs tbody tr');
  check((await page.locator('#runs tbody tr').count()) === 3, 'the Runs page lists the three runs');
  await page.goto(base + '/#/run/' + saRun);
  await page.waitForFunction(() => [...document.querySelectorAll('figure.chart')].some((x) =>
    x.querySelector('figcaption').textContent === 'Secure aggregation: sites left after each phase' && !x.hidden && x.dataset.points === '2'),
  null, { timeout: 10000 });
  check(true, 'a secure-aggregation run shows its survivors per phase');
  await page.goto(base + '/#/launch');
  const expected = errors.length; // the browser logs the deliberate 422 below as an error
  await page.fill('#config', '{"name": "bad", "rounds": "many"}');
  await page.click('form.launch button[type=submit]');
  await page.waitForSelector('form.launch .error', { timeout: 15000 });
  const launchErr = await page.locator('form.launch').innerText();
  check(/exited/.test(launchErr) && /rounds/.test(launchErr), 'launching a bad config shows fednas\'s error');
  await page.screenshot({ path: path.join(out, 'launch-error.png'), fullPage: true });
  errors.push(...errors.splice(expected).filter((e) => !/status of 422/.test(e)));

  // Dark theme and a phone.
  await page.goto(base + '/#/run/' + dpRun);
  await page.waitForSelector('figure.chart[data-points="4"]');
  await page.click('#theme');
  await page.waitForTimeout(200);
  await page.screenshot({ path: path.join(out, 'run-dark.png'), fullPage: true });
  await page.click('#theme');
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(out, 'run-phone.png'), fullPage: true });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `the Run page fits a phone's width (overflow ${overflow}px)`);

  // The viewer link reads but cannot launch.
  {
    const vctx = await browser.newContext({ ignoreHTTPSErrors: true });
    const vpage = await vctx.newPage();
    vpage.on('console', (m) => { if (m.type() === 'error') errors.push('viewer: ' + m.text()); });
    await vpage.goto(viewerUrl);
    await vpage.waitForSelector('#runs tbody tr');
    check(await vpage.locator('[data-nav=launch]').isHidden(), 'the viewer sees no Launch page');
    const r = await vctx.request.post(base + '/api/runs/' + runId + '/resume', { headers: { 'X-CSRF-Token': 'x' } });
    check(r.status() === 403, 'the viewer cannot resume a run (403)');
    await vctx.close();
  }
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

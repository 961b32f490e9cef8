// Browser test of a new user's first minutes: `fednas run` at a terminal, as `make demo` runs
// it (script(1) gives it one), a short version of experiments/quickstart.json; the LAST link
// it printed is opened in Debian's /usr/bin/chromium through playwright-core, after the run
// has ended.
//
//   node demo_link.test.mjs FEDNAS_BINARY SOURCE_DIR OUTPUT_DIR
//
// Checks: the last line is a link that says the dashboard stays up until Ctrl-C; the link logs
// in and opens that run's page, done, with its accuracy and loss charts holding every round;
// the accuracy chart's series are drawn in distinct colours (pixels of each legend colour on
// the canvas, none of them black), its legend names test, train and best, and its y axis fits
// the data instead of spanning 0..1; SIGINT then stops the dashboard and the process exits 0.
// Exit status 0 only when every check passed, 77 when playwright-core, chromium or script(1) is
// missing.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { loadPlaywright, CHROMIUM, CHROMIUM_ARGS } from './preflight.mjs';

const [fednasArg, srcArg, outArg] = process.argv.slice(2);
if (!fednasArg || !srcArg || !outArg) {
  console.error('usage: node demo_link.test.mjs FEDNAS_BINARY SOURCE_DIR OUTPUT_DIR');
  process.exit(2);
}
const fednas = path.resolve(fednasArg);
const chromium = await loadPlaywright(['/usr/bin/script']);
const out = path.resolve(outArg);
fs.mkdirSync(out, { recursive: true });
const work = fs.mkdtempSync('/tmp/fednas-demo-');

let failures = 0;
const t0 = Date.now();
const log = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);
function check(cond, what) {
  if (cond) log('ok  ', what);
  else { failures++; log('FAIL', what); }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sql = (q) => execFileSync('sqlite3', ['-batch', '-noheader', path.join(work, 'demo.db'), q], { encoding: 'utf8' }).trim();
const alive = (pid) => { try { process.kill(pid, 0); return true; } catch (e) { return false; } };

// The quickstart, shortened: the same data, model family and strategy, fewer rounds and sites.
const quick = JSON.parse(fs.readFileSync(path.join(path.resolve(srcArg), 'experiments', 'quickstart.json'), 'utf8'));
Object.assign(quick, { name: 'demo-link', rounds: 3, model: { type: 'mlp', hidden: [32] } });
quick.clients = { count: 3 };
fs.writeFileSync(path.join(work, 'demo.json'), JSON.stringify(quick, null, 2));

let browser, term, pid = 0;
let text = '';
try {
  // A free port (--http 0) and a store of its own; everything else as `make demo` does it.
  const cmd = `'${fednas}' run demo.json --db demo.db --http 0`;
  // timeout(1) bounds it: were this test killed, the dashboard would otherwise wait for a Ctrl-C
  // that never comes; when script(1) goes, the terminal's hang-up ends `fednas run` too.
  term = spawn('/usr/bin/timeout', ['300', '/usr/bin/script', '-qfec', cmd, '/dev/null'], { cwd: work, stdio: ['ignore', 'pipe', 'pipe'] });
  term.stdout.on('data', (d) => { text += d.toString(); });
  term.stderr.on('data', (d) => { text += d.toString(); });
  const exited = new Promise((r) => term.on('exit', (code, sig) => r(sig ? 128 : code)));
  const end = Date.now() + 300000;
  while (!/Ctrl-C stops it/.test(text)) {
    if (Date.now() > end || term.exitCode !== null) throw new Error('no "Ctrl-C stops it" line; output:\n' + text);
    await sleep(100);
  }
  fs.writeFileSync(path.join(out, 'demo-output.txt'), text);
  const lines = text.replace(/\r/g, '').split('\n').filter((l) => l.trim());
  const last = lines[lines.length - 1];
  check(/^dashboard: https:\/\/\S+ \(still up after the run; Ctrl-C stops it\)$/.test(last), 'the last line is the dashboard link, up until Ctrl-C: ' + last);
  const linksIn = (ls) => ls.flatMap((l) => [...l.matchAll(/https?:\/\/[^\s)]+/g)].map((m) => m[0]));
  const links = linksIn(lines);
  check(links.length >= 2, `fednas printed ${links.length} links (the live one at start, the last one at the end)`);
  check(links.every((l) => /[?&]token=[0-9a-f]{64}/.test(l)), 'every link printed (log lines included) carries the access token: ' + links.filter((l) => !/[?&]token=/.test(l)).join(' '));
  const link = links[links.length - 1];
  log('last link', link.replace(/token=[0-9a-f]+/, 'token=…'));
  pid = Number(sql('select pid from runs where id = 1'));
  check(sql('select status from runs where id = 1') === 'done', 'the run is done in the store');
  await sleep(1000); // the dashboard must stay up after the run, not just a moment longer

  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  const resp = await page.goto(link);
  check(resp && resp.ok(), 'the last link opens (HTTP ' + (resp && resp.status()) + ')');
  await page.waitForSelector('figure.chart[data-points="3"]', { timeout: 20000 });
  check(/Run #1\b/.test(await page.locator('h1').innerText()), 'it opens the run\'s page (Run #1)');
  await page.waitForSelector('.facts .st-done', { timeout: 5000 });
  check(true, 'the run page shows the run done');
  const byTitle = (t) => page.locator('figure.chart', { has: page.locator('figcaption', { hasText: new RegExp('^' + t + '$') }) });
  for (const t of ['Accuracy', 'Loss'])
    check((await byTitle(t).getAttribute('data-points')) === '3', `the ${t} chart has the 3 rounds`);
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(out, 'demo-run.png'), fullPage: true });

  const acc = byTitle('Accuracy');
  const legend = await acc.locator('ul.legend li').evaluateAll((lis) => lis.map((li) => [li.dataset.series, li.dataset.color]));
  check(legend.map((l) => l[0]).join(',') === 'test,train,best', 'the accuracy legend names test, train, best: ' + legend.map((l) => l[0]));
  const colours = legend.map((l) => l[1]);
  check(colours.length === 3 && new Set(colours).size === 3 && colours.every((c) => /^#[0-9a-f]{6}$/.test(c)), 'each accuracy series has its own colour: ' + colours.join(' '));
  // The canvas itself: pixels of each colour (lines are anti-aliased: near enough counts).
  const counts = await acc.locator('canvas').evaluate((cv, cols) => {
    const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
    const rgb = cols.map((c) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16)));
    const n = rgb.map(() => 0);
    let black = 0;
    for (let p = 0; p < d.length; p += 4) {
      if (d[p + 3] < 200) continue;
      if (d[p] < 40 && d[p + 1] < 40 && d[p + 2] < 40) black++;
      rgb.forEach((c, k) => { if (Math.abs(d[p] - c[0]) + Math.abs(d[p + 1] - c[1]) + Math.abs(d[p + 2] - c[2]) < 60) n[k]++; });
    }
    return { n, black };
  }, colours);
  check(counts.n[0] >= 50 && counts.n[1] >= 50, `the test and train lines are drawn in their colours (${counts.n.join(', ')} pixels)`);
  check(counts.black < 20, `no series is drawn in black (${counts.black} black pixels)`);
  const ys = (await (await ctx.request.get(new URL('/api/runs/1/rounds', link).href)).json()).flatMap((r) => [r.test_accuracy, r.train_accuracy]).filter((v) => typeof v === 'number');
  const [ymin, ymax] = [Number(await acc.getAttribute('data-ymin')), Number(await acc.getAttribute('data-ymax'))];
  const lo = Math.min(...ys), hi = Math.max(...ys);
  log(`accuracy from ${lo.toFixed(4)} to ${hi.toFixed(4)}; y axis ${ymin.toFixed(4)}..${ymax.toFixed(4)}`);
  check(ymin <= lo && ymax >= hi && ymax <= 1 && ymin >= 0, 'the accuracy axis holds every point and stays inside 0..1');
  check(ymax - ymin <= 2 * (hi - lo) + 0.01, 'the accuracy axis fits the data (not 0..1)');
  check(errors.length === 0, 'no console errors' + (errors.length ? ': ' + errors.join(' | ') : ''));
  await ctx.close();

  // Ctrl-C (SIGINT) ends it, with the run's status.
  process.kill(pid, 'SIGINT');
  const code = await Promise.race([exited, sleep(15000).then(() => 'still running')]);
  check(code === 0, 'after SIGINT `fednas run` exits 0 (got ' + code + ')');
} catch (e) {
  failures++;
  log('FAIL', e.stack || String(e));
} finally {
  if (browser) await browser.close().catch(() => {});
  if (pid && alive(pid)) process.kill(pid, 'SIGTERM');
  if (term && term.exitCode === null) term.kill('SIGTERM');
}
if (failures) fs.writeFileSync(path.join(work, 'output.txt'), text);
else fs.rmSync(work, { recursive: true, force: true });
log(failures ? `${failures} check(s) failed (files left in ${work})` : 'all checks passed', '- screenshot in', out);
process.exit(failures ? 1 : 0);

// What every browser test needs before it starts: playwright-core as pinned in package-lock.json
// (scripts/setup.sh installs it with `npm ci`; nothing is installed at test time), a Node that
// its engines field accepts, and Debian's /usr/bin/chromium (never a downloaded browser).
// Missing pieces skip the test (exit 77, with the command that installs them); a Node too old for
// the installed playwright-core fails it with both versions named, rather than with whatever
// syntax or API error the import would raise.
import fs from 'node:fs';
import path from 'node:path';

export const CHROMIUM = '/usr/bin/chromium';
// Headless, and nothing the test did not ask for (no GPU, no background fetches).
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'];

export async function loadPlaywright(extraTools = []) {
  const here = path.dirname(new URL(import.meta.url).pathname);
  const pkg = path.join(here, 'node_modules', 'playwright-core', 'package.json');
  const missing = [pkg, CHROMIUM, ...extraTools].filter((p) => !fs.existsSync(p));
  if (missing.length) {
    console.error(`browser test skipped: missing ${missing.join(', ')}; run scripts/setup.sh (as root)`);
    process.exit(77);
  }
  const meta = JSON.parse(fs.readFileSync(pkg, 'utf8'));
  const want = /^>=\s*(\d+)/.exec((meta.engines && meta.engines.node) || '');
  const have = Number(process.versions.node.split('.')[0]);
  if (want && have < Number(want[1])) {
    console.error(`playwright-core ${meta.version} in tests/browser/node_modules needs Node ${meta.engines.node}, ` +
      `and this is Node ${process.versions.node}: run scripts/setup.sh, which installs the version pinned in ` +
      'tests/browser/package-lock.json');
    process.exit(1);
  }
  return (await import('playwright-core')).chromium;
}

// Shared pieces of the browser end-to-end tests (sessions.e2e.mjs, elevation.e2e.mjs,
// api_keys.e2e.mjs, passkeys.e2e.mjs, oauth.e2e.mjs): assertions and step reporting, the gateway process
// (config/dev.toml, or a config file of the test's own, on free loopback ports, a fresh data
// dir), headless Chromium instances with fresh profiles, signing in, reading the sessions page,
// and `runTest`, which runs one test and reports its result.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, '..', '..');
export const CONFIG = path.join(REPO_ROOT, 'config', 'dev.toml');
export const ARTIFACTS = path.join(HERE, 'artifacts');
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

export const EMAIL = 'demo@example.com';
export const PASSWORD = 'dalea-demo';
export const SESSION_COOKIE = 'dalea_session'; // [session] cookie_name in config/dev.toml
export const SIGNIN_PATH = '/.dalea/signin';
export const SESSIONS_PATH = '/.dalea/settings/security/sessions';

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
export const STEP_TIMEOUT_MS = 15_000;

// ---------------------------------------------------------------------------------------------
// small helpers

export class TestFailure extends Error {}

export function fail(message, details) {
  const extra = details === undefined ? '' : `\n    details: ${typeof details === 'string' ? details : JSON.stringify(details, null, 2).replace(/\n/g, '\n    ')}`;
  throw new TestFailure(message + extra);
}

export function check(condition, message, details) {
  if (!condition) fail(message, details);
}

export function equal(actual, expected, what) {
  if (actual !== expected) fail(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

let stepNo = 0;
export function ok(message) {
  stepNo += 1;
  console.log(`ok ${String(stepNo).padStart(2)} - ${message}`);
}

/** Runs a group of checks the rest of the test does not depend on: a failure is recorded, printed
 *  and fails the run at the end, but the remaining steps still run. */
const softFailures = [];
export function softly(what, fn) {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof TestFailure)) throw err;
    stepNo += 1;
    softFailures.push(`${what}: ${err.message}`);
    console.log(`not ok ${String(stepNo).padStart(2)} - ${what}: ${err.message.replace(/\n/g, '\n       ')}`);
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A free loopback TCP port: listen on port 0 and give it back. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export function canConnect(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    sock.once('connect', () => { sock.destroy(); resolve(true); });
    sock.once('error', () => resolve(false));
  });
}

// ---------------------------------------------------------------------------------------------
// the gateway process

const cleanups = []; // run in reverse order, always
const extraLogs = []; // { what, path }: printed (tail) with the gateway's when a test fails
let gateway = null; // { child, port, adminPort, logPath, dataDir, exited }
const browsers = []; // every launched browser, for the screenshots on failure

/** Registers `fn` (may be async) to run when the test ends, whatever the outcome; cleanups run
 *  in reverse order of registration, after the gateway is stopped. */
export function onCleanup(fn) {
  cleanups.push(fn);
}

/** Makes a failed test print the tail of the log at `logPath` (another process's), too. */
export function showLogOnFailure(what, logPath) {
  extraLogs.push({ what, path: logPath });
}

export function tail(file, lines = 40) {
  try {
    return fs.readFileSync(file, 'utf8').replace(/\x1b\[[0-9;]*m/g, '').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

async function startGatewayOnce(bin, logName, config) {
  const port = await freePort();
  let adminPort = await freePort();
  while (adminPort === port) adminPort = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dalea-e2e-data-'));
  cleanups.push(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const configPath = typeof config === 'function' ? await config({ port, adminPort }) : config;
  const logPath = path.join(ARTIFACTS, logName);
  const log = fs.openSync(logPath, 'w');
  const child = spawn(
    bin,
    ['serve', '--config', configPath, '--listen', `127.0.0.1:${port}`, '--admin-listen', `127.0.0.1:${adminPort}`, '--data-dir', dataDir],
    { cwd: REPO_ROOT, stdio: ['ignore', log, log], env: { ...process.env, NO_COLOR: '1' } },
  );
  fs.closeSync(log);
  let exited = null;
  child.on('exit', (code, signal) => { exited = { code, signal }; });
  child.on('error', (err) => { exited = { error: String(err) }; });
  const g = { child, port, adminPort, logPath, dataDir, exited: () => exited };

  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (exited) return { g, ready: false, why: `gateway exited early (${JSON.stringify(exited)})` };
    if (await canConnect(port)) {
      try {
        const r = await fetch(`http://127.0.0.1:${adminPort}/readyz`);
        if (r.ok) return { g, ready: true };
      } catch { /* admin listener not up yet */ }
    }
    await sleep(100);
  }
  return { g, ready: false, why: 'gateway did not listen within 20 s' };
}

/** Starts the gateway with config/dev.toml and a fresh data dir; its output goes to
 *  artifacts/<logName>. Returns { port, adminPort, logPath, dataDir, … } once it is ready.
 *  `config`: another config file, either its path or a function `({ port, adminPort }) => path`
 *  (may be async) for a config that must name the gateway's own port (e.g. `[oauth]
 *  public_url`); it is called again on each start attempt, with the new ports. */
export async function startGateway(bin, logName, { config = CONFIG } = {}) {
  // Ports come from "listen on 0, close": another process may grab one in between, so retry.
  for (let attempt = 1; attempt <= 3; attempt += 1) {
    const { g, ready, why } = await startGatewayOnce(bin, logName, config);
    gateway = g;
    if (ready) return g;
    await stopGateway();
    if (attempt === 3 || !g.exited()) fail(`could not start the gateway: ${why}\n--- gateway log (tail) ---\n${tail(g.logPath)}`);
  }
  return null;
}

async function stopGateway() {
  const g = gateway;
  if (!g || g.exited()) return;
  // SIGINT = pingora's fast shutdown (SIGTERM waits out the grace period).
  g.child.kill('SIGINT');
  const deadline = Date.now() + 5_000;
  while (!g.exited() && Date.now() < deadline) await sleep(50);
  if (!g.exited()) {
    g.child.kill('SIGKILL');
    while (!g.exited()) await sleep(50);
  }
}

// Last resort if the script dies in an unexpected way: never leave the gateway running.
process.on('exit', () => {
  if (gateway && !gateway.exited()) {
    try { gateway.child.kill('SIGKILL'); } catch { /* already gone */ }
  }
});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    console.error(`\nnot ok - interrupted by ${sig}`);
    process.exit(130);
  });
}

// ---------------------------------------------------------------------------------------------
// browsers

/** One Chromium instance with a fresh profile dir and a single page. */
export async function launch(name) {
  const profileDir = fs.mkdtempSync(path.join(os.tmpdir(), `dalea-e2e-chromium-${name}-`));
  cleanups.push(() => fs.rmSync(profileDir, { recursive: true, force: true }));
  const ctx = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1100, height: 800 },
    locale: 'en-US',
    timezoneId: 'UTC',
  });
  cleanups.push(() => ctx.close().catch(() => {}));
  ctx.setDefaultTimeout(STEP_TIMEOUT_MS);
  ctx.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
  // Each context must do everything in its one page, which carries the emulation. Any other page
  // (a popup, window.open) would present the real headless UA, so it fails the test.
  const unexpectedPages = [];
  ctx.on('page', (p) => unexpectedPages.push(p.url() || '(new page)'));
  const page = ctx.pages()[0] || (await ctx.newPage());
  if (process.env.E2E_TRACE) {
    ctx.on('request', (r) => console.log(`    [${name} ${new Date().toISOString().slice(17, 23)}] ${r.method()} ${r.url()}`));
  }
  const browser = { name, ctx, page, profileDir, unexpectedPages };
  browsers.push(browser);
  return browser;
}

export function pathAndQuery(u) {
  const url = new URL(u);
  return { path: url.pathname, rd: url.searchParams.get('rd'), url };
}

export async function sessionCookie(browser) {
  return (await browser.ctx.cookies()).find((c) => c.name === SESSION_COOKIE) || null;
}


/**
 * Opens `target` (default `/some/page`), lands on the sign-in page, signs in as the demo user,
 * lands back on `target` served by whoami. Returns the request headers the browser actually
 * sent with the sign-in POST.
 */
export async function signIn(browser, base, { rememberMe = false, onSigninPage, target = '/some/page' } = {}) {
  const { page } = browser;
  await page.goto(base + target);
  const landed = pathAndQuery(page.url());
  equal(landed.path, SIGNIN_PATH, `${browser.name}: anonymous GET ${target} should land on the sign-in page (URL ${page.url()})`);
  equal(landed.rd, target, `${browser.name}: rd= on the sign-in page`);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  if (onSigninPage) await onSigninPage();
  ok(`${browser.name}: GET ${target} → ${landed.url.pathname}${landed.url.search}`);

  await page.locator('input[name="email"]').fill(EMAIL);
  await page.locator('input[name="password"]').fill(PASSWORD);
  const remember = page.locator('input[type="checkbox"][name="remember_me"]');
  if (rememberMe) await remember.check();
  equal(await remember.isChecked(), rememberMe, `${browser.name}: remember me checkbox state`);

  const postSeen = page.waitForRequest((r) => r.method() === 'POST' && new URL(r.url()).pathname === SIGNIN_PATH);
  const backHome = page.waitForURL((u) => u.pathname === target);
  // exact: the page may also have "Sign in with <provider>" buttons.
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  const post = await postSeen;
  await backHome;
  const headers = await post.allHeaders();

  const text = await page.locator('body').innerText();
  check(text.includes(`Signed in as ${EMAIL}`), `${browser.name}: after sign-in, ${target} should be the whoami page saying "Signed in as ${EMAIL}"`, text.slice(0, 400));
  ok(`${browser.name}: signed in (remember me ${rememberMe ? 'on' : 'off'}) and back on ${target}: "Signed in as ${EMAIL}"`);
  return headers;
}

/** Everything the test needs from the rows of the sessions page. */
export async function readRows(page) {
  return page.locator('li.row[data-session-id]').evaluateAll((lis) =>
    lis.map((li) => {
      const device = li.querySelector('.device');
      const own = device ? [...device.childNodes].filter((n) => n.nodeType === Node.TEXT_NODE).map((n) => n.textContent).join('').trim() : null;
      const fields = {};
      for (const dt of li.querySelectorAll('dt')) {
        const dd = dt.nextElementSibling;
        fields[dt.textContent.trim()] = dd ? dd.textContent.replace(/\s+/g, ' ').trim() : null;
      }
      const time = li.querySelector('time');
      const x = li.querySelector('button.x');
      return {
        id: li.getAttribute('data-session-id'),
        device: own,
        deviceText: device ? device.textContent.trim() : null,
        thisIsYou: !!device && device.textContent.includes('This is you'),
        badges: device ? [...device.querySelectorAll('.badge')].map((b) => b.textContent.trim()) : [],
        fields,
        lastActiveDatetime: time && time.getAttribute('datetime'),
        lastActiveTitle: time && time.getAttribute('title'),
        x: x ? { label: x.getAttribute('aria-label'), text: x.textContent.trim(), visible: x.offsetWidth > 0 && x.offsetHeight > 0 } : null,
        formAction: x && x.form ? x.form.getAttribute('action') : null,
      };
    }));
}

// ---------------------------------------------------------------------------------------------
// running a test

/** Checks $DALEA_BIN, the config and Chromium; empties the artifacts this test writes.
 *  Returns the absolute path of the gateway binary. */
export function preflight(artifactNames) {
  const bin = process.env.DALEA_BIN;
  if (!bin) fail('DALEA_BIN is not set: point it at the dalea-gateway binary (e.g. $CARGO_TARGET_DIR/debug/dalea-gateway)');
  const binPath = path.resolve(bin);
  try {
    fs.accessSync(binPath, fs.constants.X_OK);
  } catch {
    fail(`DALEA_BIN=${bin} is not an executable file`);
  }
  check(fs.existsSync(CONFIG), `config not found: ${CONFIG}`);
  check(fs.existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (apt-get install chromium)`);
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  for (const f of artifactNames) fs.rmSync(path.join(ARTIFACTS, f), { force: true });
  return binPath;
}

/** The absolute path of a file in artifacts/. */
export function artifact(name) {
  return path.join(ARTIFACTS, name);
}

/** Saves a full-page screenshot of the browser's page as artifacts/<name>; returns its path
 *  relative to the repository root (for messages). */
export async function screenshot(browser, name) {
  await browser.page.screenshot({ path: artifact(name), fullPage: true });
  return path.relative(REPO_ROOT, artifact(name));
}

/**
 * Runs `run()` under a watchdog, always stops the gateway and closes the browsers, and exits:
 * 0 = pass; 1 = a check failed (printed with the gateway log's tail; each browser's page is
 * saved as artifacts/failure-<browser name>.png).
 */
export async function runTest(title, run, { watchdogMs = 180_000 } = {}) {
  const watchdog = setTimeout(() => {
    console.error(`not ok - the ${title} test did not finish within ${watchdogMs / 1000} s`);
    process.exit(1);
  }, watchdogMs);
  watchdog.unref();
  const started = Date.now();
  let failed = null;
  try {
    await run();
  } catch (err) {
    failed = err;
    for (const br of browsers) {
      await br.page.screenshot({ path: artifact(`failure-${br.name}.png`), fullPage: true }).catch(() => {});
    }
  } finally {
    await stopGateway().catch(() => {});
    for (const c of cleanups.reverse()) await c();
  }
  if (!failed && softFailures.length) {
    console.error(`\nFAIL ${title} e2e: ${softFailures.length} check(s) failed (the other steps passed):`);
    for (const f of softFailures) console.error(`  - ${f.split('\n')[0]}`);
    process.exit(1);
  }
  if (failed) {
    for (const f of softFailures) console.error(`(earlier failure) ${f.split('\n')[0]}`);
    console.error(`\nnot ok - ${failed instanceof TestFailure ? '' : 'error: '}${failed instanceof TestFailure ? failed.message : failed.stack || failed}`);
    if (gateway) console.error(`--- gateway log (tail; full log in ${path.relative(process.cwd(), gateway.logPath)}) ---\n${tail(gateway.logPath, 25)}`);
    for (const l of extraLogs) console.error(`--- ${l.what} log (tail; full log in ${path.relative(process.cwd(), l.path)}) ---\n${tail(l.path, 25)}`);
    if (browsers.length) {
      const shots = browsers.map((br) => path.relative(process.cwd(), artifact(`failure-${br.name}.png`)));
      console.error(`screenshots at failure: ${shots.join(', ')}`);
    }
    process.exit(1);
  }
  console.log(`\nPASS ${title} e2e (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  process.exit(0);
}

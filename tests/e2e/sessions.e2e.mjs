#!/usr/bin/env node
// End-to-end test of Settings → Security → Sessions in real headless Chromium.
//
// Starts the gateway binary given in $DALEA_BIN with config/dev.toml on free loopback ports and
// a fresh data dir, then drives two independent Chromium instances (two persistent contexts,
// each with its own fresh profile dir):
//   A: presents as "Chrome 131 on macOS 14" (frozen Mac UA + UA Client Hints via CDP), remember me on
//   B: presents as "Firefox 133 on Windows" (Firefox UA, no client hints), remember me off
// Both sign in as demo@example.com; A checks the sessions page (rows, order, badges, IP, method),
// signs B out with its ×, and B's very next navigation must land on the sign-in page with its
// session cookie cleared.
//
// Usage: DALEA_BIN=/path/to/dalea-gateway node sessions.e2e.mjs   (or ./run.sh, which installs
// the node packages first). Optional: CHROMIUM_PATH (default /usr/bin/chromium); E2E_TRACE=1
// prints every request each browser makes (not the favicon fetches, which Chromium makes from
// the browser process, so playwright does not see them; they do reach the gateway).
// Exit code 0 = pass; otherwise the failed checks are printed. Screenshots (sessions.png,
// sessions-after-revoke.png, failure-{A,B}.png) and the gateway log go to tests/e2e/artifacts/
// (gitignored).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, '..', '..');
const CONFIG = path.join(REPO_ROOT, 'config', 'dev.toml');
const ARTIFACTS = path.join(HERE, 'artifacts');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

const EMAIL = 'demo@example.com';
const PASSWORD = 'dalea-demo';
const SESSION_COOKIE = 'dalea_session'; // [session] cookie_name in config/dev.toml
const SIGNIN_PATH = '/.dalea/signin';
const SESSIONS_PATH = '/.dalea/settings/security/sessions';
const SESSIONS_API = '/.dalea/api/sessions';

const CHROME_MAC_UA =
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36';
const CHROME_BRANDS = [
  { brand: 'Google Chrome', version: '131' },
  { brand: 'Chromium', version: '131' },
  { brand: 'Not_A Brand', version: '24' },
];
const CHROME_MAC_METADATA = {
  brands: CHROME_BRANDS,
  fullVersionList: CHROME_BRANDS.map((b) => ({ brand: b.brand, version: b.version === '24' ? '24.0.0.0' : '131.0.6778.86' })),
  platform: 'macOS',
  platformVersion: '14.6.1',
  architecture: 'arm',
  model: '',
  mobile: false,
  bitness: '64',
  wow64: false,
};
const FIREFOX_WIN_UA = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0';

const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
const STEP_TIMEOUT_MS = 15_000;
const WATCHDOG_MS = 180_000;

// ---------------------------------------------------------------------------------------------
// small helpers

class TestFailure extends Error {}

function fail(message, details) {
  const extra = details === undefined ? '' : `\n    details: ${typeof details === 'string' ? details : JSON.stringify(details, null, 2).replace(/\n/g, '\n    ')}`;
  throw new TestFailure(message + extra);
}

function check(condition, message, details) {
  if (!condition) fail(message, details);
}

function equal(actual, expected, what) {
  if (actual !== expected) fail(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

let stepNo = 0;
function ok(message) {
  stepNo += 1;
  console.log(`ok ${String(stepNo).padStart(2)} - ${message}`);
}

/** Runs a group of checks the rest of the test does not depend on: a failure is recorded, printed
 *  and fails the run at the end, but the remaining steps still run. */
const softFailures = [];
function softly(what, fn) {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof TestFailure)) throw err;
    stepNo += 1;
    softFailures.push(`${what}: ${err.message}`);
    console.log(`not ok ${String(stepNo).padStart(2)} - ${what}: ${err.message.replace(/\n/g, '\n       ')}`);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A free loopback TCP port: listen on port 0 and give it back. */
function freePort() {
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

function canConnect(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    sock.once('connect', () => { sock.destroy(); resolve(true); });
    sock.once('error', () => resolve(false));
  });
}

// ---------------------------------------------------------------------------------------------
// the gateway process

const cleanups = []; // run in reverse order, always
let gateway = null; // { child, port, adminPort, logPath, dataDir, exited }
const browsers = []; // for the screenshots on failure

function tail(file, lines = 40) {
  try {
    return fs.readFileSync(file, 'utf8').replace(/\x1b\[[0-9;]*m/g, '').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

async function startGatewayOnce(bin) {
  const port = await freePort();
  let adminPort = await freePort();
  while (adminPort === port) adminPort = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dalea-e2e-data-'));
  cleanups.push(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const logPath = path.join(ARTIFACTS, 'gateway.log');
  const log = fs.openSync(logPath, 'w');
  const child = spawn(
    bin,
    ['serve', '--config', CONFIG, '--listen', `127.0.0.1:${port}`, '--admin-listen', `127.0.0.1:${adminPort}`, '--data-dir', dataDir],
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

async function startGateway(bin) {
  // Ports come from "listen on 0, close": another process may grab one in between, so retry.
  for (let attempt = 1; attempt <= 3; attempt += 1) {
    const { g, ready, why } = await startGatewayOnce(bin);
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
async function launch(name) {
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
  return { name, ctx, page, profileDir, unexpectedPages };
}

/** Makes the page present as Chrome 131 on macOS 14.6.1, before its first navigation. */
async function emulateChromeOnMac(browser) {
  const cdp = await browser.ctx.newCDPSession(browser.page);
  await cdp.send('Emulation.setUserAgentOverride', {
    userAgent: CHROME_MAC_UA,
    platform: 'MacIntel',
    acceptLanguage: 'en-US',
    userAgentMetadata: CHROME_MAC_METADATA,
  });
}

/**
 * Makes the page present as Firefox 133 on Windows, before its first navigation. Deliberately
 * not playwright's `userAgent` context option: playwright derives UA-CH metadata from the string
 * (it sent Sec-CH-UA-Platform "Windows", Platform-Version "10.0" here), and a real Firefox sends
 * no client hints at all. An override without `userAgentMetadata` makes Chromium send none.
 */
async function emulateFirefoxOnWindows(browser) {
  const cdp = await browser.ctx.newCDPSession(browser.page);
  await cdp.send('Emulation.setUserAgentOverride', { userAgent: FIREFOX_WIN_UA, platform: 'Win32', acceptLanguage: 'en-US' });
}

/** What A's page reports about itself (needs a secure context, so call it on a gateway page). */
async function checkChromeOnMacInPage(browser) {
  const seen = await browser.page.evaluate(async () => ({
    ua: navigator.userAgent,
    platform: navigator.userAgentData ? navigator.userAgentData.platform : null,
    platformVersion: navigator.userAgentData
      ? (await navigator.userAgentData.getHighEntropyValues(['platformVersion'])).platformVersion
      : null,
  }));
  equal(seen.ua, CHROME_MAC_UA, 'A: navigator.userAgent on the sign-in page');
  equal(seen.platform, 'macOS', 'A: navigator.userAgentData.platform on the sign-in page');
  equal(seen.platformVersion, '14.6.1', 'A: navigator.userAgentData platformVersion on the sign-in page');
}

function pathAndQuery(u) {
  const url = new URL(u);
  return { path: url.pathname, rd: url.searchParams.get('rd'), url };
}

async function sessionCookie(browser) {
  return (await browser.ctx.cookies()).find((c) => c.name === SESSION_COOKIE) || null;
}

async function apiSessions(browser, base) {
  const res = await browser.page.request.get(base + SESSIONS_API, { headers: { accept: 'application/json' } });
  check(res.ok(), `${browser.name}: GET ${SESSIONS_API} answered ${res.status()}`, await res.text());
  const body = await res.json();
  check(Array.isArray(body.sessions), `${browser.name}: ${SESSIONS_API} has no "sessions" array`, body);
  return body.sessions;
}

/**
 * Opens `/some/page`, lands on the sign-in page, signs in, lands back on `/some/page` served by
 * whoami. Returns the request headers the browser actually sent with the sign-in POST.
 */
async function signIn(browser, base, { rememberMe, onSigninPage }) {
  const { page } = browser;
  const target = '/some/page';
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
  await page.getByRole('button', { name: 'Sign in' }).click();
  const post = await postSeen;
  await backHome;
  const headers = await post.allHeaders();

  const text = await page.locator('body').innerText();
  check(text.includes(`Signed in as ${EMAIL}`), `${browser.name}: after sign-in, ${target} should be the whoami page saying "Signed in as ${EMAIL}"`, text.slice(0, 400));
  ok(`${browser.name}: signed in (remember me ${rememberMe ? 'on' : 'off'}) and back on ${target}: "Signed in as ${EMAIL}"`);
  return headers;
}

/** Everything the test needs from the rows of the sessions page. */
async function readRows(page) {
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
        fields,
        lastActiveDatetime: time && time.getAttribute('datetime'),
        lastActiveTitle: time && time.getAttribute('title'),
        x: x ? { label: x.getAttribute('aria-label'), text: x.textContent.trim(), visible: x.offsetWidth > 0 && x.offsetHeight > 0 } : null,
        formAction: x && x.form ? x.form.getAttribute('action') : null,
      };
    }));
}

// ---------------------------------------------------------------------------------------------
// the test

async function run() {
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
  for (const f of ['sessions.png', 'sessions-after-revoke.png', 'failure-A.png', 'failure-B.png']) fs.rmSync(path.join(ARTIFACTS, f), { force: true });

  const g = await startGateway(binPath);
  const base = `http://127.0.0.1:${g.port}`;
  ok(`gateway ${path.basename(binPath)} listening on ${base} (admin ${g.adminPort}, data dir ${g.dataDir})`);

  const A = await launch('A');
  const B = await launch('B');
  browsers.push(A, B);
  await emulateChromeOnMac(A);
  await emulateFirefoxOnWindows(B);
  ok(`browsers up (${A.ctx.browser()?.version() ?? 'chromium'}): A = Chrome 131 on macOS 14.6.1 (UA + client hints), B = Firefox 133 on Windows (UA only)`);

  // --- sign in from both ---------------------------------------------------------------------
  const aPost = await signIn(A, base, { rememberMe: true, onSigninPage: () => checkChromeOnMacInPage(A) });
  equal(aPost['user-agent'], CHROME_MAC_UA, 'A: User-Agent on the sign-in POST');
  equal(aPost['sec-ch-ua-platform'], '"macOS"', 'A: Sec-CH-UA-Platform on the sign-in POST');
  equal(aPost['sec-ch-ua-platform-version'], '"14.6.1"', 'A: Sec-CH-UA-Platform-Version on the sign-in POST (the sign-in page asks for it with Accept-CH)');
  ok('A: the sign-in POST carried the frozen Mac UA, Sec-CH-UA-Platform "macOS" and Sec-CH-UA-Platform-Version "14.6.1"');

  const bPost = await signIn(B, base, { rememberMe: false });
  equal(bPost['user-agent'], FIREFOX_WIN_UA, 'B: User-Agent on the sign-in POST');
  const bHints = Object.keys(bPost).filter((k) => k.startsWith('sec-ch-ua'));
  check(bHints.length === 0, 'B: a Firefox must send no Sec-CH-UA* headers', Object.fromEntries(bHints.map((k) => [k, bPost[k]])));
  ok('B: the sign-in POST carried the Firefox UA and no client hints');

  const aCookie = await sessionCookie(A);
  const bCookie = await sessionCookie(B);
  check(aCookie, `A: no ${SESSION_COOKIE} cookie after sign-in`);
  check(bCookie, `B: no ${SESSION_COOKIE} cookie after sign-in`);
  check(aCookie.expires > Date.now() / 1000 + 3600, `A (remember me): ${SESSION_COOKIE} should be a persistent cookie`, aCookie);
  equal(bCookie.expires, -1, `B (no remember me): ${SESSION_COOKIE} should be a browser-session cookie; expires`);
  check(aCookie.httpOnly && bCookie.httpOnly, `${SESSION_COOKIE} must be HttpOnly`, { aCookie, bCookie });
  ok(`cookies: A's ${SESSION_COOKIE} is persistent (remember me), B's lasts for the browser session; both HttpOnly`);

  // B learns its own session id from the API (its "current" session).
  const bView = await apiSessions(B, base);
  const bSelf = bView.find((s) => s.current);
  check(bSelf, 'B: GET /.dalea/api/sessions lists no current session', bView);
  const idB = bSelf.id;

  // --- A: the sessions page ------------------------------------------------------------------
  // A now makes the latest request, so A must come first.
  await A.page.goto(base + SESSIONS_PATH);
  equal(new URL(A.page.url()).pathname, SESSIONS_PATH, 'A: URL of the sessions page');
  await A.page.getByRole('heading', { name: 'Security' }).waitFor();
  const rows = await readRows(A.page);
  const aJson = await apiSessions(A, base);
  const aSelf = aJson.find((s) => s.current);
  check(aSelf, 'A: GET /.dalea/api/sessions lists no current session', aJson);
  const idA = aSelf.id;
  check(idA !== idB, 'A and B must have different sessions', { idA, idB });

  equal(rows.length, 2, 'A: number of rows on the sessions page');
  const rowA = rows.find((r) => r.id === idA);
  const rowB = rows.find((r) => r.id === idB);
  check(rowA && rowB, "A: the page's rows should be A's and B's sessions", { idA, idB, rows });
  ok(`sessions page lists 2 sessions (A ${idA}, B ${idB})`);

  equal(rowA.device, 'Chrome on macOS 14', "A's row: device");
  check(rowA.thisIsYou, `A's row should carry "This is you"`, rowA);
  check(rowA.x === null, "A's row (the current session) must not have an × button", rowA);
  ok(`A's row: "${rowA.device}" + "This is you", no ×`);

  equal(rowB.device, 'Firefox on Windows', "B's row: device");
  check(!rowB.thisIsYou, `B's row must not say "This is you"`, rowB);
  check(rowB.x && rowB.x.visible, "B's row should have a visible × button", rowB);
  check(rowB.x.label.startsWith('Sign out') && rowB.x.label.includes('Firefox on Windows'), "B's × aria-label should name the session", rowB.x);
  equal(rowB.formAction, `${SESSIONS_PATH}/${idB}/revoke`, "B's × form action");
  ok(`B's row: "${rowB.device}", no "This is you", × button "${rowB.x.label}"`);

  const bJson = aJson.find((s) => s.id === idB);
  equal(aSelf.device, 'Chrome on macOS 14', 'JSON device of A');
  equal(bJson.device, 'Firefox on Windows', 'JSON device of B');
  equal(aSelf.remember_me, true, 'JSON remember_me of A');
  equal(bJson.remember_me, false, 'JSON remember_me of B');
  ok(`${SESSIONS_API} agrees: devices "${aSelf.device}" / "${bJson.device}", remember_me true / false`);

  // Order. A check that fails here does not stop the test (the later steps do not depend on it):
  // it is reported with the other results and fails the run at the end.
  const order = rows.map((r) => r.id);
  const who = (id) => (id === idA ? 'A' : id === idB ? 'B' : id);
  const evidence = {
    page_order: order.map(who),
    page_last_active: rows.map((r) => `${who(r.id)}: ${r.lastActiveTitle} ("${r.fields['Last active']}")`),
    api_order_fetched_after_the_page: aJson.map((s) => `${who(s.id)}: ${s.last_active}`),
  };
  softly('order: most recently active first', () => {
    check(order[0] === idA,
      `the first row should be A's session: A made the latest request (GET ${SESSIONS_PATH}) after B's last one, but the page lists ${evidence.page_order.join(', ')}`,
      evidence);
    for (let i = 1; i < aJson.length; i += 1) {
      check(Date.parse(aJson[i - 1].last_active) >= Date.parse(aJson[i].last_active), `${SESSIONS_API} must be ordered by last_active, newest first`, evidence);
    }
    check(JSON.stringify(aJson.map((s) => s.id)) === JSON.stringify(order), `${SESSIONS_API} should list the sessions in the same order as the page`, evidence);
    ok(`order: A then B, the same in ${SESSIONS_API} (last_active A ${aSelf.last_active} ≥ B ${bJson.last_active})`);
  });

  for (const [name, row] of [['A', rowA], ['B', rowB]]) {
    const ip = row.fields['IP address'];
    check(ip && (ip === '127.0.0.1' || ip.startsWith('127.0.0.1 ')), `${name}'s row: IP address should be 127.0.0.1`, row.fields);
    const signedIn = row.fields['Signed in'] || '';
    check(signedIn.startsWith('Email and password'), `${name}'s row: sign-in method should be "Email and password"`, row.fields);
    const strength = row.fields['Auth strength'];
    check(strength && /not elevated/i.test(strength), `${name}'s row: auth strength should say the session is not elevated`, row.fields);
    check(row.fields['Last active'] && row.lastActiveDatetime && !Number.isNaN(Date.parse(row.lastActiveDatetime)) && row.lastActiveTitle,
      `${name}'s row: last active should be a <time> with a datetime and an exact time on hover`, row);
  }
  ok(`both rows: IP 127.0.0.1, "Email and password", "${rowA.fields['Auth strength']}", last active "${rowA.fields['Last active']}" / "${rowB.fields['Last active']}"`);

  // Screenshot before revoking.
  await A.page.screenshot({ path: path.join(ARTIFACTS, 'sessions.png'), fullPage: true });
  ok(`screenshot: ${path.relative(REPO_ROOT, path.join(ARTIFACTS, 'sessions.png'))}`);

  // --- A signs B out -------------------------------------------------------------------------
  const revokeResponse = A.page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === `${SESSIONS_PATH}/${idB}/revoke`);
  await A.page.locator(`li.row[data-session-id="${idB}"] button.x`).click();
  const rr = await revokeResponse;
  check([302, 303].includes(rr.status()), `revoke POST should redirect back to the page, got ${rr.status()}`);
  await A.page.waitForURL((u) => u.pathname === SESSIONS_PATH);
  await A.page.getByRole('status').filter({ hasText: 'The session was signed out.' }).waitFor();
  const after = await readRows(A.page);
  equal(after.length, 1, 'rows after revoking B');
  equal(after[0].id, idA, 'the remaining row');
  check(after[0].thisIsYou, 'the remaining row should be "This is you"', after[0]);
  await A.page.screenshot({ path: path.join(ARTIFACTS, 'sessions-after-revoke.png'), fullPage: true });
  ok(`A clicked × on B's row: POST …/revoke → ${rr.status()}, notice "The session was signed out.", 1 row left (screenshot sessions-after-revoke.png)`);

  // --- B's very next navigation --------------------------------------------------------------
  check(await sessionCookie(B), `B: the ${SESSION_COOKIE} cookie should still be in the browser before its next request`);
  const finalResponse = await B.page.goto(base + '/another/page');
  const landedB = pathAndQuery(B.page.url());
  equal(landedB.path, SIGNIN_PATH, `B: GET /another/page with the revoked session should land on the sign-in page (URL ${B.page.url()})`);
  equal(landedB.rd, '/another/page', 'B: rd= on the sign-in page');
  const first = finalResponse.request().redirectedFrom();
  check(first && new URL(first.url()).pathname === '/another/page', 'B: /another/page should have been redirected', B.page.url());
  const firstResp = await first.response();
  check(firstResp && [302, 303].includes(firstResp.status()), `B: /another/page should answer a redirect, got ${firstResp && firstResp.status()}`);
  const setCookies = (await firstResp.headersArray()).filter((h) => h.name.toLowerCase() === 'set-cookie').map((h) => h.value);
  const clearing = setCookies.find((v) => v.startsWith(`${SESSION_COOKIE}=`) && (/max-age=0/i.test(v) || /expires=thu, 01 jan 1970/i.test(v)));
  check(clearing, `B: the redirect should clear ${SESSION_COOKIE} (Set-Cookie with Max-Age=0)`, setCookies);
  check(!(await sessionCookie(B)), `B: the ${SESSION_COOKIE} cookie should be gone from the browser`, await B.ctx.cookies());
  ok(`B: next navigation GET /another/page → ${firstResp.status()} → ${landedB.url.pathname}${landedB.url.search}; cookie cleared (${clearing.split(';').slice(0, 1).join('')}; …)`);

  // --- A is untouched ------------------------------------------------------------------------
  await A.page.goto(base + '/some/page');
  check((await A.page.locator('body').innerText()).includes(`Signed in as ${EMAIL}`), 'A: should still be signed in after revoking B');
  ok('A is still signed in');

  for (const br of [A, B]) check(br.unexpectedPages.length === 0, `${br.name}: unexpected extra pages were opened (they would lack the emulation)`, br.unexpectedPages);
}

async function main() {
  const watchdog = setTimeout(() => {
    console.error(`not ok - the test did not finish within ${WATCHDOG_MS / 1000} s`);
    process.exit(1);
  }, WATCHDOG_MS);
  watchdog.unref();
  const started = Date.now();
  let failed = null;
  try {
    await run();
  } catch (err) {
    failed = err;
    for (const br of browsers) {
      await br.page.screenshot({ path: path.join(ARTIFACTS, `failure-${br.name}.png`), fullPage: true }).catch(() => {});
    }
  } finally {
    await stopGateway().catch(() => {});
    for (const c of cleanups.reverse()) await c();
  }
  if (!failed && softFailures.length) {
    console.error(`\nFAIL sessions e2e: ${softFailures.length} check(s) failed (the other steps passed):`);
    for (const f of softFailures) console.error(`  - ${f.split('\n')[0]}`);
    process.exit(1);
  }
  if (failed) {
    for (const f of softFailures) console.error(`(earlier failure) ${f.split('\n')[0]}`);
    console.error(`\nnot ok - ${failed instanceof TestFailure ? '' : 'error: '}${failed instanceof TestFailure ? failed.message : failed.stack || failed}`);
    if (gateway) console.error(`--- gateway log (tail; full log in ${path.relative(process.cwd(), gateway.logPath)}) ---\n${tail(gateway.logPath, 25)}`);
    if (browsers.length) console.error(`screenshots at failure: ${path.relative(process.cwd(), ARTIFACTS)}/failure-{A,B}.png`);
    process.exit(1);
  }
  console.log(`\nPASS sessions e2e (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  process.exit(0);
}

main();

#!/usr/bin/env node
// End-to-end test of the sessions list's warning flags in real headless Chromium.
//
// Starts a redis-server of its own on a free loopback port and the gateway binary given in
// $DALEA_BIN with config/dev.toml switched to that Redis store (so the test can reach the stored
// sign-in history), then drives two independent Chromium instances:
//   A: presents as Chrome on macOS, signs in as demo@example.com (remember me on);
//   —  the history is moved a day back, as if A had signed in yesterday: the flags deliberately
//      ignore two devices first seen within two minutes of each other (replicas' clocks may
//      disagree by that much), and waiting that out would make this test slow;
//   B: presents as Firefox on Windows and signs in as the same person: a device never seen
//      before for them.
// A opens Settings → Security → Sessions: B's row stands out (class, amber bar), says "New
// device" and why in words, its × is right there and describes itself by the warning (checked in
// Chromium's accessibility tree, as a screen reader gets it); A's row is an ordinary one; the
// page says once that location warnings are off (config/dev.toml has no GeoIP database); the
// JSON list agrees. A then signs B out with that ×.
//
// Usage: DALEA_BIN=/path/to/dalea-gateway node vigilance.e2e.mjs   (or ./run.sh vigilance).
// Needs redis-server (scripts/setup.sh --test installs it; REDIS_SERVER overrides the path).
// Exit code 0 = pass. The screenshot (vigilance.png, failure-{A,B}.png), the gateway log
// (gateway-vigilance.log) and redis-server's (redis-vigilance.log) go to tests/e2e/artifacts/.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {
  CONFIG, SESSIONS_PATH,
  artifact, canConnect, check, equal, fail, freePort, launch, ok, onCleanup, preflight, runTest, screenshot, showLogOnFailure,
  signIn, sleep, startGateway,
} from './harness.mjs';

const SESSIONS_API = '/.dalea/api/sessions';
const KEY_PREFIX = 'dalea-e2e';
const HISTORY_KEY = `${KEY_PREFIX}:hist:{demo}`; // the demo user's sign-in history (src/session/redis/history.rs)
const DAY_MS = 86_400_000;
const NO_GEOIP_NOTE = 'Location warnings are off: the gateway has no GeoIP database, so it cannot tell where sessions are.';
const WARN_RGB = 'rgb(138, 90, 0)'; // --warn in layout.html

const CHROME_MAC_UA =
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36';
const FIREFOX_WIN_UA = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0';

// ---------------------------------------------------------------------------------------------
// redis-server, spoken to in RESP over a plain socket

async function startRedis() {
  const bin = process.env.REDIS_SERVER || 'redis-server';
  const found = spawnSync(bin, ['--version'], { encoding: 'utf8' });
  if (found.error || found.status !== 0) fail(`${bin} not found: install it (apt-get install redis-server) or set REDIS_SERVER`);
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dalea-e2e-redis-'));
  const logPath = artifact('redis-vigilance.log');
  const log = fs.openSync(logPath, 'w');
  const child = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
    stdio: ['ignore', log, log],
  });
  fs.closeSync(log);
  showLogOnFailure('redis-server', logPath);
  onCleanup(async () => {
    child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (await canConnect(port)) {
      try {
        if ((await redis(port, 'PING')) === 'PONG') return port;
      } catch { /* loading */ }
    }
    await sleep(50);
  }
  return fail('redis-server did not answer PING within 10 s');
}

/** Sends one command; resolves with its reply: a string (simple), a Buffer (bulk), a number, or null. */
function redis(port, ...args) {
  const parts = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = Buffer.isBuffer(a) ? a : Buffer.from(String(a));
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
  }
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let buf = Buffer.alloc(0);
    sock.setTimeout(5_000, () => { sock.destroy(); reject(new Error('redis: no reply within 5 s')); });
    sock.on('error', reject);
    sock.on('connect', () => sock.write(Buffer.concat(parts)));
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      const eol = buf.indexOf('\r\n');
      if (eol < 0) return;
      const line = buf.subarray(1, eol).toString();
      let reply;
      switch (buf[0]) {
        case 0x2b: reply = line; break; // +
        case 0x2d: sock.destroy(); reject(new Error(`redis: ${line}`)); return; // -
        case 0x3a: reply = Number(line); break; // :
        case 0x24: { // $
          const len = Number(line);
          if (len < 0) { reply = null; break; }
          if (buf.length < eol + 2 + len + 2) return; // more to come
          reply = buf.subarray(eol + 2, eol + 2 + len);
          break;
        }
        default: sock.destroy(); reject(new Error(`redis: unexpected reply ${JSON.stringify(buf.toString())}`)); return;
      }
      sock.end();
      resolve(reply);
    });
  });
}

/** Moves every time in the demo user's stored history `ms` earlier (record: version byte 1 + JSON). */
async function backdateHistory(port, ms) {
  const raw = await redis(port, 'GET', HISTORY_KEY);
  check(Buffer.isBuffer(raw) && raw[0] === 1, `the sign-in history ${HISTORY_KEY} should be a version-1 record after a sign-in`, raw && raw.toString());
  const h = JSON.parse(raw.subarray(1).toString());
  check(h.devices.length === 1 && h.sign_ins.length === 1, 'one device and one sign-in in the history after the first sign-in', h);
  for (const d of [...h.devices, ...(h.places || [])]) {
    d.first_seen -= ms;
    d.last_seen -= ms;
  }
  for (const s of h.sign_ins) s.at -= ms;
  equal(await redis(port, 'SET', HISTORY_KEY, Buffer.concat([Buffer.from([1]), Buffer.from(JSON.stringify(h))]), 'KEEPTTL'), 'OK', 'SET of the history');
  return h.devices[0].fingerprint.label;
}

/** config/dev.toml with the Redis store at `redisPort` (and its users file beside it). */
function redisConfig(redisPort) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dalea-e2e-vigilance-config-'));
  onCleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.copyFileSync(path.join(path.dirname(CONFIG), 'users.dev.toml'), path.join(dir, 'users.dev.toml'));
  const dev = fs.readFileSync(CONFIG, 'utf8');
  const store = /\[store\]\n(?:[^[\n].*\n)+/;
  check(store.test(dev), 'config/dev.toml has no [store] section to replace');
  const text = dev.replace(store, `[store]\nkind = "redis"\nurl = "redis://127.0.0.1:${redisPort}"\nkey_prefix = "${KEY_PREFIX}"\n`);
  const file = path.join(dir, 'vigilance.toml');
  fs.writeFileSync(file, text);
  return file;
}

// ---------------------------------------------------------------------------------------------
// browsers

async function presentAs(browser, userAgent, platform) {
  const cdp = await browser.ctx.newCDPSession(browser.page);
  await cdp.send('Emulation.setUserAgentOverride', { userAgent, platform, acceptLanguage: 'en-US' });
}

async function apiSessions(browser, base) {
  const res = await browser.page.request.get(base + SESSIONS_API, { headers: { accept: 'application/json' } });
  check(res.ok(), `${browser.name}: GET ${SESSIONS_API} answered ${res.status()}`, await res.text());
  return (await res.json()).sessions;
}

/** What the test needs from each row of the sessions page, as rendered. */
async function flaggedRows(page) {
  return page.locator('li.row[data-session-id]').evaluateAll((lis) => lis.map((li) => {
    const flags = li.querySelector('ul.flags');
    const x = li.querySelector('button.x');
    const visible = (el) => !!el && el.offsetWidth > 0 && el.offsetHeight > 0;
    return {
      id: li.getAttribute('data-session-id'),
      classes: [...li.classList],
      boxShadow: getComputedStyle(li).boxShadow,
      flagsId: flags && flags.id,
      flags: flags ? [...flags.querySelectorAll('li.flag')].map((f) => ({
        kind: f.getAttribute('data-kind'),
        text: f.textContent.replace(/\s+/g, ' ').trim(),
        shown: f.innerText.replace(/\s+/g, ' ').trim(),
        visible: visible(f),
        srOnly: [...f.querySelectorAll('.sr-only')].map((s) => s.textContent),
      })) : [],
      x: x ? { visible: visible(x), describedBy: x.getAttribute('aria-describedby'), label: x.getAttribute('aria-label') } : null,
    };
  }));
}

/** The accessible name and description Chromium gives the × buttons (what a screen reader reads). */
async function buttonsAsScreenReadersGetThem(browser) {
  const cdp = await browser.ctx.newCDPSession(browser.page);
  const { nodes } = await cdp.send('Accessibility.getFullAXTree');
  await cdp.detach();
  return nodes
    .filter((n) => n.role && n.role.value === 'button' && n.name && String(n.name.value).startsWith('Sign out '))
    .map((n) => ({ name: n.name.value, description: n.description ? n.description.value : '' }));
}

// ---------------------------------------------------------------------------------------------
// the test

async function run() {
  const binPath = preflight(['vigilance.png', 'failure-A.png', 'failure-B.png', 'redis-vigilance.log']);
  const redisPort = await startRedis();
  ok(`redis-server on 127.0.0.1:${redisPort}`);
  const g = await startGateway(binPath, 'gateway-vigilance.log', { config: redisConfig(redisPort) });
  const base = `http://127.0.0.1:${g.port}`;
  ok(`gateway ${path.basename(binPath)} on ${base} with the Redis store (key prefix ${KEY_PREFIX})`);

  const A = await launch('A');
  const B = await launch('B');
  await presentAs(A, CHROME_MAC_UA, 'MacIntel');
  await presentAs(B, FIREFOX_WIN_UA, 'Win32');

  await signIn(A, base, { rememberMe: true });
  const label = await backdateHistory(redisPort, DAY_MS);
  ok(`A's sign-in (${label}) moved a day back in the stored history`);
  await signIn(B, base);

  // --- A's sessions page -----------------------------------------------------------------------
  await A.page.goto(base + SESSIONS_PATH);
  await A.page.getByRole('heading', { name: 'Security' }).waitFor();
  const json = await apiSessions(A, base);
  const aSelf = json.find((s) => s.current);
  const bJson = json.find((s) => !s.current);
  check(aSelf && bJson && json.length === 2, 'two sessions, one of them A', json);
  equal(bJson.device, 'Firefox on Windows', "B's device");
  check(Array.isArray(aSelf.flags) && aSelf.flags.length === 0, "A's session has no flags ([])", aSelf);
  check(bJson.flags.length === 1 && bJson.flags[0].kind === 'new_device', "B's session has one flag, new_device", bJson);
  check(bJson.flags[0].reason.startsWith('First sign-in from Firefox on Windows, '), "B's flag says why", bJson.flags[0]);
  ok(`${SESSIONS_API}: B flags ${JSON.stringify(bJson.flags)}, A flags []`);

  const rows = await flaggedRows(A.page);
  const rowA = rows.find((r) => r.id === aSelf.id);
  const rowB = rows.find((r) => r.id === bJson.id);
  check(rowA && rowB, 'the page lists A and B', rows);
  check(rowB.classes.includes('flagged') && !rowA.classes.includes('flagged'), 'only B\'s row is marked flagged', rows);
  check(rowB.boxShadow.includes(WARN_RGB), `B's row should carry the amber warning bar (${WARN_RGB})`, rowB.boxShadow);
  check(!rowA.boxShadow.includes(WARN_RGB), "A's row should not carry the warning bar", rowA.boxShadow);
  equal(rowB.flags.length, 1, "flags on B's row");
  const flag = rowB.flags[0];
  equal(flag.kind, 'new_device', "B's flag kind");
  check(flag.visible, "B's flag should be visible", flag);
  check(flag.shown.includes('New device') && flag.shown.includes('First sign-in from Firefox on Windows'), "B's flag shows its title and reason", flag);
  check(flag.srOnly.includes('Warning: ') && flag.text.includes('Warning: New device: First sign-in from Firefox on Windows'),
    'a screen reader reads "Warning: New device: First sign-in from …"', flag);
  check(await A.page.getByText('First sign-in from Firefox on Windows').isVisible(), 'the reason is visible on the page');
  check(rowA.flags.length === 0 && rowA.flagsId === null, "A's row has no flags", rowA);
  ok(`B's row stands out (class flagged, box-shadow ${rowB.boxShadow}) and says "${flag.shown}"; A's row is ordinary`);

  check(rowB.x && rowB.x.visible, "B's row keeps its visible ×", rowB);
  equal(rowB.x.describedBy, rowB.flagsId, "B's × aria-describedby names the row's warnings");
  const buttons = await buttonsAsScreenReadersGetThem(A);
  const xB = buttons.find((b) => b.name.includes('Firefox on Windows'));
  check(xB && xB.description.includes('New device') && xB.description.includes('First sign-in from Firefox on Windows'),
    "Chromium's accessibility tree: B's × is described by its warning", buttons);
  ok(`B's × (${xB.name}) has the accessible description "${xB.description}"`);

  const notes = await A.page.getByText(NO_GEOIP_NOTE).count();
  equal(notes, 1, 'the no-GeoIP note on the page');
  check(await A.page.getByText('One session carries a warning').isVisible(), 'the page says one session carries a warning');
  ok(`the page says once: "${NO_GEOIP_NOTE}"`);
  ok(`screenshot: ${await screenshot(A, 'vigilance.png')}`);

  // --- the × on the flagged row signs B out ------------------------------------------------------
  await A.page.locator(`li.row[data-session-id="${bJson.id}"] button.x`).click();
  await A.page.waitForURL((u) => u.pathname === SESSIONS_PATH);
  await A.page.getByRole('status').filter({ hasText: 'The session was signed out.' }).waitFor();
  const after = await flaggedRows(A.page);
  check(after.length === 1 && after[0].id === aSelf.id, 'only A is left after the × on B\'s row', after);
  ok("A signed B out with the × on B's flagged row");

  for (const br of [A, B]) check(br.unexpectedPages.length === 0, `${br.name}: unexpected extra pages were opened`, br.unexpectedPages);
}

runTest('vigilance', run);

#!/usr/bin/env node
// End-to-end test of TOTP set-up and "Confirm it's you" (elevation) in real headless Chromium.
//
// Starts the gateway binary given in $DALEA_BIN with config/dev.toml (its `/admin` route has
// access = "elevated"; the embedded store generates the key that encrypts TOTP secrets in the
// fresh data dir) and drives one Chromium instance:
//   1. signs in as demo@example.com, opens Settings → Security → Authenticator app, sets it up:
//      reads the manual key next to the QR code, computes the current code (RFC 6238, in this
//      script) and turns the app on;
//   2. the audit log (sensitive) now asks to confirm it's you first;
//   3. GET /admin lands on /.dalea/elevate?rd=%2Fadmin; a wrong code and the code already used
//      for the set-up are refused on the page; after the next 30-second step begins, its code
//      confirms and the browser ends on /admin, whose whoami page shows x-dalea-auth-strength
//      elevated:totp;
//   4. the sessions page shows the current session as "Elevated (TOTP)" (elevated.png);
//   5. the audit log opens and lists the confirmation, the failed attempts, the set-up and the
//      sign-in, newest first (audit-log.png).
//
// Usage: DALEA_BIN=/path/to/dalea-gateway node elevation.e2e.mjs   (or ./run.sh). Optional:
// CHROMIUM_PATH, E2E_TRACE=1 (as for sessions.e2e.mjs). Takes up to ~30 s longer than the work
// itself: a TOTP time step is accepted once, so the confirmation waits for the step after the
// one used to set the app up. Screenshots (elevated.png, audit-log.png, failure-E.png) and the
// gateway log (gateway-elevation.log) go to tests/e2e/artifacts/.

import crypto from 'node:crypto';
import path from 'node:path';
import {
  SESSION_COOKIE, SESSIONS_PATH,
  check, equal, fail, launch, ok, preflight, readRows, runTest, screenshot, sessionCookie, signIn, sleep, startGateway,
} from './harness.mjs';

const TOTP_PATH = '/.dalea/settings/security/totp';
const AUDIT_LOG_PATH = '/.dalea/settings/security/audit-log';
const ELEVATE_PATH = '/.dalea/elevate';
const SENSITIVE_PATH = '/admin'; // [[routes]] "admin" in config/dev.toml: access = "elevated"
const BAD_CODE_MESSAGE = 'That code is not right';

// ---------------------------------------------------------------------------------------------
// TOTP (RFC 6238 over RFC 4226): HMAC-SHA1, 30-second steps, 6 digits

const STEP_SECONDS = 30;

/** RFC 4648 base32 (no padding; spaces, as in the grouped manual key, are ignored) → bytes. */
function base32Decode(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const clean = text.replace(/\s+/g, '').toUpperCase().replace(/=+$/, '');
  let bits = 0;
  let value = 0;
  const out = [];
  for (const ch of clean) {
    const idx = alphabet.indexOf(ch);
    if (idx < 0) fail(`the manual key has a character that is not base32: ${JSON.stringify(ch)}`, text);
    value = (value << 5) | idx;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((value >>> bits) & 0xff);
    }
  }
  return Buffer.from(out);
}

/** The time step (RFC 6238 "T") at `ms` Unix milliseconds. */
function stepAt(ms = Date.now()) {
  return Math.floor(ms / 1000 / STEP_SECONDS);
}

/** The 6-digit code for one time step (RFC 4226 HOTP with the step as the counter). */
function totpCode(secret, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = crypto.createHmac('sha1', secret).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const binary = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(binary % 1_000_000).padStart(6, '0');
}

/** A 6-digit code the gateway cannot accept now: none of the codes it would (±1 step, with a
 *  spare step either side in case the step changes while the form is sent). */
function wrongCode(secret) {
  const now = stepAt();
  const valid = new Set([-2, -1, 0, 1, 2].map((d) => totpCode(secret, now + d)));
  for (let n = 0; ; n += 1) {
    const code = String((123456 + n * 111111) % 1_000_000).padStart(6, '0');
    if (!valid.has(code)) return code;
  }
}

/** Waits until the time step after `usedStep` has begun (a step is accepted only once). */
async function waitForStepAfter(usedStep) {
  const next = (usedStep + 1) * STEP_SECONDS * 1000;
  const waitMs = next - Date.now();
  if (waitMs > 0) await sleep(waitMs + 250); // a little past the boundary
  return waitMs > 0 ? waitMs : 0;
}

// Known-answer check of the implementation above (RFC 6238 appendix B, SHA-1, 8 digits truncated
// to the 6 this gateway uses: 94287082 → 287082 at T = 59 s, 07081804 → 081804 at 1111111109 s).
function selfTestTotp() {
  const rfcSecret = Buffer.from('12345678901234567890', 'ascii');
  equal(totpCode(rfcSecret, stepAt(59_000)), '287082', 'RFC 6238 test vector at T=59 s (self-test of this script)');
  equal(totpCode(rfcSecret, stepAt(1_111_111_109_000)), '081804', 'RFC 6238 test vector at T=1111111109 s (self-test of this script)');
  equal(base32Decode('GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ').toString('ascii'), '12345678901234567890', 'base32 decoding (self-test of this script)');
}

// ---------------------------------------------------------------------------------------------
// page helpers

async function bodyText(page) {
  return (await page.locator('body').innerText()).replace(/\s+/g, ' ');
}

/** Navigates to `target` and checks that the gateway sent the browser to the elevation page
 *  with rd=`target`. */
async function expectElevationGate(page, base, target) {
  await page.goto(base + target);
  const url = new URL(page.url());
  const expected = `${ELEVATE_PATH}?rd=${encodeURIComponent(target)}`;
  equal(url.pathname + url.search, expected, `GET ${target} before confirming should land on the elevation page`);
  await page.getByRole('heading', { name: "Confirm it's you" }).waitFor();
  return expected;
}

/** Types `code` into the elevation form and presses Confirm; returns the POST's response. */
async function submitElevationCode(page, code) {
  await page.locator('input[name="code"]').fill(code);
  const response = page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === ELEVATE_PATH);
  await page.getByRole('button', { name: 'Confirm' }).click();
  return response;
}

/** Submits a code that must be refused: the page answers 401, stays the elevation page (still
 *  going back to `rd`) and says the code is not right. */
async function expectRefusedCode(page, code, rd, what) {
  const res = await submitElevationCode(page, code);
  equal(res.status(), 401, `elevation POST with ${what}: status`);
  await page.waitForLoadState('domcontentloaded');
  equal(new URL(page.url()).pathname, ELEVATE_PATH, `after ${what} the browser should stay on the elevation page`);
  await page.getByRole('heading', { name: "Confirm it's you" }).waitFor();
  const alert = page.getByRole('alert');
  await alert.waitFor();
  const message = (await alert.innerText()).trim();
  check(message.startsWith(BAD_CODE_MESSAGE), `after ${what} the page should say "${BAD_CODE_MESSAGE}…"`, message);
  equal(await page.locator('input[name="rd"]').inputValue(), rd, `after ${what}: the form's rd`);
  equal(await page.locator('input[name="code"]').inputValue(), '', `after ${what}: the code field should be empty again`);
  return message;
}

/** The whoami page's table of request headers as the upstream received them. */
async function whoamiHeaders(page) {
  return Object.fromEntries(await page.locator('table tr').evaluateAll((trs) =>
    trs.map((tr) => [tr.querySelector('th')?.textContent.trim(), tr.querySelector('td')?.textContent.trim()])));
}

/** The audit-log page's rows, newest first: [{ type, what }]. */
async function auditRows(page) {
  return page.locator('tr[data-type]').evaluateAll((trs) =>
    trs.map((tr) => ({ type: tr.getAttribute('data-type'), what: tr.querySelector('.what')?.textContent.trim() })));
}

// ---------------------------------------------------------------------------------------------
// the test

async function run() {
  selfTestTotp();
  ok('TOTP code generator in this script matches the RFC 6238 SHA-1 test vectors');

  const binPath = preflight(['elevated.png', 'audit-log.png', 'failure-E.png']);
  const g = await startGateway(binPath, 'gateway-elevation.log');
  const base = `http://127.0.0.1:${g.port}`;
  ok(`gateway ${path.basename(binPath)} listening on ${base} (admin ${g.adminPort}, data dir ${g.dataDir})`);

  const E = await launch('E');
  const { page } = E;
  await signIn(E, base);

  // --- 1. set up the authenticator app ---------------------------------------------------------
  await page.goto(base + SESSIONS_PATH);
  await page.getByRole('navigation', { name: 'Security settings' }).getByRole('link', { name: 'Authenticator app' }).click();
  await page.waitForURL((u) => u.pathname === TOTP_PATH);
  const heading = page.locator('#totp-h');
  equal((await heading.locator('.status').innerText()).trim(), 'Off', 'TOTP status before the set-up');
  await page.getByRole('button', { name: 'Set up authenticator app' }).click();
  await page.waitForURL((u) => u.pathname === TOTP_PATH);
  const keyEl = page.locator('#manual-key');
  await keyEl.waitFor();
  ok(`Security → "Authenticator app" tab (${TOTP_PATH}), status Off → "Set up authenticator app"`);

  const qr = await page.locator('.qr svg').evaluate((svg) => ({
    viewBox: svg.getAttribute('viewBox'),
    shapes: svg.querySelectorAll('path, rect').length,
    width: svg.getBoundingClientRect().width,
  })).catch(() => null);
  check(qr && qr.viewBox && qr.shapes > 0 && qr.width >= 150, 'the set-up should show an inline SVG QR code (with a viewBox, drawn, at least 150 px wide)', qr);
  const manualKey = (await keyEl.innerText()).trim();
  check(/^[A-Z2-7]{4}( [A-Z2-7]{1,4})*$/.test(manualKey), 'the manual key should be base32 in groups of 4 separated by spaces', manualKey);
  const secret = base32Decode(manualKey);
  equal(secret.length, 20, 'length in bytes of the secret behind the manual key');
  ok(`set-up shows an inline SVG QR code (viewBox ${qr.viewBox}, ${Math.round(qr.width)} px) and the manual key (${manualKey.split(' ').length} groups, 160-bit secret)`);

  const enrolStep = stepAt();
  const enrolCode = totpCode(secret, enrolStep);
  await page.locator('input[name="code"]').fill(enrolCode);
  await page.getByRole('button', { name: 'Turn on' }).click();
  await page.waitForURL((u) => u.pathname === TOTP_PATH && u.searchParams.get('done') === 'enrolled');
  const notice = (await page.getByRole('status').innerText()).trim();
  check(notice.includes('Your authenticator app is set up'), 'after "Turn on" the page should say "Your authenticator app is set up"', notice);
  equal((await heading.locator('.status').innerText()).trim(), 'On', 'TOTP status after the set-up');
  check(!(await keyEl.isVisible()), 'after the set-up the manual key should no longer be shown');
  ok(`code ${enrolCode} (step ${enrolStep}) → "Turn on": notice "${notice}", status On`);

  // --- 2. sensitive pages now ask to confirm it's you ------------------------------------------
  await expectElevationGate(page, base, AUDIT_LOG_PATH);
  ok(`the audit log is sensitive: GET ${AUDIT_LOG_PATH} → ${ELEVATE_PATH}?rd=…`);

  const gate = await expectElevationGate(page, base, SENSITIVE_PATH);
  const label = (await page.locator('label[for="code"]').innerText()).trim();
  check(/authenticator app/i.test(label), 'with TOTP set up, the elevation page should ask for a code from the authenticator app', label);
  equal(await page.locator('input[name="password"]').count(), 0, 'password fields on the elevation page (TOTP is set up)');
  ok(`GET ${SENSITIVE_PATH} → ${gate}: "Confirm it's you", asks for "${label}"`);

  // --- 3. wrong codes stay on the page; the next step's code confirms --------------------------
  const wrong = wrongCode(secret);
  const message = await expectRefusedCode(page, wrong, SENSITIVE_PATH, `a wrong code (${wrong})`);
  ok(`a wrong code (${wrong}) → 401, still on ${ELEVATE_PATH}: "${message}"`);

  await expectRefusedCode(page, enrolCode, SENSITIVE_PATH, `the code already used for the set-up (${enrolCode})`);
  ok(`the code already used for the set-up (${enrolCode}, step ${enrolStep}) is refused too`);

  const cookieBefore = await sessionCookie(E);
  const waited = await waitForStepAfter(enrolStep);
  const step = stepAt();
  check(step > enrolStep, `the clock should be past the set-up's step ${enrolStep}`, { step });
  const code = totpCode(secret, step);
  const landed = page.waitForURL((u) => u.pathname === SENSITIVE_PATH);
  landed.catch(() => {}); // awaited below unless the POST already failed
  const res = await submitElevationCode(page, code);
  if (![302, 303].includes(res.status())) {
    await page.waitForLoadState('domcontentloaded');
    fail(`elevation POST with the current code (${code}, step ${step}) should redirect to ${SENSITIVE_PATH}, got ${res.status()}`, await bodyText(page));
  }
  await landed;
  const whoamiText = await bodyText(page);
  check(whoamiText.startsWith('whoami'), `after confirming, ${SENSITIVE_PATH} should be the whoami page`, whoamiText.slice(0, 400));
  const seen = await whoamiHeaders(page);
  equal(seen['x-dalea-auth-strength'], 'elevated:totp', `x-dalea-auth-strength the upstream received on ${SENSITIVE_PATH}`);
  const cookieAfter = await sessionCookie(E);
  check(cookieBefore && cookieAfter && cookieBefore.value !== cookieAfter.value, `confirming should rotate the ${SESSION_COOKIE} token (a new cookie value)`);
  ok(`waited ${(waited / 1000).toFixed(1)} s for step ${step}; code ${code} → ${res.status()} → ${SENSITIVE_PATH}: whoami with x-dalea-auth-strength = elevated:totp, session token rotated`);

  // --- 4. the sessions page shows the elevation ------------------------------------------------
  await page.goto(base + SESSIONS_PATH);
  await page.getByRole('heading', { name: 'Security' }).waitFor();
  const current = (await readRows(page)).find((r) => r.thisIsYou);
  check(current, 'the sessions page should have a row marked "This is you"');
  check(current.badges.includes('Elevated (TOTP)'), 'the current row should carry the badge "Elevated (TOTP)"', current.badges);
  equal(current.fields['Auth strength'], 'Elevated (TOTP)', 'the current row: Auth strength');
  ok(`sessions page: current row badges ${JSON.stringify(current.badges)}, "Auth strength: ${current.fields['Auth strength']}" (screenshot ${await screenshot(E, 'elevated.png')})`);

  // --- 5. the audit log is open now ------------------------------------------------------------
  await page.goto(base + AUDIT_LOG_PATH);
  equal(new URL(page.url()).pathname, AUDIT_LOG_PATH, 'once elevated, the audit log should open (URL)');
  await page.getByRole('heading', { name: 'Security' }).waitFor();
  const events = await auditRows(page);
  const whats = events.map((e) => e.what);
  const indexOf = (prefix) => whats.findIndex((w) => w && w.startsWith(prefix));
  const iConfirmed = indexOf("Confirmed it's you (TOTP)");
  const iEnrolled = indexOf('Authenticator app (TOTP) set up');
  const iSignedIn = indexOf('Signed in');
  check(iConfirmed >= 0 && iEnrolled >= 0 && iSignedIn >= 0,
    `the audit log should list "Confirmed it's you (TOTP)", "Authenticator app (TOTP) set up" and "Signed in"`, whats);
  check(iConfirmed < iEnrolled && iEnrolled < iSignedIn, 'the audit log should list the newest first (confirmation, set-up, sign-in)', whats);
  const failedAttempts = whats.filter((w) => w && w.startsWith("Failed to confirm it's you (TOTP")).length;
  equal(failedAttempts, 2, 'failed confirmations in the audit log (the wrong code and the reused one)');
  ok(`audit log (screenshot ${await screenshot(E, 'audit-log.png')}): ${whats.map((w) => `"${w}"`).join(', ')}`);

  check(E.unexpectedPages.length === 0, 'unexpected extra pages were opened', E.unexpectedPages);
}

runTest('elevation', run);

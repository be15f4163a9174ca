#!/usr/bin/env node
// End-to-end test of "Sign in with <provider>" (OpenID Connect) in real headless Chromium.
//
// Starts a real OpenID Provider (tests/oidc/provider.mjs: the npm package oidc-provider, with a
// fresh RS256 key, the client "dalea-gateway" and one account "demo-sub" whose verified email
// is demo@example.com, the users file's demo person), then the gateway binary given in
// $DALEA_BIN with a config of its own: config/dev.toml (users file made absolute) plus
// `[oauth]` (public_url = this gateway, link_by_verified_email) and the provider "corp"
// ("Corp SSO"), written to a temp dir. Two independent Chromium instances (fresh profiles):
//   A: /some/page → sign-in page → ticks "Keep me signed in" → "Sign in with Corp SSO" → logs in
//      as demo-sub at the provider and consents → back on /some/page as the demo person, with a
//      persistent session cookie; the sessions page says "OAuth (Corp SSO)" and "This is you".
//   B: clicks "Sign in with Corp SSO" and cancels on the provider's login page → back on the
//      sign-in page with "… was cancelled"; tries again, logs in and denies consent → the same;
//      then signs in with email and password from that page.
// The browsers reach nothing but 127.0.0.1 (the provider's pages @import a Google font).
//
// Usage: DALEA_BIN=/path/to/dalea-gateway node oauth.e2e.mjs   (or ./run.sh oauth, which also
// installs the node packages here and in tests/oidc). Optional: CHROMIUM_PATH, E2E_TRACE=1 (every
// request each browser makes). Exit code 0 = pass. Screenshots (oauth-*.png, failure-{A,B}.png),
// the gateway log (gateway-oauth.log), its config (gateway-oauth.toml) and the provider log
// (provider-oauth.log) go to tests/e2e/artifacts/ (gitignored).

import { spawn } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  CONFIG, EMAIL, PASSWORD, REPO_ROOT, SESSION_COOKIE, SIGNIN_PATH, SESSIONS_PATH,
  artifact, check, equal, fail, freePort, launch, ok, onCleanup, pathAndQuery, preflight, readRows, runTest,
  screenshot, sessionCookie, showLogOnFailure, sleep, softly, startGateway, tail,
} from './harness.mjs';

const OIDC_DIR = path.join(REPO_ROOT, 'tests', 'oidc');
const PROVIDER = 'corp';
const PROVIDER_LABEL = 'Corp SSO';
const BUTTON = `Sign in with ${PROVIDER_LABEL}`;
const START_PATH = `/.dalea/oauth/${PROVIDER}/start`;
const CALLBACK_PATH = `/.dalea/oauth/${PROVIDER}/callback`;
const CLIENT_ID = 'dalea-gateway';
const CLIENT_SECRET = 'e2e-secret';
const LOGIN = 'demo-sub';
const USER_ID = 'demo'; // the demo person's id in config/users.dev.toml
const TARGET = '/some/page';
const SESSIONS_API = '/.dalea/api/sessions';

// ---------------------------------------------------------------------------------------------
// the OpenID Provider

/** A private JWK Set with one fresh RS256 signing key. */
function signingKeys() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { keys: [{ ...jwk, kid: `e2e-${randomBytes(6).toString('hex')}`, alg: 'RS256', use: 'sig' }] };
}

async function startProviderOnce(logPath) {
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const config = {
    port,
    issuer_path: '',
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      // Any loopback port (RFC 8252 7.3): the gateway's port is not known yet.
      redirect_uris: [`http://127.0.0.1${CALLBACK_PATH}`],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
      any_loopback_port: true,
    }],
    accounts: [{ sub: LOGIN, claims: { email: EMAIL, email_verified: true, name: 'Demo at Corp' } }],
    conform_id_token_claims: false,
    jwks: signingKeys(),
    ttl: {},
  };
  const log = fs.openSync(logPath, 'w');
  const child = spawn(process.execPath, [path.join(OIDC_DIR, 'provider.mjs')], {
    cwd: OIDC_DIR,
    // stdin stays open as long as this process lives: if it dies, the provider exits too.
    stdio: ['pipe', log, log],
    env: { ...process.env, DALEA_OIDC_PROVIDER_CONFIG: JSON.stringify(config), DALEA_OIDC_EXIT_WITH_PARENT: '1' },
  });
  fs.closeSync(log);
  let exited = null;
  child.on('exit', (code, signal) => { exited = { code, signal }; });
  child.on('error', (err) => { exited = { error: String(err) }; });
  const p = { child, port, issuer, logPath, exited: () => exited };

  const ready = `listening ${issuer}`;
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (exited) return { p, ready: false, why: `the provider exited early (${JSON.stringify(exited)})` };
    const said = fs.readFileSync(logPath, 'utf8').split('\n').some((l) => l.trim() === ready);
    if (said) {
      try {
        const r = await fetch(`${issuer}/.well-known/openid-configuration`);
        if (r.ok) return { p, ready: true };
      } catch { /* not answering yet */ }
    }
    await sleep(100);
  }
  return { p, ready: false, why: 'the provider did not say it was listening within 30 s' };
}

async function stopProvider(p) {
  if (p.exited()) return;
  p.child.kill('SIGTERM');
  const deadline = Date.now() + 3_000;
  while (!p.exited() && Date.now() < deadline) await sleep(50);
  if (!p.exited()) {
    p.child.kill('SIGKILL');
    while (!p.exited()) await sleep(50);
  }
}

/** Starts tests/oidc/provider.mjs on a free port; stopped when the test ends. */
async function startProvider() {
  const pkg = path.join(OIDC_DIR, 'node_modules', 'oidc-provider', 'package.json');
  check(fs.existsSync(pkg), `${path.relative(REPO_ROOT, pkg)} is missing: install the OIDC test provider first: (cd tests/oidc && npm ci)  (run.sh does it)`);
  const logPath = artifact('provider-oauth.log');
  for (let attempt = 1; attempt <= 3; attempt += 1) {
    const { p, ready, why } = await startProviderOnce(logPath);
    onCleanup(() => stopProvider(p));
    if (ready) {
      showLogOnFailure('OpenID provider', logPath);
      return p;
    }
    await stopProvider(p);
    if (attempt === 3) fail(`could not start the OpenID provider: ${why}\n--- provider log (tail) ---\n${tail(logPath)}`);
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// the gateway's config

/** config/dev.toml with its users file made absolute, plus [oauth] with the provider "corp". */
function oauthConfig(dir, gatewayPort, issuer) {
  let toml = fs.readFileSync(CONFIG, 'utf8');
  let users = null;
  toml = toml.replace(/^(\s*file\s*=\s*)"([^"]*)"/m, (_all, lead, file) => {
    users = path.resolve(path.dirname(CONFIG), file);
    return `${lead}${JSON.stringify(users)}`;
  });
  check(users && fs.existsSync(users), `could not find the [users] file line in ${CONFIG}`, users);
  check(!/^\[oauth\]/m.test(toml), `${CONFIG} already has an [oauth] table; this test adds its own`);
  toml += `
# --- added by tests/e2e/oauth.e2e.mjs ---
[oauth]
public_url = "http://127.0.0.1:${gatewayPort}"
link_by_verified_email = true

[[oauth.providers]]
kind = "oidc"
name = "${PROVIDER}"
display_name = "${PROVIDER_LABEL}"
issuer = "${issuer}"
client_id = "${CLIENT_ID}"
client_secret = "${CLIENT_SECRET}"
`;
  const file = path.join(dir, 'gateway-oauth.toml');
  fs.writeFileSync(file, toml);
  fs.copyFileSync(file, artifact('gateway-oauth.toml'));
  return file;
}

// ---------------------------------------------------------------------------------------------
// the person's steps

/** A wait armed before the action that triggers it: if a check fails first, its later
 *  rejection (the browser closing) must not crash the run as an unhandled rejection. */
function armed(promise) {
  promise.catch(() => {});
  return promise;
}

/** Browsers in this test reach 127.0.0.1 only (the provider's pages @import a Google font). */
async function loopbackOnly(browser) {
  await browser.ctx.route((url) => url.hostname !== '127.0.0.1', (route) => route.abort());
}

/** On the sign-in page at `base`: the "Sign in with Corp SSO" button, checked as a person sees it
 *  and as the form needs it. Returns its locator. */
async function providerButton(browser) {
  const { page } = browser;
  const button = page.getByRole('button', { name: BUTTON, exact: true });
  try {
    await button.waitFor({ state: 'visible', timeout: 5_000 });
  } catch {
    const buttons = await page.getByRole('button').allInnerTexts();
    fail(`${browser.name}: the sign-in page has no visible "${BUTTON}" button: is sign-in through providers in this gateway binary, and does it read [[oauth.providers]]? (rebuild: cargo build --bin dalea-gateway)`,
      { buttons, page: (await page.locator('body').innerText()).slice(0, 500) });
  }
  const info = await button.evaluate((b) => {
    const remember = document.querySelector('input[type="checkbox"][name="remember_me"]');
    const password = [...document.querySelectorAll('button')].find((x) => x.textContent.trim() === 'Sign in');
    return {
      formaction: b.getAttribute('formaction'),
      formnovalidate: b.hasAttribute('formnovalidate'),
      type: b.type,
      sameFormAsRememberMe: !!remember && b.form === remember.form,
      formMethod: b.form && b.form.method,
      afterPasswordButton: !!password && !!(password.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING),
    };
  });
  equal(info.formaction, START_PATH, `${browser.name}: the "${BUTTON}" button's formaction`);
  check(info.formnovalidate, `${browser.name}: the "${BUTTON}" button needs formnovalidate (the email and password fields are required)`, info);
  equal(info.type, 'submit', `${browser.name}: the "${BUTTON}" button's type`);
  check(info.sameFormAsRememberMe && info.formMethod === 'post', `${browser.name}: the "${BUTTON}" button should submit (POST) the form with the "Keep me signed in" checkbox`, info);
  check(info.afterPasswordButton, `${browser.name}: the "${BUTTON}" button should come under the email/password form's "Sign in" button`, info);
  return button;
}

/** Opens `TARGET` anonymously: must land on the sign-in page with rd=TARGET. */
async function openTargetSignedOut(browser, base) {
  const { page } = browser;
  await page.goto(base + TARGET);
  const landed = pathAndQuery(page.url());
  equal(landed.path, SIGNIN_PATH, `${browser.name}: anonymous GET ${TARGET} should land on the sign-in page (URL ${page.url()})`);
  equal(landed.rd, TARGET, `${browser.name}: rd= on the sign-in page`);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  return landed;
}

/** Clicks "Sign in with Corp SSO" and waits until the browser is at the provider. Returns the
 *  form fields the start POST carried. */
async function clickProviderButton(browser, button, issuer) {
  const { page } = browser;
  const startPost = armed(page.waitForRequest((r) => r.method() === 'POST' && new URL(r.url()).pathname === START_PATH));
  const atProvider = armed(page.waitForURL((u) => u.origin === issuer));
  await button.click();
  const post = await startPost;
  const startResp = await post.response();
  if (!startResp || startResp.status() !== 303) {
    await page.waitForLoadState().catch(() => {});
    const shown = await page.locator('body').innerText().catch(() => '(no page)');
    const hint = startResp && startResp.status() === 404 ? ' (404: the sign-in page offers the provider, but this gateway binary has no such route)' : '';
    fail(`${browser.name}: POST ${START_PATH} should answer 303 to the provider, got ${startResp && startResp.status()}${hint}`, shown.slice(0, 500));
  }
  const location = (await startResp.allHeaders()).location || '';
  check(location.startsWith(`${issuer}/`), `${browser.name}: POST ${START_PATH} should send the browser to the provider ${issuer}`, location);
  await atProvider;
  return { form: new URLSearchParams(post.postData() || ''), authorize: new URL(location) };
}

/** Which provider page the browser is on: "login" or "consent" (from the form's prompt field). */
async function providerPage(browser) {
  const prompt = browser.page.locator('form input[name="prompt"]');
  await prompt.waitFor({ state: 'attached' });
  return prompt.getAttribute('value');
}

/** On the provider's login page: logs in as `login`. Waits for the next provider page. */
async function logInAtProvider(browser, login) {
  const { page } = browser;
  equal(await providerPage(browser), 'login', `${browser.name}: the provider page should be its login page (URL ${page.url()})`);
  await page.getByRole('heading', { name: 'Sign-in' }).waitFor();
  await page.locator('input[name="login"]').fill(login);
  await page.locator('input[name="password"]').fill('any password');
  // Each interaction has its own URL (/interaction/<uid>): wait until this one is left.
  const before = page.url();
  const left = armed(page.waitForURL((u) => u.href !== before));
  await page.getByRole('button', { name: 'Sign-in', exact: true }).click();
  await left;
}

/** Waits until the browser is back on the gateway (`base`) at `pathname`; returns the callback
 *  request the provider sent it to, and its response. */
async function backAtGateway(browser, base, pathname, trigger) {
  const { page } = browser;
  const callbackSeen = armed(page.waitForRequest((r) => r.url().startsWith(base + CALLBACK_PATH + '?')));
  const arrived = armed(page.waitForURL((u) => u.origin === base && u.pathname === pathname));
  await trigger();
  const callback = await callbackSeen;
  await arrived;
  return { callback, response: await callback.response() };
}

async function apiSessions(browser, base) {
  const res = await browser.page.request.get(base + SESSIONS_API, { headers: { accept: 'application/json' } });
  check(res.ok(), `${browser.name}: GET ${SESSIONS_API} answered ${res.status()}`, await res.text());
  const body = await res.json();
  check(Array.isArray(body.sessions), `${browser.name}: ${SESSIONS_API} has no "sessions" array`, body);
  return body.sessions;
}

/** The whoami page's identity rows (x-dalea-* request headers it was sent). */
async function whoamiIdentity(page) {
  return page.locator('tr.id').evaluateAll((trs) =>
    Object.fromEntries(trs.map((tr) => [tr.querySelector('th').textContent.trim(), tr.querySelector('td').textContent.trim()])));
}

/** On a page the gateway rendered after a provider sign-in did not complete: the sign-in form
 *  with an alert saying it was cancelled, nothing signed in. */
async function checkCancelledPage(browser, base, callback, response, when) {
  const { page } = browser;
  const cb = new URL(callback.url());
  equal(cb.searchParams.get('error'), 'access_denied', `${browser.name} (${when}): the provider's callback error`);
  check(response && response.status() === 401, `${browser.name} (${when}): the cancelled callback should answer the sign-in page (401), got ${response && response.status()}`);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  const alert = page.getByRole('alert');
  await alert.waitFor();
  const message = (await alert.innerText()).trim();
  check(/cancelled/i.test(message), `${browser.name} (${when}): the sign-in page should say the sign-in was cancelled`, message);
  check(message.includes(PROVIDER_LABEL), `${browser.name} (${when}): the message should name "${PROVIDER_LABEL}"`, message);
  equal(await page.locator('input[name="rd"]').inputValue(), TARGET, `${browser.name} (${when}): rd kept in the sign-in form`);
  check(!(await sessionCookie(browser)), `${browser.name} (${when}): no ${SESSION_COOKIE} cookie after a cancelled sign-in`, await browser.ctx.cookies());
  const r = await page.request.get(base + TARGET, { maxRedirects: 0, headers: { accept: 'text/html' } });
  check([302, 303].includes(r.status()), `${browser.name} (${when}): ${TARGET} should still redirect to sign-in, got ${r.status()}`);
  return message;
}

// ---------------------------------------------------------------------------------------------
// the test

async function run() {
  const binPath = preflight([
    'oauth-signin.png', 'oauth-provider-login.png', 'oauth-provider-consent.png', 'oauth-sessions.png',
    'oauth-cancelled.png', 'oauth-sessions-both.png', 'failure-A.png', 'failure-B.png',
    'provider-oauth.log', 'gateway-oauth.toml',
  ]);
  const provider = await startProvider();
  const issuer = provider.issuer;
  ok(`OpenID provider (oidc-provider) listening at ${issuer}: client ${CLIENT_ID}, account ${LOGIN} <${EMAIL}> (verified)`);

  const configDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dalea-e2e-oauth-config-'));
  onCleanup(() => fs.rmSync(configDir, { recursive: true, force: true }));
  const g = await startGateway(binPath, 'gateway-oauth.log', { config: ({ port }) => oauthConfig(configDir, port, issuer) });
  const base = `http://127.0.0.1:${g.port}`;
  ok(`gateway ${path.basename(binPath)} listening on ${base} with config/dev.toml + [oauth] provider "${PROVIDER}" (config in artifacts/gateway-oauth.toml)`);

  // --- A: sign in with Corp SSO, remember me on ----------------------------------------------
  const A = await launch('A');
  await loopbackOnly(A);
  const landed = await openTargetSignedOut(A, base);
  const buttonA = await providerButton(A);
  await screenshot(A, 'oauth-signin.png');
  ok(`A: GET ${TARGET} → ${landed.url.pathname}${landed.url.search}; "${BUTTON}" is under the form (formaction ${START_PATH}, formnovalidate) (screenshot oauth-signin.png)`);

  const remember = A.page.locator('input[type="checkbox"][name="remember_me"]');
  await A.page.getByLabel('Keep me signed in on this device').check();
  check(await remember.isChecked(), 'A: the "Keep me signed in on this device" checkbox should be ticked');
  const startA = await clickProviderButton(A, buttonA, issuer);
  equal(startA.form.get('remember_me'), 'on', 'A: remember_me in the start POST');
  equal(startA.form.get('rd'), TARGET, 'A: rd in the start POST');
  check(startA.form.get('csrf_token'), 'A: the start POST should carry the form\'s csrf_token', Object.fromEntries(startA.form));
  const q = startA.authorize.searchParams;
  equal(q.get('client_id'), CLIENT_ID, 'A: client_id in the authorization request');
  equal(q.get('redirect_uri'), base + CALLBACK_PATH, 'A: redirect_uri in the authorization request');
  check(q.get('state') && q.get('nonce') && q.get('code_challenge') && q.get('code_challenge_method') === 'S256',
    'A: the authorization request should carry state, nonce and a PKCE S256 challenge', Object.fromEntries(q));
  ok(`A: ticked "Keep me signed in", clicked "${BUTTON}": POST ${START_PATH} (remember_me=on, rd=${TARGET}) → 303 → ${startA.authorize.pathname} at the provider (scope "${q.get('scope')}", PKCE S256)`);

  await screenshot(A, 'oauth-provider-login.png');
  await logInAtProvider(A, LOGIN);
  equal(await providerPage(A), 'consent', `A: after logging in, the provider should ask for consent (URL ${A.page.url()})`);
  await A.page.getByRole('heading', { name: 'Authorize' }).waitFor();
  await screenshot(A, 'oauth-provider-consent.png');
  ok(`A: logged in at the provider as ${LOGIN}; it asks for consent (screenshots oauth-provider-login.png, oauth-provider-consent.png)`);

  const backA = await backAtGateway(A, base, TARGET, () => A.page.getByRole('button', { name: 'Continue', exact: true }).click());
  const cbA = new URL(backA.callback.url());
  check(cbA.searchParams.get('code') && cbA.searchParams.get('state') === q.get('state'),
    'A: the provider should send the browser back with a code and the same state', cbA.search);
  check(backA.response && backA.response.status() === 303, `A: the callback should redirect (303), got ${backA.response && backA.response.status()}`);
  equal((await backA.response.allHeaders()).location, TARGET, 'A: the callback\'s redirect');
  const text = await A.page.locator('body').innerText();
  check(text.includes(`Signed in as ${EMAIL}`), `A: back on ${TARGET}, whoami should say "Signed in as ${EMAIL}"`, text.slice(0, 400));
  const who = await whoamiIdentity(A.page);
  equal(who['x-dalea-user'], USER_ID, `A: x-dalea-user the app was sent (the users file's person ${EMAIL}, linked by verified email)`);
  equal(who['x-dalea-email'], EMAIL, 'A: x-dalea-email the app was sent');
  ok(`A: consented → ${CALLBACK_PATH}?code=…&state=… → 303 ${TARGET}: "Signed in as ${EMAIL}" (x-dalea-user ${who['x-dalea-user']})`);

  const aCookie = await sessionCookie(A);
  check(aCookie, `A: no ${SESSION_COOKIE} cookie after signing in with ${PROVIDER_LABEL}`, await A.ctx.cookies());
  check(aCookie.expires > Date.now() / 1000 + 3600, `A (remember me): ${SESSION_COOKIE} should be a persistent cookie`, aCookie);
  check(aCookie.httpOnly, `${SESSION_COOKIE} must be HttpOnly`, aCookie);
  ok(`A: ${SESSION_COOKIE} is persistent (expires ${new Date(aCookie.expires * 1000).toISOString()}), HttpOnly, SameSite=${aCookie.sameSite}`);

  await A.page.goto(base + SESSIONS_PATH);
  equal(new URL(A.page.url()).pathname, SESSIONS_PATH, 'A: URL of the sessions page');
  await A.page.getByRole('heading', { name: 'Security' }).waitFor();
  const rowsA = await readRows(A.page);
  equal(rowsA.length, 1, 'A: number of rows on the sessions page');
  const rowA = rowsA[0];
  check(rowA.thisIsYou, 'A\'s row should carry "This is you"', rowA);
  const methodA = rowA.fields['Signed in'] || '';
  check(methodA.startsWith(`OAuth (${PROVIDER_LABEL})`), `A's row: sign-in method should be "OAuth (${PROVIDER_LABEL})"`, rowA.fields);
  await screenshot(A, 'oauth-sessions.png');
  const apiA = await apiSessions(A, base);
  const selfA = apiA.find((s) => s.current);
  check(selfA, 'A: GET /.dalea/api/sessions lists no current session', apiA);
  equal(selfA.sign_in_method, `oauth:${PROVIDER}`, 'A: JSON sign_in_method');
  equal(selfA.remember_me, true, 'A: JSON remember_me');
  ok(`A: sessions page: 1 row, "This is you", signed in "${methodA}"; ${SESSIONS_API}: sign_in_method ${selfA.sign_in_method}, remember_me true (screenshot oauth-sessions.png)`);

  // --- B: cancel at the provider's login page, then deny consent, then the password ------------
  const B = await launch('B');
  await loopbackOnly(B);
  await openTargetSignedOut(B, base);
  const startB = await clickProviderButton(B, await providerButton(B), issuer);
  check(!startB.form.has('remember_me'), 'B: remember_me should not be in the start POST (not ticked)', Object.fromEntries(startB.form));
  equal(await providerPage(B), 'login', `B: a fresh browser should get the provider's login page (URL ${B.page.url()})`);
  const cancel1 = await backAtGateway(B, base, CALLBACK_PATH, () => B.page.getByRole('link', { name: '[ Cancel ]' }).click());
  const msg1 = await checkCancelledPage(B, base, cancel1.callback, cancel1.response, 'cancel on the login page');
  await screenshot(B, 'oauth-cancelled.png');
  ok(`B: clicked "${BUTTON}", then "[ Cancel ]" on the provider's login page → ${CALLBACK_PATH}?error=access_denied → ${cancel1.response.status()} sign-in page: "${msg1}" (screenshot oauth-cancelled.png)`);

  // The same page still offers the provider: try again, log in, and deny consent.
  await clickProviderButton(B, await providerButton(B), issuer);
  await logInAtProvider(B, LOGIN);
  equal(await providerPage(B), 'consent', `B: after logging in, the provider should ask for consent (URL ${B.page.url()})`);
  const cancel2 = await backAtGateway(B, base, CALLBACK_PATH, () => B.page.getByRole('link', { name: '[ Cancel ]' }).click());
  const msg2 = await checkCancelledPage(B, base, cancel2.callback, cancel2.response, 'deny consent');
  ok(`B: tried again from that page, logged in as ${LOGIN} and cancelled on the consent page → ${cancel2.response.status()} sign-in page: "${msg2}"`);

  // The password form on the same page still works.
  await B.page.locator('input[name="email"]').fill(EMAIL);
  await B.page.locator('input[name="password"]').fill(PASSWORD);
  const bHome = armed(B.page.waitForURL((u) => u.origin === base && u.pathname === TARGET));
  await B.page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await bHome;
  const textB = await B.page.locator('body').innerText();
  check(textB.includes(`Signed in as ${EMAIL}`), `B: after the password sign-in, ${TARGET} should say "Signed in as ${EMAIL}"`, textB.slice(0, 400));
  const bCookie = await sessionCookie(B);
  check(bCookie, `B: no ${SESSION_COOKIE} cookie after the password sign-in`);
  equal(bCookie.expires, -1, `B (no remember me): ${SESSION_COOKIE} should be a browser-session cookie; expires`);
  ok(`B: the password form on that page signs in: back on ${TARGET}, "Signed in as ${EMAIL}", browser-session cookie`);

  await B.page.goto(base + SESSIONS_PATH);
  await B.page.getByRole('heading', { name: 'Security' }).waitFor();
  const rowsB = await readRows(B.page);
  const mine = rowsB.find((r) => r.thisIsYou);
  const other = rowsB.find((r) => !r.thisIsYou);
  softly('B: the sessions page lists both ways in', () => {
    equal(rowsB.length, 2, 'B: number of rows on the sessions page');
    check(mine && (mine.fields['Signed in'] || '').startsWith('Email and password'), 'B\'s own row: "Email and password"', rowsB);
    check(other && (other.fields['Signed in'] || '').startsWith(`OAuth (${PROVIDER_LABEL})`), `A's row seen by B: "OAuth (${PROVIDER_LABEL})"`, rowsB);
    ok(`B: sessions page: its own row "${mine.fields['Signed in']}" ("This is you"), A's row "${other.fields['Signed in']}"`);
  });
  await screenshot(B, 'oauth-sessions-both.png');

  for (const br of [A, B]) check(br.unexpectedPages.length === 0, `${br.name}: unexpected extra pages were opened`, br.unexpectedPages);
}

runTest('oauth', run);

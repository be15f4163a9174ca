#!/usr/bin/env node
// End-to-end test of API keys (Settings → Security → API keys, and a script using a key) in real
// headless Chromium, against the contract in the README's "Scripts and API clients".
//
// Starts the gateway binary given in $DALEA_BIN with config/dev.toml on free loopback ports and a
// fresh data dir (its route "/api" goes to the whoami demo app with `api_keys = true`), then:
//   1. signs the demo user in from two independent Chromium instances: A, and B, another device
//      of the same person (it presents as Firefox on Windows);
//   2. A opens Security → "API keys", creates a key "e2e script" expiring in 30 days: the page
//      shows the key once (#new-api-key, `dalea_` + 49 base62 characters) and lists the name
//      and prefix; opening the tab again no longer shows the key (api-keys.png);
//   3. a script outside the browser (Node's fetch, no cookies) calls GET /api/… with
//      `Authorization: Bearer <key>` → 200 from whoami, which received X-Dalea-Auth-Method
//      api_key; without the header → no 200; the key on a browser-only route → 401;
//   4. A signs B out on the Sessions tab (B's next navigation lands on sign-in) — the key still
//      works; A signs itself out with "Sign out" — the key still works;
//   5. A signs in again and revokes the key with its × ("The API key was revoked"): the script
//      now gets 401 with JSON error "invalid_api_key".
//
// Usage: DALEA_BIN=/path/to/dalea-gateway node api_keys.e2e.mjs   (or ./run.sh api_keys).
// Optional: CHROMIUM_PATH, E2E_TRACE=1 (as for sessions.e2e.mjs). Exit code 0 = pass. The
// screenshot (api-keys.png, failure-{A,B}.png) and the gateway log (gateway-api_keys.log) go to
// tests/e2e/artifacts/.

import path from 'node:path';
import {
  EMAIL, SESSION_COOKIE, SESSIONS_PATH, SIGNIN_PATH,
  check, equal, fail, launch, ok, pathAndQuery, preflight, readRows, runTest, screenshot, sessionCookie, signIn, softly,
  startGateway,
} from './harness.mjs';

const API_KEYS_PATH = '/.dalea/settings/security/api-keys';
const API_KEYS_API = '/.dalea/api/api-keys';
const SESSIONS_API = '/.dalea/api/sessions';
const KEY_RE = /^dalea_[0-9A-Za-z]{49}$/;
const KEY_NAME = 'e2e script';
const SCRIPT_PATH = '/api/whatever'; // [[routes]] "api" in config/dev.toml: api_keys = true
const BROWSER_ONLY_PATH = '/some/page'; // [[routes]] "app": no api_keys
const FIREFOX_WIN_UA = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0';
const DAY_MS = 86_400_000;

// ---------------------------------------------------------------------------------------------
// the script side: plain Node fetch, no browser, no cookie jar

/** One GET from "a script": never follows redirects, sends no cookie. */
async function scriptGet(base, target, { key, headers = {} } = {}) {
  const h = { 'user-agent': 'dalea-e2e-script/1.0', ...headers };
  if (key) h.authorization = `Bearer ${key}`;
  const res = await fetch(base + target, { headers: h, redirect: 'manual' });
  const text = await res.text();
  let json = null;
  if ((res.headers.get('content-type') || '').includes('application/json')) {
    try { json = JSON.parse(text); } catch { /* checked by the caller */ }
  }
  return { status: res.status, headers: res.headers, text, json };
}

function unescapeHtml(s) {
  return s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&amp;/g, '&');
}

/** The whoami page's table of request headers (as the upstream received them), from its HTML. */
function whoamiHeadersFromHtml(html) {
  const out = {};
  for (const m of html.matchAll(/<tr(?: class="id")?><th>(.*?)<\/th><td>(.*?)<\/td><\/tr>/g)) {
    out[unescapeHtml(m[1])] = unescapeHtml(m[2]);
  }
  return out;
}

/** The script calls SCRIPT_PATH with the key: must be whoami, seeing the key's identity. */
async function expectKeyWorks(base, key, keyId, when) {
  const r = await scriptGet(base, SCRIPT_PATH, { key });
  check(r.status === 200, `script ${when}: GET ${SCRIPT_PATH} with the key should answer 200, got ${r.status}`, r.text.slice(0, 400));
  check(r.text.includes('<title>whoami</title>'), `script ${when}: GET ${SCRIPT_PATH} should be the whoami page`, r.text.slice(0, 400));
  const seen = whoamiHeadersFromHtml(r.text);
  equal(seen['x-dalea-auth-method'], 'api_key', `script ${when}: x-dalea-auth-method the upstream received`);
  equal(seen['x-dalea-email'], EMAIL, `script ${when}: x-dalea-email the upstream received`);
  equal(seen['x-dalea-auth-strength'], 'basic', `script ${when}: x-dalea-auth-strength the upstream received`);
  equal(seen['x-dalea-api-key'], keyId, `script ${when}: x-dalea-api-key the upstream received`);
  check(!('x-dalea-session' in seen), `script ${when}: the upstream must get no x-dalea-session for a key`, seen);
  check(!('authorization' in seen), `script ${when}: the Authorization header carrying the key must not reach the upstream`, seen);
  check(!r.text.includes(key), `script ${when}: the key itself must not reach the upstream`);
  return seen;
}

// ---------------------------------------------------------------------------------------------
// the browser side

/** Makes the page present as Firefox on Windows (UA only, no client hints), before its first
 *  navigation — the same emulation as B in sessions.e2e.mjs. */
async function emulateFirefoxOnWindows(browser) {
  const cdp = await browser.ctx.newCDPSession(browser.page);
  await cdp.send('Emulation.setUserAgentOverride', { userAgent: FIREFOX_WIN_UA, platform: 'Win32', acceptLanguage: 'en-US' });
}

/** Everything the test needs from the rows of the API keys tab. */
async function readKeyRows(page) {
  return page.locator('li.row[data-key-id]').evaluateAll((lis) =>
    lis.map((li) => {
      const name = li.querySelector('.name');
      const fields = {};
      for (const dt of li.querySelectorAll('dt')) {
        const dd = dt.nextElementSibling;
        fields[dt.textContent.trim()] = dd ? dd.textContent.replace(/\s+/g, ' ').trim() : null;
      }
      const created = li.querySelector('dt + dd time');
      const x = li.querySelector('button.x');
      return {
        id: li.getAttribute('data-key-id'),
        name: name ? [...name.childNodes].filter((n) => n.nodeType === Node.TEXT_NODE).map((n) => n.textContent).join('').trim() : null,
        prefix: li.querySelector('.prefix')?.textContent.trim() ?? null,
        badges: [...li.querySelectorAll('.badge')].map((b) => b.textContent.trim()),
        fields,
        createdAt: created && created.getAttribute('datetime'),
        x: x ? { label: x.getAttribute('aria-label'), visible: x.offsetWidth > 0 && x.offsetHeight > 0 } : null,
        formAction: x && x.form ? x.form.getAttribute('action') : null,
      };
    }));
}

/** Opens the API keys tab the way a person does: Security → "API keys" in the tab bar. */
async function openApiKeysTab(browser, base) {
  const { page } = browser;
  if (new URL(page.url()).pathname !== SESSIONS_PATH) await page.goto(base + SESSIONS_PATH);
  await page.getByRole('navigation', { name: 'Security settings' }).getByRole('link', { name: 'API keys' }).click();
  await page.waitForURL((u) => u.pathname === API_KEYS_PATH);
  await page.getByRole('heading', { name: 'Security' }).waitFor();
  const current = await page.getByRole('navigation', { name: 'Security settings' }).locator('a[aria-current="page"]').innerText();
  equal(current.trim(), 'API keys', `${browser.name}: the current tab`);
}

async function apiJson(browser, base, target, key) {
  const res = await browser.page.request.get(base + target, { headers: { accept: 'application/json' } });
  const text = await res.text();
  check(res.ok(), `${browser.name}: GET ${target} answered ${res.status()}`, text);
  const body = JSON.parse(text);
  check(Array.isArray(body[key]), `${browser.name}: ${target} has no "${key}" array`, body);
  return { list: body[key], text };
}

/** "%-d %b %Y" of a time, in UTC (the expiry label on the tab). */
function dayLabel(ms) {
  const d = new Date(ms);
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  return `${d.getUTCDate()} ${months[d.getUTCMonth()]} ${d.getUTCFullYear()}`;
}

// ---------------------------------------------------------------------------------------------
// the test

async function run() {
  const binPath = preflight(['api-keys.png', 'failure-A.png', 'failure-B.png']);
  const g = await startGateway(binPath, 'gateway-api_keys.log');
  const base = `http://127.0.0.1:${g.port}`;
  ok(`gateway ${path.basename(binPath)} listening on ${base} (admin ${g.adminPort}, data dir ${g.dataDir})`);

  // --- 1. the same person signs in on two devices -----------------------------------------------
  const A = await launch('A');
  const B = await launch('B');
  await emulateFirefoxOnWindows(B);
  ok(`browsers up (${A.ctx.browser()?.version() ?? 'chromium'}): A = headless Chromium, B = Firefox on Windows (UA only)`);

  await signIn(A, base);
  await signIn(B, base);
  const bSelf = (await apiJson(B, base, SESSIONS_API, 'sessions')).list.find((s) => s.current);
  check(bSelf, `B: GET ${SESSIONS_API} lists no current session`);
  const idB = bSelf.id;
  equal(bSelf.device, 'Firefox on Windows', "B's session: device");

  // --- 2. A creates a key on the API keys tab ----------------------------------------------------
  const { page } = A;
  await openApiKeysTab(A, base);
  equal(await readKeyRows(page).then((r) => r.length), 0, 'A: rows on the API keys tab before creating a key');
  check((await page.locator('body').innerText()).includes('No API keys yet.'), 'A: the empty tab should say "No API keys yet."');
  equal(await page.locator('#new-api-key').count(), 0, 'A: #new-api-key elements before creating a key');
  ok(`A: Security → "API keys" tab (${API_KEYS_PATH}): "No API keys yet."`);

  await page.getByLabel('Name', { exact: true }).fill(KEY_NAME);
  const chosen = await page.getByLabel('Expires', { exact: true }).selectOption({ label: 'in 30 days' });
  equal(JSON.stringify(chosen), JSON.stringify(['30']), 'A: value of the "in 30 days" expiry option');
  const createResponse = page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === API_KEYS_PATH);
  await page.getByRole('button', { name: 'Create API key' }).click();
  const cr = await createResponse;
  await page.waitForLoadState('domcontentloaded');
  // Post/redirect/get: the POST answers 303 back to the tab, which shows the key this once.
  if (cr.status() !== 303) {
    const alert = await page.getByRole('alert').innerText().catch(() => '(no alert)');
    fail(`A: the create POST should answer 303 back to the tab, got ${cr.status()}`, alert);
  }
  equal(new URL(page.url()).pathname, API_KEYS_PATH, 'A: the page after creating a key');
  const keyEl = page.locator('#new-api-key');
  await keyEl.waitFor();
  const key = (await keyEl.innerText()).trim();
  check(KEY_RE.test(key), `A: #new-api-key should match ${KEY_RE}`, key);
  const newKeyBox = (await page.locator('section.newkey').innerText()).replace(/\s+/g, ' ');
  check(newKeyBox.includes(KEY_NAME), `A: the new-key box should name the key "${KEY_NAME}"`, newKeyBox);
  check(/shown this once/.test(newKeyBox), 'A: the new-key box should say the key is shown this once', newKeyBox);

  const rows = await readKeyRows(page);
  equal(rows.length, 1, 'A: rows on the API keys tab after creating a key');
  const row = rows[0];
  equal(row.name, KEY_NAME, 'A: the row\'s name');
  check(row.prefix && row.prefix.endsWith('…'), 'A: the row should show the key\'s first characters followed by "…"', row);
  const prefix = row.prefix.slice(0, -1);
  check(prefix.startsWith('dalea_') && prefix.length > 'dalea_'.length && key.startsWith(prefix) && prefix.length < key.length - 20,
    'A: the row\'s prefix should be the first few characters of the key (and far from all of it)', { prefix, key });
  const keyId = row.id;
  check(keyId && !key.includes(keyId), 'A: the row should carry the key\'s id (not part of the secret)', row);
  equal(row.fields['Last used'], 'Never', 'A: the new row\'s "Last used"');
  const createdMs = Date.parse(row.createdAt);
  check(!Number.isNaN(createdMs) && Math.abs(createdMs - Date.now()) < 60_000, 'A: the row\'s creation time should be now', row);
  equal(row.fields.Expires, dayLabel(createdMs + 30 * DAY_MS), 'A: the row\'s "Expires" (30 days after creation)');
  check(row.x && row.x.visible && row.x.label === `Revoke API key ${KEY_NAME}`, 'A: the row should have a visible × "Revoke API key …"', row.x);
  equal(row.formAction, `${API_KEYS_PATH}/${keyId}/revoke`, 'A: the ×\'s form action');
  ok(`A: created "${KEY_NAME}" (in 30 days) → ${cr.status()}: #new-api-key shows ${key.slice(0, 10)}… (${key.length} chars); row "${row.name}" ${row.prefix}, expires ${row.fields.Expires}`);

  ok(`screenshot: ${await screenshot(A, 'api-keys.png')}`);

  // The JSON list agrees and never holds the key.
  const { list: jsonKeys, text: jsonText } = await apiJson(A, base, API_KEYS_API, 'api_keys');
  equal(jsonKeys.length, 1, `A: keys in ${API_KEYS_API}`);
  equal(jsonKeys[0].id, keyId, `A: id in ${API_KEYS_API}`);
  equal(jsonKeys[0].name, KEY_NAME, `A: name in ${API_KEYS_API}`);
  equal(jsonKeys[0].prefix, prefix, `A: prefix in ${API_KEYS_API}`);
  check(Math.abs(Date.parse(jsonKeys[0].expires_at) - Date.parse(jsonKeys[0].created_at) - 30 * DAY_MS) < 1000,
    `A: ${API_KEYS_API} expires_at should be 30 days after created_at`, jsonKeys[0]);
  check(!jsonText.includes(key) && !('key' in jsonKeys[0]), `A: ${API_KEYS_API} must never hold the key`, jsonKeys[0]);
  ok(`${API_KEYS_API} agrees (id ${keyId}, prefix ${prefix}, expires_at = created_at + 30 days) and does not hold the key`);

  // Reloading the page (a GET after the redirect): the key is gone for good, no second key is
  // created, the row stays.
  await page.reload();
  await page.waitForLoadState('domcontentloaded');
  equal(await page.locator('#new-api-key').count(), 0, 'A: #new-api-key elements after reloading the tab');
  check(!(await page.content()).includes(key), 'A: the reloaded tab must not contain the key anywhere');
  equal((await readKeyRows(page)).map((r) => r.id).join(','), keyId, 'A: rows after reloading the tab (no second key)');
  ok('A: reloaded the API keys tab: the key is not shown any more (not in the HTML), no second key, the row is still listed');

  // --- 3. a script uses the key ----------------------------------------------------------------
  const seen = await expectKeyWorks(base, key, keyId, 'with the new key');
  ok(`script (Node fetch, no cookie): GET ${SCRIPT_PATH} + Bearer key → 200 whoami: x-dalea-auth-method=${seen['x-dalea-auth-method']}, x-dalea-email=${seen['x-dalea-email']}, x-dalea-api-key=${seen['x-dalea-api-key']}, no Authorization/x-dalea-session upstream`);

  const anon = await scriptGet(base, SCRIPT_PATH);
  check(anon.status !== 200, `script without the key: GET ${SCRIPT_PATH} must not answer 200`, anon.text.slice(0, 300));
  check(anon.status === 401 || ([302, 303].includes(anon.status) && pathAndQuery(new URL(anon.headers.get('location') || '', base).href).path === SIGNIN_PATH),
    `script without the key: GET ${SCRIPT_PATH} should answer 401 or a redirect to ${SIGNIN_PATH}`, { status: anon.status, location: anon.headers.get('location') });
  const anonWhat = anon.json && anon.json.error ? ` {"error":"${anon.json.error}"}` : anon.headers.get('location') ? ` (Location ${anon.headers.get('location')})` : '';
  ok(`script without the key: GET ${SCRIPT_PATH} → ${anon.status}${anonWhat}`);

  const elsewhere = await scriptGet(base, BROWSER_ONLY_PATH, { key });
  softly('a key on a browser-only route is refused', () => {
    equal(elsewhere.status, 401, `script: GET ${BROWSER_ONLY_PATH} (route without api_keys) with the key: status`);
    equal(elsewhere.json && elsewhere.json.error, 'api_key_not_accepted', `script: GET ${BROWSER_ONLY_PATH} with the key: JSON error`);
    ok(`script: the key on ${BROWSER_ONLY_PATH} (no api_keys on that route) → 401 api_key_not_accepted`);
  });

  // --- 4. sessions come and go; the key stays ----------------------------------------------------
  await page.goto(base + SESSIONS_PATH);
  await page.getByRole('heading', { name: 'Security' }).waitFor();
  const sessionRows = await readRows(page);
  const rowB = sessionRows.find((r) => r.id === idB);
  check(rowB && rowB.x && rowB.x.visible, "A: the Sessions tab should list B's session with a visible ×", sessionRows);
  const revokeResponse = page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === `${SESSIONS_PATH}/${idB}/revoke`);
  await page.locator(`li.row[data-session-id="${idB}"] button.x`).click();
  const rr = await revokeResponse;
  check([302, 303].includes(rr.status()), `A: the session revoke POST should redirect back, got ${rr.status()}`);
  await page.getByRole('status').filter({ hasText: 'The session was signed out.' }).waitFor();
  equal((await readRows(page)).length, 1, 'A: sessions left after signing B out');
  ok(`A: × on B's session ("${rowB.device}") → ${rr.status()}, "The session was signed out."`);

  await B.page.goto(base + '/another/page');
  const landedB = pathAndQuery(B.page.url());
  equal(landedB.path, SIGNIN_PATH, `B: the next navigation after being signed out should land on the sign-in page (URL ${B.page.url()})`);
  check(!(await sessionCookie(B)), `B: the ${SESSION_COOKIE} cookie should be cleared`, await B.ctx.cookies());
  ok(`B: next navigation GET /another/page → ${landedB.url.pathname}${landedB.url.search}`);

  await expectKeyWorks(base, key, keyId, "after B's session was revoked");
  ok(`script: GET ${SCRIPT_PATH} with the key → 200 (api_key) after B's session was revoked`);

  const signOut = page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/.dalea/signout');
  await page.getByRole('button', { name: 'Sign out', exact: true }).click();
  const so = await signOut;
  await page.waitForURL((u) => u.pathname === SIGNIN_PATH);
  check(!(await sessionCookie(A)), `A: the ${SESSION_COOKIE} cookie should be gone after "Sign out"`, await A.ctx.cookies());
  ok(`A: "Sign out" → ${so.status()} → ${SIGNIN_PATH}, cookie cleared`);

  await expectKeyWorks(base, key, keyId, 'after A signed out');
  ok(`script: GET ${SCRIPT_PATH} with the key → 200 (api_key) after A signed out — no session of the person is left`);

  // --- 5. A signs in again and revokes the key ---------------------------------------------------
  await signIn(A, base);
  await openApiKeysTab(A, base);
  const before = await readKeyRows(page);
  equal(before.map((r) => r.id).join(','), keyId, 'A: rows on the API keys tab after signing in again');
  softly('"Last used" shows the script\'s use', () => {
    const used = before[0].fields['Last used'] || '';
    check(used !== 'Never' && used.includes('127.0.0.1'), 'A: after the script used the key, "Last used" should show a time and 127.0.0.1', before[0].fields);
    ok(`A: the key's "Last used": "${used}"`);
  });

  const keyRevoke = page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === `${API_KEYS_PATH}/${keyId}/revoke`);
  await page.locator(`li.row[data-key-id="${keyId}"] button.x`).click();
  const kr = await keyRevoke;
  check([302, 303].includes(kr.status()), `A: the key revoke POST should redirect back to the tab, got ${kr.status()}`);
  await page.waitForURL((u) => u.pathname === API_KEYS_PATH && u.searchParams.get('done') === 'revoked');
  const notice = (await page.getByRole('status').filter({ hasText: 'The API key was revoked' }).innerText()).trim();
  equal((await readKeyRows(page)).length, 0, 'A: rows on the API keys tab after revoking the key');
  check((await page.locator('body').innerText()).includes('No API keys yet.'), 'A: after revoking its only key the tab should say "No API keys yet."');
  ok(`A: × on "${KEY_NAME}" → ${kr.status()} → ${API_KEYS_PATH}?done=revoked: "${notice}", no keys left`);

  const refused = await scriptGet(base, SCRIPT_PATH, { key });
  equal(refused.status, 401, `script with the revoked key: GET ${SCRIPT_PATH} status`);
  check(refused.json, `script with the revoked key: the 401 should be JSON`, { contentType: refused.headers.get('content-type'), body: refused.text.slice(0, 300) });
  equal(refused.json.error, 'invalid_api_key', 'script with the revoked key: JSON error');
  const wwwAuth = refused.headers.get('www-authenticate') || '';
  softly('WWW-Authenticate on the revoked key', () => {
    check(/^Bearer\b/.test(wwwAuth) && wwwAuth.includes('error="invalid_token"'), 'script with the revoked key: WWW-Authenticate should be Bearer error="invalid_token"', wwwAuth);
  });
  ok(`script with the revoked key: GET ${SCRIPT_PATH} → 401 {"error":"${refused.json.error}"} (WWW-Authenticate: ${wwwAuth})`);

  // Revoking the key left A's session alone.
  await page.goto(base + BROWSER_ONLY_PATH);
  check((await page.locator('body').innerText()).includes(`Signed in as ${EMAIL}`), 'A: should still be signed in after revoking the key');
  ok('A is still signed in after revoking the key');

  for (const br of [A, B]) check(br.unexpectedPages.length === 0, `${br.name}: unexpected extra pages were opened`, br.unexpectedPages);
}

runTest('api_keys', run);

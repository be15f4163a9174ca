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
// sessions-after-revoke.png, failure-{A,B}.png) and the gateway log (gateway-sessions.log) go
// to tests/e2e/artifacts/ (gitignored). The gateway, browser and reporting helpers are in
// harness.mjs.

import path from 'node:path';
import {
  EMAIL, SESSION_COOKIE, SIGNIN_PATH, SESSIONS_PATH,
  check, equal, launch, ok, pathAndQuery, preflight, readRows, runTest, screenshot, sessionCookie, signIn, softly,
  startGateway,
} from './harness.mjs';

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

// ---------------------------------------------------------------------------------------------
// browser emulation and the sessions API

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

async function apiSessions(browser, base) {
  const res = await browser.page.request.get(base + SESSIONS_API, { headers: { accept: 'application/json' } });
  check(res.ok(), `${browser.name}: GET ${SESSIONS_API} answered ${res.status()}`, await res.text());
  const body = await res.json();
  check(Array.isArray(body.sessions), `${browser.name}: ${SESSIONS_API} has no "sessions" array`, body);
  return body.sessions;
}

// ---------------------------------------------------------------------------------------------
// the test

async function run() {
  const binPath = preflight(['sessions.png', 'sessions-after-revoke.png', 'failure-A.png', 'failure-B.png']);
  const g = await startGateway(binPath, 'gateway-sessions.log');
  const base = `http://127.0.0.1:${g.port}`;
  ok(`gateway ${path.basename(binPath)} listening on ${base} (admin ${g.adminPort}, data dir ${g.dataDir})`);

  const A = await launch('A');
  const B = await launch('B');
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
  ok(`screenshot: ${await screenshot(A, 'sessions.png')}`);

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
  await screenshot(A, 'sessions-after-revoke.png');
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

runTest('sessions', run);

#!/usr/bin/env node
// End-to-end test of passkeys in real headless Chromium with a CDP virtual authenticator
// (CTAP2.1, internal transport, resident keys, user verification that succeeds), on
// http://localhost:<port> — a secure context whose RP id is "localhost".
//
// Starts the gateway binary given in $DALEA_BIN with config/dev.toml whose [passkeys] origin is
// rewritten to this run's port (written to artifacts/gateway-passkeys.toml) and drives one
// Chromium instance:
//   1. signs in with the password, opens Settings → Security → Passkeys through the tab bar and
//      adds a passkey named "E2E laptop" (navigator.credentials.create via passkeys.js); the
//      authenticator now holds one resident credential for "localhost" (passkeys-added.png);
//   2. signs out, opens /some/page, lands on the sign-in page and clicks "Sign in with a passkey"
//      (no email typed): back on /some/page as demo@example.com, with a browser-session cookie
//      (remember me was not ticked);
//   3. the sessions page shows the row as signed in with "Passkey" and "Elevated (passkey)"
//      (passkeys-session.png); the passkey's "Last used" is filled in;
//   4. confirms it's you with "Use a passkey" on the elevation page and lands back on the
//      passkeys tab, removes the passkey with its ×: "No passkeys yet." (passkeys-removed.png);
//   5. signs out and tries the passkey still on the authenticator: the sign-in page says it is
//      not registered here, and no session cookie is set;
//   6. on http://127.0.0.1:<port> (not the configured origin) the sign-in page offers no passkey.
//
// Usage: DALEA_BIN=/path/to/dalea-gateway node passkeys.e2e.mjs   (or ./run.sh passkeys).
// Optional: CHROMIUM_PATH, E2E_TRACE=1. Screenshots (passkeys-*.png, failure-P.png) and the
// gateway log (gateway-passkeys.log) go to tests/e2e/artifacts/.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  CONFIG, EMAIL, SESSION_COOKIE, SESSIONS_PATH, SIGNIN_PATH,
  artifact, check, equal, fail, launch, ok, onCleanup, preflight, readRows, runTest, screenshot, sessionCookie,
  signIn, startGateway,
} from './harness.mjs';

const PASSKEYS_PATH = '/.dalea/settings/security/passkeys';
const ELEVATE_PATH = '/.dalea/elevate';
const TARGET = '/some/page';
const NAME = 'E2E laptop';
const NOT_REGISTERED = 'That passkey is not registered here';

/** config/dev.toml with its users file made absolute and [passkeys] on this run's port. */
function passkeysConfig(dir, port) {
  let toml = fs.readFileSync(CONFIG, 'utf8');
  let users = null;
  toml = toml.replace(/^(\s*file\s*=\s*)"([^"]*)"/m, (_all, lead, file) => {
    users = path.resolve(path.dirname(CONFIG), file);
    return `${lead}${JSON.stringify(users)}`;
  });
  check(users && fs.existsSync(users), `could not find the [users] file line in ${CONFIG}`, users);
  const origin = `http://localhost:${port}`;
  if (/^\[passkeys\]/m.test(toml)) {
    const before = toml;
    toml = toml.replace(/^(\[passkeys\][^[]*?^\s*origin\s*=\s*)"[^"]*"/m, (_all, lead) => `${lead}"${origin}"`);
    check(toml !== before, `${CONFIG} has a [passkeys] table without an origin line this test can rewrite`);
  } else {
    toml += `\n# --- added by tests/e2e/passkeys.e2e.mjs ---\n[passkeys]\norigin = "${origin}"\n`;
  }
  const file = path.join(dir, 'gateway-passkeys.toml');
  fs.writeFileSync(file, toml);
  fs.copyFileSync(file, artifact('gateway-passkeys.toml'));
  return file;
}

/** A wait armed before the action that triggers it (a failing check must not leave its
 *  rejection unhandled). */
function armed(promise) {
  promise.catch(() => {});
  return promise;
}

/** Adds the CDP virtual authenticator the note in data-and-peers.md §3a describes. */
async function addAuthenticator(browser) {
  const cdp = await browser.ctx.newCDPSession(browser.page);
  await cdp.send('WebAuthn.enable', { enableUI: false });
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2', ctap2Version: 'ctap2_1', transport: 'internal',
      hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true,
    },
  });
  return {
    id: authenticatorId,
    credentials: async () => (await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials,
  };
}

async function readPasskeyRows(page) {
  return page.locator('li.row[data-passkey-id]').evaluateAll((lis) =>
    lis.map((li) => {
      const fields = {};
      for (const dt of li.querySelectorAll('dt')) {
        const dd = dt.nextElementSibling;
        fields[dt.textContent.trim()] = dd ? dd.textContent.replace(/\s+/g, ' ').trim() : null;
      }
      const x = li.querySelector('button.x');
      return {
        id: li.getAttribute('data-passkey-id'),
        name: li.querySelector('.name')?.textContent.trim() ?? null,
        fields,
        x: x ? { label: x.getAttribute('aria-label'), visible: x.offsetWidth > 0 && x.offsetHeight > 0 } : null,
      };
    }));
}

async function signOut(browser, base) {
  const { page } = browser;
  if (!new URL(page.url()).pathname.startsWith('/.dalea/settings/')) await page.goto(base + SESSIONS_PATH);
  const landed = armed(page.waitForURL((u) => u.pathname === SIGNIN_PATH));
  await page.getByRole('button', { name: 'Sign out', exact: true }).click();
  await landed;
  check(!(await sessionCookie(browser)), `${browser.name}: the ${SESSION_COOKIE} cookie should be gone after signing out`, await browser.ctx.cookies());
}

/** Opens TARGET signed out and lands on the sign-in page with its passkey button showing. */
async function openSignInPage(browser, base) {
  const { page } = browser;
  await page.goto(base + TARGET);
  const url = new URL(page.url());
  equal(url.pathname, SIGNIN_PATH, `${browser.name}: signed out, GET ${TARGET} should land on the sign-in page (URL ${page.url()})`);
  equal(url.searchParams.get('rd'), TARGET, `${browser.name}: rd= on the sign-in page`);
  const button = page.getByRole('button', { name: 'Sign in with a passkey' });
  await button.waitFor({ state: 'visible' });
  return button;
}

async function run() {
  const binPath = preflight([
    'passkeys-added.png', 'passkeys-session.png', 'passkeys-removed.png', 'passkeys-refused.png',
    'failure-P.png', 'gateway-passkeys.toml',
  ]);
  const configDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dalea-e2e-passkeys-config-'));
  onCleanup(() => fs.rmSync(configDir, { recursive: true, force: true }));
  const g = await startGateway(binPath, 'gateway-passkeys.log', { config: ({ port }) => passkeysConfig(configDir, port) });
  const base = `http://localhost:${g.port}`;
  ok(`gateway ${path.basename(binPath)} listening; browsing ${base} (config/dev.toml with [passkeys] origin = "${base}", in artifacts/gateway-passkeys.toml)`);

  const P = await launch('P');
  const { page } = P;
  await page.goto(`${base}/public/`);
  const auth = await addAuthenticator(P);
  check(await page.evaluate(() => window.isSecureContext && typeof window.PublicKeyCredential === 'function'),
    'P: http://localhost should be a secure context with PublicKeyCredential');
  ok(`P: CDP virtual authenticator ${auth.id} (ctap2.1, internal, resident keys, user verification on)`);

  // --- 1. sign in with the password and add a passkey ------------------------------------------
  await signIn(P, base, { target: TARGET });
  await page.goto(base + SESSIONS_PATH);
  await page.getByRole('navigation', { name: 'Security settings' }).getByRole('link', { name: 'Passkeys' }).click();
  await page.waitForURL((u) => u.pathname === PASSKEYS_PATH);
  await page.getByRole('heading', { name: 'Security' }).waitFor();
  const tab = await page.getByRole('navigation', { name: 'Security settings' }).locator('a[aria-current="page"]').innerText();
  equal(tab.trim(), 'Passkeys', 'P: the current tab');
  check((await page.locator('body').innerText()).includes('No passkeys yet.'), 'P: a new account should have no passkeys');
  const name = page.getByLabel('Name', { exact: true });
  await name.waitFor({ state: 'visible' });
  await name.fill(NAME);
  const added = armed(page.waitForURL((u) => u.pathname === PASSKEYS_PATH && u.searchParams.get('done') === 'added'));
  await page.getByRole('button', { name: 'Add a passkey' }).click();
  await added.catch(async (e) => {
    const alert = await page.locator('[data-passkey-add-error]').innerText().catch(() => '');
    fail(`P: adding the passkey did not come back to ${PASSKEYS_PATH}?done=added: ${e.message}`, alert);
  });
  await page.getByRole('status').waitFor();
  const rows = await readPasskeyRows(page);
  equal(rows.length, 1, 'P: passkeys listed after adding one');
  equal(rows[0].name, NAME, 'P: the new passkey\'s name');
  equal(rows[0].fields['Last used'], 'Never', 'P: a passkey just added was never used');
  check(rows[0].fields.Created && rows[0].fields.Created.length > 0, 'P: "Created" should be shown', rows[0]);
  const creds = await auth.credentials();
  equal(creds.length, 1, 'P: credentials on the virtual authenticator');
  check(creds[0].isResidentCredential, 'P: the passkey should be a resident (discoverable) credential', creds[0]);
  equal(creds[0].rpId, 'localhost', 'P: the credential\'s RP id');
  const credId = creds[0].credentialId.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  equal(rows[0].id, credId, 'P: the row\'s id is the authenticator\'s credential id');
  await screenshot(P, 'passkeys-added.png');
  ok(`P: Settings → Security → Passkeys → "Add a passkey" named "${NAME}": listed (Created ${rows[0].fields.Created}, Last used Never); the authenticator holds a resident credential for "localhost" (screenshot passkeys-added.png)`);

  // --- 2. sign out, sign in with the passkey --------------------------------------------------
  await signOut(P, base);
  ok('P: signed out');
  const button = await openSignInPage(P, base);
  check(!(await page.locator('input[name="remember_me"]').isChecked()), 'P: remember me should not be ticked');
  const home = armed(page.waitForURL((u) => u.pathname === TARGET));
  await button.click();
  await home.catch(async (e) => {
    const alert = await page.locator('[data-passkey-error]').innerText().catch(() => '');
    fail(`P: "Sign in with a passkey" did not come back to ${TARGET}: ${e.message}`, alert);
  });
  const text = await page.locator('body').innerText();
  check(text.includes(`Signed in as ${EMAIL}`), `P: after the passkey sign-in, ${TARGET} should say "Signed in as ${EMAIL}"`, text.slice(0, 400));
  const cookie = await sessionCookie(P);
  check(cookie, `P: no ${SESSION_COOKIE} cookie after the passkey sign-in`, await P.ctx.cookies());
  equal(cookie.expires, -1, `P: remember me was not ticked, so ${SESSION_COOKIE} should be a browser-session cookie; expires`);
  ok(`P: "Sign in with a passkey" (no email typed) → back on ${TARGET}: "Signed in as ${EMAIL}", browser-session cookie`);

  // --- 3. the sessions page -------------------------------------------------------------------
  await page.goto(base + SESSIONS_PATH);
  await page.getByRole('heading', { name: 'Security' }).waitFor();
  const sessionRows = await readRows(page);
  const mine = sessionRows.find((r) => r.thisIsYou);
  check(mine, 'P: the sessions page should mark the current session "This is you"', sessionRows);
  const method = mine.fields['Signed in'] || '';
  check(method.startsWith('Passkey'), 'P: the current session\'s sign-in method should be "Passkey"', mine.fields);
  equal(mine.fields['Auth strength'], 'Elevated (passkey)', 'P: the current session\'s auth strength');
  check(mine.badges.includes('Elevated (passkey)'), 'P: the row should carry the "Elevated (passkey)" badge', mine.badges);
  await screenshot(P, 'passkeys-session.png');
  ok(`P: sessions page: this session signed in "${method}", auth strength "${mine.fields['Auth strength']}" (screenshot passkeys-session.png)`);

  await page.goto(base + PASSKEYS_PATH);
  const used = (await readPasskeyRows(page))[0];
  check(used && used.fields['Last used'] && used.fields['Last used'] !== 'Never', 'P: the passkey\'s "Last used" should be set by the sign-in', used);
  ok(`P: the passkey's "Last used" is now "${used.fields['Last used']}"`);

  // --- 4. confirm it's you with the passkey, then remove it -----------------------------------
  await page.goto(`${base}${ELEVATE_PATH}?rd=${encodeURIComponent(PASSKEYS_PATH)}`);
  await page.getByRole('heading', { name: 'Confirm it\'s you' }).waitFor();
  const back = armed(page.waitForURL((u) => u.pathname === PASSKEYS_PATH));
  await page.getByRole('button', { name: 'Use a passkey' }).click();
  await back.catch(async (e) => {
    const alert = await page.locator('[data-passkey-error]').innerText().catch(() => '');
    fail(`P: "Use a passkey" did not come back to ${PASSKEYS_PATH}: ${e.message}`, alert);
  });
  const before = await readPasskeyRows(page);
  check(before[0] && before[0].x && before[0].x.visible, 'P: after confirming, the passkey should have a visible × to remove it', before);
  equal(before[0].x.label, `Remove passkey ${NAME}`, 'P: the ×\'s accessible name');
  ok(`P: ${ELEVATE_PATH} → "Use a passkey" → back on the passkeys tab, which now offers "${before[0].x.label}"`);

  const removed = armed(page.waitForURL((u) => u.pathname === PASSKEYS_PATH && u.searchParams.get('done') === 'removed'));
  await page.getByRole('button', { name: `Remove passkey ${NAME}` }).click();
  await removed;
  const notice = (await page.getByRole('status').innerText()).trim();
  check(/removed/i.test(notice), 'P: the page should say the passkey was removed', notice);
  equal((await readPasskeyRows(page)).length, 0, 'P: passkeys listed after removing the only one');
  check((await page.locator('body').innerText()).includes('No passkeys yet.'), 'P: the list should say "No passkeys yet."');
  await screenshot(P, 'passkeys-removed.png');
  ok(`P: removed it with its ×: "${notice}" (screenshot passkeys-removed.png)`);

  // --- 5. the removed passkey no longer signs in ----------------------------------------------
  await signOut(P, base);
  equal((await auth.credentials()).length, 1, 'P: the authenticator still holds the (now removed) passkey');
  const again = await openSignInPage(P, base);
  await again.click();
  const alert = page.locator('[data-passkey-error]');
  await alert.waitFor({ state: 'visible' });
  const said = (await alert.innerText()).trim();
  check(said.includes(NOT_REGISTERED), `P: signing in with the removed passkey should say "${NOT_REGISTERED}…"`, said);
  equal(new URL(page.url()).pathname, SIGNIN_PATH, 'P: still on the sign-in page');
  check(!(await sessionCookie(P)), `P: no ${SESSION_COOKIE} cookie after the refused sign-in`, await P.ctx.cookies());
  await screenshot(P, 'passkeys-refused.png');
  ok(`P: the removed passkey is refused on the sign-in page: "${said}" (screenshot passkeys-refused.png)`);

  // --- 6. on another address of the same gateway, passkeys cannot work: no button ---------------
  const ipBase = `http://127.0.0.1:${g.port}`;
  await page.goto(`${ipBase}${SIGNIN_PATH}`);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await page.waitForFunction(() => document.readyState === 'complete');
  check(!(await page.getByRole('button', { name: 'Sign in with a passkey' }).isVisible()),
    `P: on ${ipBase} (not the passkeys origin ${base}) the sign-in page should not offer a passkey`);
  ok(`P: on ${ipBase} the sign-in page offers no passkey (they work only at ${base})`);

  check(P.unexpectedPages.length === 0, 'P: unexpected extra pages were opened', P.unexpectedPages);
}

runTest('passkeys', run);

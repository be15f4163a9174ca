// Passkey ceremonies on the gateway's own pages (served as /.dalea/assets/passkeys.js; the pages
// that load it allow script-src 'self' and nothing inline). Three uses, each switched on by the
// elements its page carries:
//   - sign-in page (#passkey-signin): "Sign in with a passkey" (discoverable credential);
//   - elevation page (#passkey-elevate): "Use a passkey" to confirm it's you;
//   - Settings → Security → Passkeys (#passkey-add): register a new passkey under a name.
// Each runs begin → navigator.credentials → finish against the gateway's JSON API; the server
// keeps the ceremony (challenge, who, where to return) and checks everything. Without
// PublicKeyCredential (an old browser, or not a secure context) the buttons stay hidden and the
// page says so; without JavaScript the rest of each page works as before.
'use strict';

(function () {
  const supported = typeof window.PublicKeyCredential === 'function' && !!navigator.credentials;

  // --- base64url <-> bytes (webauthn-rs sends and expects unpadded base64url) -----------------
  function fromB64u(text) {
    const b64 = text.replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i += 1) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }

  function toB64u(buffer) {
    const bytes = new Uint8Array(buffer);
    let bin = '';
    for (let i = 0; i < bytes.length; i += 1) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  /** A copy of `value` without null members (WebIDL dictionaries refuse null for sequences). */
  function dropNulls(value) {
    if (Array.isArray(value)) return value.map(dropNulls);
    if (value && typeof value === 'object') {
      const out = {};
      for (const [k, v] of Object.entries(value)) if (v !== null && v !== undefined) out[k] = dropNulls(v);
      return out;
    }
    return value;
  }

  function creationOptions(json) {
    const o = dropNulls(json);
    o.challenge = fromB64u(o.challenge);
    o.user = { ...o.user, id: fromB64u(o.user.id) };
    if (o.excludeCredentials) o.excludeCredentials = o.excludeCredentials.map((c) => ({ ...c, id: fromB64u(c.id) }));
    return o;
  }

  function requestOptions(json) {
    const o = dropNulls(json);
    o.challenge = fromB64u(o.challenge);
    if (o.allowCredentials) o.allowCredentials = o.allowCredentials.map((c) => ({ ...c, id: fromB64u(c.id) }));
    return o;
  }

  function registrationJson(cred) {
    const r = cred.response;
    const ext = cred.getClientExtensionResults ? cred.getClientExtensionResults() : {};
    const out = {
      id: cred.id,
      rawId: toB64u(cred.rawId),
      type: cred.type,
      response: {
        attestationObject: toB64u(r.attestationObject),
        clientDataJSON: toB64u(r.clientDataJSON),
      },
      // Only what the server reads; other extension outputs vary by browser.
      extensions: ext && ext.credProps ? { credProps: ext.credProps } : {},
    };
    if (r.getTransports) out.response.transports = r.getTransports();
    return out;
  }

  function assertionJson(cred) {
    const r = cred.response;
    return {
      id: cred.id,
      rawId: toB64u(cred.rawId),
      type: cred.type,
      response: {
        authenticatorData: toB64u(r.authenticatorData),
        clientDataJSON: toB64u(r.clientDataJSON),
        signature: toB64u(r.signature),
        userHandle: r.userHandle ? toB64u(r.userHandle) : null,
      },
      extensions: {},
    };
  }

  // --- talking to the gateway -------------------------------------------------------------------
  class Refused extends Error {}

  async function post(path, body, method = 'POST') {
    let resp;
    try {
      resp = await fetch(path, {
        method,
        credentials: 'same-origin',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify(body),
      });
    } catch (e) {
      throw new Refused('The gateway could not be reached. Check your connection and try again.');
    }
    let data = null;
    try {
      data = await resp.json();
    } catch (e) {
      data = null;
    }
    if (!resp.ok) {
      throw new Refused((data && data.message) || `The gateway answered ${resp.status}. Try again.`);
    }
    return data || {};
  }

  /** What to tell the person when the browser's own passkey step failed. */
  function browserMessage(err, what) {
    if (err instanceof Refused) return err.message;
    const name = err && err.name;
    if (name === 'NotAllowedError') {
      return `${what} was cancelled or timed out, or your device did not verify it's you. Try again when you are ready.`;
    }
    if (name === 'InvalidStateError') return 'This device already has a passkey for your account here.';
    if (name === 'SecurityError') return 'This page\'s address is not the one passkeys are set up for. Open the gateway at its configured address.';
    if (name === 'NotSupportedError') return 'This browser or device cannot create a passkey that verifies it\'s you.';
    if (name === 'AbortError') return `${what} was cancelled.`;
    return `${what} did not work${err && err.message ? `: ${err.message}` : ''}.`;
  }

  function showError(el, message) {
    if (!el) return;
    el.textContent = message;
    el.hidden = false;
  }

  function clearError(el) {
    if (!el) return;
    el.textContent = '';
    el.hidden = true;
  }

  /** The origin passkeys are set up for, when this page is not on it (then they cannot work). */
  function otherOrigin(el) {
    const want = el.getAttribute('data-origin');
    return want && want !== window.location.origin ? want : null;
  }

  function busy(button, on) {
    if (!button) return;
    button.disabled = on;
    button.setAttribute('aria-busy', on ? 'true' : 'false');
  }

  // --- sign-in page -----------------------------------------------------------------------------
  function setUpSignIn(box) {
    const button = box.querySelector('[data-passkey-signin]');
    const error = box.querySelector('[data-passkey-error]');
    // Without passkey support (or on another address than passkeys are set up for) the sign-in
    // page simply offers the other ways in.
    if (!supported || otherOrigin(box)) return;
    box.hidden = false;
    button.addEventListener('click', async () => {
      clearError(error);
      busy(button, true);
      try {
        const remember = document.querySelector('input[name="remember_me"]');
        const rd = document.querySelector('input[name="rd"]');
        const begun = await post('/.dalea/api/passkeys/signin/begin', {
          remember_me: !!(remember && remember.checked),
          rd: rd ? rd.value : '/',
        });
        const cred = await navigator.credentials.get({ publicKey: requestOptions(begun.publicKey) });
        const done = await post('/.dalea/api/passkeys/signin/finish', { ceremony: begun.ceremony, credential: assertionJson(cred) });
        window.location.assign(done.redirect || '/');
      } catch (err) {
        showError(error, browserMessage(err, 'Signing in with a passkey'));
        busy(button, false);
      }
    });
  }

  // --- elevation page ---------------------------------------------------------------------------
  function setUpElevate(box) {
    const button = box.querySelector('[data-passkey-elevate]');
    const error = box.querySelector('[data-passkey-error]');
    if (!supported) {
      showError(error, 'This browser cannot use passkeys.');
      box.hidden = false;
      if (button) button.hidden = true;
      return;
    }
    const elsewhere = otherOrigin(box);
    if (elsewhere) {
      showError(error, `Passkeys work only at ${elsewhere}: open this page there.`);
      box.hidden = false;
      if (button) button.hidden = true;
      return;
    }
    box.hidden = false;
    button.addEventListener('click', async () => {
      clearError(error);
      busy(button, true);
      try {
        const rd = box.getAttribute('data-rd') || '/';
        const begun = await post('/.dalea/api/elevate/passkey/begin', {});
        const cred = await navigator.credentials.get({ publicKey: requestOptions(begun.publicKey) });
        const done = await post('/.dalea/api/elevate/passkey/finish', { ceremony: begun.ceremony, credential: assertionJson(cred), rd });
        window.location.assign(done.redirect || rd);
      } catch (err) {
        showError(error, browserMessage(err, 'Confirming with a passkey'));
        busy(button, false);
      }
    });
  }

  // --- Settings → Security → Passkeys -----------------------------------------------------------
  function setUpAdd(form) {
    const error = document.querySelector('[data-passkey-add-error]');
    const button = form.querySelector('button[type="submit"]');
    if (!supported) {
      showError(error, 'This browser cannot create passkeys. Use a recent Chrome, Edge, Firefox or Safari.');
      return;
    }
    const elsewhere = otherOrigin(form);
    if (elsewhere) {
      showError(error, `Passkeys work only at ${elsewhere}: open this page there to add one.`);
      return;
    }
    form.hidden = false;
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearError(error);
      busy(button, true);
      try {
        const name = form.querySelector('input[name="name"]').value;
        const begun = await post('/.dalea/api/passkeys/register/begin', { name });
        const cred = await navigator.credentials.create({ publicKey: creationOptions(begun.publicKey) });
        await post('/.dalea/api/passkeys/register/finish', { ceremony: begun.ceremony, credential: registrationJson(cred) });
        window.location.assign(form.getAttribute('data-done') || window.location.pathname);
      } catch (err) {
        showError(error, browserMessage(err, 'Adding a passkey'));
        busy(button, false);
      }
    });
  }

  function start() {
    const signIn = document.getElementById('passkey-signin');
    if (signIn) setUpSignIn(signIn);
    const elevate = document.getElementById('passkey-elevate');
    if (elevate) setUpElevate(elevate);
    const add = document.getElementById('passkey-add');
    if (add) setUpAdd(add);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();

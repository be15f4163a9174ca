// A real OpenID Provider for the gateway's sign-in integration tests: panva's oidc-provider
// (pinned in package.json), configured entirely from one JSON document so each test can start
// its own on a free loopback port. Started and stopped by tests/support/oidc.rs.
//
//   node tests/oidc/provider.mjs '<json>'              (or the JSON in DALEA_OIDC_PROVIDER_CONFIG)
//
// Prints one line `listening <issuer>` on stdout when it accepts connections.
//
// The JSON (snake_case; only `port`, `clients` and `jwks` are required):
//   port                     loopback port to listen on (127.0.0.1)
//   issuer_path              "" (default) or a path such as "/<tenant>/v2.0": the issuer is
//                            http://127.0.0.1:<port><issuer_path> and every endpoint lives under it
//   clients                  [{ client_id, client_secret, redirect_uris: [...],
//                               token_endpoint_auth_method: "client_secret_basic" (default; a
//                                 client registered with it or "client_secret_post" may use either),
//                               id_token_signed_response_alg: "RS256" (default) | "ES256" | ...,
//                               any_loopback_port: false (true: a loopback redirect URI matches
//                                 whatever its port, RFC 8252 7.3; registers a native client) }]
//   accounts                 [{ sub, claims: { email, email_verified, name, ...any other } }]
//                            The person logs in by typing the `sub`; an unknown login is refused
//                            (the provider asks for the login again). Standard claims are released
//                            by their scope (email, profile); any other claim (e.g. Microsoft's
//                            `tid`) is released with `openid`, so it is always in the ID token.
//   conform_id_token_claims  false (default here, Google style: the claims of the requested
//                            scopes, email included, go into the ID token) | true (oidc-provider's
//                            default: they go to userinfo only)
//   jwks                     { keys: [private JWKs with kid, alg, use "sig"] } (see jwt.mjs keys):
//                            the signing keys, published at /jwks (public parts only)
//   scopes                   default ["openid", "offline_access", "email", "profile"]
//   ttl                      oidc-provider ttl overrides in seconds, e.g. { "IdToken": 600 }
//
// Test control, at the server root (outside the issuer path), loopback only like the rest:
//   POST /__test/next-id-token  {JSON}  alters the ID token of the next successful token
//        response, once (bad-input tests; the real one keeps the right nonce, aud, iss...):
//          set_claims {..}      claims set over the real ones     remove_claims ["email", ...]
//          header {..}          header fields set over the real ones
//          signer               "provider" (default: re-signed with the key that signed it),
//                               "none" (alg none, empty signature), or a private JWK
//          replace "<token>"    this token instead (nothing else applies)
//          omit true            no id_token in the response at all
//        answers 204.   DELETE /__test/next-id-token forgets it.
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

import { decodeToken, signToken, unsignedToken } from './jwt.mjs';

const raw = process.argv[2] ?? process.env.DALEA_OIDC_PROVIDER_CONFIG;
if (!raw) {
  console.error('provider.mjs: pass the configuration JSON as the first argument or in DALEA_OIDC_PROVIDER_CONFIG');
  process.exit(2);
}
const cfg = JSON.parse(raw);
for (const key of ['port', 'clients', 'jwks']) {
  if (cfg[key] === undefined) {
    console.error(`provider.mjs: the configuration has no "${key}"`);
    process.exit(2);
  }
}

const host = '127.0.0.1';
const issuerPath = (cfg.issuer_path ?? '').replace(/\/+$/, '');
if (issuerPath && !issuerPath.startsWith('/')) {
  console.error('provider.mjs: issuer_path must start with "/"');
  process.exit(2);
}
const issuer = `http://${host}:${cfg.port}${issuerPath}`;

// Which scope releases a standard claim; any other claim an account has goes with `openid`.
const STANDARD = {
  email: ['email', 'email_verified'],
  profile: ['name', 'given_name', 'family_name', 'middle_name', 'nickname', 'preferred_username',
    'profile', 'picture', 'website', 'gender', 'birthdate', 'zoneinfo', 'locale', 'updated_at'],
};
const standardNames = new Set(Object.values(STANDARD).flat());
const accounts = new Map();
const extraNames = new Set();
for (const account of cfg.accounts ?? []) {
  if (typeof account.sub !== 'string' || !account.sub) {
    console.error('provider.mjs: every account needs a non-empty "sub"');
    process.exit(2);
  }
  const claims = account.claims ?? {};
  for (const name of Object.keys(claims)) {
    if (!standardNames.has(name) && name !== 'sub') extraNames.add(name);
  }
  accounts.set(account.sub, { ...claims, sub: account.sub });
}

const clients = cfg.clients.map((c) => {
  const client = {
    client_id: c.client_id,
    client_secret: c.client_secret,
    redirect_uris: c.redirect_uris,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: c.token_endpoint_auth_method ?? 'client_secret_basic',
    id_token_signed_response_alg: c.id_token_signed_response_alg ?? 'RS256',
  };
  if (c.any_loopback_port) client.application_type = 'native';
  return client;
});

const configuration = {
  clients,
  jwks: cfg.jwks,
  async findAccount(_ctx, id) {
    const claims = accounts.get(id);
    if (!claims) return undefined;
    return { accountId: id, async claims() { return { ...claims }; } };
  },
  claims: {
    openid: ['sub', ...extraNames],
    ...STANDARD,
  },
  scopes: cfg.scopes ?? ['openid', 'offline_access', 'email', 'profile'],
  conformIdTokenClaims: cfg.conform_id_token_claims ?? false,
  pkce: { required: () => true },
  clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
  // Fresh per start: a restart forgets every session, like a provider that lost its state.
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  ttl: {
    AccessToken: 3600, AuthorizationCode: 60, IdToken: 3600, Interaction: 600, Session: 86400, Grant: 86400,
    ...(cfg.ttl ?? {}),
  },
};

const provider = new Provider(issuer, configuration);

// The tamper a test asked for with POST /__test/next-id-token, until a token response uses it.
let nextIdToken;
function tamper(idToken, t) {
  if (typeof t.replace === 'string') return t.replace;
  const { header, claims } = decodeToken(idToken);
  for (const name of t.remove_claims ?? []) delete claims[name];
  Object.assign(claims, t.set_claims ?? {});
  const signer = t.signer ?? 'provider';
  if (signer === 'none') return unsignedToken({ header: t.header ?? {}, claims });
  const jwk = signer === 'provider' ? cfg.jwks.keys.find((k) => k.kid === header.kid) : signer;
  return signToken({ jwk, header: { ...header, ...(t.header ?? {}) }, claims });
}
provider.use(async (ctx, next) => {
  await next();
  if (nextIdToken && ctx.method === 'POST' && ctx.path === '/token' && ctx.status === 200 && ctx.body?.id_token) {
    const t = nextIdToken;
    nextIdToken = undefined;
    const body = { ...ctx.body };
    if (t.omit) {
      delete body.id_token;
    } else {
      body.id_token = tamper(body.id_token, t);
    }
    console.error(`id_token of this token response altered: ${JSON.stringify(Object.keys(t))}`);
    ctx.body = body;
  }
});

async function testControl(req, res) {
  const path = (req.url ?? '').split('?')[0];
  if (path !== '/__test/next-id-token') return false;
  if (req.method === 'DELETE') {
    nextIdToken = undefined;
    res.writeHead(204).end();
  } else if (req.method === 'POST') {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    try {
      nextIdToken = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      res.writeHead(204).end();
    } catch (err) {
      res.writeHead(400, { 'content-type': 'text/plain' }).end(`not JSON: ${err.message}\n`);
    }
  } else {
    res.writeHead(405).end();
  }
  return true;
}
// Errors the provider answers with (bad client, bad grant...) go to the log the test prints.
provider.on('server_error', (_ctx, err) => console.error('server_error', err));
provider.on('grant.error', (_ctx, err) => console.error('grant.error', err.message, err.error_description ?? ''));

// devInteractions takes whatever login is typed as the account id (and fails with a server
// error later when there is no such account). Like a real provider, refuse an unknown login at
// once: send the person back to the same login prompt (303 to the interaction page).
async function refuseUnknownLogin(req, res) {
  if (req.method !== 'POST' || !/^\/interaction\/[^/?]+$/.test(req.url.split('?')[0])) return false;
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const body = Buffer.concat(chunks);
  const form = new URLSearchParams(body.toString('utf8'));
  if (form.get('prompt') === 'login' && !accounts.has(form.get('login') ?? '')) {
    console.error(`login refused: no account "${form.get('login')}"`);
    res.writeHead(303, { location: `${issuerPath}${req.url}`, 'cache-control': 'no-store' }).end();
    return true;
  }
  // oidc-provider reads an already consumed body from req.body.
  req.body = body;
  return false;
}

const callback = provider.callback();
const server = createServer(async (req, res) => {
  if (await testControl(req, res)) return;
  if (issuerPath) {
    const url = req.url ?? '/';
    if (url !== issuerPath && !url.startsWith(`${issuerPath}/`) && !url.startsWith(`${issuerPath}?`)) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not under the issuer path\n');
      return;
    }
    // As when mounted under a prefix: oidc-provider reads the mount path from originalUrl.
    req.originalUrl = url;
    req.url = url.slice(issuerPath.length) || '/';
  }
  try {
    if (await refuseUnknownLogin(req, res)) return;
  } catch (err) {
    console.error('reading a login form failed', err);
    res.writeHead(400).end();
    return;
  }
  callback(req, res);
});
server.listen(cfg.port, host, () => console.log(`listening ${issuer}`));

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
// The test process holds our stdin open: when it goes away without stopping us (a test binary
// aborted), stdin ends and we go too, instead of holding the port.
if (process.env.DALEA_OIDC_EXIT_WITH_PARENT === '1') {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}

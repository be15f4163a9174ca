// JWT helpers for the sign-in tests, on node:crypto alone (called from tests/support/oidc.rs,
// and imported by provider.mjs):
//
//   node tests/oidc/jwt.mjs keys RS256 [ES256 PS256 ...]
//       prints a fresh JWK set {"keys":[...]} of private signing keys, each with a random kid,
//       its alg and use "sig": what provider.mjs signs with, or what a test forges tokens with.
//   node tests/oidc/jwt.mjs sign      < {"jwk": <private JWK>, "header": {...}, "claims": {...}}
//       prints a compact JWS over exactly these claims. The header is {alg, typ: "JWT", kid}
//       from the key, overridden field by field by "header" (so a test can lie in it). For HS256,
//       "jwk" may be {"kty": "oct", "k": <base64url secret>}.
//   node tests/oidc/jwt.mjs verify    < {"token": "...", "jwks": {"keys": [...]}}
//       prints {"valid": true, "kid": ...} when the signature verifies with the key of the set
//       whose kid (and alg) the header names, else {"valid": false, "reason": "..."}. Checks the
//       signature only, no claims.
import {
  createHmac, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, verify,
} from 'node:crypto';
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const fail = (msg) => {
  throw new Error(`jwt.mjs: ${msg}`);
};

// An unsecured JWT: header {alg: "none", typ: "JWT", ...header}, empty signature.
export function unsignedToken({ header = {}, claims }) {
  return `${b64url(JSON.stringify({ alg: 'none', typ: 'JWT', ...header }))}.${b64url(JSON.stringify(claims))}.`;
}

// Header and claims of a compact JWS, unverified.
export function decodeToken(token) {
  const [h, p] = String(token).split('.');
  return {
    header: JSON.parse(Buffer.from(h, 'base64url').toString('utf8')),
    claims: JSON.parse(Buffer.from(p, 'base64url').toString('utf8')),
  };
}

// How each alg signs: digest and key options for node:crypto.
function scheme(alg) {
  switch (alg) {
    case 'RS256': return { digest: 'sha256' };
    case 'RS384': return { digest: 'sha384' };
    case 'RS512': return { digest: 'sha512' };
    case 'PS256': return { digest: 'sha256', opts: { padding: 6, saltLength: 32 } }; // RSA_PKCS1_PSS_PADDING
    case 'ES256': return { digest: 'sha256', opts: { dsaEncoding: 'ieee-p1363' } };
    case 'ES384': return { digest: 'sha384', opts: { dsaEncoding: 'ieee-p1363' } };
    case 'HS256': return { hmac: 'sha256' };
    default: return undefined;
  }
}

export function generate(alg) {
  let pair;
  if (alg.startsWith('RS') || alg.startsWith('PS')) {
    pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
  } else if (alg === 'ES256') {
    pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  } else if (alg === 'ES384') {
    pair = generateKeyPairSync('ec', { namedCurve: 'P-384' });
  } else {
    fail(`cannot generate a key for ${alg}`);
  }
  const jwk = pair.privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: `${alg.toLowerCase()}-${randomBytes(6).toString('hex')}`, alg, use: 'sig' };
}

function stdinJson() {
  return JSON.parse(readFileSync(0, 'utf8'));
}

export function signToken({ jwk, header = {}, claims }) {
  const full = { alg: jwk.alg, typ: 'JWT', ...(jwk.kid ? { kid: jwk.kid } : {}), ...header };
  const input = `${b64url(JSON.stringify(full))}.${b64url(JSON.stringify(claims))}`;
  // The key decides how it signs; the header may claim anything.
  const alg = jwk.kty === 'oct' ? 'HS256' : (jwk.alg ?? full.alg);
  const s = scheme(alg);
  if (!s) fail(`cannot sign with ${alg}`);
  let sig;
  if (s.hmac) {
    sig = createHmac(s.hmac, Buffer.from(jwk.k, 'base64url')).update(input).digest();
  } else {
    sig = sign(s.digest, Buffer.from(input), { key: createPrivateKey({ key: jwk, format: 'jwk' }), ...(s.opts ?? {}) });
  }
  return `${input}.${b64url(sig)}`;
}

export function verifyToken({ token, jwks }) {
  const parts = String(token).split('.');
  if (parts.length !== 3) return { valid: false, reason: 'not a compact JWS' };
  let header;
  try {
    header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'));
  } catch {
    return { valid: false, reason: 'header is not JSON' };
  }
  const s = scheme(header.alg);
  if (!s || s.hmac) return { valid: false, reason: `alg ${header.alg} not accepted` };
  const key = (jwks.keys ?? []).find((k) => k.kid === header.kid);
  if (!key) return { valid: false, reason: `no key with kid ${header.kid}` };
  if (key.alg && key.alg !== header.alg) return { valid: false, reason: `key ${key.kid} is for ${key.alg}` };
  const pub = createPublicKey({ key, format: 'jwk' });
  const ok = verify(s.digest, Buffer.from(`${parts[0]}.${parts[1]}`), { key: pub, ...(s.opts ?? {}) },
    Buffer.from(parts[2], 'base64url'));
  return ok ? { valid: true, kid: header.kid } : { valid: false, reason: 'bad signature' };
}

function main() {
  const [command, ...args] = process.argv.slice(2);
  switch (command) {
    case 'keys':
      console.log(JSON.stringify({ keys: (args.length ? args : ['RS256']).map(generate) }));
      break;
    case 'sign':
      console.log(signToken(stdinJson()));
      break;
    case 'verify':
      console.log(JSON.stringify(verifyToken(stdinJson())));
      break;
    default:
      fail('usage: jwt.mjs keys ALG... | sign | verify (JSON on stdin)');
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    main();
  } catch (err) {
    console.error(err.message);
    process.exit(2);
  }
}

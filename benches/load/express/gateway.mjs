// The hand-built alternative to Dalea Gateway that benches/load/run.sh measures against:
// express + express-session (sessions in Redis via connect-redis) + http-proxy-middleware,
// written the way such a gateway usually is, plus the one fix that matters most for speed:
// a keep-alive http.Agent towards the upstream (without it http-proxy sends
// `Connection: close` upstream and the close is passed on to the client, so every request
// costs two new TCP connections).
//
//   GET /signin?user=alice   creates a session and sets the `gw.sid` cookie (200)
//   GET /_bench/stats        {"redirects","proxied"} since start (run.sh checks redirects
//                            stayed 0: wrk does not count 3xx answers as errors)
//   anything else            with a session: proxied to UPSTREAM with X-User set;
//                            without: 302 to /signin
//
// Environment: PORT, UPSTREAM (http://host:port), REDIS_URL, SESSION_SECRET (random if unset).

import http from 'node:http';
import { randomBytes } from 'node:crypto';
import express from 'express';
import session from 'express-session';
import { RedisStore } from 'connect-redis';
import { createClient } from 'redis';
import { createProxyMiddleware } from 'http-proxy-middleware';

const port = Number(process.env.PORT ?? 3000);
const upstream = process.env.UPSTREAM ?? 'http://127.0.0.1:9000';
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const secret = process.env.SESSION_SECRET ?? randomBytes(32).toString('hex');

const redis = createClient({ url: redisUrl });
redis.on('error', (err) => console.error('redis:', err.message));
await redis.connect();

const counters = { redirects: 0, proxied: 0 };
const app = express();

// Before the session middleware, so reading the counters touches no session.
app.get('/_bench/stats', (_req, res) => res.json(counters));

app.use(
  session({
    store: new RedisStore({ client: redis, prefix: 'gw:' }),
    name: 'gw.sid',
    secret,
    resave: false,
    saveUninitialized: false,
    cookie: { httpOnly: true, sameSite: 'lax', secure: false, maxAge: 24 * 60 * 60 * 1000 },
  }),
);

app.get('/signin', (req, res, next) => {
  const user = String(req.query.user ?? '');
  if (!user) return res.status(400).type('text').send('user required\n');
  // A fresh session id on sign-in, as any session-fixation-aware app does.
  req.session.regenerate((err) => {
    if (err) return next(err);
    req.session.user = user;
    req.session.save((err2) => (err2 ? next(err2) : res.type('text').send(`signed in as ${user}\n`)));
  });
});

app.use((req, res, next) => {
  if (req.session.user) {
    counters.proxied += 1;
    return next();
  }
  counters.redirects += 1;
  res.redirect(302, '/signin');
});

app.use(
  createProxyMiddleware({
    target: upstream,
    agent: new http.Agent({ keepAlive: true }),
    xfwd: true,
    on: {
      // Pass the identity on, as the gateway does with X-Dalea-User.
      proxyReq: (proxyReq, req) => proxyReq.setHeader('X-User', req.session.user),
    },
  }),
);

const server = app.listen(port, '127.0.0.1', () => console.log(`express gateway on 127.0.0.1:${port} -> ${upstream}`));

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.closeAllConnections();
    server.close(() => redis.quit().finally(() => process.exit(0)));
  });
}

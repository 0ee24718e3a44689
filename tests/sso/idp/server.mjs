// The OpenID provider the SSO tests sign in against: the real `oidc-provider` (a certified OpenID
// Provider implementation) on loopback, plus a few test controls.
//
//   node server.mjs CONFIG.json      CONFIG: {port, clients: [{client_id, client_secret,
//                                    token_endpoint_auth_method, redirect_uris}], keys: [private JWK, ...]}
//
// Test controls (loopback only, outside the provider's own routes):
//   POST /test/next-login {sub, claims}  the next interaction signs in as `sub` with these claims, no form
//   POST /test/mode {mode}               rewrite the ID token the token endpoint returns, to play an attacker:
//                                        tamper | alg-none | wrong-aud | wrong-iss | expired | no-nonce | "" (off)
//   GET  /test/jwks-fetches              how many times the JWKS was fetched (caching)
import fs from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';
import { SignJWT, decodeJwt, decodeProtectedHeader, importJWK } from 'jose';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${config.port}`;
const accounts = new Map();
let nextLogin = null;
let mode = '';
let jwksFetches = 0;

const provider = new Provider(issuer, {
  clients: config.clients.map((c) => ({
    grant_types: ['authorization_code'], response_types: ['code'], ...c,
  })),
  jwks: { keys: config.keys },
  // Every client must use PKCE (S256), whatever its authentication method.
  pkce: { required: () => true },
  // The claims go into the ID token itself (Bastion reads them there); this IdP releases the group and
  // org claims with the profile (as an IdP admin sets up for an app).
  conformIdTokenClaims: false,
  claims: {
    openid: ['sub'], email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username', 'groups', 'org'],
  },
  scopes: ['openid', 'email', 'profile'],
  features: { devInteractions: { enabled: false } },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  cookies: { keys: ['bastion-test-idp-cookie-key-0001'] },
  findAccount: async (_ctx, sub) => {
    const claims = accounts.get(sub);
    if (!claims) return undefined;
    return { accountId: sub, claims: async () => ({ sub, ...claims }) };
  },
});

provider.use(async (ctx, next) => {
  if (ctx.path === '/jwks') jwksFetches += 1;
  await next();
  if (ctx.path === '/token' && mode && ctx.body && ctx.body.id_token) {
    ctx.body = { ...ctx.body, id_token: await rewrite(ctx.body.id_token) };
  }
});

const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');

async function rewrite(idToken) {
  const header = decodeProtectedHeader(idToken);
  const claims = decodeJwt(idToken);
  const [h, p, s] = idToken.split('.');
  if (mode === 'tamper') {
    // Same signature, changed payload: the subject becomes someone else.
    return `${h}.${b64({ ...claims, email: 'mallory@evil.test', sub: 'mallory' })}.${s}`;
  }
  if (mode === 'alg-none') {
    return `${b64({ alg: 'none', typ: 'JWT' })}.${p}.`;
  }
  const changed = { ...claims };
  const now = Math.floor(Date.now() / 1000);
  if (mode === 'wrong-aud') changed.aud = 'some-other-client';
  if (mode === 'wrong-iss') changed.iss = 'http://127.0.0.1:1/evil';
  if (mode === 'expired') { changed.iat = now - 7200; changed.exp = now - 3600; }
  if (mode === 'no-nonce') delete changed.nonce;
  // Properly signed by the provider's own key: only the claims are wrong.
  const jwk = config.keys.find((k) => k.kid === header.kid) || config.keys[0];
  const key = await importJWK(jwk, header.alg);
  return new SignJWT(changed).setProtectedHeader({ alg: header.alg, kid: header.kid, typ: header.typ }).sign(key);
}

async function body(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : {};
}

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  if (!nextLogin) {
    res.writeHead(409, { 'content-type': 'text/plain' });
    res.end('no test login queued');
    return;
  }
  const { sub, claims } = nextLogin;
  nextLogin = null;
  accounts.set(sub, claims);
  const grant = new provider.Grant({ accountId: sub, clientId: details.params.client_id });
  grant.addOIDCScope(details.params.scope);
  grant.addOIDCClaims(['email', 'email_verified', 'name', 'preferred_username', 'groups', 'org']);
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { login: { accountId: sub }, consent: { grantId } },
    { mergeWithLastSubmission: false });
}

const callback = provider.callback();
const server = http.createServer(async (req, res) => {
  try {
    if (req.url.startsWith('/interaction/')) {
      await interaction(req, res);
    } else if (req.method === 'POST' && req.url === '/test/next-login') {
      nextLogin = await body(req);
      res.writeHead(204); res.end();
    } else if (req.method === 'POST' && req.url === '/test/mode') {
      mode = (await body(req)).mode || '';
      res.writeHead(204); res.end();
    } else if (req.url === '/test/jwks-fetches') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ count: jwksFetches }));
    } else {
      callback(req, res);
    }
  } catch (err) {
    res.writeHead(500, { 'content-type': 'text/plain' });
    res.end(String(err && err.stack || err));
  }
});
server.listen(config.port, '127.0.0.1', () => { process.stdout.write(`listening ${issuer}\n`); });

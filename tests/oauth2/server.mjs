// The OAuth2 authorization server keygate's `oauth2` credential provider is tested against
// (tests/oauth2.rs): panva's oidc-provider (pinned in package.json) on 127.0.0.1, plus what
// the tests need around it. All state is in memory.
//
// Usage: node server.mjs <config.json> [--exit-on-stdin-eof]
//   Prints "READY <issuer>" on stdout once listening (the issuer carries the real port).
//   With --exit-on-stdin-eof it exits when its stdin closes (the test process ended).
//
// config.json:
//   "port"             0 picks a free port
//   "clients"          oidc-provider client metadata: client_id, client_secret,
//                      token_endpoint_auth_method (client_secret_basic | client_secret_post |
//                      private_key_jwt), token_endpoint_auth_signing_alg, jwks (inline public
//                      keys), grant_types, scope (the scopes the client may ask for)
//   "resources"        RFC 8707 resource indicator -> { scope, accessTokenFormat: jwt | opaque };
//                      any other resource is refused with invalid_target
//   "defaultResource"  the resource of a request without one (so plain requests get JWTs)
//   "trustedIssuers"   iss -> { jwks_uri | jwks, audience? }: foreign JWTs token exchange
//                      accepts as subject or actor tokens
//   "scopes"           more scopes the server knows (every client and resource scope is added)
//   "accessTokenTTL"   seconds (default 600)
//   "strictClientAuthMethod"  default true: a client authenticating by another method than
//                      the one it is registered for is refused (oidc-provider alone accepts
//                      client_secret_basic and client_secret_post interchangeably)
//
// Endpoints: POST {iss}/token, {iss}/token/introspection, {iss}/token/revocation,
// GET {iss}/jwks, {iss}/.well-known/openid-configuration, and for the tests:
//   GET  /_peer/requests[?client_id=ID]  every token request received, oldest first, as
//        JSON: what was asked and how the client authenticated, the subject/actor tokens and
//        client assertion decoded (header and claims, never the signed value), the answer
//        (status, error, granted scope, the issued token decoded and its SHA-256). Client
//        secrets and token values are never in it.
//   POST /_peer/trusted-issuers  {"issuer", "jwks_uri" | "jwks", "audience"?}: trust one
//        more issuer for token exchange (keygate's, whose JWKS URL is known once it runs).
//
// The HTTP answer to a failed client authentication only says "client authentication
// failed"; the reason goes to stderr as "grant.error: <error> <description> <detail>".
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createHash } from 'node:crypto';
import * as querystring from 'node:querystring';
import Provider, { errors } from 'oidc-provider';
import * as jose from 'jose';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
if (process.argv.includes('--exit-on-stdin-eof')) {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}
const host = cfg.host ?? '127.0.0.1';
const server = createServer();
await new Promise((resolve, reject) => { server.once('error', reject); server.listen(cfg.port ?? 0, host, resolve); });
const issuer = `http://${host}:${server.address().port}`;

// Signing keys for JWT access tokens: fresh per start (tests read them from /jwks).
const signingKeys = [];
for (const alg of ['ES256']) {
  const { privateKey } = await jose.generateKeyPair(alg, { extractable: true });
  const jwk = await jose.exportJWK(privateKey);
  signingKeys.push({ ...jwk, alg, use: 'sig', kid: `${alg.toLowerCase()}-${Date.now()}` });
}
const ownJwks = jose.createLocalJWKSet({
  keys: signingKeys.map(({ d, p, q, dp, dq, qi, ...pub }) => pub),
});

// Trusted foreign issuers for token exchange: iss -> { keys, audience }.
const trusted = new Map();
function trust(iss, t) {
  if (typeof iss !== 'string' || !iss || !(t.jwks || t.jwks_uri)) throw new Error('issuer and jwks or jwks_uri are required');
  const keys = t.jwks ? jose.createLocalJWKSet(t.jwks) : jose.createRemoteJWKSet(new URL(t.jwks_uri));
  trusted.set(iss, { keys, audience: t.audience });
}
for (const [iss, t] of Object.entries(cfg.trustedIssuers ?? {})) trust(iss, t);

const resources = cfg.resources ?? {}; // resource indicator -> Resource Server info
const allScopes = new Set(['openid', 'offline_access', ...(cfg.scopes ?? [])]);
for (const rs of Object.values(resources)) rs.scope?.split(' ').forEach((s) => allScopes.add(s));
for (const c of cfg.clients) c.scope?.split(' ').forEach((s) => allScopes.add(s));

const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const txState = new WeakMap(); // ctx -> { sub, act } for the token being minted

const provider = new Provider(issuer, {
  clients: cfg.clients,
  jwks: { keys: signingKeys },
  scopes: [...allScopes],
  clientDefaults: { grant_types: ['client_credentials'], response_types: [], redirect_uris: [], id_token_signed_response_alg: 'ES256' },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    // any authenticated client (e.g. a resource-server client with grant_types []) may introspect
    introspection: { enabled: true, allowedPolicy: async () => true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => cfg.defaultResource,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, indicator) => {
        const rs = resources[indicator];
        if (!rs) throw new errors.InvalidTarget(`unknown resource ${indicator}`);
        return { audience: indicator, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'ES256' } }, ...rs };
      },
    },
  },
  extraTokenClaims: async (ctx, token) => {
    const st = ctx && txState.get(ctx);
    if (st && token.kind === 'ClientCredentials') return { sub: st.sub, ...(st.act ? { act: st.act } : {}) };
    return undefined;
  },
  formats: {
    customizers: {
      // extra claims are spread before "sub"; put the exchanged subject back.
      jwt: async (ctx, token, jwt) => { if (token.extra?.sub) jwt.payload.sub = token.extra.sub; },
    },
  },
  ttl: { ClientCredentials: cfg.accessTokenTTL ?? 600 },
  // 9.12+ SSRF guard refuses loopback/private addresses for jwks_uri; tests serve them on 127.0.0.1.
  fetch: (url, options) => { delete options.dispatcher; return globalThis.fetch(url, options); },
});

// Resolve a subject/actor token into claims: own JWTs, trusted foreign JWTs, own opaque tokens.
async function resolveToken(token, type, what) {
  if (typeof token !== 'string' || !token) throw new errors.InvalidRequest(`missing ${what}`);
  if (![AT_TYPE, JWT_TYPE, 'urn:ietf:params:oauth:token-type:id_token'].includes(type)) {
    throw new errors.InvalidRequest(`unsupported ${what}_type`);
  }
  if (token.split('.').length === 3) {
    let iss;
    try { ({ iss } = jose.decodeJwt(token)); } catch { throw new errors.InvalidGrant(`${what} is not a valid JWT`); }
    const t = iss === issuer ? { keys: ownJwks } : trusted.get(iss);
    if (!t) throw new errors.InvalidGrant(`${what} issuer is not trusted`);
    try {
      const { payload } = await jose.jwtVerify(token, t.keys, { issuer: iss, audience: t.audience, requiredClaims: ['sub', 'exp'] });
      return payload;
    } catch (e) { throw new errors.InvalidGrant(`${what} invalid: ${e.code ?? e.message}`); }
  }
  const t = (await provider.ClientCredentials.find(token)) ?? (await provider.AccessToken.find(token));
  if (!t?.isValid) throw new errors.InvalidGrant(`${what} is invalid or expired`);
  return { sub: t.extra?.sub ?? t.accountId ?? t.clientId, scope: t.scope, act: t.extra?.act, client_id: t.clientId };
}

provider.registerGrantType(TX, async (ctx) => {
  const { params, client } = ctx.oidc;
  const subject = await resolveToken(params.subject_token, params.subject_token_type, 'subject_token');
  const actor = params.actor_token
    ? await resolveToken(params.actor_token, params.actor_token_type, 'actor_token') : undefined;
  if (params.requested_token_type && params.requested_token_type !== AT_TYPE) {
    throw new errors.InvalidRequest('only access_token may be requested');
  }
  // scope: requested ⊆ client's registered scope and ⊆ subject token's scope (when it has one)
  const allowed = new Set((client.scope ?? '').split(' ').filter(Boolean));
  const parent = subject.scope ? new Set(String(subject.scope).split(' ')) : undefined;
  const scopes = params.scope ? params.scope.split(' ') : [...(parent ?? allowed)].filter((s) => !allowed.size || allowed.has(s));
  for (const s of scopes) {
    if ((allowed.size && !allowed.has(s)) || (parent && !parent.has(s))) throw new errors.InvalidScope('requested scope is not allowed', s);
  }
  const target = params.resource ?? params.audience ?? cfg.defaultResource;
  if (Array.isArray(target)) throw new errors.InvalidTarget('only one resource/audience is supported');
  const token = new provider.ClientCredentials({ client, scope: scopes.join(' ') || undefined });
  if (target) {
    const rs = resources[target] ?? (params.audience ? { scope: scopes.join(' ') } : undefined);
    if (!rs) throw new errors.InvalidTarget(`unknown resource ${target}`);
    token.resourceServer = new provider.ResourceServer(target, { audience: target, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'ES256' } }, ...rs });
  }
  // act: the actor token's subject, nesting any prior actor chain of the subject token (RFC 8693 §4.1)
  let act;
  if (actor) act = { sub: actor.sub, ...(subject.act ? { act: subject.act } : {}) };
  else if (subject.act) act = subject.act;
  txState.set(ctx, { sub: subject.sub, act });
  const value = await token.save();
  ctx.body = {
    access_token: value,
    issued_token_type: AT_TYPE,
    token_type: 'Bearer',
    expires_in: token.expiration,
    ...(token.scope ? { scope: token.scope } : {}),
  };
}, ['subject_token', 'subject_token_type', 'actor_token', 'actor_token_type',
  'requested_token_type', 'audience', 'resource', 'scope']);

// ---------------------------------------------------------------- token request log

const sha256 = (s) => createHash('sha256').update(s).digest('hex');

// A token or assertion described without its value: decoded header and claims of a JWT
// (no signature), or just "opaque"; and its SHA-256, to match it with what a test saw.
function describe(token) {
  if (typeof token !== 'string' || !token) return undefined;
  const out = { sha256: sha256(token) };
  if (token.split('.').length !== 3) return { format: 'opaque', ...out };
  try {
    return { format: 'jwt', header: jose.decodeProtectedHeader(token), claims: jose.decodeJwt(token), ...out };
  } catch {
    return { format: 'invalid', ...out };
  }
}

const requests = [];

// The client authentication methods a token request used (normally one).
function authOf(body, authorization) {
  const methods = []; let id;
  if (authorization && /^basic /i.test(authorization)) {
    methods.push('client_secret_basic');
    try {
      id = decodeURIComponent(Buffer.from(authorization.slice(6), 'base64').toString().split(':')[0].replace(/\+/g, ' '));
    } catch { id = undefined; }
  }
  if (typeof body.client_secret === 'string') methods.push('client_secret_post');
  let assertion;
  if (body.client_assertion !== undefined || body.client_assertion_type !== undefined) {
    assertion = describe(typeof body.client_assertion === 'string' ? body.client_assertion : undefined);
    const alg = assertion?.header?.alg ?? '';
    methods.push(/^HS/.test(alg) ? 'client_secret_jwt' : 'private_key_jwt');
  }
  const clientId = (typeof body.client_id === 'string' ? body.client_id : undefined)
    ?? id ?? assertion?.claims?.sub ?? assertion?.claims?.iss;
  return { methods, clientId, assertion };
}

// Parses every form POST once (oidc-provider then uses the parsed body), records token
// requests and their answers, and enforces the registered client authentication method.
const registeredMethod = new Map(cfg.clients.map((c) => [c.client_id, c.token_endpoint_auth_method ?? 'client_secret_basic']));
provider.use(async (ctx, next) => {
  if (!(ctx.method === 'POST' && ctx.is('application/x-www-form-urlencoded'))) return next();
  const chunks = [];
  for await (const chunk of ctx.req) chunks.push(chunk);
  const body = querystring.parse(Buffer.concat(chunks).toString());
  ctx.request.body = body; // oidc-provider falls back to this already-parsed body
  const { methods, clientId, assertion } = authOf(body, ctx.headers.authorization);
  let rec;
  if (ctx.path === '/token') {
    rec = {
      seq: requests.length + 1,
      time_ms: Date.now(),
      // a repeated parameter is an array
      param_names: Object.keys(body).sort(),
      grant_type: body.grant_type ?? null,
      client_id: clientId ?? null,
      auth_method: methods.length ? methods.join('+') : 'none',
      scope: body.scope ?? null,
      resource: body.resource ?? null,
      audience: body.audience ?? null,
      requested_token_type: body.requested_token_type ?? null,
      subject_token_type: body.subject_token_type ?? null,
      actor_token_type: body.actor_token_type ?? null,
      client_assertion_type: body.client_assertion_type ?? null,
      client_assertion: assertion ?? null,
      subject_token: describe(body.subject_token) ?? null,
      actor_token: describe(body.actor_token) ?? null,
      content_type: ctx.headers['content-type'] ?? null,
    };
    requests.push(rec);
  }
  const want = registeredMethod.get(clientId);
  if (cfg.strictClientAuthMethod !== false && methods.length === 1 && want && want !== methods[0]) {
    ctx.status = 401;
    ctx.set('cache-control', 'no-store');
    ctx.body = { error: 'invalid_client', error_description: `client is registered for ${want}, request used ${methods[0]}` };
  } else {
    await next();
  }
  if (rec) {
    rec.status = ctx.status;
    const b = ctx.body;
    if (b && typeof b === 'object' && !Buffer.isBuffer(b) && typeof b.pipe !== 'function') {
      rec.error = b.error ?? null;
      rec.error_description = b.error_description ?? null;
      if (b.access_token) {
        rec.granted_scope = b.scope ?? null;
        rec.expires_in = b.expires_in ?? null;
        rec.token_type = b.token_type ?? null;
        rec.issued_token_type = b.issued_token_type ?? null;
        rec.access_token = describe(b.access_token);
      }
    }
  }
});

// ---------------------------------------------------------------- control endpoints

async function control(req, res) {
  const url = new URL(req.url, issuer);
  const send = (status, value) => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(value === undefined ? '' : JSON.stringify(value));
  };
  try {
    if (req.method === 'GET' && url.pathname === '/_peer/requests') {
      const id = url.searchParams.get('client_id');
      return send(200, id === null ? requests : requests.filter((r) => r.client_id === id));
    }
    if (req.method === 'POST' && url.pathname === '/_peer/trusted-issuers') {
      const chunks = [];
      for await (const chunk of req) chunks.push(chunk);
      const t = JSON.parse(Buffer.concat(chunks).toString());
      trust(t.issuer, t);
      return send(204);
    }
    return send(404, { error: 'not_found' });
  } catch (e) {
    return send(400, { error: 'bad_request', error_description: String(e.message ?? e) });
  }
}

provider.on('server_error', (ctx, err) => console.error('server_error', err));
// oidc-provider answers a bare "client authentication failed"; log the reason for test debugging.
for (const ev of ['grant.error', 'introspection.error', 'revocation.error']) {
  provider.on(ev, (ctx, err) => console.error(`${ev}: ${err.error} ${err.error_description ?? ''} ${err.error_detail ?? ''}${err.cause ? ' cause: ' + (err.cause.error_description ?? err.cause.message) : ''}`.trim()));
}
const callback = provider.callback();
server.on('request', (req, res) => {
  if (req.url.startsWith('/_peer/')) control(req, res);
  else callback(req, res);
});
console.log(`READY ${issuer}`);

// The OpenID Connect identity provider the web console signs in with (tests/console.rs):
// panva's oidc-provider (pinned in package.json) on 127.0.0.1, authorization code flow with
// PKCE (S256) required of every client, and a minimal login page of its own that checks the
// configured users' passwords and then grants the requested scopes without a consent page.
// All state is in memory.
//
// Usage: node idp.mjs <config.json> [--exit-on-stdin-eof]
//   Prints "READY <issuer>" on stdout once listening; the issuer is http://127.0.0.1:<port>
//   (no trailing slash; discovery at <issuer>/.well-known/openid-configuration).
//   With --exit-on-stdin-eof it exits when its stdin closes (the test process ended).
//
// config.json:
//   "port"     0 picks a free port
//   "clients"  oidc-provider client metadata: client_id, client_secret, redirect_uris,
//              token_endpoint_auth_method (default client_secret_basic),
//              post_logout_redirect_uris, id_token_signed_response_alg (RS256 default, or ES256)
//   "users"    login -> { password, email, email_verified (default true), name,
//              groups: [...] }; the login is the sub
//   "sessionTTL"  seconds of the IdP's own sign-in session (default 3600)
//
// Scopes openid email profile groups (and offline_access). The ID token carries the claims
// of the granted scopes: sub, email, email_verified (as configured), name,
// preferred_username (the login), groups; userinfo answers the same.
//
// Login page: GET /interaction/<uid> is a form with input[name=login], input[name=password]
// and button[type=submit] (POST /interaction/<uid>/login). A wrong login or password
// answers 401 with the form again and p.error ("Invalid login or password."). A right one
// finishes the interaction with the login and a grant of everything asked (no consent
// page). With an IdP session already there, no form is shown at all (add prompt=login to
// force it). RP-initiated logout (<issuer>/session/end) signs out without a confirmation.
//
// For the tests:
//   GET  /_peer/ready    200 once listening
//   GET  /_peer/events   what happened, oldest first, as JSON: logins (login, ok) and the
//                        provider's authorization/token successes and errors (client_id,
//                        error, error_description, cause, e.g. "code_verifier does not
//                        match code_challenge"). Never a password, code or token.
//   POST /_peer/clients  oidc-provider client metadata (JSON): add or replace a client at
//                        run time (e.g. once the console's redirect URI is known).
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';
import * as querystring from 'node:querystring';
import Provider from 'oidc-provider';
import * as jose from 'jose';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
if (process.argv.includes('--exit-on-stdin-eof')) {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}
const host = cfg.host ?? '127.0.0.1';
const users = cfg.users ?? {};
const server = createServer();
await new Promise((resolve, reject) => { server.once('error', reject); server.listen(cfg.port ?? 0, host, resolve); });
const issuer = `http://${host}:${server.address().port}`;

// ID token signing keys, fresh per start, published at {issuer}/jwks.
const signingKeys = [];
for (const alg of ['RS256', 'ES256']) {
  const { privateKey } = await jose.generateKeyPair(alg, { extractable: true });
  const jwk = await jose.exportJWK(privateKey);
  signingKeys.push({ ...jwk, alg, use: 'sig', kid: `${alg.toLowerCase()}-${Date.now()}` });
}

const events = [];
const event = (e) => events.push({ seq: events.length + 1, time_ms: Date.now(), ...e });

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>*{box-sizing:border-box}body{font-family:sans-serif;max-width:22em;margin:3em auto}label,input,button{display:block;width:100%;margin:.3em 0}.error{color:#b00}</style>
</head><body>${body}</body></html>`;

const provider = new Provider(issuer, {
  clients: cfg.clients,
  jwks: { keys: signingKeys },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  // Put the claims of the granted scopes in the ID token too, not only in userinfo.
  conformIdTokenClaims: false,
  responseTypes: ['code'],
  clientDefaults: {
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
  },
  pkce: { required: () => true }, // S256 is the only method oidc-provider supports
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      // sign out at once: submit the logout form (its xsrf token included) with logout=yes
      logoutSource: async (ctx, form) => {
        ctx.body = page('Signing out', `${form.replace('</form>', '<input type="hidden" name="logout" value="yes"></form>')}
<button type="submit" form="op.logoutForm" name="logout" value="yes">Sign out</button>
<script>document.getElementById('op.logoutForm').submit()</script>`);
      },
      postLogoutSuccessSource: async (ctx) => { ctx.body = page('Signed out', '<h1>Signed out</h1>'); },
    },
  },
  ttl: { Session: cfg.sessionTTL ?? 3600 },
  findAccount: async (ctx, sub) => {
    const u = users[sub];
    if (!u) return undefined;
    return {
      accountId: sub,
      claims: async () => ({
        sub,
        email: u.email,
        email_verified: u.email_verified ?? true,
        name: u.name,
        preferred_username: sub,
        groups: u.groups ?? [],
      }),
    };
  },
  // Local error page (the default one pulls a web font, which is not reachable here).
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = page('Error', `<h1>Error</h1>${Object.entries(out).map(([k, v]) => `<p><strong>${esc(k)}</strong>: <span class="${esc(k)}">${esc(v)}</span></p>`).join('')}`);
  },
});

provider.on('server_error', (ctx, err) => console.error('server_error', err));
for (const ev of ['authorization.success', 'authorization.error', 'grant.success', 'grant.error', 'end_session.success']) {
  provider.on(ev, (ctx, err) => {
    const e = { kind: ev, client_id: ctx?.oidc?.client?.clientId ?? null };
    if (ev.endsWith('.error')) {
      Object.assign(e, {
        error: err.error ?? String(err.message),
        error_description: err.error_description ?? null,
        cause: err.cause?.error_description ?? err.cause?.message ?? null, // e.g. a PKCE mismatch
      });
      console.error(`${ev}: ${e.client_id ?? '-'} ${e.error} ${e.error_description ?? ''}${e.cause ? ` (${e.cause})` : ''}`.trim());
    }
    event(e);
  });
}

// ---------------------------------------------------------------- login (interactions)

function loginForm(uid, { login = '', error } = {}) {
  return page('Sign in', `<h1>Sign in</h1>
${error ? `<p class="error" role="alert">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login" autocomplete="off">
<label for="login">Login</label><input id="login" name="login" type="text" value="${esc(login)}" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" required>
<button type="submit">Sign in</button>
</form>`);
}

// A grant of everything the authorization request asked for (scopes, and claims of the
// "claims" parameter), so that no consent prompt follows.
async function grantAll(details, accountId) {
  const { params } = details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  if (params.scope) grant.addOIDCScope(params.scope);
  if (params.claims) {
    const claims = typeof params.claims === 'string' ? JSON.parse(params.claims) : params.claims;
    grant.addOIDCClaims([...Object.keys(claims.id_token ?? {}), ...Object.keys(claims.userinfo ?? {})]);
  }
  return grant.save();
}

async function readForm(req) {
  const chunks = []; let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 65536) throw new Error('form too large');
    chunks.push(chunk);
  }
  return querystring.parse(Buffer.concat(chunks).toString());
}

function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

async function interaction(req, res, uid, action) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (e) {
    return send(res, 400, 'text/html; charset=utf-8', page('Error', `<h1>Error</h1><p class="error">${esc(e.error_description ?? e.message)}</p>`));
  }
  if (details.uid !== uid) return send(res, 400, 'text/html; charset=utf-8', page('Error', '<p class="error">interaction mismatch</p>'));
  const { prompt, session } = details;

  if (prompt.name === 'consent') { // signed in already: grant and go on, no consent page
    const grantId = await grantAll(details, session.accountId);
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  if (prompt.name !== 'login') {
    return send(res, 400, 'text/html; charset=utf-8', page('Error', `<p class="error">unsupported prompt ${esc(prompt.name)}</p>`));
  }
  if (action === undefined && req.method === 'GET') {
    return send(res, 200, 'text/html; charset=utf-8', loginForm(uid));
  }
  if (action === 'login' && req.method === 'POST') {
    const form = await readForm(req);
    const login = typeof form.login === 'string' ? form.login : '';
    const user = Object.hasOwn(users, login) ? users[login] : undefined;
    const ok = !!user && typeof form.password === 'string' && form.password === user.password;
    event({ kind: 'login', login, ok, client_id: details.params.client_id });
    if (!ok) {
      return send(res, 401, 'text/html; charset=utf-8', loginForm(uid, { login, error: 'Invalid login or password.' }));
    }
    const grantId = await grantAll(details, login);
    return provider.interactionFinished(req, res, {
      login: { accountId: login, amr: ['pwd'] },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
  }
  return send(res, 405, 'text/plain', 'method not allowed');
}

// ---------------------------------------------------------------- control endpoints

async function control(req, res, url) {
  const json = (status, value) => send(res, status, 'application/json', value === undefined ? '' : JSON.stringify(value));
  if (req.method === 'GET' && url.pathname === '/_peer/ready') return json(200, { ready: true, issuer });
  if (req.method === 'GET' && url.pathname === '/_peer/events') return json(200, events);
  if (req.method === 'POST' && url.pathname === '/_peer/clients') {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const md = JSON.parse(Buffer.concat(chunks).toString());
    if (typeof md.client_id !== 'string' || !md.client_id) return json(400, { error: 'client_id is required' });
    const metadata = {
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
      ...md,
    };
    await provider.Client.adapter.upsert(metadata.client_id, metadata);
    try {
      await provider.Client.find(metadata.client_id); // validates the metadata
    } catch (e) {
      await provider.Client.adapter.destroy(metadata.client_id);
      return json(400, { error: 'invalid_client_metadata', error_description: e.error_description ?? e.message });
    }
    return json(204);
  }
  return json(404, { error: 'not_found' });
}

const callback = provider.callback();
server.on('request', (req, res) => {
  const url = new URL(req.url, issuer);
  const m = /^\/interaction\/([\w-]+)(?:\/(login))?$/.exec(url.pathname);
  const handle = url.pathname.startsWith('/_peer/') ? control(req, res, url)
    : m ? interaction(req, res, m[1], m[2])
      : undefined;
  if (!handle) return callback(req, res);
  handle.catch((e) => {
    console.error('idp error', e);
    if (!res.headersSent) send(res, 500, 'text/plain', 'internal error');
    else res.end();
  });
});
console.log(`READY ${issuer}`);

// A real OpenID provider for the end-to-end tests: oidc-provider over HTTPS with one client
// (`trackgate`) and any user who types a login name; then, with `login`, a scripted browser that
// signs in through its interaction pages (authorization code flow with PKCE) and prints the ID
// token.
//
//   node op.mjs serve PORT CERT KEY [MAP_REDIRECT]
//                                          prints "ready" once listening; with MAP_REDIRECT it
//                                          also registers the map page as a public client
//                                          (`trackgate-map`: PKCE, no secret, CORS for its origin)
//   node op.mjs login ISSUER LOGIN         prints the ID token (set NODE_EXTRA_CA_CERTS=CERT)
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';

const CLIENT = { id: 'trackgate', secret: 'test-client-secret', redirect: 'https://localhost/callback' };

async function serve(port, cert, key, mapRedirect) {
  const { default: Provider } = await import('oidc-provider');
  const issuer = `https://localhost:${port}`;
  const clients = [{
    client_id: CLIENT.id,
    client_secret: CLIENT.secret,
    redirect_uris: [CLIENT.redirect],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
    // ID tokens say when the user signed in: trackgate asks for a recent sign-in before changes.
    require_auth_time: true,
  }];
  if (mapRedirect) {
    clients.push({
      client_id: 'trackgate-map',
      redirect_uris: [mapRedirect],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      require_auth_time: true,
    });
  }
  const provider = new Provider(issuer, {
    clients,
    async findAccount(ctx, id) {
      return {
        accountId: id,
        async claims() {
          return { sub: id, email: `${id}@op.example`, email_verified: true, groups: ['op-group'], tid: 'op-tenant' };
        },
      };
    },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups', 'tid'] },
    scopes: ['openid', 'email', 'groups'],
    conformIdTokenClaims: false,
    features: { devInteractions: { enabled: true } },
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  });
  provider.on('server_error', (ctx, err) => console.error('op error', err));
  https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, provider.callback())
    .listen(Number(port), '127.0.0.1', () => console.log('ready'));
}

function b64url(buf) {
  return buf.toString('base64').replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

async function login(issuer, user) {
  const jar = new Map();
  const cookieHeader = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
  const request = async (url, init = {}) => {
    const res = await fetch(url, { ...init, redirect: 'manual', headers: { ...(init.headers || {}), cookie: cookieHeader() } });
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const i = pair.indexOf('=');
      jar.set(pair.slice(0, i), pair.slice(i + 1));
    }
    return res;
  };
  const verifier = b64url(crypto.randomBytes(32));
  const challenge = b64url(crypto.createHash('sha256').update(verifier).digest());
  const params = new URLSearchParams({
    client_id: CLIENT.id, response_type: 'code', scope: 'openid email groups', redirect_uri: CLIENT.redirect,
    state: 'st', nonce: 'nonce', code_challenge: challenge, code_challenge_method: 'S256',
  });
  let url = `${issuer}/auth?${params}`;
  let res = await request(url);
  for (let step = 0; step < 20; step++) {
    if (res.status >= 300 && res.status < 400) {
      const location = new URL(res.headers.get('location'), url);
      if (location.href.startsWith(CLIENT.redirect)) {
        const code = location.searchParams.get('code');
        if (!code) throw new Error(`no code in ${location}`);
        const token = await fetch(`${issuer}/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({
            grant_type: 'authorization_code', code, redirect_uri: CLIENT.redirect,
            client_id: CLIENT.id, client_secret: CLIENT.secret, code_verifier: verifier,
          }),
        });
        const body = await token.json();
        if (!body.id_token) throw new Error(`token endpoint: ${JSON.stringify(body)}`);
        console.log(body.id_token);
        return;
      }
      url = location.href;
      res = await request(url);
      continue;
    }
    const html = await res.text();
    const form = html.match(/<form[^>]*action="([^"]+)"[^>]*>([\s\S]*?)<\/form>/);
    if (!form) throw new Error(`no form at ${url} (${res.status}): ${html.slice(0, 300)}`);
    const fields = new URLSearchParams();
    for (const input of form[2].matchAll(/<input([^>]*)>/g)) {
      const name = input[1].match(/name="([^"]+)"/);
      const value = input[1].match(/value="([^"]*)"/);
      if (name) fields.set(name[1], value ? value[1] : '');
    }
    if (fields.has('login')) fields.set('login', user);
    if (fields.has('password')) fields.set('password', 'any');
    url = new URL(form[1], url).href;
    res = await request(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: fields });
  }
  throw new Error('sign-in did not finish');
}

const [cmd, ...args] = process.argv.slice(2);
if (cmd === 'serve') await serve(...args);
else if (cmd === 'login') await login(...args);
else { console.error('usage: op.mjs serve PORT CERT KEY [MAP_REDIRECT] | login ISSUER LOGIN'); process.exit(2); }

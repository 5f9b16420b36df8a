// Sign-in: the authorization code flow with PKCE against a configured OpenID provider
// (oidc-client-ts does discovery, PKCE, state and the token exchange), or in dev mode a pasted
// dev token. The ID token is the bearer for the API. Tokens live in sessionStorage only: never in
// a URL, never in localStorage, gone when the tab closes.

const DEV_TOKEN = 'trackgate.dev-token';
const ISSUER = 'trackgate.issuer';

function userManager(issuer) {
  const store = new oidc.WebStorageStateStore({ store: window.sessionStorage });
  return new oidc.UserManager({
    authority: issuer.issuer,
    client_id: issuer.client_id,
    redirect_uri: `${window.location.origin}/`,
    response_type: 'code',
    scope: issuer.scopes,
    userStore: store,
    stateStore: store,
    loadUserInfo: false,
    automaticSilentRenew: false,
    monitorSession: false,
  });
}

/** The claims of a JWT, unverified: only to show who is signed in and when it expires. */
export function claims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const text = atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '='));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(text, (c) => c.charCodeAt(0))));
  } catch {
    return null;
  }
}

export class Session {
  constructor(config) {
    this.config = config;
    this.token = null;
  }

  issuer(url) {
    return this.config.issuers.find((i) => i.issuer === url);
  }

  /** Restore a session from this tab, or finish a sign-in the provider redirected back from. */
  async restore() {
    const params = new URLSearchParams(window.location.search);
    const chosen = this.issuer(sessionStorage.getItem(ISSUER));
    if (chosen && (params.has('code') || params.has('error')) && params.has('state')) {
      // The code is single-use and bound to our PKCE verifier; take it out of the address bar
      // and history whatever happens next.
      const url = window.location.href;
      window.history.replaceState(null, '', '/');
      const user = await userManager(chosen).signinRedirectCallback(url);
      this.token = user.id_token;
      if (!this.token) throw new Error('the provider returned no ID token');
      return true;
    }
    if (chosen) {
      const user = await userManager(chosen).getUser();
      if (user && user.id_token && !this.expired(user.id_token)) {
        this.token = user.id_token;
        return true;
      }
    }
    const dev = this.config.dev_tokens ? sessionStorage.getItem(DEV_TOKEN) : null;
    if (dev && !this.expired(dev)) {
      this.token = dev;
      return true;
    }
    return false;
  }

  expired(token) {
    const c = claims(token);
    return !c || typeof c.exp !== 'number' || c.exp * 1000 <= Date.now();
  }

  /** Leave for the provider's sign-in page; it comes back to `/` with a code. */
  async signInWith(issuer) {
    sessionStorage.setItem(ISSUER, issuer.issuer);
    await userManager(issuer).signinRedirect();
  }

  /**
   * Leave for the provider again, asking it to sign the user in afresh (`prompt=login`,
   * `max_age=0`) even if it still has a session: for changes that need a recent sign-in. False
   * for a dev token, which only a new `trackgate dev-token` renews.
   */
  async signInAgain() {
    const chosen = this.issuer(sessionStorage.getItem(ISSUER));
    if (!chosen) return false;
    await userManager(chosen).signinRedirect({ prompt: 'login', max_age: 0 });
    return true;
  }

  useDevToken(token) {
    const t = token.trim();
    if (!claims(t)) throw new Error('that is not a token: paste the whole output of `trackgate dev-token`');
    if (this.expired(t)) throw new Error('that token has expired: mint a new one');
    sessionStorage.setItem(DEV_TOKEN, t);
    this.token = t;
  }

  async signOut() {
    const chosen = this.issuer(sessionStorage.getItem(ISSUER));
    if (chosen) await userManager(chosen).removeUser();
    sessionStorage.removeItem(DEV_TOKEN);
    sessionStorage.removeItem(ISSUER);
    this.token = null;
  }
}

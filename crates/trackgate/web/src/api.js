// The location API, called with the signed-in user's ID token. A 401 ends the session.

export class Unauthorized extends Error {}

export class Api {
  constructor(token, onUnauthorized) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
  }

  async fetch(path, init = {}) {
    const headers = { ...(init.headers || {}), authorization: `Bearer ${this.token}` };
    const res = await fetch(path, { ...init, headers, cache: 'no-store' });
    if (res.status === 401) {
      let detail = 'sign-in expired';
      try {
        detail = (await res.json()).detail || detail;
      } catch { /* keep the default */ }
      this.onUnauthorized(detail);
      throw new Unauthorized(detail);
    }
    return res;
  }

  async get(path) {
    const res = await this.fetch(path, { headers: { accept: 'application/json' } });
    if (!res.ok) {
      let detail = `${res.status} ${res.statusText}`;
      try {
        detail = (await res.json()).detail || detail;
      } catch { /* keep the status */ }
      throw new Error(detail);
    }
    return res.json();
  }

  me() {
    return this.get('/v1/me');
  }

  async devices() {
    return (await this.get('/v1/devices')).devices;
  }

  device(id) {
    return this.get(`/v1/devices/${encodeURIComponent(id)}`);
  }

  /** Every fix of a device in [from, to) (Unix ms), following the pages up to `max` points. */
  async track(id, from, to, max = 100000) {
    const points = [];
    let cursor = null;
    do {
      const q = new URLSearchParams({ from: String(from), to: String(to), limit: '10000' });
      if (cursor) q.set('cursor', cursor);
      const page = await this.get(`/v1/devices/${encodeURIComponent(id)}/track?${q}`);
      for (const f of page.features) {
        if (f.properties.kind === 'fix') points.push(f);
      }
      cursor = page.next;
    } while (cursor && points.length < max);
    return { points, truncated: Boolean(cursor) };
  }
}

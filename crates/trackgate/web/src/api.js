// The location API, called with the signed-in user's ID token. A 401 ends the session, except
// the one that asks for a more recent sign-in before a change (`insufficient_user_authentication`,
// RFC 9470): that one is thrown as `StepUp` for the page to sign in again and retry.

export class Unauthorized extends Error {}

/** The change needs a sign-in more recent than this token's. */
export class StepUp extends Error {}

async function problem(res, fallback) {
  try {
    const body = await res.json();
    return { error: body.error, detail: body.detail || fallback };
  } catch {
    return { error: null, detail: fallback };
  }
}

export class Api {
  constructor(token, onUnauthorized) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
  }

  async fetch(path, init = {}) {
    const headers = { ...(init.headers || {}), authorization: `Bearer ${this.token}` };
    const res = await fetch(path, { ...init, headers, cache: 'no-store' });
    if (res.status === 401) {
      const { error, detail } = await problem(res, 'sign-in expired');
      if (error === 'insufficient_user_authentication') throw new StepUp(detail);
      this.onUnauthorized(detail);
      throw new Unauthorized(detail);
    }
    return res;
  }

  async json(path, init = {}) {
    const headers = { ...(init.headers || {}), accept: 'application/json' };
    const res = await this.fetch(path, { ...init, headers });
    if (!res.ok) throw new Error((await problem(res, `${res.status} ${res.statusText}`)).detail);
    return res.json();
  }

  get(path) {
    return this.json(path);
  }

  put(path, body) {
    return this.json(path, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  }

  me() {
    return this.get('/v1/me');
  }

  async devices() {
    return (await this.get('/v1/devices')).devices;
  }

  /** The organizations the user administers (all of them for a platform administrator). */
  orgs() {
    return this.get('/v1/admin/orgs');
  }

  /** An organization's positions retention in days, or `null` for the service's default. */
  setRetention(org, days) {
    return this.put(`/v1/admin/orgs/${encodeURIComponent(org)}/retention`, { positions_days: days });
  }

  device(id) {
    return this.get(`/v1/devices/${encodeURIComponent(id)}`);
  }

  /** Events of the devices the user may see, newest first: `{ events, next }`. */
  events(query = {}) {
    return this.get(`/v1/events?${new URLSearchParams(query)}`);
  }

  /** One device's events, newest first: `{ events, next }`. */
  deviceEvents(id, query = {}) {
    return this.get(`/v1/devices/${encodeURIComponent(id)}/events?${new URLSearchParams(query)}`);
  }

  /** The geofences of the user's organizations. */
  async geofences() {
    return (await this.get('/v1/geofences')).geofences;
  }

  /**
   * A device's fixes in [from, to) (Unix ms). With `detail` ({ max_points, tolerance_m }), the
   * range simplified for the screen in one answer; without, every fix, following the pages up
   * to `max` points.
   */
  async track(id, from, to, detail = null, max = 100000) {
    const path = `/v1/devices/${encodeURIComponent(id)}/track`;
    const fixes = (page) => page.features.filter((f) => f.properties.kind === 'fix');
    if (detail) {
      const q = new URLSearchParams({ from: String(from), to: String(to) });
      for (const [k, v] of Object.entries(detail)) if (v) q.set(k, String(v));
      const page = await this.get(`${path}?${q}`);
      return { points: fixes(page), truncated: false, simplified: page.simplified };
    }
    const points = [];
    let cursor = null;
    do {
      const q = new URLSearchParams({ from: String(from), to: String(to), limit: '10000' });
      if (cursor) q.set('cursor', cursor);
      const page = await this.get(`${path}?${q}`);
      points.push(...fixes(page));
      cursor = page.next;
    } while (cursor && points.length < max);
    return { points, truncated: Boolean(cursor), simplified: null };
  }

  /** The full-resolution fixes of [from, to) as a file (`gpx`, `csv` or `geojson`): a Blob. */
  async download(id, from, to, format) {
    const q = new URLSearchParams({ from: String(from), to: String(to), format });
    const res = await this.fetch(`/v1/devices/${encodeURIComponent(id)}/track/download?${q}`);
    if (!res.ok) throw new Error((await problem(res, `${res.status} ${res.statusText}`)).detail);
    return res.blob();
  }
}

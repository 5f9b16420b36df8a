// The map page: sign in, then the visible devices on a map and in a searchable list, kept live by
// the stream; a device's details and track on demand. Everything shown comes from the location
// API with the signed-in user's token, so it is exactly what that user's groups allow.

import { Api } from './api.js';
import { Devices, ago, battery, label, temperature } from './devices.js';
import { DeviceList } from './list.js';
import { EventList, showDeviceEvents } from './events.js';
import { follow } from './live.js';
import { DeviceMap } from './map.js';
import { Session, claims } from './session.js';
import { OrgSettings } from './settings.js';
import { Playback } from './playback.js';

const $ = (id) => document.getElementById(id);

/** Track ranges up to this long are drawn from every fix; longer ones simplified for the screen. */
const FULL_RESOLUTION_MS = 2 * 3600 * 1000;

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

async function main() {
  const config = await (await fetch('/ui/config.json', { cache: 'no-store' })).json();
  const session = new Session(config);
  let restored = false;
  try {
    restored = await session.restore();
  } catch (e) {
    $('signin-error').textContent = `Sign-in failed: ${e.message}`;
  }
  if (restored) start(config, session);
  else showSignIn(config, session);
}

function showSignIn(config, session) {
  $('app').hidden = true;
  $('signin').hidden = false;
  $('sign-out').hidden = true;
  const issuers = $('issuers');
  issuers.replaceChildren();
  for (const issuer of config.issuers) {
    const b = el('button', null, `Sign in with ${issuer.name}`);
    b.type = 'button';
    b.addEventListener('click', () => session.signInWith(issuer).catch((e) => {
      $('signin-error').textContent = `Could not reach ${issuer.name}: ${e.message}`;
    }));
    issuers.append(b);
  }
  $('dev-form').hidden = !config.dev_tokens;
  $('no-signin').hidden = config.dev_tokens || config.issuers.length > 0;
  $('dev-form').onsubmit = (ev) => {
    ev.preventDefault();
    try {
      session.useDevToken($('dev-token').value);
      $('dev-token').value = '';
      $('signin-error').textContent = '';
      start(config, session);
    } catch (e) {
      $('signin-error').textContent = e.message;
    }
  };
}

/**
 * Sign out after `secs` without the user's hand on the page (a key, a click, a touch, the wheel,
 * the pointer moving); updates arriving on the live stream do not count.
 */
function signOutWhenIdle(secs, signOut) {
  const span = secs >= 120 ? `${Math.round(secs / 60)} minutes` : `${secs} seconds`;
  let timer;
  const active = () => {
    clearTimeout(timer);
    timer = setTimeout(() => signOut(`Signed out after ${span} without activity`), secs * 1000);
  };
  for (const ev of ['pointerdown', 'pointermove', 'keydown', 'wheel', 'touchstart']) {
    window.addEventListener(ev, active, { passive: true });
  }
  active();
}

async function start(config, session) {
  const stop = new AbortController();
  const signOut = async (reason) => {
    stop.abort();
    OrgSettings.forget();
    await session.signOut();
    // A fresh page: no map, markers or data of the previous user survive.
    if (reason) sessionStorage.setItem('trackgate.signed-out', reason);
    window.location.replace('/');
  };
  const api = new Api(session.token, (detail) => signOut(`Signed out: ${detail}`));
  let me;
  try {
    me = await api.me();
  } catch (e) {
    $('signin-error').textContent = e.message;
    return;
  }
  $('signin').hidden = true;
  $('app').hidden = false;
  $('sign-out').hidden = false;
  $('sign-out').onclick = () => signOut(null);
  $('who').textContent = me.email || me.subject;
  $('who').title = `${me.email || me.subject} (${me.issuer})`;

  const exp = claims(session.token)?.exp;
  if (exp) setTimeout(() => signOut('Signed out: the sign-in expired'), Math.max(0, exp * 1000 - Date.now()));
  signOutWhenIdle(config.idle_timeout_secs, signOut);
  if (OrgSettings.wanted(me)) new OrgSettings(api, session, me).resume();

  const devices = new Devices(config.stale_after_secs);
  const view = new View(devices, api, config);
  const gone = devices.load(await api.devices());
  view.sync(gone);
  view.fitOnce(0);
  api.geofences().then(
    (list) => {
      view.map.showGeofences(list);
      view.events.setFences(list);
    },
    (e) => { $('map').dataset.geofences = `failed: ${e.message}`; },
  );
  view.events.follow(stop.signal);

  setInterval(() => view.sync([]), 30000);
  follow(api, {
    signal: stop.signal,
    onState: (state) => {
      $('live').dataset.state = state;
      $('live').textContent = state === 'live' ? 'live' : 'reconnecting…';
    },
    onPosition: async (feature) => {
      const id = feature.properties.device_id;
      if (!devices.has(id)) {
        // Newly visible (assigned or granted since the page loaded).
        try { devices.add(await api.device(id)); } catch { return; }
      }
      if (devices.apply(feature)) view.update(id);
    },
    onResync: async () => view.sync(devices.load(await api.devices())),
  });
}

class View {
  constructor(devices, api, config) {
    this.devices = devices;
    this.api = api;
    this.selected = null;
    this.map = new DeviceMap($('map'), config.tiles, (id) => this.select(id));
    this.playback = new Playback(this.map);
    this.list = new DeviceList($('devices'), (id) => this.item(this.devices.get(id)));
    this.events = new EventList(api, $('event-list'), devices, (id) => this.select(id), () => {
      if (this.selected) showDeviceEvents(api, this.selected, $('d-events'), this.events.fences);
    });
    // Every device in list order, and their ids; live changes waiting for the next frame.
    this.ordered = [];
    this.listed = new Set();
    this.dirty = new Set();
    this.frame = null;
    this.fitted = false;
    this.fitPending = false;
    $('search').addEventListener('input', () => this.filter());
    $('d-close').addEventListener('click', () => this.select(null));
    $('track-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.showTrack();
    });
    $('t-download').addEventListener('click', () => this.download());
    this.trackRange = null;
    this.map.onZoom(() => this.refineTrack());
  }

  flags(d) {
    const f = this.devices.flags(d);
    if (d.id === this.selected) f.push('selected');
    return f;
  }

  /** Redraw everything: after a (re)load, and every 30 s so "last seen" and stale stay true. */
  sync(gone) {
    for (const id of gone) {
      this.map.remove(id);
      if (id === this.selected) this.select(null);
    }
    this.ordered = this.devices.all();
    this.listed = new Set(this.ordered.map((d) => d.id));
    this.map.showAll(this.ordered.map((d) => [d, this.flags(d)]));
    this.filter();
    if (this.selected) this.details(this.devices.get(this.selected));
  }

  /**
   * Fit the view to the devices the first time there are any: at load, or (when nothing had a
   * position yet) shortly after the first positions arrive, so a batch of them fits together.
   */
  fitOnce(delayMs) {
    if (this.fitted || this.fitPending || this.map.markers.size === 0) return;
    this.fitPending = true;
    setTimeout(() => {
      this.fitPending = false;
      this.fitted = true;
      this.map.fit();
    }, delayMs);
  }

  /**
   * One device changed (a live position). Changes are drawn together once per animation frame,
   * however many arrive in between.
   */
  update(id) {
    this.dirty.add(id);
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      const ids = [...this.dirty];
      this.dirty.clear();
      for (const changed of ids) {
        const d = this.devices.get(changed);
        if (!d) continue;
        this.map.show(d, this.flags(d));
        if (changed === this.selected) this.details(d);
      }
      if (ids.some((changed) => !this.listed.has(changed))) this.sync([]);
      else this.list.refresh();
      this.fitOnce(300);
    });
  }

  item(d) {
    const li = el('li');
    li.dataset.device = d.id;
    const b = el('button', this.flags(d).join(' '));
    b.type = 'button';
    b.dataset.device = d.id;
    const name = el('span', 'label', label(d));
    const flags = this.devices.flags(d);
    if (flags.includes('stale')) name.append(el('span', 'badge stale', 'stale'));
    if (flags.includes('low')) name.append(el('span', 'badge low', 'low battery'));
    const meta = [d.shipment_label ? d.id : null, ago(d.last_seen_ms), battery(d), temperature(d)]
      .filter(Boolean)
      .join(' · ');
    b.append(name, el('span', 'meta', meta));
    b.addEventListener('click', () => this.select(d.id));
    li.append(b);
    return li;
  }

  filter() {
    const q = $('search').value.trim();
    const shown = q ? this.ordered.filter((d) => this.devices.matches(d, q)) : this.ordered;
    this.list.set(shown.map((d) => d.id));
    const total = this.ordered.length;
    $('count').textContent = q ? `${shown.length} of ${total} devices` : `${total} devices`;
  }

  select(id) {
    const previous = this.selected;
    this.selected = id;
    for (const other of [previous, id]) {
      const d = other && this.devices.get(other);
      if (d) this.map.show(d, this.flags(d));
    }
    if (id) this.list.reveal(id);
    else this.list.refresh();
    this.map.clearTrack();
    this.playback.clear();
    this.trackRange = null;
    $('t-status').textContent = '';
    delete $('t-status').dataset.points;
    if (!id) {
      $('details').hidden = true;
      return;
    }
    const d = this.devices.get(id);
    const to = new Date(Date.now() + 60000);
    const from = new Date(to.getTime() - 24 * 3600 * 1000);
    $('t-from').value = local(from);
    $('t-to').value = local(to);
    this.details(d);
    showDeviceEvents(this.api, id, $('d-events'), this.events.fences);
    $('details').hidden = false;
    this.map.focus(id);
  }

  details(d) {
    $('d-title').textContent = label(d);
    const rows = [
      ['Device', d.id],
      ['Shipment', [d.shipment_label, d.shipment_ref].filter(Boolean).join(' / ') || null],
      ['Organization', d.org_id],
      ['Order group', d.order_group_id],
      ['Last seen', d.last_seen_ms == null ? 'never' : `${new Date(d.last_seen_ms).toLocaleString()} (${ago(d.last_seen_ms)})`],
      ['Position', d.position ? `${d.position.lat.toFixed(5)}, ${d.position.lon.toFixed(5)}` : 'none yet'],
      ['Battery', battery(d)],
      ['Temperature', temperature(d)],
      ['Status', this.devices.stale(d) ? 'stale: no recent data' : 'reporting'],
    ];
    const dl = $('d-fields');
    dl.replaceChildren();
    for (const [k, v] of rows) {
      if (v == null) continue;
      const dd = el('dd', null, String(v));
      dd.dataset.field = k.toLowerCase().replace(/ /g, '-');
      dl.append(el('dt', null, k), dd);
    }
  }

  /** The track form's range in Unix ms, or null (and a message) when it is not a range. */
  range() {
    const from = new Date($('t-from').value).getTime();
    const to = new Date($('t-to').value).getTime();
    if (from < to) return { from, to };
    $('t-status').textContent = '"From" must be before "To".';
    return null;
  }

  /**
   * Draw the selected device's track over the form's range: every fix for a short range, else
   * the range simplified to about two points per pixel of the map's width; zooming in past it
   * asks again with the detail of the new zoom (`refineTrack`).
   */
  async showTrack() {
    const id = this.selected;
    const range = this.range();
    if (!range) return;
    const status = $('t-status');
    status.textContent = 'Loading track…';
    delete status.dataset.points;
    this.trackRange = null;
    const full = range.to - range.from <= FULL_RESOLUTION_MS;
    try {
      const detail = full ? null : { max_points: Math.min(10000, 2 * this.map.width()) };
      const track = await this.api.track(id, range.from, range.to, detail);
      if (this.selected !== id) return;
      this.map.showTrack(track.points);
      this.playback.load(track.points);
      if (!full) this.trackRange = { id, ...range, zoom: this.map.zoom() };
      this.trackStatus(track);
    } catch (e) {
      status.textContent = `Could not load the track: ${e.message}`;
    }
  }

  /** Zoomed in past a simplified track's detail: ask for it again at this zoom's (debounced). */
  refineTrack() {
    const r = this.trackRange;
    if (!r || r.id !== this.selected || this.map.zoom() <= r.zoom) return;
    clearTimeout(this.refineTimer);
    this.refineTimer = setTimeout(async () => {
      const detail = { tolerance_m: Math.max(0.5, this.map.metresPerPixel() / 2), max_points: 10000 };
      try {
        const track = await this.api.track(r.id, r.from, r.to, detail);
        if (this.trackRange !== r) return;
        r.zoom = this.map.zoom();
        this.map.showTrack(track.points, false);
        this.playback.load(track.points);
        this.trackStatus(track);
      } catch (e) {
        $('t-status').textContent = `Could not load the track: ${e.message}`;
      }
    }, 300);
  }

  trackStatus({ points, truncated, simplified }) {
    const status = $('t-status');
    status.dataset.points = String(points.length);
    if (simplified) status.dataset.fixes = String(simplified.fixes);
    else delete status.dataset.fixes;
    status.textContent = points.length === 0
      ? 'No positions in this range.'
      : simplified
        ? `${points.length} of ${simplified.fixes} positions (simplified for this zoom).`
        : `${points.length} positions${truncated ? ' (the first 100,000 only)' : ''}.`;
  }

  /** The form's range at full resolution, as a file in the chosen format. */
  async download() {
    const id = this.selected;
    const range = this.range();
    if (!range) return;
    const format = $('t-format').value;
    const status = $('t-status');
    status.textContent = `Preparing the ${format.toUpperCase()} file…`;
    try {
      const blob = await this.api.download(id, range.from, range.to, format);
      const a = el('a');
      a.href = URL.createObjectURL(blob);
      a.download = `${id}-${range.from}-${range.to}.${format}`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 60000);
      status.textContent = `Downloaded ${a.download}.`;
    } catch (e) {
      status.textContent = `Could not download: ${e.message}`;
    }
  }
}

/** A Date as the value of a datetime-local input (local time, to the second). */
function local(date) {
  const p = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${p(date.getMonth() + 1)}-${p(date.getDate())}T${p(date.getHours())}:${p(date.getMinutes())}:${p(date.getSeconds())}`;
}

const notice = sessionStorage.getItem('trackgate.signed-out');
if (notice) {
  sessionStorage.removeItem('trackgate.signed-out');
  $('signin-error').textContent = notice;
}
main().catch((e) => {
  $('signin').hidden = false;
  $('signin-error').textContent = `The page failed to start: ${e.message}`;
});

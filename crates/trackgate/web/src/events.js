// Events on the map page: the recent events of the devices the user may see, newest first, in the
// side panel, and a selected device's own in its details. Polled every 30 s while the page is in
// view (each read is audited, like every read of location data): an event follows its record only
// once that record has settled (`events.settle_ms`), so the live stream cannot announce it.

import { ago, label } from './devices.js';

const POLL_MS = 30000;
const RECENT = 50;

/** A duration in words: "6 min", "3 h". */
function duration(ms) {
  const s = Math.round(ms / 1000);
  if (s < 3600) return `${Math.max(1, Math.round(s / 60))} min`;
  if (s < 86400) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

/** What an event says, in words; `fences` names geofences by `org/id`. */
export function describe(e, fences) {
  const fence = () => fences.get(`${e.org_id}/${e.geofence}`) || e.geofence;
  switch (e.kind) {
    case 'enter': return `entered ${fence()}`;
    case 'exit': return `left ${fence()}`;
    case 'jump': return `GPS jump (${Math.round(e.speed_mps)} m/s), ignored`;
    case 'battery_low': return `battery low (${Math.round(e.bat)}%)`;
    case 'temperature_out': return `temperature out of range (${Number(e.tmp).toFixed(1)} °C)`;
    case 'stale': return `silent for ${duration(e.silent_ms)}`;
    default: return e.kind;
  }
}

export class EventList {
  /**
   * `ul` shows the events; `devices` names their devices; `onSelect(id)` is called when one is
   * clicked, `onLoad()` after every load.
   */
  constructor(api, ul, devices, onSelect, onLoad) {
    this.api = api;
    this.ul = ul;
    this.devices = devices;
    this.onSelect = onSelect;
    this.onLoad = onLoad;
    this.fences = new Map();
    this.events = [];
  }

  /** Geofence names, once the page has them. */
  setFences(list) {
    this.fences = new Map(list.map((g) => [`${g.org_id}/${g.id}`, g.name]));
    this.draw();
  }

  /** Load now, then every 30 s while the page is in view, until `signal` aborts. */
  follow(signal) {
    this.load();
    const timer = setInterval(() => {
      if (!document.hidden) this.load();
    }, POLL_MS);
    signal.addEventListener('abort', () => clearInterval(timer));
  }

  async load() {
    try {
      this.events = (await this.api.events({ limit: RECENT })).events;
      delete this.ul.dataset.error;
      this.draw();
      this.onLoad();
    } catch (e) {
      this.ul.dataset.error = e.message;
    }
  }

  draw() {
    render(this.ul, this.events, this.fences, (e) => {
      const d = this.devices.get(e.device_id);
      return d ? label(d) : e.device_id;
    }, this.onSelect);
  }
}

/** A device's own events into `ul` (its details), newest first. */
export async function showDeviceEvents(api, id, ul, fences) {
  ul.replaceChildren();
  ul.dataset.state = 'loading';
  try {
    const { events } = await api.deviceEvents(id, { limit: RECENT });
    render(ul, events, fences, null, null);
    ul.dataset.state = 'loaded';
  } catch (e) {
    ul.dataset.state = `failed: ${e.message}`;
  }
}

function render(ul, events, fences, name, onSelect) {
  const items = events.map((e) => {
    const li = document.createElement('li');
    li.dataset.kind = e.kind;
    const at = new Date(e.ts);
    const text = `${name ? `${name(e)}: ` : ''}${describe(e, fences)}`;
    const what = document.createElement(onSelect ? 'button' : 'span');
    what.className = 'what';
    what.textContent = text;
    if (onSelect) {
      what.type = 'button';
      what.addEventListener('click', () => onSelect(e.device_id));
    }
    const when = document.createElement('time');
    when.dateTime = at.toISOString();
    when.title = at.toLocaleString();
    when.textContent = ago(e.ts);
    li.append(what, when);
    return li;
  });
  if (items.length === 0) {
    const li = document.createElement('li');
    li.className = 'none';
    li.textContent = 'No events.';
    items.push(li);
  }
  ul.replaceChildren(...items);
  ul.dataset.count = String(events.length);
}

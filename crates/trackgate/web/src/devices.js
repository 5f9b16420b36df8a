// What the page knows about each visible device, kept current by the live stream, and how it
// reads: last seen, battery, temperature, stale.

export const LOW_BATTERY = 20;

export class Devices {
  constructor(staleAfterSecs) {
    this.staleAfterMs = staleAfterSecs * 1000;
    this.byId = new Map();
  }

  /** Replace everything with a fresh `/v1/devices` answer; returns the ids that went away. */
  load(list) {
    const gone = new Set(this.byId.keys());
    for (const d of list) {
      gone.delete(d.id);
      this.byId.set(d.id, d);
    }
    for (const id of gone) this.byId.delete(id);
    return [...gone];
  }

  add(device) {
    this.byId.set(device.id, device);
  }

  get(id) {
    return this.byId.get(id);
  }

  has(id) {
    return this.byId.has(id);
  }

  all() {
    return [...this.byId.values()].sort((a, b) => label(a).localeCompare(label(b)) || a.id.localeCompare(b.id));
  }

  /**
   * Apply a live position (a GeoJSON Point feature). A late record from a backlog updates
   * nothing it is older than. Returns whether the device changed.
   */
  apply(feature) {
    const d = this.byId.get(feature.properties.device_id);
    if (!d) return false;
    const p = feature.properties;
    const [lon, lat] = feature.geometry.coordinates;
    let changed = false;
    if (!d.position || p.ts >= d.position.ts) {
      d.position = { ...p, lat, lon };
      changed = true;
    }
    if (d.last_seen_ms == null || p.ts >= d.last_seen_ms) {
      d.last_seen_ms = p.ts;
      d.bat = p.bat ?? null;
      d.tmp = p.tmp ?? null;
      changed = true;
    }
    return changed;
  }

  stale(d, now = Date.now()) {
    return d.last_seen_ms == null || now - d.last_seen_ms > this.staleAfterMs;
  }

  /** CSS classes for a device's marker and list entry. */
  flags(d, now = Date.now()) {
    const f = [];
    if (this.stale(d, now)) f.push('stale');
    if (d.bat != null && d.bat < LOW_BATTERY) f.push('low');
    return f;
  }

  matches(d, query) {
    if (!query) return true;
    const q = query.toLowerCase();
    return [d.id, d.shipment_label, d.shipment_ref].some((v) => v && v.toLowerCase().includes(q));
  }
}

export function label(d) {
  return d.shipment_label || d.id;
}

export function ago(ms, now = Date.now()) {
  if (ms == null) return 'never seen';
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export const battery = (d) => (d.bat == null ? null : `${Math.round(d.bat)} %`);
export const temperature = (d) => (d.tmp == null ? null : `${d.tmp.toFixed(1)} °C`);

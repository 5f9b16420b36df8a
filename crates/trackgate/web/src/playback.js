// Track playback: a time slider and a play button that replay the drawn track, a marker moving
// along the line with the time shown. Between fixes the position is interpolated in time; a
// simplified track replays within its tolerance, since it is simplified in time as well as space.

/** A whole track plays in this long, whatever its span. */
const PLAY_MS = 20000;

const $ = (id) => document.getElementById(id);

export class Playback {
  constructor(map) {
    this.map = map;
    this.points = [];
    this.frame = null;
    $('p-time').addEventListener('input', () => {
      this.pause();
      this.seek(Number($('p-time').value));
    });
    $('p-play').addEventListener('click', () => (this.frame ? this.pause() : this.play()));
  }

  /** Replay these GeoJSON fixes (oldest first); fewer than two hide the controls. */
  load(features) {
    this.pause();
    this.points = features.map((f) => ({
      ts: f.properties.ts,
      lat: f.geometry.coordinates[1],
      lon: f.geometry.coordinates[0],
    }));
    const enough = this.points.length >= 2;
    $('playback').hidden = !enough;
    if (!enough) return;
    const slider = $('p-time');
    slider.min = String(this.first());
    slider.max = String(this.last());
    slider.value = slider.min;
    this.seek(this.first());
  }

  clear() {
    this.pause();
    this.points = [];
    $('playback').hidden = true;
  }

  first() {
    return this.points[0].ts;
  }

  last() {
    return this.points[this.points.length - 1].ts;
  }

  /** Where the track puts the device at `ts`: interpolated between the fixes either side. */
  at(ts) {
    const p = this.points;
    let lo = 0;
    let hi = p.length - 1;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (p[mid].ts <= ts) lo = mid;
      else hi = mid;
    }
    const [a, b] = [p[lo], p[hi]];
    const f = b.ts > a.ts ? Math.min(1, Math.max(0, (ts - a.ts) / (b.ts - a.ts))) : 0;
    return { lat: a.lat + f * (b.lat - a.lat), lon: a.lon + f * (b.lon - a.lon) };
  }

  seek(ts) {
    const pos = this.at(ts);
    this.map.playhead(pos);
    const label = $('p-at');
    label.textContent = new Date(ts).toLocaleString();
    label.dataset.ts = String(ts);
    label.dataset.lat = String(pos.lat);
    label.dataset.lon = String(pos.lon);
  }

  play() {
    const slider = $('p-time');
    let from = Number(slider.value);
    if (from >= this.last()) from = this.first();
    const started = performance.now();
    const rate = (this.last() - this.first()) / PLAY_MS;
    $('p-play').textContent = 'Pause';
    $('p-play').setAttribute('aria-pressed', 'true');
    const step = (now) => {
      const ts = Math.min(this.last(), from + (now - started) * rate);
      slider.value = String(ts);
      this.seek(ts);
      if (ts >= this.last()) this.pause();
      else this.frame = requestAnimationFrame(step);
    };
    this.frame = requestAnimationFrame(step);
  }

  pause() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = null;
    $('p-play').textContent = 'Play';
    $('p-play').setAttribute('aria-pressed', 'false');
  }
}

// Drives Debian's Chromium through playwright-core for the map page's end-to-end tests. The Rust
// test (tests/src/browser.rs) sends one JSON command per line on stdin and reads one JSON answer
// per line on stdout: {"ok":true,"value":...} or {"ok":false,"error":"..."}.
//
// The page may fetch only from trackgate itself and from the tile server; any other request is
// aborted and reported by `errors`, as are console errors and uncaught exceptions.
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import zlib from 'node:zlib';
import { chromium } from 'playwright-core';

const TILES = 'https://tile.openstreetmap.org/';
const TIMEOUT = 20000;

/** A 256x256 light grey PNG, served for every tile when tiles are "served". */
function tilePng() {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type), data]);
    const sum = Buffer.alloc(4);
    sum.writeUInt32BE(crc(body));
    return Buffer.concat([len, body, sum]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(256, 0);
  ihdr.writeUInt32BE(256, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const row = Buffer.concat([Buffer.from([0]), Buffer.alloc(256 * 3, 0xd8)]);
  const raw = Buffer.concat(Array.from({ length: 256 }, () => row));
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

let browser;
let context;
let page;
let origin;
let artefacts = '.';
const seen = { console: [], page: [], external: [], tiles: { served: 0, blocked: 0 } };

async function until(what, fn, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await fn();
    if (last.done) return last.value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last saw ${JSON.stringify(last.value)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Markers drawn on the map (not those folded into clusters, nor ones fading in or out of a
 * cluster): id, centre, classes.
 */
async function markers() {
  return page.$$eval('.leaflet-marker-pane .tg-marker', (els) => els.filter((e) => {
    const r = e.getBoundingClientRect();
    return r.width > 0 && getComputedStyle(e).opacity !== '0' && e.querySelector('[data-device]');
  }).map((e) => {
    const r = e.getBoundingClientRect();
    return {
      id: e.querySelector('[data-device]').dataset.device,
      x: r.x + r.width / 2,
      y: r.y + r.height / 2,
      classes: [...e.classList].filter((c) => c !== 'tg-marker' && !c.startsWith('leaflet')),
    };
  }));
}

/** The sizes of the clusters drawn on the map. */
async function clusterSizes() {
  return page.$$eval('.leaflet-marker-pane .marker-cluster', (els) => els
    .filter((e) => getComputedStyle(e).opacity !== '0')
    .map((e) => Number(e.textContent.trim())));
}

const sorted = (xs) => [...xs].sort();

const ops = {
  async launch({ viewport = { width: 1280, height: 800 }, tiles = 'serve', dir = '.', allow = [] }) {
    artefacts = dir;
    fs.mkdirSync(artefacts, { recursive: true });
    browser ??= await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    if (context) await context.close();
    Object.assign(seen, { console: [], page: [], external: [], tiles: { served: 0, blocked: 0 } });
    context = await browser.newContext({ viewport, ignoreHTTPSErrors: true, deviceScaleFactor: 1 });
    const png = tilePng();
    await context.route('**/*', async (route) => {
      const url = route.request().url();
      if (origin && url.startsWith(origin)) return route.continue();
      if (allow.some((o) => url.startsWith(`${o}/`))) return route.continue();
      if (url.startsWith(TILES)) {
        if (tiles === 'serve') {
          seen.tiles.served += 1;
          return route.fulfill({ status: 200, contentType: 'image/png', body: png });
        }
        seen.tiles.blocked += 1;
        return route.abort('internetdisconnected');
      }
      seen.external.push({ url, page: page ? page.url() : null });
      return route.abort('blockedbyclient');
    });
    page = await context.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error') seen.console.push({ text: m.text(), url: m.location().url, page: page.url() });
    });
    page.on('pageerror', (e) => seen.page.push(String(e)));
    return true;
  },

  async goto({ url }) {
    origin = new URL(url).origin;
    const res = await page.goto(url, { waitUntil: 'load' });
    return { status: res.status(), headers: res.headers() };
  },

  async reload() {
    await page.reload({ waitUntil: 'load' });
    return true;
  },

  async dev_sign_in({ token }) {
    await page.locator('#dev-token').fill(token);
    await page.locator('#dev-form button[type=submit]').click();
    await page.locator('#app').waitFor({ state: 'visible', timeout: TIMEOUT });
    return page.locator('#who').textContent();
  },

  /**
   * Sign in through an OpenID provider: click `button` (the page's sign-in button, or one whose
   * action leads to the provider), type `login` (and any password) into its login page, accept
   * its consent page, and wait to be back on the map, signed in. Says how many login pages the
   * provider showed.
   */
  async provider_sign_in({ button, login }) {
    await Promise.all([
      page.waitForURL((u) => u.origin !== origin, { timeout: TIMEOUT }),
      page.getByRole('button', { name: button }).click(),
    ]);
    let logins = 0;
    for (let step = 0; step < 6; step++) {
      await page.waitForLoadState('load');
      if (new URL(page.url()).origin === origin) break;
      const form = page.locator('input[name=login]');
      if (await form.count()) {
        await form.fill(login);
        await page.locator('input[name=password]').fill('any');
        logins += 1;
      }
      const before = page.url();
      await Promise.all([
        page.waitForURL((u) => u.href !== before, { timeout: TIMEOUT }),
        page.locator('button[type=submit]').first().click(),
      ]);
    }
    await page.locator('#app').waitFor({ state: 'visible', timeout: TIMEOUT });
    return { who: await page.locator('#who').textContent(), url: page.url(), logins };
  },

  /** Wait until the markers on the map are exactly `ids`. */
  async wait_markers({ ids }) {
    const want = JSON.stringify(sorted(ids));
    return until(`markers ${want}`, async () => {
      const m = await markers();
      return { done: JSON.stringify(sorted(m.map((x) => x.id))) === want, value: m };
    });
  },

  markers,

  /** Wait until markers and clusters together show `total` devices. */
  async wait_shown({ total }) {
    return until(`${total} devices on the map`, async () => {
      const sizes = await clusterSizes();
      const single = (await markers()).length;
      const shown = single + sizes.reduce((a, b) => a + b, 0);
      return { done: shown === total, value: { single, clusters: sizes } };
    });
  },

  /** Zoom out with the map's control until everything is clustered: the cluster sizes. */
  async zoom_out_until_clustered({ total }) {
    return until(`${total} devices in clusters`, async () => {
      const sizes = await clusterSizes();
      const done = sizes.reduce((a, b) => a + b, 0) === total && (await markers()).length === 0;
      if (!done) await page.locator('.leaflet-control-zoom-out').click();
      await page.waitForTimeout(400);
      return { done, value: sizes };
    });
  },

  /** Device ids in the side list that are shown (not filtered out), in list order. */
  async list() {
    return page.$$eval('#devices li[data-device]', (els) => els.map((e) => ({
      id: e.dataset.device,
      text: e.textContent,
      classes: [...e.querySelector('button').classList],
    })));
  },

  async search({ text }) {
    await page.locator('#search').fill(text);
    return (await ops.list()).map((x) => x.id);
  },

  /** Wait until the marker of `id` rests (same place twice) more than 2 px from (x, y). */
  async wait_moved({ id, x, y }) {
    let last;
    return until(`marker ${id} to move from ${x},${y}`, async () => {
      const m = (await markers()).find((k) => k.id === id);
      const moved = Boolean(m) && Math.hypot(m.x - x, m.y - y) > 2;
      const resting = moved && last && last.x === m.x && last.y === m.y;
      last = m;
      return { done: resting, value: m };
    });
  },

  /** Wait until the text of `selector` is no longer `from`. */
  async wait_changed({ selector, from }) {
    return until(`${selector} to change from ${from}`, async () => {
      const t = (await page.locator(selector).textContent()) || '';
      return { done: t !== from, value: t };
    });
  },

  async wait_text({ selector, contains }) {
    return until(`${selector} to contain ${contains}`, async () => {
      const t = (await page.locator(selector).textContent()) || '';
      return { done: t.includes(contains), value: t };
    });
  },

  async wait_live({ state }) {
    return until(`live state ${state}`, async () => {
      const s = await page.locator('#live').getAttribute('data-state');
      return { done: s === state, value: s };
    });
  },

  async select({ id }) {
    await page.locator(`#devices button[data-device="${id}"]`).click();
    await page.locator('#details').waitFor({ state: 'visible', timeout: TIMEOUT });
    return page.locator('#d-fields').textContent();
  },

  /**
   * Tap a device's marker until its details open: a tap that lands while the map is still
   * zooming (markers are rebuilt at the end of a zoom) is lost, for a person too.
   */
  async select_marker({ id }) {
    await until(`the details of ${id} to open`, async () => {
      const marker = page.locator(`.leaflet-marker-pane [data-device="${id}"]`);
      if (await marker.count()) await marker.first().click({ timeout: 2000 }).catch(() => {});
      const open = await page.locator('#details').isVisible();
      return { done: open, value: open };
    });
    return page.locator('#d-title').textContent();
  },

  /** Set the track range (datetime-local values) if given, show the track, and wait for it. */
  async track({ from, to }) {
    if (from) await page.locator('#t-from').fill(from);
    if (to) await page.locator('#t-to').fill(to);
    await page.locator('#track-form button[type=submit]').click();
    const points = await until('the track to load', async () => {
      const v = await page.locator('#t-status').getAttribute('data-points');
      return { done: v !== null, value: v };
    });
    const vertices = await page.$$eval('path.tg-track', (ps) => ps.map((p) => (p.getAttribute('d').match(/[ML]/g) || []).length));
    return { points: Number(points), lines: vertices.length, vertices: vertices[0] ?? 0, status: await page.locator('#t-status').textContent() };
  },

  /** Download the selected device's track range in `format` through the page: its file. */
  async download({ format }) {
    await page.locator('#t-format').selectOption(format);
    const [dl] = await Promise.all([
      page.waitForEvent('download', { timeout: TIMEOUT }),
      page.locator('#t-download').click(),
    ]);
    return { name: dl.suggestedFilename(), text: fs.readFileSync(await dl.path(), 'utf8') };
  },

  /** Wait until `selector` has the attribute `name`: its value. */
  async wait_attr({ selector, name }) {
    return until(`${selector}[${name}]`, async () => {
      const v = await page.locator(selector).first().getAttribute(name);
      return { done: v !== null, value: v };
    });
  },

  /** Start counting the page's animation frames. */
  async frames_start() {
    return page.evaluate(() => {
      window.__frames = { times: [], on: true };
      const tick = (t) => {
        if (!window.__frames.on) return;
        window.__frames.times.push(t);
        requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
      return true;
    });
  },

  /**
   * Stop counting: frames drawn, frames dropped (a gap of n frame times at 60 Hz drops n - 1),
   * the longest gap, the seconds counted.
   */
  async frames_stop() {
    return page.evaluate(() => {
      const f = window.__frames;
      f.on = false;
      let dropped = 0;
      let longest = 0;
      for (let i = 1; i < f.times.length; i++) {
        const gap = f.times[i] - f.times[i - 1];
        longest = Math.max(longest, gap);
        dropped += Math.max(0, Math.round(gap / (1000 / 60)) - 1);
      }
      const seconds = (f.times[f.times.length - 1] - f.times[0]) / 1000;
      return { frames: f.times.length, dropped, longest_ms: longest, seconds };
    });
  },

  /** The page's JavaScript heap in use, bytes (Chromium's performance.memory), after a GC if exposed. */
  async heap() {
    return page.evaluate(() => performance.memory.usedJSHeapSize);
  },

  async attr({ selector, name }) {
    return page.locator(selector).first().getAttribute(name);
  },

  async visible({ selector }) {
    return page.locator(selector).first().isVisible();
  },

  async eval({ expr }) {
    return page.evaluate(expr);
  },

  async fill({ selector, value }) {
    await page.locator(selector).first().fill(value);
    return true;
  },

  async click({ selector }) {
    await page.locator(selector).first().click();
    return true;
  },

  async screenshot({ name }) {
    const file = path.resolve(artefacts, `${name}.png`);
    // Let zoom and cluster animations finish (they take 250 ms).
    await page.waitForTimeout(500);
    await page.screenshot({ path: file });
    return file;
  },

  async errors() {
    return seen;
  },

  async close() {
    if (browser) await browser.close();
    browser = undefined;
    return true;
  },
};

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  let reply;
  try {
    const cmd = JSON.parse(line);
    const op = ops[cmd.op];
    if (!op) throw new Error(`unknown op ${cmd.op}`);
    reply = { ok: true, value: (await op(cmd)) ?? null };
  } catch (e) {
    reply = { ok: false, error: String(e && e.stack ? e.stack : e) };
  }
  process.stdout.write(`${JSON.stringify(reply)}\n`);
  if (JSON.parse(line).op === 'close') break;
}
if (browser) await browser.close();
process.exit(0);

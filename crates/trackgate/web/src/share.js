// The page a share link opens: one shipment's track and position, read-only, refreshed every
// 10 s while the link holds. The link's token is in this page's address after `#`, which the
// browser never sends to a server; the page sends it in a header, to `/v1/shared` only. When the
// link expires or is revoked, everything shown is taken away.

import { DeviceMap } from './map.js';

const POLL_MS = 10000;
const $ = (id) => document.getElementById(id);

async function main() {
  const token = window.location.hash.slice(1);
  const config = await (await fetch('/ui/config.json', { cache: 'no-store' })).json();
  const map = new DeviceMap($('map'), config.tiles, () => {}, { fitButton: false });
  let fitted = false;
  let timer = null;
  const gone = (text) => {
    clearInterval(timer);
    map.remove('shared');
    map.clearTrack();
    $('share-label').textContent = '';
    $('share').dataset.state = 'gone';
    $('share-status').textContent = text;
    $('live').dataset.state = 'off';
    $('live').textContent = 'ended';
  };
  const load = async () => {
    let res;
    try {
      res = await fetch('/v1/shared', { headers: { 'x-tg-share': token }, cache: 'no-store' });
    } catch {
      $('live').dataset.state = 'reconnecting';
      $('live').textContent = 'reconnecting…';
      return;
    }
    if (res.status === 404) return gone('This link has expired or was revoked.');
    if (!res.ok) {
      $('live').dataset.state = 'reconnecting';
      $('live').textContent = 'reconnecting…';
      return;
    }
    const s = await res.json();
    $('share-label').textContent = s.label;
    document.title = `${s.label} · trackgate`;
    const points = s.track.map(([lon, lat]) => ({ geometry: { coordinates: [lon, lat] } }));
    map.showTrack(points, !fitted && points.length > 0);
    if (points.length > 0) fitted = true;
    if (s.position) map.show({ id: 'shared', shipment_label: s.label, position: s.position }, ['selected']);
    const until = new Date(s.expires_ms).toLocaleString();
    $('share-status').textContent = s.position
      ? `Last position ${new Date(s.position.ts).toLocaleString()}. This link works until ${until}.`
      : `No position yet. This link works until ${until}.`;
    const root = $('share');
    root.dataset.state = 'live';
    root.dataset.points = String(points.length);
    root.dataset.position = s.position ? `${s.position.lat},${s.position.lon}` : '';
    $('live').dataset.state = 'live';
    $('live').textContent = 'live';
  };
  if (!token) return gone('This address is not a share link.');
  await load();
  if ($('share').dataset.state !== 'gone') timer = setInterval(load, POLL_MS);
}

main().catch((e) => {
  $('share-status').textContent = `The page failed to start: ${e.message}`;
});

// The live stream (`GET /v1/stream`, Server-Sent Events) read with fetch(), because
// EventSource cannot send an Authorization header and the token must stay out of the URL.
// After a drop it reconnects with backoff; once the new stream is subscribed (its `ready`
// event), `onResync` reloads what may have been missed while it was down.

import { Unauthorized } from './api.js';

/** Split an SSE byte stream into events: `{ event, data }`. */
export async function* events(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) continue;
        const i = line.indexOf(':');
        const field = i < 0 ? line : line.slice(0, i);
        const v = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
        if (field === 'event') event = v;
        else if (field === 'data') data.push(v);
      }
      if (data.length) yield { event, data: data.join('\n') };
    }
  }
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
});

/**
 * Follow the stream until `signal` aborts. `onPosition(feature)` for each position,
 * `onState('live' | 'reconnecting')`, `onResync()` after every reconnect.
 */
export async function follow(api, { onPosition, onState, onResync, signal }) {
  let delay = 1000;
  let missed = false;
  while (!signal.aborted) {
    try {
      const res = await api.fetch('/v1/stream', { headers: { accept: 'text/event-stream' }, signal });
      if (!res.ok) throw new Error(`stream: ${res.status}`);
      for await (const ev of events(res.body)) {
        if (ev.event === 'ready') {
          delay = 1000;
          onState('live');
          if (missed) await onResync();
          missed = false;
        } else if (ev.event === 'position') {
          onPosition(JSON.parse(ev.data));
        }
      }
    } catch (e) {
      if (e instanceof Unauthorized || signal.aborted) return;
    }
    if (signal.aborted) return;
    missed = true;
    onState('reconnecting');
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 30000);
  }
}

// The side list of devices, virtualised: only the rows in view (and a few either side) are in
// the page, each at its place in a list as tall as all of them, so ten thousand devices scroll,
// filter and update as fast as ten. Every row has the same height.

const ROW_PX = 52;
const OVERSCAN = 6;

export class DeviceList {
  /** `ul` scrolls; `render(id)` makes a row's `<li>` (with `data-device`). */
  constructor(ul, render) {
    this.ul = ul;
    this.render = render;
    this.ids = [];
    this.spacer = document.createElement('li');
    this.spacer.className = 'spacer';
    this.spacer.setAttribute('aria-hidden', 'true');
    this.frame = null;
    ul.addEventListener('scroll', () => this.refresh(), { passive: true });
    new ResizeObserver(() => this.refresh()).observe(ul);
  }

  /** Show these ids, in this order. */
  set(ids) {
    this.ids = ids;
    this.index = new Map(ids.map((id, i) => [id, i]));
    this.spacer.style.height = `${ids.length * ROW_PX}px`;
    this.draw();
  }

  /** Redraw the rows in view, once per animation frame at most. */
  refresh() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      this.draw();
    });
  }

  draw() {
    // A list that just got shorter may still be scrolled past its new end.
    const end = Math.max(0, this.ids.length * ROW_PX - this.ul.clientHeight);
    if (this.ul.scrollTop > end) this.ul.scrollTop = end;
    const top = Math.min(this.ul.scrollTop, end);
    const first = Math.max(0, Math.floor(top / ROW_PX) - OVERSCAN);
    const last = Math.min(this.ids.length, Math.ceil((top + this.ul.clientHeight) / ROW_PX) + OVERSCAN);
    const rows = [this.spacer];
    for (let i = first; i < last; i++) {
      const li = this.render(this.ids[i]);
      li.style.top = `${i * ROW_PX}px`;
      rows.push(li);
    }
    // A row that had the keyboard's focus keeps it through the redraw.
    const focused = this.ul.contains(document.activeElement) ? document.activeElement.dataset.device : null;
    this.ul.replaceChildren(...rows);
    if (focused) this.ul.querySelector(`button[data-device="${CSS.escape(focused)}"]`)?.focus({ preventScroll: true });
  }

  /** Scroll so that `id`'s row is in view, if it is listed. */
  reveal(id) {
    const i = this.index?.get(id);
    if (i === undefined) return;
    const y = i * ROW_PX;
    if (y < this.ul.scrollTop || y + ROW_PX > this.ul.scrollTop + this.ul.clientHeight) {
      this.ul.scrollTop = Math.max(0, y - this.ul.clientHeight / 2);
    }
    this.draw();
  }
}

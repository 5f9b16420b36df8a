// The map: one marker per device with a position, clustered when many are close; the selected
// device's track as a polyline; the organizations' geofences under them. Tiles are optional: without them (none configured, or none
// reachable) a light world basemap (Natural Earth's countries, embedded) is drawn under the
// markers and tracks instead.

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export class DeviceMap {
  /** `fitButton: false` leaves out the "All devices" control (a page that shows one). */
  constructor(container, tiles, onSelect, { fitButton = true } = {}) {
    this.onSelect = onSelect;
    // The cluster layer needs the map's maximum zoom, with or without tiles.
    const maxZoom = tiles ? tiles.max_zoom : 19;
    this.map = L.map(container, { worldCopyJump: true, maxZoom }).setView([30, 0], 2);
    this.container = container;
    if (tiles) this.addTiles(container, tiles);
    else this.drawBasemap();
    this.markers = new Map();
    this.cluster = L.markerClusterGroup({ showCoverageOnHover: false, maxClusterRadius: 40, chunkedLoading: true });
    this.map.addLayer(this.cluster);
    this.trackLayer = L.layerGroup().addTo(this.map);
    const FitAll = L.Control.extend({
      onAdd: () => {
        const b = el('button', 'tg-fit-all leaflet-bar', 'All devices');
        b.type = 'button';
        b.title = 'Zoom to show every device';
        L.DomEvent.disableClickPropagation(b);
        b.addEventListener('click', () => this.fit());
        return b;
      },
    });
    if (fitButton) new FitAll({ position: 'topright' }).addTo(this.map);
  }

  /**
   * The world's countries under everything else, once: for a map without tiles. Drawn on a
   * canvas, not interactive; the page says whether it is drawn in `data-basemap`.
   */
  async drawBasemap() {
    if (this.basemap) return;
    this.basemap = true;
    try {
      const res = await fetch('/assets/vendor/world-atlas/countries-50m.json');
      if (!res.ok) throw new Error(`${res.status}`);
      const topo = await res.json();
      const countries = topojson.feature(topo, topo.objects.countries);
      this.map.createPane('basemap').style.zIndex = 250;
      L.geoJSON(countries, {
        pane: 'basemap',
        renderer: L.canvas({ pane: 'basemap' }),
        interactive: false,
        style: { color: '#b9c0c8', weight: 0.8, fillColor: '#f4f2ec', fillOpacity: 1 },
      }).addTo(this.map);
      this.container.classList.add('with-basemap');
      this.container.dataset.basemap = String(countries.features.length);
    } catch (e) {
      this.container.dataset.basemap = 'failed';
    }
  }

  /**
   * The organizations' geofences, under the tracks and markers: polygons as given, circles by
   * centre and radius, each named in a tooltip. The page says how many in `data-geofences`.
   */
  showGeofences(list) {
    if (!this.fences) {
      this.map.createPane('geofences').style.zIndex = 350;
      this.fences = L.layerGroup().addTo(this.map);
    }
    this.fences.clearLayers();
    const style = { pane: 'geofences', color: '#2a7d4f', weight: 1.5, fillOpacity: 0.08 };
    for (const g of list) {
      const layer = g.circle
        ? L.circle([g.circle.center[1], g.circle.center[0]], { ...style, radius: g.circle.radius_m })
        : L.geoJSON(g.geometry, { ...style, style: () => style });
      layer.bindTooltip(el('span', 'tg-geofence', g.name), { sticky: true });
      layer.addTo(this.fences);
    }
    this.container.dataset.geofences = String(list.length);
  }

  addTiles(container, tiles) {
    const layer = L.tileLayer(tiles.url, { attribution: tiles.attribution, maxZoom: tiles.max_zoom });
    const Note = L.Control.extend({
      onAdd: () => el('div', 'tiles-note', 'Map tiles unavailable: positions on a world outline map'),
    });
    const note = new Note({ position: 'bottomleft' });
    let shown = false;
    layer.on('tileerror', () => {
      if (!shown) { note.addTo(this.map); shown = true; container.dataset.tiles = 'unavailable'; }
      this.drawBasemap();
    });
    layer.on('tileload', () => {
      if (shown) { note.remove(); shown = false; }
      container.dataset.tiles = 'loaded';
    });
    layer.addTo(this.map);
  }

  icon(device, flags) {
    // A string, not an element: Leaflet may create a marker's icon more than once (clusters).
    return L.divIcon({
      className: ['tg-marker', ...flags].join(' '),
      html: `<span class="tg-dot" data-device="${escapeHtml(device.id)}"></span>`,
      iconSize: [18, 18],
      iconAnchor: [9, 9],
    });
  }

  /** Add or move a device's marker; `flags` are CSS classes (stale, low, selected). */
  show(device, flags) {
    const m = this.place(device, flags);
    if (m) this.cluster.addLayer(m);
  }

  /** `show` for many `[device, flags]` at once: new markers join the clusters in one go. */
  showAll(entries) {
    const added = [];
    for (const [device, flags] of entries) {
      const m = this.place(device, flags);
      if (m) added.push(m);
    }
    if (added.length) this.cluster.addLayers(added);
  }

  /** Move a device's marker and restyle it if its flags changed; a new marker is returned. */
  place(device, flags) {
    const p = device.position;
    if (!p) return null;
    const style = flags.join(' ');
    let m = this.markers.get(device.id);
    if (!m) {
      const label = device.shipment_label || device.id;
      m = L.marker([p.lat, p.lon], { icon: this.icon(device, flags), title: label, keyboard: true });
      m.tgStyle = style;
      m.on('click', () => this.onSelect(device.id));
      this.markers.set(device.id, m);
      return m;
    }
    const at = m.getLatLng();
    if (at.lat !== p.lat || at.lng !== p.lon) m.setLatLng([p.lat, p.lon]);
    if (m.tgStyle !== style) {
      m.tgStyle = style;
      m.setIcon(this.icon(device, flags));
    }
    return null;
  }

  remove(id) {
    const m = this.markers.get(id);
    if (m) { this.cluster.removeLayer(m); this.markers.delete(id); }
  }

  /** Fit the view to every marker (once, after the first load). */
  fit() {
    const points = [...this.markers.values()].map((m) => m.getLatLng());
    if (points.length === 1) this.map.setView(points[0], 10);
    else if (points.length > 1) this.map.fitBounds(L.latLngBounds(points), { padding: [30, 30], maxZoom: 12 });
  }

  focus(id) {
    const m = this.markers.get(id);
    if (m) this.cluster.zoomToShowLayer(m, () => {});
  }

  /** Draw a track (GeoJSON Point features, oldest first) and, if `fit`, fit it into view. */
  showTrack(points, fit = true) {
    this.trackLayer.clearLayers();
    this.head = null;
    if (points.length === 0) return;
    const latlngs = points.map((f) => [f.geometry.coordinates[1], f.geometry.coordinates[0]]);
    const line = L.polyline(latlngs, { className: 'tg-track', weight: 3, opacity: 0.85 });
    this.trackLayer.addLayer(line);
    this.trackLayer.addLayer(L.circleMarker(latlngs[0], { radius: 5, className: 'tg-track-start' }));
    this.trackLayer.addLayer(L.circleMarker(latlngs[latlngs.length - 1], { radius: 5, className: 'tg-track-end' }));
    if (!fit) return;
    if (latlngs.length > 1) this.map.fitBounds(line.getBounds(), { padding: [30, 30], maxZoom: 15, animate: false });
    else this.map.setView(latlngs[0], 13, { animate: false });
  }

  clearTrack() {
    this.trackLayer.clearLayers();
    this.head = null;
  }

  /** The playback's marker, at `{lat, lon}`. */
  playhead(pos) {
    if (!this.head) {
      this.head = L.circleMarker([pos.lat, pos.lon], { radius: 7, className: 'tg-playhead' });
      this.trackLayer.addLayer(this.head);
    } else {
      this.head.setLatLng([pos.lat, pos.lon]);
    }
  }

  /** How many metres one screen pixel spans at the view's centre and zoom. */
  metresPerPixel() {
    const lat = this.map.getCenter().lat;
    return (40075016.686 * Math.cos((lat * Math.PI) / 180)) / 2 ** (this.map.getZoom() + 8);
  }

  /** The map's width in pixels. */
  width() {
    return this.map.getSize().x;
  }

  /** Call `f` after the user (or a fit) changes the zoom. */
  onZoom(f) {
    this.map.on('zoomend', f);
  }

  zoom() {
    return this.map.getZoom();
  }
}

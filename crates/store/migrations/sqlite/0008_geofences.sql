-- An organization's named areas (`crate::geofence`): the area as checked JSON, {"geometry":
-- GeoJSON Polygon or MultiPolygon} or {"circle": {"center", "radius_m"}}.
CREATE TABLE geofences (
    org_id     TEXT NOT NULL REFERENCES organizations (id),
    id         TEXT NOT NULL,
    name       TEXT NOT NULL,
    area       TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (org_id, id)
) WITHOUT ROWID;

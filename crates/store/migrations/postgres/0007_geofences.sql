-- An organization's named areas (`crate::geofence`): the area as checked JSON, {"geometry":
-- GeoJSON Polygon or MultiPolygon} or {"circle": {"center", "radius_m"}}.
CREATE TABLE geofences (
    org_id     TEXT COLLATE "C" NOT NULL REFERENCES organizations (id),
    id         TEXT COLLATE "C" NOT NULL,
    name       TEXT NOT NULL,
    area       TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (org_id, id)
);

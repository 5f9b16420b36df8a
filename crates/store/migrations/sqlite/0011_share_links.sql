-- Links that show one shipment's position to someone without an account, until they expire or
-- are revoked. Only a SHA-256 of each link's random token is kept: the token itself is shown
-- once, to whoever made the link.
CREATE TABLE share_links (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id     TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    token_hash BLOB NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    -- The part of the track the link shows: `from_ms <= ts < to_ms`; NULL, unbounded.
    from_ms    INTEGER,
    to_ms      INTEGER,
    revoked_ms INTEGER
);

CREATE INDEX share_links_device ON share_links (device_id, id);

-- Links that show one shipment's position to someone without an account, until they expire or
-- are revoked. Only a SHA-256 of each link's random token is kept: the token itself is shown
-- once, to whoever made the link.
CREATE TABLE share_links (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id     TEXT COLLATE "C" NOT NULL,
    device_id  TEXT COLLATE "C" NOT NULL,
    token_hash BYTEA NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    -- The part of the track the link shows: `from_ms <= ts < to_ms`; NULL, unbounded.
    from_ms    BIGINT,
    to_ms      BIGINT,
    revoked_ms BIGINT
);

CREATE INDEX share_links_device ON share_links (device_id, id);

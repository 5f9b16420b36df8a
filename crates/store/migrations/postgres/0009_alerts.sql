-- An organization's alert rules: which of its events (some kinds or all, optionally of one order
-- group's devices) go where: a webhook (an HTTPS URL, signed with the rule's secret, sealed under
-- the master key like device keys) or an e-mail address.
CREATE TABLE alert_rules (
    org_id         TEXT COLLATE "C" NOT NULL REFERENCES organizations (id),
    id             TEXT COLLATE "C" NOT NULL,
    -- Comma-separated event kinds, or '*' for every kind.
    kinds          TEXT NOT NULL,
    order_group_id TEXT COLLATE "C",
    channel        TEXT NOT NULL CHECK (channel IN ('webhook', 'email')),
    target         TEXT NOT NULL,
    sealed_secret  BYTEA,
    created_ms     BIGINT NOT NULL,
    PRIMARY KEY (org_id, id)
);

-- The durable outbox: one delivery per rule and event, written in the transaction that stores
-- the event, and worked off in order per rule and device.
CREATE TABLE alert_outbox (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id     TEXT COLLATE "C" NOT NULL,
    rule_id    TEXT COLLATE "C" NOT NULL,
    event_id   BIGINT NOT NULL,
    device_id  TEXT COLLATE "C" NOT NULL,
    -- 'pending', 'delivered', 'failed' (given up), 'suppressed' (over an e-mail rate)
    state      TEXT NOT NULL DEFAULT 'pending',
    attempts   BIGINT NOT NULL DEFAULT 0,
    next_ms    BIGINT NOT NULL,
    last_error TEXT,
    created_ms BIGINT NOT NULL,
    done_ms    BIGINT,
    UNIQUE (org_id, rule_id, event_id)
);

CREATE INDEX alert_outbox_queue ON alert_outbox (org_id, rule_id, device_id, state, id);
CREATE INDEX alert_outbox_due ON alert_outbox (state, next_ms);

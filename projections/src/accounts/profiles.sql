-- accounts (migration 5): profiles and presence.

ALTER TABLE users
    ADD COLUMN nick text NOT NULL DEFAULT '',
    ADD COLUMN description text NOT NULL DEFAULT '',
    ADD COLUMN sex text NOT NULL DEFAULT 'unspecified',
    ADD COLUMN avatar text;
-- Search by name prefix.
CREATE INDEX users_name_prefix ON users (name text_pattern_ops);

-- The gateways each user has a connection on. A user is online while one
-- of these gateways is alive (a gateway that died never said goodbye, so
-- liveness is checked when reading, against the gateways' heartbeats).
CREATE TABLE presence (
    user_id bigint NOT NULL,
    gateway_id text NOT NULL,
    since timestamptz NOT NULL,
    PRIMARY KEY (user_id, gateway_id)
);

-- When each user last connected or disconnected.
CREATE TABLE last_seen (
    user_id bigint PRIMARY KEY,
    at timestamptz NOT NULL
);

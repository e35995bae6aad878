-- accounts
CREATE TABLE users (
    user_id bigint PRIMARY KEY,
    name text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    created_at timestamptz NOT NULL
);

-- accounts
CREATE TABLE sessions (
    session_id uuid PRIMARY KEY,
    user_id bigint NOT NULL,
    token_sha256 text NOT NULL UNIQUE,
    gateway_id text NOT NULL,
    device text NOT NULL,
    -- Offset of the session.started event in its partition: a session only
    -- ever kicks sessions that started before it.
    start_offset bigint NOT NULL,
    started_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    ended_at timestamptz,
    end_reason text
);
CREATE INDEX sessions_live_by_user ON sessions (user_id) WHERE ended_at IS NULL;


-- The read model, version 1. Every table is written by exactly one
-- projection (named in the comment) and is rebuilt from the log by replay.

-- Framework: the next offset each projection will apply, per topic partition.
CREATE TABLE projection_offsets (
    projection text NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    next_offset bigint NOT NULL,
    -- When the last applied record was appended (for lag in seconds).
    last_appended_at timestamptz,
    PRIMARY KEY (projection, topic, partition)
);

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

-- threads
CREATE TABLE threads (
    thread_id bigint PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('private', 'group')),
    created_at timestamptz NOT NULL
);

-- threads: one private thread per unordered pair, stored ordered.
CREATE TABLE private_threads (
    thread_id bigint PRIMARY KEY REFERENCES threads,
    user_low bigint NOT NULL,
    user_high bigint NOT NULL,
    CHECK (user_low < user_high),
    UNIQUE (user_low, user_high)
);

-- threads
CREATE TABLE thread_members (
    thread_id bigint NOT NULL REFERENCES threads,
    user_id bigint NOT NULL,
    role text NOT NULL CHECK (role IN ('member', 'admin', 'owner')),
    joined_at timestamptz NOT NULL,
    muted_until timestamptz,
    PRIMARY KEY (thread_id, user_id)
);
-- Thread list sync: a user's threads by thread_id.
CREATE INDEX thread_members_by_user ON thread_members (user_id, thread_id);

-- messages
CREATE TABLE messages (
    message_id bigint PRIMARY KEY,
    thread_id bigint NOT NULL,
    -- Gapless per thread, in log order: lets clients detect missed messages.
    seq bigint NOT NULL,
    sender_id bigint NOT NULL,
    unique_id text NOT NULL,
    kind text NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL,
    UNIQUE (thread_id, seq),
    -- A retried send (same client unique_id) is one message. Scoped to the
    -- thread, so the rule is decided inside one log partition and a replay
    -- reaches the same verdict whatever its batches.
    UNIQUE (thread_id, sender_id, unique_id)
);
CREATE INDEX messages_by_thread ON messages (thread_id, message_id);

-- messages: the last seq given out per thread.
CREATE TABLE thread_seqs (
    thread_id bigint PRIMARY KEY,
    last_seq bigint NOT NULL
);

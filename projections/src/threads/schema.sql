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


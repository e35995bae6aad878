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

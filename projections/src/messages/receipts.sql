-- messages (migration 4): read markers and recalls.

-- Set when the sender recalled the message; its body is then empty.
ALTER TABLE messages ADD COLUMN recalled_at timestamptz;

-- How far each member has read each thread (posting reads up to your own
-- message). Markers only move forward.
CREATE TABLE thread_reads (
    thread_id bigint NOT NULL,
    user_id bigint NOT NULL,
    read_seq bigint NOT NULL,
    read_message_id bigint NOT NULL,
    read_at timestamptz NOT NULL,
    PRIMARY KEY (thread_id, user_id)
);

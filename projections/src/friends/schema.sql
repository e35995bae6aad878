-- friends (migration 2): requests and friendships.

-- The latest request of each direction of a pair.
CREATE TABLE friend_requests (
    from_id bigint NOT NULL,
    to_id bigint NOT NULL,
    greeting text NOT NULL,
    -- What from_id will call to_id.
    alias text NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'accepted', 'rejected')),
    requested_at timestamptz NOT NULL,
    decided_at timestamptz,
    -- The acceptance that decided it, in the social topic: the acceptance
    -- process acts for this one only, so accepting twice is one friendship.
    accept_partition integer,
    accept_offset bigint,
    PRIMARY KEY (from_id, to_id)
);
CREATE INDEX friend_requests_incoming ON friend_requests (to_id, from_id) WHERE status = 'pending';
CREATE INDEX friend_requests_outgoing ON friend_requests (from_id, to_id) WHERE status = 'pending';

-- One row per direction of a friendship.
CREATE TABLE friends (
    user_id bigint NOT NULL,
    friend_id bigint NOT NULL,
    -- What user_id calls friend_id.
    alias text NOT NULL,
    since timestamptz NOT NULL,
    PRIMARY KEY (user_id, friend_id)
);

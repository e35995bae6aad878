-- threads (migration 3): group threads.

CREATE TABLE group_threads (
    thread_id bigint PRIMARY KEY REFERENCES threads,
    name text NOT NULL,
    members integer NOT NULL
);

-- Every group change the projection applied (a change the permission table
-- refused at its point in the log is not here): the history of a group, and
-- what its system lines are written from.
CREATE TABLE group_changes (
    -- Offset of the change's event in the (single-partition) threads topic.
    change_offset bigint PRIMARY KEY,
    thread_id bigint NOT NULL,
    actor bigint NOT NULL,
    kind text NOT NULL,
    -- The users it concerns (added, removed, muted, promoted, new owner).
    subjects bigint[] NOT NULL,
    -- The new name, the new role, or the end of a mute.
    detail text,
    at timestamptz NOT NULL
);
CREATE INDEX group_changes_by_thread ON group_changes (thread_id, change_offset);

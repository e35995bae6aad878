-- files (migration 9): file transfer tasks (online relays, offline files).
CREATE TABLE transfers (
    task_id uuid PRIMARY KEY,
    from_id bigint NOT NULL,
    to_id bigint NOT NULL,
    name text NOT NULL,
    size bigint NOT NULL,
    mode text NOT NULL CHECK (mode IN ('online', 'offline')),
    relay text,
    relay_url text,
    upload_id uuid,
    state text NOT NULL,
    reason text NOT NULL DEFAULT '',
    offered_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
-- A receiver's pending offline files; the stale sweep.
CREATE INDEX transfers_pending_offline ON transfers (to_id, offered_at)
    WHERE mode = 'offline' AND state NOT IN ('done', 'refused', 'cancelled', 'error');
CREATE INDEX transfers_open ON transfers (updated_at)
    WHERE state NOT IN ('done', 'refused', 'cancelled', 'error');
CREATE INDEX transfers_by_upload ON transfers (upload_id) WHERE upload_id IS NOT NULL;

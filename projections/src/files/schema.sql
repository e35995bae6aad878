-- files (migration 7): uploads and their acknowledged chunks.

CREATE TABLE uploads (
    upload_id uuid PRIMARY KEY,
    owner bigint NOT NULL,
    name text NOT NULL,
    size bigint NOT NULL,
    content_type text NOT NULL,
    sha256 text NOT NULL,
    kind text NOT NULL,
    object_key text NOT NULL,
    chunk_size bigint NOT NULL,
    chunks integer NOT NULL,
    multipart_id text,
    state text NOT NULL CHECK (state IN ('uploading', 'completed', 'failed')),
    failure text,
    failure_detail text,
    acked_chunks integer NOT NULL DEFAULT 0,
    acked_bytes bigint NOT NULL DEFAULT 0,
    -- The offset (in the upload's partition) of the ack that made the set
    -- of chunks whole: the completion process acts for that one only.
    completing_offset bigint,
    -- The digest of all chunks as stored, if a gateway hashed them in order;
    -- never trusted once any chunk was acknowledged twice (the store may
    -- hold the second copy).
    received_sha256 text,
    digest_blocked boolean NOT NULL DEFAULT false,
    declared_at timestamptz NOT NULL,
    -- The last declare or ack: what expiry measures idleness from.
    active_at timestamptz NOT NULL,
    ended_at timestamptz
);
CREATE INDEX uploads_in_flight ON uploads (owner) WHERE state = 'uploading';
CREATE INDEX uploads_idle ON uploads (active_at) WHERE state = 'uploading';

-- The first ack of each chunk of an upload still in flight.
CREATE TABLE upload_chunks (
    upload_id uuid NOT NULL,
    index integer NOT NULL,
    size bigint NOT NULL,
    part text NOT NULL,
    PRIMARY KEY (upload_id, index)
);

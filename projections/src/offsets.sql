-- The read model's framework table. Every other table is written by exactly
-- one projection (its feature folder holds its SQL) and is rebuilt from the
-- log by replay.

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


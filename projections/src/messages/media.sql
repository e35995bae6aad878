-- messages (migration 8): media messages. `media` is the message's
-- attachment as the event carries it (upload, name, size, type, digest,
-- preview, state), NULL for text; it goes with a recall.
ALTER TABLE messages ADD COLUMN media jsonb;
CREATE INDEX messages_by_upload ON messages ((media->>'upload_id')) WHERE media IS NOT NULL;

-- threads (migration 6): thread list sync pages by when you joined.
-- A group you are added to long after it was created must still come after
-- your cursor, so the cursor is your join position: the threads-topic
-- offset + 1 of the event that made you a member. For a thread created
-- with you, that is its thread id, so cursors given before are unchanged.
ALTER TABLE thread_members ADD COLUMN joined_pos bigint;
-- Existing rows get what a replay gives them: the last add that inserted
-- them (a removal deletes the row, so a later add is a fresh insert), else
-- the thread's creation.
UPDATE thread_members m SET joined_pos = coalesce(
    (SELECT max(c.change_offset) + 1 FROM group_changes c
     WHERE c.thread_id = m.thread_id AND c.kind = 'added' AND m.user_id = ANY (c.subjects)),
    m.thread_id);
ALTER TABLE thread_members ALTER COLUMN joined_pos SET NOT NULL;
CREATE INDEX thread_members_by_join ON thread_members (user_id, joined_pos);

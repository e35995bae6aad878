// The wire types of docs/PROTOCOL.md, as JSDoc for the type checker. Nothing
// here runs; import the typedefs with `@typedef {import('./types.js').X} X`.

/**
 * @typedef {{user_id: number, name: string}} UserRef
 *
 * @typedef {{upload_id: string, name: string, size: number, content_type: string,
 *   sha256: string, preview?: string | null, state: 'uploading' | 'uploaded' | 'failed'}} Media
 *
 * @typedef {{message_id: number, thread_id: number, seq?: number, sender_id: number,
 *   unique_id: string, kind: 'text' | 'system' | 'image' | 'file' | 'video', body: string,
 *   created_at: string, recalled?: boolean, media?: Media}} Message
 *
 * @typedef {{thread_id: number, kind: 'private' | 'group', created_at: string,
 *   peer: UserRef | null, name?: string, members?: number, unread: number,
 *   last_message?: Message}} Thread
 *
 * @typedef {{user_id: number, name: string, nick: string, description: string,
 *   sex: 'unspecified' | 'female' | 'male' | 'other', avatar: string | null,
 *   online: boolean, last_seen: string | null}} Profile
 *
 * @typedef {{from: UserRef, to: UserRef, greeting: string, requested_at: string}} FriendRequest
 *
 * @typedef {{user: UserRef, alias: string, since: string, thread_id?: number}} Friend
 *
 * @typedef {{user: UserRef, role: 'owner' | 'admin' | 'member', joined_at: string,
 *   muted_until?: string}} Member
 *
 * @typedef {{task_id: string, from: number, to: number, name: string, size: number,
 *   mode: 'online' | 'offline', state: string, relay_url?: string, upload_id?: string,
 *   offered_at: string}} Transfer
 *
 * @typedef {{upload_id: string, name: string, size: number, content_type: string,
 *   sha256: string, kind: 'image' | 'file' | 'video', chunk_size: number, chunks: number,
 *   state: 'uploading' | 'completed' | 'failed', acked: number[], acked_bytes: number,
 *   failure?: string}} UploadView
 */

/**
 * A page of a listing; ask again after `next_cursor` while `load_more`.
 * @template T
 * @typedef {{items: T[], load_more: boolean, next_cursor: number}} Page
 */

/**
 * The pushes of docs/PROTOCOL.md, by name.
 * @typedef {{
 *   message: Message,
 *   kicked: {reason: string},
 *   thread: {thread_id: number, kind: 'private' | 'group', name?: string},
 *   read: {thread_id: number, user_id: number, up_to: number},
 *   recalled: {thread_id: number, message_id: number, by: number},
 *   presence: {user_id: number, online: boolean, last_seen: string},
 *   profile_updated: {user_id: number, nick: string, description: string, sex: string, avatar: string | null},
 *   friend_request: {from: number, greeting: string},
 *   friend_accepted: {from: number, to: number},
 *   media_settled: {thread_id: number, message_id: number, upload_id: string, state: 'uploaded' | 'failed'},
 *   file_offer: Transfer,
 *   transfer: {task_id: string, state: string, reason?: string},
 * }} Pushes
 */

export {};

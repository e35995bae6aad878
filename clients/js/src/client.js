// The SDK's entry point: the connection (./connection.js) plus one typed
// method per operation of docs/PROTOCOL.md, and the file helpers.

import { Connection } from './connection.js';
import { Download } from './downloads.js';
import { Relay } from './transfers.js';
import { Upload } from './uploads.js';

/** @typedef {import('./types.js').Profile} Profile */
/** @typedef {import('./types.js').FriendRequest} FriendRequest */
/** @typedef {import('./types.js').Friend} Friend */
/** @typedef {import('./types.js').Member} Member */
/** @typedef {import('./types.js').Transfer} Transfer */
/** @typedef {import('./types.js').UserRef} UserRef */
/**
 * @template T
 * @typedef {import('./types.js').Page<T>} Page
 */
/** @typedef {{after?: number, limit?: number}} PageRequest */

export class ImlogClient extends Connection {
  // ---- profiles and presence --------------------------------------------

  /** @param {number} userId @returns {Promise<Profile>} */
  profile(userId) {
    return this.request('profile', { user_id: userId });
  }

  /**
   * @param {{nick?: string, description?: string, sex?: Profile['sex'], avatar?: string}} changes
   *   `avatar`: a completed image upload of yours, `""` to remove
   * @returns {Promise<Profile>}
   */
  updateProfile(changes) {
    return this.request('update_profile', changes);
  }

  /** By exact id (digits) or name prefix. @param {string} query @param {PageRequest} [page]
   * @returns {Promise<Page<Profile>>} */
  searchUsers(query, page = {}) {
    return this.request('search_users', { query, ...page });
  }

  // ---- friends ------------------------------------------------------------

  /**
   * @param {number} userId
   * @param {{greeting?: string, alias?: string}} [options]
   * @returns {Promise<{status: 'requested' | 'accepted', thread_id?: number}>}
   */
  friendApply(userId, options = {}) {
    return this.request('friend_apply', { user_id: userId, ...options });
  }

  /** @param {number} userId @param {{alias?: string}} [options]
   * @returns {Promise<{user_id: number, thread_id?: number}>} */
  friendAccept(userId, options = {}) {
    return this.request('friend_accept', { user_id: userId, ...options });
  }

  /** @param {number} userId @returns {Promise<{}>} */
  friendReject(userId) {
    return this.request('friend_reject', { user_id: userId });
  }

  /** @param {'incoming' | 'outgoing'} direction @param {PageRequest} [page]
   * @returns {Promise<Page<FriendRequest>>} */
  friendRequests(direction, page = {}) {
    return this.request('friend_requests', { direction, ...page });
  }

  /** @param {PageRequest} [page] @returns {Promise<Page<Friend>>} */
  friends(page = {}) {
    return this.request('friends', page);
  }

  /** @param {number} userId @returns {Promise<{thread_id: number, created: boolean}>} */
  openPrivateThread(userId) {
    return this.request('open_private_thread', { user_id: userId });
  }

  // ---- groups ---------------------------------------------------------------

  /** @param {string} name @param {number[]} [members] @returns {Promise<{thread_id: number}>} */
  createGroup(name, members = []) {
    return this.request('create_group', { name, members });
  }

  /** @param {number} threadId @param {PageRequest} [page] @returns {Promise<Page<Member>>} */
  members(threadId, page = {}) {
    return this.request('members', { thread_id: threadId, ...page });
  }

  /** @param {number} threadId @param {number[]} members */
  addMembers(threadId, members) {
    return this.request('add_members', { thread_id: threadId, members });
  }

  /** @param {number} threadId @param {number} userId */
  removeMember(threadId, userId) {
    return this.request('remove_member', { thread_id: threadId, user_id: userId });
  }

  /** @param {number} threadId */
  leaveGroup(threadId) {
    return this.request('leave_group', { thread_id: threadId });
  }

  /** @param {number} threadId @param {string} name */
  renameGroup(threadId, name) {
    return this.request('rename_group', { thread_id: threadId, name });
  }

  /** @param {number} threadId @param {number} userId @param {Date | string | null} until null unmutes */
  muteMember(threadId, userId, until) {
    const at = until instanceof Date ? until.toISOString() : until;
    return this.request('mute_member', { thread_id: threadId, user_id: userId, until: at });
  }

  /** @param {number} threadId @param {number} userId @param {'admin' | 'member'} role */
  setRole(threadId, userId, role) {
    return this.request('set_role', { thread_id: threadId, user_id: userId, role });
  }

  /** @param {number} threadId @param {number} userId */
  transferOwnership(threadId, userId) {
    return this.request('transfer_ownership', { thread_id: threadId, user_id: userId });
  }

  /** @param {number} threadId @param {PageRequest} [page]
   * @returns {Promise<Page<{user_id: number, up_to: number, at: string}>>} */
  readReceipts(threadId, page = {}) {
    return this.request('read_receipts', { thread_id: threadId, ...page });
  }

  // ---- files ----------------------------------------------------------------

  /**
   * Uploads a file in chunks (see `Upload`).
   * @param {Blob & {name?: string}} blob
   * @param {{kind?: 'image' | 'file' | 'video', name?: string, contentType?: string, window?: number}} [options]
   */
  upload(blob, options) {
    return Upload.start(this, blob, options);
  }

  /** Continues an upload after a reload: `blob` must be the same file.
   * @param {string} uploadId @param {Blob} blob @param {{window?: number}} [options] */
  resumeUpload(uploadId, blob, options) {
    return Upload.resume(this, uploadId, blob, options);
  }

  /** Uploads started here and not seen to finish. */
  unfinishedUploads() {
    return Upload.unfinished(this);
  }

  /** Gives up one of `unfinishedUploads()`. @param {string} uploadId */
  discardUpload(uploadId) {
    return Upload.discard(this, uploadId);
  }

  /** Downloads a completed upload (see `Download`). @param {string} uploadId */
  download(uploadId) {
    return Download.start(this, uploadId);
  }

  /**
   * Offers a friend a file: `online` (relayed while both are here; then
   * `Relay.send`) or `offline` (a completed upload they fetch later).
   * @param {number} userId
   * @param {{mode: 'online', name: string, size: number} | {mode: 'offline', upload_id: string}} offer
   * @returns {Promise<Transfer>}
   */
  offerFile(userId, offer) {
    return this.request('offer_file', { user_id: userId, ...offer });
  }

  /** @param {Transfer} transfer @param {Blob} blob */
  sendOnline(transfer, blob) {
    return Relay.send(this, transfer, blob);
  }

  /** @param {Transfer} transfer */
  receiveOnline(transfer) {
    return Relay.receive(this, transfer);
  }

  /** @param {string} taskId */
  refuseFile(taskId) {
    return this.request('refuse_file', { task_id: taskId });
  }

  /** @param {string} taskId */
  cancelFile(taskId) {
    return this.request('cancel_file', { task_id: taskId });
  }

  /** Offline offers to you not yet fetched, oldest first. @returns {Promise<Transfer[]>} */
  offlineFiles() {
    return this.request('offline_files', {});
  }

  /** After downloading an offline file. @param {string} taskId */
  ackOfflineFile(taskId) {
    return this.request('ack_offline_file', { task_id: taskId });
  }
}

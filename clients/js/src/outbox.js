// Outgoing messages until the server has them: each gets a fresh
// `unique_id`, is sent in batches per thread when online, and after a lost
// reply (a dropped connection, `unavailable`) is resent with the same
// `unique_id` and `retry: true`, so it is stored exactly once. Unsent items
// are kept in the store and go out after a page reload too.

import { ImlogError, backoffMs, randomHex } from './errors.js';
import { readJson } from './store.js';

/**
 * @typedef {object} OutgoingMessage
 * @property {string} unique_id
 * @property {number} thread_id
 * @property {string} body
 * @property {'text' | 'image' | 'file' | 'video'} kind
 * @property {string} [upload_id]
 * @property {string} [preview]
 * @property {'sending' | 'sent' | 'failed'} state
 * @property {number} [message_id] once `sent`
 * @property {{code: string, message: string}} [error] once `failed`
 * @property {boolean} retry whether a send of it may have reached the server
 * @property {string} queued_at
 */

/** Items per `send_messages` (the protocol's limit). */
const BATCH = 100;
/** JSON bytes of items per request, under the 64 KiB frame limit. */
const BATCH_BYTES = 56 * 1024;
const utf8 = new TextEncoder();

export class Outbox {
  /** @param {import('./connection.js').Connection} client */
  constructor(client) {
    this.client = client;
    /** Items not yet `sent` or `failed`, in the order queued. @type {Map<string, OutgoingMessage>} */
    this.items = new Map();
    /** Items in a request now. @type {Set<string>} */
    this._inFlight = new Set();
    this._attempt = 0;
    /** @type {any} */
    this._timer = null;
    this._flushing = false;
  }

  /** Loads the unsent items of the logged-in user. */
  load() {
    this.items.clear();
    /** @type {OutgoingMessage[]} */
    const saved = readJson(this.client.store, this.client._key('outbox'), []);
    for (const item of saved) {
      // Sent before the page went away, maybe: treat as a retry.
      this.items.set(item.unique_id, { ...item, state: 'sending', retry: true });
    }
  }

  /**
   * @param {number} threadId
   * @param {{body?: string, kind?: 'image' | 'file' | 'video', upload_id?: string, preview?: string}} content
   * @returns {OutgoingMessage}
   */
  add(threadId, content) {
    /** @type {OutgoingMessage} */
    const item = {
      unique_id: `js-${Date.now().toString(36)}-${randomHex(8)}`,
      thread_id: threadId,
      body: content.body ?? '',
      kind: content.kind ?? 'text',
      upload_id: content.upload_id,
      preview: content.preview,
      state: 'sending',
      retry: false,
      queued_at: new Date().toISOString(),
    };
    this.items.set(item.unique_id, item);
    this._save();
    this.client.emit('outgoing', item);
    queueMicrotask(() => this.flush());
    return item;
  }

  /** Items still waiting for the server, oldest first. */
  pending() {
    return [...this.items.values()];
  }

  /** Sends what is queued, batch by batch, while online. */
  async flush() {
    if (this._flushing || this.client.state !== 'online') return;
    this._flushing = true;
    try {
      for (;;) {
        const batch = this._nextBatch();
        if (!batch.length) break;
        const ok = await this._sendBatch(batch);
        if (!ok) {
          // Offline or ended: going online flushes again; online (the
          // server was unavailable): after a backoff.
          if (this.client.state === 'online') this._scheduleRetry();
          break;
        }
        this._attempt = 0;
      }
    } finally {
      this._flushing = false;
    }
  }

  /** The oldest queued items of one thread: at most a batch, and at most
   * [`BATCH_BYTES`] of JSON (a request frame may be 64 KiB; one item,
   * preview included, always fits). */
  _nextBatch() {
    /** @type {OutgoingMessage[]} */
    const batch = [];
    let bytes = 0;
    for (const item of this.items.values()) {
      if (this._inFlight.has(item.unique_id)) continue;
      if (batch.length && item.thread_id !== batch[0].thread_id) continue;
      const size = utf8.encode(JSON.stringify(wireItem(item))).length + 1;
      if (batch.length && bytes + size > BATCH_BYTES) break;
      batch.push(item);
      bytes += size;
      if (batch.length === BATCH) break;
    }
    return batch;
  }

  /** @param {OutgoingMessage[]} batch @returns {Promise<boolean>} false: retry later */
  async _sendBatch(batch) {
    const retry = batch.some((item) => item.retry);
    for (const item of batch) {
      this._inFlight.add(item.unique_id);
      // From now on the server may have it, whatever we hear back.
      item.retry = true;
    }
    this._save();
    /** @type {any} */
    let reply;
    try {
      reply = await this.client._send('send_messages', {
        thread_id: batch[0].thread_id,
        retry,
        items: batch.map(wireItem),
      });
    } catch (e) {
      const error = /** @type {ImlogError} */ (e);
      for (const item of batch) this._inFlight.delete(item.unique_id);
      if (error.retryable || error.code === 'ended') return false;
      // The whole request was refused (forbidden, bad_request…).
      for (const item of batch) this._fail(item, error);
      this._save();
      return true;
    }
    let again = false;
    for (const [i, result] of reply.items.entries()) {
      const item = batch[i];
      this._inFlight.delete(item.unique_id);
      if (result.message_id != null) {
        item.state = 'sent';
        item.message_id = result.message_id;
        this.items.delete(item.unique_id);
        // Sync will show it to this device too: not news.
        this.client._remember(`${item.thread_id}:${this.client.userId}:${item.unique_id}`);
        this.client.emit('outgoing', item);
      } else if (['unavailable', 'projection_lagging'].includes(result.error?.code)) {
        again = true;
      } else {
        this._fail(item, result.error ?? { code: 'internal', message: 'no id and no error' });
      }
    }
    this._save();
    return !again;
  }

  /** @param {OutgoingMessage} item @param {{code: string, message: string}} error */
  _fail(item, error) {
    item.state = 'failed';
    item.error = { code: error.code, message: error.message };
    this.items.delete(item.unique_id);
    this.client.emit('outgoing', item);
  }

  _scheduleRetry() {
    clearTimeout(this._timer);
    const delay = backoffMs(this._attempt++, 200, 10_000);
    this._timer = setTimeout(() => this.flush(), delay);
  }

  /** The connection dropped: replies of in-flight batches are lost. */
  disconnected() {
    this._inFlight.clear();
  }

  stop() {
    clearTimeout(this._timer);
    this._inFlight.clear();
  }

  _save() {
    if (!this.client.session) return;
    this.client.store.set(this.client._key('outbox'), JSON.stringify([...this.items.values()]));
  }
}

/** @param {OutgoingMessage} item */
function wireItem(item) {
  if (item.kind === 'text') return { unique_id: item.unique_id, body: item.body };
  return {
    unique_id: item.unique_id,
    kind: item.kind,
    upload_id: item.upload_id,
    body: item.body,
    ...(item.preview ? { preview: item.preview } : {}),
  };
}

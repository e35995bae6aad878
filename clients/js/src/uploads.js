// Resumable uploads (docs/PROTOCOL.md, Uploads): declare, then send the
// chunks the server has not acknowledged, a window of them at a time, each
// with its SHA-256; pause aborts what is in flight, resume asks the server
// what it has (so it works after a page reload too), cancel ends it.

import { Emitter } from './emitter.js';
import { ImlogError, backoffMs, sleep, deferred } from './errors.js';
import { sha256Hex } from './sha256.js';
import { readJson } from './store.js';

/** @typedef {import('./types.js').UploadView} UploadView */
/** @typedef {import('./connection.js').Connection} Connection */

/**
 * `hashing` the file, `uploading` chunks, `paused`, `completing` (all
 * chunks are in; the server assembles and verifies), then `completed`,
 * `failed` or `cancelled`.
 * @typedef {'hashing' | 'uploading' | 'paused' | 'completing' | 'completed' | 'failed' | 'cancelled'} UploadState
 */

/**
 * @typedef {{
 *   progress: {acked_bytes: number, size: number, acked_chunks: number, chunks: number},
 *   hashing: {hashed_bytes: number, size: number},
 *   state: {state: UploadState, error?: ImlogError},
 * }} UploadEvents
 */

/** What the store keeps of an unfinished upload, to resume after a reload.
 * @typedef {{upload_id: string, name: string, size: number, kind: string, last_modified?: number}} SavedUpload */

/** Attempts at one chunk before the upload fails. */
const CHUNK_ATTEMPTS = 6;

/**
 * @extends {Emitter<UploadEvents>}
 */
export class Upload extends Emitter {
  /**
   * Declares an upload of `blob` and starts sending it.
   * @param {Connection} client
   * @param {Blob & {name?: string, lastModified?: number}} blob
   * @param {{kind?: 'image' | 'file' | 'video', name?: string, contentType?: string, window?: number}} [options]
   * @returns {Upload} at once; follow its events or await `done`
   */
  static start(client, blob, options = {}) {
    const upload = new Upload(client, blob, options.window);
    upload._options = options;
    upload._run();
    return upload;
  }

  /**
   * Continues an upload declared earlier (after a reload, a crash), sending
   * only the chunks the server does not have. `blob` must be the same file.
   * @param {Connection} client
   * @param {string} uploadId
   * @param {Blob} blob
   * @param {{window?: number}} [options]
   */
  static resume(client, uploadId, blob, options = {}) {
    const upload = new Upload(client, blob, options.window);
    upload.uploadId = uploadId;
    upload._run();
    return upload;
  }

  /** Uploads this user started and did not see finish (kept in the store).
   * @param {Connection} client @returns {SavedUpload[]} */
  static unfinished(client) {
    return Object.values(readJson(client.store, client._key('uploads'), {}));
  }

  /**
   * Gives up an unfinished upload from an earlier page: the server deletes
   * what it stored, and it leaves `unfinished`.
   * @param {Connection} client @param {string} uploadId
   */
  static async discard(client, uploadId) {
    try {
      await client.http('DELETE', `/v1/uploads/${uploadId}`);
    } catch (e) {
      // Ended already (completed, failed, expired) or gone: forget it anyway.
      const code = /** @type {ImlogError} */ (e).code;
      if (code !== 'conflict' && code !== 'not_found') throw e;
    }
    forget(client, uploadId);
  }

  /**
   * @param {Connection} client
   * @param {Blob & {name?: string, lastModified?: number}} blob
   * @param {number} [window] chunks in flight at once (default 3)
   */
  constructor(client, blob, window = 3) {
    super();
    this.client = client;
    this.blob = blob;
    this.window = Math.max(1, window);
    /** @type {string | null} */
    this.uploadId = null;
    /** @type {UploadView | null} */
    this.view = null;
    /** @type {UploadState} */
    this.state = 'hashing';
    /** @type {Set<number>} */
    this._acked = new Set();
    /** @type {Set<AbortController>} */
    this._inFlight = new Set();
    /** @type {{kind?: 'image' | 'file' | 'video', name?: string, contentType?: string}} */
    this._options = {};
    /** Counts runs (start, each resume); a pause or cancel ends the current
     * one, and what is left of an older run stops quietly. */
    this._runs = 0;
    /** @type {ReturnType<typeof deferred<UploadView>>} */
    const outcome = deferred();
    /** Resolves with the completed upload; rejects if it fails or is cancelled.
     * @type {Promise<UploadView>} */
    this.done = outcome.promise;
    this._resolve = outcome.resolve;
    this._reject = outcome.reject;
  }

  /** Bytes the server has acknowledged. */
  get ackedBytes() {
    if (!this.view) return 0;
    const { chunk_size: chunk, size, chunks } = this.view;
    let bytes = 0;
    for (const i of this._acked) bytes += i === chunks - 1 ? size - chunk * (chunks - 1) : chunk;
    return bytes;
  }

  /** Stops sending; chunks in flight are abandoned (the server keeps the
   * acknowledged ones). */
  pause() {
    if (this.state !== 'uploading' && this.state !== 'hashing') return;
    this._runs++;
    this._setState('paused');
    this._abortAll();
  }

  /** Continues a paused upload from what the server has (or declares it,
   * if it was paused while hashing). */
  resume() {
    if (this.state !== 'paused') return;
    this._setState(this.uploadId ? 'uploading' : 'hashing');
    this._run();
  }

  /** Ends the upload; the server deletes what it stored. */
  async cancel() {
    if (['completed', 'failed', 'cancelled'].includes(this.state)) return;
    this._runs++;
    this._abortAll();
    this._setState('cancelled');
    if (this.uploadId) {
      try {
        await this.client.http('DELETE', `/v1/uploads/${this.uploadId}`);
      } catch (e) {
        if (/** @type {ImlogError} */ (e).code !== 'conflict') throw e;
      }
    }
    this._forget();
    this._reject(new ImlogError('aborted', 'the upload was cancelled'));
  }

  /** Declares the upload (or asks the server what it has), sends the
   * missing chunks, and waits for the server to complete it. */
  async _run() {
    const run = ++this._runs;
    /** Whether this run is still the one to go on. */
    const current = () => run === this._runs && !this._stopped();
    try {
      if (this.uploadId) {
        await this._refresh();
      } else {
        await this._declare(current);
      }
      if (!current()) return;
      await this._sendChunks(current);
      if (!current()) return;
      await this._awaitCompletion(current);
    } catch (e) {
      // Paused, cancelled, or a newer run took over: not a failure.
      if (run !== this._runs || this.state === 'paused' || this.state === 'cancelled') return;
      this._fail(e instanceof ImlogError ? e : new ImlogError('internal', String(e)));
    }
  }

  /** @param {() => boolean} current */
  async _declare(current) {
    const options = this._options;
    this._setState('hashing');
    const size = this.blob.size;
    const sha256 = await sha256Hex(this.blob, (hashed) =>
      this.emit('hashing', { hashed_bytes: hashed, size }),
    );
    if (!current()) return;
    const contentType = options.contentType ?? (this.blob.type || 'application/octet-stream');
    /** @type {UploadView} */
    const view = await this.client.http('POST', '/v1/uploads', {
      json: {
        name: options.name ?? this.blob.name ?? 'file',
        size,
        content_type: contentType,
        sha256,
        kind: options.kind ?? kindOf(contentType),
      },
    });
    this.uploadId = view.upload_id;
    this._learn(view);
    this._save();
  }

  /** Asks the server what it has. */
  async _refresh() {
    /** @type {UploadView} */
    const view = await this.client.http('GET', `/v1/uploads/${this.uploadId}`);
    if (view.size !== this.blob.size) {
      throw new ImlogError('bad_request', `this file has ${this.blob.size} bytes; the upload has ${view.size}`);
    }
    this._learn(view);
    this._save();
  }

  /** @param {UploadView} view */
  _learn(view) {
    this.view = view;
    for (const i of view.acked) this._acked.add(i);
    // A late answer after a cancel changes nothing.
    if (this._final()) return;
    if (view.state === 'completed') {
      this._complete(view);
    } else if (view.state === 'failed') {
      this._fail(new ImlogError('conflict', view.failure ?? 'the upload failed'));
    } else if (this.state !== 'paused') {
      this._setState(this._acked.size === view.chunks ? 'completing' : 'uploading');
      this._progress();
    }
  }

  /** @param {() => boolean} current */
  async _sendChunks(current) {
    const view = /** @type {UploadView} */ (this.view);
    /** @type {number[]} */
    const missing = [];
    for (let i = 0; i < view.chunks; i++) if (!this._acked.has(i)) missing.push(i);
    let next = 0;
    const worker = async () => {
      while (next < missing.length && current()) {
        await this._sendChunk(missing[next++], current);
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.window, missing.length) }, worker));
    if (current()) this._setState('completing');
  }

  /** @param {number} index @param {() => boolean} current */
  async _sendChunk(index, current) {
    const view = /** @type {UploadView} */ (this.view);
    const start = index * view.chunk_size;
    const piece = this.blob.slice(start, Math.min(view.size, start + view.chunk_size));
    for (let attempt = 0; ; attempt++) {
      if (!current()) throw new ImlogError('aborted', 'stopped');
      const abort = new AbortController();
      this._inFlight.add(abort);
      try {
        const bytes = await piece.arrayBuffer();
        const checksum = await sha256Hex(new Blob([bytes]));
        const ack = await this.client.http('PUT', `/v1/uploads/${this.uploadId}/chunks/${index}`, {
          body: bytes,
          headers: { 'x-chunk-sha256': checksum, 'content-type': 'application/octet-stream' },
          signal: abort.signal,
        });
        this._acked.add(ack.index);
        this._progress();
        return;
      } catch (e) {
        const error = /** @type {ImlogError} */ (e);
        if (error.code === 'aborted' || !current()) throw new ImlogError('aborted', 'stopped');
        if (error.code === 'conflict') {
          // Ended meanwhile (cancelled elsewhere, expired, or complete).
          await this._refresh();
          throw new ImlogError('aborted', 'the upload ended');
        }
        const again = error.retryable || error.code === 'bad_checksum';
        if (!again || attempt + 1 >= CHUNK_ATTEMPTS) throw error;
        await sleep(backoffMs(attempt, 250, 5_000));
      } finally {
        this._inFlight.delete(abort);
      }
    }
  }

  /** Every chunk is in: the server assembles and verifies by itself.
   * @param {() => boolean} current */
  async _awaitCompletion(current) {
    for (let attempt = 0; current(); attempt++) {
      /** @type {UploadView} */
      const view = await this.client.http('GET', `/v1/uploads/${this.uploadId}`);
      if (view.state !== 'uploading') {
        this._learn(view);
        return;
      }
      await sleep(Math.min(1_000, 50 * 2 ** attempt));
    }
  }

  /** @param {UploadView} view */
  _complete(view) {
    this.view = view;
    this._forget();
    this._setState('completed');
    this._progress();
    this._resolve(view);
  }

  /** @param {ImlogError} error */
  _fail(error) {
    if (this._final()) return;
    this._abortAll();
    this._forget();
    this.state = 'failed';
    this.emit('state', { state: 'failed', error });
    this._reject(error);
  }

  _progress() {
    const view = this.view;
    if (!view) return;
    this.emit('progress', {
      acked_bytes: this.ackedBytes,
      size: view.size,
      acked_chunks: this._acked.size,
      chunks: view.chunks,
    });
  }

  /** @param {UploadState} state */
  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit('state', { state });
  }

  _abortAll() {
    for (const abort of this._inFlight) abort.abort();
    this._inFlight.clear();
  }

  _stopped() {
    return this.state === 'paused' || this._final();
  }

  _final() {
    return this.state === 'completed' || this.state === 'failed' || this.state === 'cancelled';
  }

  _save() {
    // An upload that ended (completed while paused, say) is not unfinished.
    if (!this.uploadId || !this.view || this._final()) return;
    /** @type {Record<string, SavedUpload>} */
    const all = readJson(this.client.store, this.client._key('uploads'), {});
    all[this.uploadId] = {
      upload_id: this.uploadId,
      name: this.view.name,
      size: this.view.size,
      kind: this.view.kind,
      last_modified: /** @type {any} */ (this.blob).lastModified,
    };
    this.client.store.set(this.client._key('uploads'), JSON.stringify(all));
  }

  _forget() {
    if (this.uploadId) forget(this.client, this.uploadId);
  }
}

/** Drops an upload from the store's unfinished ones.
 * @param {Connection} client @param {string} uploadId */
function forget(client, uploadId) {
  /** @type {Record<string, SavedUpload>} */
  const all = readJson(client.store, client._key('uploads'), {});
  delete all[uploadId];
  client.store.set(client._key('uploads'), JSON.stringify(all));
}

/** The upload kind a MIME type suggests. @param {string} contentType */
export function kindOf(contentType) {
  if (contentType.startsWith('image/')) return 'image';
  if (contentType.startsWith('video/')) return 'video';
  return 'file';
}
